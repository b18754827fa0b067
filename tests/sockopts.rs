//! PgBouncer's socket settings on pgmux's real sockets: `tcp_keepalive` (on by default, the
//! kernel's timings), `tcp_keepidle` / `tcp_keepintvl` / `tcp_keepcnt`, `tcp_user_timeout` and
//! `tcp_socket_buffer` on client and server connections, and RELOAD changing them for new
//! sockets only, read from the pgmux process's own sockets (`pidfd_getfd`); `unix_socket_group`
//! on the unix socket's file.

mod common;

use common::*;
use socket2::{SockRef, Socket};
use std::collections::HashSet;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

/// The options a socket of pgmux carries.
#[derive(Debug, PartialEq)]
struct Opts {
    keepalive: bool,
    idle: Duration,
    interval: Duration,
    retries: u32,
    user_timeout: Option<Duration>,
    sndbuf: usize,
}

/// pgmux's connected TCP sockets as (is a client socket, the client's port or pgmux's local
/// port towards PostgreSQL, options): client sockets have pgmux's listening port as their local
/// port, server sockets PostgreSQL's as their peer.
fn sockets(pid: u32, listen_port: u16, pg_port: u16) -> Vec<(bool, u16, Opts)> {
    // SAFETY: plain system calls; every fd they return is owned by an OwnedFd at once.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let e = e.unwrap();
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        if !link.to_string_lossy().starts_with("socket:") {
            continue;
        }
        let target: i32 = e.file_name().to_string_lossy().parse().unwrap();
        use std::os::fd::AsRawFd;
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
        if fd < 0 {
            // the fd closed between the listing and the call
            continue;
        }
        let sock = Socket::from(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        let (Ok(local), Ok(peer)) = (sock.local_addr(), sock.peer_addr()) else {
            continue; // a listener, a unix socket's unnamed peer, ...
        };
        let (Some(local), Some(peer)) = (local.as_socket(), peer.as_socket()) else {
            continue; // unix sockets
        };
        let client = local.port() == listen_port;
        if !client && peer.port() != pg_port {
            continue;
        }
        let r = SockRef::from(&sock);
        out.push((
            client,
            if client { peer.port() } else { local.port() },
            Opts {
                keepalive: r.keepalive().unwrap(),
                idle: r.tcp_keepalive_time().unwrap(),
                interval: r.tcp_keepalive_interval().unwrap(),
                retries: r.tcp_keepalive_retries().unwrap(),
                user_timeout: r.tcp_user_timeout().unwrap(),
                sndbuf: r.send_buffer_size().unwrap(),
            },
        ));
    }
    out
}

/// The sockets that were not there in `seen`, one client and one server socket; remembers them.
fn new_pair(
    mux: &Pgmux,
    pg_port: u16,
    seen: &mut HashSet<(bool, u16)>,
    what: &str,
) -> (Opts, Opts) {
    let now = sockets(mux.pid(), mux.port, pg_port);
    let mut fresh: Vec<_> = now
        .into_iter()
        .filter(|(c, p, _)| !seen.contains(&(*c, *p)))
        .collect();
    for (c, p, _) in &fresh {
        seen.insert((*c, *p));
    }
    assert_eq!(
        fresh.len(),
        2,
        "{what}: expected one new client and one new server socket: {fresh:?}"
    );
    fresh.sort_by_key(|s| !s.0);
    let server = fresh.pop().unwrap();
    let client = fresh.pop().unwrap();
    assert!(client.0 && !server.0, "{what}: {client:?} {server:?}");
    (client.2, server.2)
}

