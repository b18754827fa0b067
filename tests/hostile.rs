//! Hostile clients: malformed and truncated packets, messages out of order, oversized lengths,
//! slow and silent clients, connection and fd floods, broken SCRAM/md5 exchanges and guessed
//! cancel keys. After each attack pgmux must still serve a normal client, and its memory stays
//! bounded (VmRSS/VmHWM of the pgmux process).

mod common;

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

// ---------------------------------------------------------------------------------------------
// 1. broken startup

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_broken_startup_packets() {
    let (pg, _seed) = postgres(50);
    let mux = Pgmux::start(&pg, "client_login_timeout = 10", &users());
    let port = mux.port;
    tokio::task::spawn_blocking(move || {
        let bad_header = || Some(fatal("bad packet header"));
        // garbage as the first packet: an HTTP request, 0xff bytes, pseudo-random bytes
        for (what, bytes) in [
            ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
            ("0xff", vec![0xff; 64]),
            (
                "random",
                (0..200u32).map(|i| (i * 7919 % 251) as u8).collect(),
            ),
        ] {
            let mut s = raw(port);
            s.write_all(&bytes).unwrap();
            expect_end(&mut s, bad_header(), what);
        }
        // length fields: 0, 7 (< 8), negative, 2 GiB, just over the 64 KiB startup limit
        for len in [
            0u32,
            7,
            0x8000_0000,
            0xffff_ffff,
            0x7fff_ffff,
            64 * 1024 + 1,
        ] {
            let mut s = raw(port);
            let mut p = len.to_be_bytes().to_vec();
            p.extend(196608u32.to_be_bytes());
            s.write_all(&p).unwrap();
            expect_end(&mut s, bad_header(), &format!("length {len:#x}"));
        }
        // a well-framed packet with a protocol code that is neither v3, v2 nor a request
        for code in [0x1234_5678u32, 0x0004_0000, 0x0001_0000, 0] {
            let mut s = raw(port);
            let mut p = 16u32.to_be_bytes().to_vec();
            p.extend(code.to_be_bytes());
            p.extend(b"user\0x\0\0\0");
            s.write_all(&p[..16]).unwrap();
            expect_end(&mut s, bad_header(), &format!("code {code:#x}"));
        }
        // a v3 packet whose parameters are not NUL-terminated
        let mut s = raw(port);
        let mut p = 20u32.to_be_bytes().to_vec();
        p.extend(196608u32.to_be_bytes());
        p.extend(b"user\0synergy");
        s.write_all(&p).unwrap();
        expect_end(&mut s, Some(fatal("bad packet")), "unterminated parameters");
        // a PasswordMessage before any startup packet (PgBouncer's text)
        let mut s = raw(port);
        s.write_all(&msg(b'p', b"secret\0")).unwrap();
        expect_end(
            &mut s,
            Some(fatal("client password pkt before startup packet")),
            "password first",
        );
        // half a startup packet, then the socket is closed: nothing to answer, nothing leaks
        for _ in 0..20 {
            let mut s = raw(port);
            let p = startup_packet("synergyflow_app", "synergyflow");
            s.write_all(&p[..p.len() / 2]).unwrap();
            drop(s);
        }
        // half a startup packet, then silence: the write side is shut, pgmux closes
        let mut s = raw(port);
        let p = startup_packet("synergyflow_app", "synergyflow");
        s.write_all(&p[..p.len() / 2]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        expect_end(&mut s, None, "half a packet then FIN");

        // a startup packet and the SCRAM exchange split byte by byte with small delays: logs in
        let mut s = raw(port);
        for b in startup_packet("synergyflow_app", "synergyflow") {
            s.write_all(&[b]).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        match next(&mut s) {
            Reply::Auth(10, _) => {}
            other => panic!("byte-by-byte startup: {other:?}"),
        }
        let mut sc = ScramSha256::new(b"synergyflow-dev-password", ChannelBinding::unsupported());
        for b in sasl_initial(b"SCRAM-SHA-256", sc.message()) {
            s.write_all(&[b]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let Reply::Auth(11, sf) = next(&mut s) else {
            panic!("no SASLContinue")
        };
        sc.update(&sf).unwrap();
        for b in msg(b'p', sc.message()) {
            s.write_all(&[b]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let Reply::Auth(12, fin) = next(&mut s) else {
            panic!("no SASLFinal")
        };
        sc.finish(&fin).unwrap();
        welcome(&mut s);
        assert_eq!(raw_query(&mut s, "select 41 + 1").unwrap(), vec!["42"]);
        // and a query split byte by byte too
        for b in msg(b'Q', b"select 'slow'\0") {
            s.write_all(&[b]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut got = Vec::new();
        loop {
            match next(&mut s) {
                Reply::Msg(b'D', d) => got.push(String::from_utf8_lossy(&d[6..]).into_owned()),
                Reply::Msg(b'Z', _) => break,
                Reply::Msg(..) => {}
                other => panic!("byte-by-byte query: {other:?}"),
            }
        }
        assert_eq!(got, vec!["slow"]);
    })
    .await
    .unwrap();
    assert_serving(&mux, "after broken startup packets").await;
    assert_mem_bounded(&mux, "after broken startup packets");
    let log = mux.log_text();
    assert!(log.contains("pooler error: bad packet header"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_before_authentication_completes() {
    let (pg, _seed) = postgres(50);
    let mux = Pgmux::start(&pg, "client_login_timeout = 10", &users());
    let port = mux.port;
    tokio::task::spawn_blocking(move || {
        // every frontend message type (and some unknown letters), well framed
        let kinds: Vec<(u8, Vec<u8>)> = vec![
            (b'Q', b"select 1\0".to_vec()),
            (b'P', b"\0select 1\0\0\0".to_vec()),
            (b'B', b"\0\0\0\0\0\0\0\0".to_vec()),
            (b'E', b"\0\0\0\0\0".to_vec()),
            (b'D', b"S\0".to_vec()),
            (b'C', b"S\0".to_vec()),
            (b'S', vec![]),
            (b'H', vec![]),
            (b'X', vec![]),
            (b'd', b"copy data".to_vec()),
            (b'c', vec![]),
            (b'f', b"oops\0".to_vec()),
            (b'F', vec![0; 10]),
            (b'z', b"??".to_vec()),
            (b'!', vec![]),
            (0x7f, vec![1, 2, 3]),
        ];
        for (tag, body) in &kinds {
            let what = format!("{:?} after the startup packet", *tag as char);
            // right after the startup packet (in the same write, and after the auth request)
            let mut s = raw(port);
            let mut p = startup_packet("synergyflow_app", "synergyflow");
            p.extend(msg(*tag, body));
            s.write_all(&p).unwrap();
            assert!(matches!(next(&mut s), Reply::Auth(10, _)), "{what}");
            expect_end(&mut s, Some(fatal("bad packet")), &what);

            // in the middle of the SASL exchange (after the server-first-message)
            let what = format!("{:?} in the middle of SASL", *tag as char);
            let mut s = start_sasl(port, "synergyflow_app");
            let sc = ScramSha256::new(b"synergyflow-dev-password", ChannelBinding::unsupported());
            s.write_all(&sasl_initial(b"SCRAM-SHA-256", sc.message()))
                .unwrap();
            assert!(matches!(next(&mut s), Reply::Auth(11, _)), "{what}");
            write_or_reset(&mut s, &msg(*tag, body));
            expect_end(&mut s, Some(fatal("bad packet")), &what);
        }
        // a header-only message announcing a large body is refused at once, without waiting for it
        let mut s = start_sasl(port, "synergyflow_app");
        s.write_all(&[b'Q', 0, 0, 0xff, 0]).unwrap();
        let t = Instant::now();
        expect_end(&mut s, Some(fatal("bad packet")), "announced Query");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // the startup packet sent again instead of the SASL response
        let mut s = start_sasl(port, "synergyflow_app");
        s.write_all(&startup_packet("synergyflow_app", "synergyflow"))
            .unwrap();
        let t = Instant::now();
        expect_end(
            &mut s,
            Some(fatal("client re-sent startup pkt")),
            "re-sent startup packet",
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // an SSLRequest or a CancelRequest in the middle of the exchange
        for p in [
            [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f].to_vec(),
            cancel_packet(16, &[0; 8]),
        ] {
            let mut s = start_sasl(port, "synergyflow_app");
            s.write_all(&p).unwrap();
            expect_end(
                &mut s,
                Some(fatal("client re-sent startup pkt")),
                "startup-phase request during SASL",
            );
        }
        // a PasswordMessage longer than any auth message may be
        let mut s = start_sasl(port, "synergyflow_app");
        let mut hdr = vec![b'p'];
        hdr.extend(((1u32 << 20) + 4).to_be_bytes());
        s.write_all(&hdr).unwrap();
        expect_end(
            &mut s,
            Some(fatal("bad packet header")),
            "1 MiB auth message",
        );
    })
    .await
    .unwrap();
    assert_serving(&mux, "after messages before authentication").await;
    assert_mem_bounded(&mux, "after messages before authentication");
}

// ---------------------------------------------------------------------------------------------
// 2. bad lengths after login

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_message_lengths_after_login() {
    let (pg, _seed) = postgres(50);
    let mux = Pgmux::start(&pg, "max_packet_size = 65536", &users());
    let port = mux.port;
    let before = mem_kib(mux.pid()).0;
    tokio::task::spawn_blocking(move || {
        // lengths beyond max_packet_size, up to 4 GiB, on the hot path and on the prepared-statement
        // path (Parse is buffered whole): refused from the header alone, nothing is allocated
        for (tag, len) in [
            (b'Q', 65537u32),
            (b'Q', 0x7fff_ffff),
            (b'Q', 0xffff_ffff),
            (b'P', 0x7fff_ffff),
            (b'B', 0x4000_0000),
            (b'd', 0x8000_0000),
            (b'z', 0x7fff_ffff),
        ] {
            let (mut s, _) = raw_login(port);
            let mut hdr = vec![tag];
            hdr.extend(len.to_be_bytes());
            s.write_all(&hdr).unwrap();
            expect_end(
                &mut s,
                Some(fatal("bad packet header")),
                &format!("{:?} len {len:#x}", tag as char),
            );
        }
        // lengths below 4 (the length counts itself)
        for len in [0u32, 1, 3] {
            let (mut s, _) = raw_login(port);
            let mut p = vec![b'Q'];
            p.extend(len.to_be_bytes());
            p.extend(b"select 1\0");
            s.write_all(&p).unwrap();
            expect_end(
                &mut s,
                Some(fatal("bad packet header")),
                &format!("len {len}"),
            );
        }
        // the same after a valid query in the same write, and inside a transaction
        let (mut s, _) = raw_login(port);
        assert_eq!(raw_query(&mut s, "begin").unwrap(), Vec::<String>::new());
        let mut p = msg(b'Q', b"select 1\0");
        p.extend([b'Q', 0xff, 0xff, 0xff, 0xff]);
        s.write_all(&p).unwrap();
        let mut saw_error = false;
        loop {
            match next(&mut s) {
                Reply::Error(sev, code, m) => {
                    assert_eq!(
                        (sev.as_str(), code.as_str(), m.as_str()),
                        ("FATAL", "08P01", "bad packet header")
                    );
                    saw_error = true;
                }
                Reply::Closed => break,
                Reply::Msg(..) => {}
                other => panic!("{other:?}"),
            }
        }
        assert!(saw_error);
        // a message just under the limit is fine
        let (mut s, _) = raw_login(port);
        let big = format!("select length('{}')", "x".repeat(60_000));
        assert_eq!(raw_query(&mut s, &big).unwrap(), vec!["60000"]);
        // a large message announced, half sent, then the client vanishes
        for _ in 0..10 {
            let (mut s, _) = raw_login(port);
            let mut p = vec![b'Q'];
            p.extend(60_004u32.to_be_bytes());
            p.extend(vec![b'x'; 30_000]);
            s.write_all(&p).unwrap();
        }
    })
    .await
    .unwrap();
    assert_serving(&mux, "after bad lengths").await;
    let (rss, _) = assert_mem_bounded(&mux, "after bad lengths");
    // nothing near a GiB was reserved for the announced lengths
    assert!(
        rss < before + 64 * 1024,
        "RSS grew from {before} KiB to {rss} KiB"
    );
    let backends = backends(&pg, "synergyflow", "synergyflow_app");
    assert!(backends <= 50, "{backends}");
}

// ---------------------------------------------------------------------------------------------
// 3. slow clients

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_stalled_logins_hit_client_login_timeout() {
    let (pg, _seed) = postgres(50);
    let mux = Pgmux::start(&pg, "client_login_timeout = 2", &users());
    let port = mux.port;
    tokio::task::spawn_blocking(move || {
        let timeout = || Some(fatal("client_login_timeout"));
        let t = Instant::now();
        // sends nothing at all
        let mut silent = raw(port);
        // half a startup packet
        let mut half = raw(port);
        let p = startup_packet("synergyflow_app", "synergyflow");
        half.write_all(&p[..10]).unwrap();
        // stops in the middle of SASL
        let mut mid = start_sasl(port, "synergyflow_app");
        let sc = ScramSha256::new(b"synergyflow-dev-password", ChannelBinding::unsupported());
        mid.write_all(&sasl_initial(b"SCRAM-SHA-256", sc.message()))
            .unwrap();
        assert!(matches!(next(&mut mid), Reply::Auth(11, _)));
        // announces a message and sends only part of it
        let mut part = start_sasl(port, "synergyflow_app");
        part.write_all(&[b'p', 0, 0, 0, 100, b'S']).unwrap();
        for (s, what) in [
            (&mut silent, "silent"),
            (&mut half, "half a startup packet"),
            (&mut mid, "stalled SASL"),
            (&mut part, "partial message"),
        ] {
            expect_end(s, timeout(), what);
            let el = t.elapsed();
            assert!(
                el >= Duration::from_millis(1500) && el < Duration::from_secs(8),
                "{what}: closed after {el:?}"
            );
        }
    })
    .await
    .unwrap();
    assert_serving(&mux, "after login timeouts").await;
    assert_mem_bounded(&mux, "after login timeouts");
    assert!(mux.log_text().contains("client_login_timeout"));
}

/// The pool's (cl_active, cl_waiting, sv_active, sv_idle) for synergyflow/synergyflow_app.
async fn pool_counts(admin: &tokio_postgres::Client) -> (i64, i64, i64, i64) {
    let rows = rows_of(&admin.simple_query("SHOW POOLS").await.unwrap());
    let r = rows
        .iter()
        .find(|r| {
            r[0].as_deref() == Some("synergyflow") && r[1].as_deref() == Some("synergyflow_app")
        })
        .expect("pool row");
    let n = |i: usize| r[i].as_deref().unwrap().parse::<i64>().unwrap();
    (n(2), n(3), n(6), n(9))
}

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

/// A client that asks for ~200 MB of rows and never reads them.
fn stalled_reader(port: u16) -> TcpStream {
    let (mut s, _) = raw_login(port);
    let mut q = b"select repeat('x', 1000000) from generate_series(1,200)".to_vec();
    q.push(0);
    s.write_all(&msg(b'Q', &q)).unwrap();
    s
}

/// Is some backend of the app user blocked writing to pgmux (backpressure reached PostgreSQL)?
fn backend_blocked_on_write(pg: &pgmux::dev::TempPostgres) -> bool {
    pg.psql(
        "postgres",
        "select count(*) from pg_stat_activity where usename = 'synergyflow_app' \
         and state = 'active' and wait_event = 'ClientWrite'",
    )
    .unwrap()
    .trim()
        != "0"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_keeps_memory_bounded_and_releases_its_server() {
    let (pg, seed) = postgres(50);
    let mux = start_with_admin(&pg, &seed, "default_pool_size = 2\nquery_wait_timeout = 30");
    let admin = connect(&mux.url("pgbouncer", "admin", "admin-pw"))
        .await
        .unwrap();
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let other = connect(&url).await.unwrap();
    other.simple_query("select 1").await.unwrap();
    let (rss0, _) = mem_kib(mux.pid());

    let port = mux.port;
    let a = tokio::task::spawn_blocking(move || stalled_reader(port))
        .await
        .unwrap();
    // PostgreSQL ends up blocked writing: pgmux stopped reading because its buffers are full
    assert!(
        wait_until(30, || async { backend_blocked_on_write(&pg) }).await,
        "the backend never blocked on ClientWrite"
    );
    // memory during the stall, sampled for a while: bounded buffers, not the 200 MB result
    let mut peak = 0;
    for _ in 0..10 {
        let (rss, _) = mem_kib(mux.pid());
        peak = peak.max(rss);
        // the other client keeps working on the pool's second server meanwhile
        let r = other.query_one("select 2", &[]).await.unwrap();
        assert_eq!(r.get::<_, i32>(0), 2);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, hwm) = assert_mem_bounded(&mux, "during the stall");
    eprintln!("slow reader: RSS before {rss0} KiB, peak during stall {peak} KiB, HWM {hwm} KiB");
    assert!(
        peak < rss0 + 64 * 1024,
        "RSS grew from {rss0} to {peak} KiB"
    );
    // (a Row keeps its statement: the driver's Close + Sync go out when the last one drops)
    assert!(
        wait_until(10, || async { pool_counts(&admin).await.2 == 1 }).await,
        "the stalled client does not hold exactly one server: {:?}",
        pool_counts(&admin).await
    );

    // a second stalled reader takes the other server: the pool is exhausted, a new query waits
    let b = tokio::task::spawn_blocking(move || stalled_reader(port))
        .await
        .unwrap();
    assert!(wait_until(30, || async { pool_counts(&admin).await.2 == 2 }).await);
    let waiter = tokio::spawn({
        let url = url.clone();
        async move {
            let c = connect(&url).await.unwrap();
            c.query_one("select 3", &[]).await.unwrap().get::<_, i32>(0)
        }
    });
    assert!(
        wait_until(10, || async { pool_counts(&admin).await.1 == 1 }).await,
        "the third client is not waiting"
    );
    // the stalled readers disconnect: their servers are released (closed mid-result) and the
    // waiting client gets one
    drop(a);
    drop(b);
    let got = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the waiting client was never served")
        .unwrap();
    assert_eq!(got, 3);
    assert!(
        wait_until(10, || async {
            let (_, w, act, _) = pool_counts(&admin).await;
            w == 0 && act == 0
        })
        .await
    );
    assert!(wait_until(10, || async { !backend_blocked_on_write(&pg) }).await);
    assert_serving(&mux, "after the stalled readers left").await;
    assert_mem_bounded(&mux, "after the stalled readers left");
    // both servers were closed mid-result, not returned to the pool
    assert!(
        wait_until(10, || async {
            mux.log_text()
                .matches("closing because: client disconnected with query in progress")
                .count()
                == 2
        })
        .await,
        "{}",
        mux.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_frees_the_server_of_a_stalled_reader() {
    let (pg, seed) = postgres(50);
    let mux = start_with_admin(&pg, &seed, "default_pool_size = 1\nquery_timeout = 2");
    let admin = connect(&mux.url("pgbouncer", "admin", "admin-pw"))
        .await
        .unwrap();
    let port = mux.port;
    let t = Instant::now();
    let a = tokio::task::spawn_blocking(move || stalled_reader(port))
        .await
        .unwrap();
    assert!(wait_until(30, || async { backend_blocked_on_write(&pg) }).await);
    // query_timeout ends the stalled query: the only server is closed and the next client is served
    assert!(
        wait_until(20, || async { pool_counts(&admin).await.2 == 0 }).await,
        "the stalled client's server was not released"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_serving(&mux, "after query_timeout").await;
    assert_mem_bounded(&mux, "after query_timeout");
    assert!(mux.log_text().contains("closing because: query timeout"));
    drop(a);
}

// ---------------------------------------------------------------------------------------------
// 4. floods

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_past_max_client_conn() {
    let (pg, seed) = postgres(50);
    let mux = Pgmux::start(&pg, "max_client_conn = 50", &users());
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let kept = connect(&url).await.unwrap();
    kept.simple_query("select 1").await.unwrap();
    let port = mux.port;
    let (held, refused, other) = tokio::task::spawn_blocking(move || {
        // 49 more logins stop in the middle of SASL: with `kept` that is max_client_conn
        let held: Vec<TcpStream> = (0..49)
            .map(|_| start_sasl(port, "synergyflow_app"))
            .collect();
        // 200 more: every one is refused with PgBouncer's text, concurrently
        let refused: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..50)
                        .map(|_| {
                            let mut s = raw(port);
                            s.write_all(&startup_packet("synergyflow_app", "synergyflow"))
                                .unwrap();
                            let r = next(&mut s);
                            (r, next(&mut s))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>();
        let other = refused.iter().filter(|(r, end)| {
            *r != fatal("no more connections allowed (max_client_conn)") || *end != Reply::Closed
        });
        (held, refused.len(), other.count())
    })
    .await
    .unwrap();
    assert_eq!((refused, other), (200, 0));
    // the logged-in client kept working throughout
    assert_eq!(
        kept.query_one("select 5", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        5
    );
    // once the held logins go, new clients get in
    drop(held);
    assert!(
        wait_until(10, || async {
            match connect(&url).await {
                Ok(c) => c.simple_query("select 1").await.is_ok(),
                Err(_) => false,
            }
        })
        .await,
        "no client got in after the flood"
    );
    assert_serving(&mux, "after the max_client_conn flood").await;
    assert_mem_bounded(&mux, "after the max_client_conn flood");
}

/// Lower both open-files limits of a running process.
fn set_nofile(pid: u32, n: u64) {
    let rl = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: prlimit on a child process with a valid rlimit and no old-limit output.
    let r = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &rl,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fd_exhaustion_is_survived_without_spinning() {
    let (pg, seed) = postgres(50);
    let mux = Pgmux::start(&pg, "listen_backlog = 512", &users());
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    // a client logged in before the flood, with its server already in the pool
    let kept = connect(&url).await.unwrap();
    kept.simple_query("select 1").await.unwrap();
    // pgmux raises its soft limit to the hard one at start: lower both now
    set_nofile(mux.pid(), 128);
    let base = open_fds(mux.pid());
    assert!(base < 100, "{base} fds open already");

    // more connections than fds: pgmux accepts until EMFILE, the rest wait in the (large) backlog
    let port = mux.port;
    let mut flood = Vec::new();
    for _ in 0..250 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            flood.push(s);
        }
    }
    eprintln!("fd flood: {} connections made", flood.len());
    assert!(
        flood.len() > 128,
        "only {} connections got through",
        flood.len()
    );
    assert!(
        wait_until(10, || async { mux.log_text().contains("accept failed") }).await,
        "pgmux never ran out of fds"
    );
    let fds = open_fds(mux.pid());
    assert!((100..=130).contains(&fds), "{fds} fds open");
    // while the flood is held open: no busy loop on the failing accept
    let c0 = cpu_secs(mux.pid());
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cpu = (cpu_secs(mux.pid()) - c0) / t0.elapsed().as_secs_f64();
    eprintln!(
        "fd flood: {} connections held, pgmux has {fds} fds, CPU {:.1}% of a core",
        flood.len(),
        cpu * 100.0
    );
    assert!(cpu < 0.25, "pgmux used {:.0}% of a core", cpu * 100.0);
    // the logged-in client still works (its server needs no new fd)
    assert_eq!(
        kept.query_one("select 6", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        6
    );
    // the flood goes away: new clients are served again
    drop(flood);
    assert!(
        wait_until(30, || async {
            match tokio::time::timeout(Duration::from_secs(5), connect(&url)).await {
                Ok(Ok(c)) => c.simple_query("select 1").await.is_ok(),
                _ => false,
            }
        })
        .await,
        "pgmux did not recover after the fd flood"
    );
    assert_serving(&mux, "after the fd flood").await;
    assert_mem_bounded(&mux, "after the fd flood");
    assert!(
        wait_until(10, || async { open_fds(mux.pid()) < base + 10 }).await,
        "fds leaked: {} open, {base} before",
        open_fds(mux.pid())
    );
}

// ---------------------------------------------------------------------------------------------
// 5. broken SCRAM and md5 exchanges

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_exchanges_wrong_truncated_or_replayed() {
    let (pg, _seed) = postgres(50);
    let mux = Pgmux::start(&pg, "client_login_timeout = 10", &users());
    let port = mux.port;
    tokio::task::spawn_blocking(move || {
        let failed = || Some(fatal("SASL authentication failed"));
        let invalid_mech = || {
            Some(fatal(
                "client selected an invalid SASL authentication mechanism",
            ))
        };
        let pw = "synergyflow-dev-password";
        // mechanisms that were not offered
        for mech in [
            &b""[..],
            b"SCRAM-SHA-1",
            b"scram-sha-256",
            b"PLAIN",
            b"SCRAM-SHA-256 ",
        ] {
            let mut s = start_sasl(port, "synergyflow_app");
            s.write_all(&sasl_initial(mech, b"n,,n=,r=abcdef")).unwrap();
            expect_end(&mut s, invalid_mech(), &String::from_utf8_lossy(mech));
        }
        // truncated SASLInitialResponse packets
        for (what, body) in [
            ("no NUL after the mechanism", b"SCRAM-SHA-256".to_vec()),
            ("no data length", b"SCRAM-SHA-256\0".to_vec()),
            ("half a data length", b"SCRAM-SHA-256\0\0\0".to_vec()),
            ("data shorter than its length", {
                let mut b = b"SCRAM-SHA-256\0".to_vec();
                b.extend(100i32.to_be_bytes());
                b.extend(b"n,,n=,r=abc");
                b
            }),
            ("negative data length", {
                let mut b = b"SCRAM-SHA-256\0".to_vec();
                b.extend((-5i32).to_be_bytes());
                b.extend(b"n,,n=,r=abc");
                b
            }),
        ] {
            let mut s = start_sasl(port, "synergyflow_app");
            s.write_all(&msg(b'p', &body)).unwrap();
            expect_end(&mut s, Some(fatal("bad packet")), what);
        }
        // truncated or garbage client-first-messages
        for first in [
            &b""[..],
            b"n",
            b"n,",
            b"n,,",
            b"n,,n=",
            b"n,,n=,r=",
            b"n,,n=,r",
            b"y",
            b"\xff\xfe\x00\x01",
        ] {
            let mut s = start_sasl(port, "synergyflow_app");
            s.write_all(&sasl_initial(b"SCRAM-SHA-256", first)).unwrap();
            expect_end(&mut s, failed(), &format!("client-first {first:?}"));
        }
        // a well-formed exchange with a wrong password: a wrong proof
        let mut s = start_sasl(port, "synergyflow_app");
        let e = scram_exchange(&mut s, "not-the-password").unwrap_err();
        assert_eq!(Some(e), failed());
        assert_eq!(next(&mut s), Reply::Closed);

        // a successful session, recorded
        let mut s = start_sasl(port, "synergyflow_app");
        let (first, fin) = scram_exchange(&mut s, pw).unwrap();
        welcome(&mut s);
        drop(s);
        // its client-final replayed in a new session with the same client-first: the server
        // nonce differs, so the replay is refused
        let mut s = start_sasl(port, "synergyflow_app");
        s.write_all(&sasl_initial(b"SCRAM-SHA-256", &first))
            .unwrap();
        let Reply::Auth(11, sf) = next(&mut s) else {
            panic!("no server-first")
        };
        s.write_all(&msg(b'p', &fin)).unwrap();
        expect_end(&mut s, failed(), "replayed client-final");
        // the replay with its nonce rewritten to the new one: the proof no longer matches
        let new_nonce = String::from_utf8_lossy(&sf)
            .split(',')
            .next()
            .unwrap()
            .to_string();
        let fin_s = String::from_utf8_lossy(&fin).into_owned();
        let proof = fin_s.rsplit_once(",p=").unwrap().1;
        let mut s = start_sasl(port, "synergyflow_app");
        s.write_all(&sasl_initial(b"SCRAM-SHA-256", &first))
            .unwrap();
        let Reply::Auth(11, sf2) = next(&mut s) else {
            panic!("no server-first")
        };
        let nonce2 = String::from_utf8_lossy(&sf2)
            .split(',')
            .next()
            .unwrap()
            .to_string();
        assert_ne!(nonce2, new_nonce, "server nonces repeat");
        s.write_all(&msg(b'p', format!("c=biws,{nonce2},p={proof}").as_bytes()))
            .unwrap();
        expect_end(&mut s, failed(), "replayed proof with a fresh nonce");
        // a client-final with only the client's half of the nonce, or with an extra attribute
        for fin in [
            |_: &str| "c=biws,r=,p=AAAA".to_string(),
            |n: &str| format!("c=biws,{},p=", n),
            |n: &str| format!("c=biws,{n}"),
            |n: &str| format!("c=biws,{n},x=1,p={}", "A".repeat(44)),
            |n: &str| format!("c=biws,{n},p={}", "A".repeat(44)),
        ] {
            let mut s = start_sasl(port, "synergyflow_app");
            let sc = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
            s.write_all(&sasl_initial(b"SCRAM-SHA-256", sc.message()))
                .unwrap();
            let Reply::Auth(11, sf) = next(&mut s) else {
                panic!("no server-first")
            };
            let nonce = String::from_utf8_lossy(&sf)
                .split(',')
                .next()
                .unwrap()
                .to_string();
            let m = fin(&nonce);
            s.write_all(&msg(b'p', m.as_bytes())).unwrap();
            expect_end(&mut s, failed(), &m);
        }
        // the SASLInitialResponse sent twice
        let mut s = start_sasl(port, "synergyflow_app");
        let sc = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
        let init = sasl_initial(b"SCRAM-SHA-256", sc.message());
        s.write_all(&init).unwrap();
        assert!(matches!(next(&mut s), Reply::Auth(11, _)));
        s.write_all(&init).unwrap();
        expect_end(&mut s, failed(), "SASLInitialResponse twice");
        // a full valid login still works after all that
        let (mut s, _) = raw_login(port);
        assert_eq!(
            raw_query(&mut s, "select current_user").unwrap(),
            vec!["synergyflow_app"]
        );
    })
    .await
    .unwrap();
    assert_serving(&mux, "after broken SCRAM exchanges").await;
    assert_mem_bounded(&mux, "after broken SCRAM exchanges");
    let log = mux.log_text();
    assert!(
        !log.contains("synergyflow-dev-password"),
        "a password reached the log"
    );
}

/// `md5` + md5(md5(password + user) + salt), as a client sends it.
fn md5_response(password: &str, user: &str, salt: &[u8]) -> String {
    postgres_protocol::authentication::md5_hash(
        user.as_bytes(),
        password.as_bytes(),
        salt.try_into().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_exchanges_wrong_truncated_or_replayed() {
    let (pg, _seed) = postgres(50);
    let mux = Pgmux::start(&pg, "auth_type = md5\nclient_login_timeout = 10", &users());
    let port = mux.port;
    tokio::task::spawn_blocking(move || {
        let (user, pw) = ("synergyflow_app", "synergyflow-dev-password");
        let start = || {
            let mut s = raw(port);
            s.write_all(&startup_packet(user, "synergyflow")).unwrap();
            match next(&mut s) {
                Reply::Auth(5, salt) => (s, salt),
                other => panic!("expected AuthenticationMD5Password, got {other:?}"),
            }
        };
        let failed = || Some(fatal("password authentication failed"));
        let cstr = |v: &str| {
            let mut b = v.as_bytes().to_vec();
            b.push(0);
            b
        };
        // a correct answer logs in (and is recorded)
        let (mut s, salt1) = start();
        let good1 = md5_response(pw, user, &salt1);
        s.write_all(&msg(b'p', &cstr(&good1))).unwrap();
        welcome(&mut s);
        assert_eq!(raw_query(&mut s, "select 1").unwrap(), vec!["1"]);
        drop(s);
        // wrong answers
        for (what, body) in [
            ("wrong password", cstr(&md5_response("wrong", user, &salt1))),
            ("the cleartext password", cstr(pw)),
            (
                "the stored md5 secret",
                cstr(&pgmux::auth::md5::md5_secret(pw, user)),
            ),
            ("31 hex digits", cstr(&good1[..34])),
            ("33 hex digits", cstr(&format!("{good1}0"))),
            ("uppercase hex", cstr(&good1.to_uppercase())),
            ("garbage bytes", vec![0xff, 0xfe, 0x80, 0]),
            ("a long password", cstr(&"x".repeat(60_000))),
        ] {
            let (mut s, _) = start();
            s.write_all(&msg(b'p', &body)).unwrap();
            expect_end(&mut s, failed(), what);
        }
        // replayed: the answer for another session's salt
        let (mut s, salt2) = start();
        assert_ne!(salt1, salt2, "salts repeat");
        s.write_all(&msg(b'p', &cstr(&good1))).unwrap();
        expect_end(&mut s, failed(), "replayed md5 answer");
        // truncated password messages
        let (mut s, salt) = start();
        let good = md5_response(pw, user, &salt);
        s.write_all(&msg(b'p', good.as_bytes())).unwrap(); // no NUL
        expect_end(&mut s, Some(fatal("bad packet")), "no NUL");
        let (mut s, _) = start();
        s.write_all(&msg(b'p', b"\0")).unwrap();
        expect_end(
            &mut s,
            Some(fatal("empty password returned by client")),
            "empty",
        );
        let (mut s, _) = start();
        s.write_all(&msg(b'p', b"")).unwrap();
        expect_end(&mut s, Some(fatal("bad packet")), "empty body");
        // announced longer than sent, then closed: no answer, no leak
        let (mut s, salt) = start();
        let good = cstr(&md5_response(pw, user, &salt));
        let m = msg(b'p', &good);
        s.write_all(&m[..m.len() - 10]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        expect_end(&mut s, None, "truncated then FIN");
        // a SCRAM message where md5 was asked for
        let (mut s, _) = start();
        s.write_all(&sasl_initial(b"SCRAM-SHA-256", b"n,,n=,r=abc"))
            .unwrap();
        expect_end(&mut s, failed(), "SASL answer to md5");
    })
    .await
    .unwrap();
    let c = connect(&mux.url("synergyflow", "synergyflow_app", "synergyflow-dev-password"))
        .await
        .unwrap();
    assert_eq!(
        c.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
    assert_mem_bounded(&mux, "after broken md5 exchanges");
}

// ---------------------------------------------------------------------------------------------
// 6. cancel requests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessed_cancel_keys_cancel_nothing() {
    let (pg, _seed) = postgres(50);
    let mux = Pgmux::start(&pg, "", &users());
    let port = mux.port;
    tokio::task::spawn_blocking(move || {
        let (mut victim, key) = raw_login(port);
        let send_cancel = |p: &[u8]| {
            let mut s = raw(port);
            write_or_reset(&mut s, p);
            // pgmux closes without an answer
            expect_end(&mut s, None, "cancel request");
        };
        let run_sleep = |victim: &mut TcpStream, attack: &dyn Fn()| {
            let mut q = b"select pg_sleep(2)".to_vec();
            q.push(0);
            victim.write_all(&msg(b'Q', &q)).unwrap();
            let t = Instant::now();
            attack();
            let mut rows = Vec::new();
            let mut err = None;
            loop {
                match next(victim) {
                    Reply::Msg(b'D', d) => rows.push(d),
                    Reply::Msg(b'Z', _) => break,
                    Reply::Error(_, code, m) => err = Some((code, m)),
                    Reply::Msg(..) => {}
                    other => panic!("victim: {other:?}"),
                }
            }
            (rows.len(), err, t.elapsed())
        };
        // random keys, and every single-bit neighbour of the victim's real key, while its query runs
        let (rows, err, el) = run_sleep(&mut victim, &|| {
            let mut rnd = [0u8; 8 * 500];
            getrandom::fill(&mut rnd).unwrap();
            for k in rnd.chunks(8) {
                send_cancel(&cancel_packet(16, k));
            }
            for bit in 0..64 {
                let mut k = key;
                k[bit / 8] ^= 1 << (bit % 8);
                send_cancel(&cancel_packet(16, &k));
            }
        });
        assert_eq!((rows, err), (1, None), "guessed keys cancelled the query");
        assert!(el >= Duration::from_millis(1900), "{el:?}");
        // the real key with a wrong packet length (extra bytes, missing bytes) is dropped
        let (rows, err, _) = run_sleep(&mut victim, &|| {
            let mut long = key.to_vec();
            long.extend([0, 0, 0, 0]);
            send_cancel(&cancel_packet(20, &long));
            send_cancel(&cancel_packet(12, &key[..4]));
            send_cancel(&cancel_packet(15, &key[..7]));
            // a length field that disagrees with the bytes sent
            let mut p = cancel_packet(16, &key);
            p[3] = 24;
            let mut s = raw(port);
            s.write_all(&p).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            expect_end(&mut s, None, "cancel shorter than announced");
        });
        assert_eq!(
            (rows, err),
            (1, None),
            "a malformed cancel request cancelled the query"
        );
        // control: the real key in a correct packet does cancel
        let (rows, err, el) = run_sleep(&mut victim, &|| {
            std::thread::sleep(Duration::from_millis(300));
            send_cancel(&cancel_packet(16, &key));
        });
        assert_eq!(rows, 0);
        let (code, m) = err.expect("the real key did not cancel");
        assert_eq!(code, "57014", "{m}");
        assert!(el < Duration::from_millis(1900), "{el:?}");
        // the victim's session is still usable
        assert_eq!(raw_query(&mut victim, "select 9").unwrap(), vec!["9"]);
    })
    .await
    .unwrap();
    assert_serving(&mux, "after guessed cancel keys").await;
    assert_mem_bounded(&mux, "after guessed cancel keys");
}
