#!/usr/bin/env bash
# What a devcontainer build costs, measured in one run (Docker):
#   1. the first build: kennel's workbench build of a devcontainer's
#      Dockerfile and local feature   vs   `docker build --no-cache` of the
#      same Dockerfile (the engine's builder, which kennel does not use
#      because it would give the repository's steps the engine's network);
#   2. every later start: `kennel run shell -- true` with that devcontainer
#      (kennel reads and hashes the build context: 200 files, 8 MiB)
#      vs `kennel run --no-devcontainer shell -- true`.
# Runs are interleaved so drift hits both sides.
#
#   bench/devcontainer.sh            # BENCH_N=20 starts, BENCH_BUILDS=3 builds
#
# Needs: a built kennel (default target/release/kennel, else target/debug/kennel),
# Docker running with the test base image (scripts/e2e-setup.sh), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${BENCH_N:-20}
BUILDS=${BENCH_BUILDS:-3}
BASE_IMAGE=${KENNEL_E2E_BASE_IMAGE:-kennel-test/bookworm:latest}
if [[ -z ${KENNEL:-} ]]; then
    if [[ -x target/release/kennel ]]; then KENNEL=target/release/kennel; else KENNEL=target/debug/kennel; fi
fi
[[ -x $KENNEL ]] || { echo "bench: no kennel binary at $KENNEL" >&2; exit 1; }
KENNEL=$(realpath "$KENNEL")

work=$(mktemp -d /tmp/kennel-bench-dev.XXXXXX)
trap 'rm -rf "$work"; docker image rm -f kennel-bench/devcontainer:1 >/dev/null 2>&1 || true' EXIT
mkdir -p "$work/ws/.devcontainer/context" "$work/ws/.devcontainer/features/hello" "$work/config/kennel" "$work/data"
git -C "$work/ws" init -q
export XDG_CONFIG_HOME=$work/config XDG_DATA_HOME=$work/data
printf '[defaults]\nbase_image = "%s"\nbackend = "docker"\n' "$BASE_IMAGE" >"$work/config/kennel/config.toml"
dev=$work/ws/.devcontainer
for i in $(seq 1 200); do head -c 40960 /dev/urandom >"$dev/context/file-$i.bin"; done
cat >"$dev/Dockerfile" <<EOF
FROM $BASE_IMAGE
COPY context/ /opt/context/
RUN for i in 1 2 3; do echo step \$i; done > /opt/steps.txt
ENV TOOL_HOME=/opt/context
EOF
printf '{ "id": "hello", "version": "1.0.0", "options": {} }\n' >"$dev/features/hello/devcontainer-feature.json"
printf '#!/bin/sh\necho hello > /usr/local/share/hello.txt\n' >"$dev/features/hello/install.sh"
printf '{ "build": { "dockerfile": "Dockerfile" }, "features": { "./features/hello": {} } }\n' >"$dev/devcontainer.json"
# The engine's builder gets the same steps (a feature is one more RUN).
cp "$dev/Dockerfile" "$dev/Dockerfile.bare"
printf 'COPY features/hello /tmp/f\nRUN sh /tmp/f/install.sh && rm -rf /tmp/f\n' >>"$dev/Dockerfile.bare"
cd "$work/ws"

now_us() { echo $(($(date +%s%N) / 1000)); }
time_one() {
    local out=$1; shift
    local t0; t0=$(now_us)
    "$@" >/dev/null 2>"$work/err" || { echo "bench: failed: $*" >&2; cat "$work/err" >&2; exit 1; }
    echo $(($(now_us) - t0)) >>"$out"
}
stats() {
    python3 - "$@" <<'PY'
import statistics, sys
def load(path):
    return sorted(int(line) / 1000 for line in open(path) if line.strip())
a, b, label_a, label_b = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3], sys.argv[4]
ma, mb = statistics.median(a), statistics.median(b)
print(f"{label_a:<58} median {ma:9.1f} ms  (n={len(a)})")
print(f"{label_b:<58} median {mb:9.1f} ms  (n={len(b)})")
print(f"{'ratio':<58} {ma / mb:.2f}   difference {ma - mb:+.1f} ms")
PY
}

# Removes the images the current config builds (this workspace's chain).
drop_current() {
    "$KENNEL" image ls --json 2>/dev/null | python3 -c '
import json, sys
for image in json.load(sys.stdin)["images"]:
    if image["current"]:
        print(image["reference"])' | xargs -r docker image rm -f >/dev/null 2>&1 || true
}
mkdir -p "$work/plain"
git -C "$work/plain" init -q
cp "$work/config/kennel/config.toml" "$work/config.dev.toml"
printf '[defaults]\nbase_image = "kennel-bench/devcontainer:1"\nbackend = "docker"\n' >"$work/config.bare.toml"

echo "bench: first builds (x$BUILDS) of the project image and kennel's layers on it:"
echo "       kennel's workbench build vs docker build --no-cache (then the same kennel layers)"
: >"$work/build.kennel"; : >"$work/build.bare"
for ((i = 0; i < BUILDS; i++)); do
    cp "$work/config.dev.toml" "$work/config/kennel/config.toml"
    drop_current
    time_one "$work/build.kennel" "$KENNEL" image build shell
    cp "$work/config.bare.toml" "$work/config/kennel/config.toml"
    (cd "$work/plain" && drop_current)
    docker image rm -f kennel-bench/devcontainer:1 >/dev/null 2>&1 || true
    time_one "$work/build.bare" sh -c "docker build --no-cache -q -t kennel-bench/devcontainer:1 -f '$dev/Dockerfile.bare' '$dev' && cd '$work/plain' && '$KENNEL' image build shell"
done
cp "$work/config.dev.toml" "$work/config/kennel/config.toml"
stats "$work/build.kennel" "$work/build.bare" \
    "kennel (workbench build, then its layers)" "docker build --no-cache, then the same kennel layers"

echo
echo "bench: later starts (x$N), with the devcontainer vs --no-devcontainer"
"$KENNEL" run --no-devcontainer shell -- true >/dev/null 2>&1
"$KENNEL" run shell -- true >/dev/null 2>&1
: >"$work/start.dev"; : >"$work/start.plain"
for ((i = 0; i < N; i++)); do
    time_one "$work/start.dev" "$KENNEL" run shell -- true
    time_one "$work/start.plain" "$KENNEL" run --no-devcontainer shell -- true
done
stats "$work/start.dev" "$work/start.plain" \
    "kennel run shell -- true (devcontainer: 200 files, 8 MiB)" "kennel run --no-devcontainer shell -- true"
