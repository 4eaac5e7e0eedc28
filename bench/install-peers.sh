#!/usr/bin/env bash
# Install what the benchmark compares against and drives load with, outside .venv:
#   wrk (Debian)                 the load generator
#   LiteLLM proxy (PyPI)         in .venv-litellm, its own venv (its pins differ from ours)
#   Portkey gateway (npm)        in .tmp/portkey
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else sudo apt-get install -y -qq wrk >/dev/null; fi
fi
if [ ! -x .venv-litellm/bin/litellm ]; then
  python3 -m venv .venv-litellm
  .venv-litellm/bin/pip install -q --upgrade pip
  .venv-litellm/bin/pip install -q 'litellm[proxy]==1.105.0'
fi
if [ ! -f .tmp/portkey/node_modules/@portkey-ai/gateway/package.json ]; then
  mkdir -p .tmp/portkey
  (cd .tmp/portkey && npm init -y >/dev/null && npm install --silent --no-audit --no-fund @portkey-ai/gateway@1.15.2)
fi
echo "bench peers: wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), litellm $(.venv-litellm/bin/pip show litellm | awk '/^Version/ {print $2}'), portkey $(node -p "require('./.tmp/portkey/node_modules/@portkey-ai/gateway/package.json').version")"
