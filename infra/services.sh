#!/usr/bin/env bash
# Start or stop a real Prefect server and a real MLflow tracking server on 127.0.0.1,
# with their state (SQLite, artifacts, logs, pids) under $TUNELINE_HOME/services.
#   infra/services.sh up      # then: export the two URLs it prints
#   infra/services.sh down
set -euo pipefail

HOME_DIR="${TUNELINE_HOME:-$PWD/.tuneline}/services"
PREFECT_PORT="${PREFECT_PORT:-4200}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
BIN="$(dirname "$(command -v prefect || echo .venv/bin/prefect)")"
mkdir -p "$HOME_DIR"

wait_for() {  # url, name
  for _ in $(seq 1 90); do
    if curl -fsS "$1" >/dev/null 2>&1; then echo "$2 is up: ${1%/*}"; return 0; fi
    sleep 1
  done
  echo "$2 did not answer at $1 within 90 s; see $HOME_DIR/$2.log" >&2
  return 1
}

up() {
  PREFECT_HOME="$HOME_DIR/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false \
    nohup "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT" >"$HOME_DIR/prefect.log" 2>&1 &
  echo $! >"$HOME_DIR/prefect.pid"
  # Job execution workers cost ~1.5 GB and are not used by tuneline.
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false nohup "$BIN/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
    --backend-store-uri "sqlite:///$HOME_DIR/mlflow.db" --artifacts-destination "$HOME_DIR/mlflow-artifacts" \
    >"$HOME_DIR/mlflow.log" 2>&1 &
  echo $! >"$HOME_DIR/mlflow.pid"
  wait_for "http://127.0.0.1:$PREFECT_PORT/api/health" prefect
  wait_for "http://127.0.0.1:$MLFLOW_PORT/health" mlflow
  echo "export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT"
}

down() {
  for name in prefect mlflow; do
    pid_file="$HOME_DIR/$name.pid"
    [ -f "$pid_file" ] || continue
    pid=$(cat "$pid_file")
    # Both servers fork workers: stop the whole process group, then the leader.
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$pid" 2>/dev/null; then
      pkill -KILL -P "$pid" 2>/dev/null || true
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pid_file"
    echo "$name stopped"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
