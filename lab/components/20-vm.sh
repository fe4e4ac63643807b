#!/usr/bin/env bash
# 20-vm: the site's spare VM, played by a network namespace joined to the host by a veth pair,
# with its own sshd, host key and sudo user, and a root file system of its own: this machine's,
# read-only beneath the VM's disk ($LAB_STATE/vm/disk, lab/vm/boot.sh), so nothing the installer
# writes on the VM lands in this machine's folders. The installer reaches it only over SSH.
# VERB: build | up | down | status.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

NS="$LAB_VM_NETNS"
VM_STATE="$LAB_STATE/vm"
VETH_HOST="$LAB_VM_VETH_HOST"
VETH_VM=eth0
SSHD=/usr/sbin/sshd
# Marks the account as the lab's own, so down removes only a user that up created.
VM_USER_GECOS="onprem-installer lab VM user"
SUDOERS="/etc/sudoers.d/onprem-lab-$LAB_VM_USER"

vm_build() {
  local t
  for t in "$SSHD" /usr/sbin/ip /usr/bin/ssh /usr/bin/ssh-keygen /usr/bin/sudo /usr/bin/python3 /usr/sbin/visudo; do
    [[ -x "$t" ]] || die "vm: $t is missing; run lab/system-deps (Debian packages in lab/apt-packages.txt)"
  done
}

netns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$NS"; }
in_vm() { ip netns exec "$NS" "$@"; }

vm_network() {
  local err="$LAB_STATE/log/vm-netns.err"
  mkdir -p "$LAB_STATE/log"
  if ! netns_exists; then
    ip netns add "$NS" 2>"$err" ||
      die "vm: cannot create network namespace $NS ($(head -n1 "$err")); the lab needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN"
  fi
  if ! ip link show "$VETH_HOST" >/dev/null 2>&1; then
    # Someone else's route to the lab subnet would send the VM's traffic elsewhere.
    if ip -4 route show to "$LAB_VM_ADDR/$LAB_VM_PREFIX" | grep -q .; then
      die "vm: the host already routes $LAB_VM_ADDR/$LAB_VM_PREFIX ($(ip -4 route show to "$LAB_VM_ADDR/$LAB_VM_PREFIX" | head -n1)); change LAB_VM_* in lab/versions.env"
    fi
    ip link add "$VETH_HOST" type veth peer name "$VETH_VM" netns "$NS" 2>"$err" ||
      die "vm: cannot create the veth pair $VETH_HOST/$VETH_VM ($(head -n1 "$err"))"
  fi
  ip addr replace "$LAB_VM_HOST_ADDR/$LAB_VM_PREFIX" dev "$VETH_HOST"
  ip link set "$VETH_HOST" up
  ip -n "$NS" link set lo up
  ip -n "$NS" addr replace "$LAB_VM_ADDR/$LAB_VM_PREFIX" dev "$VETH_VM"
  ip -n "$NS" link set "$VETH_VM" up
  rm -f "$err"
}

vm_user() {
  local home
  if ! id -u "$LAB_VM_USER" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash --comment "$VM_USER_GECOS" "$LAB_VM_USER" ||
      die "vm: cannot create user $LAB_VM_USER"
  fi
  # '*' instead of useradd's locked '!': no password, yet not a locked account to sshd.
  usermod -p '*' "$LAB_VM_USER"
  printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\n' "$LAB_VM_USER" >"$SUDOERS.tmp"
  chmod 0440 "$SUDOERS.tmp"
  visudo -cqf "$SUDOERS.tmp" >/dev/null || die "vm: the sudoers rule for $LAB_VM_USER does not parse"
  mv "$SUDOERS.tmp" "$SUDOERS"
  home="$(getent passwd "$LAB_VM_USER" | cut -d: -f6)"
  install -d -m 0700 -o "$LAB_VM_USER" -g "$LAB_VM_USER" "$home/.ssh"
  install -m 0600 -o "$LAB_VM_USER" -g "$LAB_VM_USER" "$VM_STATE/id_ed25519.pub" "$home/.ssh/authorized_keys"
}

