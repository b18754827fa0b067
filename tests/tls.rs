//! TLS on both sides: certificates made with rcgen, psql and tokio-postgres with each sslmode
//! against pgmux, PostgreSQL with ssl=on behind pgmux with verify-ca / verify-full and a client
//! certificate, certificate rotation on RELOAD, and the errors.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// A certificate signed by `ca` for `cn` with the given SANs: (cert PEM, key PEM).
fn leaf(ca: &Ca, cn: &str, sans: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Write files readable by the postgres user (keys 0600 owned by it, as PostgreSQL demands).
fn write_files(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, body) in files {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = if name.ends_with(".key") { 0o600 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn chown_postgres(dir: &Path) {
    let _ = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status();
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pgmux-tls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// psql -c with a connection string; Ok(stdout) or Err(stderr).
fn psql(
    pg: &pgmux::dev::TempPostgres,
    conn: &str,
    password: &str,
    sql: &str,
) -> Result<String, String> {
    let out = Command::new(pg.tool("psql"))
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql, conn])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_sslmodes_cert_auth_and_rotation() {
    let (pg, seed) = postgres(100);
    let dir = tmpdir("client");
    let ca1 = ca("pgmux test CA 1");
    let ca2 = ca("pgmux test CA 2");
    let (srv_crt, srv_key) = leaf(&ca1, "localhost", &["localhost", "127.0.0.1"]);
    let (srv2_crt, srv2_key) = leaf(&ca2, "localhost", &["localhost", "127.0.0.1"]);
    let (cli_crt, cli_key) = leaf(&ca1, &seed.app_user, &[]);
    let (bad_crt, bad_key) = leaf(&ca1, "someone_else", &[]);
    write_files(
        &dir,
        &[
            ("ca1.crt", &ca1.cert.pem()),
            ("ca2.crt", &ca2.cert.pem()),
            ("server.crt", &srv_crt),
            ("server.key", &srv_key),
            ("client.crt", &cli_crt),
            ("client.key", &cli_key),
            ("bad.crt", &bad_crt),
            ("bad.key", &bad_key),
        ],
    );
    let hba = dir.join("hba.conf");
    std::fs::write(
        &hba,
        format!(
            "hostssl all certuser 127.0.0.1/32 cert\n\
             hostssl all {app} 127.0.0.1/32 scram-sha-256\n\
             hostnossl all {app} 127.0.0.1/32 scram-sha-256\n\
             hostnossl all admin 127.0.0.1/32 scram-sha-256\n\
             local all all peer\n",
            app = seed.app_user
        ),
    )
    .unwrap();
    let d = dir.display();
    let mux = Pgmux::start(
        &pg,
        &format!(
            "admin_users = admin\nclient_tls_sslmode = prefer\n\
             client_tls_cert_file = {d}/server.crt\nclient_tls_key_file = {d}/server.key\n\
             client_tls_ca_file = {d}/ca1.crt\nserver_tls_sslmode = disable\n\
             auth_type = hba\nauth_hba_file = {}",
            hba.display()
        ),
        &[(&seed.app_user, &seed.app_password), ("admin", "admin-pw")],
    );
    let base = |extra: &str| {
        format!(
            "host=localhost port={} dbname=synergyflow user={} {extra}",
            mux.port, seed.app_user
        )
    };
    let pw = &seed.app_password;
    // prefer: TLS when asked (verified against the CA, host name checked), plaintext otherwise
    let root = format!("sslrootcert={d}/ca1.crt");
    assert_eq!(
        psql(
            &pg,
            &base(&format!("sslmode=verify-full {root}")),
            pw,
            "select 1"
        )
        .unwrap(),
        "1"
    );
    assert_eq!(
        psql(&pg, &base("sslmode=require"), pw, "select 2").unwrap(),
        "2"
    );
    assert_eq!(
        psql(&pg, &base("sslmode=disable"), pw, "select 3").unwrap(),
        "3"
    );
    assert_eq!(
        psql(&pg, &base("sslmode=prefer"), pw, "select 4").unwrap(),
        "4"
    );
    assert_eq!(
        psql(&pg, &base("sslmode=allow"), pw, "select 5").unwrap(),
        "5"
    );
    // a client verifying against another CA refuses pgmux's certificate
    let e = psql(
        &pg,
        &base(&format!("sslmode=verify-ca sslrootcert={d}/ca2.crt")),
        pw,
        "select 1",
    )
    .unwrap_err();
    assert!(e.contains("certificate verify failed"), "{e}");
    // the cert method: the client certificate's CN must be the user
    let certuser = format!(
        "host=localhost port={} dbname=synergyflow user=certuser sslmode=verify-full {root} sslcert={d}/client.crt sslkey={d}/client.key",
        mux.port
    );
    let e = psql(&pg, &certuser, "", "select 1").unwrap_err();
    assert!(e.contains("certificate authentication failed"), "{e}");
    // tokio-postgres over TLS (rustls), checking pgmux's certificate
    {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(
                ca1.cert.der().to_vec(),
            ))
            .unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(cfg);
        let (c, conn) =
            tokio_postgres::connect(&format!("{} password={pw} sslmode=require", base("")), tls)
                .await
                .unwrap();
        tokio::spawn(conn);
        let r = c.query_one("select $1::int + 1", &[&41i32]).await.unwrap();
        assert_eq!(r.get::<_, i32>(0), 42);

        // rotation under traffic: a new certificate (another CA) in place, RELOAD; the running
        // TLS session goes on, new connections get the new certificate
        let traffic = {
            let c = std::sync::Arc::new(c);
            let c2 = c.clone();
            (
                c,
                tokio::spawn(async move {
                    for i in 0..200i32 {
                        let r = c2.query_one("select $1::int", &[&i]).await.unwrap();
                        assert_eq!(r.get::<_, i32>(0), i);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }),
            )
        };
        write_files(
            &dir,
            &[("server.crt", &srv2_crt), ("server.key", &srv2_key)],
        );
        let adm = connect(&format!(
            "host=127.0.0.1 port={} dbname=pgbouncer user=admin password=admin-pw sslmode=disable",
            mux.port
        ))
        .await
        .unwrap();
        adm.simple_query("RELOAD").await.unwrap();
        traffic.1.await.unwrap();
        traffic.0.query_one("select 1", &[]).await.unwrap();
        let e = psql(
            &pg,
            &base(&format!("sslmode=verify-full {root}")),
            pw,
            "select 1",
        )
        .unwrap_err();
        assert!(
            e.contains("certificate verify failed"),
            "old CA refused after rotation: {e}"
        );
        let new_root = format!("sslrootcert={d}/ca2.crt");
        assert_eq!(
            psql(
                &pg,
                &base(&format!("sslmode=verify-full {new_root}")),
                pw,
                "select 6"
            )
            .unwrap(),
            "6"
        );
        // a broken certificate file: RELOAD fails, the current certificate stays in use
        std::fs::write(dir.join("server.crt"), "not a certificate").unwrap();
        let e = adm.simple_query("RELOAD").await.unwrap_err();
        assert_eq!(db_error(&e).0, "F0000");
        assert!(
            mux.log_text().contains("client_tls_cert_file"),
            "the log says which file"
        );
        assert_eq!(
            psql(
                &pg,
                &base(&format!("sslmode=verify-full {new_root}")),
                pw,
                "select 7"
            )
            .unwrap(),
            "7"
        );
    }
    drop(mux);

    // require: plaintext TCP clients are refused with PgBouncer's error; verify-ca demands a
    // client certificate from the CA
    write_files(&dir, &[("server.crt", &srv_crt), ("server.key", &srv_key)]);
    for (mode, plain_error) in [
        ("allow", false),
        ("require", true),
        ("verify-ca", true),
        ("verify-full", true),
    ] {
        let mux = Pgmux::start(
            &pg,
            &format!(
                "client_tls_sslmode = {mode}\nclient_tls_cert_file = {d}/server.crt\n\
                 client_tls_key_file = {d}/server.key\nclient_tls_ca_file = {d}/ca1.crt\n\
                 server_tls_sslmode = disable"
            ),
            &[(&seed.app_user, &seed.app_password)],
        );
        let url = |extra: &str| {
            format!(
                "host=localhost port={} dbname=synergyflow user={} {extra}",
                mux.port, seed.app_user
            )
        };
        if plain_error {
            let e = psql(&pg, &url("sslmode=disable"), pw, "select 1").unwrap_err();
            assert!(e.contains("SSL required"), "{mode}: {e}");
        } else {
            assert_eq!(
                psql(&pg, &url("sslmode=disable"), pw, "select 1").unwrap(),
                "1"
            );
        }
        let with_cert = url(&format!(
            "sslmode=verify-full {root} sslcert={d}/client.crt sslkey={d}/client.key"
        ));
        assert_eq!(
            psql(&pg, &with_cert, pw, "select 1").unwrap(),
            "1",
            "{mode}"
        );
        let without = psql(
            &pg,
            &url(&format!("sslmode=verify-full {root}")),
            pw,
            "select 1",
        );
        if mode.starts_with("verify") {
            assert!(without.is_err(), "{mode} needs a client certificate");
        } else {
            assert_eq!(without.unwrap(), "1");
        }
        // unix sockets are exempt from require
        let sock = format!(
            "host={} port={} dbname=synergyflow user={}",
            mux.dir.display(),
            mux.port,
            seed.app_user
        );
        assert_eq!(psql(&pg, &sock, pw, "select 1").unwrap(), "1");
    }

    // the cert method with a matching client certificate
    let hba2 = dir.join("hba2.conf");
    std::fs::write(
        &hba2,
        format!("hostssl all {} 127.0.0.1/32 cert\n", seed.app_user),
    )
    .unwrap();
    let mux = Pgmux::start(
        &pg,
        &format!(
            "client_tls_sslmode = prefer\nclient_tls_cert_file = {d}/server.crt\n\
             client_tls_key_file = {d}/server.key\nclient_tls_ca_file = {d}/ca1.crt\n\
             server_tls_sslmode = disable\nauth_type = hba\nauth_hba_file = {}",
            hba2.display()
        ),
        &[(&seed.app_user, &seed.app_password)],
    );
    let url = |extra: &str| {
        format!(
            "host=localhost port={} dbname=synergyflow user={} sslmode=verify-full {root} {extra}",
            mux.port, seed.app_user
        )
    };
    assert_eq!(
        psql(
            &pg,
            &url(&format!("sslcert={d}/client.crt sslkey={d}/client.key")),
            "",
            "select 1"
        )
        .unwrap(),
        "1"
    );
    let e = psql(
        &pg,
        &url(&format!("sslcert={d}/bad.crt sslkey={d}/bad.key")),
        "",
        "select 1",
    )
    .unwrap_err();
    assert!(e.contains("certificate authentication failed"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

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
