#!/usr/bin/env bash
# 11-kube-infer: the lab's second compute cluster, "infer" (inventories/lab-multi.yml): the kube
# component again (10-kube.sh) with control plane, PKI, kubeconfig and fake nodes of its own
# (lab/kube/topology-infer.txt: other GPU models), on the first cluster's ports plus
# LAB_KUBE_INFER_PORT_OFFSET. VERB: build | up | down | status.
set -euo pipefail
LAB_KUBE_CLUSTER=infer exec bash "$(dirname "${BASH_SOURCE[0]}")/10-kube.sh" "$@"
