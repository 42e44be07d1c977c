# Services the tests use. Sourced by .ci/run; usable by hand:
#
#   source .ci/services.sh && start_services && .venv/bin/pytest tests/test_scaleout.py; stop_services
#
# start_services starts, on 127.0.0.1 and on free ports, with their data in one temporary folder:
#   * PostgreSQL (Debian's `postgresql`, installed with apt-get only if its binaries are missing), with a
#     role that logs in with a password over TCP and owns the database `optuna`;
#   * an MLflow tracking server (SQLite backend store, artifacts served by the server itself).
# and exports
#   ALOSS_TUNE_TEST_POSTGRES_URL   postgresql+psycopg2://aloss:<password>@127.0.0.1:<port>/optuna
#   ALOSS_TUNE_TEST_MLFLOW_URI     http://127.0.0.1:<port>
# Tests that need a service skip when its variable is unset, so a plain `pytest` works without them.
# start_services is idempotent (a second call while both services answer does nothing); stop_services
# stops both, removes the folder and never fails.

_ALOSS_SERVICES_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

_aloss_log() { echo "services: $*" >&2; }

_aloss_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

_aloss_pg_bin() {
  # The newest installed PostgreSQL server's bin folder, or nothing.
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/initdb" ]; then
    echo "$dir"
  fi
}

# Run a PostgreSQL server command as the `postgres` user when we are root (initdb refuses root).
_aloss_as_pg() {
  if [ "$(id -u)" = "0" ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

_aloss_healthy() {
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/health", timeout=2)' "$1" \
    >/dev/null 2>&1
}

_aloss_services_alive() {
  [ -n "${ALOSS_TUNE_SERVICES_DIR:-}" ] && [ -d "$ALOSS_TUNE_SERVICES_DIR" ] || return 1
  [ -n "${ALOSS_TUNE_PGBIN:-}" ] && [ -n "${ALOSS_TUNE_TEST_MLFLOW_URI:-}" ] || return 1
  _aloss_as_pg "$ALOSS_TUNE_PGBIN/pg_ctl" -D "$ALOSS_TUNE_SERVICES_DIR/pgdata" status >/dev/null 2>&1 || return 1
  _aloss_healthy "$ALOSS_TUNE_TEST_MLFLOW_URI"
}

_aloss_start_postgres() {
  local dir="$1" pgbin port password
  pgbin="$(_aloss_pg_bin)"
  if [ -z "$pgbin" ]; then
    _aloss_log "installing postgresql (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    pgbin="$(_aloss_pg_bin)"
    [ -n "$pgbin" ] || { _aloss_log "PostgreSQL binaries not found after install"; return 1; }
  fi
  export ALOSS_TUNE_PGBIN="$pgbin"
  port="$(_aloss_free_port)"
  password="$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
  mkdir -p "$dir/pg"
  if [ "$(id -u)" = "0" ]; then
    chown postgres "$dir" "$dir/pg"
  fi
  # Local (socket) connections trusted for set-up; TCP connections need the role's password.
  _aloss_as_pg "$pgbin/initdb" -D "$dir/pgdata" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --no-sync >"$dir/pg/initdb.log" 2>&1 || { cat "$dir/pg/initdb.log" >&2; return 1; }
  _aloss_as_pg "$pgbin/pg_ctl" -D "$dir/pgdata" -l "$dir/pg/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null || { cat "$dir/pg/postgres.log" >&2; return 1; }
  _aloss_as_pg "$pgbin/psql" -q -v ON_ERROR_STOP=1 -h "$dir/pg" -p "$port" -U postgres -d postgres \
    -c "CREATE ROLE aloss LOGIN PASSWORD '$password';" -c "CREATE DATABASE optuna OWNER aloss;" >/dev/null \
    || return 1
  export ALOSS_TUNE_TEST_POSTGRES_URL="postgresql+psycopg2://aloss:$password@127.0.0.1:$port/optuna"
}

# Launch the MLflow server (in its own session, so stop_services stops the server and its uvicorn worker
# together); _aloss_wait_mlflow waits until it answers. Launched first: it takes longest to start.
_aloss_launch_mlflow() {
  local dir="$1" bin port
  bin="$_ALOSS_SERVICES_REPO/.venv/bin/mlflow"
  [ -x "$bin" ] || bin="$(command -v mlflow || true)"
  [ -n "$bin" ] || { _aloss_log "no mlflow executable (install the project first)"; return 1; }
  port="$(_aloss_free_port)"
  mkdir -p "$dir/mlflow"
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false python3 -c '
import subprocess, sys
log = open(sys.argv[1], "ab")
proc = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
print(proc.pid)' "$dir/mlflow/server.log" "$bin" server --host 127.0.0.1 --port "$port" --workers 1 \
    --backend-store-uri "sqlite:///$dir/mlflow/mlflow.db" --artifacts-destination "$dir/mlflow/artifacts" \
    >"$dir/mlflow/pid" || return 1
  echo "http://127.0.0.1:$port" >"$dir/mlflow/uri"
}

_aloss_wait_mlflow() {
  local dir="$1" uri i
  uri="$(cat "$dir/mlflow/uri")"
  for i in $(seq 1 240); do
    if _aloss_healthy "$uri"; then
      export ALOSS_TUNE_TEST_MLFLOW_URI="$uri"
      return 0
    fi
    kill -0 "$(cat "$dir/mlflow/pid")" 2>/dev/null || break
    sleep 0.5
  done
  _aloss_log "the MLflow server did not become healthy; its log:"
  tail -n 30 "$dir/mlflow/server.log" >&2
  return 1
}

start_services() {
  if _aloss_services_alive; then
    _aloss_log "already running in $ALOSS_TUNE_SERVICES_DIR"
    return 0
  fi
  stop_services
  local started=$SECONDS dir
  dir="$(mktemp -d "${TMPDIR:-/tmp}/aloss-services.XXXXXX")"
  chmod 755 "$dir"
  export ALOSS_TUNE_SERVICES_DIR="$dir"
  _aloss_launch_mlflow "$dir" || { stop_services; return 1; }
  _aloss_start_postgres "$dir" || { stop_services; return 1; }
  _aloss_wait_mlflow "$dir" || { stop_services; return 1; }
  _aloss_log "PostgreSQL and MLflow up in $((SECONDS - started)) s (data in $dir)"
}

stop_services() {
  local dir="${ALOSS_TUNE_SERVICES_DIR:-}" pid i
  if [ -n "$dir" ] && [ -d "$dir" ]; then
    if [ -f "$dir/mlflow/pid" ]; then
      pid="$(cat "$dir/mlflow/pid" 2>/dev/null || true)"
      if [ -n "$pid" ]; then  # the server's process group: the server and its uvicorn worker
        kill -TERM -- "-$pid" 2>/dev/null || true
        for i in $(seq 1 20); do
          kill -0 -- "-$pid" 2>/dev/null || break
          sleep 0.25
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
      fi
    fi
    if [ -n "${ALOSS_TUNE_PGBIN:-}" ] && [ -f "$dir/pgdata/postmaster.pid" ]; then
      _aloss_as_pg "$ALOSS_TUNE_PGBIN/pg_ctl" -D "$dir/pgdata" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir" 2>/dev/null || true
  fi
  unset ALOSS_TUNE_SERVICES_DIR ALOSS_TUNE_PGBIN ALOSS_TUNE_TEST_POSTGRES_URL ALOSS_TUNE_TEST_MLFLOW_URI \
    2>/dev/null || true
  return 0
}
