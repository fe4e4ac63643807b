#!/usr/bin/env bash
# 25-node: a cluster node with a real container runtime: Debian's containerd and runc in a network
# namespace of its own, with its own sshd and host key, reached over SSH like a site's node (as the
# VM's user and key). It stands for the kwok node LAB_NODE_NAME in inventories that configure node
# runtimes. A second veth pair joins it to the VM's namespace: the node reaches the hub (and the
# hub's DNS) at the VM's address without any forwarding on the host. Its containerd keeps its
# configuration, data and socket under $LAB_STATE/node, never in the host's /etc/containerd.
# The node's programs (containerd, runc, the kubelet) run in its network namespace and in a mount
# namespace of its own (node_mount_ns), so what they mount stays on the node.
# `kubelet-up` joins a real kubelet on that containerd to the lab cluster (as LAB_KUBELET_NODE_NAME);
# the tests that need one start and stop it. VERB: build | up | down | status | restart-containerd
# | kubelet-up | kubelet-down.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
source "$LAB_DIR/kube/build.sh"
source "$LAB_DIR/kube/pki.sh"

NS="$LAB_NODE_NETNS"
VM_NS="$LAB_VM_NETNS"
NODE_STATE="$LAB_STATE/node"
CTRD="$NODE_STATE/containerd"
SOCKET="$CTRD/run/containerd.sock"
VM_STATE="$LAB_STATE/vm"
SSHD=/usr/sbin/sshd
# The node's own resolv.conf: `ip netns exec` mounts /etc/netns/<ns>/* over /etc for what it runs.
NETNS_ETC="/etc/netns/$NS"
# The node's mount namespace, kept by a bind mount of it on this file (node_mount_ns).
MNTNS="$NODE_STATE/mntns"
KUBELET_STATE="$NODE_STATE/kubelet"
KUBE_STATE="$LAB_STATE/kube"
CNI_BIN=/usr/lib/cni
CNI_PLUGINS=(bridge host-local loopback)
# The kernel settings the kubelet insists on (it sets them at start, and stops where it cannot).
# The lab must not change this machine's, so the node's mount namespace shows them as set.
KUBELET_SYSCTLS=(vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1
  kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000)

node_build() {
  local t
  for t in "$SSHD" /usr/sbin/ip /usr/bin/containerd /usr/bin/ctr /usr/sbin/runc /usr/bin/ssh-keygen \
    /usr/bin/nsenter /usr/bin/unshare "${CNI_PLUGINS[@]/#/$CNI_BIN/}"; do
    [[ -x "$t" ]] || die "node: $t is missing; run lab/system-deps (Debian packages in lab/apt-packages.txt)"
  done
  build_crictl
  build_kubernetes
}

# The node's login: the VM's user name and key, as a site's machines share an operator account.
# The node shares this machine's file system, so its user is one of this machine's (made by up,
# marked as the lab's, removed by down).
NODE_USER_GECOS="onprem-installer lab node user"
SUDOERS="/etc/sudoers.d/onprem-lab-$LAB_VM_USER"

node_user() {
  local home
  if ! id -u "$LAB_VM_USER" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash --comment "$NODE_USER_GECOS" "$LAB_VM_USER" ||
      die "node: cannot create user $LAB_VM_USER"
  fi
  # '*' instead of useradd's locked '!': no password, yet not a locked account to sshd.
  usermod -p '*' "$LAB_VM_USER"
  printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\n' "$LAB_VM_USER" >"$SUDOERS.tmp"
  chmod 0440 "$SUDOERS.tmp"
  visudo -cqf "$SUDOERS.tmp" >/dev/null || die "node: the sudoers rule for $LAB_VM_USER does not parse"
  mv "$SUDOERS.tmp" "$SUDOERS"
  home="$(getent passwd "$LAB_VM_USER" | cut -d: -f6)"
  install -d -m 0700 -o "$LAB_VM_USER" -g "$LAB_VM_USER" "$home/.ssh"
  install -m 0600 -o "$LAB_VM_USER" -g "$LAB_VM_USER" "$VM_STATE/id_ed25519.pub" "$home/.ssh/authorized_keys"
}

