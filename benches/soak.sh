#!/usr/bin/env bash
# Soak test (not run by CI): a throwaway PostgreSQL and the release pgmux in transaction mode,
# SOAK_CLIENTS pgbench clients reconnecting for every transaction (-C) for SOAK_SECONDS, while
# pgmux's VmRSS and open file descriptors are sampled every SOAK_INTERVAL seconds into a CSV.
#
#   benches/soak.sh                       # 1000 clients, 600 s
#   SOAK_SECONDS=60 benches/soak.sh       # a quick run
#
# Fails (exit 1) when
#   - RSS at the end exceeds RSS after the warm-up (the sample at SOAK_WARMUP s) by more than
#     SOAK_RSS_BOUND_MIB (64 MiB), or
#   - open fds at the end (pgbench done, clients gone, idle servers closed by
#     server_idle_timeout) exceed the fds before the load by more than SOAK_FD_BOUND (8), or
#   - pgbench itself fails.
# Needs: PostgreSQL server binaries (pg_config --bindir, or PG_BIN), pgbench, psql. As root,
# PostgreSQL runs as the `postgres` user through runuser (initdb refuses root).
set -euo pipefail

SOAK_SECONDS=${SOAK_SECONDS:-600}
CLIENTS=${SOAK_CLIENTS:-1000}
THREADS=${SOAK_THREADS:-2}
POOL=${SOAK_POOL_SIZE:-50}
INTERVAL=${SOAK_INTERVAL:-10}
WARMUP=${SOAK_WARMUP:-60}
RSS_BOUND_MIB=${SOAK_RSS_BOUND_MIB:-64}
FD_BOUND=${SOAK_FD_BOUND:-8}
IDLE_TIMEOUT=10 # server_idle_timeout: pooled server connections close this long after the load

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${PGMUX_BIN:-$ROOT/target/release/pgmux}
PG_BIN=${PG_BIN:-$(pg_config --bindir)}
OUT_DIR=${SOAK_OUT:-$ROOT/target/soak}
mkdir -p "$OUT_DIR"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
CSV=$OUT_DIR/soak-$STAMP.csv

if [ -z "${PGMUX_BIN:-}" ]; then
    echo "soak: cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
fi

WORK=$(mktemp -d /tmp/pgmux-soak.XXXXXX)
chmod 755 "$WORK"
PGDATA=$WORK/data
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

PGMUX_PID=
SAMPLER_PID=
PGBENCH_PID=
PG_STARTED=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for p in $PGBENCH_PID $SAMPLER_PID; do
        kill "$p" 2>/dev/null || true
    done
    if [ -n "$PGMUX_PID" ] && kill -0 "$PGMUX_PID" 2>/dev/null; then
        kill -TERM "$PGMUX_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$PGMUX_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PGMUX_PID" 2>/dev/null || true
    fi
    if [ -n "$PG_STARTED" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ $rc -ne 0 ] && [ -f "$WORK/pgmux.log" ]; then
        echo "soak: last lines of the pgmux log:"
        tail -5 "$WORK/pgmux.log" || true
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# 1000 clients, each with a socket in pgbench and one in pgmux
hard=$(ulimit -Hn)
want=$((CLIENTS * 2 + 1024))
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
    echo "soak: the hard fd limit ($hard) is below $want" >&2
    exit 1
fi
ulimit -n "$want"

# --- PostgreSQL ---
PGPORT=$(free_port)
mkdir -p "$PGDATA" "$WORK/sock"
[ "$(id -u)" -ne 0 ] || chown postgres: "$PGDATA" "$WORK/sock"
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
cat >>"$PGDATA/postgresql.conf" <<EOF
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK/sock'
max_connections = $((POOL + 20))
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$WORK/sock/pg.log" -w start >/dev/null
PG_STARTED=1
PG="$PG_BIN/psql -X -q -h 127.0.0.1 -p $PGPORT -U postgres"
$PG -d postgres -c "CREATE ROLE soak LOGIN" -c "CREATE DATABASE soak OWNER soak"
"$PG_BIN/pgbench" -i -s 1 -q -h 127.0.0.1 -p "$PGPORT" -U soak soak 2>&1 | tail -1

