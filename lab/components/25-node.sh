#!/usr/bin/env bash
# 25-node: a cluster node with a real container runtime: Debian's containerd and runc in a network
# namespace of its own, with its own sshd and host key, reached over SSH like a site's node (as the
# VM's user and key). It stands for the kwok node LAB_NODE_NAME in inventories that configure node
# runtimes. A second veth pair joins it to the VM's namespace: the node reaches the hub (and the
# hub's DNS) at the VM's address without any forwarding on the host. Its containerd keeps its
# configuration, data and socket under $LAB_STATE/node, never in the host's /etc/containerd.
# VERB: build | up | down | status | restart-containerd.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
source "$LAB_DIR/kube/build.sh"

NS="$LAB_NODE_NETNS"
VM_NS="$LAB_VM_NETNS"
NODE_STATE="$LAB_STATE/node"
CTRD="$NODE_STATE/containerd"
SOCKET="$CTRD/run/containerd.sock"
VM_STATE="$LAB_STATE/vm"
SSHD=/usr/sbin/sshd
# The node's own resolv.conf: `ip netns exec` mounts /etc/netns/<ns>/* over /etc for what it runs.
NETNS_ETC="/etc/netns/$NS"

node_build() {
  local t
  for t in "$SSHD" /usr/sbin/ip /usr/bin/containerd /usr/bin/ctr /usr/sbin/runc /usr/bin/ssh-keygen; do
    [[ -x "$t" ]] || die "node: $t is missing; run lab/system-deps (Debian packages in lab/apt-packages.txt)"
  done
  build_crictl
}

netns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$1"; }

node_network() {
  local err="$LAB_STATE/log/node-netns.err"
  mkdir -p "$LAB_STATE/log"
  netns_exists "$VM_NS" || die "node: the VM's namespace $VM_NS is missing; start the lab with lab/up"
  if ! netns_exists "$NS"; then
    ip netns add "$NS" 2>"$err" || die "node: cannot create network namespace $NS ($(head -n1 "$err"))"
  fi
  if ! ip link show "$LAB_NODE_VETH_HOST" >/dev/null 2>&1; then
    if ip -4 route show to "$LAB_NODE_ADDR/$LAB_NODE_PREFIX" | grep -q .; then
      die "node: the host already routes $LAB_NODE_ADDR/$LAB_NODE_PREFIX; change LAB_NODE_* in lab/versions.env"
    fi
    ip link add "$LAB_NODE_VETH_HOST" type veth peer name eth0 netns "$NS" 2>"$err" ||
      die "node: cannot create the veth pair $LAB_NODE_VETH_HOST/eth0 ($(head -n1 "$err"))"
  fi
  ip addr replace "$LAB_NODE_HOST_ADDR/$LAB_NODE_PREFIX" dev "$LAB_NODE_VETH_HOST"
  ip link set "$LAB_NODE_VETH_HOST" up
  ip -n "$NS" link set lo up
  ip -n "$NS" addr replace "$LAB_NODE_ADDR/$LAB_NODE_PREFIX" dev eth0
  ip -n "$NS" link set eth0 up
  # The link to the VM: created in the node's namespace, its far end moved into the VM's.
  if ! ip -n "$NS" link show eth1 >/dev/null 2>&1; then
    ip -n "$NS" link add eth1 type veth peer name "$LAB_NODE_VETH_VM" netns "$VM_NS" 2>"$err" ||
      die "node: cannot create the node-VM veth pair ($(head -n1 "$err"))"
  fi
  ip -n "$NS" addr replace "$LAB_NODE_LINK_ADDR/30" dev eth1
  ip -n "$NS" link set eth1 up
  ip -n "$VM_NS" addr replace "$LAB_NODE_VM_LINK_ADDR/30" dev "$LAB_NODE_VETH_VM"
  ip -n "$VM_NS" link set "$LAB_NODE_VETH_VM" up
  ip -n "$NS" route replace "$LAB_VM_ADDR/32" via "$LAB_NODE_VM_LINK_ADDR" dev eth1
  # And the VM to the node, for sites that reach their nodes through the VM (node_ssh.jump).
  ip -n "$VM_NS" route replace "$LAB_NODE_ADDR/32" via "$LAB_NODE_LINK_ADDR" dev "$LAB_NODE_VETH_VM"
  rm -f "$err"
  mkdir -p "$NETNS_ETC"
  printf '# the lab node %s: the site DNS is the hub VM'"'"'s dnsmasq\nnameserver %s\n' "$NS" "$LAB_VM_ADDR" \
    >"$NETNS_ETC/resolv.conf"
}

