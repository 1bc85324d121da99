#!/usr/bin/env bash
# Stop the agents that start-fleet.sh started, by the PIDs it wrote to fleet.pids.
#
# SIGTERM first (uvicorn finishes the calls in flight), SIGKILL after 10 s.
# A PID is only signalled while it is still a `podium agent serve` process,
# so a recycled PID never hits something else.
set -euo pipefail
cd "$(dirname "$0")"

PIDS=fleet.pids
if [[ ! -f $PIDS ]]; then
  echo "no $PWD/$PIDS: nothing to stop"
  exit 0
fi

ours() {  # the PID is alive and still one of our agent servers
  local args
  args=$(ps -p "$1" -o args= 2>/dev/null) || return 1
  [[ $args == *"agent serve"* ]]
}

stopping=()
while read -r pid id port; do
  if ours "$pid"; then
    kill "$pid"
    stopping+=("$pid")
    echo "stopping $id (pid $pid, port $port)"
  else
    echo "$id (pid $pid) is not running"
  fi
done <"$PIDS"

for pid in "${stopping[@]}"; do
  for _ in $(seq 100); do
    ours "$pid" || break
    sleep 0.1
  done
  if ours "$pid"; then
    echo "pid $pid did not stop in 10 s; sending SIGKILL"
    kill -9 "$pid"
  fi
done
rm -f "$PIDS"
