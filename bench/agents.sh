#!/usr/bin/env bash
# Every catalog agent, built and started in its sandbox: a table of agent,
# version, build time, image size, and whether it started (or why not).
#
#   bench/agents.sh                  # every agent of `kennel agents --json`
#   bench/agents.sh claude codex     # just these
#   BENCH_BACKEND=podman bench/agents.sh
#   BENCH_NO_CACHE=1 bench/agents.sh # every layer rebuilt: first-build times
#
# For each agent: `kennel image build AGENT` (timed; an image already built
# takes no time, so BENCH_NO_CACHE=1 rebuilds every layer, base included,
# as on a fresh machine), then `kennel run AGENT --network none -- VERSION_ARGS` (the
# catalog's `version` arguments, `--version` for most). For codex it also
# logs in with a dummy API key in one run and checks `codex login status`
# in the next, to show that a login made in the sandbox survives.
#
# Needs: a built kennel (target/release/kennel, else target/debug/kennel),
# the engine (scripts/e2e-setup.sh), python3. The base image is the local
# test image (KENNEL_E2E_BASE_IMAGE, default kennel-test/bookworm:latest)
# and the host's CA bundle is added to the images (registries here are
# reached through a TLS-intercepting proxy).
set -euo pipefail
cd "$(dirname "$0")/.."

BACKEND=${BENCH_BACKEND:-docker}
BASE_IMAGE=${KENNEL_E2E_BASE_IMAGE:-kennel-test/bookworm:latest}
CA_BUNDLE=${BENCH_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if [[ -z ${KENNEL:-} ]]; then
    if [[ -x target/release/kennel ]]; then KENNEL=target/release/kennel; else KENNEL=target/debug/kennel; fi
fi
[[ -x $KENNEL ]] || { echo "bench: no kennel binary at $KENNEL (cargo build --release -p kennel)" >&2; exit 1; }
KENNEL=$(realpath "$KENNEL")

work=$(mktemp -d /tmp/kennel-bench-agents.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ws" "$work/config/kennel" "$work/data" "$work/logs"
git -C "$work/ws" init -q
cat >"$work/config/kennel/config.toml" <<TOML
[defaults]
backend = "$BACKEND"
base_image = "$BASE_IMAGE"
ca_certificates = ["$CA_BUNDLE"]
TOML
export XDG_CONFIG_HOME=$work/config XDG_DATA_HOME=$work/data
cd "$work/ws"

catalog=$("$KENNEL" agents --json)
if (($#)); then agents=("$@"); else
    mapfile -t agents < <(python3 -c 'import json,sys; [print(a["name"]) for a in json.load(sys.stdin)["agents"]]' <<<"$catalog")
fi
field() { # field AGENT KEY -> the catalog value (lists space-joined)
    python3 -c '
import json, sys
agent = next(a for a in json.load(sys.stdin)["agents"] if a["name"] == sys.argv[1])
value = agent.get(sys.argv[2], "")
print(" ".join(value) if isinstance(value, list) else value)' "$1" "$2" <<<"$catalog"
}
# The last line kennel printed that says why, without "kennel: error: ".
why() {
    local lines telling
    lines=$(grep -E '^\s*\| |error:' "$1" | sed -E 's/^\s*\| //; s/^kennel: error: //' |
        grep -vE 'npm notice|A complete log of this run|^npm error( 404)?\s*$')
    telling=$(grep -E 'ENOTFOUND|not in this registry|Could not resolve|not on PATH|does not run|Error:' <<<"$lines" | tail -n 1)
    printf '%s\n' "${telling:-$(tail -n 1 <<<"$lines")}" | cut -c1-110
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }
rows=()
started=0
for agent in "${agents[@]}"; do
    echo "bench: $agent: building" >&2
    t0=$(now_ms)
    build_args=()
    [[ ${BENCH_NO_CACHE:-0} == 1 ]] && build_args=(--no-cache)
    if "$KENNEL" image build "${build_args[@]}" "$agent" >"$work/logs/$agent.build" 2>&1; then
        build_s=$(python3 -c "print(f'{($(now_ms) - $t0) / 1000:.0f} s')")
    else
        build_s=$(python3 -c "print(f'{($(now_ms) - $t0) / 1000:.0f} s')")
        rows+=("| $agent | – | $build_s | – | no: build failed: $(why "$work/logs/$agent.build") |")
        continue
    fi
    tag=$("$KENNEL" run "$agent" --dry-run | python3 -c 'import json,sys; print(json.load(sys.stdin)["image"]["reference"])')
    case $BACKEND in
    podman) size=$(podman image inspect -f '{{.Size}}' "$tag") ;;
    *) size=$(docker image inspect -f '{{.Size}}' "$tag") ;;
    esac
    size=$(python3 -c "print(f'{$size / 1e6:.0f} MB')")
    if [[ $agent == shell ]]; then args=(bash --version); else read -r -a args <<<"$(field "$agent" version)"; fi
    if out=$(timeout 120 "$KENNEL" run "$agent" --network none -- "${args[@]}" </dev/null 2>"$work/logs/$agent.run"); then
        version=$(printf '%s\n' "$out" | grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n 1 || true)
        result="yes"
        started=$((started + 1))
    else
        version="–"
        result="no: $(tail -n 1 "$work/logs/$agent.run" | cut -c1-110)"
    fi
    if [[ $agent == codex && $result == yes ]]; then
        # A login made in one sandbox is there in the next (~/.codex persists).
        # `login status` exits 0 and names the key once one is configured.
        if printf 'sk-kennel-bench-dummy\n' | "$KENNEL" run codex --no-yolo --network none -- login --with-api-key >/dev/null 2>&1 &&
            status=$("$KENNEL" run codex --no-yolo --network none -- login status 2>&1) &&
            grep -q 'sk-kenne' <<<"$status"; then
            result="yes; login kept"
        else
            result="yes; login NOT kept"
        fi
    fi
    rows+=("| $agent | ${version:-?} | $build_s | $size | $result |")
done

echo
echo "Agents on $BACKEND, $(date -u +%Y-%m-%d), kennel $("$KENNEL" --version | awk '{print $2}'): $started of ${#agents[@]} started"
echo
echo "| agent | version | build | image | started |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
