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

# The line's mark ends the line; the second site's differs (a mark that ends the other's line
# would take it away).
HOSTS_TAG="# onprem-installer lab hub${LAB_SITE:+ of site $LAB_SITE}"
HUB_NAME="$LAB_HUB_NAME"   # the site's inventory: aux_vm.hostname
# Keyed by the hashed lockfile they are downloaded from (requirements/devpi.lock).
wheels_dir() {
  printf '%s\n' "$LAB_CACHE/devpi-wheels-$DEVPI_SERVER_VERSION-$(sha256sum "$REPO_DIR/requirements/devpi.lock" | cut -c1-12)"
}
programs_dir() { printf '%s\n' "$LAB_STATE/hub-programs"; }
# hosts_marked: this site's /etc/hosts lines (those ending with its mark).
hosts_marked() { awk -v t=" $HOSTS_TAG" 'length($0) > length(t) && substr($0, length($0) - length(t) + 1) == t' /etc/hosts; }
# Two sites change /etc/hosts, maybe at once (scripts/test takes them down together): one at a time.
HOSTS_LOCK=/tmp/onprem-lab-hosts.lock

hosts_add() {
  [[ -n "$(hosts_marked)" ]] || printf '%s %s %s\n' "$LAB_VM_ADDR" "$HUB_NAME" "$HOSTS_TAG" >>/etc/hosts
}

hosts_drop() {
  local kept
  [[ -n "$(hosts_marked)" ]] || return 0
  # /etc/hosts may be a bind mount: rewrite it in place rather than replacing the file.
  kept="$(grep -vxF -f <(hosts_marked) /etc/hosts || true)"
  printf '%s\n' "$kept" >/etc/hosts
}

chartmuseum() {
  local built="$LAB_CACHE/chartmuseum-$CHARTMUSEUM_VERSION/bin/chartmuseum"
  if [[ -x "$built" ]]; then printf '%s\n' "$built"; else printf '%s\n' "$LAB_DIR/hub/chartmuseum.py"; fi
}

build() {
  local dir logf
  dir="$(wheels_dir)"
  [[ -s "$dir/devpi_server-$DEVPI_SERVER_VERSION-py3-none-any.whl" ]] && return 0
  component_lock 70-hub
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
  (flock 9; hosts_add) 9>"$HOSTS_LOCK"
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
  (flock 9; hosts_drop) 9>"$HOSTS_LOCK"
  # What the hub put on the VM went with the VM's disk (20-vm down).
  rm -rf "$LAB_STATE/env.d/hub.env" "$(programs_dir)"
  # The installer's state of the lab site (inventories/lab.yml: journal, Pulumi stacks, hub PKI
  # and passwords) describes a site that is now gone: the cluster's etcd, Keycloak's database and
  # the hub were just removed. Kept, a later lab's bootstrap or destroy would act on stacks whose
  # resources no longer exist, with the old Keycloak's admin password.
  rm -rf "$LAB_STATE/installer"
}

status() {
  if [[ -n "$(hosts_marked)" ]]; then
    printf 'hub\tready\t%s resolves here\n' "$HUB_NAME"
  else
    printf 'hub\tdown\t%s does not resolve here\n' "$HUB_NAME"; return 1
  fi
}

case "${1:-}" in
  build|up|down|status) "$1" ;;
  *) die "usage: $0 build|up|down|status" ;;
esac
