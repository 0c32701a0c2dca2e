#!/usr/bin/env bash
# Start-up cost of the Incus backend, measured in one run, interleaved so
# that drift hits both alike:
#   kennel run --backend incus --network none shell -- true
#   incus launch IMAGE NAME --ephemeral; incus exec NAME -- true; incus delete --force NAME
# The bare variant uses the same image (kennel's shell image, converted for
# Incus), the same project, and Incus's own CLI: the smallest thing a user
# would type to run one command in a fresh container and leave nothing.
# kennel does more: the Plan's disk devices (workspace, agent home, git
# protections), the user's uid mapped to itself, setpriv dropping every
# capability, the session registry.
#
#   bench/incus.sh                  # BENCH_N=20 runs of each, 2 warm-up runs
#   BENCH_N=40 KENNEL=target/debug/kennel bench/incus.sh
#
# Needs: a built kennel (default target/release/kennel, else target/debug),
# Incus usable by the invoking user (scripts/incus-setup.sh), a base image
# for kennel's images (BENCH_BASE_IMAGE, default kennel-test/bookworm:latest
# in Docker or Podman), python3, git.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${BENCH_N:-20}
WARMUP=${BENCH_WARMUP:-2}
BASE=${BENCH_BASE_IMAGE:-kennel-test/bookworm:latest}
if [[ -z ${KENNEL:-} ]]; then
    if [[ -x target/release/kennel ]]; then KENNEL=target/release/kennel; else KENNEL=target/debug/kennel; fi
fi
[[ -x $KENNEL ]] || { echo "bench: no kennel binary at $KENNEL (cargo build --release -p kennel)" >&2; exit 1; }
KENNEL=$(realpath "$KENNEL")
command -v incus >/dev/null || { echo "bench: incus not found (scripts/incus-setup.sh)" >&2; exit 1; }

# Under the home or /var/tmp/kennel-e2e: what an incus-user project may mount.
work=$(mktemp -d "${BENCH_DIR:-$HOME}/.kennel-bench-incus.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ws" "$work/config/kennel" "$work/data"
git init -q "$work/ws"
git -C "$work/ws" -c user.name=bench -c user.email=bench@example.invalid commit -q --allow-empty -m bench
printf '[defaults]\nbase_image = "%s"\n' "$BASE" >"$work/config/kennel/config.toml"
export XDG_CONFIG_HOME=$work/config XDG_DATA_HOME=$work/data
ws=$(realpath "$work/ws")
cd "$ws"
# The image, built and converted once, untimed; its alias is the Plan's.
"$KENNEL" run --backend incus --network none shell -- true
image=$("$KENNEL" run --backend incus --network none --dry-run shell -- true |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["image"]["reference"])')

export BENCH_N=$N BENCH_WARMUP=$WARMUP
python3 - "$KENNEL" "$image" <<'PY'
import os, statistics, subprocess, sys, time
kennel, image = sys.argv[1], sys.argv[2]
n, warmup = int(os.environ["BENCH_N"]), int(os.environ["BENCH_WARMUP"])

def run_kennel():
    subprocess.run([kennel, "run", "--backend", "incus", "--network", "none", "shell", "--", "true"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

counter = [0]
def run_bare():
    counter[0] += 1
    name = f"kennel-bench-{os.getpid()}-{counter[0]}"
    quiet = dict(check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["incus", "launch", image, name, "--ephemeral"], **quiet)
    subprocess.run(["incus", "exec", name, "--", "true"], **quiet)
    subprocess.run(["incus", "delete", "--force", name], **quiet)

variants = [("kennel run -b incus shell -- true", run_kennel),
            ("incus launch -e + exec true + delete -f", run_bare)]
times = {name: [] for name, _ in variants}
for i in range(warmup + n):
    for name, fn in variants:
        start = time.perf_counter()
        fn()
        elapsed = (time.perf_counter() - start) * 1000
        if i >= warmup:
            times[name].append(elapsed)

def p95(values):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]

print(f"{n} runs each, interleaved, image {image}")
for name, _ in variants:
    print(f"  {name:42} median {statistics.median(times[name]):7.1f} ms   p95 {p95(times[name]):7.1f} ms")
k = statistics.median(times[variants[0][0]])
b = statistics.median(times[variants[1][0]])
print(f"  ratio kennel / bare: {k / b:.2f}")
PY
