#!/usr/bin/env bash
# make test: everything the suite needs, then lint, types, architecture and the tests on
# SQLite and on a throwaway PostgreSQL cluster (127.0.0.1 only) that is removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"

# PostgreSQL server binaries, from Debian's packages when missing.
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then
  echo "== installing PostgreSQL (Debian packages)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
PGBIN="$(pg_bin)"

# Node.js for the stand-in OAuth platform (tests/support/oidc_platform), from Debian's packages
# when missing; its pinned npm packages whenever package-lock.json is newer than node_modules.
if ! command -v node >/dev/null 2>&1; then
  echo "== installing Node.js (Debian packages)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
# Chromium for the browser tests (Playwright drives /usr/bin/chromium), from Debian's packages.
if [ ! -x /usr/bin/chromium ]; then
  echo "== installing Chromium (Debian packages)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
PLATFORM=tests/support/oidc_platform
if [ ! -d "$PLATFORM/node_modules" ] || [ "$PLATFORM/package-lock.json" -nt "$PLATFORM/node_modules" ]; then
  echo "== npm ci ($PLATFORM)"
  npm ci --prefix "$PLATFORM" --no-audit --no-fund --loglevel=error >/dev/null
  touch "$PLATFORM/node_modules"
fi
# The MCP conformance suite (@modelcontextprotocol/conformance, run against /mcp by
# tests/integration/test_mcp_conformance.py), the same way.
CONFORMANCE=tests/support/mcp_conformance
if [ ! -d "$CONFORMANCE/node_modules" ] || [ "$CONFORMANCE/package-lock.json" -nt "$CONFORMANCE/node_modules" ]; then
  echo "== npm ci ($CONFORMANCE)"
  npm ci --prefix "$CONFORMANCE" --no-audit --no-fund --loglevel=error >/dev/null
  touch "$CONFORMANCE/node_modules"
fi
# axe-core, injected into each console page by the accessibility tests, the same way.
AXE=tests/support/axe
if [ ! -d "$AXE/node_modules" ] || [ "$AXE/package-lock.json" -nt "$AXE/node_modules" ]; then
  echo "== npm ci ($AXE)"
  npm ci --prefix "$AXE" --no-audit --no-fund --loglevel=error >/dev/null
  touch "$AXE/node_modules"
fi

echo "== ruff"
"$BIN/ruff" check src tests bench examples
"$BIN/ruff" format --check src tests bench examples
echo "== mypy"
"$BIN/mypy"
echo "== import contracts"
"$BIN/lint-imports"

# A throwaway cluster. initdb refuses root, so as root it runs as the 'postgres' user
# (created by the Debian package) or 'nobody'.
PGDIR="$(mktemp -d /tmp/valetkey-pg.XXXXXX)"
PGPORT="$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
AS=()
if [ "$(id -u)" -eq 0 ]; then
  PGUSER_OS=postgres; id "$PGUSER_OS" >/dev/null 2>&1 || PGUSER_OS=nobody
  chown "$PGUSER_OS" "$PGDIR"
  AS=(runuser -u "$PGUSER_OS" --)
fi
stop_pg() {
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PGDIR"
}
trap stop_pg EXIT INT TERM
"${AS[@]}" "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U valetkey -E UTF8 >/dev/null
"${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w \
  -o "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
export VALETKEY_TEST_PG_URL="postgresql+asyncpg://valetkey@127.0.0.1:$PGPORT/postgres"
echo "== PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGPORT"

echo "== pytest"
"$BIN/pytest" "$@"
