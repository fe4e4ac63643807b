#!/usr/bin/env bash
# 10-kube: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, with fake CPU
# and GPU nodes from lab/kube/topology.txt. VERB: build | up | down | status.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
source "$LAB_DIR/kube/build.sh"
source "$LAB_DIR/kube/pki.sh"
source "$LAB_DIR/kube/nodes.sh"

KUBE_STATE="$LAB_STATE/kube"
PKI="$KUBE_STATE/pki"
APISERVER="https://127.0.0.1:$LAB_KUBE_APISERVER_PORT"
ETCD_URL="https://127.0.0.1:$LAB_ETCD_CLIENT_PORT"
# Start order; down and status walk it too (down in reverse).
DAEMONS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
declare -A PORT_OF=(
  [etcd]="$LAB_ETCD_CLIENT_PORT $LAB_ETCD_PEER_PORT"
  [kube-apiserver]="$LAB_KUBE_APISERVER_PORT"
  [kube-controller-manager]="$LAB_KUBE_CONTROLLER_MANAGER_PORT"
  [kube-scheduler]="$LAB_KUBE_SCHEDULER_PORT"
  [kwok]="$LAB_KWOK_PORT"
)

kubectl_lab() { "$(kube_bin_dir)/kubectl" --kubeconfig "$KUBE_STATE/admin.kubeconfig" "$@"; }

# https_ok URL: the endpoint answers 200 to the admin client certificate.
https_ok() {
  curl -fsS --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/$2.crt" --key "$PKI/$2.key" "$1" >/dev/null
}

check_ports() {
  local d p
  for d in "${DAEMONS[@]}"; do
    is_alive "$d" && continue
    for p in ${PORT_OF[$d]}; do
      port_free 127.0.0.1 "$p" ||
        die "kube: port 127.0.0.1:$p for $d is already in use; stop what listens there or change its port in lab/versions.env"
    done
  done
}

start_etcd() {
  forget_dead etcd
  start_daemon etcd "$(etcd_bin_dir)/etcd" \
    --name onprem-lab --data-dir "$KUBE_STATE/etcd" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "https://127.0.0.1:$LAB_ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "https://127.0.0.1:$LAB_ETCD_PEER_PORT" \
    --initial-cluster "onprem-lab=https://127.0.0.1:$LAB_ETCD_PEER_PORT" \
    --cert-file "$PKI/etcd.crt" --key-file "$PKI/etcd.key" \
    --trusted-ca-file "$PKI/ca.crt" --client-cert-auth \
    --peer-cert-file "$PKI/etcd.crt" --peer-key-file "$PKI/etcd.key" \
    --peer-trusted-ca-file "$PKI/ca.crt" --peer-client-cert-auth \
    --unsafe-no-fsync --log-level warn
  wait_for etcd 60 https_ok "$ETCD_URL/health" apiserver-etcd-client
}

start_apiserver() {
  # The endpoint reconciler would publish 127.0.0.1 as the kubernetes service's endpoint, which
  # Endpoints validation rejects; nothing in the lab reaches the apiserver through the service.
  forget_dead kube-apiserver
  start_daemon kube-apiserver "$(kube_bin_dir)/kube-apiserver" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$LAB_KUBE_APISERVER_PORT" \
    --etcd-servers "$ETCD_URL" --etcd-cafile "$PKI/ca.crt" \
    --etcd-certfile "$PKI/apiserver-etcd-client.crt" --etcd-keyfile "$PKI/apiserver-etcd-client.key" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" --anonymous-auth=false \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 --endpoint-reconciler-type none \
    --allow-privileged=true --profiling=false --event-ttl 1h
  wait_for kube-apiserver 90 https_ok "$APISERVER/readyz" admin
}