node_keys() {
  mkdir -p "$NODE_STATE"; chmod 0700 "$NODE_STATE"
  [[ -s "$NODE_STATE/ssh_host_ed25519_key" ]] ||
    ssh-keygen -q -t ed25519 -N '' -C "onprem-lab-node" -f "$NODE_STATE/ssh_host_ed25519_key"
  chmod 0600 "$NODE_STATE/ssh_host_ed25519_key"
  printf '%s %s\n' "$LAB_NODE_ADDR" "$(cut -d' ' -f1,2 "$NODE_STATE/ssh_host_ed25519_key.pub")" \
    >"$NODE_STATE/known_hosts"
  sed -e "s|@VM_ADDR@|$LAB_NODE_ADDR|g" -e "s|@VM_SSH_PORT@|22|g" \
    -e "s|@STATE@|$NODE_STATE|g" -e "s|@VM_USER@|$LAB_VM_USER|g" \
    "$LAB_DIR/vm/sshd_config.tmpl" >"$NODE_STATE/sshd_config"
  mkdir -p /run/sshd; chmod 0755 /run/sshd
  "$SSHD" -t -f "$NODE_STATE/sshd_config" 2>"$(logfile node-sshd)" ||
    die "node: sshd rejects $NODE_STATE/sshd_config; see $(logfile node-sshd)"
}

# The node's containerd configuration as a freshly installed node has it: Debian's packaged
# config.toml (version 2, the CNI plugins' folder) with the lab's own folders and socket. Written
# once: what the installer changes in it stays until the lab goes down.
node_containerd_config() {
  mkdir -p "$CTRD/root" "$CTRD/state" "$CTRD/run" "$NODE_STATE/cni/net.d"
  chmod 0711 "$CTRD"
  [[ -s "$CTRD/config.toml" ]] && return 0
  cat >"$CTRD/config.toml" <<EOF
version = 2
root = "$CTRD/root"
state = "$CTRD/state"

[grpc]
  address = "$SOCKET"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$NODE_STATE/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "$CTRD/opt"
EOF
  cp -p "$CTRD/config.toml" "$NODE_STATE/config.toml.as-installed"
  # What `node_runtime.restart` runs on this node (with sudo): containerd has no systemd unit here.
  cat >"$NODE_STATE/restart-containerd" <<EOF
#!/bin/sh
# Restart the lab node's containerd (lab/components/25-node.sh); what a node's systemctl would do.
exec env LAB_SITE="$LAB_SITE" LAB_STATE="$LAB_STATE" LAB_CACHE="$LAB_CACHE" bash "$LAB_DIR/components/25-node.sh" restart-containerd
EOF
  chmod 0755 "$NODE_STATE/restart-containerd"
}

containerd_ready() { ctr --address "$SOCKET" version; }

start_containerd() {
  forget_dead node-containerd
  start_daemon node-containerd ip netns exec "$NS" /usr/bin/containerd --config "$CTRD/config.toml"
  wait_for node-containerd 60 containerd_ready
}

restart_containerd() {
  stop_daemon node-containerd
  start_containerd
}

node_ssh() {
  ssh -i "$VM_STATE/id_ed25519" -o BatchMode=yes -o IdentitiesOnly=yes \
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$NODE_STATE/known_hosts" \
    -o ConnectTimeout=3 "$LAB_VM_USER@$LAB_NODE_ADDR" "$@"
}

