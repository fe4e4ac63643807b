#!/usr/bin/env bash
# Build the stand-in images of the release manifest into one OCI layout (blobs stored once).
# Usage: build-images.sh OUT_LAYOUT WORK_DIR < plan   (plan: name<TAB>tag<TAB>component<TAB>MiB)
#
# No base image can be pulled here, so every image starts FROM scratch with Debian's static
# busybox. Layers: a shared busybox base, a generated "runtime" layer shared by the images of one
# component (random bytes, so compression cannot shrink it), and a small layer of the image's own.
set -euo pipefail
out="$1" work="$2"
rm -rf "$work"; mkdir -p "$work/store" "$work/run" "$work/trees"
B=(buildah --root "$work/store" --runroot "$work/run" --storage-driver vfs)
trap '"${B[@]}" rm --all >/dev/null 2>&1 || true' EXIT

# tree_tar DIR TAR: a tar with fixed owners and times, so equal inputs give equal layers.
tree_tar() { tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf "$2" .; }

# commit CONTAINER IMAGE: commit without a wall-clock timestamp in the config.
commit() { "${B[@]}" commit --quiet --timestamp 0 --rm "$1" "$2" >/dev/null; }

base="$work/trees/base"
mkdir -p "$base/bin" "$base/etc" "$base/tmp" "$base/usr/local/bin"
cp /bin/busybox "$base/bin/busybox"
for app in sh echo cat ls sleep env id httpd nc wget sha256sum date hostname; do ln -s busybox "$base/bin/$app"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\napp:x:1001:1001:app:/:/bin/sh\n' >"$base/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\napp:x:1001:\n' >"$base/etc/group"
chmod 1777 "$base/tmp"
tree_tar "$base" "$work/base.tar"
c="$("${B[@]}" from --pull=never scratch)"
"${B[@]}" add "$c" "$work/base.tar" / >/dev/null
"${B[@]}" config --env PATH=/usr/local/bin:/bin "$c"
commit "$c" localhost/lab-base:latest

declare -A runtime_done=()
# Read the whole plan first: buildah would otherwise eat the rest of it from stdin.
mapfile -t plan
for line in "${plan[@]}"; do
  IFS=$'\t' read -r name tag component mib <<<"$line"
  parent=localhost/lab-base:latest
  if (( mib > 0 )); then
    parent="localhost/lab-runtime-$component:latest"
    if [[ -z "${runtime_done[$component]:-}" ]]; then
      t="$work/trees/runtime-$component"; mkdir -p "$t/opt/$component-runtime"
      # Deterministic, incompressible bytes: a keystream seeded by the component's name.
      # (openssl ends on SIGPIPE when head has enough, hence the `|| true`.)
      { openssl enc -aes-256-ctr -nosalt -pbkdf2 -pass "pass:lab-runtime-$component" -in /dev/zero 2>/dev/null || true; } \
        | head -c "$((mib * 1024 * 1024))" >"$t/opt/$component-runtime/runtime.bin"
      tree_tar "$t" "$work/runtime-$component.tar"; rm -rf "$t"
      c="$("${B[@]}" from --pull=never localhost/lab-base:latest)"
      "${B[@]}" add "$c" "$work/runtime-$component.tar" / >/dev/null
      commit "$c" "$parent"
      rm -f "$work/runtime-$component.tar"
      runtime_done[$component]=1
    fi
  fi
  t="$work/trees/own"; rm -rf "$t"; mkdir -p "$t/etc" "$t/usr/local/bin"
  printf '%s:%s\n' "$name" "$tag" >"$t/etc/lab-stand-in"
  # Runnable: prints what it stands in for, then serves that text over HTTP on 8080 until stopped.
  cat >"$t/usr/local/bin/entrypoint" <<'SH'
#!/bin/sh
echo "lab stand-in for $(cat /etc/lab-stand-in)"
[ "$#" -gt 0 ] && exec "$@"
mkdir -p /tmp/www && cp /etc/lab-stand-in /tmp/www/index.html
exec httpd -f -p 8080 -h /tmp/www
SH
  if [[ "$name" == */pause ]]; then
    # The pause image holds a pod's namespaces as a real node's runtime runs it: its sandbox
    # gets a read-only root, so the stand-in writes nothing, serves nothing (its port would be
    # every container's of the pod) and ends on TERM.
    cat >"$t/usr/local/bin/entrypoint" <<'SH'
#!/bin/sh
echo "lab stand-in for $(cat /etc/lab-stand-in)"
trap 'exit 0' TERM INT
while :; do sleep 86400 & wait $!; done
SH
  fi
  chmod 0755 "$t/usr/local/bin/entrypoint"
  tree_tar "$t" "$work/own.tar"
  c="$("${B[@]}" from --pull=never "$parent")"
  "${B[@]}" add "$c" "$work/own.tar" / >/dev/null
  port=(--port 8080); [[ "$name" == */pause ]] && port=()
  "${B[@]}" config --entrypoint '["/usr/local/bin/entrypoint"]' "${port[@]}" \
    --label "org.opencontainers.image.title=$name" --label "org.opencontainers.image.version=$tag" \
    --label "org.opencontainers.image.description=onprem-installer lab stand-in" "$c"
  commit "$c" localhost/lab-image:current
  "${B[@]}" push --quiet localhost/lab-image:current "oci:$out:$name:$tag" >/dev/null
  "${B[@]}" rmi localhost/lab-image:current >/dev/null
  echo "built $name:$tag"
done
