#!/usr/bin/env bash
# 20-vm: the site's spare VM: a machine of its own, booted with systemd as PID 1 (systemd-nspawn)
# in a network namespace joined to the host by a veth pair. Its root file system is its own: a
# Debian release with the packages of lab/vm/packages.txt (debootstrap, cached under a key of that
# list), read-only beneath the VM's disk ($LAB_STATE/vm/disk, lab/vm/boot.sh), so nothing the
# installer writes or deletes on the VM touches this machine's folders, and the hub's systemd
# units really run. Its sshd, host key and sudo user live in it; the installer reaches it only
# over SSH. VERB: build | up | down | status.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

NS="$LAB_VM_NETNS"
VM_STATE="$LAB_STATE/vm"
VETH_HOST="$LAB_VM_VETH_HOST"
VETH_VM=eth0
VM_PACKAGES="$LAB_DIR/vm/packages.txt"
# The VM's cgroup, in systemd's cgroup v1 hierarchy and, where mounted, the cgroup v2 one (or the
# v2 root of a unified machine): systemd-nspawn puts the VM's processes and its own below it
# (lab/vm/boot.sh); lab/down removes it.
VM_CGROUP="onprem-lab/$NS"

vm_build() {
  local t
  for t in /usr/bin/systemd-nspawn /usr/sbin/debootstrap /usr/sbin/ip /usr/bin/ssh /usr/bin/ssh-keygen \
    /usr/bin/unshare /usr/sbin/chroot; do
    [[ -x "$t" ]] || die "vm: $t is missing; run lab/system-deps (Debian packages in lab/apt-packages.txt)"
  done
  vm_rootfs_build
}

# --- the VM's root file system (built once per package list, shared read-only by every site's VM)

# vm_packages: the package list, one per line, without comments.
vm_packages() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' -e 's/[[:space:]]//g' "$VM_PACKAGES"; }

# vm_rootfs_key: what the image is made of (the release, the packages, this machine's
# architecture, and the preparation below); a change to any of them builds a new image.
vm_rootfs_key() {
  {
    printf '%s %s\n' "$LAB_VM_SUITE" "$(dpkg --print-architecture)"
    vm_packages
    declare -f vm_rootfs_prepare
  } | sha256sum | cut -c1-16
}

vm_rootfs_dir() { printf '%s\n' "$LAB_CACHE/vm-rootfs-$LAB_VM_SUITE-$(vm_rootfs_key)"; }

# vm_mirror: the Debian mirror this machine's apt uses for the Debian archive (not its security
# archive), unless LAB_VM_MIRROR names one.
vm_mirror() {
  if [[ -n "${LAB_VM_MIRROR:-}" ]]; then printf '%s\n' "$LAB_VM_MIRROR"; return 0; fi
  local uri
  uri="$( { grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{for (i = 2; i <= NF; i++) print $i}'
            grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
              sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}'; } |
          grep -E '/debian/?$' | head -n1)"
  [[ -n "$uri" ]] || die "vm: no Debian mirror in this machine's apt sources; set LAB_VM_MIRROR"
  printf '%s\n' "${uri%/}"
}

# vm_rootfs_prepare ROOT: what makes the debootstrapped tree the lab's VM image. Its text is part
# of the image's key.
vm_rootfs_prepare() {
  local root="$1"
  # Every VM gets its own pinned host key at boot; none is baked into the shared image.
  rm -f "$root"/etc/ssh/ssh_host_*
  # A VM is stopped in seconds (lab/down), not after systemd's default 90 s per hung unit; and
  # it never reaches for a mirror on its own.
  mkdir -p "$root/etc/systemd/system.conf.d"
  printf '[Manager]\nDefaultTimeoutStopSec=10s\n' >"$root/etc/systemd/system.conf.d/onprem-lab.conf"
  chroot "$root" systemctl mask --quiet apt-daily.timer apt-daily-upgrade.timer >/dev/null
  # The supervisor package is in the image for the hub's supervisord path (a VM booted without
  # systemd); Debian's own supervisord has nothing to run.
  chroot "$root" systemctl disable --quiet supervisor.service >/dev/null 2>&1 || true
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*_Packages
  : >"$root/etc/machine-id"
}

