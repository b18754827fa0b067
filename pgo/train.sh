#!/usr/bin/env bash
# Regenerate pgo/pgmux.profdata: build an instrumented pgmux, run pgbench through it against a
# throwaway PostgreSQL (simple, extended and prepared protocol at 50 and 1000 clients, then
# logins), and merge what it recorded. Needs PostgreSQL server binaries, pgbench and rustup's
# llvm-tools component (installed if missing). Takes about 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

bindir=$(pg_config --bindir 2>/dev/null || true)
[ -x "$bindir/initdb" ] || bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
[ -x "$profdata" ] || rustup component add llvm-tools
work=$(mktemp -d /tmp/pgmux-pgo.XXXXXX)
chmod 755 "$work"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pg_port=$(free_port)
mux_port=$(free_port)
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else sh -c "$*"; fi; }

echo "building the instrumented binary"
PGMUX_PGO=off RUSTFLAGS="-Cprofile-generate=$work/build-raw" \
  cargo build --release --locked --target-dir target/pgo-train --bin pgmux

# PostgreSQL's data, socket and log in a directory its user owns (initdb refuses to run as root)
mkdir -p "$work/pg/data" "$work/raw"
if [ "$(id -u)" = 0 ]; then chown -R postgres "$work/pg"; fi
as_pg "$bindir/initdb -D $work/pg/data -A trust -U postgres" >/dev/null
as_pg "$bindir/pg_ctl -D $work/pg/data -o '-p $pg_port -k $work/pg -c max_connections=200' -l $work/pg/log start -w" >/dev/null
cleanup() {
  [ -n "${mux:-}" ] && kill -INT "$mux" 2>/dev/null || true
  as_pg "$bindir/pg_ctl -D $work/pg/data stop -m fast" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"$bindir/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -qc "create database bench"
"$bindir/pgbench" -h 127.0.0.1 -p "$pg_port" -U postgres -i -q bench >/dev/null 2>&1

cat >"$work/pgmux.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$pg_port dbname=bench user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $mux_port
unix_socket_dir =
auth_type = trust
auth_file = $work/users.txt
pool_mode = transaction
default_pool_size = 50
max_client_conn = 3000
admin_users = postgres
INI
echo '"postgres" ""' >"$work/users.txt"
ulimit -n 10000 2>/dev/null || true
LLVM_PROFILE_FILE="$work/raw/pgmux-%p.profraw" target/pgo-train/release/pgmux -q "$work/pgmux.ini" &
mux=$!
for _ in $(seq 1 100); do
  "$bindir/psql" -h 127.0.0.1 -p "$mux_port" -U postgres -d bench -qAtc "select 1" >/dev/null 2>&1 && break
  sleep 0.1
done
bench() { "$bindir/pgbench" -h 127.0.0.1 -p "$mux_port" -U postgres -n -S "$@" bench 2>&1 | grep -E '^tps' || true; }
for m in simple extended prepared; do
  echo "training: $m"
  bench -j 2 -c 1000 -M "$m" -T 8
  bench -j 2 -c 50 -M "$m" -T 3
done
echo "training: logins"
bench -C -c 10 -T 3
kill -INT "$mux"
wait "$mux" || true
mux=
"$profdata" merge -sparse -o pgo/pgmux.profdata "$work"/raw/*.profraw
ls -l pgo/pgmux.profdata
