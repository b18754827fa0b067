//! Hostile clients: malformed and truncated packets, messages out of order, oversized lengths,
//! slow and silent clients, connection and fd floods, broken SCRAM/md5 exchanges and guessed
//! cancel keys. After each attack pgmux must still serve a normal client, and its memory stays
//! bounded (VmRSS/VmHWM of the pgmux process).

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod floods;
mod framing;
mod slow;

use common::*;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// pgmux's resident memory may never exceed this, whatever the attack.
const MEM_BOUND_KIB: u64 = 200 * 1024;
/// How long a raw client waits for an answer before deciding pgmux hangs.
const HANG: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// process figures

/// (VmRSS, VmHWM) of a process in KiB.
fn mem_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // fields after the command name (which may contain spaces) close with ')'
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

fn assert_mem_bounded(mux: &Pgmux, what: &str) -> (u64, u64) {
    let (rss, hwm) = mem_kib(mux.pid());
    eprintln!("{what}: pgmux VmRSS {rss} KiB, VmHWM {hwm} KiB");
    assert!(
        hwm < MEM_BOUND_KIB,
        "{what}: pgmux VmHWM {hwm} KiB is over {MEM_BOUND_KIB} KiB"
    );
    (rss, hwm)
}

/// A normal tokio-postgres client logs in through pgmux and runs `select 1`.
async fn assert_serving(mux: &Pgmux, what: &str) {
    let url = mux.url("synergyflow", "synergyflow_app", "synergyflow-dev-password");
    let r = tokio::time::timeout(Duration::from_secs(30), async {
        let c = connect(&url).await?;
        c.query_one("select 1", &[])
            .await
            .map(|r| r.get::<_, i32>(0))
    })
    .await;
    match r {
        Ok(Ok(1)) => {}
        other => panic!("{what}: pgmux no longer serves a normal client: {other:?}"),
    }
}

/// Poll `f` every 100 ms until it holds or `secs` pass; whether it held.
async fn wait_until<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// raw protocol

fn raw(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(HANG)).unwrap();
    s.set_write_timeout(Some(HANG)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// What pgmux did next on a raw connection.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// ErrorResponse (severity, SQLSTATE, message).
    Error(String, String, String),
    /// An authentication request: its code and data.
    Auth(u32, Vec<u8>),
    /// Any other message.
    Msg(u8, Vec<u8>),
    /// The connection was closed (EOF or reset).
    Closed,
}

fn fatal(msg: &str) -> Reply {
    Reply::Error("FATAL".into(), "08P01".into(), msg.into())
}

/// Read the next message; a read that times out means pgmux hangs, which fails the test.
fn next(s: &mut TcpStream) -> Reply {
    let mut hdr = [0u8; 5];
    if let Err(e) = s.read_exact(&mut hdr) {
        return match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => panic!("pgmux did not answer: {e}"),
            _ => Reply::Closed,
        };
    }
    let len = u32::from_be_bytes(hdr[1..5].try_into().unwrap()) as usize;
    assert!((4..1 << 24).contains(&len), "bad length from pgmux: {len}");
    let mut body = vec![0u8; len - 4];
    if let Err(e) = s.read_exact(&mut body) {
        panic!("truncated message from pgmux: {e}");
    }
    match hdr[0] {
        b'E' => {
            let (sev, code, m) = error_fields(&body);
            Reply::Error(sev, code, m)
        }
        b'R' => Reply::Auth(
            u32::from_be_bytes(body[..4].try_into().unwrap()),
            body[4..].to_vec(),
        ),
        t => Reply::Msg(t, body),
    }
}

/// The connection ends: an ErrorResponse `want` (if given) and then EOF, or just EOF.
fn expect_end(s: &mut TcpStream, want: Option<Reply>, what: &str) {
    let r = next(s);
    if let Some(w) = want {
        assert_eq!(r, w, "{what}");
        assert_eq!(next(s), Reply::Closed, "{what}: not closed after the error");
    } else {
        assert_eq!(r, Reply::Closed, "{what}");
    }
}

