#!/usr/bin/env bash
# 10-kube: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, with fake CPU
# and GPU nodes from lab/kube/topology.txt. VERB: build | up | down | status.
#
# The lab's second compute cluster (lab/components/11-kube-infer.sh) is this script with
# LAB_KUBE_CLUSTER=infer: daemons, state, PKI and kubeconfig of its own, its ports the first
# cluster's plus LAB_KUBE_INFER_PORT_OFFSET, its nodes from lab/kube/topology-infer.txt.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
CLUSTER="${LAB_KUBE_CLUSTER:-}"
case "$CLUSTER" in
  "") SUFFIX="" OFFSET=0 NODE_NET=16 POD_CIDR=10.244.0.0/16 ENV_PREFIX=LAB_ ;;
  infer)
    SUFFIX=-infer OFFSET="$LAB_KUBE_INFER_PORT_OFFSET" NODE_NET=48 POD_CIDR=10.245.0.0/16
    ENV_PREFIX=LAB_INFER_
    # Its topology is its own: LAB_NODES widens the first cluster only.
    LAB_TOPOLOGY="$LAB_DIR/kube/topology-infer.txt" LAB_NODES=0
    ;;
  *) die "kube: LAB_KUBE_CLUSTER=$CLUSTER names no lab cluster; the clusters are: '' (the first), infer" ;;
esac
source "$LAB_DIR/kube/build.sh"
source "$LAB_DIR/kube/pki.sh"
source "$LAB_DIR/kube/nodes.sh"

KUBE_STATE="$LAB_STATE/kube$SUFFIX"
PKI="$KUBE_STATE/pki"
APISERVER_PORT=$((LAB_KUBE_APISERVER_PORT + OFFSET))
ETCD_CLIENT_PORT=$((LAB_ETCD_CLIENT_PORT + OFFSET))
ETCD_PEER_PORT=$((LAB_ETCD_PEER_PORT + OFFSET))
CONTROLLER_MANAGER_PORT=$((LAB_KUBE_CONTROLLER_MANAGER_PORT + OFFSET))
SCHEDULER_PORT=$((LAB_KUBE_SCHEDULER_PORT + OFFSET))
KWOK_PORT=$((LAB_KWOK_PORT + OFFSET))
APISERVER="https://127.0.0.1:$APISERVER_PORT"
ETCD_URL="https://127.0.0.1:$ETCD_CLIENT_PORT"
# Start order; down and status walk it too (down in reverse). Each daemon's pid file and log are
# named by the cluster: etcd, etcd-infer.
DAEMONS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
declare -A PORT_OF=(
  [etcd]="$ETCD_CLIENT_PORT $ETCD_PEER_PORT"
  [kube-apiserver]="$APISERVER_PORT"
  [kube-controller-manager]="$CONTROLLER_MANAGER_PORT"
  [kube-scheduler]="$SCHEDULER_PORT"
  [kwok]="$KWOK_PORT"
)
# dn DAEMON: the daemon's name in this cluster.
dn() { printf '%s\n' "$1$SUFFIX"; }

kubectl_lab() { "$(kube_bin_dir)/kubectl" --kubeconfig "$KUBE_STATE/admin.kubeconfig" "$@"; }

# https_ok URL: the endpoint answers 200 to the admin client certificate.
https_ok() {
  curl -fsS --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/$2.crt" --key "$PKI/$2.key" "$1" >/dev/null
}

check_ports() {
  local d p
  for d in "${DAEMONS[@]}"; do
    is_alive "$(dn "$d")" && continue
    for p in ${PORT_OF[$d]}; do
      port_free 127.0.0.1 "$p" ||
        die "kube: port 127.0.0.1:$p for $(dn "$d") is already in use; stop what listens there or change its port in lab/versions.env"
    done
  done
}

