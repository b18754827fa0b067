//! TLS, server side: PostgreSQL with ssl=on behind pgmux with verify-ca / verify-full and a client certificate, a server that has no TLS, and direct TLS and its errors.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_verify_ca_verify_full_and_client_certificate() {
    let dir = tmpdir("server");
    let ca1 = ca("pg CA");
    let other = ca("other CA");
    // PostgreSQL's certificate names "localhost" only
    let (pg_crt, pg_key) = leaf(&ca1, "localhost", &["localhost"]);
    let (auth_crt, auth_key) = leaf(&ca1, "certuser", &[]);
    write_files(
        &dir,
        &[
            ("ca.crt", &ca1.cert.pem()),
            ("other.crt", &other.cert.pem()),
            ("pg.crt", &pg_crt),
            ("pg.key", &pg_key),
            ("auth.crt", &auth_crt),
            ("auth.key", &auth_key),
        ],
    );
    chown_postgres(&dir);
    let d = dir.display();
    let (pg, seed) = postgres_with(
        100,
        &[
            "ssl = on",
            &format!("ssl_cert_file = '{d}/pg.crt'"),
            &format!("ssl_key_file = '{d}/pg.key'"),
            &format!("ssl_ca_file = '{d}/ca.crt'"),
        ],
    );
    // a role that logs in with its certificate only
    pg.psql("postgres", "CREATE ROLE certuser LOGIN").unwrap();
    pg.psql(
        "synergyflow",
        "GRANT CONNECT ON DATABASE synergyflow TO certuser",
    )
    .unwrap();
    let hba_path = pg.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba_path).unwrap();
    std::fs::write(
        &hba_path,
        format!("hostssl all certuser 127.0.0.1/32 cert\n{old}"),
    )
    .unwrap();
    pg.psql("postgres", "select pg_reload_conf()").unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let app = |mux: &Pgmux| {
        let pw = seed.app_password.clone();
        let port = mux.port;
        let user = seed.app_user.clone();
        async move {
            connect(&format!(
                "host=127.0.0.1 port={port} dbname=synergyflow user={user} password={pw}"
            ))
            .await
        }
    };
    let ssl_in_use = |pg: &pgmux::dev::TempPostgres, user: &str| {
        pg.psql(
            "postgres",
            &format!(
                "select bool_and(s.ssl) from pg_stat_ssl s join pg_stat_activity a using (pid) where a.usename = '{user}'"
            ),
        )
        .unwrap()
        .trim()
        .to_string()
    };
    // verify-ca against the right CA: works (the name is not checked: we connect to 127.0.0.1)
    let pgport = pg.port();
    let mux = Pgmux::start(
        &pg,
        &format!("server_tls_sslmode = verify-ca\nserver_tls_ca_file = {d}/ca.crt"),
        &[(&seed.app_user, &seed.app_password)],
    );
    let c = app(&mux).await.unwrap();
    c.simple_query("select 1").await.unwrap();
    assert_eq!(
        ssl_in_use(&pg, &seed.app_user),
        "t",
        "server connection uses TLS"
    );
    drop(c);
    drop(mux);
    // prefer and require encrypt without checking the certificate; allow stays in plaintext
    for (mode, ssl) in [("prefer", "t"), ("require", "t"), ("allow", "f")] {
        let mux = Pgmux::start(
            &pg,
            &format!("server_tls_sslmode = {mode}"),
            &[(&seed.app_user, &seed.app_password)],
        );
        let c = app(&mux).await.unwrap();
        c.simple_query("select 1").await.unwrap();
        assert_eq!(
            ssl_in_use(&pg, &seed.app_user),
            ssl,
            "server_tls_sslmode = {mode}"
        );
        drop(c);
        drop(mux);
        std::thread::sleep(Duration::from_millis(200));
    }
    // verify-full with 127.0.0.1: the name does not match, the login fails with a clear error
    let mux = Pgmux::start(
        &pg,
        &format!("server_tls_sslmode = verify-full\nserver_tls_ca_file = {d}/ca.crt"),
        &[(&seed.app_user, &seed.app_password)],
    );
    let e = app(&mux).await.unwrap_err();
    assert!(db_error(&e).1.contains("server TLS"), "{e}");
    drop(mux);
    // verify-full with host=localhost: works
    let mux = Pgmux::start(
        &pg,
        &format!(
            "server_tls_sslmode = verify-full\nserver_tls_ca_file = {d}/ca.crt\n[databases]\nlocaldb = host=localhost port={pgport} dbname=synergyflow"
        ),
        &[(&seed.app_user, &seed.app_password)],
    );
    let c = connect(&mux.url("localdb", &seed.app_user, &seed.app_password))
        .await
        .unwrap();
    c.simple_query("select 1").await.unwrap();
    drop(c);
    drop(mux);
    // a CA that did not sign the server's certificate: refused
    let mux = Pgmux::start(
        &pg,
        &format!("server_tls_sslmode = verify-ca\nserver_tls_ca_file = {d}/other.crt"),
        &[(&seed.app_user, &seed.app_password)],
    );
    let e = app(&mux).await.unwrap_err();
    assert!(db_error(&e).1.contains("server TLS"), "{e}");
    drop(mux);
    // a client certificate towards PostgreSQL (CNPG's auth-user setup): cert auth for certuser
    let mux = Pgmux::start(
        &pg,
        &format!(
            "server_tls_sslmode = verify-ca\nserver_tls_ca_file = {d}/ca.crt\n\
             server_tls_cert_file = {d}/auth.crt\nserver_tls_key_file = {d}/auth.key\n\
             auth_type = trust"
        ),
        &[("certuser", "")],
    );
    let c = connect(&format!(
        "host=127.0.0.1 port={} dbname=synergyflow user=certuser",
        mux.port
    ))
    .await
    .unwrap();
    let r = c.simple_query("select current_user").await.unwrap();
    assert!(format!("{r:?}").contains("certuser"));
    assert_eq!(ssl_in_use(&pg, "certuser"), "t");
    drop(mux);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_required_but_postgres_has_none() {
    let (pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "server_tls_sslmode = require",
        &[(&seed.app_user, &seed.app_password)],
    );
    let e = connect(&mux.url("synergyflow", &seed.app_user, &seed.app_password))
        .await
        .unwrap_err();
    assert!(
        db_error(&e).1.contains("server does not support SSL"),
        "{e}"
    );
    // prefer (the default) falls back to plaintext
    let mux = Pgmux::start(
        &pg,
        "server_tls_sslmode = prefer",
        &[(&seed.app_user, &seed.app_password)],
    );
    connect(&mux.url("synergyflow", &seed.app_user, &seed.app_password))
        .await
        .unwrap()
        .simple_query("select 1")
        .await
        .unwrap();
}

