//! The shipped local-dev setup works as written: deploy/compose/init.sql in a throwaway PostgreSQL and deploy/compose/pgbouncer.ini (auth_query through the pooler user, server named `postgres` resolved by DNS) served by pgmux.

mod common;

use common::*;
use pgmux::dev::{PgOptions, TempPostgres};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_files_serve_as_written() {
    let pg = TempPostgres::start(&PgOptions::default()).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose");
    // as docker-entrypoint-initdb.d runs it: statement by statement (CREATE DATABASE cannot
    // run in a transaction block)
    let init = std::fs::read_to_string(root.join("init.sql")).unwrap();
    let sql: String = init
        .lines()
        .filter(|l| !l.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    for stmt in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        pg.psql("postgres", stmt)
            .unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }

    let (dns_port, hits) = fake_dns::serve(&["postgres."]);
    let dir = std::env::temp_dir().join(format!("pgmux-compose-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("resolv.conf"),
        format!("nameserver 127.0.0.1:{dns_port}\n"),
    )
    .unwrap();
    std::fs::copy(root.join("userlist.txt"), dir.join("userlist.txt")).unwrap();
    let (port, metrics) = (free_port(), free_port());
    let log = dir.join("pgmux.log");
    // only what differs between a container and this test: ports, file paths, the resolver
    let ini = std::fs::read_to_string(root.join("pgbouncer.ini"))
        .unwrap()
        .replace("port=5432", &format!("port={}", pg.port()))
        .replace("listen_addr = *", "listen_addr = 127.0.0.1")
        .replace("listen_port = 6432", &format!("listen_port = {port}"))
        .replace("0.0.0.0:9127", &format!("127.0.0.1:{metrics}"))
        .replace("/etc/pgbouncer", &dir.display().to_string())
        + &format!(
            "resolv_conf = {}\nlogfile = {}\n",
            dir.join("resolv.conf").display(),
            log.display()
        );
    let ini_path = dir.join("pgbouncer.ini");
    std::fs::write(&ini_path, ini).unwrap();
    let mux = Pgmux::spawn(dir, port, log, ini_path);

    let app = connect(&mux.url("synergyflow", "synergyflow_app", "synergyflow-dev-password"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", mux.log_text()));
    let who: String = app
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "synergyflow_app");
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let bad = connect(&mux.url("synergyflow", "synergyflow_app", "wrong")).await;
    assert_eq!(db_error(&bad.unwrap_err()).1, "SASL authentication failed");

    let admin = connect(&mux.url("pgbouncer", "admin", "admin-dev-password"))
        .await
        .unwrap();
    let pools = rows_of(&admin.simple_query("SHOW POOLS").await.unwrap());
    assert!(
        pools.iter().any(|r| r[0].as_deref() == Some("synergyflow")
            && r[1].as_deref() == Some("synergyflow_app")),
        "{pools:?}"
    );
    let (code, body) = http_get(metrics, "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("pgbouncer_up 1"), "{body}");
}

/// The `pgbouncer.ini` embedded in a ConfigMap manifest (the literal block under `pgbouncer.ini: |`).
fn configmap_ini(path: &str) -> String {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap();
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim_start().starts_with("pgbouncer.ini: |") {
            inside = true;
            continue;
        }
        if inside {
            match line.strip_prefix("    ") {
                Some(l) => out.push_str(l),
                None if line.trim().is_empty() => {}
                None => break,
            }
            out.push('\n');
        }
    }
    out
}

/// `pgmux check` on a file, run with the given host name (a private UTS namespace, root only).
fn check_as_host(ini: &std::path::Path, hostname: &str) -> (bool, String) {
    let out = std::process::Command::new("unshare")
        .args([
            "-u",
            "sh",
            "-c",
            "hostname \"$1\" && exec \"$2\" check \"$3\"",
            "sh",
        ])
        .arg(hostname)
        .arg(env!("CARGO_BIN_EXE_pgmux"))
        .arg(ini)
        .output()
        .expect("unshare");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The Kubernetes ConfigMaps parse as pgmux reads them; in the peered StatefulSet every replica
/// finds its own peer_id from its pod name (peer_id = auto), and a foreign host name is refused.
#[test]
fn kubernetes_configmaps_parse_and_each_replica_finds_its_peer_id() {
    let dir = std::env::temp_dir().join(format!("pgmux-k8s-ini-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plain = dir.join("plain.ini");
    std::fs::write(&plain, configmap_ini("deploy/kubernetes/configmap.yaml")).unwrap();
    let (ok, out) = check_as_host(&plain, "synergyflow-pooler-7d9f-abcde");
    assert!(ok, "{out}");
    assert!(
        out.contains("* -> host=shared-postgres-rw.cnpg-system.svc"),
        "{out}"
    );

    let peered = dir.join("peered.ini");
    std::fs::write(
        &peered,
        configmap_ini("deploy/kubernetes-peered/configmap.yaml"),
    )
    .unwrap();
    for ordinal in 0..3 {
        let (ok, out) = check_as_host(&peered, &format!("synergyflow-pooler-{ordinal}"));
        assert!(ok, "{out}");
        assert!(
            out.contains(&format!("(this instance: peer_id {})", ordinal + 1)),
            "{out}"
        );
    }
    let (ok, out) = check_as_host(&peered, "some-other-host");
    assert!(!ok);
    assert!(out.contains("peer_id: auto: no [peers] entry"), "{out}");
}
