#!/usr/bin/env bash
# Make sure Redis, PostgreSQL and a Docker engine answer; start throwaway ones on loopback if not.
# Usage: source scripts/services.sh  (exports HANDOFF_TEST_REDIS_URL, HANDOFF_TEST_POSTGRES_URL and
# defines stop_services, which stops only what this script started).
set -u
_svc_dir=${HANDOFF_SERVICES_DIR:-/tmp/handoff-services}
mkdir -p "$_svc_dir"
_started=()

_wait_for() {  # _wait_for <seconds> <command...>
  local n=$(( $1 * 10 )); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

# --- Redis
: "${HANDOFF_TEST_REDIS_PORT:=6390}"
if [ -z "${HANDOFF_TEST_REDIS_URL:-}" ]; then
  export HANDOFF_TEST_REDIS_URL="redis://127.0.0.1:${HANDOFF_TEST_REDIS_PORT}/0"
  if ! redis-cli -p "$HANDOFF_TEST_REDIS_PORT" ping >/dev/null 2>&1; then
    redis-server --port "$HANDOFF_TEST_REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
      --dir "$_svc_dir" --daemonize yes --pidfile "$_svc_dir/redis.pid" --logfile "$_svc_dir/redis.log"
    _wait_for 10 redis-cli -p "$HANDOFF_TEST_REDIS_PORT" ping || { echo "redis did not start"; cat "$_svc_dir/redis.log"; exit 1; }
    _started+=(redis)
  fi
fi

# --- PostgreSQL
: "${HANDOFF_TEST_PG_PORT:=5439}"
if [ -z "${HANDOFF_TEST_POSTGRES_URL:-}" ]; then
  export HANDOFF_TEST_POSTGRES_URL="postgresql://handoff:handoff@127.0.0.1:${HANDOFF_TEST_PG_PORT}/handoff"
  if ! pg_isready -h 127.0.0.1 -p "$HANDOFF_TEST_PG_PORT" -q 2>/dev/null; then
    pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
    pgroot="$_svc_dir/pg"; pgdata="$pgroot/data"
    as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
    if [ ! -s "$pgdata/PG_VERSION" ]; then
      rm -rf "$pgroot"; mkdir -p "$pgroot"
      [ "$(id -u)" -eq 0 ] && chown postgres: "$pgroot"
      echo handoff > "$pgroot/pwfile"; chmod 644 "$pgroot/pwfile"
      as_pg "$pgbin/initdb" -D "$pgdata" -U handoff --pwfile="$pgroot/pwfile" -A md5 -E UTF8 --locale=C >/dev/null
    fi
    as_pg "$pgbin/pg_ctl" -D "$pgdata" -l "$pgroot/pg.log" -w -o "-p $HANDOFF_TEST_PG_PORT -h 127.0.0.1 -k $pgroot -c fsync=off -c max_connections=300" start >/dev/null \
      || { echo "postgres did not start"; cat "$pgroot/pg.log"; exit 1; }
    PGPASSWORD=handoff psql -h 127.0.0.1 -p "$HANDOFF_TEST_PG_PORT" -U handoff -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname='handoff'" | grep -q 1 \
      || PGPASSWORD=handoff psql -h 127.0.0.1 -p "$HANDOFF_TEST_PG_PORT" -U handoff -d postgres -qc "CREATE DATABASE handoff"
    export HANDOFF_TEST_PG_DATA="$pgdata" HANDOFF_TEST_PG_BIN="$pgbin"
    _started+=(postgres)
  fi
fi

# --- Docker
if ! docker info >/dev/null 2>&1; then
  mkdir -p "$_svc_dir/docker-exec"
  nohup dockerd --bridge=none --iptables=false --ip6tables=false --exec-root "$_svc_dir/docker-exec" \
    >"$_svc_dir/dockerd.log" 2>&1 &
  echo $! > "$_svc_dir/dockerd.pid"
  _wait_for 30 docker info || { echo "dockerd did not start"; tail -20 "$_svc_dir/dockerd.log"; exit 1; }
  _started+=(docker)
fi

stop_services() {
  for s in "${_started[@]}"; do
    case $s in
      redis) redis-cli -p "$HANDOFF_TEST_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true ;;
      postgres) as_pg "$HANDOFF_TEST_PG_BIN/pg_ctl" -D "$HANDOFF_TEST_PG_DATA" -m fast stop >/dev/null 2>&1 || true ;;
      docker)  # and wait: a dockerd still shutting down makes the next one refuse to start
        _pid=$(cat "$_svc_dir/dockerd.pid")
        kill "$_pid" 2>/dev/null || true
        for _ in $(seq 200); do kill -0 "$_pid" 2>/dev/null || break; sleep 0.1; done ;;
    esac
  done
}
echo "services: redis=$HANDOFF_TEST_REDIS_URL postgres=$HANDOFF_TEST_POSTGRES_URL docker=$(docker version -f '{{.Server.Version}}' 2>/dev/null) (started: ${_started[*]:-none})"
