//! Pool limits and the pool's life: max_db/user_connections with eviction, reserve pool,
//! min_pool_size, client caps, server_idle_timeout and server_lifetime.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn count(pg: &pgmux::dev::TempPostgres, users: &str) -> usize {
    pg.psql(
        "postgres",
        &format!("select count(*) from pg_stat_activity where usename in ({users})"),
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

async fn wait_for(mut f: impl FnMut() -> bool, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f()
}

const USERS: &[(&str, &str)] = &[
    ("trust_user", "x"),
    ("md5_user", "md5-password"),
    ("plain_user", "plain-password"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_connections_evicts_idle_servers_of_other_pools() {
    let (pg, _seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "auth_type = trust\ndefault_pool_size = 5\nmax_db_connections = 2\nquery_wait_timeout = 2",
        USERS,
    );
    let a1 = connect(&mux.url("postgres", "trust_user", ""))
        .await
        .unwrap();
    let a2 = connect(&mux.url("postgres", "trust_user", ""))
        .await
        .unwrap();
    a1.batch_execute("begin; select 1").await.unwrap();
    a2.batch_execute("begin; select 1").await.unwrap();
    // the database is at its cap: md5_user waits and times out
    let b = connect(&mux.url("postgres", "md5_user", "")).await;
    let e = match b {
        Err(e) => e,
        Ok(b) => b.simple_query("select 1").await.unwrap_err(),
    };
    assert_eq!(db_error(&e), ("08P01".into(), "query_wait_timeout".into()));
    assert!(count(&pg, "'trust_user','md5_user'") <= 2);
    // trust_user's servers go idle; md5_user gets one by evicting an idle server of the other pool
    a1.batch_execute("commit").await.unwrap();
    a2.batch_execute("commit").await.unwrap();
    let b = connect(&mux.url("postgres", "md5_user", "")).await.unwrap();
    assert_eq!(b.simple_query("select 1").await.unwrap().len(), 3);
    assert!(count(&pg, "'trust_user','md5_user'") <= 2);
    assert!(
        mux.log_text().contains("closing because: evicted"),
        "{}",
        mux.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_pool_after_reserve_pool_timeout() {
    let (pg, _seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "auth_type = trust\ndefault_pool_size = 1\nreserve_pool_size = 1\nreserve_pool_timeout = 0.5\nquery_wait_timeout = 10",
        USERS,
    );
    let url = mux.url("postgres", "trust_user", "");
    let a = connect(&url).await.unwrap();
    a.batch_execute("begin; select 1").await.unwrap();
    let b = connect(&url).await;
    let t = Instant::now();
    let b = b.unwrap();
    assert_eq!(b.simple_query("select 2").await.unwrap().len(), 3);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(
        mux.log_text()
            .contains("taking connection from reserve_pool"),
        "{}",
        mux.log_text()
    );
    assert_eq!(count(&pg, "'trust_user'"), 2);
    a.batch_execute("commit").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_idle_timeout_and_lifetime() {
    let (pg, _seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "auth_type = trust\ndefault_pool_size = 5\nmin_pool_size = 3\nserver_idle_timeout = 1",
        USERS,
    );
    let c = connect(&mux.url("postgres", "trust_user", ""))
        .await
        .unwrap();
    c.simple_query("select 1").await.unwrap();
    // min_pool_size connections appear once a client is connected
    assert!(
        wait_for(|| count(&pg, "'trust_user'") == 3, 5).await,
        "saw {}",
        count(&pg, "'trust_user'")
    );
    // server_idle_timeout never goes below min_pool_size
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(count(&pg, "'trust_user'") >= 3);
    drop(c);

    // server_lifetime: a connection older than 1 s is closed when released
    let l = Pgmux::start(
        &pg,
        "auth_type = trust\ndefault_pool_size = 5\nserver_lifetime = 1",
        USERS,
    );
    let e = connect(&l.url("postgres", "plain_user", "")).await.unwrap();
    e.batch_execute("begin; select pg_sleep(1.2); commit")
        .await
        .unwrap();
    assert!(
        wait_for(
            || l.log_text()
                .contains("closing because: server lifetime over"),
            3
        )
        .await,
        "{}",
        l.log_text()
    );
    assert!(wait_for(|| count(&pg, "'plain_user'") == 0, 3).await);

    // server_idle_timeout with min_pool_size 0: the idle server goes
    let m = Pgmux::start(
        &pg,
        "auth_type = trust\ndefault_pool_size = 5\nserver_idle_timeout = 1",
        USERS,
    );
    let d = connect(&m.url("postgres", "md5_user", "")).await.unwrap();
    d.simple_query("select 1").await.unwrap();
    assert_eq!(count(&pg, "'md5_user'"), 1);
    assert!(
        wait_for(|| count(&pg, "'md5_user'") == 0, 4).await,
        "idle server not closed"
    );
    assert!(
        m.log_text()
            .contains("closing because: server idle timeout")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_caps_per_database_and_user() {
    let (pg, _seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "auth_type = trust\nmax_db_client_connections = 2\nmax_user_client_connections = 1",
        USERS,
    );
    let _a = connect(&mux.url("postgres", "trust_user", ""))
        .await
        .unwrap();
    let e = connect(&mux.url("postgres", "trust_user", ""))
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "08P01".into(),
            "client connections exceeded (max_user_client_connections)".into()
        )
    );
    let _b = connect(&mux.url("postgres", "md5_user", "")).await.unwrap();
    let e = connect(&mux.url("postgres", "plain_user", ""))
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "08P01".into(),
            "client connections exceeded (max_db_client_connections)".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_and_back_fast_fail_then_recovery() {
    let (mut pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "server_login_retry = 1\nquery_wait_timeout = 5",
        &[(&seed.app_user, &seed.app_password)],
    );
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let c = connect(&url).await.unwrap();
    c.simple_query("select 1").await.unwrap();
    tokio::task::block_in_place(|| pg.stop());

    // the idle server died with PostgreSQL; the next query cannot get a new one
    let t = Instant::now();
    let e = c.simple_query("select 1").await.unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "client hung: {:?}",
        t.elapsed()
    );
    let (code, msg) = db_error(&e);
    assert!(!msg.is_empty(), "{code} {msg}");
    // while logins keep failing, a new client (greeted from the cached welcome) gets the cached
    // error at once on its first query
    let t = Instant::now();
    let n = connect(&url).await.unwrap();
    let e = n.simple_query("select 1").await.unwrap_err();
    let (_, msg) = db_error(&e);
    assert!(
        msg.starts_with("server login has been failing, cached error: "),
        "{msg}"
    );
    assert!(msg.ends_with("(server_login_retry)"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(2));

    // PostgreSQL is back: after server_login_retry the pool recovers by itself
    tokio::task::block_in_place(|| pg.start_again()).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let d = connect(&url).await.unwrap();
    assert_eq!(d.simple_query("select 1").await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_notify_tells_queued_clients() {
    let (pg, _seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "auth_type = trust\ndefault_pool_size = 1\nquery_wait_notify = 1",
        USERS,
    );
    let a = connect(&mux.url("postgres", "trust_user", ""))
        .await
        .unwrap();
    a.batch_execute("begin; select 1").await.unwrap();
    let conn = format!(
        "host=127.0.0.1 port={} dbname=postgres user=trust_user",
        mux.port
    );
    let psql = pg.tool("psql");
    let waiter = std::thread::spawn(move || {
        std::process::Command::new(psql)
            .args(["-X", "-At", "-c", "select 7", &conn])
            .output()
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(2000)).await;
    a.batch_execute("commit").await.unwrap();
    let out = tokio::task::block_in_place(|| waiter.join().unwrap());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "7");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("No server connection available in postgres backend, client being queued"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_check_query_runs_after_server_check_delay() {
    let (pg, seed) = postgres(100);
    pg.psql("synergyflow", "CREATE SEQUENCE pgmux_checks; GRANT USAGE, SELECT, UPDATE ON SEQUENCE pgmux_checks TO synergyflow_app")
        .unwrap();
    let mux = Pgmux::start(
        &pg,
        "server_check_delay = 0\nserver_check_query = select nextval('pgmux_checks')",
        &[(&seed.app_user, &seed.app_password)],
    );
    let c = connect(&mux.url("synergyflow", &seed.app_user, &seed.app_password))
        .await
        .unwrap();
    for _ in 0..5 {
        c.simple_query("select 1").await.unwrap();
    }
    let n: i64 = pg
        .psql("synergyflow", "select last_value from pgmux_checks")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(n >= 5, "check query ran {n} times for 5 transactions");
    // with the default delay (30 s) a busy server is not checked
    let m = Pgmux::start(
        &pg,
        "server_check_query = select nextval('pgmux_checks')",
        &[(&seed.app_user, &seed.app_password)],
    );
    let d = connect(&m.url("synergyflow", &seed.app_user, &seed.app_password))
        .await
        .unwrap();
    for _ in 0..5 {
        d.simple_query("select 1").await.unwrap();
    }
    let n2: i64 = pg
        .psql("synergyflow", "select last_value from pgmux_checks")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(n2, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_login_timeouts() {
    let (pg, seed) = postgres(50);
    // a server that accepts TCP and never answers
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    let mux = Pgmux::start(
        &pg,
        &format!(
            "server_connect_timeout = 1\nclient_login_timeout = 1\nauth_type = trust\n\
             [databases]\nblackhole = host=127.0.0.1 port={hole_port} dbname=x"
        ),
        &[(&seed.app_user, &seed.app_password)],
    );
    let t = Instant::now();
    let e = connect(&mux.url("blackhole", &seed.app_user, "x"))
        .await
        .unwrap_err();
    assert_eq!(db_error(&e), ("08P01".into(), "connect timeout".into()));
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    assert!(
        mux.log_text()
            .contains("server login failed: connect timeout")
    );

    // a client that sends nothing after connecting is dropped after client_login_timeout
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", mux.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let err = read_error(&mut s);
    assert_eq!(
        err,
        Some((
            "FATAL".into(),
            "08P01".into(),
            "client_login_timeout".into()
        ))
    );
    assert!(t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_millis(2500));
    drop(hole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lifetime_zero_means_use_once() {
    let (pg, _seed) = postgres(50);
    let mux = Pgmux::start(&pg, "auth_type = trust\nserver_lifetime = 0", USERS);
    let c = connect(&mux.url("postgres", "trust_user", ""))
        .await
        .unwrap();
    let mut pids = std::collections::HashSet::new();
    for _ in 0..3 {
        let r = c.simple_query("select pg_backend_pid()").await.unwrap();
        if let tokio_postgres::SimpleQueryMessage::Row(row) = &r[1] {
            pids.insert(row.get(0).unwrap().to_string());
        }
    }
    assert_eq!(pids.len(), 3, "each transaction should get a fresh server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_user_connections_and_per_user_pool_size() {
    let (pg, _seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "auth_type = trust\ndefault_pool_size = 5\nquery_wait_timeout = 1\n\
         [users]\ntrust_user = max_user_connections=1\nmd5_user = pool_size=1",
        USERS,
    );
    // max_user_connections: trust_user's second database cannot get a server while the first holds one
    let a = connect(&mux.url("postgres", "trust_user", ""))
        .await
        .unwrap();
    a.batch_execute("begin; select 1").await.unwrap();
    let t = Instant::now();
    // the new pool has no server yet, so even the login waits for one
    let e = match connect(&mux.url("aliasdb", "trust_user", "")).await {
        Err(e) => e,
        Ok(b) => b.simple_query("select 1").await.unwrap_err(),
    };
    assert_eq!(db_error(&e), ("08P01".into(), "query_wait_timeout".into()));
    assert!(t.elapsed() < Duration::from_millis(2400));
    assert_eq!(count(&pg, "'trust_user'"), 1);
    a.batch_execute("commit").await.unwrap();
    // per-user pool_size = 1
    let m1 = connect(&mux.url("postgres", "md5_user", "")).await.unwrap();
    m1.batch_execute("begin; select 1").await.unwrap();
    let m2 = connect(&mux.url("postgres", "md5_user", "")).await.unwrap();
    let e = m2.simple_query("select 1").await.unwrap_err();
    assert_eq!(db_error(&e).1, "query_wait_timeout");
    assert_eq!(count(&pg, "'md5_user'"), 1);
    m1.batch_execute("commit").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_transaction_only_affects_its_client() {
    let (pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "default_pool_size = 4",
        &[(&seed.app_user, &seed.app_password)],
    );
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let victim = connect(&url).await.unwrap();
    let other = connect(&url).await.unwrap();
    victim.batch_execute("begin").await.unwrap();
    let pid: i32 = victim
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    other.batch_execute("begin").await.unwrap();
    tokio::task::block_in_place(|| {
        pg.psql("postgres", &format!("select pg_terminate_backend({pid})"))
            .unwrap()
    });
    let e = victim.simple_query("select 1").await.unwrap_err();
    let (code, msg) = db_error(&e);
    assert!(
        code == "57P01" || msg.contains("server conn crashed?") || msg.contains("closed"),
        "{code} {msg}"
    );
    // the other client's transaction is untouched, and new clients are served
    assert_eq!(other.simple_query("select 1").await.unwrap().len(), 3);
    other.batch_execute("commit").await.unwrap();
    let n = connect(&url).await.unwrap();
    assert_eq!(n.simple_query("select 1").await.unwrap().len(), 3);
    // a server terminated while idle is replaced without any client seeing an error
    let pids = pg.psql("postgres", "select pg_terminate_backend(pid) from pg_stat_activity where usename = 'synergyflow_app'").unwrap();
    assert!(!pids.trim().is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(n.simple_query("select 1").await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_login_timeout_covers_the_auth_exchange() {
    use std::io::Write;
    let (pg, seed) = postgres(50);
    let mux = Pgmux::start(
        &pg,
        "client_login_timeout = 1",
        &[(&seed.app_user, &seed.app_password)],
    );
    // a client that sends its startup packet and then never answers the SCRAM request
    let mut s = std::net::TcpStream::connect(("127.0.0.1", mux.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&startup_packet("synergyflow_app", "synergyflow"))
        .unwrap();
    let t = Instant::now();
    assert!(read_error(&mut s).is_none(), "expected the SASL request");
    assert_eq!(
        read_error(&mut s),
        Some((
            "FATAL".into(),
            "08P01".into(),
            "client_login_timeout".into()
        ))
    );
    assert!(t.elapsed() < Duration::from_millis(2500));
}

/// Counts TCP connections a server that never answers accepts (they stay open until `stop`).
fn silent_server() -> (
    u16,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    hole.set_nonblocking(true).unwrap();
    let port = hole.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (a, s) = (accepted.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while !s.load(Ordering::Relaxed) {
            match hole.accept() {
                Ok((sock, _)) => {
                    held.push(sock);
                    a.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (port, accepted, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connects_in_flight_per_pool_are_capped() {
    // PgBouncer opens one server connection per pool at a time; so does pgmux by default
    // (server_connect_concurrency = 1), and more at once when configured (0 = no limit)
    let (pg, seed) = postgres(50);
    for (setting, expected) in [
        ("", 1usize),
        ("server_connect_concurrency = 3", 3),
        ("server_connect_concurrency = 0", 8),
    ] {
        let (port, accepted, stop) = silent_server();
        let mux = Pgmux::start(
            &pg,
            &format!(
                "server_connect_timeout = 3\nauth_type = trust\n{setting}\n\
                 [databases]\nsilent = host=127.0.0.1 port={port} dbname=x"
            ),
            &[(&seed.app_user, &seed.app_password)],
        );
        // eight clients log in at once: each needs a server (for the welcome parameters)
        let url = mux.url("silent", &seed.app_user, "x");
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { connect(&url).await.map(|_| ()) })
            })
            .collect();
        let seen = wait_for(
            || accepted.load(std::sync::atomic::Ordering::SeqCst) >= expected,
            2,
        )
        .await;
        // give a wrongly uncapped pool time to open more before counting
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            seen && n == expected,
            "{setting:?}: {n} connects in flight, expected {expected}"
        );
        for c in clients {
            let e = c.await.unwrap().unwrap_err();
            assert_eq!(db_error(&e), ("08P01".into(), "connect timeout".into()));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
