#!/usr/bin/env bash
# 30-pulumi: the Pulumi CLI, the Python language host and the Kubernetes provider plugin, built
# from their committed lockfiles (lab/toolchain) so `pulumi up` runs with no network. VERB: build | up | down | status.
# Nothing runs as a daemon: `up` only publishes where the binaries are.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

cli_dir()      { printf '%s\n' "$LAB_CACHE/pulumi-$PULUMI_VERSION"; }
provider_dir() { printf '%s\n' "$LAB_CACHE/pulumi-kubernetes-$PULUMI_KUBERNETES_PROVIDER_VERSION"; }

build_cli() {
  local out logf v="v$PULUMI_VERSION"
  out="$(cli_dir)/bin"
  if [[ -x "$out/pulumi" && -x "$out/pulumi-language-python-exec" ]] && locked_build_done "$(cli_dir)" pulumi; then return 0; fi
  logf="$(logfile build-pulumi)"
  log "pulumi $v: building (log $logf)"; local t0=$SECONDS
  rm -rf "$out.tmp" "$(cli_dir)/lock.key"; mkdir -p "$out.tmp"
  # (A subshell's `set -e` is off under `||`, so each step says how it fails.)
  (
    go_locked pulumi heavy go build -trimpath -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$v" \
      -o "$out.tmp/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi || exit 1
    # The exec helper is a script the language host runs; it ships in the sdk module.
    sdk="$(go_locked pulumi go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)" || exit 1
    install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" "$out.tmp/pulumi-language-python-exec" || exit 1
  ) >>"$logf" 2>&1 || die "pulumi: build failed; see $logf"
  rm -rf "$out"; mkdir -p "$out"; mv "$out.tmp"/* "$out"/; rmdir "$out.tmp"
  lock_key pulumi >"$(cli_dir)/lock.key"
  log "pulumi $v: built in $out ($((SECONDS - t0))s)"
}

# The language host lets the CLI run Python programs from a project folder (plain `pulumi up` in
# stacks/); the Automation API's inline programs do not need it. Its module has no tags, and the
# module proxy here refuses its commit, so lab/toolchain/refresh cannot write its lockfile; while
# there is none, hand runs use the installer's stand-in (installer/engines/pulumi_language_host.py),
# whose launcher the installer writes only where this folder has no real one: a real build wins.
build_language_python() {
  local out logf m=github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3
  out="$(cli_dir)/bin"
  if ! has_lock pulumi-language-python; then
    log "pulumi-language-python: no lockfile (the module proxy refuses $m@$PULUMI_LANGUAGE_PYTHON_MODULE); hand runs use the installer's stand-in"
    rm -f "$out/pulumi-language-python"
    return 0
  fi
  [[ -x "$out/pulumi-language-python" && -s "$(cli_dir)/language-python.lock.key" ]] &&
    [[ "$(cat "$(cli_dir)/language-python.lock.key")" == "$(lock_key pulumi-language-python)" ]] && return 0
  logf="$(logfile build-pulumi-language-python)"
  go_locked pulumi-language-python heavy go build -trimpath \
    -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
    -o "$out/pulumi-language-python" "$m" >>"$logf" 2>&1 || die "pulumi-language-python: build failed; see $logf"
  lock_key pulumi-language-python >"$(cli_dir)/language-python.lock.key"
}

# The wrapper module (lab/toolchain/pulumi-kubernetes) has its own main.go; the build copies it
# with its lockfile into a scratch folder and writes what the upstream `go generate` step writes
# beside it: the schema with its version, the mapping compacted.
build_provider() {
  local out b logf m=github.com/pulumi/pulumi-kubernetes/provider/v4
  out="$(provider_dir)/bin"
  if [[ -x "$out/pulumi-resource-kubernetes" ]] && locked_build_done "$(provider_dir)" pulumi-kubernetes; then return 0; fi
  logf="$(logfile build-pulumi-kubernetes)"
  log "pulumi-resource-kubernetes $PULUMI_KUBERNETES_PROVIDER_VERSION: building (log $logf)"; local t0=$SECONDS
  b="$LAB_CACHE/build/pulumi-kubernetes"
  rm -rf "$b" "$out.tmp" "$(provider_dir)/lock.key"; mkdir -p "$b" "$out.tmp"
  (
    has_lock pulumi-kubernetes || { echo "no lockfile; run lab/toolchain/refresh pulumi-kubernetes"; exit 1; }
    cp "$(lock_dir pulumi-kubernetes)"/{go.mod,go.sum,main.go} "$b"/ || exit 1
    cd "$b" || exit 1
    go mod download "$m" || exit 1
    src="$(go list -m -f '{{.Dir}}' "$m")/cmd/pulumi-resource-kubernetes" || exit 1
    jq -c --arg v "$PULUMI_KUBERNETES_PROVIDER_VERSION" '.version = $v' "$src/schema.json" >schema-embed.json || exit 1
    jq -c . "$src/terraform-mapping.json" >terraform-mapping-embed.json || exit 1
    heavy go build -trimpath -ldflags "-s -w -X $m/pkg/version.Version=$PULUMI_KUBERNETES_PROVIDER_VERSION" \
      -o "$out.tmp/pulumi-resource-kubernetes" . || exit 1
  ) >>"$logf" 2>&1 || die "pulumi-resource-kubernetes: build failed; see $logf"
  rm -rf "$out" "$b"; mkdir -p "$out"; mv "$out.tmp"/* "$out"/; rmdir "$out.tmp"
  lock_key pulumi-kubernetes >"$(provider_dir)/lock.key"
  log "pulumi-resource-kubernetes: built in $out ($((SECONDS - t0))s)"
}

# One PATH folder with the CLI and every plugin: what the offline environment helper expects.
bin_dir() { printf '%s\n' "$LAB_STATE/pulumi/bin"; }

up() {
  local d; d="$(bin_dir)"
  [[ -x "$(cli_dir)/bin/pulumi" && -x "$(provider_dir)/bin/pulumi-resource-kubernetes" ]] \
    || die "pulumi: not built; run lab/build"
  rm -rf "$d"; mkdir -p "$d"
  ln -s "$(cli_dir)/bin"/* "$d"/
  ln -s "$(provider_dir)/bin"/* "$d"/
  mkdir -p "$LAB_STATE/env.d"
  printf 'export LAB_PULUMI_BIN_DIR=%q\n' "$d" >"$LAB_STATE/env.d/30-pulumi.env"
  log "pulumi: binaries in $d; python language host: $(language_host)"
}

# Which Python language host a hand-run `pulumi up` gets.
language_host() {
  if [[ -x "$(bin_dir)/pulumi-language-python" ]]; then printf 'real\n'
  else printf "the installer's stand-in (the real one is not built)\n"; fi
}

status() {
  local d; d="$(bin_dir)"
  if [[ -x "$d/pulumi" && -x "$d/pulumi-resource-kubernetes" ]]; then
    printf 'pulumi\tready\t%s, python language host: %s\n' "$("$d/pulumi" version 2>/dev/null)" "$(language_host)"
  else
    printf 'pulumi\tmissing\t%s\n' "$d"; return 1
  fi
}

case "${1:-}" in
  build) component_lock 30-pulumi; go_env; build_cli; build_language_python; build_provider ;;
  up) up ;;
  down) rm -rf "$(bin_dir)" "$LAB_STATE/env.d/30-pulumi.env" ;;
  status) status ;;
  *) die "usage: $0 build|up|down|status" ;;
esac
