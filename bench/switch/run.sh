#!/usr/bin/env bash
# Benchmark of the Edge Service Switch data planes (root; needs iproute2 and iperf3).
# The driver is the `switch_bench` example of crates/neptune-switch (it shares
# the root tests' namespace testbed); results go to stdout as Markdown + JSON.
#   bench/switch/run.sh                      # 5 s per iperf3 run
#   BENCH_SECONDS=10 bench/switch/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p neptune-switch --bin neptune-switchd --example switch_bench
target_dir=${CARGO_TARGET_DIR:-target}
NEPTUNE_SWITCHD="$target_dir/release/neptune-switchd" exec "$target_dir/release/examples/switch_bench"
