#!/usr/bin/env bash
# Quick start, command 1: the flagship Flask example end to end, in simulation.
#   mse-run --simulation  ->  fetch the RA-TLS certificate  ->  curl --cacert  ->  mse-verify
# Everything it writes goes to one temporary directory (and the simulation CA under
# ~/.config/mse/simulation/, created on first use); it stops the enclave before exiting.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

PORT="${PORT:-8443}"
WORK="$(mktemp -d -t mse-demo.XXXXXX)"
RUN_PID=""
cleanup() {
  if [ -n "$RUN_PID" ] && kill -0 "$RUN_PID" 2>/dev/null; then
    kill -TERM "$RUN_PID" && wait "$RUN_PID" || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }

step "Package the Flask example (examples/flask) as the code tar"
tar -C examples/flask -cf "$WORK/app.tar" app.py requirements.txt
tar -tvf "$WORK/app.tar"

step "Start the enclave in simulation: mse-run --simulation ... --port $PORT"
UUID="$(python3 -c 'import uuid; print(uuid.uuid4())')"
EXPIRY="$(( $(date +%s) + 30 * 86400 ))"
mse-run --simulation --size 1G --code "$WORK/app.tar" --host localhost \
  --application app:app --uuid "$UUID" --self-signed "$EXPIRY" \
  --port "$PORT" --workdir "$WORK/enclave" >"$WORK/run.out" 2>"$WORK/run.err" &
RUN_PID=$!
for _ in $(seq 1 600); do
  grep -q "RA-TLS check passed" "$WORK/run.err" 2>/dev/null && break
  if ! kill -0 "$RUN_PID" 2>/dev/null; then cat "$WORK/run.out" "$WORK/run.err"; exit 1; fi
  sleep 0.2
done
cat "$WORK/run.out" "$WORK/run.err"
MRENCLAVE="$(awk '/^MRENCLAVE:/ {print $2}' "$WORK/run.out")"

step "Fetch the server's certificate (openssl s_client) and call the app with curl --cacert"
openssl s_client -connect "localhost:$PORT" -servername localhost </dev/null 2>/dev/null \
  | openssl x509 -outform PEM >"$WORK/cert.pem"
openssl x509 -in "$WORK/cert.pem" -noout -subject -ext subjectAltName -enddate
printf 'response: '
curl --fail --silent --show-error --cacert "$WORK/cert.pem" "https://localhost:$PORT/"
echo

step "Verify the RA-TLS certificate as a client would, pinned to MRENCLAVE $MRENCLAVE"
mse-verify "https://localhost:$PORT" \
  --simulation-ca "${XDG_CONFIG_HOME:-$HOME/.config}/mse/simulation/ca.pem" \
  --mrenclave "$MRENCLAVE"

step "Done: MRENCLAVE $MRENCLAVE (simulated). Stopping the enclave."
