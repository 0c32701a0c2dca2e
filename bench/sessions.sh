#!/usr/bin/env bash
# Starting persistent sessions: 10 `kennel start shell` at once against the
# same 10 one after another, on one workspace, in the same run (and a bare
# `docker run -d` of the same image, also 10 at once and 10 in a row, for
# scale). Every started session is removed before the next round.
#
#   bench/sessions.sh                       # docker, 10 sessions, 3 rounds
#   BENCH_ENGINE=podman BENCH_SESSIONS=10 BENCH_ROUNDS=5 bench/sessions.sh
#
# Needs: the engine running (scripts/e2e-setup.sh), a built kennel (default
# target/release/kennel). The `shell` image is built first if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE=${BENCH_ENGINE:-docker}
SESSIONS=${BENCH_SESSIONS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
BASE_IMAGE=${KENNEL_E2E_BASE_IMAGE:-kennel-test/bookworm:latest}
if [[ -z ${KENNEL:-} ]]; then
    if [[ -x target/release/kennel ]]; then KENNEL=target/release/kennel; else KENNEL=target/debug/kennel; fi
fi
KENNEL=$(realpath "$KENNEL")

work=$(mktemp -d /tmp/kennel-bench.XXXXXX)
mkdir -p "$work/ws" "$work/config/kennel" "$work/data"
git -C "$work/ws" init -q
export XDG_CONFIG_HOME=$work/config XDG_DATA_HOME=$work/data
printf '[defaults]\nbase_image = "%s"\nbackend = "%s"\n' "$BASE_IMAGE" "$ENGINE" \
    >"$work/config/kennel/config.toml"
cd "$work/ws"
engine_cli=("$ENGINE")
[[ $ENGINE == podman && $(id -u) == 0 ]] && engine_cli=(podman --remote --url unix:///run/podman/podman.sock)
cleanup() {
    "${engine_cli[@]}" ps -aq --filter "label=dev.kennel.workspace=$work/ws" | xargs -r "${engine_cli[@]}" rm -f >/dev/null
    "${engine_cli[@]}" ps -aq --filter "label=kennel-bench=1" | xargs -r "${engine_cli[@]}" rm -f >/dev/null
}
trap 'cleanup; rm -rf "$work"' EXIT

"$KENNEL" image build shell >/dev/null
image=$("$KENNEL" run shell --dry-run | python3 -c 'import json,sys; print(json.load(sys.stdin)["image"]["reference"])')

now_ms() { echo $(($(date +%s%N) / 1000000)); }
start_one() { "$KENNEL" start shell --network none -- sleep 600 >/dev/null 2>&1; }
bare_one() { "${engine_cli[@]}" run -d --label kennel-bench=1 --network none "$image" sleep 600 >/dev/null; }

# round FUNCTION MODE: prints the wall time in ms of SESSIONS starts.
round() {
    local fn=$1 mode=$2 t0 t1 i
    t0=$(now_ms)
    if [[ $mode == parallel ]]; then
        pids=()
        for ((i = 0; i < SESSIONS; i++)); do "$fn" & pids+=($!); done
        for pid in "${pids[@]}"; do wait "$pid" || { echo "bench: a start failed" >&2; exit 1; }; done
    else
        for ((i = 0; i < SESSIONS; i++)); do "$fn"; done
    fi
    t1=$(now_ms)
    echo $((t1 - t0))
    cleanup
}

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

declare -A times
for ((r = 0; r < ROUNDS; r++)); do
    for fn in start_one bare_one; do
        for mode in parallel sequential; do
            times[$fn-$mode]+="$(round $fn $mode) "
        done
    done
done
running=$("$KENNEL" ls --all --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["sessions"]))')
[[ $running -ge $((SESSIONS * ROUNDS * 2)) ]] || { echo "bench: only $running sessions registered" >&2; exit 1; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
med() { tr ' ' '\n' <<<"${times[$1]}" | grep . | median; }
kp=$(med start_one-parallel) ks=$(med start_one-sequential)
bp=$(med bare_one-parallel) bs=$(med bare_one-sequential)
echo "engine: $ENGINE; $SESSIONS sessions per round; median of $ROUNDS rounds"
printf 'kennel start  x%d parallel: %6d ms   sequential: %6d ms   speed-up %sx\n' "$SESSIONS" "$kp" "$ks" "$(ratio "$ks" "$kp")"
printf '%-13s x%d parallel: %6d ms   sequential: %6d ms   speed-up %sx\n' "$ENGINE run -d" "$SESSIONS" "$bp" "$bs" "$(ratio "$bs" "$bp")"
printf 'kennel / bare: parallel %sx, sequential %sx\n' "$(ratio "$kp" "$bp")" "$(ratio "$ks" "$bs")"
