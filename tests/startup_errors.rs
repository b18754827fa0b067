//! Startup and login errors: each one's exact PgBouncer text and SQLSTATE, and that pgmux keeps serving others.

mod common;

use common::*;

const V3: u32 = 196608;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_errors_have_pgbouncer_texts() {
    let (pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "max_client_conn = 3",
        &[(&seed.app_user, &seed.app_password), ("md5user", "pw")],
    );
    let f = |sev: &str, msg: &str| {
        Some(("FATAL".to_string(), "08P01".to_string(), msg.to_string())).filter(|_| sev == "FATAL")
    };

    assert_eq!(
        raw_startup(
            mux.port,
            V3,
            &[
                ("user", &seed.app_user),
                ("database", "synergyflow"),
                ("foo", "1")
            ]
        ),
        f("FATAL", "unsupported startup parameter: foo")
    );
    assert_eq!(
        raw_startup(mux.port, V3, &[("database", "synergyflow")]),
        f("FATAL", "no username supplied")
    );
    assert_eq!(
        raw_startup(mux.port, 0x0002_0000, &[("user", "x")]),
        f("FATAL", "old V2 protocol not supported")
    );
    assert!(
        raw_startup(
            mux.port,
            V3,
            &[("user", "x"), ("options", "-c statement_timeout=1")]
        )
        .is_none(),
        "options is in ignore_startup_parameters: unknown -c keys are dropped"
    );
    // ignored parameters are fine: the server asks for authentication
    assert_eq!(
        raw_startup(
            mux.port,
            V3,
            &[("user", &seed.app_user), ("extra_float_digits", "3")]
        ),
        None
    );

    // unknown database: reported only after authentication
    let e = connect(&mux.url("nope", &seed.app_user, &seed.app_password))
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&e),
        ("08P01".into(), "no such database: nope".into())
    );
    // wrong password (SCRAM)
    let e = connect(&mux.url("synergyflow", &seed.app_user, "wrong"))
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&e),
        ("08P01".into(), "SASL authentication failed".into())
    );
    // unknown user: same answer, no enumeration
    let e = connect(&mux.url("synergyflow", "nobody", "x"))
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&e),
        ("08P01".into(), "SASL authentication failed".into())
    );

    // max_client_conn = 3: the 4th client is refused with PgBouncer's message
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let a = connect(&url).await.unwrap();
    let b = connect(&url).await.unwrap();
    let c = connect(&url).await.unwrap();
    let e = connect(&url).await.unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "08P01".into(),
            "no more connections allowed (max_client_conn)".into()
        )
    );
    drop((a, b));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // and after others leave, a new one gets in; the survivor kept working throughout
    let d = connect(&url).await.unwrap();
    assert_eq!(
        c.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
    assert_eq!(
        d.query_one("select 2", &[]).await.unwrap().get::<_, i32>(0),
        2
    );
    let log = mux.log_text();
    assert!(
        log.contains("login attempt: db=synergyflow user=synergyflow_app tls=no"),
        "{log}"
    );
    assert!(
        log.contains("pooler error: no more connections allowed (max_client_conn)"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_plain_and_trust_client_auth() {
    let (pg, seed) = postgres(100);
    let users: &[(&str, &str)] = &[(&seed.app_user, &seed.app_password)];
    for (auth, bad) in [
        ("md5", "password authentication failed"),
        ("plain", "password authentication failed"),
    ] {
        let mux = Pgmux::start(&pg, &format!("auth_type = {auth}"), users);
        let c = connect(&mux.url("synergyflow", &seed.app_user, &seed.app_password))
            .await
            .unwrap();
        assert_eq!(
            c.query_one("select 7", &[]).await.unwrap().get::<_, i32>(0),
            7,
            "{auth}"
        );
        let e = connect(&mux.url("synergyflow", &seed.app_user, "nope"))
            .await
            .unwrap_err();
        assert_eq!(db_error(&e), ("08P01".into(), bad.into()), "{auth}");
    }
    let mux = Pgmux::start(&pg, "auth_type = trust", users);
    let c = connect(&mux.url("synergyflow", &seed.app_user, "anything"))
        .await
        .unwrap();
    assert_eq!(
        c.query_one("select 8", &[]).await.unwrap().get::<_, i32>(0),
        8
    );
    let e = connect(&mux.url("synergyflow", "stranger", "x"))
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&e),
        ("08P01".into(), "\"trust\" authentication failed".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_login_error_is_passed_on_with_its_sqlstate() {
    let (pg, seed) = postgres(100);
    // pgmux knows a password PostgreSQL does not accept: the server's own error reaches the client
    let mux = Pgmux::start(
        &pg,
        "auth_type = trust",
        &[(&seed.app_user, "not-the-real-password")],
    );
    let e = connect(&mux.url("synergyflow", &seed.app_user, "x"))
        .await
        .unwrap_err();
    let (code, msg) = db_error(&e);
    assert_eq!(code, "28P01", "{msg}");
    assert!(
        msg.contains("password authentication failed for user"),
        "{msg}"
    );
    // garbage from one client does not disturb another
    let ok = Pgmux::start(&pg, "", &[(&seed.app_user, &seed.app_password)]);
    let c = connect(&ok.url("synergyflow", &seed.app_user, &seed.app_password))
        .await
        .unwrap();
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", ok.port)).unwrap();
        s.write_all(&[0xff; 64]).unwrap();
        let mut s2 = std::net::TcpStream::connect(("127.0.0.1", ok.port)).unwrap();
        s2.write_all(&[0, 0, 0, 9, 0, 3]).unwrap(); // half a startup packet, then gone
    }
    assert_eq!(
        c.query_one("select 3", &[]).await.unwrap().get::<_, i32>(0),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_login_with_trust_cleartext_md5_and_scram() {
    let (pg, seed) = postgres(100);
    // PostgreSQL's hba: trust_user trust, plain_user password (cleartext), md5_user md5, others SCRAM
    let users: &[(&str, &str)] = &[
        ("trust_user", "anything"),
        ("plain_user", "plain-password"),
        ("md5_user", "md5-password"),
        (&seed.app_user, &seed.app_password),
    ];
    let mux = Pgmux::start(&pg, "auth_type = plain", users);
    for (user, pw) in users {
        let db = if *user == seed.app_user {
            "synergyflow"
        } else {
            "postgres"
        };
        let c = connect(&mux.url(db, user, pw))
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        let who: String = c
            .query_one("select current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(&who, user);
    }
    // a userlist md5 secret works for an md5 server login too
    let md5 = pgmux::auth::md5::md5_secret("md5-password", "md5_user");
    let mux2 = Pgmux::start(&pg, "auth_type = md5", &[("md5_user", &md5)]);
    let c = connect(&mux2.url("postgres", "md5_user", "md5-password"))
        .await
        .unwrap();
    assert_eq!(
        c.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
    let log = mux.log_text();
    assert!(
        log.contains("new connection to server (from 127.0.0.1:"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_negotiation_and_packet_limit() {
    let (pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "max_packet_size = 2000",
        &[(&seed.app_user, &seed.app_password)],
    );
    // protocol 3.2 and a _pq_ option: NegotiateProtocolVersion(3.0, [_pq_.foo]) then auth
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", mux.port)).unwrap();
        let mut body = (196608u32 + 2).to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0synergyflow_app\0_pq_.foo\0x\0\0");
        let mut pkt = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        pkt.extend(body);
        s.write_all(&pkt).unwrap();
        let mut hdr = [0u8; 5];
        s.read_exact(&mut hdr).unwrap();
        assert_eq!(hdr[0], b'v');
        let len = u32::from_be_bytes(hdr[1..5].try_into().unwrap()) as usize - 4;
        let mut b = vec![0u8; len];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b[0..4], &0u32.to_be_bytes());
        assert_eq!(&b[4..8], &1u32.to_be_bytes());
        assert_eq!(&b[8..], b"_pq_.foo\0");
        s.read_exact(&mut hdr).unwrap();
        assert_eq!(hdr[0], b'R');
    }
    // SSLRequest answered 'N', then a normal login on the same socket works (tokio-postgres prefer mode)
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let c = connect(&format!("{url} sslmode=prefer")).await.unwrap();
    assert_eq!(
        c.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
    // a message above max_packet_size: FATAL bad packet header, others unaffected
    let big = connect(&url).await.unwrap();
    let e = big
        .simple_query(&format!("select '{}'", "x".repeat(5000)))
        .await
        .unwrap_err();
    assert_eq!(db_error(&e), ("08P01".into(), "bad packet header".into()));
    assert_eq!(
        c.query_one("select 2", &[]).await.unwrap().get::<_, i32>(0),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_and_statement_pool_modes() {
    let (pg, seed) = postgres(100);
    let users: &[(&str, &str)] = &[(&seed.app_user, &seed.app_password)];
    let mux = Pgmux::start(
        &pg,
        "pool_mode = session\ndefault_pool_size = 1\nquery_wait_timeout = 2",
        users,
    );
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let a = connect(&url).await.unwrap();
    a.batch_execute("set statement_timeout = '7s'")
        .await
        .unwrap();
    let st: String = a
        .query_one("show statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        st, "7s",
        "session mode keeps the server for the whole session"
    );
    // the only server is held by a: b waits and times out with PgBouncer's message
    let b = connect(&url).await.unwrap();
    let e = b.simple_query("select 1").await.unwrap_err();
    assert_eq!(db_error(&e), ("08P01".into(), "query_wait_timeout".into()));
    drop(a);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // after a leaves, the server was reset (DISCARD ALL) and serves the next client
    let c = connect(&url).await.unwrap();
    let st: String = c
        .query_one("show statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(st, "0");

    let mux = Pgmux::start(&pg, "pool_mode = statement", users);
    let d = connect(&mux.url("synergyflow", &seed.app_user, &seed.app_password))
        .await
        .unwrap();
    // simple protocol only: a dropped prepared statement would send a Close in the background
    assert_eq!(d.simple_query("select 3").await.unwrap().len(), 3);
    let e = d.simple_query("begin").await.unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "08P01".into(),
            "transaction blocks not allowed in statement pooling mode".into()
        )
    );
}

/// Builds a SASLResponse from the server-first-message.
type FinalMsg = dyn Fn(&str) -> Vec<u8>;

/// Drive a raw SCRAM exchange: `first` as the SASLInitialResponse data, then, if given, `fin` builds
/// the SASLResponse from the server-first-message. Returns the FATAL error pgmux answers with.
fn raw_sasl(
    port: u16,
    user: &str,
    mech: &str,
    first: &[u8],
    fin: Option<&FinalMsg>,
) -> Option<(String, String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(&startup_packet(user, "synergyflow")).unwrap();
    // AuthenticationSASL (read whole by read_error)
    assert!(read_error(&mut s).is_none(), "expected an auth request");
    let mut b = mech.as_bytes().to_vec();
    b.push(0);
    b.extend((first.len() as i32).to_be_bytes());
    b.extend_from_slice(first);
    let mut p = vec![b'p'];
    p.extend(((b.len() + 4) as u32).to_be_bytes());
    p.extend(b);
    s.write_all(&p).unwrap();
    let mut hdr = [0u8; 5];
    s.read_exact(&mut hdr).ok()?;
    let len = u32::from_be_bytes(hdr[1..5].try_into().unwrap()) as usize - 4;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    if hdr[0] == b'E' {
        return Some(error_fields(&body));
    }
    let server_first = String::from_utf8_lossy(&body[4..]).into_owned();
    let fin = fin?(&server_first);
    let mut p = vec![b'p'];
    p.extend(((fin.len() + 4) as u32).to_be_bytes());
    p.extend(fin);
    s.write_all(&p).unwrap();
    read_error(&mut s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sasl_exchanges_are_refused_cleanly() {
    let (pg, seed) = postgres(50);
    let mux = Pgmux::start(&pg, "", &[(&seed.app_user, &seed.app_password)]);
    let failed = Some((
        "FATAL".to_string(),
        "08P01".to_string(),
        "SASL authentication failed".to_string(),
    ));
    let port = mux.port;
    let u = seed.app_user.as_str();
    let nonce = |sf: &str| {
        sf.split(',')
            .next()
            .unwrap()
            .trim_start_matches("r=")
            .to_string()
    };
    // garbage client-first, channel binding demanded, mandatory extension
    assert_eq!(raw_sasl(port, u, "SCRAM-SHA-256", b"garbage", None), failed);
    assert_eq!(
        raw_sasl(
            port,
            u,
            "SCRAM-SHA-256",
            b"p=tls-server-end-point,,n=,r=abc",
            None
        ),
        failed
    );
    assert_eq!(
        raw_sasl(port, u, "SCRAM-SHA-256", b"n,,m=x,n=,r=abc", None),
        failed
    );
    // a mechanism we did not offer
    assert_eq!(
        raw_sasl(port, u, "SCRAM-SHA-256-PLUS", b"n,,n=,r=abc", None).map(|e| e.2),
        Some("client selected an invalid SASL authentication mechanism".to_string())
    );
    // wrong nonce, bad base64, proof of the wrong length, wrong channel-binding data
    let cases: Vec<Box<FinalMsg>> = vec![
        Box::new(|_| b"c=biws,r=not-the-nonce,p=AAAA".to_vec()),
        Box::new(move |sf| format!("c=biws,r={},p=!!!notbase64", nonce(sf)).into_bytes()),
        Box::new(move |sf| format!("c=biws,r={},p=AAAA", nonce(sf)).into_bytes()),
        Box::new(move |sf| format!("c=eSws,r={},p={}", nonce(sf), "A".repeat(44)).into_bytes()),
        Box::new(|_| vec![0xff, 0xfe, 0xfd]),
    ];
    for f in &cases {
        assert_eq!(
            raw_sasl(
                port,
                u,
                "SCRAM-SHA-256",
                b"n,,n=,r=abcdef",
                Some(f.as_ref())
            ),
            failed
        );
    }
    // and pgmux still serves everybody else
    let c = connect(&mux.url("synergyflow", u, &seed.app_password))
        .await
        .unwrap();
    assert_eq!(
        c.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
    assert!(
        !mux.log_text().contains(&seed.app_password),
        "a password reached the log"
    );
}