vm_rootfs_build() {
  local dir tmp mirror packages
  dir="$(vm_rootfs_dir)"
  [[ -s "$dir/packages.lock" ]] && { log "vm root file system $(basename "$dir") cached"; return 0; }
  component_lock vm-rootfs
  [[ -s "$dir/packages.lock" ]] && return 0
  mirror="$(vm_mirror)"
  packages="$(vm_packages | paste -sd, -)"
  tmp="$dir.tmp"
  rm -rf "$tmp"; mkdir -p "$tmp"
  log "building the VM's root file system: Debian $LAB_VM_SUITE with $(vm_packages | wc -l) packages (log $tmp/build.log; 2-5 min cold)"
  local started=$SECONDS
  # debootstrap checks the release file's signature with Debian's archive keyring, and every
  # package against it.
  debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    --include="$packages" "$LAB_VM_SUITE" "$tmp/root" "$mirror" >"$tmp/build.log" 2>&1 ||
    die "vm: debootstrap of Debian $LAB_VM_SUITE failed; see $tmp/build.log"
  vm_rootfs_prepare "$tmp/root" >>"$tmp/build.log" 2>&1 || die "vm: preparing the VM image failed; see $tmp/build.log"
  # What was installed, by version: the image's record (Debian's archive serves only the
  # release's current versions, so these are recorded, not pinned).
  chroot "$tmp/root" dpkg-query -W -f '${Package} ${Version}\n' >"$tmp/packages.lock"
  rm -rf "$dir"; mv "$tmp" "$dir"
  log "vm root file system $(basename "$dir") built in $((SECONDS - started)) s ($(wc -l <"$dir/packages.lock") packages)"
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

# vm_boot_files: what the VM's boot installs in it (lab/vm/boot.sh): its sshd configuration (it
# listens only on the VM's lab address), host key, and its user's name and authorized key.
vm_boot_files() {
  local boot="$VM_STATE/boot"
  mkdir -p "$boot"; chmod 0700 "$boot"
  sed -e "s|@VM_ADDR@|$LAB_VM_ADDR|g" -e "s|@VM_SSH_PORT@|$LAB_VM_SSH_PORT|g" \
    -e "s|@STATE@|/etc/ssh|g" -e "s|@VM_USER@|$LAB_VM_USER|g" \
    "$LAB_DIR/vm/sshd_config.tmpl" >"$boot/sshd_config"
  install -m 0600 "$VM_STATE/ssh_host_ed25519_key" "$boot/ssh_host_ed25519_key"
  install -m 0644 "$VM_STATE/ssh_host_ed25519_key.pub" "$boot/ssh_host_ed25519_key.pub"
  install -m 0644 "$VM_STATE/id_ed25519.pub" "$boot/authorized_keys"
  printf '%s\n' "$LAB_VM_USER" >"$boot/user"
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
  # The namespace first: where the lab may not make one, that is the one error (before a long
  # image build it could not use).
  vm_network
  vm_build
  vm_keys
  vm_boot_files
  if ! is_alive vm && vm_listening; then
    die "vm: port $LAB_VM_ADDR:$LAB_VM_SSH_PORT in $NS is already in use by a process the lab did not start"
  fi
  forget_dead vm
  if ! is_alive vm; then
    # A VM that stopped is booted again, as a machine would be: what still ran in it stops (it
    # holds the old boot's disk), and its disk is kept.
    vm_stop_processes
    start_daemon vm unshare --mount --propagation private \
      "$LAB_DIR/vm/boot.sh" "$VM_STATE/disk" "$(vm_rootfs_dir)/root" "$VM_STATE/boot" "$NS" "$VM_CGROUP" \
      "${LAB_VM_INIT:-systemd}"
  fi
  wait_for vm 60 vm_ssh sudo -n /usr/bin/python3 -V
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

# vm_cgroup_remove: the VM's cgroups (the VM's systemd makes its own below them), deepest first.
vm_cgroup_remove() {
  local hierarchy
  for hierarchy in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
    [[ -d "$hierarchy/$VM_CGROUP" ]] || continue
    find "$hierarchy/$VM_CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null ||
      log "vm: could not remove the cgroup $hierarchy/$VM_CGROUP"
    rmdir "$hierarchy/${VM_CGROUP%%/*}" 2>/dev/null || true
  done
}

vm_down() {
  # The machine shuts down (systemd-nspawn asks the VM's systemd to halt), then anything left
  # in its namespace is ended.
  stop_daemon vm
  vm_stop_processes
  vm_cgroup_remove
  rmdir "/run/systemd/nspawn/propagate/$NS" 2>/dev/null || true
  # Deleting the host side takes the VM side with it at once; a namespace's own devices go
  # later, in the kernel's background clean-up, so the pair is not left to the namespace.
  ip link del "$VETH_HOST" 2>/dev/null || true
  if netns_exists; then
    ip netns del "$NS" || log "vm: could not delete network namespace $NS"
  fi
  rm -f "$LAB_STATE/env.d/vm.env" "$(logfile vm)"
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
  if is_alive vm; then
    printf 'vm: %-24s running (pid %s)\n' machine "$(cat "$(pidfile vm)")"
  else
    printf 'vm: %-24s DEAD; see %s\n' machine "$(logfile vm)"; rc=1
  fi
  if ((rc == 0)) && vm_ssh true 2>/dev/null; then
    printf 'vm: %-24s ok as %s@%s\n' ssh "$LAB_VM_USER" "$LAB_VM_ADDR"
  else
    printf 'vm: %-24s FAILING to %s@%s:%s\n' ssh "$LAB_VM_USER" "$LAB_VM_ADDR" "$LAB_VM_SSH_PORT"; rc=1
  fi
  return $rc
}

# vm_init_pid: the VM's PID 1 (its systemd) as this machine numbers it: the process in the VM's
# namespace that is PID 1 of a PID namespace below this machine's.
vm_init_pid() {
  local pid
  for pid in $(ip netns pids "$NS" 2>/dev/null); do
    if awk '/^NSpid:/ { found = (NF > 2 && $NF == 1) } END { exit !found }' "/proc/$pid/status" 2>/dev/null; then
      printf '%s\n' "$pid"; return 0
    fi
  done
  return 1
}

# vm_root CMD...: run CMD as root inside the running VM (its namespaces and root file system),
# as an operator at the VM's console would; for the lab's tests that take the VM user's sudo away.
vm_root() {
  local init
  init="$(vm_init_pid)" || die "vm: the VM is not running; start it with lab/up"
  nsenter --target "$init" --mount --uts --ipc --net --pid --root --wd -- "$@"
}

case "${1:-}" in
  build) vm_build ;;
  root) shift; vm_root "$@" ;;
  up) vm_up ;;
  down) vm_down ;;
  status) vm_status ;;
  *) die "usage: $0 build|up|down|status|root CMD..." ;;
esac