# --- pgmux ---
PORT=$(free_port)
echo '"soak" "soak-password"' >"$WORK/userlist.txt"
cat >"$WORK/pgmux.ini" <<EOF
[databases]
soak = host=127.0.0.1 port=$PGPORT dbname=soak

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PORT
unix_socket_dir =
auth_type = md5
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
max_client_conn = $((CLIENTS + 100))
server_idle_timeout = $IDLE_TIMEOUT
log_connections = 0
log_disconnections = 0
EOF
"$BIN" "$WORK/pgmux.ini" >>"$WORK/pgmux.log" 2>&1 &
PGMUX_PID=$!
export PGPASSWORD=soak-password
for _ in $(seq 100); do
    if $PG_BIN/psql -X -qAt -h 127.0.0.1 -p "$PORT" -U soak -d soak -c 'select 1' >/dev/null 2>&1; then
        break
    fi
    kill -0 "$PGMUX_PID" 2>/dev/null || { echo "soak: pgmux exited" >&2; exit 1; }
    sleep 0.1
done

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$PGMUX_PID/status"; }
fds() { ls "/proc/$PGMUX_PID/fd" | wc -l; }

# idle baseline: the check above opened one server connection; let it close
sleep $((IDLE_TIMEOUT + 3))
START_RSS=$(rss_kib)
START_FDS=$(fds)
echo "elapsed_s,rss_kib,fds" >"$CSV"
T0=$(date +%s)
echo "0,$START_RSS,$START_FDS" >>"$CSV"
(
    while sleep "$INTERVAL"; do
        kill -0 "$PGMUX_PID" 2>/dev/null || break
        echo "$(($(date +%s) - T0)),$(rss_kib),$(fds)" >>"$CSV"
    done
) &
SAMPLER_PID=$!

echo "soak: pgmux pid $PGMUX_PID on port $PORT, PostgreSQL on $PGPORT; $CLIENTS clients (-C) for ${SOAK_SECONDS}s, pool $POOL; samples in $CSV"
set +e
"$PG_BIN/pgbench" -n -C -S -c "$CLIENTS" -j "$THREADS" -T "$SOAK_SECONDS" \
    -h 127.0.0.1 -p "$PORT" -U soak soak >"$WORK/pgbench.out" 2>"$WORK/pgbench.err" &
PGBENCH_PID=$!
wait $PGBENCH_PID
PGBENCH_RC=$?
PGBENCH_PID=
set -e

# clients are gone; idle servers close after server_idle_timeout (checked every few seconds)
sleep $((IDLE_TIMEOUT + 5))
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=
END_RSS=$(rss_kib)
END_FDS=$(fds)
echo "$(($(date +%s) - T0)),$END_RSS,$END_FDS" >>"$CSV"

WARM_RSS=$(awk -F, -v w="$WARMUP" 'NR > 1 && $1 >= w {print $2; exit}' "$CSV")
WARM_RSS=${WARM_RSS:-$START_RSS}
MAX_RSS=$(awk -F, 'NR > 1 && $2 > m {m = $2} END {print m}' "$CSV")
MAX_FDS=$(awk -F, 'NR > 1 && $3 > m {m = $3} END {print m}' "$CSV")
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }

echo
echo "== pgbench (exit $PGBENCH_RC)"
grep -E 'transaction type|scaling|query mode|number of clients|number of threads|duration|number of transactions|number of failed|latency|connection time|tps' "$WORK/pgbench.out" || cat "$WORK/pgbench.out"
if [ -s "$WORK/pgbench.err" ]; then
    echo "-- pgbench stderr ($(wc -l <"$WORK/pgbench.err") lines), first lines:"
    head -5 "$WORK/pgbench.err"
fi
echo
echo "== pgmux (samples every ${INTERVAL}s in $CSV)"
echo "RSS  start $(mib "$START_RSS")  at ${WARMUP}s $(mib "$WARM_RSS")  end $(mib "$END_RSS")  max $(mib "$MAX_RSS")"
echo "fds  start $START_FDS  end $END_FDS  max $MAX_FDS"

fail=0
if [ $((END_RSS - WARM_RSS)) -gt $((RSS_BOUND_MIB * 1024)) ]; then
    echo "FAIL: RSS grew by more than $RSS_BOUND_MIB MiB after the warm-up"
    fail=1
fi
if [ $((END_FDS - START_FDS)) -gt "$FD_BOUND" ]; then
    echo "FAIL: $((END_FDS - START_FDS)) more fds at the end than at the start (bound $FD_BOUND)"
    fail=1
fi
if [ $PGBENCH_RC -ne 0 ]; then
    echo "FAIL: pgbench exited with $PGBENCH_RC"
    fail=1
fi
[ $fail -eq 0 ] && echo "OK: RSS end - ${WARMUP}s = $(mib $((END_RSS - WARM_RSS))) (bound $RSS_BOUND_MIB MiB), fds end - start = $((END_FDS - START_FDS)) (bound $FD_BOUND)"
exit $fail