write_env() {
  mkdir -p "$LAB_STATE/env.d"
  cat >"$LAB_STATE/env.d/node.env.tmp" <<EOF
export LAB_NODE_NETNS=$NS
export LAB_NODE_NAME=$LAB_NODE_NAME
export LAB_NODE_ADDR=$LAB_NODE_ADDR
export LAB_NODE_KNOWN_HOSTS=$NODE_STATE/known_hosts
export LAB_NODE_CONTAINERD_CONFIG=$CTRD/config.toml
export LAB_NODE_CONTAINERD_AS_INSTALLED=$NODE_STATE/config.toml.as-installed
export LAB_NODE_CERTS_DIR=$CTRD/certs.d
export LAB_NODE_RESTART=$NODE_STATE/restart-containerd
export LAB_NODE_CRI_ENDPOINT=unix://$SOCKET
export LAB_CRICTL=$(crictl_bin_dir)/crictl
EOF
  mv "$LAB_STATE/env.d/node.env.tmp" "$LAB_STATE/env.d/node.env"
}

node_up() {
  node_build
  [[ -s "$VM_STATE/id_ed25519" ]] || die "node: the VM's login key is missing; start the lab with lab/up"
  node_network
  node_keys
  node_containerd_config
  forget_dead node-sshd
  start_daemon node-sshd ip netns exec "$NS" "$SSHD" -D -e -f "$NODE_STATE/sshd_config"
  wait_for node-sshd 30 node_ssh sudo -n /usr/bin/python3 -V
  is_alive node-containerd || start_containerd
  write_env
  log "node up: $LAB_VM_USER@$LAB_NODE_ADDR (stands for $LAB_NODE_NAME), containerd at $SOCKET"
}

node_down() {
  local pids m
  stop_daemon node-containerd
  stop_daemon node-sshd
  if netns_exists "$NS"; then
    pids="$(ip netns pids "$NS" 2>/dev/null || true)"
    if [[ -n "$pids" ]]; then
      # shellcheck disable=SC2086
      kill -TERM $pids 2>/dev/null || true
      sleep 1
      pids="$(ip netns pids "$NS" 2>/dev/null || true)"
      # shellcheck disable=SC2086
      [[ -z "$pids" ]] || kill -KILL $pids 2>/dev/null || true
    fi
  fi
  ip link del "$LAB_NODE_VETH_HOST" 2>/dev/null || true
  if netns_exists "$VM_NS"; then ip -n "$VM_NS" link del "$LAB_NODE_VETH_VM" 2>/dev/null || true; fi
  if netns_exists "$NS"; then ip netns del "$NS" || log "node: could not delete network namespace $NS"; fi
  rm -rf "$NETNS_ETC"
  # containerd mounts nothing for pulls, but a container a test ran would leave its rootfs mounted.
  if [[ -d "$NODE_STATE" ]]; then
    while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(findmnt -rno TARGET | grep "^$NODE_STATE/" | sort -r)
  fi
  rm -f "$LAB_STATE/env.d/node.env" "$(logfile node-sshd)" "$(logfile node-containerd)"
  rm -rf "$NODE_STATE"
}

node_status() {
  local rc=0
  if [[ ! -d "$NODE_STATE" ]]; then printf 'node: not started\n'; return 1; fi
  netns_exists "$NS" && printf 'node: %-24s present (%s)\n' netns "$LAB_NODE_ADDR" ||
    { printf 'node: %-24s MISSING\n' "netns $NS"; rc=1; }
  for d in node-sshd node-containerd; do
    if is_alive "$d"; then printf 'node: %-24s running (pid %s)\n' "$d" "$(cat "$(pidfile "$d")")"
    else printf 'node: %-24s DEAD; see %s\n' "$d" "$(logfile "$d")"; rc=1; fi
  done
  return $rc
}

case "${1:-}" in
  build) node_build ;;
  up) node_up ;;
  down) node_down ;;
  status) node_status ;;
  restart-containerd) restart_containerd ;;
  *) die "usage: $0 build|up|down|status|restart-containerd" ;;
esac
