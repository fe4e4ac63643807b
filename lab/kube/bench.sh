#!/usr/bin/env bash
# Measure the lab's part 1 (10-kube, 20-vm) for docs/benchmarks.md: warm up time, memory of the
# running lab, and up time with LAB_NODES=200. Stops and starts those components; the cache
# must be complete (run lab/build first). Prints Markdown rows.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

COMPONENTS=("$LAB_DIR/components/10-kube.sh" "$LAB_DIR/components/20-vm.sh")
RUNS="${RUNS:-3}"

part1() {
  local verb="$1" c
  if [[ "$verb" == down ]]; then
    for ((c = ${#COMPONENTS[@]} - 1; c >= 0; c--)); do bash "${COMPONENTS[c]}" down; done
  else
    for c in "${COMPONENTS[@]}"; do bash "$c" "$verb"; done
  fi
}

# timed_up: seconds (1 decimal) for part1 up from a stopped lab.
timed_up() {
  local t0 t1
  part1 down >/dev/null 2>&1
  t0="$(date +%s.%N)"
  part1 up >/dev/null 2>&1 || die "bench: up failed; see $LAB_STATE/log"
  t1="$(date +%s.%N)"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", b - a }'
}

rss_rows() {
  local name pid rss total=0
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler kwok vm; do
    pid="$(cat "$(pidfile "$name")")"
    rss="$(ps -o rss= -p "$pid" | tr -d ' ')"
    total=$((total + rss))
    printf '| RSS %s | %d MiB |\n' "$name" $((rss / 1024))
  done
  printf '| RSS total (part 1) | %d MiB |\n' $((total / 1024))
}

part1 build >/dev/null 2>&1 || die "bench: the toolchain is not built; run lab/build"
times=()
for ((i = 1; i <= RUNS; i++)); do times+=("$(timed_up)"); done
printf '| warm up (10-kube + 20-vm, 6 nodes), %d runs | %s s |\n' "$RUNS" "${times[*]}"
sleep 30 # let the apiserver's caches and the controllers settle before reading memory
rss_rows
printf '| up with LAB_NODES=200 | %s s |\n' "$(LAB_NODES=200 timed_up)"
sleep 30
printf '| RSS with 200 nodes |\n'
rss_rows
part1 down >/dev/null 2>&1