fn write_or_reset(s: &mut TcpStream, b: &[u8]) {
    // pgmux may already have closed (and reset) the socket: that is an acceptable answer
    let _ = s.write_all(b);
}

/// Send a startup packet and read the AuthenticationSASL request.
fn start_sasl(port: u16, user: &str) -> TcpStream {
    let mut s = raw(port);
    s.write_all(&startup_packet(user, "synergyflow")).unwrap();
    match next(&mut s) {
        Reply::Auth(10, mechs) => assert_eq!(mechs, b"SCRAM-SHA-256\0\0"),
        other => panic!("expected AuthenticationSASL, got {other:?}"),
    }
    s
}

fn sasl_initial(mech: &[u8], data: &[u8]) -> Vec<u8> {
    let mut b = mech.to_vec();
    b.push(0);
    b.extend((data.len() as i32).to_be_bytes());
    b.extend_from_slice(data);
    msg(b'p', &b)
}

/// A complete SCRAM exchange; returns the client-first and client-final messages sent.
fn scram_exchange(s: &mut TcpStream, password: &str) -> Result<(Vec<u8>, Vec<u8>), Reply> {
    let mut sc = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let first = sc.message().to_vec();
    s.write_all(&sasl_initial(b"SCRAM-SHA-256", &first))
        .unwrap();
    let server_first = match next(s) {
        Reply::Auth(11, d) => d,
        other => return Err(other),
    };
    sc.update(&server_first).unwrap();
    let fin = sc.message().to_vec();
    s.write_all(&msg(b'p', &fin)).unwrap();
    match next(s) {
        Reply::Auth(12, d) => sc.finish(&d).expect("server signature"),
        other => return Err(other),
    }
    Ok((first, fin))
}

/// After AuthenticationOk: read up to ReadyForQuery, returning the BackendKeyData.
fn welcome(s: &mut TcpStream) -> [u8; 8] {
    assert_eq!(next(s), Reply::Auth(0, vec![]), "AuthenticationOk");
    let mut key = None;
    loop {
        match next(s) {
            Reply::Msg(b'K', k) => key = Some(k[..8].try_into().unwrap()),
            Reply::Msg(b'S', _) => {}
            Reply::Msg(b'Z', _) => return key.expect("BackendKeyData"),
            other => panic!("unexpected during welcome: {other:?}"),
        }
    }
}

/// Raw login as the app user; returns the socket (ready for queries) and its cancel key.
fn raw_login(port: u16) -> (TcpStream, [u8; 8]) {
    let mut s = start_sasl(port, "synergyflow_app");
    scram_exchange(&mut s, "synergyflow-dev-password").expect("login");
    let key = welcome(&mut s);
    (s, key)
}

/// Run a simple query on a raw session; returns the first column of each row, or the error.
fn raw_query(s: &mut TcpStream, sql: &str) -> Result<Vec<String>, Reply> {
    let mut q = sql.as_bytes().to_vec();
    q.push(0);
    s.write_all(&msg(b'Q', &q)).unwrap();
    let mut rows = Vec::new();
    let mut err = None;
    loop {
        match next(s) {
            Reply::Msg(b'D', b) => {
                let n = i32::from_be_bytes(b[2..6].try_into().unwrap());
                rows.push(String::from_utf8_lossy(&b[6..6 + n.max(0) as usize]).into_owned());
            }
            Reply::Msg(b'Z', _) => return err.map_or(Ok(rows), Err),
            e @ Reply::Error(..) => err = Some(e),
            Reply::Closed => return Err(err.unwrap_or(Reply::Closed)),
            _ => {}
        }
    }
}

fn cancel_packet(len: u32, key: &[u8]) -> Vec<u8> {
    let mut p = len.to_be_bytes().to_vec();
    p.extend(80877102u32.to_be_bytes());
    p.extend_from_slice(key);
    p
}

fn users() -> Vec<(&'static str, &'static str)> {
    vec![("synergyflow_app", "synergyflow-dev-password")]
}
