#!/usr/bin/env bash
# Start or stop the real services on 127.0.0.1: a Prefect server, an MLflow tracking server
# (SQLite + a local artifact folder) and a Prefect worker for the process work pool, with their
# state (databases, artifacts, logs, pids) under $TUNELINE_HOME/services (default ./.tuneline).
#   infra/services.sh up      # then: export the two URLs it prints, and `tuneline deploy`
#   infra/services.sh down
# Settings (environment): PREFECT_PORT (4200), MLFLOW_PORT (5000), TUNELINE_WORK_POOL
# (tuneline-process; empty: no worker).
set -euo pipefail

STATE="${TUNELINE_HOME:-$PWD/.tuneline}"
HOME_DIR="$STATE/services"
PREFECT_PORT="${PREFECT_PORT:-4200}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
WORK_POOL="${TUNELINE_WORK_POOL-tuneline-process}"
PROJECT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$(dirname "$(command -v prefect || echo "$PROJECT_DIR/.venv/bin/prefect")")"
PREFECT_API="http://127.0.0.1:$PREFECT_PORT/api"
MLFLOW_URI="http://127.0.0.1:$MLFLOW_PORT"
mkdir -p "$HOME_DIR"

wait_for() {  # url, name, [pattern the body must hold]
  for _ in $(seq 1 120); do
    if body=$(curl -fsS "$1" 2>/dev/null) && [[ -z "${3:-}" || "$body" == *"$3"* ]]; then
      echo "$2 is up: $1"; return 0
    fi
    pid_file="$HOME_DIR/$2.pid"
    if [ -f "$pid_file" ] && ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
      echo "$2 exited during start-up; see $HOME_DIR/$2.log:" >&2; tail -n 20 "$HOME_DIR/$2.log" >&2; return 1
    fi
    sleep 1
  done
  echo "$2 did not answer at $1 within 120 s; see $HOME_DIR/$2.log" >&2
  return 1
}

start() {  # name, command...: in its own process group, so `down` can stop it with everything it started
  local name=$1; shift
  if [ -f "$HOME_DIR/$name.pid" ] && kill -0 "$(cat "$HOME_DIR/$name.pid")" 2>/dev/null; then
    echo "$name is already running (pid $(cat "$HOME_DIR/$name.pid")); run '$0 down' first" >&2
    return 1
  fi
  # Job control puts it in a process group of its own (`down` signals the group), and keeps SIGINT
  # alive: without it bash starts background commands with SIGINT ignored, and the Prefect worker
  # stops on SIGTERM by sending itself SIGINT.
  set -m
  "$@" >"$HOME_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$HOME_DIR/$name.pid"
  set +m
}

up() {
  # The UI calls the API at PREFECT_UI_API_URL, which otherwise says port 4200 whatever --port is.
  PREFECT_HOME="$HOME_DIR/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_API_URL="$PREFECT_API" \
    start prefect "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT"
  # Job execution workers cost ~1.5 GB and are not used by tuneline.
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    start mlflow "$BIN/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
    --backend-store-uri "sqlite:///$HOME_DIR/mlflow.db" --artifacts-destination "$HOME_DIR/mlflow-artifacts"
  wait_for "$PREFECT_API/health" prefect
  wait_for "$MLFLOW_URI/health" mlflow
  if [ -n "$WORK_POOL" ]; then
    # The worker creates the pool if it is missing. Its flow runs inherit this environment: they
    # track to the MLflow server, keep scratch files under $STATE, and the deployments' pull step
    # makes $TUNELINE_PROJECT_DIR (this checkout) their working directory.
    PREFECT_API_URL="$PREFECT_API" MLFLOW_TRACKING_URI="$MLFLOW_URI" TUNELINE_HOME="$STATE" \
      TUNELINE_PROJECT_DIR="$PROJECT_DIR" PREFECT_HOME="$HOME_DIR/worker" PREFECT_SERVER_ANALYTICS_ENABLED=false \
      PATH="$BIN:$PATH" \
      start worker "$BIN/prefect" worker start --pool "$WORK_POOL" --type process --name "tuneline-$(hostname)-$$"
    # READY once the worker's first heartbeat reached the server.
    wait_for "$PREFECT_API/work_pools/$WORK_POOL" worker '"status":"READY"'
  fi
  echo "export PREFECT_API_URL=$PREFECT_API MLFLOW_TRACKING_URI=$MLFLOW_URI"
}

stop() {  # name: SIGTERM to its process group, SIGKILL after 20 s
  local pid_file="$HOME_DIR/$1.pid" pid
  [ -f "$pid_file" ] || return 0
  pid=$(cat "$pid_file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
  echo "$1 stopped"
}

down() {
  # The worker first: it reports its flow runs' ends to a server that is still there.
  for name in worker prefect mlflow; do stop "$name"; done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
