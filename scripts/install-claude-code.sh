#!/usr/bin/env bash
# Claude Code, from the npm registry, into <venv>/claude-code: the client of the Messages
# API acceptance test (tests/test_claude_code.py). Without npm nothing is installed and
# that test is skipped, saying so; with npm, a failed install fails `make install`.
set -euo pipefail
VENV=${1:-.venv}
VERSION=2.1.197
DEST="$VENV/claude-code"
if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found: Claude Code is not installed and tests/test_claude_code.py will be skipped"
  exit 0
fi
if [ -x "$DEST/node_modules/.bin/claude" ] && [ "$(cat "$DEST/.version" 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi
mkdir -p "$DEST"
npm_config_update_notifier=false npm install --prefix "$DEST" --no-audit --no-fund --loglevel=error "@anthropic-ai/claude-code@$VERSION"
"$DEST/node_modules/.bin/claude" --version >/dev/null
echo "$VERSION" > "$DEST/.version"
