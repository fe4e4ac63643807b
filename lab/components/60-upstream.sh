#!/usr/bin/env bash
# 60-upstream: what the internet would provide to `installer airgap-bundle`, on lab-only
# addresses, seeded from airgap/release.yml (lab/upstream/seed.py reads it):
#   - an OCI registry (Debian's docker-registry, TLS + htpasswd) holding stand-in images under
#     their full upstream names as paths: 127.0.0.1:PORT/ghcr.io/neuro-inc/platformapi:25.12.0;
#   - a Helm chart repository (index.yaml + archives behind nginx, TLS + basic auth) with the
#     stand-in charts of lab/upstream/charts at the manifest's versions;
#   - a wheel index (devpi-server behind nginx TLS) holding the installer's runtime wheels.
# VERB: build | up | down | status.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

UP="$LAB_STATE/upstream"
PY="$REPO_DIR/.venv/bin/python"; [[ -x "$PY" ]] || PY=python3
HELM="$LAB_CACHE/helm-$HELM_VERSION/bin/helm"
# Keyed by the hashed lockfile it installs from, like the hub's DevPI wheels (70-hub.sh).
DEVPI_VENV="$LAB_CACHE/devpi-$DEVPI_SERVER_VERSION-$(sha256sum "$REPO_DIR/requirements/devpi.lock" | cut -c1-12)/venv"
REGISTRY="127.0.0.1:$LAB_UPSTREAM_REGISTRY_PORT"
AUTH_USER=lab-upstream

seed() { "$PY" "$LAB_DIR/upstream/seed.py" "$@"; }
images_dir() { printf '%s\n' "$LAB_CACHE/upstream-images-$(seed key images)"; }
charts_dir() { printf '%s\n' "$LAB_CACHE/upstream-charts-$(seed key charts)"; }
# The installer's runtime wheels change with its dependency pins, not with each commit.
wheelhouse() {
  printf '%s\n' "$LAB_CACHE/wheelhouse-$(cat "$REPO_DIR/pyproject.toml" "$REPO_DIR/requirements/runtime.lock" | sha256sum | cut -c1-12)"
}

# --- build ---------------------------------------------------------------------------------

build_images() {
  local d logf; d="$(images_dir)"
  [[ -s "$d/oci/index.json" ]] && return 0
  logf="$(logfile build-upstream-images)"
  log "upstream images: building stand-ins (log $logf)"; local t0=$SECONDS
  mkdir -p "$d"; rm -rf "$d/oci.tmp"
  seed images >"$d/plan.tsv"
  bash "$LAB_DIR/upstream/build-images.sh" "$d/oci.tmp" "$LAB_CACHE/build/upstream-images" <"$d/plan.tsv" \
    >>"$logf" 2>&1 || die "buildah: building the upstream stand-in images failed; see $logf"
  rm -rf "$LAB_CACHE/build/upstream-images"
  mv "$d/oci.tmp" "$d/oci"
  prune_stale upstream-images "$d"
  log "upstream images: built in $d ($((SECONDS - t0))s)"
}

# prune_stale PREFIX KEEP: generated content of older manifests is of no use; drop it.
prune_stale() {
  local old
  for old in "$LAB_CACHE/$1"-*; do
    [[ -d "$old" && "$old" != "$2" ]] && rm -rf "$old"
  done
  return 0
}

build_charts() {
  local d logf name version app src _repo; d="$(charts_dir)"
  [[ -s "$d/charts/index.yaml" ]] && return 0
  [[ -x "$HELM" ]] || die "helm: not built; see $(logfile build-helm)"
  logf="$(logfile build-upstream-charts)"
  rm -rf "$d/charts.tmp"; mkdir -p "$d/charts.tmp"
  while IFS=$'\t' read -r name version app src _repo; do
    "$HELM" lint "$src" >>"$logf" 2>&1 || die "helm: stand-in chart $name does not lint; see $logf"
    "$HELM" package "$src" --version "$version" --app-version "$app" -d "$d/charts.tmp" >>"$logf" 2>&1 \
      || die "helm: packaging stand-in chart $name failed; see $logf"
  done < <(seed charts)
  "$HELM" repo index "$d/charts.tmp" >>"$logf" 2>&1 || die "helm: indexing the upstream charts failed; see $logf"
  rm -rf "$d/charts"; mv "$d/charts.tmp" "$d/charts"
  prune_stale upstream-charts "$d"
}

