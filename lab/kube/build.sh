# Build recipes of the Kubernetes toolchain, sourced by lab/components/10-kube.sh.
# shellcheck shell=bash
#
# Every tool is built from its committed wrapper module (lab/toolchain/<tool>, -mod=readonly) into
# $LAB_CACHE/<tool>-<version>/bin. The bin folder appears only once every binary of that tool is
# built, beside lock.key (the hash of the lockfile it was built from); the next run skips a tool
# whose bin folder is there and whose lock.key matches the committed lockfile.

# kubelet: the node host's real kubelet (lab/components/25-node.sh kubelet-up).
KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)

kube_bin_dir()  { printf '%s\n' "$LAB_CACHE/kubernetes-$KUBE_VERSION/bin"; }
etcd_bin_dir()  { printf '%s\n' "$LAB_CACHE/etcd-$ETCD_VERSION/bin"; }
kwok_bin_dir()  { printf '%s\n' "$LAB_CACHE/kwok-$KWOK_VERSION/bin"; }
crictl_bin_dir() { printf '%s\n' "$LAB_CACHE/crictl-$CRICTL_VERSION/bin"; }

# tool_complete DIR NAME...: true when every NAME is an executable in DIR.
tool_complete() {
  local dir="$1" b; shift
  for b in "$@"; do [[ -x "$dir/$b" ]] || return 1; done
}

# locked_complete TOOL DIR NAME...: every NAME is built, from TOOL's current lockfile.
locked_complete() {
  local tool="$1" dir="$2"; shift 2
  tool_complete "$dir" "$@" && locked_build_done "$(dirname "$dir")" "$tool"
}

# tool_lock TOOL VERSION: hold a lock on one tool's build until this script exits, so two lab
# scripts started at once (lab/up and a test session) never build into the same folders.
tool_lock() {
  local fd
  mkdir -p "$LAB_CACHE"
  exec {fd}>"$LAB_CACHE/.build-$1-$2.lock"
  flock "$fd"
}

# finish_build TOOL VERSION: move the staged binaries into place in one rename, recording which
# lockfile they were built from.
finish_build() {
  local d="$LAB_CACHE/$1-$2"
  rm -rf "${d:?}/bin"; mv "$d/bin.partial" "$d/bin"
  lock_key "$1" >"$d/lock.key"
  log "$1 $2 built in $((SECONDS - BUILD_STARTED)) s into $d/bin"
}

# start_build TOOL VERSION: the tool's cache folder, emptied of any earlier partial build.
start_build() {
  local d; d="$(cache_dir "$1" "$2")"
  rm -rf "$d/bin.partial" "$d/lock.key"
  printf '%s\n' "$d"
}

build_etcd() {
  local d log
  locked_complete etcd "$(etcd_bin_dir)" etcd || tool_lock etcd "$ETCD_VERSION"
  locked_complete etcd "$(etcd_bin_dir)" etcd && { log "etcd $ETCD_VERSION cached"; return 0; }
  BUILD_STARTED=$SECONDS
  d="$(start_build etcd "$ETCD_VERSION")"; log="$d/build.log"
  log "building etcd $ETCD_VERSION (log $log)"
  go_env
  go_locked etcd heavy go build -trimpath -ldflags "-s -w" -o "$d/bin.partial/etcd" \
    go.etcd.io/etcd/server/v3 >"$log" 2>&1 || die "etcd: build of $ETCD_VERSION failed; see $log"
  finish_build etcd "$ETCD_VERSION"
}

# kwok run outside kwokctl has no stages of its own: the node and pod stages kwokctl uses by
# default (initialize, lease heartbeat, pod ready/complete/delete) are taken from the same
# release's source into kwok-stages.yaml beside the binary.
KWOK_STAGE_FILES=(node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml)

build_kwok() {
  local d log
  locked_complete kwok "$(kwok_bin_dir)" kwok && [[ -s "$(kwok_bin_dir)/kwok-stages.yaml" ]] ||
    tool_lock kwok "$KWOK_VERSION"
  locked_complete kwok "$(kwok_bin_dir)" kwok && [[ -s "$(kwok_bin_dir)/kwok-stages.yaml" ]] &&
    { log "kwok $KWOK_VERSION cached"; return 0; }
  BUILD_STARTED=$SECONDS
  d="$(start_build kwok "$KWOK_VERSION")"; log="$d/build.log"
  log "building kwok $KWOK_VERSION (log $log)"
  go_env
  (
    go_locked kwok heavy go build -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
      -o "$d/bin.partial/kwok" sigs.k8s.io/kwok/cmd/kwok &&
      src="$(go_locked kwok go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)" &&
      for f in "${KWOK_STAGE_FILES[@]}"; do printf -- '---\n'; cat "$src/kustomize/stage/$f" || exit 1; done \
        >"$d/bin.partial/kwok-stages.yaml"
  ) >"$log" 2>&1 || die "kwok: build of $KWOK_VERSION failed; see $log"
  finish_build kwok "$KWOK_VERSION"
}

# crictl, the CRI client the node host's tests pull through (lab/components/25-node.sh).
build_crictl() {
  local d log
  locked_complete crictl "$(crictl_bin_dir)" crictl || tool_lock crictl "$CRICTL_VERSION"
  locked_complete crictl "$(crictl_bin_dir)" crictl && { log "crictl $CRICTL_VERSION cached"; return 0; }
  BUILD_STARTED=$SECONDS
  d="$(start_build crictl "$CRICTL_VERSION")"; log="$d/build.log"
  log "building crictl $CRICTL_VERSION (log $log)"
  go_env
  go_locked crictl heavy go build -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    -o "$d/bin.partial/crictl" sigs.k8s.io/cri-tools/cmd/crictl >"$log" 2>&1 ||
    die "crictl: build of $CRICTL_VERSION failed; see $log"
  finish_build crictl "$CRICTL_VERSION"
}

# The lockfile (lab/toolchain/kubernetes) replaces the staging modules k8s.io/kubernetes requires
# at v0.0.0 with the published v0.<minor>.<patch>; the binaries report the pinned version.
build_kubernetes() {
  local d log minor b
  locked_complete kubernetes "$(kube_bin_dir)" "${KUBE_BINARIES[@]}" || tool_lock kubernetes "$KUBE_VERSION"
  locked_complete kubernetes "$(kube_bin_dir)" "${KUBE_BINARIES[@]}" && { log "kubernetes $KUBE_VERSION cached"; return 0; }
  BUILD_STARTED=$SECONDS
  d="$(start_build kubernetes "$KUBE_VERSION")"; log="$d/build.log"
  log "building kubernetes $KUBE_VERSION: ${KUBE_BINARIES[*]} (log $log; 10-30 min cold)"
  go_env
  minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local pkgs=() ldflags
  for b in "${KUBE_BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  go_locked kubernetes heavy go build -trimpath -ldflags "$ldflags" -o "$d/bin.partial/" "${pkgs[@]}" \
    >"$log" 2>&1 || die "kubernetes: build of $KUBE_VERSION failed; see $log"
  finish_build kubernetes "$KUBE_VERSION"
}
