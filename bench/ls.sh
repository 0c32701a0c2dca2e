#!/bin/sh
# Times `kennel ls` with 1,000 sessions in the registry: the median of 20
# runs, for the plain listing, `--all` and `--json`. Target: under 50 ms.
#
#   bench/ls.sh [SESSIONS] [RUNS]
set -eu
cd "$(dirname "$0")/.."
sessions=${1:-1000}
runs=${2:-20}

cargo build --release -q -p kennel --bin kennel
cargo build --release -q -p kennel-sessions --example fill
target=${CARGO_TARGET_DIR:-$PWD/target}
kennel=$target/release/kennel
fill=$target/release/examples/fill

home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
export HOME="$home"
unset XDG_DATA_HOME XDG_CONFIG_HOME
"$fill" "$home/.local/share/kennel/sessions.db" "$sessions"

median_ms() {
    i=0
    while [ "$i" -lt "$runs" ]; do
        start=$(date +%s%N)
        "$kennel" "$@" >/dev/null
        end=$(date +%s%N)
        echo $(((end - start) / 1000))
        i=$((i + 1))
    done | sort -n | awk '{ a[NR] = $1 } END {
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        printf "%.1f\n", m / 1000 }'
}

"$kennel" ls >/dev/null # fails loudly (set -e) if ls does not work
lines=$("$kennel" ls | wc -l)
echo "registry: $sessions sessions; \`kennel ls\` prints $((lines - 1)) rows"
echo "kennel ls         median of $runs: $(median_ms ls) ms"
echo "kennel ls --all   median of $runs: $(median_ms ls --all) ms"
echo "kennel ls --json  median of $runs: $(median_ms ls --all --json) ms"
