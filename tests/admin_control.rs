//! Admin control commands, RELOAD, signals and the metrics endpoint against a real PostgreSQL.

mod common;

use common::*;
use std::time::{Duration, Instant};

async fn admin(mux: &Pgmux) -> tokio_postgres::Client {
    connect(&mux.url("pgbouncer", "admin", "admin-pw"))
        .await
        .unwrap()
}

async fn show(c: &tokio_postgres::Client, what: &str) -> Vec<Vec<Option<String>>> {
    rows_of(&c.simple_query(&format!("SHOW {what}")).await.unwrap())
}

fn row<'a>(rows: &'a [Vec<Option<String>>], key: &str) -> &'a Vec<Option<String>> {
    rows.iter()
        .find(|r| r[0].as_deref() == Some(key))
        .unwrap_or_else(|| panic!("no row {key} in {rows:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_waits_for_running_transaction_and_holds_new_ones_until_resume() {
    let (pg, seed) = postgres(100);
    let mux = start_with_admin(&pg, &seed, "default_pool_size = 4");
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let a = connect(&url).await.unwrap();
    let b = connect(&url).await.unwrap();
    a.simple_query("create table if not exists p(v int)")
        .await
        .unwrap();
    a.simple_query("begin; insert into p values (1)")
        .await
        .unwrap();

    let adm = admin(&mux).await;
    let pause = tokio::spawn(async move {
        let t = Instant::now();
        adm.simple_query("PAUSE").await.unwrap();
        (adm, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !pause.is_finished(),
        "PAUSE must wait for the open transaction"
    );
    // a new transaction waits while paused
    let b_query = tokio::spawn(async move {
        let t = Instant::now();
        b.simple_query("select 1").await.unwrap();
        t.elapsed()
    });
    // the running transaction completes
    a.simple_query("insert into p values (2); commit")
        .await
        .unwrap();
    let (adm, took) = tokio::time::timeout(Duration::from_secs(5), pause)
        .await
        .expect("PAUSE returns once the transaction ended")
        .unwrap();
    assert!(took >= Duration::from_millis(400));
    assert_eq!(
        row(&show(&adm, "STATE").await, "paused")[1].as_deref(),
        Some("yes")
    );
    // paused: servers are closed, the waiting client still waits
    assert_eq!(backends(&pg, "synergyflow", &seed.app_user), 0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!b_query.is_finished(), "new work is held while paused");
    let e = adm.simple_query("PAUSE").await.unwrap_err();
    assert_eq!(db_error(&e).1, "already suspended/paused");
    adm.simple_query("RESUME").await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(5), b_query)
        .await
        .expect("RESUME releases the waiting client")
        .unwrap();
    assert!(waited >= Duration::from_millis(600), "{waited:?}");
    let n = a.simple_query("select count(*) from p").await.unwrap();
    assert_eq!(rows_of(&n)[0][0].as_deref(), Some("2"));

    // PAUSE of one database leaves the others running; RESUME db undoes it
    adm.simple_query("PAUSE synergyflow").await.unwrap();
    let d = show(&adm, "DATABASES").await;
    assert_eq!(row(&d, "synergyflow")[15].as_deref(), Some("1"));
    let other = connect(&mux.url("postgres", &seed.app_user, &seed.app_password))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(3), other.simple_query("select 1"))
        .await
        .expect("other database not paused")
        .unwrap();
    adm.simple_query("RESUME synergyflow").await.unwrap();
    let e = adm.simple_query("RESUME synergyflow").await.unwrap_err();
    assert_eq!(db_error(&e).1, "database synergyflow is not paused");
    a.simple_query("select 1").await.unwrap();

    // SIGUSR1 pauses, SIGUSR2 resumes
    unsafe { libc::kill(mux.pid() as i32, libc::SIGUSR1) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        row(&show(&adm, "STATE").await, "paused")[1].as_deref(),
        Some("yes")
    );
    unsafe { libc::kill(mux.pid() as i32, libc::SIGUSR2) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        row(&show(&adm, "STATE").await, "active")[1].as_deref(),
        Some("yes")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_pool_size_and_passwords_and_refuses_a_broken_file() {
    let (pg, seed) = postgres(100);
    let mux = start_with_admin(&pg, &seed, "default_pool_size = 2");
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let adm = admin(&mux).await;

    async fn burst(url: &str, n: usize) {
        let mut hs = Vec::new();
        for _ in 0..n {
            let url = url.to_string();
            hs.push(tokio::spawn(async move {
                let c = connect(&url).await.unwrap();
                c.simple_query("select pg_sleep(0.4)").await.unwrap();
                c
            }));
        }
        for h in hs {
            h.await.unwrap();
        }
    }
    burst(&url, 6).await;
    assert!(backends(&pg, "synergyflow", &seed.app_user) <= 2);

    // raise the pool size in the file and RELOAD: the running pool uses it at once
    let ini = std::fs::read_to_string(&mux.ini).unwrap();
    std::fs::write(
        &mux.ini,
        ini.replace("default_pool_size = 2", "default_pool_size = 5"),
    )
    .unwrap();
    adm.simple_query("RELOAD").await.unwrap();
    let d = show(&adm, "DATABASES").await;
    assert_eq!(row(&d, "synergyflow")[5].as_deref(), Some("5"));
    burst(&url, 6).await;
    let n = backends(&pg, "synergyflow", &seed.app_user);
    assert!(
        (3..=5).contains(&n),
        "{n} servers after raising pool_size to 5"
    );

    // a changed password in auth_file: the old one stops working, the new one works
    pg.psql(
        "postgres",
        &format!("ALTER ROLE {} PASSWORD 'rotated-pw'", seed.app_user),
    )
    .unwrap();
    std::fs::write(
        mux.dir.join("userlist.txt"),
        format!(
            "\"{}\" \"rotated-pw\"\n\"admin\" \"admin-pw2\"\n",
            seed.app_user
        ),
    )
    .unwrap();
    unsafe { libc::kill(mux.pid() as i32, libc::SIGHUP) };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = connect(&mux.url("pgbouncer", "admin", "admin-pw"))
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).1, "SASL authentication failed");
    let adm2 = connect(&mux.url("pgbouncer", "admin", "admin-pw2"))
        .await
        .unwrap();
    // RECONNECT + WAIT_CLOSE: the servers logged in with the old password are replaced
    adm2.simple_query("RECONNECT synergyflow").await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        adm2.simple_query("WAIT_CLOSE synergyflow"),
    )
    .await
    .expect("WAIT_CLOSE returns when old servers are gone")
    .unwrap();
    assert_eq!(backends(&pg, "synergyflow", &seed.app_user), 0);
    let c = connect(&mux.url("synergyflow", &seed.app_user, "rotated-pw"))
        .await
        .unwrap();
    c.simple_query("select 1").await.unwrap();
    assert!(connect(&url).await.is_err(), "old password refused");

    // a broken file: RELOAD fails with PgBouncer's error and the old settings stay
    std::fs::write(&mux.ini, "[pgbouncer]\ndefault_pool_size = many\n").unwrap();
    let e = adm2.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "F0000".into(),
            "RELOAD failed, see logs for additional details".into()
        )
    );
    assert!(
        mux.log_text().contains("default_pool_size"),
        "the log names the key"
    );
    let cfg = show(&adm2, "CONFIG").await;
    assert_eq!(row(&cfg, "default_pool_size")[1].as_deref(), Some("5"));
    c.simple_query("select 1").await.unwrap();

    // SET changes a changeable setting at runtime
    adm2.simple_query("SET default_pool_size = 3")
        .await
        .unwrap();
    let d = show(&adm2, "DATABASES").await;
    assert_eq!(row(&d, "synergyflow")[5].as_deref(), Some("3"));

    // a database whose host changed: its idle servers are closed, new ones go to the new host
    let grown = ini.replace("default_pool_size = 2", "default_pool_size = 5");
    std::fs::write(&mux.ini, &grown).unwrap();
    adm2.simple_query("RELOAD").await.unwrap();
    c.simple_query("select 1").await.unwrap();
    assert!(backends(&pg, "synergyflow", &seed.app_user) >= 1);
    let moved = grown.replace(
        "synergyflow = host=127.0.0.1",
        "synergyflow = host=localhost",
    );
    assert_ne!(moved, grown);
    std::fs::write(&mux.ini, moved).unwrap();
    adm2.simple_query("RELOAD").await.unwrap();
    assert_eq!(
        backends(&pg, "synergyflow", &seed.app_user),
        0,
        "idle servers of the moved database are closed at once"
    );
    let d = show(&adm2, "DATABASES").await;
    assert_eq!(row(&d, "synergyflow")[1].as_deref(), Some("localhost"));
    c.simple_query("select 1").await.unwrap();
    let servers = show(&adm2, "SERVERS").await;
    assert!(
        servers
            .iter()
            .any(|r| r[2].as_deref() == Some("synergyflow"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_client_disable_and_kill_database() {
    let (pg, seed) = postgres(100);
    let mux = start_with_admin(&pg, &seed, "");
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let victim = connect(&format!("{url} application_name=victim"))
        .await
        .unwrap();
    let bystander = connect(&format!("{url} application_name=bystander"))
        .await
        .unwrap();
    victim.simple_query("select 1").await.unwrap();
    bystander.simple_query("select 1").await.unwrap();
    let adm = admin(&mux).await;
    let clients = show(&adm, "CLIENTS").await;
    let id = clients
        .iter()
        .find(|r| r[18].as_deref() == Some("victim"))
        .expect("victim in SHOW CLIENTS")[20]
        .clone()
        .unwrap();
    adm.simple_query(&format!("KILL_CLIENT {id}"))
        .await
        .unwrap();
    // the client is gone (the FATAL may race with the socket closing, so check the log too)
    assert!(victim.simple_query("select 1").await.is_err());
    assert!(
        mux.log_text()
            .contains("closing because: admin forced disconnect")
    );
    bystander.simple_query("select 1").await.unwrap();
    let e = adm
        .simple_query(&format!("KILL_CLIENT {id}"))
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).1, "client not found");

    // DISABLE: new logins refused, existing clients keep working; ENABLE undoes it
    adm.simple_query("DISABLE synergyflow").await.unwrap();
    let e = connect(&url).await.unwrap_err();
    assert_eq!(db_error(&e).1, "database \"synergyflow\" is disabled");
    bystander.simple_query("select 1").await.unwrap();
    adm.simple_query("ENABLE synergyflow").await.unwrap();
    connect(&url)
        .await
        .unwrap()
        .simple_query("select 1")
        .await
        .unwrap();

    // KILL db: its clients are dropped with "database removed", it stays paused until RESUME
    adm.simple_query("KILL synergyflow").await.unwrap();
    assert!(bystander.simple_query("select 1").await.is_err());
    assert!(mux.log_text().contains("closing because: database removed"));
    let late = connect(&url).await.unwrap();
    let q = tokio::spawn(async move { late.simple_query("select 1").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!q.is_finished(), "killed database stays paused");
    adm.simple_query("RESUME").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), q)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_transactions_finish_and_refuses_new_connections() {
    let (pg, seed) = postgres(100);
    let mut mux = start_with_admin(&pg, &seed, "default_pool_size = 10");
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let setup = connect(&url).await.unwrap();
    setup.simple_query("create table s(v int)").await.unwrap();
    let mut inflight = Vec::new();
    for i in 0..8 {
        let c = connect(&url).await.unwrap();
        inflight.push(tokio::spawn(async move {
            c.simple_query(&format!(
                "begin; insert into s values ({i}); select pg_sleep(1); commit"
            ))
            .await
            .map(|_| ())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = mux.pid();
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        connect(&url).await.is_err(),
        "new connections are refused after SIGINT"
    );
    for h in inflight {
        h.await.unwrap().expect("in-flight transaction completes");
    }
    let code = tokio::task::block_in_place(|| mux.signal_and_wait(0, Duration::from_secs(10)));
    assert_eq!(code, Some(0), "exits once servers are released");
    let n = pg.psql("synergyflow", "select count(*) from s").unwrap();
    assert_eq!(n.trim(), "8", "every in-flight transaction committed");
}

/// pgmux extension for Kubernetes (which sends SIGTERM): `sigterm_shutdown = wait_for_servers`
/// makes SIGTERM drain as SIGINT does, so clients that never leave (JDBC pools) do not hold
/// the pod until SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_can_drain_like_sigint() {
    let (pg, seed) = postgres(100);
    let mut mux = start_with_admin(&pg, &seed, "sigterm_shutdown = wait_for_servers");
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let idle = connect(&url).await.unwrap();
    idle.simple_query("create table t(v int)").await.unwrap();
    let mut inflight = Vec::new();
    for i in 0..4 {
        let c = connect(&url).await.unwrap();
        inflight.push(tokio::spawn(async move {
            c.simple_query(&format!(
                "begin; insert into t values ({i}); select pg_sleep(1); commit"
            ))
            .await
            .map(|_| ())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    unsafe { libc::kill(mux.pid() as i32, libc::SIGTERM) };
    for h in inflight {
        h.await.unwrap().expect("in-flight transaction completes");
    }
    // the idle client is still connected, and pgmux exits anyway
    let code = tokio::task::block_in_place(|| mux.signal_and_wait(0, Duration::from_secs(10)));
    assert_eq!(code, Some(0), "exits once servers are released");
    assert!(idle.simple_query("select 1").await.is_err());
    let n = pg.psql("synergyflow", "select count(*) from t").unwrap();
    assert_eq!(n.trim(), "4");
    assert!(
        mux.log_text()
            .contains("sigterm_shutdown = wait_for_servers")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_clients_to_leave() {
    let (pg, seed) = postgres(100);
    let mut mux = start_with_admin(&pg, &seed, "");
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let c = connect(&url).await.unwrap();
    c.simple_query("select 1").await.unwrap();
    unsafe { libc::kill(mux.pid() as i32, libc::SIGTERM) };
    tokio::time::sleep(Duration::from_millis(800)).await;
    // still running: the connected client keeps working, new ones are refused
    c.simple_query("select 2").await.unwrap();
    assert!(connect(&url).await.is_err());
    drop(c);
    let code = tokio::task::block_in_place(|| mux.signal_and_wait(0, Duration::from_secs(10)));
    assert_eq!(code, Some(0));

    // a second SIGTERM (or SIGINT) exits at once even with clients connected; SIGQUIT too
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut mux = start_with_admin(&pg, &seed, "");
        let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
        let c = connect(&url).await.unwrap();
        c.simple_query("begin").await.unwrap();
        unsafe { libc::kill(mux.pid() as i32, sig) };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        let code = tokio::task::block_in_place(|| mux.signal_and_wait(sig, Duration::from_secs(5)));
        assert_eq!(code, Some(0));
        assert!(t.elapsed() < Duration::from_secs(2));
    }
    let mut mux = start_with_admin(&pg, &seed, "");
    let c = connect(&mux.url("synergyflow", &seed.app_user, &seed.app_password))
        .await
        .unwrap();
    c.simple_query("begin").await.unwrap();
    let code =
        tokio::task::block_in_place(|| mux.signal_and_wait(libc::SIGQUIT, Duration::from_secs(3)));
    assert_eq!(code, Some(0), "SIGQUIT exits immediately");
}

/// Parse Prometheus text: every non-comment line is `name{labels} value`.
fn parse_prom(body: &str) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for line in body.lines() {
        if line.is_empty() || line.starts_with('#') {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let kind = rest.split(' ').nth(1).unwrap();
                assert!(["gauge", "counter", "histogram"].contains(&kind), "{line}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                assert!(l.ends_with('}'), "{line}");
                (n.to_string(), l.trim_end_matches('}').to_string())
            }
            None => (series.to_string(), String::new()),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        let v: f64 = value.parse().expect(line);
        out.push((name, labels, v));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_matches_show_pools_and_probes() {
    let (mut pg, seed) = postgres(100);
    let mport = free_port();
    let mux = start_with_admin(
        &pg,
        &seed,
        &format!(
            "metrics_listen = 127.0.0.1:{mport}\nstats_period = 1\nlog_stats = 1\nlog_format = json"
        ),
    );
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let c = connect(&url).await.unwrap();
    for _ in 0..10 {
        c.simple_query("select 1").await.unwrap();
    }
    let adm = admin(&mux).await;
    let pools = show(&adm, "POOLS").await;
    let (code, body) = tokio::task::block_in_place(|| http_get(mport, "/metrics"));
    assert_eq!(code, 200);
    let m = parse_prom(&body);
    let get = |name: &str, labels: &str| {
        m.iter()
            .find(|(n, l, _)| n == name && l.contains(labels))
            .unwrap_or_else(|| panic!("{name}{{{labels}}} missing"))
            .2
    };
    let p = row(&pools, "synergyflow");
    let lbl = format!("database=\"synergyflow\",user=\"{}\"", seed.app_user);
    for (metric, col) in [
        ("pgbouncer_pools_client_active_connections", 2),
        ("pgbouncer_pools_client_waiting_connections", 3),
        ("pgbouncer_pools_server_active_connections", 6),
        ("pgbouncer_pools_server_idle_connections", 9),
        ("pgbouncer_pools_server_login_connections", 12),
    ] {
        assert_eq!(
            get(metric, &lbl),
            p[col].as_ref().unwrap().parse::<f64>().unwrap(),
            "{metric}"
        );
    }
    assert!(
        get(
            "pgbouncer_stats_totals_queries_pooled_total",
            "database=\"synergyflow\""
        ) >= 10.0
    );
    assert!(
        get(
            "pgbouncer_stats_totals_sql_transactions_pooled_total",
            "database=\"synergyflow\""
        ) >= 10.0
    );
    assert_eq!(get("pgbouncer_up", ""), 1.0);
    assert!(get("pgmux_query_duration_seconds_count", &lbl) >= 10.0);
    assert!(get("pgmux_query_duration_seconds_bucket", "le=\"+Inf\"") >= 10.0);
    assert!(get("pgbouncer_databases_pool_size", "name=\"synergyflow\"") == 50.0);
    assert_eq!(
        get(
            "pgbouncer_pools_client_active_connections",
            "database=\"pgbouncer\""
        ),
        1.0
    );

    // probes
    assert_eq!(
        tokio::task::block_in_place(|| http_get(mport, "/healthz")).0,
        200
    );
    assert_eq!(
        tokio::task::block_in_place(|| http_get(mport, "/readyz")).0,
        200
    );
    assert_eq!(
        tokio::task::block_in_place(|| http_get(mport, "/nope")).0,
        404
    );

    // the stats line, as JSON lines
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = mux.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("xacts/s"))
        .expect("stats_period line");
    assert!(
        line.starts_with("{\"time\":") && line.contains("\"level\":\"LOG\""),
        "{line}"
    );
    assert!(line.contains("\"message\":\"stats: "), "{line}");
    assert!(
        log.lines().all(|l| l.starts_with('{') && l.ends_with('}')),
        "{log}"
    );

    // PostgreSQL gone: not ready
    pg.stop();
    let (code, body) = tokio::task::block_in_place(|| http_get(mport, "/readyz"));
    assert_eq!(code, 503, "{body}");
    assert_eq!(
        tokio::task::block_in_place(|| http_get(mport, "/healthz")).0,
        200
    );
}
