#!/bin/sh
# Gives Prometheus an operator key for the gateway's /metrics (which takes an operator credential when ADMIN_API_KEY
# is set). Keeps the key already in TOKEN_FILE while the gateway accepts it; otherwise issues a new operator key named
# "prometheus" with the admin key (POST /api/operators/credentials) and writes it to TOKEN_FILE. Revoke it like any
# operator key (DELETE /api/operators/credentials/<keyId>); the next `docker compose up` issues a new one.
set -eu
GATEWAY_URL="${GATEWAY_URL:-http://gateway-ingest:8080}"
TOKEN_FILE="${TOKEN_FILE:-/secrets/metrics-token}"
: "${ADMIN_API_KEY:?set ADMIN_API_KEY}"

if [ -s "$TOKEN_FILE" ] &&
  curl -fsS -o /dev/null -H "Authorization: Bearer $(cat "$TOKEN_FILE")" "$GATEWAY_URL/metrics"; then
  echo "metrics-token: the operator key in $TOKEN_FILE still works; kept"
  exit 0
fi

answer=$(curl -fsS --retry 30 --retry-connrefused --retry-delay 2 -X POST \
  -H "Authorization: Bearer $ADMIN_API_KEY" -H 'Content-Type: application/json' \
  -d '{"name":"prometheus"}' "$GATEWAY_URL/api/operators/credentials")
key=$(printf '%s' "$answer" | sed -n 's/.*"key":"\([^"]*\)".*/\1/p')
if [ -z "$key" ]; then
  echo "metrics-token: the gateway's answer holds no key" >&2
  exit 1
fi
# Readable by Prometheus (another user); the volume is mounted into this job and Prometheus only.
printf '%s' "$key" >"$TOKEN_FILE.new"
chmod 644 "$TOKEN_FILE.new"
mv "$TOKEN_FILE.new" "$TOKEN_FILE"
echo "metrics-token: issued an operator key named prometheus for /metrics"