node_user_remove() {
  local home
  # Made by an older lab (the VM's user was this machine's then) or by node_user.
  case "$(getent passwd "$LAB_VM_USER" | cut -d: -f5)" in
    "$NODE_USER_GECOS" | "onprem-installer lab VM user")
      home="$(getent passwd "$LAB_VM_USER" | cut -d: -f6)"
      userdel "$LAB_VM_USER" 2>/dev/null || log "node: could not remove user $LAB_VM_USER"
      [[ "$home" == /home/"$LAB_VM_USER" ]] && rm -rf "$home"
      ;;
  esac
  rm -f "$SUDOERS"
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
  local oom=""
  # runc gives a pod's sandbox oom_score_adj -998; lowering a score takes CAP_SYS_RESOURCE, which
  # root lacks on some machines (containers, sandboxes). There containerd keeps scores at or above
  # its own, as for rootless nodes.
  if ! has_capability 24; then oom=$'\n    restrict_oom_score_adj = true'; fi
  cat >"$CTRD/config.toml" <<EOF
version = 2
root = "$CTRD/root"
state = "$CTRD/state"

[grpc]
  address = "$SOCKET"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]$oom
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

# has_capability N: this shell's effective capabilities include capability number N.
has_capability() {
  local eff; eff="$(awk '/^CapEff:/ {print $2}' /proc/self/status)"
  (( (16#$eff >> $1) & 1 ))
}

# The pod network the cluster's network add-on would give the node: a bridge in the node's
# namespace, addresses from LAB_NODE_POD_CIDR (Debian's CNI plugins, containerd's conf_dir).
node_cni_config() {
  cat >"$NODE_STATE/cni/net.d/10-lab-bridge.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "lab-pods",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$LAB_NODE_POD_CIDR"}]],
              "dataDir": "$NODE_STATE/cni/ipam"}},
    {"type": "loopback"}
  ]
}
EOF
}

# in_node_ns: true inside the node's mount namespace (the node's own SSH sessions: their sshd runs
# there, and the bind mount that keeps it is seen from this machine's namespace only).
in_node_ns() {
  [[ -s "$MNTNS.id" && "$(stat -L -c %i /proc/self/ns/mnt)" == "$(cat "$MNTNS.id")" ]]
}

# IN_NODE CMD...: run CMD as one of the node's programs (its network and mount namespaces).
set_in_node() {
  if in_node_ns; then IN_NODE=(nsenter --net="/run/netns/$NS" --)
  else IN_NODE=(nsenter --mount="$MNTNS" --net="/run/netns/$NS" --); fi
}

# node_mount_ns: the node's mount namespace, made once and kept by a bind mount on $MNTNS. Its
# programs (sshd and what runs in its sessions, containerd, runc, the kubelet) run there: what
# they mount (containers' root file systems, pod volumes) is seen by all of them and by nothing
# else, and goes with the namespace. It shows the node's resolv.conf (the hub VM's DNS) and
# KUBELET_SYSCTLS as set; this machine keeps its own.
node_mount_ns() {
  local kv key want f
  if in_node_ns || findmnt -rno TARGET "$MNTNS" >/dev/null 2>&1; then set_in_node; return 0; fi
  : >"$MNTNS"
  unshare --mount="$MNTNS" --propagation private true ||
    die "node: cannot make the node's mount namespace on $MNTNS"
  stat -L -c %i "$MNTNS" >"$MNTNS.id"
  set_in_node
  # The copy holds this machine's namespace files (other sites' nodes and VMs): let it keep none
  # of them alive but its own network namespace's.
  nsenter --mount="$MNTNS" -- sh -c \
    'findmnt -rn -t nsfs -o TARGET | grep -vx "/run/netns/$1" | sort -r | xargs -r -n1 umount -l' _ "$NS" ||
    log "node: some namespace files stay mounted in the node's mount namespace"
  nsenter --mount="$MNTNS" -- mount --bind "$NETNS_ETC/resolv.conf" /etc/resolv.conf ||
    log "node: /etc/resolv.conf cannot be replaced in the node's mount namespace; it uses this machine's"
  mkdir -p "$NODE_STATE/sysctl"
  for kv in "${KUBELET_SYSCTLS[@]}"; do
    key="${kv%%=*}" want="${kv#*=}"
    [[ "$(cat "/proc/sys/$key")" == "$want" ]] && continue
    f="$NODE_STATE/sysctl/${key//\//.}"
    printf '%s\n' "$want" >"$f"
    nsenter --mount="$MNTNS" -- mount --bind "$f" "/proc/sys/$key"
  done
}

# node_mount_ns_drop: the node's mount namespace goes (once no program of the node is left).
node_mount_ns_drop() {
  if findmnt -rno TARGET "$MNTNS" >/dev/null 2>&1; then umount "$MNTNS" || umount -l "$MNTNS"; fi
  rm -f "$MNTNS" "$MNTNS.id"
}

containerd_ready() { ctr --address "$SOCKET" version; }

