//! Listening sockets (TCP `listen_addr`/`listen_port`, unix `unix_socket_dir/.s.PGSQL.<port>`) and the accept loops.

use crate::config::General;
use crate::server::stream::Stream;
use crate::state::Shared;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::{TcpListener, TcpSocket, UnixListener};

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("invalid listen_addr \"{0}\"")]
    BadAddr(String),
    #[error("unix_socket_group: group \"{0}\" does not exist")]
    NoGroup(String),
}

/// Bind every configured listener.
pub async fn bind(g: &General) -> Result<Vec<Listener>, ListenError> {
    let mut out = Vec::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let dns = crate::dns::Dns::new(g);
    for a in &g.listen_addr {
        let a = a.trim();
        if a.is_empty() {
            continue;
        }
        if a == "*" {
            addrs.push(SocketAddr::from(([0, 0, 0, 0], g.listen_port)));
            addrs.push(SocketAddr::from(([0u16; 8], g.listen_port)));
            continue;
        }
        let host = a.trim_start_matches('[').trim_end_matches(']');
        let resolved = dns
            .resolve_all(host, g.listen_port)
            .await
            .map_err(|_| ListenError::BadAddr(a.to_string()))?;
        addrs.extend(resolved);
    }
    addrs.dedup();
    for addr in addrs {
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        };
        let bind = |sock: TcpSocket| -> std::io::Result<TcpListener> {
            sock.set_reuseaddr(true)?;
            if g.so_reuseport {
                sock.set_reuseport(true)?;
            }
            if addr.is_ipv6() {
                // keep v6 separate so "*" can bind both families
                set_v6only(&sock)?;
            }
            sock.bind(addr)?;
            sock.listen(g.listen_backlog.max(1))
        };
        match sock.and_then(bind) {
            Ok(l) => out.push(Listener::Tcp(l)),
            // "*" on a host without IPv6 is fine
            Err(e) if addr.is_ipv6() && g.listen_addr.iter().any(|a| a.trim() == "*") => {
                tracing::debug!("skipping {addr}: {e}");
            }
            Err(e) => {
                return Err(ListenError::Bind {
                    addr: addr.to_string(),
                    source: e,
                });
            }
        }
    }
    if !g.unix_socket_dir.is_empty() {
        let path = PathBuf::from(format!("{}/.s.PGSQL.{}", g.unix_socket_dir, g.listen_port));
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).map_err(|e| ListenError::Bind {
            addr: path.display().to_string(),
            source: e,
        })?;
        let _ =
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(g.unix_socket_mode));
        if let Some(group) = g.unix_socket_group.as_deref().filter(|s| !s.is_empty()) {
            let gid = group_id(group).ok_or_else(|| ListenError::NoGroup(group.to_string()))?;
            std::os::unix::fs::chown(&path, None, Some(gid)).map_err(|e| ListenError::Bind {
                addr: path.display().to_string(),
                source: e,
            })?;
        }
        out.push(Listener::Unix(l, path));
    }
    Ok(out)
}

/// The id of a group given by name (or as a number), for unix_socket_group.
fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Some(gid);
    }
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: getgrnam_r writes only into `grp` and `buf` (of the length passed) and sets
        // `found` to null or to `&grp`; both outlive the call.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        let r = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if r == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        return (r == 0 && !found.is_null()).then_some(grp.gr_gid);
    }
}

/// IPV6_V6ONLY so `0.0.0.0` and `::` can both be bound on the same port.
fn set_v6only(sock: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a valid, owned socket fd with a correctly sized int option.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Accept until shutdown starts; each connection gets its own task.
/// During shutdown TCP listeners close; the unix socket stays open for the admin console
/// (other logins there get `server shutting down`), as PgBouncer does.
pub async fn serve(listener: Listener, shared: Arc<Shared>) {
    let tcp = matches!(listener, Listener::Tcp(_));
    // accept errors (EMFILE under a flood) are logged at most once a second, with a count
    let mut last_log: Option<std::time::Instant> = None;
    let mut suppressed = 0u64;
    loop {
        if tcp && shared.shutting_down.load(Ordering::Relaxed) {
            break;
        }
        let accepted = tokio::select! {
            r = accept(&listener, &shared.tcp) => r,
            _ = shared.shutdown.notified(), if tcp => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                crate::shard::Shards::spawn_client(&shared, stream, peer);
            }
            Err(e) => {
                if last_log.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1)) {
                    if suppressed > 0 {
                        tracing::warn!(
                            "accept failed: {e} ({suppressed} more since the last report)"
                        );
                    } else {
                        tracing::warn!("accept failed: {e}");
                    }
                    last_log = Some(std::time::Instant::now());
                    suppressed = 0;
                } else {
                    suppressed += 1;
                }
                // e.g. EMFILE: back off instead of spinning
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

async fn accept(
    l: &Listener,
    tcp: &crate::sockopt::TcpTuning,
) -> std::io::Result<(Stream, String)> {
    match l {
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            let _ = s.set_nodelay(true);
            tcp.apply_or_warn(&s, "client connection");
            let peer = match peer {
                SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
                a => a.to_string(),
            };
            Ok((Stream::Tcp(s), peer))
        }
        Listener::Unix(l, _) => {
            let (s, _) = l.accept().await?;
            let pid = s.peer_cred().ok().and_then(|c| c.pid()).unwrap_or(0);
            Ok((Stream::Unix(s), format!("unix({pid})")))
        }
    }
}
