#!/usr/bin/env bash
# make run: start ValetKey on the embedded SQLite default, run the demo against it, keep serving.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT="${VALETKEY_PORT:-8400}"
export VALETKEY_ISSUER="${VALETKEY_ISSUER:-http://127.0.0.1:${PORT}}"

"$BIN/valetkey" db upgrade
"$BIN/valetkey" serve --port "$PORT" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT INT TERM

for _ in $(seq 1 100); do
  if "$BIN/python" -c "import httpx,sys; sys.exit(httpx.get('$VALETKEY_ISSUER/healthz').status_code != 200)" 2>/dev/null; then
    break
  fi
  kill -0 "$server" 2>/dev/null || { echo "ValetKey did not start" >&2; exit 1; }
  sleep 0.1
done

"$BIN/valetkey" demo
echo
echo "ValetKey is running at $VALETKEY_ISSUER (data in ${VALETKEY_DATA_DIR:-./.valetkey}). Ctrl-C stops it."
if [ -n "${VALETKEY_RUN_ONCE:-}" ]; then exit 0; fi
wait "$server"