start_controllers() {
  forget_dead kube-controller-manager
  start_daemon kube-controller-manager "$(kube_bin_dir)/kube-controller-manager" \
    --kubeconfig "$KUBE_STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$KUBE_STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$KUBE_STATE/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$LAB_KUBE_CONTROLLER_MANAGER_PORT" \
    --cert-dir "$KUBE_STATE/controller-manager" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --use-service-account-credentials=true --cluster-name onprem-lab \
    --leader-elect=false --profiling=false
  forget_dead kube-scheduler
  start_daemon kube-scheduler "$(kube_bin_dir)/kube-scheduler" \
    --kubeconfig "$KUBE_STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$KUBE_STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig "$KUBE_STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$LAB_KUBE_SCHEDULER_PORT" \
    --cert-dir "$KUBE_STATE/scheduler" --leader-elect=false --profiling=false
  forget_dead kwok
  start_daemon kwok "$(kwok_bin_dir)/kwok" \
    --kubeconfig "$KUBE_STATE/kwok.kubeconfig" --config "$(kwok_bin_dir)/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr 10.244.0.0/16 --node-lease-duration-seconds 40 \
    --server-address "127.0.0.1:$LAB_KWOK_PORT"
  wait_for kube-controller-manager 60 curl -fsSk --max-time 3 "https://127.0.0.1:$LAB_KUBE_CONTROLLER_MANAGER_PORT/healthz"
  wait_for kube-scheduler 60 curl -fsSk --max-time 3 "https://127.0.0.1:$LAB_KUBE_SCHEDULER_PORT/healthz"
  wait_for kwok 60 curl -fsS --max-time 3 "http://127.0.0.1:$LAB_KWOK_PORT/healthz"
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
    die "kube: listing nodes failed; see $(logfile kube-apiserver)"
  render_nodes "$existing" >"$manifest"
  if [[ -s "$manifest" ]]; then
    kubectl_lab create -f "$manifest" >>"$(logfile kwok)" 2>&1 ||
      die "kube: registering the fake nodes failed; see $(logfile kwok)"
  fi
  # A lab started with a larger LAB_NODES keeps only the nodes the topology asks for now.
  extra="$(comm -13 <(topology_rows | awk '{print $1}' | sort) <(sort <<<"$existing"))"
  if [[ -n "$extra" ]]; then
    # shellcheck disable=SC2086
    kubectl_lab delete node --wait=false $extra >>"$(logfile kwok)" 2>&1 ||
      die "kube: removing nodes beyond the topology failed; see $(logfile kwok)"
  fi
  wait_for kwok 180 nodes_ready
  # Pods can only be created once the controller manager made the namespace's service account.
  wait_for kube-controller-manager 60 kubectl_lab get serviceaccount default -n default
}

write_env() {
  mkdir -p "$LAB_STATE/env.d"
  cat >"$LAB_STATE/env.d/kube.env.tmp" <<EOF
export LAB_KUBECONFIG=$KUBE_STATE/admin.kubeconfig
export KUBECONFIG=$KUBE_STATE/admin.kubeconfig
export LAB_KUBE_CA=$KUBE_STATE/ca.crt
export LAB_KUBE_VERSION=$KUBE_VERSION
export LAB_KUBE_SERVER=$APISERVER
export LAB_KUBECTL=$(kube_bin_dir)/kubectl
export LAB_KUBE_BIN_DIR=$(kube_bin_dir)
export LAB_KUBE_NODES=$(topology_rows | awk '{print $1}' | paste -sd, -)
EOF
  mv "$LAB_STATE/env.d/kube.env.tmp" "$LAB_STATE/env.d/kube.env"
  # The short name people type: kubectl --kubeconfig lab/.state/kubeconfig get nodes
  ln -sfn kube/admin.kubeconfig "$LAB_STATE/kubeconfig"
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
  log "kube $KUBE_VERSION up at $APISERVER with $(topology_rows | wc -l) nodes; kubeconfig $KUBE_STATE/admin.kubeconfig"
}

kube_down() {
  local i
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop_daemon "${DAEMONS[i]}"; done
  rm -rf "$KUBE_STATE" "$LAB_STATE/env.d/kube.env" "$LAB_STATE/kubeconfig"
  rm -f "$LAB_STATE"/log/{etcd,kube-apiserver,kube-controller-manager,kube-scheduler,kwok}.log
}

kube_status() {
  local d rc=0
  if [[ ! -d "$KUBE_STATE" ]]; then
    printf 'kube: not started\n'; return 1
  fi
  for d in "${DAEMONS[@]}"; do
    if is_alive "$d"; then
      printf 'kube: %-24s running (pid %s)\n' "$d" "$(cat "$(pidfile "$d")")"
    else
      printf 'kube: %-24s DEAD; see %s\n' "$d" "$(logfile "$d")"; rc=1
    fi
  done
  if https_ok "$APISERVER/readyz" admin 2>/dev/null; then
    printf 'kube: %-24s ready at %s, %s nodes Ready\n' api "$APISERVER" \
      "$(kubectl_lab get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l)"
  else
    printf 'kube: %-24s NOT READY at %s\n' api "$APISERVER"; rc=1
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
