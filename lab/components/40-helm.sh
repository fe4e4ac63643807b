#!/usr/bin/env bash
# 40-helm: Helm (tests, chart packaging) and ChartMuseum (what the VM runs), built from the Go
# module proxy and cached. VERB: build | up | down | status. Nothing runs as a daemon here; the
# upstream chart repository is started by 60-upstream.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

helm_bin()        { printf '%s\n' "$LAB_CACHE/helm-$HELM_VERSION/bin/helm"; }
chartmuseum_bin() { printf '%s\n' "$LAB_CACHE/chartmuseum-$CHARTMUSEUM_VERSION/bin/chartmuseum"; }
chartmuseum_refusal() { printf '%s\n' "$LAB_CACHE/chartmuseum-$CHARTMUSEUM_VERSION/unavailable"; }

build_helm() {
  local out logf kube_minor
  out="$(helm_bin)"
  [[ -x "$out" ]] && return 0
  logf="$(logfile build-helm)"
  # Helm's default capabilities name the cluster version it was built for; make it the lab's.
  kube_minor="${KUBE_VERSION#v1.}"; kube_minor="${kube_minor%%.*}"
  log "helm $HELM_VERSION: building (log $logf)"; local t0=$SECONDS
  (
    cd "$(mktemp -d)"
    GOFLAGS='' GOBIN="$(dirname "$out").tmp" heavy go install -trimpath -ldflags "-s -w \
      -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kube_minor" \
      "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  ) >>"$logf" 2>&1 || die "helm: build failed; see $logf"
  rm -rf "$(dirname "$out")"; mv "$(dirname "$out").tmp" "$(dirname "$out")"
  log "helm: built $out ($((SECONDS - t0))s)"
}

# The module proxy here has refused every ChartMuseum version so far; the refusal is recorded
# (per version) so that `build` stays a no-op, and the build is tried again when the pin changes.
build_chartmuseum() {
  local out logf refusal
  out="$(chartmuseum_bin)"; refusal="$(chartmuseum_refusal)"
  [[ -x "$out" ]] && return 0
  if [[ -s "$refusal" ]]; then
    log "chartmuseum $CHARTMUSEUM_VERSION: not available from the module proxy (see $refusal)"
    return 0
  fi
  logf="$(logfile build-chartmuseum)"
  log "chartmuseum $CHARTMUSEUM_VERSION: building (log $logf)"
  if ! (cd "$(mktemp -d)" && go mod download -json "helm.sh/chartmuseum@$CHARTMUSEUM_VERSION") >>"$logf" 2>&1; then
    mkdir -p "$(dirname "$refusal")"
    tail -3 "$logf" >"$refusal"
    log "chartmuseum: the module proxy refused helm.sh/chartmuseum@$CHARTMUSEUM_VERSION; see $logf"
    return 0
  fi
  (
    cd "$(mktemp -d)"
    GOFLAGS='' GOBIN="$(dirname "$out")" heavy go install -trimpath \
      -ldflags "-s -w -X main.Version=${CHARTMUSEUM_VERSION#v}" "helm.sh/chartmuseum/cmd/chartmuseum@$CHARTMUSEUM_VERSION"
  ) >>"$logf" 2>&1 || die "chartmuseum: build failed; see $logf"
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
  else printf 'chartmuseum\tunavailable\t%s\n' "$(chartmuseum_refusal)"; fi
  return $rc
}

case "${1:-}" in
  build) component_lock 40-helm; go_env; export GOSUMDB="${GOSUMDB:-off}"; build_helm; build_chartmuseum ;;
  up) up ;;
  down) rm -f "$LAB_STATE/env.d/40-helm.env" ;;
  status) status ;;
  *) die "usage: $0 build|up|down|status" ;;
esac
