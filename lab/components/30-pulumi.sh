#!/usr/bin/env bash
# 30-pulumi: the Pulumi CLI, the Python language host and the Kubernetes provider plugin, built
# from the Go module proxy so `pulumi up` runs with no network. VERB: build | up | down | status.
# Nothing runs as a daemon: `up` only publishes where the binaries are.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

cli_dir()      { printf '%s\n' "$LAB_CACHE/pulumi-$PULUMI_VERSION"; }
provider_dir() { printf '%s\n' "$LAB_CACHE/pulumi-kubernetes-$PULUMI_KUBERNETES_PROVIDER_VERSION"; }

# wrapper_module NAME: a fresh build folder in the cache (never the repo) with a bare go.mod.
wrapper_module() {
  local b="$LAB_CACHE/build/$1"
  rm -rf "$b"; mkdir -p "$b"
  (cd "$b" && go mod init "labtools/$1" >/dev/null 2>&1)
  printf '%s\n' "$b"
}

build_cli() {
  local out b logf v="v$PULUMI_VERSION"
  out="$(cli_dir)/bin"
  if [[ -x "$out/pulumi" && -x "$out/pulumi-language-python-exec" ]]; then return 0; fi
  logf="$(logfile build-pulumi)"
  log "pulumi $v: building (log $logf)"; local t0=$SECONDS
  b="$(wrapper_module pulumi-cli)"
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  # pkg's own go.mod swaps the clipboard module for a fork; a wrapper must repeat that replace.
  # (A subshell's `set -e` is off under `||`, so each step says how it fails.)
  (
    cd "$b" || exit 1
    go mod edit -require="github.com/pulumi/pulumi/pkg/v3@$v" \
      -require="github.com/pulumi/pulumi/sdk/v3@$PULUMI_SDK_MODULE" \
      -replace=github.com/atotto/clipboard=github.com/tgummerer/clipboard@v0.0.0-20241001131231-d02d263e614e || exit 1
    go mod download github.com/pulumi/pulumi/pkg/v3 github.com/pulumi/pulumi/sdk/v3 || exit 1
    heavy go build -trimpath -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$v" \
      -o "$out.tmp/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi || exit 1
    # The exec helper is a script the language host runs; it ships in the sdk module.
    install -m 0755 "$(go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)/python/cmd/pulumi-language-python-exec" \
      "$out.tmp/pulumi-language-python-exec" || exit 1
  ) >>"$logf" 2>&1 || die "pulumi: build failed; see $logf"
  mkdir -p "$out"; mv "$out.tmp"/* "$out"/; rmdir "$out.tmp"
  log "pulumi $v: built in $out ($((SECONDS - t0))s)"
}

# The language host lets the CLI run Python programs from a project folder (plain `pulumi up` in
# stacks/); the Automation API's inline programs do not need it. Its module has no tags; when
# the module proxy refuses its commit, the refusal is recorded and the build goes on. Without
# it, hand runs use the installer's stand-in (installer/engines/pulumi_language_host.py), whose
# launcher the installer writes only where this folder has no real one: a real build wins.
build_language_python() {
  local out b logf refused
  out="$(cli_dir)/bin"; refused="$(cli_dir)/pulumi-language-python.unavailable"
  if [[ -x "$out/pulumi-language-python" ]]; then return 0; fi
  if [[ -s "$refused" ]] && grep -qx "$PULUMI_LANGUAGE_PYTHON_MODULE" "$refused"; then
    log "pulumi-language-python: not available from the module proxy at $PULUMI_LANGUAGE_PYTHON_MODULE (see $refused)"
    return 0
  fi
  logf="$(logfile build-pulumi-language-python)"
  b="$(wrapper_module pulumi-language-python)"
  local m=github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3
  if ! (cd "$b" && go mod download "$m@$PULUMI_LANGUAGE_PYTHON_MODULE") >>"$logf" 2>&1; then
    { printf '%s\n' "$PULUMI_LANGUAGE_PYTHON_MODULE"; tail -3 "$logf"; } >"$refused"
    log "pulumi-language-python: the module proxy refused $m@$PULUMI_LANGUAGE_PYTHON_MODULE; see $logf"
    return 0
  fi
  (
    cd "$b" || exit 1
    go mod edit -require="$m@$PULUMI_LANGUAGE_PYTHON_MODULE" \
      -require="github.com/pulumi/pulumi/pkg/v3@v$PULUMI_VERSION" -require="github.com/pulumi/pulumi/sdk/v3@$PULUMI_SDK_MODULE" \
      -replace=github.com/atotto/clipboard=github.com/tgummerer/clipboard@v0.0.0-20241001131231-d02d263e614e || exit 1
    heavy go build -trimpath -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
      -o "$out/pulumi-language-python" "$m" || exit 1
  ) >>"$logf" 2>&1 || die "pulumi-language-python: build failed; see $logf"
  rm -f "$refused"
}

build_provider() {
  local out b logf m=github.com/pulumi/pulumi-kubernetes/provider/v4
  out="$(provider_dir)/bin"
  if [[ -x "$out/pulumi-resource-kubernetes" ]]; then return 0; fi
  logf="$(logfile build-pulumi-kubernetes)"
  log "pulumi-resource-kubernetes $PULUMI_KUBERNETES_PROVIDER_VERSION: building (log $logf)"; local t0=$SECONDS
  b="$(wrapper_module pulumi-kubernetes)"
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  (
    cd "$b" || exit 1
    go mod edit -require="$m@$PULUMI_KUBERNETES_PROVIDER_MODULE" || exit 1
    go mod download "$m" || exit 1
    src="$(go list -m -f '{{.Dir}}' "$m")/cmd/pulumi-resource-kubernetes"
    cp "$LAB_DIR/pulumi/kubernetes/main.go" . || exit 1
    # What the upstream `go generate` step writes: the schema with its version, the mapping compacted.
    jq -c --arg v "$PULUMI_KUBERNETES_PROVIDER_VERSION" '.version = $v' "$src/schema.json" >schema-embed.json || exit 1
    jq -c . "$src/terraform-mapping.json" >terraform-mapping-embed.json || exit 1
    # The provider's go.mod points its sdk at a local folder; the wrapper takes the tagged sdk.
    go mod edit -require="github.com/pulumi/pulumi-kubernetes/sdk/v4@v$PULUMI_KUBERNETES_VERSION" || exit 1
    heavy go build -trimpath -ldflags "-s -w -X $m/pkg/version.Version=$PULUMI_KUBERNETES_PROVIDER_VERSION" \
      -o "$out.tmp/pulumi-resource-kubernetes" . || exit 1
  ) >>"$logf" 2>&1 || die "pulumi-resource-kubernetes: build failed; see $logf"
  mkdir -p "$out"; mv "$out.tmp"/* "$out"/; rmdir "$out.tmp"
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
  build) component_lock 30-pulumi; go_env; export GOSUMDB="${GOSUMDB:-off}"; build_cli; build_language_python; build_provider ;;
  up) up ;;
  down) rm -rf "$(bin_dir)" "$LAB_STATE/env.d/30-pulumi.env" ;;
  status) status ;;
  *) die "usage: $0 build|up|down|status" ;;
esac
