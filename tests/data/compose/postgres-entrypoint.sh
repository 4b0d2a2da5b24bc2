#!/bin/sh
# What the official image's entrypoint does, in short: initialise the cluster on first start
# (user, password, database from the environment; password authentication over the network),
# then run the server as the postgres user.
set -e
as_postgres() { setpriv --reuid postgres --regid postgres --init-groups "$@"; }
if [ "$1" = postgres ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:?}" > "$pwfile"
    chown postgres "$pwfile"
    as_postgres initdb -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" --pwfile="$pwfile" \
      -A scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "${POSTGRES_DB:-postgres}" != postgres ]; then
      echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"${POSTGRES_USER:-postgres}\"" \
        | as_postgres postgres --single -D "$PGDATA" postgres >/dev/null
    fi
    echo "initialised $PGDATA"
  fi
  exec setpriv --reuid postgres --regid postgres --init-groups "$@"
fi
exec "$@"
