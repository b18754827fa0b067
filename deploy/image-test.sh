#!/usr/bin/env bash
# Build pgmux's runtime image with buildah and prove it serves: run it with podman (runc, host
# network, lowered ulimits) against a throwaway PostgreSQL, connect with psql through it, stop it
# with SIGTERM and check it exits cleanly. Skips (exit 0) when buildah or podman is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v buildah >/dev/null || ! command -v podman >/dev/null; then
  echo "image-test: buildah/podman not installed, skipping"
  exit 0
fi
export STORAGE_DRIVER=vfs
work=$(mktemp -d /tmp/pgmux-image.XXXXXX)
dev_pid=
dns_pid=
cleanup() {
  [ -n "$dns_pid" ] && kill "$dns_pid" 2>/dev/null
  podman rm -f pgmux-image-test >/dev/null 2>&1 || true
  [ -n "$dev_pid" ] && kill "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

if command -v hadolint >/dev/null; then
  echo "== hadolint"
  hadolint deploy/Dockerfile deploy/Dockerfile.runtime
fi

echo "== static build"
RUSTFLAGS='-C target-feature=+crt-static' cargo build -q --release --target x86_64-unknown-linux-gnu --bin pgmux
bin=target/x86_64-unknown-linux-gnu/release/pgmux
if ldd "$bin" 2>&1 | grep -q '=>'; then
  echo "FATAL: $bin is dynamically linked" >&2
  exit 1
fi

echo "== buildah build (FROM scratch)"
mkdir -p "$work/ctx/rootfs/usr/bin" "$work/ctx/rootfs/etc"
strip -o "$work/ctx/rootfs/usr/bin/pgmux" "$bin"
ln -s pgmux "$work/ctx/rootfs/usr/bin/pgbouncer"
echo 'pgbouncer:x:998:996:pgbouncer:/nonexistent:/sbin/nologin' > "$work/ctx/rootfs/etc/passwd"
echo 'pgbouncer:x:996:' > "$work/ctx/rootfs/etc/group"
buildah build -q --isolation chroot -f deploy/Dockerfile.runtime -t localhost/pgmux:test "$work/ctx" >/dev/null
size=$(podman image inspect --format '{{.Size}}' localhost/pgmux:test)
echo "image size: $((size / 1024)) KiB"

echo "== throwaway PostgreSQL (pgmux dev)"
cargo build -q --release --bin pgmux
./target/release/pgmux dev >"$work/dev.log" 2>&1 &
dev_pid=$!
for _ in $(seq 1 100); do
  grep -q 'PostgreSQL: 127.0.0.1:' "$work/dev.log" && break
  sleep 0.2
done
pg_port=$(sed -n 's/.*PostgreSQL: 127.0.0.1:\([0-9]*\).*/\1/p' "$work/dev.log" | head -1)
[ -n "$pg_port" ] || { cat "$work/dev.log"; echo "FATAL: no PostgreSQL" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# the server is named as in a cluster; only pgmux's own DNS client can resolve it in the image
python3 deploy/fake-dns.py shared-postgres-rw.cnpg-system.svc "$work/dns.port" &
dns_pid=$!
for _ in $(seq 1 50); do [ -s "$work/dns.port" ] && break; sleep 0.1; done
mkdir -p "$work/etc"
echo "nameserver 127.0.0.1:$(cat "$work/dns.port")" >"$work/etc/resolv.conf"
cat >"$work/etc/pgbouncer.ini" <<INI
[databases]
synergyflow = host=shared-postgres-rw.cnpg-system.svc port=$pg_port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = /etc/pgbouncer/userlist.txt
pool_mode = transaction
default_pool_size = 5
server_tls_sslmode = disable
resolv_conf = /etc/pgbouncer/resolv.conf
INI
echo '"synergyflow_app" "synergyflow-dev-password"' >"$work/etc/userlist.txt"
chmod 0755 "$work/etc"; chmod 0644 "$work/etc/"*

echo "== podman run"
podman run -d --name pgmux-image-test --runtime runc --network host --init --read-only \
  --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 \
  -v "$work/etc:/etc/pgbouncer:ro" localhost/pgmux:test >/dev/null
for _ in $(seq 1 50); do
  if PGPASSWORD=synergyflow-dev-password psql -X -At -c 'select 40 + 2' \
      "host=127.0.0.1 port=$port dbname=synergyflow user=synergyflow_app connect_timeout=2" \
      >"$work/out" 2>/dev/null; then
    break
  fi
  sleep 0.2
done
got=$(cat "$work/out" 2>/dev/null || true)
if [ "$got" != "42" ]; then
  podman logs pgmux-image-test || true
  echo "FATAL: psql through the container returned '$got'" >&2
  exit 1
fi
echo "psql through the container (server shared-postgres-rw.cnpg-system.svc): $got"
user=$(podman exec pgmux-image-test /usr/bin/pgbouncer --version 2>/dev/null | head -1 || true)
echo "/usr/bin/pgbouncer --version: $user"

echo "== SIGTERM"
podman stop -t 10 pgmux-image-test >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' pgmux-image-test)
podman logs pgmux-image-test 2>&1 | tail -n 3
if [ "$code" != "0" ]; then
  echo "FATAL: exit code $code after SIGTERM" >&2
  exit 1
fi
echo "image-test: ok (exit code 0 after SIGTERM)"
