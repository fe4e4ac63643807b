# Shared helpers for the lab scripts. Source it; do not run it.
# shellcheck shell=bash
set -euo pipefail

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$LAB_DIR/.." && pwd)"
# shellcheck source=lab/versions.env
source "$LAB_DIR/versions.env"
# Another lab site beside the first (LAB_SITE=b): its own ports, names, addresses, user and
# state folder, from lab/sites/<site>.env over versions.env; the toolchain cache is shared.
LAB_SITE="${LAB_SITE:-}"
if [[ -n "$LAB_SITE" ]]; then
  [[ "$LAB_SITE" =~ ^[a-z][a-z0-9]*$ && -s "$LAB_DIR/sites/$LAB_SITE.env" ]] || {
    printf '[lab] error: LAB_SITE=%s names no site; the sites are: %s\n' "$LAB_SITE" \
      "$(cd "$LAB_DIR/sites" 2>/dev/null && ls -- *.env 2>/dev/null | sed 's/\.env$//' | tr '\n' ' ')" >&2
    exit 1
  }
  # shellcheck source=/dev/null
  source "$LAB_DIR/sites/$LAB_SITE.env"
fi

# Built tools live outside the repo, keyed by tool and version, so a fresh clone reuses them.
LAB_CACHE="${LAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/onprem-installer/lab}"
# Runtime state of a running lab (pids, logs, certificates, kubeconfig). Never committed.
LAB_STATE="${LAB_STATE:-$LAB_DIR/.state${LAB_SITE:+-$LAB_SITE}}"
export LAB_DIR REPO_DIR LAB_CACHE LAB_STATE LAB_SITE

log()  { printf '[lab] %s\n' "$*" >&2; }
die()  { printf '[lab] error: %s\n' "$*" >&2; exit 1; }

# cache_dir TOOL VERSION -> prints the cache folder of that tool build (created).
cache_dir() { local d="$LAB_CACHE/$1-$2"; mkdir -p "$d"; printf '%s\n' "$d"; }

# heavy CMD...: run a CPU/RAM-heavy step (a Go build) one at a time across all lab builds.
heavy() { mkdir -p "$LAB_CACHE"; flock "$LAB_CACHE/.heavy.lock" "$@"; }

# Go builds: offline-friendly defaults, never touching the repo's own files. -mod=readonly is
# forced, whatever GOFLAGS the caller has: a build resolves only what a committed lockfile names
# (lab/toolchain/<tool>/go.mod and go.sum) and can never pick up a newer release on its own.
go_env() {
  export GOTOOLCHAIN=local CGO_ENABLED=0
  export GOPATH="${GOPATH:-$LAB_CACHE/gopath}" GOCACHE="${GOCACHE:-$LAB_CACHE/gocache}"
  export GOFLAGS="-mod=readonly -buildvcs=false"
}

# --- locked Go toolchain (lab/toolchain/<tool>/go.mod + go.sum, written by lab/toolchain/refresh)
TOOLCHAIN_DIR="$LAB_DIR/toolchain"

# lock_dir TOOL: the committed wrapper module of a Go-built tool.
lock_dir() { printf '%s\n' "$TOOLCHAIN_DIR/$1"; }

# has_lock TOOL: true when the tool has a committed lockfile (ChartMuseum and the Python language
# host have none while the module proxy refuses them; see the README's stand-ins).
has_lock() { [[ -s "$TOOLCHAIN_DIR/$1/go.mod" && -s "$TOOLCHAIN_DIR/$1/go.sum" ]]; }

