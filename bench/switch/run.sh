#!/usr/bin/env bash
# Benchmark of the Edge Service Switch data planes (root; needs iproute2 and iperf3).
# The driver is the `switch_bench` example of crates/neptune-switch (it shares
# the root tests' namespace testbed); results go to stdout as Markdown + JSON.
#   bench/switch/run.sh                      # release build, 5 s per iperf3 run
#   BENCH_SECONDS=10 bench/switch/run.sh
#   bench/switch/run.sh --smoke              # dev build, 1 s per iperf3 run: does it still run?
set -euo pipefail
cd "$(dirname "$0")/../.."
target_dir=${CARGO_TARGET_DIR:-target}
if [ "${1:-}" = --smoke ]; then
  # The dev profile and the workspace's features, as `cargo test --workspace`
  # builds them (scripts/bench-smoke runs after it): nothing is rebuilt but
  # the two binaries.
  cargo build -q --locked --workspace --bin neptune-switchd --example switch_bench
  profile=debug
  export BENCH_SECONDS=1
elif [ -n "${1:-}" ]; then
  echo "usage: $0 [--smoke]" >&2
  exit 2
else
  cargo build --release -q -p neptune-switch --bin neptune-switchd --example switch_bench
  profile=release
fi
NEPTUNE_SWITCHD="$target_dir/$profile/neptune-switchd" exec "$target_dir/$profile/examples/switch_bench"
