# Fake nodes from lab/kube/topology.txt, sourced by lab/components/10-kube.sh.
# shellcheck shell=bash

LAB_TOPOLOGY="${LAB_TOPOLOGY:-$LAB_DIR/kube/topology.txt}"

# topology_rows: the topology's rows, widened to LAB_NODES with extra CPU nodes.
topology_rows() {
  local want="${LAB_NODES:-0}" rows n i
  [[ "$want" =~ ^[0-9]+$ ]] || die "kube: LAB_NODES must be a number, got '$want'"
  rows="$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$LAB_TOPOLOGY")"
  n="$(wc -l <<<"$rows")"
  (( want == 0 || want >= n )) || die "kube: LAB_NODES=$want is below the topology's $n nodes"
  printf '%s\n' "$rows"
  local cpus=0
  cpus="$(grep -c '^cpu-' <<<"$rows" || true)"
  for ((i = n + 1; i <= want; i++)); do
    cpus=$((cpus + 1))
    awk -v name="cpu-$cpus" '$1 == "cpu-1" { $1 = name; print; exit }' <<<"$rows"
  done
}

# node_ip INDEX: the node's InternalIP, from 10.213.NODE_NET.1 on (each lab cluster its own
# range: 16 for the first, 48 for the second). Only API data: nothing listens there.
node_ip() { printf '10.213.%d.%d\n' $((${NODE_NET:-16} + ($1 - 1) / 250)) $((($1 - 1) % 250 + 1)); }

# render_nodes [EXISTING]: the Nodes as one YAML stream, leaving out those named in EXISTING
# (one name per line): a node already registered keeps what others (the installer) set on it.
render_nodes() {
  local existing="${1:-}" idx=0 name cpu mem product count gmem family
  while read -r name cpu mem product count gmem family; do
    idx=$((idx + 1))
    grep -qxF "$name" <<<"$existing" && continue
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: $name
    type: kwok
EOF
    if ((count > 0)); then
      cat <<EOF
    nvidia.com/gpu.present: "true"
    nvidia.com/gpu.product: $product
    nvidia.com/gpu.count: "$count"
    nvidia.com/gpu.memory: "$gmem"
    nvidia.com/gpu.family: $family
    nvidia.com/gpu.deploy.device-plugin: "true"
    nvidia.com/gpu.deploy.gpu-feature-discovery: "true"
spec:
  taints:
  - key: nvidia.com/gpu
    value: present
    effect: NoSchedule
EOF
    fi
    cat <<EOF
status:
  addresses:
  - type: InternalIP
    address: $(node_ip "$idx")
  - type: Hostname
    address: $name
EOF
    local field
    for field in allocatable capacity; do
      printf '  %s:\n    cpu: "%s"\n    memory: %s\n    ephemeral-storage: 1Ti\n    pods: "110"\n' \
        "$field" "$cpu" "$mem"
      ((count > 0)) && printf '    nvidia.com/gpu: "%s"\n' "$count"
    done
    printf '  nodeInfo:\n    architecture: amd64\n    operatingSystem: linux\n'
  done < <(topology_rows)
}
