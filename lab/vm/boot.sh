#!/usr/bin/env bash
# The lab VM's boot (lab/components/20-vm.sh starts it inside the VM's network namespace and a
# mount namespace of its own): the VM's root file system is this machine's, read-only beneath a
# disk of the VM's own (an overlay whose upper layer is DISK/upper), so what the installer writes
# on the VM (/etc, /opt, /var, /usr/local, its service account's files) stays on the VM and goes
# with it, and two lab sites' VMs never see each other's hub. Then CMD... (sshd) runs chrooted
# into it; everything the installer starts over SSH lives in the same namespaces.
# Usage: boot.sh DISK CMD...
set -euo pipefail
disk="$1"; shift
root="$disk/root"
mkdir -p "$disk/upper" "$disk/work" "$root"
mount -t overlay onprem-lab-vm -o "lowerdir=/,upperdir=$disk/upper,workdir=$disk/work" "$root"
# The kernel's file systems are the host's (/sys is the VM's network namespace's, as
# `ip netns exec` mounted it); /run is the VM's own and empty, as after a boot.
for fs in dev proc sys; do mount --rbind "/$fs" "$root/$fs"; done
mount -t tmpfs -o mode=0755,nosuid,nodev onprem-lab-vm-run "$root/run"
mkdir -m 0755 "$root/run/sshd"
exec chroot "$root" "$@"
