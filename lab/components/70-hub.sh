#!/usr/bin/env bash
# 70-hub: what the installer needs to provision the lab VM as the artifact hub.
# - build: the DevPI server wheels the hub role installs on the VM (from PyPI, every file checked
#   against requirements/devpi.lock, cached).
# - up: the hub's name resolves on this machine (an /etc/hosts line, as a site's DNS would), and
#   the installer is told where the hub's programs are (ChartMuseum: the real binary when
#   40-helm could build it, else the lab's stand-in lab/hub/chartmuseum.py; see README).
# VERB: build | up | down | status.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

HOSTS_TAG="# onprem-installer lab hub"
HUB_NAME="hub.ml.lab.test"   # inventories/lab.yml: aux_vm.hostname
# Keyed by the hashed lockfile they are downloaded from (requirements/devpi.lock).
wheels_dir() {
  printf '%s\n' "$LAB_CACHE/devpi-wheels-$DEVPI_SERVER_VERSION-$(sha256sum "$REPO_DIR/requirements/devpi.lock" | cut -c1-12)"
}
programs_dir() { printf '%s\n' "$LAB_STATE/hub-programs"; }
# What the installer puts on the VM (playbooks/roles/hub/common/defaults, inventories/lab.yml).
# The lab VM shares this machine's file system, so a new lab starts by clearing what an earlier
# lab's hub left there, as a fresh VM would have none of it.
HUB_DIRS=(/etc/onprem-hub /opt/onprem-hub /run/onprem-hub /var/log/onprem-hub /var/lib/onprem-hub)
FRESH_MARK="$LAB_STATE/hub.fresh"

clear_vm_hub() {
  local d
  for d in "${HUB_DIRS[@]}"; do rm -rf -- "$d"; done
}

chartmuseum() {
  local built="$LAB_CACHE/chartmuseum-$CHARTMUSEUM_VERSION/bin/chartmuseum"
  if [[ -x "$built" ]]; then printf '%s\n' "$built"; else printf '%s\n' "$LAB_DIR/hub/chartmuseum.py"; fi
}

build() {
  local dir logf
  dir="$(wheels_dir)"
  [[ -s "$dir/devpi_server-$DEVPI_SERVER_VERSION-py3-none-any.whl" ]] && return 0
  logf="$(logfile build-devpi-wheels)"
  log "devpi-server $DEVPI_SERVER_VERSION wheels: downloading (log $logf)"
  rm -rf "$dir.tmp"
  python3 -m pip download -q --disable-pip-version-check --require-hashes --no-deps -d "$dir.tmp" \
    -r "$REPO_DIR/requirements/devpi.lock" >>"$logf" 2>&1 \
    || die "devpi wheels: download failed; see $logf"
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
}

up() {
  # shellcheck source=/dev/null
  source "$LAB_STATE/env.d/vm.env"
  if [[ ! -e "$FRESH_MARK" ]]; then
    clear_vm_hub
    : >"$FRESH_MARK"
  fi
  if ! grep -qF "$HOSTS_TAG" /etc/hosts; then
    printf '%s %s %s\n' "$LAB_VM_ADDR" "$HUB_NAME" "$HOSTS_TAG" >>/etc/hosts
  fi
  # The hub's programs as inventories/lab.yml names them (aux_vm.programs_dir), laid out as
  # `airgap-bundle --hub-from` takes them: the installer needs no environment to find them.
  rm -rf "$(programs_dir)"; mkdir -p "$(programs_dir)"
  ln -s "$(chartmuseum)" "$(programs_dir)/chartmuseum"
  ln -s "$(wheels_dir)" "$(programs_dir)/devpi-wheels"
  mkdir -p "$LAB_STATE/env.d"
  {
    printf 'export INSTALLER_HUB_CHARTMUSEUM_BINARY=%q\n' "$(chartmuseum)"
    printf 'export INSTALLER_HUB_DEVPI_WHEELHOUSE=%q\n' "$(wheels_dir)"
  } >"$LAB_STATE/env.d/hub.env"
}

down() {
  if grep -qF "$HOSTS_TAG" /etc/hosts; then
    # /etc/hosts may be a bind mount: rewrite it in place rather than replacing the file.
    local kept; kept="$(grep -vF "$HOSTS_TAG" /etc/hosts)"
    printf '%s\n' "$kept" >/etc/hosts
  fi
  rm -rf "$LAB_STATE/env.d/hub.env" "$FRESH_MARK" "$(programs_dir)"
  clear_vm_hub
  # The installer's state of the lab site (inventories/lab.yml: journal, Pulumi stacks, hub PKI
  # and passwords) describes a site that is now gone: the cluster's etcd, Keycloak's database and
  # the hub were just removed. Kept, a later lab's bootstrap or destroy would act on stacks whose
  # resources no longer exist, with the old Keycloak's admin password.
  rm -rf "$LAB_STATE/installer"
}

status() {
  if grep -qF "$HOSTS_TAG" /etc/hosts; then
    printf 'hub\tready\t%s resolves here\n' "$HUB_NAME"
  else
    printf 'hub\tdown\t%s does not resolve here\n' "$HUB_NAME"; return 1
  fi
}

case "${1:-}" in
  build|up|down|status) "$1" ;;
  *) die "usage: $0 build|up|down|status" ;;
esac
