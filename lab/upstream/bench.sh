#!/usr/bin/env bash
# Measure the lab's part 2 (30-pulumi, 40-helm, 50-keycloak, 60-upstream) for docs/benchmarks.md:
# cold build time of each component into an empty throwaway cache (module, Maven and pip caches
# included, so every download counts), the cache size of each tool, and the time `up` takes from
# stopped. Prints Markdown rows. Each cold build holds the lab's shared heavy lock, so it neither
# slows nor is slowed by another Go build. Needs the package registries (it downloads).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

MAIN_HEAVY_LOCK="$LAB_CACHE/.heavy.lock"
COLD="${COLD_CACHE:-$(mktemp -d /tmp/lab-cold-XXXXXX)}"
COMPONENTS=(30-pulumi 40-helm 50-keycloak 60-upstream)
mkdir -p "$COLD"

seconds_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }'; }

cold_build() {
  local c="$1" t0
  t0="$(date +%s.%N)"
  flock "$MAIN_HEAVY_LOCK" env LAB_CACHE="$COLD" GOPATH="$COLD/gopath" GOCACHE="$COLD/gocache" \
    MAVEN_OPTS="-Dmaven.repo.local=$COLD/m2" PIP_NO_CACHE_DIR=1 \
    LAB_STATE="$COLD/state" bash "$LAB_DIR/components/$c.sh" build >>"$COLD/bench.log" 2>&1 \
    || die "bench: cold build of $c failed; see $COLD/bench.log"
  printf '| cold build %s | %s s |\n' "$c" "$(seconds_since "$t0")"
}

size() { du -sh "$@" 2>/dev/null | awk '{ s = s (s ? " + " : "") $1 } END { print s }'; }

for c in "${COMPONENTS[@]}"; do cold_build "$c"; done
printf '| cache: Pulumi CLI + exec helper | %s |\n' "$(size "$COLD"/pulumi-[0-9]*)"
printf '| cache: Kubernetes provider | %s |\n' "$(size "$COLD"/pulumi-kubernetes-*)"
printf '| cache: Helm | %s |\n' "$(size "$COLD"/helm-*)"
printf '| cache: Keycloak distribution | %s |\n' "$(size "$COLD"/keycloak-*)"
printf '| cache: stand-in images (OCI layout) | %s |\n' "$(size "$COLD"/upstream-images-*)"
printf '| cache: stand-in charts | %s |\n' "$(size "$COLD"/upstream-charts-*)"
printf '| cache: devpi-server venv + wheelhouse | %s |\n' "$(size "$COLD"/devpi-* "$COLD"/wheelhouse-*)"
printf '| cache: Go module and build caches (build-time only) | %s |\n' "$(size "$COLD/gopath" "$COLD/gocache")"

# Start-up from stopped, with the real (warm) cache of this checkout.
for c in 50-keycloak 60-upstream; do
  bash "$LAB_DIR/components/$c.sh" down >/dev/null 2>&1 || true
  t0="$(date +%s.%N)"
  bash "$LAB_DIR/components/$c.sh" up >/dev/null 2>&1 || die "bench: up of $c failed; see $LAB_STATE/log"
  printf '| up from stopped %s | %s s |\n' "$c" "$(seconds_since "$t0")"
done
[[ -n "${COLD_CACHE:-}" ]] || { chmod -R u+w "$COLD" 2>/dev/null; rm -rf "$COLD"; }
