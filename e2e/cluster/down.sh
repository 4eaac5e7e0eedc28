#!/usr/bin/env bash
# Stop the local control plane and remove its state; leaves no process behind.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
name="${SWIFTCLAW_CLUSTER:-swiftclaw}"
bin="$("$here/build-tools.sh" --check | tail -n 1)"
export PATH="$bin:$PATH"
export KWOK_WORKDIR="${KWOK_WORKDIR:-$HOME/.kwok}"

alive() {  # running, and not a zombie waiting to be reaped
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$state" ] && [ "$state" != "Z" ]
}

# What `make demo-cluster` and `make loadtest` left running (their supervisor, which stops
# its children: Prometheus, Alertmanager, the simulated providers, the operator, the pods,
# the traffic), by the pids they wrote in the cluster's folder; then anything of theirs
# still there.
demo="$KWOK_WORKDIR/clusters/$name/swiftclaw-demo"
if [ -d "$demo" ]; then
  if [ -f "$demo/supervisor.pid" ]; then
    sup="$(cat "$demo/supervisor.pid")"
    if alive "$sup" && grep -qa swiftclaw_devtools "/proc/$sup/cmdline"; then
      kill -TERM "$sup" 2>/dev/null || true
      for _ in $(seq 1 150); do alive "$sup" || break; sleep 0.2; done
    fi
  fi
  left=()
  for f in "$demo"/*.pid; do
    [ -f "$f" ] && left+=("$(cat "$f")")
  done
  if [ -f "$demo/pods.json" ]; then
    mapfile -t pods < <(tr -d '[] ' < "$demo/pods.json" | tr ',' '\n' | grep -E '^[0-9]+$' || true)
    left+=("${pods[@]}")
  fi
  for p in "${left[@]}"; do
    if alive "$p"; then
      echo "cluster-down: demo pid $p still running; killing it" >&2
      kill -9 "$p" 2>/dev/null || true
    fi
  done
  rm -rf "$demo"
fi

# The components' pids, read before kwokctl removes the cluster's folder.
pids=()
for f in "$KWOK_WORKDIR/clusters/$name/pids/"*.pid; do
  [ -f "$f" ] && pids+=("$(cat "$f")")
done
if kwokctl get clusters 2>/dev/null | grep -qx "$name"; then
  kwokctl delete cluster --name "$name" >&2
fi

for _ in $(seq 1 50); do
  left=()
  for p in "${pids[@]}"; do alive "$p" && left+=("$p"); done
  [ "${#left[@]}" -eq 0 ] && break
  sleep 0.2
done
for p in "${left[@]}"; do
  echo "cluster-down: pid $p still running; killing it" >&2
  kill -9 "$p" 2>/dev/null || true
done
echo "cluster-down: '$name' removed" >&2
