#!/usr/bin/env bash
# steady.sh: steady-state A/B of pgmux and PgBouncer at 1000 clients onto 50 servers, without
# logins in the window: where the CPU per transaction goes (the pooler's user and system time,
# pgbench's, PostgreSQL's processes', the whole machine's; task switches), alternating pgmux and
# PgBouncer PAIRS times.
#
#   bash benches/steady.sh [PAIRS]            # default 3 pairs, -M simple
#   MODE=extended SCALE=10 PGMUX=target/release/pgmux bash benches/steady.sh 4
#
# Trust authentication (no SCRAM work at all), pgbench -S -n -j 2 -c 1000 -T 16: the counters are
# read from second 4 (every client connected) to second 14. Needs root (PostgreSQL and PgBouncer run
# as `postgres`), PostgreSQL's server binaries, pgbench, pgbouncer. Loopback only; stops by itself.
set -euo pipefail
PAIRS=${1:-3}
MODE=${MODE:-simple}
SCALE=${SCALE:-1}
if [ -z "${PGMUX:-}" ]; then
  # the shipped build: `cargo bench` leaves another build of pgmux (the dev-dependencies'
  # features) at target/release/pgmux, one the PGO profile does not apply to (benches/load.rs)
  cargo build --release --quiet --bin pgmux
  PGMUX=target/release/pgmux
fi
PGMUX=$(realpath "$PGMUX")
BIN=$(pg_config --bindir)
DIR=$(mktemp -d /tmp/pgmux-steady.XXXXXX)
chmod 777 "$DIR"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT=$(free_port)
POOLPORT=$(free_port)
cleanup() {
  pkill -INT -f "^/usr/sbin/pgbouncer -q $DIR/bench.ini" 2>/dev/null || true
  # pgmux runs in a session of its own: the terminal's ^C does not reach it
  pkill -INT -f "^$PGMUX -q $DIR/bench.ini" 2>/dev/null || true
  su postgres -c "$BIN/pg_ctl -D $DIR/pgdata stop -m fast" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

su postgres -c "$BIN/initdb -D $DIR/pgdata -A trust -U postgres" >/dev/null
{
  echo "max_connections = 300"
  echo "unix_socket_directories = '$DIR'"
} >>"$DIR/pgdata/postgresql.conf"
su postgres -c "$BIN/pg_ctl -D $DIR/pgdata -o '-p $PGPORT' -l $DIR/pg.log start -w" >/dev/null
psql -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "create database bench"
"$BIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U postgres -i -q -s "$SCALE" bench >/dev/null 2>&1
cat >"$DIR/bench.ini" <<EOT
[databases]
bench = host=127.0.0.1 port=$PGPORT dbname=bench user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $POOLPORT
unix_socket_dir =
auth_type = trust
auth_file = $DIR/users.txt
pool_mode = transaction
default_pool_size = 50
max_client_conn = 3000
log_connections = 0
log_disconnections = 0
EOT
echo '"postgres" ""' >"$DIR/users.txt"
chmod 644 "$DIR/bench.ini" "$DIR/users.txt"
ulimit -n 10000

xacts() { psql -h 127.0.0.1 -p "$PGPORT" -U postgres -d bench -Atc "select xact_commit from pg_stat_database where datname='bench'"; }
# this cluster's processes together: the postmaster with its reaped children, and every living
# child (only this cluster's: other clusters on the machine, and children that end between the
# listing and the read, must not count nor stop the script)
cpu_total() { awk '{print $14 + $15}' "/proc/$1/stat"; }
pg_cpu() {
  local pm; pm=$(head -1 "$DIR/pgdata/postmaster.pid")
  {
    awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat"
    for q in $(pgrep -P "$pm"); do cpu_total "$q" 2>/dev/null || true; done
  } | awk '{t += $1} END {print t + 0}'
}
cpu_of() { awk '{print $14, $15}' "/proc/$1/stat"; }
machine() { awk '/^cpu /{c=$2+$3+$4+$7+$8; st=$9} /^ctxt/{x=$2} END {print c, st, x}' /proc/stat; }

one() { # one() pgmux|pgbouncer
  local p
  if [ "$1" = pgbouncer ]; then
    su postgres -c "ulimit -n 10000; /usr/sbin/pgbouncer -q $DIR/bench.ini" >"$DIR/pooler.log" 2>&1 &
  else
    # a session of its own, as PgBouncer's `su` gives it: with autogroup scheduling a session
    # is a scheduling group, and a pooler sharing pgbench's is preempted about twice as often
    setsid "$PGMUX" -q "$DIR/bench.ini" >"$DIR/pooler.log" 2>&1 &
  fi
  for _ in $(seq 1 100); do
    psql -h 127.0.0.1 -p "$POOLPORT" -U postgres -d bench -c "select 1" >/dev/null 2>&1 && break
    sleep 0.1
  done
  # PgBouncer runs under su, pgmux under setsid (which forks when it would lead a process
  # group): the pooler's own pid, once it answers
  if [ "$1" = pgbouncer ]; then p=$(pgrep -f "^/usr/sbin/pgbouncer -q $DIR/bench.ini" | head -1)
  else p=$(pgrep -f "^$PGMUX -q $DIR/bench.ini" | head -1); fi
  "$BIN/pgbench" -h 127.0.0.1 -p "$POOLPORT" -U postgres -S -n -j 2 -c 1000 -T 16 -M "$MODE" bench \
    >"$DIR/pgbench.out" 2>&1 &
  local pb=$!
  sleep 4
  # pgbench's own pid (not `pgrep`, which may find another run's pgbench on this machine)
  local g=$pb
  kill -0 "$g" 2>/dev/null || { echo "pgbench ended early:"; cat "$DIR/pgbench.out"; exit 1; }
  read -r u0 s0 < <(cpu_of "$p"); local g0; g0=$(cpu_total "$g")
  read -r m0 st0 x0 < <(machine); local q0; q0=$(pg_cpu); local a; a=$(xacts)
  sleep 10
  local b; b=$(xacts)
  read -r u1 s1 < <(cpu_of "$p"); local g1; g1=$(cpu_total "$g")
  read -r m1 st1 x1 < <(machine); local q1; q1=$(pg_cpu)
  wait "$pb" || true
  kill -INT "$p"
  while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
  local n=$((b - a))
  # jiffies (1/100 s) per 10k transactions = jiffies / n * 100 seconds
  awk -v name="$1" -v n="$n" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v g=$((g1 - g0)) \
    -v m=$((m1 - m0)) -v st=$((st1 - st0)) -v x=$((x1 - x0)) -v q=$((q1 - q0)) 'BEGIN {
      printf "%-9s %6d TPS  pooler user %.3f  sys %.3f  pgbench %.3f  postgres %.3f  machine %.3f s/10k xact  %.2f switches/xact  steal %d%%\n",
        name, n / 10, u / n * 100, s / n * 100, g / n * 100, q / n * 100, m / n * 100, x / n, st / 20 }'
}

echo "steady state, 1000 clients onto 50 servers, -M $MODE, scale $SCALE, $PAIRS pairs (CPU in s per 10k transactions)"
for _ in $(seq 1 "$PAIRS"); do
  one pgmux
  one pgbouncer
done
