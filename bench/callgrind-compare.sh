#!/usr/bin/env bash
# Instructions per operation of pool-core, compared across bench binaries, measured
# exactly as the repository's bench/callgrind.sh does it: valgrind --tool=callgrind on
# `bench --callgrind pool-core --op OP --pool P --tasks T --iters N`, two runs that differ
# only in N, figure = (summary(N2) - summary(N1)) / (N2 - N1) (integer division), so setup
# (database, connections) cancels out.
#
#   bench/callgrind-compare.sh LABEL=PATH [LABEL=PATH ...]
#   e.g. bench/callgrind-compare.sh before=/tmp/bench-main after=target/release/bench
#
# To compare a change with main, build main's bench apart and keep its binary:
#   git worktree add --detach /tmp/main-tree main
#   (cd /tmp/main-tree && CARGO_TARGET_DIR=/tmp/main-target cargo build --release -p bench)
#   cp /tmp/main-target/release/bench /tmp/bench-main
#
# Figures (same parameters as bench/callgrind.sh, implementation pool-core only):
#   checkout : --op checkout --pool 4 --tasks 1  --iters 20000 / 120000
#   yield    : --op yield    --pool 4 --tasks 16 --iters 20000 / 120000  (waiting path)
#   select1  : --op select1  --pool 1 --tasks 1  --iters 5000  / 25000
#   held     : --op held-select1 --pool 1 --tasks 1 --iters 5000 / 25000  (one checkout, then
#              SELECT 1 on it: the statement path alone; not in the default set)
# For each figure every binary is run in turn (interleaved), then the next figure.
# Prints a markdown table on stdout (progress and raw totals on stderr). With two or more
# binaries a ratio column gives each binary's figure divided by the first one's (with two
# binaries: after/before).
#
# Environment: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres, the
# bench's own default). The script refuses to start when that server does not answer,
# because the bench would otherwise silently start a private throwaway cluster.
# CG_FIGURES=checkout,yield,select1 restricts the figures (default: all three).
set -euo pipefail

usage() {
  echo "usage: $0 LABEL=PATH [LABEL=PATH ...]" >&2
  exit 2
}
[ $# -ge 1 ] || usage

labels=()
bins=()
for arg in "$@"; do
  case "$arg" in
  *=*) ;;
  *) echo "not LABEL=PATH: $arg" >&2; usage ;;
  esac
  label=${arg%%=*}
  path=${arg#*=}
  [ -n "$label" ] && [ -n "$path" ] || usage
  [ -x "$path" ] || { echo "$label: not an executable file: $path" >&2; exit 1; }
  labels+=("$label")
  bins+=("$(readlink -f "$path")")
done

command -v valgrind >/dev/null || { echo "valgrind not found" >&2; exit 1; }
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if command -v pg_isready >/dev/null; then
  pg_isready -q -d "$DATABASE_URL" ||
    { echo "no PostgreSQL server answers at $DATABASE_URL" >&2; exit 1; }
fi

impl=pool-core
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# instructions BIN OP POOL TASKS ITERS  -> total instructions of the run (callgrind summary)
instructions() {
  valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" \
    "$1" --callgrind "$impl" --op "$2" --pool "$3" --tasks "$4" --iters "$5" >/dev/null 2>"$tmp/err" ||
    { echo "run failed: $1 --op $2 --pool $3 --tasks $4 --iters $5" >&2; cat "$tmp/err" >&2; exit 1; }
  local s
  s=$(sed -n 's/^summary: //p' "$tmp/cg.out")
  [ -n "$s" ] || { echo "no summary line in callgrind output of $1" >&2; exit 1; }
  echo "$s"
}

# per_op BIN OP POOL TASKS SMALL LARGE
per_op() {
  local a b
  a=$(instructions "$1" "$2" "$3" "$4" "$5")
  b=$(instructions "$1" "$2" "$3" "$4" "$6")
  echo "    totals: $5 iters $a, $6 iters $b" >&2
  echo $(((b - a) / ($6 - $5)))
}

figures_wanted=",${CG_FIGURES:-checkout,yield,select1},"
rows=()
# figure KEY LABEL OP POOL TASKS SMALL LARGE
figure() {
  local key=$1 label=$2 op=$3 pool=$4 tasks=$5 small=$6 large=$7
  case "$figures_wanted" in *",$key,"*) ;; *) return 0 ;; esac
  local first="" i n ratio t0
  for i in "${!bins[@]}"; do
    t0=$SECONDS
    echo "$key: ${labels[$i]} (${bins[$i]}) ..." >&2
    n=$(per_op "${bins[$i]}" "$op" "$pool" "$tasks" "$small" "$large")
    echo "$key: ${labels[$i]} $n instructions/op ($((SECONDS - t0)) s)" >&2
    if [ -z "$first" ]; then
      first=$n
      ratio="1.000"
    else
      ratio=$(awk -v n="$n" -v b="$first" 'BEGIN { printf "%.3f", n / b }')
    fi
    if [ "${#bins[@]}" -ge 2 ]; then
      rows+=("| $label | ${labels[$i]} | $n | $ratio |")
    else
      rows+=("| $label | ${labels[$i]} | $n |")
    fi
  done
}

start=$SECONDS
figure checkout "checkout + return, 1 thread, pool 4, 1 task" checkout 4 1 20000 120000
figure yield "checkout, yield, return, 1 thread, pool 4, 16 tasks (waiting path)" yield 4 16 20000 120000
figure select1 "SELECT 1 per checkout, 1 thread, pool 1, 1 task (client side only)" select1 1 1 5000 25000
figure held "SELECT 1 on a held connection, 1 thread, pool 1 (client side only)" held-select1 1 1 5000 25000

echo
echo "Instructions per operation (callgrind), implementation \`$impl\`, $(date -u '+%Y-%m-%d %H:%M UTC'):"
echo
if [ "${#bins[@]}" -ge 2 ]; then
  if [ "${#bins[@]}" -eq 2 ]; then
    echo "| figure | label | instructions per op | ${labels[1]}/${labels[0]} |"
  else
    echo "| figure | label | instructions per op | ÷ ${labels[0]} |"
  fi
  echo "|---|---|---:|---:|"
else
  echo "| figure | label | instructions per op |"
  echo "|---|---|---:|"
fi
printf '%s\n' "${rows[@]}"
echo
echo "(binaries: $(for i in "${!bins[@]}"; do printf '%s=%s ' "${labels[$i]}" "${bins[$i]}"; done); total $((SECONDS - start)) s)"
