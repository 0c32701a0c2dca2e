#!/usr/bin/env bash
# Egress proxy overhead against a direct loopback connection, in one run:
#   connection setup + first-byte round trip (median of >= 500 connections)
#   bulk throughput through a CONNECT tunnel (1 GiB per transfer by default)
# printed as figures and ratios. Targets: < 1 ms added per connection
# (median), >= 80 % of direct throughput. Loopback only, bounded in time.
#
#   bench/proxy.sh
#   BENCH_CONNS=2000 BENCH_BYTES=$((4<<30)) bench/proxy.sh
#   BENCH_STRICT=1 bench/proxy.sh      # exit 1 when a target is missed
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --release -p kennel-proxy --example bench -- "$@"
