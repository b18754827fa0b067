//! The command line: `pgmux check`, config errors naming file/line/key, unix socket listener, signals.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn pgmux() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgmux"))
}

#[test]
fn check_accepts_the_seed_config_and_reports_bad_ones() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = pgmux()
        .args(["check", &format!("{root}/config/synergyflow-pooler.ini")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("configuration OK"), "{text}");
    assert!(text.contains("max_client_conn"), "{text}");

    let dir = std::env::temp_dir().join(format!("pgmux-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.ini");
    std::fs::write(
        &bad,
        "[databases]\n\n[pgbouncer]\nlisten_port = 6432\nmax_client_conn = lots\n",
    )
    .unwrap();
    let out = pgmux()
        .args(["check", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.ini:5") && err.contains("max_client_conn"),
        "{err}"
    );

    std::fs::write(&bad, "[pgbouncer]\nno_such_setting = 1\n").unwrap();
    let out = pgmux()
        .args(["check", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.ini:2") && err.contains("no_such_setting"),
        "{err}"
    );

    // the same error stops the pooler itself, before it listens
    let out = pgmux().arg(bad.to_str().unwrap()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_and_graceful_sigterm() {
    let (pg, seed) = postgres(50);
    let mut mux = Pgmux::start(&pg, "", &[(&seed.app_user, &seed.app_password)]);
    let url = format!(
        "host={} port={} dbname=synergyflow user={} password={}",
        mux.dir.display(),
        mux.port,
        seed.app_user,
        seed.app_password
    );
    let c = connect(&url).await.unwrap();
    assert_eq!(
        c.query_one("select 5", &[]).await.unwrap().get::<_, i32>(0),
        5
    );
    assert!(mux.log_text().contains("@unix("), "{}", mux.log_text());
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // SIGTERM with no clients left: clean exit
    let code = tokio::task::block_in_place(|| mux.signal_and_wait(15, Duration::from_secs(10)));
    assert_eq!(code, Some(0));
}
