#!/usr/bin/env bash
# Start the local control plane: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler (all built from source by build-tools.sh) and kwok's fake nodes.
# Writes the kubeconfig to $SWIFTCLAW_KUBECONFIG (default <repo>/.tmp/kubeconfig).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
name="${SWIFTCLAW_CLUSTER:-swiftclaw}"
nodes="${SWIFTCLAW_NODES:-3}"
kubeconfig="${SWIFTCLAW_KUBECONFIG:-$repo/.tmp/kubeconfig}"
mkdir -p "$(dirname "$kubeconfig")"

bin="$("$here/build-tools.sh" | tail -n 1)"
export PATH="$bin:$PATH"
export KWOK_WORKDIR="${KWOK_WORKDIR:-$HOME/.kwok}"

if kwokctl get clusters 2>/dev/null | grep -qx "$name"; then
  echo "cluster-up: cluster '$name' exists; recreating it" >&2
  "$here/down.sh"  # and what a demo left running on it
fi

start=$(date +%s)
# Service IPs are only allocated, never dialed (there is no kube-proxy), but keep them
# on loopback too so that no object names an address on the machine's network.
create() {
  timeout 180 kwokctl create cluster \
  --name "$name" \
  --runtime binary \
  --kube-apiserver-binary "$bin/kube-apiserver" \
  --kube-controller-manager-binary "$bin/kube-controller-manager" \
  --kube-scheduler-binary "$bin/kube-scheduler" \
  --kwok-controller-binary "$bin/kwok" \
  --etcd-binary "$bin/etcd" \
  --kubeconfig "$kubeconfig" \
  --config "$here/kwok.yaml" \
  --extra-args "kube-apiserver=service-cluster-ip-range=127.96.0.0/16" \
  --extra-args "kube-apiserver=advertise-address=127.0.0.1" \
  --extra-args "kube-controller-manager=service-cluster-ip-range=127.96.0.0/16" \
  --wait 120s >&2
}
# A create can hang when the ports of a just-stopped cluster are not free yet: retry once.
if ! create; then
  echo "cluster-up: create failed or hung; removing the partial cluster and retrying" >&2
  kwokctl delete cluster --name "$name" >&2 || true
  sleep 3
  create
fi

export KUBECONFIG="$kubeconfig"
# Fake nodes, each with a pod CIDR on loopback: kwok gives pods IPs from it.
for i in $(seq 0 $((nodes - 1))); do
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/role: agent
    type: kwok
spec:
  podCIDR: 127.64.$((i + 1)).0/24
  podCIDRs: [127.64.$((i + 1)).0/24]
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
  nodeInfo: {architecture: amd64, operatingSystem: linux, kubeletVersion: fake}
YAML
done
kubectl wait --for=condition=Ready node --all --timeout=60s >&2
echo "cluster-up: '$name' ready in $(( $(date +%s) - start ))s; KUBECONFIG=$kubeconfig" >&2
echo "$kubeconfig"
