#!/usr/bin/env bash
# The lab VM's boot (lab/components/20-vm.sh starts it in a mount namespace of its own). The VM's
# root file system is its image (IMAGE: lab/vm/packages.txt, debootstrapped), read-only beneath a
# disk of the VM's own (an overlay whose upper layer is DISK/upper): what the installer writes on
# the VM stays on its disk and goes with it, and two lab sites' VMs share only the image. The
# boot puts the VM's sshd configuration, host key and user (BOOT: 20-vm.sh's vm_boot_files) on
# its disk, then runs the VM's own systemd as its PID 1 with systemd-nspawn in the network
# namespace NETNS, its processes below the cgroup CGROUP. INIT `sshd` boots a VM without systemd
# instead (sshd alone, under a minimal init: what the hub's supervisord path is for).
# Usage: boot.sh DISK IMAGE BOOT NETNS CGROUP [systemd|sshd]
set -euo pipefail
disk="$1" image="$2" boot="$3" netns="$4" cgroup="$5" init="${6:-systemd}"
root="$disk/root"
mkdir -p "$disk/upper" "$disk/work" "$root"
mount -t overlay onprem-lab-vm -o "lowerdir=$image,upperdir=$disk/upper,workdir=$disk/work" "$root"

# The VM's user (no password; sudo without one, as a cloud image's default user has) and sshd.
user="$(cat "$boot/user")"
if ! chroot "$root" id -u "$user" >/dev/null 2>&1; then
  chroot "$root" useradd --create-home --shell /bin/bash --comment "lab VM user" "$user"
  chroot "$root" usermod -p '*' "$user"
fi
printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\n' "$user" >"$root/etc/sudoers.d/90-lab-user"
chmod 0440 "$root/etc/sudoers.d/90-lab-user"
home="$root/home/$user"
install -d -m 0700 "$home/.ssh"
install -m 0600 "$boot/authorized_keys" "$home/.ssh/authorized_keys"
chroot "$root" chown -R "$user:$user" "/home/$user/.ssh"
install -m 0644 "$boot/sshd_config" "$root/etc/ssh/sshd_config"
install -m 0600 "$boot/ssh_host_ed25519_key" "$root/etc/ssh/ssh_host_ed25519_key"
install -m 0644 "$boot/ssh_host_ed25519_key.pub" "$root/etc/ssh/ssh_host_ed25519_key.pub"
printf '%s\n' "$netns" >"$root/etc/hostname"
# The VM resolves its own name (sudo asks), as Debian's installer writes it.
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' "$netns" >"$root/etc/hosts"

# systemd-nspawn keeps the cgroup it is started in (--keep-unit: this machine's PID 1 is not
# systemd, so there is no manager to ask for one) and runs the VM below it: in systemd's named
# cgroup v1 hierarchy and in the cgroup v2 one where that is mounted too (a hybrid machine), or
# in the cgroup v2 root of a unified one.
if [[ -e /sys/fs/cgroup/cgroup.controllers ]]; then
  hierarchies=(/sys/fs/cgroup)
else
  hierarchies=()
  for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do [[ -e "$h/cgroup.procs" ]] && hierarchies+=("$h"); done
fi
for h in "${hierarchies[@]}"; do
  mkdir -p "$h/$cgroup"
  echo $$ >"$h/$cgroup/cgroup.procs"
done
nspawn=(systemd-nspawn --quiet --register=no --keep-unit --console=read-only
  --directory="$root" --machine="$netns" --network-namespace-path="/run/netns/$netns"
  --resolv-conf=off --timezone=off --link-journal=no)
case "$init" in
  systemd) exec "${nspawn[@]}" --boot ;;
  sshd) exec "${nspawn[@]}" --as-pid2 /bin/sh -c 'mkdir -p -m 0755 /run/sshd && exec /usr/sbin/sshd -D -e' ;;
  *) echo "boot.sh: INIT is systemd or sshd, not $init" >&2; exit 2 ;;
esac