/// PostgreSQL 17's direct TLS (no SSLRequest, ALPN "postgresql"), a client that requires TLS
/// from a pgmux without it, and an expired certificate: clear errors, other clients unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_and_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (pg, seed) = postgres(100);
    let dir = tmpdir("direct");
    let ca1 = ca("direct CA");
    let (crt, key) = leaf(&ca1, "localhost", &["localhost", "127.0.0.1"]);
    // an expired certificate from the same CA
    let (old_crt, old_key) = {
        let k = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        (
            p.signed_by(&k, &ca1.cert, &ca1.key).unwrap().pem(),
            k.serialize_pem(),
        )
    };
    write_files(
        &dir,
        &[
            ("ca.crt", &ca1.cert.pem()),
            ("s.crt", &crt),
            ("s.key", &key),
            ("old.crt", &old_crt),
            ("old.key", &old_key),
        ],
    );
    let d = dir.display();
    let mux = Pgmux::start(
        &pg,
        &format!(
            "client_tls_sslmode = prefer\nclient_tls_cert_file = {d}/s.crt\nclient_tls_key_file = {d}/s.key\nserver_tls_sslmode = disable"
        ),
        &[(&seed.app_user, &seed.app_password)],
    );
    // direct TLS: the handshake comes first, with ALPN "postgresql", then the startup packet
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            ca1.cert.der().to_vec(),
        ))
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"postgresql".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", mux.port))
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("direct TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    tls.write_all(&startup_packet(&seed.app_user, "synergyflow"))
        .await
        .unwrap();
    let mut head = [0u8; 9];
    tls.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], b'R', "an authentication request over direct TLS");
    assert_eq!(
        u32::from_be_bytes(head[5..9].try_into().unwrap()),
        10,
        "SASL"
    );
    drop(tls);
    drop(mux);

    // a client requiring TLS from a pgmux without TLS: libpq's clear error
    let mux = Pgmux::start(
        &pg,
        "client_tls_sslmode = disable",
        &[(&seed.app_user, &seed.app_password)],
    );
    let conn = |port: u16, extra: &str| {
        format!(
            "host=localhost port={port} dbname=synergyflow user={} {extra}",
            seed.app_user
        )
    };
    let e = psql(
        &pg,
        &conn(mux.port, "sslmode=require"),
        &seed.app_password,
        "select 1",
    )
    .unwrap_err();
    assert!(e.contains("server does not support SSL"), "{e}");
    assert_eq!(
        psql(
            &pg,
            &conn(mux.port, "sslmode=prefer"),
            &seed.app_password,
            "select 1"
        )
        .unwrap(),
        "1"
    );
    drop(mux);

    // an expired certificate: verifying clients refuse it; a plaintext client next door works
    let mux = Pgmux::start(
        &pg,
        &format!(
            "client_tls_sslmode = prefer\nclient_tls_cert_file = {d}/old.crt\nclient_tls_key_file = {d}/old.key\nserver_tls_sslmode = disable"
        ),
        &[(&seed.app_user, &seed.app_password)],
    );
    let e = psql(
        &pg,
        &conn(
            mux.port,
            &format!("sslmode=verify-full sslrootcert={d}/ca.crt"),
        ),
        &seed.app_password,
        "select 1",
    )
    .unwrap_err();
    // libpq reports OpenSSL's verdict; the chain is from the trusted CA, only the dates are wrong
    assert!(e.contains("certificate verify failed"), "{e}");
    assert_eq!(
        psql(
            &pg,
            &conn(mux.port, "sslmode=disable"),
            &seed.app_password,
            "select 1"
        )
        .unwrap(),
        "1"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