# devpi_venv_whole: the venv's programs are there and start from where the venv is now (a venv
# names its own folder in its scripts: a cache moved or copied elsewhere leaves them pointing at
# the old place).
devpi_venv_whole() {
  local b
  for b in devpi-server devpi devpi-init; do
    [[ -x "$DEVPI_VENV/bin/$b" && "$(head -n1 "$DEVPI_VENV/bin/$b")" == "#!$DEVPI_VENV/bin/python"* ]] || return 1
  done
}

build_devpi() {
  devpi_venv_whole && return 0
  local logf; logf="$(logfile build-devpi)"
  log "devpi-server $DEVPI_SERVER_VERSION: installing into $DEVPI_VENV (log $logf)"; local t0=$SECONDS
  rm -rf "$DEVPI_VENV"
  { python3 -m venv "$DEVPI_VENV" \
      && "$DEVPI_VENV/bin/pip" install -q --disable-pip-version-check --require-hashes --no-deps \
        -r "$REPO_DIR/requirements/devpi.lock"
  } >>"$logf" 2>&1 || { rm -rf "$DEVPI_VENV"; die "devpi-server: install failed; see $logf"; }
  log "devpi-server: installed ($((SECONDS - t0))s)"
}

build_wheels() {
  local d logf; d="$(wheelhouse)"
  [[ -f "$d/.complete" ]] && return 0
  logf="$(logfile build-wheelhouse)"
  log "wheelhouse: building the installer's runtime wheels (log $logf)"; local t0=$SECONDS
  rm -rf "$d"; mkdir -p "$d"
  # Every dependency as the hashed lockfile names it; the installer's own wheel built from the repo.
  { "$REPO_DIR/.venv/bin/pip" wheel -q --disable-pip-version-check --require-hashes --no-deps -w "$d" \
      -r "$REPO_DIR/requirements/runtime.lock" &&
    "$REPO_DIR/.venv/bin/pip" wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$d" "$REPO_DIR"
  } >>"$logf" 2>&1 || die "pip: building the installer's wheels failed; see $logf"
  touch "$d/.complete"
  prune_stale wheelhouse "$d"
  log "wheelhouse: built in $d ($((SECONDS - t0))s)"
}

# --- up ------------------------------------------------------------------------------------

auth_pair() { lab_secret "$UP/auth-password" >/dev/null; printf '%s:%s\n' "$AUTH_USER" "$(cat "$UP/auth-password")"; }

registry_ready() {
  curl -fsS --max-time 5 --cacert "$LAB_CA_DIR/ca.crt" -u "$(cat "$UP/auth")" "https://$REGISTRY/v2/" >/dev/null
}

up_registry() {
  [[ -x /usr/bin/docker-registry ]] || die "docker-registry: not installed (lab/system-deps); see $(logfile upstream-registry)"
  cat >"$UP/registry.yml" <<EOF
version: 0.1
log: {level: info}
storage:
  filesystem: {rootdirectory: $UP/registry-data}
  delete: {enabled: true}
http:
  addr: $REGISTRY
  tls: {certificate: $LAB_CA_DIR/upstream.crt, key: $LAB_CA_DIR/upstream.key}
auth:
  htpasswd: {realm: lab-upstream, path: $UP/htpasswd}
EOF
  if ! is_alive upstream-registry; then
    port_free 127.0.0.1 "$LAB_UPSTREAM_REGISTRY_PORT" \
      || die "docker-registry: port $LAB_UPSTREAM_REGISTRY_PORT is taken; see $(logfile upstream-registry)"
    start_daemon upstream-registry /usr/bin/docker-registry serve "$UP/registry.yml"
  fi
  wait_for upstream-registry 60 registry_ready
}

