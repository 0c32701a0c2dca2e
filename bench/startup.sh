#!/usr/bin/env bash
# Startup overhead of kennel against the bare engine, measured in one run:
#   kennel run shell -- true          vs   docker run --rm IMAGE true
#   kennel run shell -b podman -- true vs  podman run --rm IMAGE true  (rootful)
# IMAGE is the image kennel itself uses (from `kennel run shell --dry-run`).
# Runs are interleaved (kennel, bare, kennel, bare, …) so drift hits both.
#
#   bench/startup.sh                 # BENCH_N=20 iterations, 2 warm-up runs
#   BENCH_N=50 bench/startup.sh
#   KENNEL=path/to/kennel BENCH_ENGINES="docker" bench/startup.sh
#
# Needs: a built kennel (default target/release/kennel, else target/debug/kennel),
# the engines running (scripts/e2e-setup.sh), python3. The `shell` image is
# built first if missing (not timed).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${BENCH_N:-20}
WARMUP=${BENCH_WARMUP:-2}
ENGINES=${BENCH_ENGINES:-docker podman podman-local}
BASE_IMAGE=${KENNEL_E2E_BASE_IMAGE:-kennel-test/bookworm:latest}
if [[ -z ${KENNEL:-} ]]; then
    if [[ -x target/release/kennel ]]; then KENNEL=target/release/kennel; else KENNEL=target/debug/kennel; fi
fi
[[ -x $KENNEL ]] || { echo "bench: no kennel binary at $KENNEL (cargo build --release -p kennel)" >&2; exit 1; }
KENNEL=$(realpath "$KENNEL")

work=$(mktemp -d /tmp/kennel-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ws" "$work/config/kennel" "$work/data"
git -C "$work/ws" init -q
# kennel's own settings for the benchmark: local base image, and no network
# policy warning noise. The data dir is private to this run.
export XDG_CONFIG_HOME=$work/config XDG_DATA_HOME=$work/data
cd "$work/ws"

now_ns() { date +%s%N; }

# time_one OUTFILE CMD... : append elapsed ms of one run; fail loudly.
time_one() {
    local out=$1; shift
    local t0 t1
    t0=$(now_ns)
    if ! "$@" >/dev/null 2>"$work/err"; then
        echo "bench: command failed: $*" >&2
        cat "$work/err" >&2
        exit 1
    fi
    t1=$(now_ns)
    echo $(((t1 - t0) / 1000)) >>"$out"   # microseconds
}

results=()
for engine in $ENGINES; do
    case $engine in
    docker) bare=(docker run --rm); env_engine=(env -u CONTAINER_HOST); backend=docker ;;
    # kennel talks to Podman's API service; the fair pair is the podman CLI
    # through the same service. `podman-local` compares with the CLI running
    # containers itself (no service), which is what most users type.
    podman) bare=(podman --remote --url unix:///run/podman/podman.sock run --rm)
            env_engine=(env CONTAINER_HOST=unix:///run/podman/podman.sock); backend=podman ;;
    podman-local) bare=(podman run --rm)
            env_engine=(env CONTAINER_HOST=unix:///run/podman/podman.sock); backend=podman ;;
    *) echo "bench: unknown engine $engine" >&2; exit 1 ;;
    esac
    printf '[defaults]\nbase_image = "%s"\nbackend = "%s"\n' "$BASE_IMAGE" "$backend" \
        >"$work/config/kennel/config.toml"
    "${env_engine[@]}" "$KENNEL" image build shell >/dev/null 2>"$work/err" || {
        cat "$work/err" >&2; echo "bench: kennel image build shell failed on $engine" >&2; exit 1; }
    image=$("${env_engine[@]}" "$KENNEL" run shell --dry-run 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["image"]["reference"])')
    kfile=$work/$engine.kennel bfile=$work/$engine.bare
    : >"$kfile"; : >"$bfile"
    for ((i = 0; i < WARMUP; i++)); do
        time_one /dev/null "${env_engine[@]}" "$KENNEL" run shell -- true
        time_one /dev/null "${bare[@]}" "$image" true
    done
    for ((i = 0; i < N; i++)); do
        time_one "$kfile" "${env_engine[@]}" "$KENNEL" run shell -- true
        time_one "$bfile" "${bare[@]}" "$image" true
    done
    results+=("$engine|$image|$kfile|$bfile|${bare[*]}")
done

python3 - "$N" "$KENNEL" "${results[@]}" <<'PY'
import statistics, sys

n, kennel, rows = int(sys.argv[1]), sys.argv[2], sys.argv[3:]

def load(path):
    return sorted(int(line) / 1000.0 for line in open(path) if line.strip())

def p95(xs):
    # nearest-rank percentile
    k = max(0, min(len(xs) - 1, -(-95 * len(xs) // 100) - 1))
    return xs[k]

print(f"kennel startup benchmark: N={n} per command (after warm-up), kennel={kennel}")
print(f"{'engine':<12} {'command':<44} {'median ms':>10} {'p95 ms':>8}")
for row in rows:
    engine, image, kfile, bfile, bare = row.split("|")
    k, b = load(kfile), load(bfile)
    km, bm = statistics.median(k), statistics.median(b)
    print(f"{engine:<12} {'kennel run shell -- true':<44} {km:>10.0f} {p95(k):>8.0f}")
    label = "podman run --rm IMAGE true" if bare.startswith("podman") else engine + " run --rm IMAGE true"
    print(f"{engine:<12} {label:<44} {bm:>10.0f} {p95(b):>8.0f}")
    print(f"{engine:<12} {'ratio kennel/bare (median; p95)':<44} {km / bm:>10.2f} {p95(k) / p95(b):>8.2f}")
    print(f"{'':<12} image: {image}; bare command: {bare} IMAGE true")
PY
