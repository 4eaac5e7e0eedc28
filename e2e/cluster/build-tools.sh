#!/usr/bin/env bash
# Build (or reuse) the local control plane's binaries from Go modules.
#
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl come from
# k8s.io/kubernetes through a wrapper go.mod that replaces every staging module with
# its published v0.x twin; etcd comes from go.etcd.io/etcd/server/v3 at the version
# Kubernetes itself requires; kwok, kwokctl and helm are `go install`ed.
# The result is cached outside the checkout, keyed by the versions, so a later run on
# the same machine only checks that the files are there.
# Prints the bin directory on stdout as its last line, and one progress line per stage
# (with elapsed seconds) on stderr.
#
# `build-tools.sh --check` builds nothing: it prints the bin directory when every binary
# is there, else says what is missing and exits 1 (the e2e fixtures use it; `make
# control-plane` builds).
#
# SeaweedFS's `weed` (Apache-2.0; the S3-compatible server the Redis backup tests upload
# to) is built too, cached under its own key so that bumping it does not rebuild the
# control plane: `build-tools.sh --seaweedfs` builds (or reuses) only it and prints its
# path; `--check-seaweedfs` prints the path or says it is missing and exits 1.
#
# Prometheus, promtool and Alertmanager (Apache-2.0; the alert rule and dashboard tests) are
# `go install`ed under a third key: `--monitoring` builds (or reuses) them and prints their
# bin directory; `--check-monitoring` prints it or says what is missing and exits 1. Cold:
# about 30 min for Prometheus at nice 19 on 2 busy cores, 5.5 min for Alertmanager; the
# module-built binaries are those of the release (the web UI's assets are not in the
# module zip, the API is).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${SWIFTCLAW_CACHE:-$HOME/.cache/swiftclaw}"
key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
dest="$cache_root/$key"
bin="$dest/bin"
want=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok kwokctl helm)
weed="$cache_root/seaweedfs-${SEAWEEDFS_VERSION}/bin/weed"
monitoring="$cache_root/prometheus-${PROMETHEUS_VERSION}_alertmanager-${ALERTMANAGER_VERSION}/bin"
caller_goflags="${GOFLAGS:-}"
case "${1:-}" in
  "" | --check | --seaweedfs | --check-seaweedfs | --monitoring | --check-monitoring) ;;
  *) echo "usage: $0 [--check | --seaweedfs | --check-seaweedfs | --monitoring | --check-monitoring]" >&2; exit 2 ;;
esac

missing_monitoring() {
  for b in prometheus promtool alertmanager; do [ -x "$monitoring/$b" ] || echo "$b"; done
}
build_monitoring() {  # go install: neither module needs a replace directive
  command -v go >/dev/null || { echo "build-tools: Go is required (https://go.dev/dl)" >&2; exit 1; }
  mkdir -p "$monitoring"
  local t0; t0=$(date +%s)
  echo "build-tools: building Prometheus ${PROMETHEUS_VERSION} and Alertmanager ${ALERTMANAGER_VERSION} into $monitoring (about 7 min cold on 2 cores)" >&2
  # The same GOCACHE and flags as the control plane: packages both import compile once.
  # remove_all_sd: Prometheus's build tag that leaves out its service discoveries (the cloud
  # SDKs and client-go are most of its compile time); the tests scrape static targets.
  (export GOFLAGS="${caller_goflags:+$caller_goflags }-mod=mod" GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$monitoring"
   go install -trimpath -tags remove_all_sd -ldflags "-s -w" \
     "github.com/prometheus/prometheus/cmd/prometheus@${PROMETHEUS_VERSION}" \
     "github.com/prometheus/prometheus/cmd/promtool@${PROMETHEUS_VERSION}" >&2
   echo "build-tools: Prometheus built in $(( $(date +%s) - t0 ))s" >&2
   go install -trimpath -ldflags "-s -w" \
     "github.com/prometheus/alertmanager/cmd/alertmanager@${ALERTMANAGER_VERSION}" >&2)
  [ -z "$(missing_monitoring)" ] || { echo "build-tools: $(missing_monitoring | paste -sd ' ') missing in $monitoring" >&2; exit 1; }
  echo "$(( $(date +%s) - t0 ))" > "$(dirname "$monitoring")/build-seconds"
  echo "build-tools: Prometheus and Alertmanager built in $(( $(date +%s) - t0 ))s" >&2
}

build_seaweedfs() {  # weed through a wrapper module: seaweedfs's own go.mod has a replace directive
  local src; src="$(dirname "$(dirname "$weed")")/src"
  command -v go >/dev/null || { echo "build-tools: Go is required (https://go.dev/dl)" >&2; exit 1; }
  mkdir -p "$src" "$(dirname "$weed")"
  local t0; t0=$(date +%s)
  echo "build-tools: building SeaweedFS ${SEAWEEDFS_VERSION} into $weed (several minutes cold on 2 cores)" >&2
  cat > "$src/go.mod" <<GOMOD
module swiftclaw.dev/seaweedfs-tools

go 1.26.6

require github.com/seaweedfs/seaweedfs ${SEAWEEDFS_VERSION}

// the same replace as seaweedfs's own go.mod (a replace applies only in the main module)
replace github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0

tool github.com/seaweedfs/seaweedfs/weed
GOMOD
  rm -f "$src/go.sum"
  # Keep the caller's GOFLAGS (e.g. -modcacherw, so a temporary module cache can be removed).
  (export GOFLAGS="${caller_goflags:+$caller_goflags }-mod=mod" GOTOOLCHAIN=local CGO_ENABLED=0
   cd "$src" && go mod tidy >&2 \
    && go build -trimpath -ldflags "-s -w" -o "$weed.tmp" github.com/seaweedfs/seaweedfs/weed >&2)
  mv "$weed.tmp" "$weed"
  echo "build-tools: SeaweedFS built in $(( $(date +%s) - t0 ))s" >&2
}
case "${1:-}" in
  --check-monitoring)
    [ -z "$(missing_monitoring)" ] && { echo "$monitoring"; exit 0; }
    echo "build-tools: Prometheus/Alertmanager are not built: missing $(missing_monitoring | paste -sd ' ') in $monitoring; run \`make monitoring\` (or \`$0 --monitoring\`)." >&2
    exit 1 ;;
  --monitoring)
    [ -z "$(missing_monitoring)" ] || build_monitoring
    echo "$monitoring"; exit 0 ;;
  --check-seaweedfs)
    [ -x "$weed" ] && { echo "$weed"; exit 0; }
    echo "build-tools: SeaweedFS is not built: $weed is missing; run \`make control-plane\` (or \`$0 --seaweedfs\`)." >&2
    exit 1 ;;
  --seaweedfs)
    [ -x "$weed" ] || build_seaweedfs
    echo "$weed"; exit 0 ;;