start_etcd() {
  forget_dead etcd
  start_daemon "$(dn etcd)" "$(etcd_bin_dir)/etcd" \
    --name "onprem-lab$SUFFIX" --data-dir "$KUBE_STATE/etcd" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "https://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "https://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "onprem-lab$SUFFIX=https://127.0.0.1:$ETCD_PEER_PORT" \
    --cert-file "$PKI/etcd.crt" --key-file "$PKI/etcd.key" \
    --trusted-ca-file "$PKI/ca.crt" --client-cert-auth \
    --peer-cert-file "$PKI/etcd.crt" --peer-key-file "$PKI/etcd.key" \
    --peer-trusted-ca-file "$PKI/ca.crt" --peer-client-cert-auth \
    --unsafe-no-fsync --log-level warn
  wait_for "$(dn etcd)" 60 https_ok "$ETCD_URL/health" apiserver-etcd-client
}

start_apiserver() {
  # The endpoint reconciler would publish 127.0.0.1 as the kubernetes service's endpoint, which
  # Endpoints validation rejects; nothing in the lab reaches the apiserver through the service.
  forget_dead kube-apiserver
  start_daemon "$(dn kube-apiserver)" "$(kube_bin_dir)/kube-apiserver" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --etcd-servers "$ETCD_URL" --etcd-cafile "$PKI/ca.crt" \
    --etcd-certfile "$PKI/apiserver-etcd-client.crt" --etcd-keyfile "$PKI/apiserver-etcd-client.key" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" --anonymous-auth=false \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 --endpoint-reconciler-type none \
    --allow-privileged=true --profiling=false --event-ttl 1h
  wait_for "$(dn kube-apiserver)" 90 https_ok "$APISERVER/readyz" admin
}

start_controllers() {
  forget_dead kube-controller-manager
  start_daemon "$(dn kube-controller-manager)" "$(kube_bin_dir)/kube-controller-manager" \
    --kubeconfig "$KUBE_STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$KUBE_STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$KUBE_STATE/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" \
    --cert-dir "$KUBE_STATE/controller-manager" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --use-service-account-credentials=true --cluster-name "onprem-lab$SUFFIX" \
    --leader-elect=false --profiling=false
  forget_dead kube-scheduler
  start_daemon "$(dn kube-scheduler)" "$(kube_bin_dir)/kube-scheduler" \
    --kubeconfig "$KUBE_STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$KUBE_STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig "$KUBE_STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" \
    --cert-dir "$KUBE_STATE/scheduler" --leader-elect=false --profiling=false
  forget_dead kwok
  start_daemon "$(dn kwok)" "$(kwok_bin_dir)/kwok" \
    --kubeconfig "$KUBE_STATE/kwok.kubeconfig" --config "$(kwok_bin_dir)/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr "$POD_CIDR" --node-lease-duration-seconds 40 \
    --server-address "127.0.0.1:$KWOK_PORT"
  wait_for "$(dn kube-controller-manager)" 60 curl -fsSk --max-time 3 "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz"
  wait_for "$(dn kube-scheduler)" 60 curl -fsSk --max-time 3 "https://127.0.0.1:$SCHEDULER_PORT/healthz"
  wait_for "$(dn kwok)" 60 curl -fsS --max-time 3 "http://127.0.0.1:$KWOK_PORT/healthz"
}

nodes_ready() {
  local want ready
  want="$(topology_rows | wc -l)"
  ready="$(kubectl_lab get nodes -l type=kwok --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l)"
  ((ready >= want))
}

register_nodes() {
  local manifest="$KUBE_STATE/nodes.yaml" existing extra
  existing="$(kubectl_lab get nodes -l type=kwok -o name | sed 's#^node/##')" ||
    die "kube: listing nodes failed; see $(logfile "$(dn kube-apiserver)")"
  render_nodes "$existing" >"$manifest"
  if [[ -s "$manifest" ]]; then
    kubectl_lab create -f "$manifest" >>"$(logfile "$(dn kwok)")" 2>&1 ||
      die "kube: registering the fake nodes failed; see $(logfile "$(dn kwok)")"
  fi
  # A lab started with a larger LAB_NODES keeps only the nodes the topology asks for now.
  extra="$(comm -13 <(topology_rows | awk '{print $1}' | sort) <(sort <<<"$existing"))"
  if [[ -n "$extra" ]]; then
    # shellcheck disable=SC2086
    kubectl_lab delete node --wait=false $extra >>"$(logfile "$(dn kwok)")" 2>&1 ||
      die "kube: removing nodes beyond the topology failed; see $(logfile "$(dn kwok)")"
  fi
  wait_for "$(dn kwok)" 180 nodes_ready
  # Pods can only be created once the controller manager made the namespace's service account.
  wait_for "$(dn kube-controller-manager)" 60 kubectl_lab get serviceaccount default -n default
}

