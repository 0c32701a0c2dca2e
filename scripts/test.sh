#!/usr/bin/env bash
# kennel's test command: every unit, integration and end-to-end test of the
# workspace (debug profile: it compiles much faster than release, and the
# tests measure behaviour, not speed).
#
#   scripts/test.sh                       # e2e tests skip when no engine is ready
#   KENNEL_E2E=require scripts/test.sh    # e2e tests fail instead (CI)
#   scripts/test.sh -p kennel --test e2e docker::   # extra args go to cargo test
#
# Run as root, it first prepares the machine for the end-to-end tests
# (scripts/e2e-setup.sh: packages, engines, test user, base image; idempotent).
# KENNEL_SKIP_SETUP=1 skips that step.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) == 0 && ${KENNEL_SKIP_SETUP:-0} != 1 ]]; then
    bash scripts/e2e-setup.sh
fi

cargo_args=()
test_args=()
if (($#)); then
    # Everything before a filter is for cargo; simple heuristic: args that
    # start with - or follow -p/--test are cargo's, the rest are filters.
    while (($#)); do
        case $1 in
        -p | --package | --test | --features | -F) cargo_args+=("$1" "$2"); shift 2 ;;
        --) shift; test_args+=("$@"); break ;;
        -*) cargo_args+=("$1"); shift ;;
        *) test_args+=("$1"); shift ;;
        esac
    done
fi
((${#cargo_args[@]})) || cargo_args=(--workspace)

# The e2e tests mostly wait on engines; run more of them at once than cores.
threads=${KENNEL_TEST_THREADS:-4}

# Build first so that a compile error is reported as such.
cargo test --no-run "${cargo_args[@]}"
cargo test --no-fail-fast "${cargo_args[@]}" -- --test-threads="$threads" "${test_args[@]}"
