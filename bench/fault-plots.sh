#!/usr/bin/env bash
# Regenerates the pictures of docs/reliability.md: runs the key scenarios of the faults
# suite with their sampler timelines written to docs/reliability/ (FAULTS_PLOTS), then
# draws them (bench --plot-faults). Needs what the faults suite needs (the PostgreSQL
# binaries for the private clusters) and a TrueType font (fonts-dejavu-core).
#
#   bash bench/fault-plots.sh [OUT_DIR]       (default docs/reliability)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/reliability}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
scenarios=(
  restart::server_restart_fast_and_immediate_under_load
  restart::deaf_startup_and_stopped_postmaster
  load::connection_spike_with_slow_connects
  load::exhaustion_and_fifo_with_25000_waiters
  lifecycle::leak_warning_exactly_once
)
rm -f "$out"/*.csv
FAULTS_PLOTS="$out" cargo test -p tests --test faults -- --exact "${scenarios[@]}"
cargo run --release -p bench -- --plot-faults "$out"