vm_keys() {
  local host_pattern="$LAB_VM_ADDR"
  mkdir -p "$VM_STATE"; chmod 0700 "$VM_STATE"
  [[ -s "$VM_STATE/ssh_host_ed25519_key" ]] ||
    ssh-keygen -q -t ed25519 -N '' -C "onprem-lab-vm" -f "$VM_STATE/ssh_host_ed25519_key"
  [[ -s "$VM_STATE/id_ed25519" ]] ||
    ssh-keygen -q -t ed25519 -N '' -C "$LAB_VM_USER@onprem-lab" -f "$VM_STATE/id_ed25519"
  chmod 0600 "$VM_STATE/ssh_host_ed25519_key" "$VM_STATE/id_ed25519"
  [[ "$LAB_VM_SSH_PORT" == 22 ]] || host_pattern="[$LAB_VM_ADDR]:$LAB_VM_SSH_PORT"
  printf '%s %s\n' "$host_pattern" "$(cut -d' ' -f1,2 "$VM_STATE/ssh_host_ed25519_key.pub")" >"$VM_STATE/known_hosts"
  ssh-keygen -l -E sha256 -f "$VM_STATE/ssh_host_ed25519_key.pub" | awk '{print $2}' >"$VM_STATE/host_key.fingerprint"
}

vm_sshd_config() {
  sed -e "s|@VM_ADDR@|$LAB_VM_ADDR|g" -e "s|@VM_SSH_PORT@|$LAB_VM_SSH_PORT|g" \
    -e "s|@STATE@|$VM_STATE|g" -e "s|@VM_USER@|$LAB_VM_USER|g" \
    "$LAB_DIR/vm/sshd_config.tmpl" >"$VM_STATE/sshd_config"
  # sshd refuses to start without its privilege separation folder.
  mkdir -p /run/sshd; chmod 0755 /run/sshd
  "$SSHD" -t -f "$VM_STATE/sshd_config" 2>"$(logfile vm-sshd)" ||
    die "vm: sshd rejects $VM_STATE/sshd_config; see $(logfile vm-sshd)"
}

# vm_on_root_fs: what the VM's sshd reads from this machine (its configuration and host key, the
# user's authorized keys) must be on the root file system: the VM's root is an overlay of / alone
# (lab/vm/boot.sh), without the file systems mounted under it.
vm_on_root_fs() {
  local path mnt
  for path in "$VM_STATE" "$(getent passwd "$LAB_VM_USER" | cut -d: -f6)"; do
    mnt="$(findmnt -n -o TARGET -T "$path" 2>/dev/null || printf '/')"
    [[ "$mnt" == / ]] ||
      die "vm: $path is on the file system mounted at $mnt; the lab VM sees only the root file system (lab/vm/boot.sh): put LAB_STATE and /home there"
  done
}

vm_listening() { in_vm ss -Hltn "sport = :$LAB_VM_SSH_PORT" | grep -q "$LAB_VM_ADDR:$LAB_VM_SSH_PORT"; }

# vm_ssh CMD...: run CMD on the VM as the lab user, the way the installer will: strict host keys.
vm_ssh() {
  ssh -i "$VM_STATE/id_ed25519" -p "$LAB_VM_SSH_PORT" -o BatchMode=yes -o IdentitiesOnly=yes \
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$VM_STATE/known_hosts" \
    -o ConnectTimeout=3 "$LAB_VM_USER@$LAB_VM_ADDR" "$@"
}

write_env() {
  mkdir -p "$LAB_STATE/env.d"
  cat >"$LAB_STATE/env.d/vm.env.tmp" <<EOF
export LAB_VM_NETNS=$NS
export LAB_VM_ADDR=$LAB_VM_ADDR
export LAB_VM_HOST_ADDR=$LAB_VM_HOST_ADDR
export LAB_VM_SSH_PORT=$LAB_VM_SSH_PORT
export LAB_VM_USER=$LAB_VM_USER
export LAB_VM_KEY=$VM_STATE/id_ed25519
export LAB_VM_KNOWN_HOSTS=$VM_STATE/known_hosts
export LAB_VM_PYTHON=/usr/bin/python3
export LAB_VM_HOST_KEY_FINGERPRINT=$(cat "$VM_STATE/host_key.fingerprint")
EOF
  mv "$LAB_STATE/env.d/vm.env.tmp" "$LAB_STATE/env.d/vm.env"
}