fn sysctl_secs(name: &str) -> Duration {
    let v = std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).unwrap();
    Duration::from_secs(v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_settings_reach_client_and_server_sockets_and_reload_changes_new_ones() {
    let (pg, seed) = postgres(50);
    let mux = start_with_admin(&pg, &seed, "");
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let adm = connect(&mux.url("pgbouncer", "admin", "admin-pw"))
        .await
        .unwrap();
    let mut seen = HashSet::new();
    for (c, p, _) in sockets(mux.pid(), mux.port, pg.port()) {
        seen.insert((c, p)); // the admin console's socket
    }

    // PgBouncer's defaults: keepalive on with the kernel's timings, no user timeout
    let a = connect(&url).await.unwrap();
    a.batch_execute("begin; select 1").await.unwrap(); // holds its server
    let (client, server) = new_pair(&mux, pg.port(), &mut seen, "defaults");
    for o in [&client, &server] {
        assert!(o.keepalive, "{o:?}");
        assert_eq!(o.idle, sysctl_secs("tcp_keepalive_time"), "{o:?}");
        assert_eq!(o.interval, sysctl_secs("tcp_keepalive_intvl"), "{o:?}");
        assert_eq!(o.user_timeout, None, "{o:?}");
    }
    let default_sndbuf = client.sndbuf;

    // RELOAD with explicit values: sockets opened after it carry them
    let base = std::fs::read_to_string(&mux.ini).unwrap();
    let tuned = format!(
        "{base}tcp_keepidle = 17\ntcp_keepintvl = 5\ntcp_keepcnt = 4\n\
         tcp_user_timeout = 9000\ntcp_socket_buffer = 262144\n"
    );
    std::fs::write(&mux.ini, tuned).unwrap();
    adm.simple_query("RELOAD").await.unwrap();
    let b = connect(&url).await.unwrap();
    b.batch_execute("begin; select 1").await.unwrap(); // a's server is busy: a new one
    let (client, server) = new_pair(&mux, pg.port(), &mut seen, "tuned");
    for o in [&client, &server] {
        assert!(o.keepalive, "{o:?}");
        assert_eq!(o.idle, Duration::from_secs(17), "{o:?}");
        assert_eq!(o.interval, Duration::from_secs(5), "{o:?}");
        assert_eq!(o.retries, 4, "{o:?}");
        assert_eq!(o.user_timeout, Some(Duration::from_millis(9000)), "{o:?}");
        // Linux reports twice what was asked for
        assert!(o.sndbuf >= 262144, "{o:?}");
    }
    assert_ne!(client.sndbuf, default_sndbuf);
    // the sockets from before the RELOAD keep theirs
    let before = sockets(mux.pid(), mux.port, pg.port());
    assert!(
        before
            .iter()
            .filter(|s| s.2.keepalive)
            .any(|s| s.2.idle == sysctl_secs("tcp_keepalive_time")),
        "{before:?}"
    );

    // tcp_keepalive = 0: no keepalive on new sockets
    std::fs::write(&mux.ini, format!("{base}tcp_keepalive = 0\n")).unwrap();
    adm.simple_query("RELOAD").await.unwrap();
    let c = connect(&url).await.unwrap();
    c.batch_execute("begin; select 1").await.unwrap();
    let (client, server) = new_pair(&mux, pg.port(), &mut seen, "keepalive off");
    assert!(
        !client.keepalive && !server.keepalive,
        "{client:?} {server:?}"
    );
    assert_eq!(client.user_timeout, None);

    for x in [&a, &b, &c] {
        x.batch_execute("commit").await.unwrap();
    }
    // no warning that these settings are not implemented
    assert!(
        !mux.log_text().contains("not implemented"),
        "{}",
        mux.log_text()
    );
}

/// The gid of a group, from the group database.
fn gid_of(group: &str) -> u32 {
    let out = std::process::Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    line.split(':').nth(2).unwrap().trim().parse().unwrap()
}

#[test]
fn unix_socket_group_owns_the_socket_and_a_missing_group_stops_pgmux() {
    use std::os::unix::fs::MetadataExt;
    let (pg, seed) = postgres(20);
    // the postgres group exists wherever the test clusters can run (they run as postgres)
    let mux = Pgmux::start(
        &pg,
        "unix_socket_group = postgres",
        &[(&seed.app_user, &seed.app_password)],
    );
    let sock = mux.dir.join(format!(".s.PGSQL.{}", mux.port));
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.gid(), gid_of("postgres"));
    assert_ne!(gid_of("postgres"), 0);
    assert!(
        !mux.log_text().contains("not implemented"),
        "{}",
        mux.log_text()
    );

    // a group that does not exist: pgmux stops before serving, saying which
    let ini = std::fs::read_to_string(&mux.ini).unwrap();
    let bad = mux.dir.join("bad-group.ini");
    let port = free_port();
    std::fs::write(
        &bad,
        ini.replace(
            "unix_socket_group = postgres",
            "unix_socket_group = pgmux_no_such_group",
        )
        .replace(
            &format!("listen_port = {}", mux.port),
            &format!("listen_port = {port}"),
        )
        .replace("logfile = ", "# logfile = "),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgmux"))
        .arg(&bad)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("unix_socket_group: group \"pgmux_no_such_group\" does not exist"),
        "{text}"
    );
}
