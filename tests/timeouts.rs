//! The janitor's client timeouts with PgBouncer's messages: query_timeout (and its [users] override),
//! idle_transaction_timeout, transaction_timeout, client_idle_timeout.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Connect and keep the connection future, whose result carries an unsolicited FATAL.
async fn connect_watch(
    url: &str,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    (c, tokio::spawn(conn))
}

async fn fatal_of(
    h: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) -> (String, String) {
    let r = tokio::time::timeout(Duration::from_secs(10), h)
        .await
        .expect("connection did not end")
        .unwrap();
    db_error(&r.expect_err("connection ended without an error"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_timeouts_fire_with_pgbouncer_messages() {
    let (pg, seed) = postgres(100);
    let users: &[(&str, &str)] = &[
        (&seed.app_user, &seed.app_password),
        ("md5_user", "md5-password"),
    ];
    // query_timeout only for synergyflow_app ([users] override), idle-transaction and client-idle globally
    let mux = Pgmux::start(
        &pg,
        "idle_transaction_timeout = 1\nclient_idle_timeout = 2\n[users]\nsynergyflow_app = query_timeout=1",
        users,
    );
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);

    // query timeout: the server connection is dropped and the client gets `query timeout`
    let (c, _h) = connect_watch(&url).await;
    let t = Instant::now();
    let e = c.simple_query("select pg_sleep(10)").await.unwrap_err();
    let el = t.elapsed();
    assert_eq!(db_error(&e), ("08P01".into(), "query timeout".into()));
    assert!(
        el >= Duration::from_millis(900) && el < Duration::from_millis(2400),
        "{el:?}"
    );
    // md5_user has no query_timeout: a 1.5 s query completes
    let m = connect(&mux.url("postgres", "md5_user", "md5-password"))
        .await
        .unwrap();
    m.simple_query("select pg_sleep(1.5)").await.unwrap();

    // idle in transaction for longer than 1 s
    let (c, h) = connect_watch(&url).await;
    c.batch_execute("begin").await.unwrap();
    let t = Instant::now();
    assert_eq!(
        fatal_of(h).await,
        ("08P01".into(), "idle transaction timeout".into())
    );
    assert!(
        t.elapsed() < Duration::from_millis(2400),
        "{:?}",
        t.elapsed()
    );
    // the backend's transaction is gone
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle_tx = pg
        .psql(
            "postgres",
            "select count(*) from pg_stat_activity where state like 'idle in transaction%'",
        )
        .unwrap();
    assert_eq!(idle_tx.trim(), "0");

    // a client with no server for longer than client_idle_timeout
    let (_c, h) = connect_watch(&url).await;
    let t = Instant::now();
    assert_eq!(
        fatal_of(h).await,
        ("08P01".into(), "client_idle_timeout".into())
    );
    let el = t.elapsed();
    assert!(
        el >= Duration::from_millis(1900) && el < Duration::from_millis(3400),
        "{el:?}"
    );
    let log = mux.log_text();
    assert!(log.contains("closing because: query timeout"), "{log}");
    assert!(
        log.contains("closing because: idle transaction timeout"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_timeout_ends_long_transactions() {
    let (pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "transaction_timeout = 1",
        &[(&seed.app_user, &seed.app_password)],
    );
    let (c, _h) = connect_watch(&mux.url("synergyflow", &seed.app_user, &seed.app_password)).await;
    c.batch_execute("begin").await.unwrap();
    c.simple_query("select pg_sleep(0.6)").await.unwrap();
    let e = c.simple_query("select pg_sleep(3)").await.unwrap_err();
    assert_eq!(db_error(&e), ("08P01".into(), "transaction timeout".into()));
    // short transactions are untouched
    let d = connect(&mux.url("synergyflow", &seed.app_user, &seed.app_password))
        .await
        .unwrap();
    for _ in 0..3 {
        d.simple_query("select pg_sleep(0.5)").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_also_bounds_the_wait_for_a_server() {
    let (pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "default_pool_size = 1\nquery_timeout = 1\nquery_wait_timeout = 10",
        &[(&seed.app_user, &seed.app_password)],
    );
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let a = connect(&url).await.unwrap();
    a.batch_execute("begin").await.unwrap();
    let b = connect(&url).await.unwrap();
    let t = Instant::now();
    let e = b.simple_query("select 1").await.unwrap_err();
    assert_eq!(db_error(&e), ("08P01".into(), "query_timeout".into()));
    assert!(
        t.elapsed() < Duration::from_millis(2400),
        "{:?}",
        t.elapsed()
    );
}
