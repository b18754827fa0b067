//! The CloudNativePG image swap: pgmux fed the files CNPG's manager renders for a Pooler
//! (pgbouncer.ini with the `*` entry, auth_type = hba, auth_query through auth_dbname, TLS file
//! paths, the duplicated ignore_startup_parameters; pg_hba.conf and userlist.txt as templated),
//! driven the way the manager drives PgBouncer: SHOW LISTS/POOLS/STATS, PAUSE, RESUME and RELOAD
//! over the unix socket as `pgbouncer`, SIGINT to stop.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cnpg_pooler_files_and_manager_commands() {
    // certificates as CNPG's secrets hold them: the cluster CA, the server certificate (also
    // presented to applications by the Pooler)
    let dir = std::env::temp_dir().join(format!("pgmux-cnpg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_p = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_p.distinguished_name
        .push(DnType::CommonName, "shared-postgres");
    let ca = ca_p.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["shared-postgres-rw".to_string()]).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "shared-postgres-rw");
    let crt = p.signed_by(&key, &ca, &ca_key).unwrap();
    for (name, body, mode) in [
        ("ca.crt", ca.pem(), 0o644),
        ("tls.crt", crt.pem(), 0o644),
        ("tls.key", key.serialize_pem(), 0o600),
    ] {
        std::fs::write(dir.join(name), body).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let _ = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&dir)
        .status();
    let d = dir.display().to_string();
    let (pg, seed) = postgres_with(
        100,
        &[
            "ssl = on",
            &format!("ssl_cert_file = '{d}/tls.crt'"),
            &format!("ssl_key_file = '{d}/tls.key'"),
        ],
    );
    // the rendered files (config.go template; parameters sorted; the host is this test's cluster)
    let port = free_port();
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        dir.join("pg_hba.conf"),
        "\nlocal pgbouncer pgbouncer peer\n\n\nhost all all 0.0.0.0/0 md5\nhost all all ::/0 md5\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("userlist.txt"),
        format!("\n\"{}\" \"{}\"\n", seed.auth_user, seed.auth_password),
    )
    .unwrap();
    let render = |pool_size: u32| {
        format!(
            "\n[databases]\n* = host=127.0.0.1 port={pgport}\n\n[pgbouncer]\npool_mode = transaction\n\
             auth_user = {auth}\nauth_query = SELECT usename, passwd FROM public.user_search($1)\n\
             auth_dbname = postgres\n\nadmin_users = pgbouncer\nauth_file = {d}/userlist.txt\n\
             auth_hba_file = {d}/pg_hba.conf\nauth_type = hba\nclient_idle_timeout = 0\n\
             client_tls_ca_file = {d}/ca.crt\nclient_tls_cert_file = {d}/tls.crt\n\
             client_tls_key_file = {d}/tls.key\nclient_tls_sslmode = prefer\n\
             default_pool_size = {pool_size}\nidle_transaction_timeout = 600\n\
             ignore_startup_parameters = extra_float_digits,options,extra_float_digits,options\n\
             listen_addr = *\nlisten_port = {port}\nlog_connections = 1\nlog_disconnections = 1\n\
             log_pooler_errors = 1\nlog_stats = 0\nmax_client_conn = 1000\nmax_db_connections = 50\n\
             max_user_connections = 50\nmin_pool_size = 10\nquery_timeout = 300\n\
             query_wait_timeout = 120\nreserve_pool_size = 10\nreserve_pool_timeout = 5\n\
             server_connect_timeout = 15\nserver_idle_timeout = 600\nserver_lifetime = 3600\n\
             server_tls_ca_file = {d}/ca.crt\nserver_tls_sslmode = verify-ca\nstats_period = 60\n\
             unix_socket_dir = {run}\nlogfile = {d}/pgmux.log\n",
            pgport = pg.port(),
            auth = seed.auth_user,
            run = run.display(),
        )
    };
    let ini = dir.join("pgbouncer.ini");
    std::fs::write(&ini, render(50)).unwrap();
    let mut mux = Pgmux::spawn(dir.clone(), port, dir.join("pgmux.log"), ini.clone());

    // an application: md5 in the hba, upgraded to SCRAM for the SCRAM verifier auth_query returns
    let app_url = format!(
        "host=127.0.0.1 port={port} dbname=synergyflow user={} password={}",
        seed.app_user, seed.app_password
    );
    let app = connect(&app_url).await.unwrap();
    for _ in 0..10 {
        app.simple_query("select 1").await.unwrap();
    }
    // the server side runs verify-ca TLS (the certificate names shared-postgres-rw, not 127.0.0.1)
    let ssl = pg
        .psql(
            "postgres",
            &format!("select bool_and(s.ssl) from pg_stat_ssl s join pg_stat_activity a using (pid) where a.usename = '{}'", seed.app_user),
        )
        .unwrap();
    assert_eq!(ssl.trim(), "t");
    // applications may use TLS (prefer), checked against the cluster CA
    let out = std::process::Command::new(pg.tool("psql"))
        .args(["-X", "-At", "-c", "select 1"])
        .arg(format!(
            "host=127.0.0.1 port={port} dbname=synergyflow user={} sslmode=verify-ca sslrootcert={d}/ca.crt",
            seed.app_user
        ))
        .env("PGPASSWORD", &seed.app_password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // the manager: pgx over the unix socket, user pgbouncer, simple protocol, these startup params
    let admin_url = format!(
        "host={} port={port} user=pgbouncer dbname=pgbouncer options='-c client_encoding=UTF8 -c datestyle=ISO'",
        run.display()
    );
    let m = connect(&admin_url).await.unwrap();
    let lists = rows_of(&m.simple_query("SHOW LISTS;").await.unwrap());
    assert!(lists.iter().all(|r| r.len() == 2));
    let pools = rows_of(&m.simple_query("SHOW POOLS;").await.unwrap());
    assert!(pools.iter().all(|r| r.len() == 17 && r[16].is_none()));
    assert!(pools.iter().any(|r| r[0].as_deref() == Some("pgbouncer")));
    let stats = rows_of(&m.simple_query("SHOW STATS;").await.unwrap());
    assert!(stats.iter().all(|r| r.len() == 23));
    // spec.pgbouncer.paused: PAUSE blocks until servers are released, RESUME undoes it
    tokio::time::timeout(Duration::from_secs(10), m.simple_query("PAUSE"))
        .await
        .expect("PAUSE returns")
        .unwrap();
    let state = rows_of(&m.simple_query("SHOW STATE").await.unwrap());
    assert_eq!(state[1][1].as_deref(), Some("yes"));
    m.simple_query("RESUME").await.unwrap();
    app.simple_query("select 2").await.unwrap();
    // a regenerated file → RELOAD
    std::fs::write(&ini, render(20)).unwrap();
    m.simple_query("RELOAD").await.unwrap();
    let cfg = rows_of(&m.simple_query("SHOW CONFIG").await.unwrap());
    let dps = cfg
        .iter()
        .find(|r| r[0].as_deref() == Some("default_pool_size"))
        .unwrap();
    assert_eq!(dps[1].as_deref(), Some("20"));
    assert!(!mux.log_text().contains("ERROR"), "{}", mux.log_text());
    // pod stop: the manager sends SIGINT
    drop(app);
    drop(m);
    let code =
        tokio::task::block_in_place(|| mux.signal_and_wait(libc::SIGINT, Duration::from_secs(15)));
    assert_eq!(code, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