start_containerd() {
  forget_dead node-containerd
  node_mount_ns
  start_daemon node-containerd "${IN_NODE[@]}" /usr/bin/containerd --config "$CTRD/config.toml"
  wait_for node-containerd 60 containerd_ready
}

restart_containerd() {
  stop_daemon node-containerd
  start_containerd
}

# --- the node's kubelet (kubelet-up / kubelet-down) ------------------------------------------

kubectl_lab() { "$(kube_bin_dir)/kubectl" --kubeconfig "$KUBE_STATE/admin.kubeconfig" "$@"; }

# The cgroup folders the kubelet puts pods under (its cgroupRoot), one per mounted hierarchy.
cgroup_dirs() {
  local fs mp
  fs="$(stat -fc %T /sys/fs/cgroup)"
  if [[ "$fs" == cgroup2fs ]]; then printf '%s\n' "/sys/fs/cgroup/$LAB_KUBELET_CGROUP"; return; fi
  while read -r mp; do printf '%s\n' "$mp/$LAB_KUBELET_CGROUP"; done < <(findmnt -rn -t cgroup -o TARGET)
}

kubelet_cgroups() {
  local d parent f
  while read -r d; do
    mkdir -p "$d"
    parent="$(dirname "$d")"
    # A new cpuset group has no CPUs or memory nodes until given its parent's.
    for f in cpuset.cpus cpuset.mems; do
      if [[ -f "$d/$f" && -z "$(cat "$d/$f")" ]]; then cat "$parent/$f" >"$d/$f"; fi
    done
    if [[ -f "$parent/cgroup.subtree_control" ]]; then
      for f in cpu cpuset memory pids; do echo "+$f" >"$parent/cgroup.subtree_control" 2>/dev/null || true; done
    fi
  done < <(cgroup_dirs)
  return 0
}

