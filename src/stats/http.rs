//! The metrics listener (`metrics_listen`): GET /metrics, /healthz and /readyz over plain HTTP/1.1.
//!
//! Deliberately minimal: one request per connection, a bounded request head (8 KiB) read under a
//! 5 s timeout, `Connection: close`. Scrapers and kubelet probes need nothing more.

use crate::state::Shared;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const MAX_HEAD: usize = 8 * 1024;

pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), handle(&mut sock, &shared)).await;
        });
    }
}

async fn handle(sock: &mut tokio::net::TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(sock, 431, "text/plain", "request header too large\n").await;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return respond(sock, 405, "text/plain", "only GET\n").await;
    }
    match path {
        "/metrics" => {
            let body = super::metrics::render(shared);
            respond(sock, 200, "text/plain; version=0.0.4; charset=utf-8", &body).await
        }
        "/healthz" => respond(sock, 200, "text/plain", "ok\n").await,
        "/readyz" => match readiness(shared).await {
            Ok(()) => respond(sock, 200, "text/plain", "ready\n").await,
            Err(why) => respond(sock, 503, "text/plain", &format!("{why}\n")).await,
        },
        _ => respond(sock, 404, "text/plain", "not found\n").await,
    }
}

/// Ready: listening, not shutting down, and every configured server address accepts a connection.
pub async fn readiness(shared: &Shared) -> Result<(), String> {
    if !shared.listening.load(Relaxed) {
        return Err("not listening yet".into());
    }
    if shared.shutting_down.load(Relaxed) {
        return Err("shutting down".into());
    }
    let cfg = shared.config();
    let mut targets: Vec<(String, u16)> = Vec::new();
    for d in cfg.databases.values() {
        if d.hosts.is_empty() {
            targets.push((cfg.general.server_unix_dir().to_string(), d.port));
        }
        for h in &d.hosts {
            targets.push((h.clone(), d.port));
        }
    }
    targets.sort();
    targets.dedup();
    for (host, port) in targets {
        let ok = if host.starts_with('/') {
            let path = format!("{host}/.s.PGSQL.{port}");
            tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::UnixStream::connect(path),
            )
            .await
            .is_ok_and(|r| r.is_ok())
        } else {
            tokio::time::timeout(Duration::from_secs(1), async {
                let addrs = shared.dns.resolve(&host, port).await?;
                crate::server::login::connect_any(&addrs).await
            })
            .await
            .is_ok_and(|r| r.is_ok())
        };
        if !ok {
            return Err(format!("server {host}:{port} unreachable"));
        }
    }
    Ok(())
}

async fn respond(
    sock: &mut tokio::net::TcpStream,
    code: u16,
    ctype: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body.as_bytes()).await?;
    sock.shutdown().await
}
