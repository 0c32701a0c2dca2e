#!/usr/bin/env bash
# Credential broker overhead against direct HTTPS to a loopback TLS server,
# in one run (the proxy terminates TLS with the session CA, swaps the
# placeholder in a bound header for the real value, re-encrypts):
#   added latency per request on a keep-alive connection (median and p95
#   of 2000 small GETs), and the first request of a fresh connection
#   (CONNECT + both TLS handshakes, median of 200)
#   throughput of a large download and a large upload (256 MiB by default)
# printed as figures and ratios. Targets: < 2 ms added per keep-alive
# request (median), >= 80 % of direct throughput for download and upload.
# Loopback only, bounded in time (well under a minute on 2 cores).
#
#   bench/broker.sh
#   BENCH_REQUESTS=5000 BENCH_CONNS=500 BENCH_BYTES=$((1<<30)) bench/broker.sh
#   BENCH_STRICT=1 bench/broker.sh      # exit 1 when a target is missed
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --release -p kennel-proxy --example broker_bench -- "$@"
