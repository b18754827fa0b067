//! TLS, client side: psql and tokio-postgres with each sslmode against pgmux, certificate authentication, and certificate rotation on RELOAD.

use super::*;

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
