#!/usr/bin/env bash
# 40-helm: Helm (tests, chart packaging) and ChartMuseum (what the VM runs), built from their
# committed lockfiles (lab/toolchain) and cached. VERB: build | up | down | status. Nothing runs
# as a daemon here; the upstream chart repository is started by 60-upstream.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

helm_bin()        { printf '%s\n' "$LAB_CACHE/helm-$HELM_VERSION/bin/helm"; }
chartmuseum_bin() { printf '%s\n' "$LAB_CACHE/chartmuseum-$CHARTMUSEUM_VERSION/bin/chartmuseum"; }

build_helm() {
  local out logf kube_minor dir
  out="$(helm_bin)"; dir="$(dirname "$(dirname "$out")")"
  [[ -x "$out" ]] && locked_build_done "$dir" helm && return 0
  logf="$(logfile build-helm)"
  # Helm's default capabilities name the cluster version it was built for; make it the lab's.
  kube_minor="${KUBE_VERSION#v1.}"; kube_minor="${kube_minor%%.*}"
  log "helm $HELM_VERSION: building (log $logf)"; local t0=$SECONDS
  rm -rf "$(dirname "$out").tmp" "$dir/lock.key"
  go_locked helm heavy go build -trimpath -ldflags "-s -w \
      -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kube_minor" \
    -o "$(dirname "$out").tmp/helm" helm.sh/helm/v3/cmd/helm >>"$logf" 2>&1 || die "helm: build failed; see $logf"
  rm -rf "$(dirname "$out")"; mv "$(dirname "$out").tmp" "$(dirname "$out")"
  lock_key helm >"$dir/lock.key"
  log "helm: built $out ($((SECONDS - t0))s)"
}

# The module proxy here refuses every ChartMuseum version so far, so lab/toolchain/refresh cannot
# write its lockfile; without one the hub runs the lab's stand-in (README), and the real binary
# is built as soon as `lab/toolchain/refresh chartmuseum` succeeds and its lockfile is committed.
build_chartmuseum() {
  local out logf dir
  out="$(chartmuseum_bin)"; dir="$(dirname "$(dirname "$out")")"
  if ! has_lock chartmuseum; then
    log "chartmuseum $CHARTMUSEUM_VERSION: no lockfile (the module proxy refuses it); the hub uses the lab's stand-in"
    rm -rf "$dir/bin"
    return 0
  fi
  [[ -x "$out" ]] && locked_build_done "$dir" chartmuseum && return 0
  logf="$(logfile build-chartmuseum)"
  log "chartmuseum $CHARTMUSEUM_VERSION: building (log $logf)"
  rm -rf "$dir/bin.tmp" "$dir/lock.key"
  go_locked chartmuseum heavy go build -trimpath -ldflags "-s -w -X main.Version=${CHARTMUSEUM_VERSION#v}" \
    -o "$dir/bin.tmp/chartmuseum" helm.sh/chartmuseum/cmd/chartmuseum >>"$logf" 2>&1 ||
    die "chartmuseum: build failed; see $logf"
  rm -rf "$dir/bin"; mv "$dir/bin.tmp" "$dir/bin"
  lock_key chartmuseum >"$dir/lock.key"
  log "chartmuseum: built $out"
}

up() {
  [[ -x "$(helm_bin)" ]] || die "helm: not built; run lab/build"
  mkdir -p "$LAB_STATE/env.d"
  {
    printf 'export LAB_HELM=%q\n' "$(helm_bin)"
    if [[ -x "$(chartmuseum_bin)" ]]; then printf 'export LAB_CHARTMUSEUM=%q\n' "$(chartmuseum_bin)"; fi
  } >"$LAB_STATE/env.d/40-helm.env"
}

status() {
  local rc=0
  if [[ -x "$(helm_bin)" ]]; then printf 'helm\tready\t%s\n' "$("$(helm_bin)" version --short)"
  else printf 'helm\tmissing\t%s\n' "$(helm_bin)"; rc=1; fi
  if [[ -x "$(chartmuseum_bin)" ]]; then printf 'chartmuseum\tready\t%s\n' "$(chartmuseum_bin)"
  else printf 'chartmuseum\tunavailable\tno lockfile in %s (the lab stand-in serves)\n' "$(lock_dir chartmuseum)"; fi
  return $rc
}

case "${1:-}" in
  build) component_lock 40-helm; go_env; build_helm; build_chartmuseum ;;
  up) up ;;
  down) rm -f "$LAB_STATE/env.d/40-helm.env" ;;
  status) status ;;
  *) die "usage: $0 build|up|down|status" ;;
esac