vm_up() {
  vm_build
  vm_network
  vm_keys
  vm_user
  vm_sshd_config
  vm_on_root_fs
  if ! is_alive vm-sshd && vm_listening; then
    die "vm: port $LAB_VM_ADDR:$LAB_VM_SSH_PORT in $NS is already in use by a process the lab did not start"
  fi
  forget_dead vm-sshd
  if ! is_alive vm-sshd; then
    # A VM whose sshd died is booted again, as a machine would be: what still ran in it stops
    # (it holds the old boot's disk), and its disk is kept.
    vm_stop_processes
    start_daemon vm-sshd ip netns exec "$NS" unshare --mount --propagation private \
      "$LAB_DIR/vm/boot.sh" "$VM_STATE/disk" "$SSHD" -D -e -f "$VM_STATE/sshd_config"
  fi
  wait_for vm-sshd 30 vm_ssh sudo -n /usr/bin/python3 -V
  write_env
  log "vm up: ssh -i $VM_STATE/id_ed25519 -o UserKnownHostsFile=$VM_STATE/known_hosts $LAB_VM_USER@$LAB_VM_ADDR"
}

# wait_gone PID...: up to 5 s for the processes to end (zombies count as ended).
wait_gone() {
  local pid left _
  for _ in $(seq 1 50); do
    left=0
    for pid in "$@"; do
      [[ -r /proc/$pid/stat ]] && [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] && left=1
    done
    ((left == 0)) && return 0
    sleep 0.1
  done
  log "vm: processes still ending after 5 s: $*"
}

# vm_stop_processes: end whatever still runs in the VM (SSH sessions, the hub's services): all of
# it was started through the lab's sshd, inside the VM's namespaces.
vm_stop_processes() {
  local pids
  netns_exists || return 0
  pids="$(ip netns pids "$NS" 2>/dev/null || true)"
  [[ -n "$pids" ]] || return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  sleep 1
  pids="$(ip netns pids "$NS" 2>/dev/null || true)"
  # shellcheck disable=SC2086
  [[ -z "$pids" ]] || kill -KILL $pids 2>/dev/null || true
  wait_gone $pids
}

vm_down() {
  local home
  stop_daemon vm-sshd
  vm_stop_processes
  # Deleting the host side takes the VM side with it at once; a namespace's own devices go
  # later, in the kernel's background clean-up, so the pair is not left to the namespace.
  ip link del "$VETH_HOST" 2>/dev/null || true
  if netns_exists; then
    ip netns del "$NS" || log "vm: could not delete network namespace $NS"
  fi
  if [[ "$(getent passwd "$LAB_VM_USER" | cut -d: -f5)" == "$VM_USER_GECOS" ]]; then
    home="$(getent passwd "$LAB_VM_USER" | cut -d: -f6)"
    userdel "$LAB_VM_USER" 2>/dev/null || log "vm: could not remove user $LAB_VM_USER"
    [[ "$home" == /home/"$LAB_VM_USER" ]] && rm -rf "$home"
  fi
  rm -f "$SUDOERS" "$LAB_STATE/env.d/vm.env" "$(logfile vm-sshd)"
  rm -rf "$VM_STATE"
}

vm_status() {
  local rc=0
  if [[ ! -d "$VM_STATE" ]]; then printf 'vm: not started\n'; return 1; fi
  if netns_exists; then
    printf 'vm: %-24s present (%s/%s on %s)\n' netns "$LAB_VM_ADDR" "$LAB_VM_PREFIX" "$NS"
  else
    printf 'vm: %-24s MISSING\n' "netns $NS"; rc=1
  fi
  if is_alive vm-sshd; then
    printf 'vm: %-24s running (pid %s)\n' sshd "$(cat "$(pidfile vm-sshd)")"
  else
    printf 'vm: %-24s DEAD; see %s\n' sshd "$(logfile vm-sshd)"; rc=1
  fi
  if ((rc == 0)) && vm_ssh true 2>/dev/null; then
    printf 'vm: %-24s ok as %s@%s\n' ssh "$LAB_VM_USER" "$LAB_VM_ADDR"
  else
    printf 'vm: %-24s FAILING to %s@%s:%s\n' ssh "$LAB_VM_USER" "$LAB_VM_ADDR" "$LAB_VM_SSH_PORT"; rc=1
  fi
  return $rc
}

case "${1:-}" in
  build) vm_build ;;
  up) vm_up ;;
  down) vm_down ;;
  status) vm_status ;;
  *) die "usage: $0 build|up|down|status" ;;
esac
