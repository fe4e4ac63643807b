#!/usr/bin/env bash
# 50-keycloak: the Keycloak server distribution from Maven Central, started in dev mode on a
# lab-only address with HTTPS from the lab CA and a known admin password.
# VERB: build | up | down | status.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

KC_CACHE="$LAB_CACHE/keycloak-$KEYCLOAK_VERSION"
KC_STATE="$LAB_STATE/keycloak"
KC_READY_SECONDS="${LAB_KEYCLOAK_READY_SECONDS:-240}"

# The archive is fetched with Maven into a repository inside the lab cache (nothing of ~/.m2 is
# used or left behind), checked against KEYCLOAK_SHA256 before it is unpacked, and kept beside
# the unpacked server so that lab/toolchain/check can check it again.
build() {
  local archive="$KC_CACHE/keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz" got
  if [[ -x "$KC_CACHE/dist/bin/kc.sh" && -s "$archive" ]]; then return 0; fi
  local logf; logf="$(logfile build-keycloak)"
  log "keycloak $KEYCLOAK_VERSION: fetching the server distribution (log $logf)"; local t0=$SECONDS
  if [[ ! -s "$archive" ]]; then
    rm -rf "$KC_CACHE/download"
    mvn -B -q -C -Dmaven.repo.local="$LAB_CACHE/maven" dependency:copy \
      -Dartifact="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:tar.gz" \
      -DoutputDirectory="$KC_CACHE/download" >>"$logf" 2>&1 || die "keycloak: download failed; see $logf"
    got="$(sha256sum "$KC_CACHE/download/${archive##*/}" | cut -d' ' -f1)"
    [[ "$got" == "$KEYCLOAK_SHA256" ]] ||
      die "keycloak: the downloaded ${archive##*/} has sha256 $got, lab/versions.env pins $KEYCLOAK_SHA256; nothing was unpacked"
    mv "$KC_CACHE/download/${archive##*/}" "$archive"
    rm -rf "$KC_CACHE/download" "$LAB_CACHE/maven/org/keycloak/keycloak-quarkus-dist"
  fi
  got="$(sha256sum "$archive" | cut -d' ' -f1)"
  [[ "$got" == "$KEYCLOAK_SHA256" ]] || die "keycloak: $archive has sha256 $got, lab/versions.env pins $KEYCLOAK_SHA256; remove it to fetch it again"
  rm -rf "$KC_CACHE/dist.tmp" "$KC_CACHE/dist"; mkdir -p "$KC_CACHE/dist.tmp"
  tar -xzf "$archive" -C "$KC_CACHE/dist.tmp" --strip-components=1 >>"$logf" 2>&1 ||
    die "keycloak: unpacking failed; see $logf"
  mv "$KC_CACHE/dist.tmp" "$KC_CACHE/dist"
  log "keycloak: unpacked in $KC_CACHE/dist ($((SECONDS - t0))s)"
}

# Keycloak 26 needs Java 21 or later; Debian 12 ships 17, so take the first newer JDK present.
find_java_home() {
  local j v
  for j in "${JAVA_HOME:-}" /usr/lib/jvm/*; do
    [[ -n "$j" && -x "$j/bin/java" ]] || continue
    v="$("$j/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
    if [[ "${v%%.*}" =~ ^[0-9]+$ ]] && (( ${v%%.*} >= 21 )); then printf '%s\n' "$j"; return 0; fi
  done
  return 1
}

url() { printf 'https://127.0.0.1:%s\n' "$LAB_KEYCLOAK_PORT"; }

ready() {
  curl -fsS --cacert "$LAB_CA_DIR/ca.crt" --max-time 5 "$(url)/realms/master/.well-known/openid-configuration" >/dev/null
}

up() {
  [[ -x "$KC_CACHE/dist/bin/kc.sh" ]] || die "keycloak: not built; run lab/build"
  local java_home password
  java_home="$(find_java_home)" || die "keycloak: needs Java 21 or later and found none; see $(logfile keycloak)"
  password="$(lab_secret "$KC_STATE/admin-password")"
  lab_cert keycloak IP:127.0.0.1 DNS:localhost
  if ! is_alive keycloak; then
    local port
    for port in "$LAB_KEYCLOAK_PORT" "$LAB_KEYCLOAK_MGMT_PORT" "$LAB_KEYCLOAK_HTTP_PORT"; do
      port_free 127.0.0.1 "$port" || die "keycloak: port $port is taken; see $(logfile keycloak)"
    done
    # A private copy: dev mode writes its database and build output under the distribution.
    if [[ ! -x "$KC_STATE/server/bin/kc.sh" ]]; then
      rm -rf "$KC_STATE/server"; cp -a "$KC_CACHE/dist" "$KC_STATE/server"
    fi
    JAVA_HOME="$java_home" PATH="$java_home/bin:$PATH" \
      KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD="$password" \
      start_daemon keycloak "$KC_STATE/server/bin/kc.sh" start-dev \
        --http-enabled=false --https-port="$LAB_KEYCLOAK_PORT" --hostname-strict=false \
        --https-certificate-file="$LAB_CA_DIR/keycloak.crt" \
        --https-certificate-key-file="$LAB_CA_DIR/keycloak.key" \
        --truststore-paths="$LAB_CA_DIR/ca.crt" \
        --http-management-port="$LAB_KEYCLOAK_MGMT_PORT" --health-enabled=true \
        --http-host=127.0.0.1 --http-port="$LAB_KEYCLOAK_HTTP_PORT"
  fi
  log "keycloak: waiting up to ${KC_READY_SECONDS}s for $(url)"
  wait_for keycloak "$KC_READY_SECONDS" ready
  mkdir -p "$LAB_STATE/env.d"
  {
    printf 'export LAB_KEYCLOAK_URL=%q\n' "$(url)"
    printf 'export LAB_KEYCLOAK_ADMIN=admin\n'
    printf 'export LAB_KEYCLOAK_PASSWORD_FILE=%q\n' "$KC_STATE/admin-password"
    printf 'export LAB_KEYCLOAK_CA=%q\n' "$LAB_CA_DIR/ca.crt"
  } >"$LAB_STATE/env.d/50-keycloak.env"
  log "keycloak: ready at $(url)"
}

down() {
  stop_daemon keycloak
  rm -rf "$KC_STATE" "$LAB_STATE/env.d/50-keycloak.env"
}

status() {
  if is_alive keycloak && ready; then printf 'keycloak\trunning\t%s\n' "$(url)"
  else printf 'keycloak\tdown\t%s\n' "$(logfile keycloak)"; return 1; fi
}

case "${1:-}" in
  build) component_lock 50-keycloak; build ;;
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 build|up|down|status" ;;
esac
