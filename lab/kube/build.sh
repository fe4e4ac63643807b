# Build recipes of the Kubernetes toolchain, sourced by lab/components/10-kube.sh.
# shellcheck shell=bash
#
# Every tool is built in a throwaway wrapper module (never in the repo) into
# $LAB_CACHE/<tool>-<version>/bin. The bin folder appears only once every binary of that
# tool is built, so a present bin folder means a complete build and the next run skips it.

KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

kube_bin_dir()  { printf '%s\n' "$LAB_CACHE/kubernetes-$KUBE_VERSION/bin"; }
etcd_bin_dir()  { printf '%s\n' "$LAB_CACHE/etcd-$ETCD_VERSION/bin"; }
kwok_bin_dir()  { printf '%s\n' "$LAB_CACHE/kwok-$KWOK_VERSION/bin"; }

# tool_complete DIR NAME...: true when every NAME is an executable in DIR.
tool_complete() {
  local dir="$1" b; shift
  for b in "$@"; do [[ -x "$dir/$b" ]] || return 1; done
}

# tool_lock TOOL VERSION: hold a lock on one tool's build until this script exits, so two lab
# scripts started at once (lab/up and a test session) never build into the same folders.
tool_lock() {
  local fd
  mkdir -p "$LAB_CACHE"
  exec {fd}>"$LAB_CACHE/.build-$1-$2.lock"
  flock "$fd"
}

# wrapper_module TOOL: a fresh, empty Go module for one build, printed.
wrapper_module() {
  local w="$LAB_CACHE/.work/$1"
  rm -rf "$w"; mkdir -p "$w"
  (cd "$w" && go mod init labtools >/dev/null 2>&1)
  printf '%s\n' "$w"
}

# finish_build TOOL VERSION: move the staged binaries into place in one rename.
finish_build() {
  local d="$LAB_CACHE/$1-$2"
  rm -rf "${d:?}/bin"; mv "$d/bin.partial" "$d/bin"
  rm -rf "$LAB_CACHE/.work/$1"
  log "$1 $2 built in $((SECONDS - BUILD_STARTED)) s into $d/bin"
}

build_etcd() {
  local d w log
  tool_complete "$(etcd_bin_dir)" etcd || tool_lock etcd "$ETCD_VERSION"
  tool_complete "$(etcd_bin_dir)" etcd && { log "etcd $ETCD_VERSION cached"; return 0; }
  BUILD_STARTED=$SECONDS
  d="$(cache_dir etcd "$ETCD_VERSION")"; log="$d/build.log"
  log "building etcd $ETCD_VERSION (log $log)"
  go_env
  w="$(wrapper_module etcd)"
  (
    cd "$w" &&
      go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" &&
      heavy go build -mod=mod -trimpath -ldflags "-s -w" -o "$d/bin.partial/etcd" go.etcd.io/etcd/server/v3
  ) >"$log" 2>&1 || die "etcd: build of $ETCD_VERSION failed; see $log"
  finish_build etcd "$ETCD_VERSION"
}

# kwok run outside kwokctl has no stages of its own: the node and pod stages kwokctl uses by
# default (initialize, lease heartbeat, pod ready/complete/delete) are taken from the same
# release's source into kwok-stages.yaml beside the binary.
KWOK_STAGE_FILES=(node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml)

build_kwok() {
  local d w log
  tool_complete "$(kwok_bin_dir)" kwok && [[ -s "$(kwok_bin_dir)/kwok-stages.yaml" ]] ||
    tool_lock kwok "$KWOK_VERSION"
  tool_complete "$(kwok_bin_dir)" kwok && [[ -s "$(kwok_bin_dir)/kwok-stages.yaml" ]] &&
    { log "kwok $KWOK_VERSION cached"; return 0; }
  BUILD_STARTED=$SECONDS
  d="$(cache_dir kwok "$KWOK_VERSION")"; log="$d/build.log"
  log "building kwok $KWOK_VERSION (log $log)"
  go_env
  w="$(wrapper_module kwok)"
  (
    cd "$w" &&
      go get "sigs.k8s.io/kwok@$KWOK_VERSION" &&
      heavy go build -mod=mod -trimpath \
        -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
        -o "$d/bin.partial/kwok" sigs.k8s.io/kwok/cmd/kwok &&
      src="$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)" &&
      for f in "${KWOK_STAGE_FILES[@]}"; do printf -- '---\n'; cat "$src/kustomize/stage/$f" || exit 1; done \
        >"$d/bin.partial/kwok-stages.yaml"
  ) >"$log" 2>&1 || die "kwok: build of $KWOK_VERSION failed; see $log"
  finish_build kwok "$KWOK_VERSION"
}

# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with folders
# of its own tree; a wrapper module replaces each with the published v0.<minor>.<patch>.
build_kubernetes() {
  local d w log gomod staging minor b
  tool_complete "$(kube_bin_dir)" "${KUBE_BINARIES[@]}" || tool_lock kubernetes "$KUBE_VERSION"
  tool_complete "$(kube_bin_dir)" "${KUBE_BINARIES[@]}" && { log "kubernetes $KUBE_VERSION cached"; return 0; }
  BUILD_STARTED=$SECONDS
  d="$(cache_dir kubernetes "$KUBE_VERSION")"; log="$d/build.log"
  log "building kubernetes $KUBE_VERSION: ${KUBE_BINARIES[*]} (log $log; 10-30 min cold)"
  go_env
  w="$(wrapper_module kubernetes)"
  minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  staging="v0.${KUBE_VERSION#v1.}"
  local pkgs=() ldflags
  for b in "${KUBE_BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  (
    cd "$w" &&
      gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')" &&
      [[ -s "$gomod" ]] &&
      go mod edit -require="k8s.io/kubernetes@$KUBE_VERSION" &&
      for m in $(sed -n 's#^\s*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "$gomod"); do
        go mod edit -replace="$m=$m@$staging" || exit 1
      done &&
      go get "${pkgs[@]}" &&
      heavy go build -mod=mod -trimpath -ldflags "$ldflags" -o "$d/bin.partial/" "${pkgs[@]}"
  ) >"$log" 2>&1 || die "kubernetes: build of $KUBE_VERSION failed; see $log"
  finish_build kubernetes "$KUBE_VERSION"
}
