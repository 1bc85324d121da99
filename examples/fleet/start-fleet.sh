#!/usr/bin/env bash
# Start the HTTP agents of fleet.yaml in the background with `podium agent serve`.
#
#   examples/fleet/start-fleet.sh      # from anywhere
#
# Writes one line per agent, "PID ID PORT", to fleet.pids beside this script
# (stop-fleet.sh reads it) and each agent's log to logs/ID.log. Waits until
# every agent answers GET /health, and stops them all again if one fails to
# start (a taken port, usually). Set PODIUM to run another podium command
# (default: `podium`, else `python3 -m podium`).
set -euo pipefail
cd "$(dirname "$0")"

PIDS=fleet.pids
if [[ -s $PIDS ]]; then
  echo "the fleet is already running (see $PWD/$PIDS); ./stop-fleet.sh stops it" >&2
  exit 1
fi
if [[ -z ${PODIUM:-} ]]; then
  if command -v podium >/dev/null; then PODIUM=podium; else PODIUM="python3 -m podium"; fi
fi
mkdir -p logs

# id port function max_concurrency (the same limits as fleet.yaml)
AGENTS=(
  "enrich-eu-1 8301 enrich       4"
  "enrich-eu-2 8302 enrich_flaky 4"
  "enrich-us-1 8303 enrich_slow  8"
)

for line in "${AGENTS[@]}"; do
  read -r id port func cap <<<"$line"
  # Run from this folder, so `fleet_agents:FUNC` imports fleet_agents.py.
  $PODIUM agent serve "fleet_agents:$func" --capability enrich --port "$port" \
    --max-concurrency "$cap" --log-level warning >"logs/$id.log" 2>&1 &
  echo "$! $id $port" >>"$PIDS"
done

up() {  # GET /health answers (200 or 503) on this port
  python3 - "$1" <<'PY' 2>/dev/null
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1)
except urllib.error.HTTPError:
    pass
PY
}

while read -r pid id port; do
  for _ in $(seq 200); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$id did not start; its log (logs/$id.log):" >&2
      sed 's/^/    /' "logs/$id.log" >&2
      ./stop-fleet.sh >/dev/null
      exit 1
    fi
    if up "$port"; then break; fi
    sleep 0.1
  done
  if ! up "$port"; then
    echo "$id (pid $pid) is not answering on port $port after 20 s; see logs/$id.log" >&2
    ./stop-fleet.sh >/dev/null
    exit 1
  fi
  printf '%-12s pid %-7s http://127.0.0.1:%s\n' "$id" "$pid" "$port"
done <"$PIDS"
echo "fleet up; PIDs in $PWD/$PIDS; stop it with $(dirname "$0")/stop-fleet.sh"