# Every folder the kubelet's cgroups left, including those it made beside the hierarchies (runc
# mirrors its v1 groups under /sys/fs/cgroup/unified on hybrid machines, mounted or not).
kubelet_cgroups_remove() {
  local d
  for d in "/sys/fs/cgroup/$LAB_KUBELET_CGROUP" /sys/fs/cgroup/*/"$LAB_KUBELET_CGROUP"; do
    [[ -d "$d" ]] || continue
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null ||
      log "node: some cgroups under $d are still in use"
  done
}

# The kubelet's identity (system:node:<name>, as the Node authorizer and NodeRestriction want it)
# and its kubeconfig: the apiserver at the node link's host address, checked as `localhost` (a
# name its certificate carries).
kubelet_pki() {
  local pki="$KUBE_STATE/pki" who="node-$LAB_KUBELET_NODE_NAME" kc="$KUBELET_STATE/kubeconfig"
  [[ -s "$pki/ca.key" ]] || die "node: the lab cluster's CA is missing; start the lab with lab/up"
  cert_create "$pki" "$who" "/O=system:nodes/CN=system:node:$LAB_KUBELET_NODE_NAME" clientAuth
  kubeconfig_write "$kc" "https://$LAB_NODE_HOST_ADDR:$LAB_KUBE_APISERVER_PORT" \
    "$pki/ca.crt" "$pki/$who.crt" "$pki/$who.key" "system:node:$LAB_KUBELET_NODE_NAME"
  sed -i 's|^    server: .*|&\n    tls-server-name: localhost|' "$kc"
}

kubelet_config() {
  cat >"$KUBELET_STATE/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 (which the kubelet refuses unless told), no systemd, maybe swap.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$LAB_KUBELET_CGROUP
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCKET
address: $LAB_NODE_ADDR
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $KUBE_STATE/pki/ca.crt}
authorization: {mode: AlwaysAllow}
resolvConf: $NETNS_ETC/resolv.conf
podLogsDir: $KUBELET_STATE/logs
# Lowering its own score takes CAP_SYS_RESOURCE (see the containerd configuration).
oomScoreAdj: 0
# This machine's disks and memory are the test run's: no eviction or image collection for them.
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 16
EOF
}

kubelet_ready() {
  [[ "$(kubectl_lab get node "$LAB_KUBELET_NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

kubelet_up() {
  is_alive node-containerd || die "node: its containerd is not running; start the lab with lab/up"
  [[ -s "$KUBE_STATE/admin.kubeconfig" ]] || die "node: the lab cluster is not up; start the lab with lab/up"
  node_mount_ns
  mkdir -p "$KUBELET_STATE/logs"; chmod 0700 "$KUBELET_STATE"
  kubelet_pki
  kubelet_config
  kubelet_cgroups
  node_cni_config
  forget_dead node-apiserver-forward
  start_daemon node-apiserver-forward /usr/bin/python3 "$LAB_DIR/node/forward.py" \
    "$LAB_NODE_HOST_ADDR" "$LAB_KUBE_APISERVER_PORT" 127.0.0.1 "$LAB_KUBE_APISERVER_PORT"
  forget_dead node-kubelet
  start_daemon node-kubelet "${IN_NODE[@]}" "$(kube_bin_dir)/kubelet" \
    --config "$KUBELET_STATE/config.yaml" --kubeconfig "$KUBELET_STATE/kubeconfig" \
    --root-dir "$KUBELET_STATE/root" --cert-dir "$KUBELET_STATE/pki" \
    --hostname-override "$LAB_KUBELET_NODE_NAME" --node-ip "$LAB_NODE_ADDR"
  wait_for node-kubelet 120 kubelet_ready
  log "kubelet up: node $LAB_KUBELET_NODE_NAME Ready (its pods on $LAB_NODE_POD_CIDR, cgroups under /$LAB_KUBELET_CGROUP)"
}

# kubelet_down: the kubelet and every pod it ran go, and its Node leaves the cluster.
kubelet_down() {
  local m
  [[ -d "$KUBELET_STATE" ]] || return 0
  stop_daemon node-kubelet
  if is_alive node-containerd; then
    "$(crictl_bin_dir)/crictl" --runtime-endpoint "unix://$SOCKET" rmp --all --force >/dev/null 2>&1 ||
      log "node: could not remove the kubelet's pods"
  fi
  stop_daemon node-apiserver-forward
  if [[ -s "$KUBE_STATE/admin.kubeconfig" ]]; then
    kubectl_lab delete node "$LAB_KUBELET_NODE_NAME" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  if findmnt -rno TARGET "$MNTNS" >/dev/null 2>&1; then
    while read -r m; do nsenter --mount="$MNTNS" -- umount -l "$m" 2>/dev/null || true; done < <(
      nsenter --mount="$MNTNS" -- findmnt -rno TARGET | grep "^$KUBELET_STATE/" | sort -r)
  fi
  kubelet_cgroups_remove
  rm -rf "$KUBELET_STATE"
  rm -f "$(logfile node-kubelet)" "$(logfile node-apiserver-forward)"
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
export LAB_KUBELET_NODE_NAME=$LAB_KUBELET_NODE_NAME
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
  node_user
  node_keys
  node_containerd_config
  node_cni_config
  node_mount_ns
  forget_dead node-sshd
  start_daemon node-sshd "${IN_NODE[@]}" "$SSHD" -D -e -f "$NODE_STATE/sshd_config"
  wait_for node-sshd 30 node_ssh sudo -n /usr/bin/python3 -V
  is_alive node-containerd || start_containerd
  write_env
  log "node up: $LAB_VM_USER@$LAB_NODE_ADDR (stands for $LAB_NODE_NAME), containerd at $SOCKET"
}

node_down() {
  local pids m
  kubelet_down
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
  node_mount_ns_drop
  ip link del "$LAB_NODE_VETH_HOST" 2>/dev/null || true
  if netns_exists "$VM_NS"; then ip -n "$VM_NS" link del "$LAB_NODE_VETH_VM" 2>/dev/null || true; fi
  if netns_exists "$NS"; then ip netns del "$NS" || log "node: could not delete network namespace $NS"; fi
  rm -rf "$NETNS_ETC"
  # containerd mounts nothing for pulls, but a container a test ran would leave its rootfs mounted.
  if [[ -d "$NODE_STATE" ]]; then
    while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(findmnt -rno TARGET | grep "^$NODE_STATE/" | sort -r)
  fi
  node_user_remove
  rm -f "$LAB_STATE/env.d/node.env" "$(logfile node-sshd)" "$(logfile node-containerd)"
  rm -rf "$NODE_STATE"
}

node_status() {
  local rc=0
  if [[ ! -d "$NODE_STATE" ]]; then printf 'node: not started\n'; return 1; fi
  netns_exists "$NS" && printf 'node: %-24s present (%s)\n' netns "$LAB_NODE_ADDR" ||
    { printf 'node: %-24s MISSING\n' "netns $NS"; rc=1; }
  local daemons=(node-sshd node-containerd)
  [[ -d "$KUBELET_STATE" ]] && daemons+=(node-apiserver-forward node-kubelet)
  for d in "${daemons[@]}"; do
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
  kubelet-up) kubelet_up ;;
  kubelet-down) kubelet_down ;;
  *) die "usage: $0 build|up|down|status|restart-containerd|kubelet-up|kubelet-down" ;;
esac