# lock_key TOOL: a short hash of the tool's committed lockfile folder; a build records it, so a
# refreshed lockfile rebuilds the tool even where the version in versions.env stayed the same.
lock_key() {
  (cd "$TOOLCHAIN_DIR/$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum) |
    sha256sum | cut -c1-16
}

# locked_build_done DIR TOOL: the build in DIR was made from the tool's current lockfile.
locked_build_done() { [[ -s "$1/lock.key" && "$(cat "$1/lock.key")" == "$(lock_key "$2")" ]]; }

# go_locked TOOL CMD...: run a go command in the tool's committed wrapper module, read-only.
go_locked() {
  local tool="$1"; shift
  has_lock "$tool" || { printf 'no lockfile in %s; run lab/toolchain/refresh %s\n' "$(lock_dir "$tool")" "$tool"; return 1; }
  (cd "$(lock_dir "$tool")" && "$@")
}

# pid files: $LAB_STATE/run/<name>.pid, logs: $LAB_STATE/log/<name>.log
pidfile() { mkdir -p "$LAB_STATE/run"; printf '%s\n' "$LAB_STATE/run/$1.pid"; }
logfile() { mkdir -p "$LAB_STATE/log"; printf '%s\n' "$LAB_STATE/log/$1.log"; }

is_running() { local p; p="$(pidfile "$1")"; [[ -s "$p" ]] && kill -0 "$(cat "$p")" 2>/dev/null; }

# start_daemon NAME CMD...: start CMD in its own session, record its pid, log to the log file.
start_daemon() {
  local name="$1"; shift
  # A dead daemon not yet reaped (a zombie still answers kill -0) is started again.
  if is_alive "$name"; then log "$name already running (pid $(cat "$(pidfile "$name")"))"; return 0; fi
  # The daemon keeps no descriptor its starter held: under `flock /tmp/onprem-lab-site.lock
  # lab/up` an inherited lock descriptor would hold the site lock for as long as the daemon runs.
  # shellcheck disable=SC2016  # expanded by the daemon's own shell
  setsid bash -c 'for fd in /proc/$$/fd/*; do fd="${fd##*/}"; if ((fd > 2)); then eval "exec $fd>&-"; fi; done; exec "$@"' \
    start_daemon "$@" >>"$(logfile "$name")" 2>&1 < /dev/null &
  echo $! >"$(pidfile "$name")"
  log "$name started (pid $!, log $(logfile "$name"))"
}

# stop_daemon NAME: stop by pid (TERM, then KILL after 10 s), remove the pid file.
stop_daemon() {
  local name="$1" p pid _
  p="$(pidfile "$name")"
  [[ -s "$p" ]] || return 0
  pid="$(cat "$p")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do pid_alive "$pid" || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    log "$name stopped"
  fi
  rm -f "$p"
}

# wait_for NAME SECONDS CMD...: poll CMD until it succeeds; fail naming the log after SECONDS.
wait_for() {
  local name="$1" secs="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then die "$name not ready after ${secs}s; see $(logfile "$name")"; fi
    if [[ -s "$(pidfile "$name")" ]] && ! is_alive "$name"; then die "$name exited; see $(logfile "$name")"; fi
    sleep 0.5
  done
}

# port_free ADDR PORT: true when nothing listens there. Java servers (Keycloak) listen on
# dual-stack sockets, which ss shows as [::ffff:ADDR]:PORT.
port_free() {
  ! ss -Hltn "sport = :$2" 2>/dev/null | awk '{print $4}' |
    grep -qxF -e "$1:$2" -e "[::ffff:$1]:$2" -e "*:$2" -e "0.0.0.0:$2" -e "[::]:$2"
}

# --- lab CA and server certificates (lab part 2: upstream registry, chart repo, wheel index,
# Keycloak). One CA for the stand-in "internet", apart from the cluster's own PKI.
LAB_CA_DIR="$LAB_STATE/ca"

# _lab_ca_make: create the lab CA if it is missing (key 0600). Callers hold the CA's lock.
_lab_ca_make() {
  [[ -s "$LAB_CA_DIR/ca.crt" ]] && return 0
  (umask 077; openssl genrsa -out "$LAB_CA_DIR/ca.key" 2048 2>/dev/null)
  openssl req -x509 -new -key "$LAB_CA_DIR/ca.key" -sha256 -days 825 -subj "/CN=onprem-installer lab CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$LAB_CA_DIR/ca.crt" 2>/dev/null
}

# lab_ca: create the lab CA once; prints the CA certificate's path. Components that start side
# by side (lab/up) take the CA's lock, so two never make two CAs or sign with one serial.
lab_ca() {
  mkdir -p "$LAB_CA_DIR"
  (flock 9; _lab_ca_make) 9>"$LAB_CA_DIR/.lock"
  printf '%s\n' "$LAB_CA_DIR/ca.crt"
}

# lab_cert NAME SAN...: a server certificate signed by the lab CA, at $LAB_CA_DIR/NAME.{crt,key}
# (key 0600), made once. SANs like IP:127.0.0.1 DNS:localhost.
lab_cert() {
  local name="$1"; shift
  local san; san="$(IFS=,; printf '%s' "$*")"
  mkdir -p "$LAB_CA_DIR"
  (
    flock 9
    _lab_ca_make
    [[ -s "$LAB_CA_DIR/$name.crt" && -s "$LAB_CA_DIR/$name.key" ]] && exit 0
    (umask 077; openssl genrsa -out "$LAB_CA_DIR/$name.key" 2048 2>/dev/null)
    openssl req -new -key "$LAB_CA_DIR/$name.key" -subj "/CN=$name" -out "$LAB_CA_DIR/$name.csr" 2>/dev/null
    openssl x509 -req -in "$LAB_CA_DIR/$name.csr" -CA "$LAB_CA_DIR/ca.crt" -CAkey "$LAB_CA_DIR/ca.key" \
      -CAcreateserial -days 825 -sha256 -out "$LAB_CA_DIR/$name.crt" \
      -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$san") 2>/dev/null
    rm -f "$LAB_CA_DIR/$name.csr"
  ) 9>"$LAB_CA_DIR/.lock"
}

# lab_secret FILE: print the secret kept in FILE, creating it (random, 0600) the first time.
lab_secret() {
  local f="$1"
  if [[ ! -s "$f" ]]; then
    mkdir -p "$(dirname "$f")"
    (umask 077; openssl rand -hex 16 >"$f")
  fi
  chmod 0600 "$f"
  cat "$f"
}

# component_lock NAME: hold a lock on NAME's build until this script exits, so that two builds of
# one component (lab/build beside a test run's lab/up) do not write the same cache folder at once;
# the second finds the cache complete and builds nothing.
component_lock() {
  mkdir -p "$LAB_CACHE"
  exec {LAB_COMPONENT_LOCK_FD}>"$LAB_CACHE/.build-$1.lock"
  flock "$LAB_COMPONENT_LOCK_FD"
}

# is_alive NAME: like is_running, but a process that has exited and waits to be reaped (a
# zombie, which still answers kill -0) counts as dead.
is_alive() {
  is_running "$1" || return 1
  [[ "$(ps -o stat= -p "$(cat "$(pidfile "$1")")" 2>/dev/null)" != Z* ]]
}

# forget_dead NAME: drop the pid file of a daemon that died (zombies included), so that
# start_daemon starts it again instead of taking an unreaped pid for a live one.
forget_dead() {
  local p; p="$(pidfile "$1")"
  [[ -s "$p" ]] && ! is_alive "$1" && rm -f "$p"
  return 0
}

# pid_alive PID: the process exists and is not a zombie. The lab's daemons are orphans once
# lab/up exits, and this machine's init reaps orphans only every few seconds.
pid_alive() {
  kill -0 "$1" 2>/dev/null && [[ "$(ps -o stat= -p "$1" 2>/dev/null)" != Z* ]]
}