push_images() {
  local logf layout name tag _c _m dest n=0
  logf="$(logfile upstream-seed)"; layout="$(images_dir)/oci"
  while IFS=$'\t' read -r name tag _c _m; do
    dest="docker://$REGISTRY/$name:$tag"
    skopeo inspect --raw --cert-dir "$UP/certs.d" --creds "$(cat "$UP/auth")" "$dest" >/dev/null 2>&1 </dev/null && continue
    skopeo copy --quiet --dest-cert-dir "$UP/certs.d" --dest-creds "$(cat "$UP/auth")" \
      "oci:$layout:$name:$tag" "$dest" >>"$logf" 2>&1 </dev/null \
      || die "skopeo: pushing $name:$tag to the upstream registry failed; see $logf"
    n=$((n + 1))
  done < <(seed images)
  log "upstream registry: $n image(s) pushed, the rest already there"
}

# Charts whose upstream is an OCI repository (the platform's) are also pushed to the registry
# under the same mirror-prefix rule: oci://ghcr.io/neuro-inc/helm-charts/platform-api-poller:25.12.0
# is oci://127.0.0.1:PORT/ghcr.io/neuro-inc/helm-charts/platform-api-poller:25.12.0.
push_oci_charts() {
  local logf name version _app _src repo path n=0
  logf="$(logfile upstream-seed)"
  local helm_auth=(--registry-config "$UP/helm-registry.json")
  (umask 077; : >"$UP/helm-registry.json")
  "$HELM" registry login "$REGISTRY" "${helm_auth[@]}" --ca-file "$LAB_CA_DIR/ca.crt" \
    --username "$AUTH_USER" --password-stdin <"$UP/auth-password" >>"$logf" 2>&1 \
    || die "helm: login to the upstream registry failed; see $logf"
  while IFS=$'\t' read -r name version _app _src repo; do
    [[ "$repo" == oci://* ]] || continue
    path="${repo#oci://}"
    skopeo inspect --raw --cert-dir "$UP/certs.d" --creds "$(cat "$UP/auth")" \
      "docker://$REGISTRY/$path/$name:$version" >/dev/null 2>&1 </dev/null && continue
    "$HELM" push "$(charts_dir)/charts/$name-$version.tgz" "oci://$REGISTRY/$path" "${helm_auth[@]}" \
      --ca-file "$LAB_CA_DIR/ca.crt" >>"$logf" 2>&1 </dev/null \
      || die "helm: pushing chart $name $version to the upstream registry failed; see $logf"
    n=$((n + 1))
  done < <(seed charts)
  log "upstream registry: $n OCI chart(s) pushed, the rest already there"
}

devpi_ready() { curl -fsS --max-time 5 "http://127.0.0.1:$LAB_UPSTREAM_PYPI_BACKEND_PORT/+api" >/dev/null; }

up_devpi() {
  local logf; logf="$(logfile upstream-devpi)"
  [[ -x "$DEVPI_VENV/bin/devpi-server" ]] || die "devpi-server: not built; see $(logfile build-devpi)"
  if [[ ! -f "$UP/devpi/.nodeinfo" ]]; then
    "$DEVPI_VENV/bin/devpi-init" --serverdir "$UP/devpi" --no-root-pypi \
      --root-passwd "$(lab_secret "$UP/devpi-root-password")" >>"$logf" 2>&1 \
      || die "devpi-server: initialising its data folder failed; see $logf"
  fi
  if ! is_alive upstream-devpi; then
    port_free 127.0.0.1 "$LAB_UPSTREAM_PYPI_BACKEND_PORT" \
      || die "devpi-server: port $LAB_UPSTREAM_PYPI_BACKEND_PORT is taken; see $logf"
    # Loopback only and offline: nginx in front gives it TLS; it never reaches out to an index.
    start_daemon upstream-devpi "$DEVPI_VENV/bin/devpi-server" --serverdir "$UP/devpi" \
      --host 127.0.0.1 --port "$LAB_UPSTREAM_PYPI_BACKEND_PORT" --offline-mode
  fi
  wait_for upstream-devpi 90 devpi_ready
  seed_wheels
}

# The index is volatile: the installer's own wheel keeps its version (0.1.0) while its code
# changes, and a rebuilt wheelhouse must replace it rather than be refused.
seed_wheels() {
  local logf client url; logf="$(logfile upstream-devpi)"
  client="$UP/devpi-client"; url="http://127.0.0.1:$LAB_UPSTREAM_PYPI_BACKEND_PORT"
  [[ -f "$UP/devpi/.lab-seeded-$(basename "$(wheelhouse)")" ]] && return 0
  {
    "$DEVPI_VENV/bin/devpi" --clientdir "$client" use "$url" \
      && "$DEVPI_VENV/bin/devpi" --clientdir "$client" login root --password "$(cat "$UP/devpi-root-password")" \
      && { "$DEVPI_VENV/bin/devpi" --clientdir "$client" getjson /lab >/dev/null 2>&1 \
           || "$DEVPI_VENV/bin/devpi" --clientdir "$client" user -c lab password="$(lab_secret "$UP/devpi-lab-password")"; } \
      && { "$DEVPI_VENV/bin/devpi" --clientdir "$client" getjson /lab/stable >/dev/null 2>&1 \
           || "$DEVPI_VENV/bin/devpi" --clientdir "$client" index -c lab/stable bases=; } \
      && "$DEVPI_VENV/bin/devpi" --clientdir "$client" index lab/stable volatile=True \
      && "$DEVPI_VENV/bin/devpi" --clientdir "$client" login lab --password "$(cat "$UP/devpi-lab-password")" \
      && "$DEVPI_VENV/bin/devpi" --clientdir "$client" use lab/stable \
      && "$DEVPI_VENV/bin/devpi" --clientdir "$client" upload --from-dir "$(wheelhouse)"
  } >>"$logf" 2>&1 </dev/null || die "devpi-client: seeding the wheel index failed; see $logf"
  chmod 0700 "$client"  # holds the login token
  touch "$UP/devpi/.lab-seeded-$(basename "$(wheelhouse)")"
  log "upstream wheel index: seeded from $(wheelhouse)"
}

charts_ready() {
  curl -fsS --max-time 5 --cacert "$LAB_CA_DIR/ca.crt" -u "$(cat "$UP/auth")" \
    "https://127.0.0.1:$LAB_UPSTREAM_CHARTS_PORT/index.yaml" >/dev/null
}

up_nginx() {
  rm -rf "$UP/charts"; cp -r "$(charts_dir)/charts" "$UP/charts"
  mkdir -p "$UP/nginx/tmp"
  # The worker runs as the lab's own user (root), like the registry and DevPI beside it: the
  # checkout may sit under a folder only its owner can cross (root's home, a `mktemp -d`), where
  # the default unprivileged worker could not read the password file or the charts.
  cat >"$UP/nginx/nginx.conf" <<EOF
user $(id -un);
worker_processes 1;
pid $UP/nginx/nginx.pid;
error_log $(logfile upstream-nginx) info;
events { worker_connections 256; }
http {
  access_log $(logfile upstream-nginx);
  client_body_temp_path $UP/nginx/tmp/body;
  proxy_temp_path $UP/nginx/tmp/proxy;
  fastcgi_temp_path $UP/nginx/tmp/fastcgi;
  uwsgi_temp_path $UP/nginx/tmp/uwsgi;
  scgi_temp_path $UP/nginx/tmp/scgi;
  types { application/x-yaml yaml; application/gzip tgz; }
  ssl_certificate $LAB_CA_DIR/upstream.crt;
  ssl_certificate_key $LAB_CA_DIR/upstream.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  server {
    listen 127.0.0.1:$LAB_UPSTREAM_CHARTS_PORT ssl;
    auth_basic lab-upstream;
    auth_basic_user_file $UP/htpasswd;
    root $UP/charts;
    location / { try_files \$uri =404; }
  }
  server {
    listen 127.0.0.1:$LAB_UPSTREAM_PYPI_PORT ssl;
    client_max_body_size 512m;
    auth_basic lab-upstream;
    auth_basic_user_file $UP/htpasswd;
    location / {
      proxy_pass http://127.0.0.1:$LAB_UPSTREAM_PYPI_BACKEND_PORT;
      proxy_set_header Host \$http_host;
      proxy_set_header X-Outside-URL \$scheme://\$http_host;
      proxy_set_header X-Real-IP \$remote_addr;
    }
  }
}
EOF
  if ! is_alive upstream-nginx; then
    local p
    for p in "$LAB_UPSTREAM_CHARTS_PORT" "$LAB_UPSTREAM_PYPI_PORT"; do
      port_free 127.0.0.1 "$p" || die "nginx: port $p is taken; see $(logfile upstream-nginx)"
    done
    start_daemon upstream-nginx /usr/sbin/nginx -p "$UP/nginx" -c "$UP/nginx/nginx.conf" -g 'daemon off;'
  fi
  wait_for upstream-nginx 30 charts_ready
}

# The lab cuts its own release: the pins of the stand-ins as it built them (image digests from
# the OCI layout, sha256 of the charts, wheels and Pulumi binaries), which `airgap-bundle` and
# the connected bootstrap (inventories/lab.yml's upstream.pins) hold the upstream's content to.
write_pins() {
  seed pins "$(images_dir)/oci" "$(charts_dir)/charts" "$(wheelhouse)" "$LAB_STATE/pulumi/bin" \
    >"$UP/release.pins.yml.tmp" 2>>"$(logfile upstream-seed)" \
    || die "upstream: recording the stand-ins' pins failed; see $(logfile upstream-seed)"
  mv "$UP/release.pins.yml.tmp" "$UP/release.pins.yml"
}

up() {
  [[ -s "$(images_dir)/oci/index.json" && -s "$(charts_dir)/charts/index.yaml" ]] \
    || die "upstream: content not built; run lab/build"
  mkdir -p "$UP/certs.d"
  lab_cert upstream IP:127.0.0.1 DNS:localhost
  cp "$LAB_CA_DIR/ca.crt" "$UP/certs.d/ca.crt"
  (umask 077; auth_pair >"$UP/auth")
  htpasswd -Bbc "$UP/htpasswd.tmp" "$AUTH_USER" "$(cat "$UP/auth-password")" 2>/dev/null \
    || die "htpasswd: writing the upstream password file failed; see $(logfile upstream-registry)"
  mv "$UP/htpasswd.tmp" "$UP/htpasswd"
  up_registry
  push_images
  push_oci_charts
  up_devpi
  up_nginx
  write_pins
  mkdir -p "$LAB_STATE/env.d"
  {
    printf 'export LAB_UPSTREAM_REGISTRY=%q\n' "$REGISTRY"
    printf 'export LAB_UPSTREAM_CA=%q\n' "$LAB_CA_DIR/ca.crt"
    printf 'export LAB_UPSTREAM_AUTH_FILE=%q\n' "$UP/auth"
    printf 'export LAB_UPSTREAM_CHARTS_URL=%q\n' "https://127.0.0.1:$LAB_UPSTREAM_CHARTS_PORT"
    # A host name, not the IP: pip's system trust store path refuses IP-address hosts
    # ("check_hostname requires server_hostname"); the certificate names localhost too.
    printf 'export LAB_UPSTREAM_PYPI_URL=%q\n' "https://localhost:$LAB_UPSTREAM_PYPI_PORT/lab/stable/+simple/"
    printf 'export LAB_UPSTREAM_PINS=%q\n' "$UP/release.pins.yml"
  } >"$LAB_STATE/env.d/60-upstream.env"
  log "upstream: registry $REGISTRY, charts :$LAB_UPSTREAM_CHARTS_PORT, wheels :$LAB_UPSTREAM_PYPI_PORT"
}

down() {
  stop_daemon upstream-nginx
  stop_daemon upstream-devpi
  stop_daemon upstream-registry
  rm -rf "$UP" "$LAB_STATE/env.d/60-upstream.env"
}

status() {
  local rc=0 name
  for name in upstream-registry upstream-devpi upstream-nginx; do
    if is_alive "$name"; then printf '%s\trunning\tpid %s\n' "$name" "$(cat "$(pidfile "$name")")"
    else printf '%s\tdown\t%s\n' "$name" "$(logfile "$name")"; rc=1; fi
  done
  return $rc
}

case "${1:-}" in
  build) component_lock 60-upstream; build_images; build_devpi; build_wheels; build_charts ;;
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 build|up|down|status" ;;
esac