write_env() {
  local env="$LAB_STATE/env.d/kube$SUFFIX.env" p="$ENV_PREFIX"
  mkdir -p "$LAB_STATE/env.d"
  {
    printf 'export %sKUBECONFIG=%s\n' "$p" "$KUBE_STATE/admin.kubeconfig"
    # The first cluster is the one kubectl and the tests reach by default.
    [[ -n "$CLUSTER" ]] || printf 'export KUBECONFIG=%s\n' "$KUBE_STATE/admin.kubeconfig"
    printf 'export %sKUBE_CA=%s\n' "$p" "$KUBE_STATE/ca.crt"
    printf 'export %sKUBE_VERSION=%s\n' "$p" "$KUBE_VERSION"
    printf 'export %sKUBE_SERVER=%s\n' "$p" "$APISERVER"
    printf 'export %sKUBECTL=%s\n' "$p" "$(kube_bin_dir)/kubectl"
    printf 'export %sKUBE_BIN_DIR=%s\n' "$p" "$(kube_bin_dir)"
    printf 'export %sKUBE_NODES=%s\n' "$p" "$(topology_rows | awk '{print $1}' | paste -sd, -)"
  } >"$env.tmp"
  mv "$env.tmp" "$env"
  # The short name people type: kubectl --kubeconfig lab/.state/kubeconfig get nodes
  # (lab/.state/kubeconfig-infer for the second cluster).
  ln -sfn "kube$SUFFIX/admin.kubeconfig" "$LAB_STATE/kubeconfig$SUFFIX"
}

kube_up() {
  local b
  for b in "$(etcd_bin_dir)/etcd" "$(kwok_bin_dir)/kwok" "$(kube_bin_dir)/kube-apiserver"; do
    [[ -x "$b" ]] || die "kube: $b is missing; run lab/build"
  done
  topology_rows >/dev/null
  check_ports
  mkdir -p "$KUBE_STATE"; chmod 0700 "$KUBE_STATE"
  kube_pki "$PKI" "$APISERVER"
  start_etcd
  start_apiserver
  start_controllers
  register_nodes
  write_env
  log "kube${CLUSTER:+ ($CLUSTER)} $KUBE_VERSION up at $APISERVER with $(topology_rows | wc -l) nodes; kubeconfig $KUBE_STATE/admin.kubeconfig"
}

kube_down() {
  local i
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop_daemon "$(dn "${DAEMONS[i]}")"; done
  rm -rf "$KUBE_STATE" "$LAB_STATE/env.d/kube$SUFFIX.env" "$LAB_STATE/kubeconfig$SUFFIX"
  for i in "${DAEMONS[@]}"; do rm -f "$LAB_STATE/log/$(dn "$i").log"; done
}

kube_status() {
  local d rc=0 who="kube$SUFFIX"
  if [[ ! -d "$KUBE_STATE" ]]; then
    printf '%s: not started\n' "$who"; return 1
  fi
  for d in "${DAEMONS[@]}"; do
    d="$(dn "$d")"
    if is_alive "$d"; then
      printf '%s: %-24s running (pid %s)\n' "$who" "$d" "$(cat "$(pidfile "$d")")"
    else
      printf '%s: %-24s DEAD; see %s\n' "$who" "$d" "$(logfile "$d")"; rc=1
    fi
  done
  if https_ok "$APISERVER/readyz" admin 2>/dev/null; then
    printf '%s: %-24s ready at %s, %s nodes Ready\n' "$who" api "$APISERVER" \
      "$(kubectl_lab get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l)"
  else
    printf '%s: %-24s NOT READY at %s\n' "$who" api "$APISERVER"; rc=1
  fi
  return $rc
}

case "${1:-}" in
  build) build_etcd; build_kwok; build_kubernetes ;;
  up) kube_up ;;
  down) kube_down ;;
  status) kube_status ;;
  *) die "usage: $0 build|up|down|status" ;;
esac
