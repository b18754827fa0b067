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