esac

missing() {
  for b in "${want[@]}"; do [ -x "$bin/$b" ] || echo "$b"; done
}
if [ -z "$(missing)" ]; then
  [ "${1:-}" = --check ] || [ -x "$weed" ] || build_seaweedfs
  echo "$bin"
  exit 0
fi
if [ "${1:-}" = --check ]; then
  echo "build-tools: the local control plane is not built: missing $(missing | paste -sd ' ') in $bin." >&2
  echo "build-tools: run \`make control-plane\` first (about 8 minutes cold on 2 cores, then cached)." >&2
  exit 1
fi

command -v go >/dev/null || { echo "build-tools: Go is required (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$bin" "$dest/src"
# Keep the caller's GOFLAGS (e.g. -modcacherw, so a temporary module cache can be removed).
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" GOTOOLCHAIN=local CGO_ENABLED=0
start=$(date +%s)
stage_start=$start
stage() {  # stage N NAME: a stage begins
  stage_start=$(date +%s)
  echo "build-tools: [$1/4] $2 ... (at $(( stage_start - start ))s)" >&2
}
staged() {  # staged N NAME: a stage ended
  local now; now=$(date +%s)
  echo "build-tools: [$1/4] $2 done in $(( now - stage_start ))s (elapsed $(( now - start ))s)" >&2
}
echo "build-tools: building the local control plane into $bin (about 8 minutes cold on 2 cores)" >&2

# --- wrapper module ---------------------------------------------------------------
stage 1 "wrapper module: k8s.io/kubernetes ${K8S_VERSION} + etcd ${ETCD_VERSION}, go mod tidy"
src="$dest/src"
k8s_mod_file="$(cd "$src" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])' || true)"
if [ -z "$k8s_mod_file" ] || [ ! -f "$k8s_mod_file" ]; then
  # go mod download needs a module context on some Go versions
  (cd "$src" && rm -f go.mod go.sum && go mod init swiftclaw.dev/k8s-tools >/dev/null 2>&1)
  k8s_mod_file="$(cd "$src" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
fi
staging_version="v0.${K8S_VERSION#v1.}"
mapfile -t staging < <(grep -E '=> \./staging/' "$k8s_mod_file" | awk '{print $1}')
[ "${#staging[@]}" -gt 0 ] || { echo "build-tools: no staging modules found in $k8s_mod_file" >&2; exit 1; }
echo "build-tools: k8s ${K8S_VERSION}, ${#staging[@]} staging modules at ${staging_version}, etcd ${ETCD_VERSION}" >&2

{
  echo "module swiftclaw.dev/k8s-tools"
  echo
  echo "go 1.26.0"
  echo
  echo "require ("
  echo "	k8s.io/kubernetes ${K8S_VERSION}"
  echo "	go.etcd.io/etcd/server/v3 ${ETCD_VERSION}"
  echo ")"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do echo "	$m => $m ${staging_version}"; done
  echo ")"
  echo
  echo "tool ("
  echo "	k8s.io/kubernetes/cmd/kube-apiserver"
  echo "	k8s.io/kubernetes/cmd/kube-controller-manager"
  echo "	k8s.io/kubernetes/cmd/kube-scheduler"
  echo "	k8s.io/kubernetes/cmd/kubectl"
  echo "	go.etcd.io/etcd/server/v3"
  echo ")"
} > "$src/go.mod"
rm -f "$src/go.sum"
cat > "$src/tools.go" <<'GO'
//go:build tools

package tools
GO
(cd "$src" && go mod tidy >&2)
staged 1 "wrapper module"

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
stage 2 "kube binaries: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (the long one)"
(cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl >&2)
staged 2 "kube binaries"
stage 3 "etcd ${ETCD_VERSION}"
(cd "$src" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3 >&2)
staged 3 "etcd"

# --- kwok, kwokctl, helm --------------------------------------------------------
stage 4 "kwok, kwokctl ${KWOK_VERSION} and helm ${HELM_VERSION}"
GOBIN="$bin" go install -trimpath -ldflags "-s -w" \
  "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" "sigs.k8s.io/kwok/cmd/kwokctl@${KWOK_VERSION}" >&2
GOBIN="$bin" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" >&2
staged 4 "kwok/helm"

[ -z "$(missing)" ] || { echo "build-tools: build finished but $(missing | paste -sd ' ') missing in $bin" >&2; exit 1; }
echo "build-tools: built in $(( $(date +%s) - start ))s into $bin" >&2
echo "$(( $(date +%s) - start ))" > "$dest/build-seconds"
[ -x "$weed" ] || build_seaweedfs
echo "$bin"
