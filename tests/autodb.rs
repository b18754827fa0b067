//! `autodb_idle_timeout` against a real PostgreSQL: pools of databases reached through the `*`
//! fallback stay while they have clients, are freed once unused for the timeout (SHOW POOLS no
//! longer lists them), work again when a client comes back; pools of named databases stay; and
//! logins to database names that do not exist leave no pool behind.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

async fn pool_dbs(adm: &tokio_postgres::Client) -> BTreeSet<String> {
    rows_of(&adm.simple_query("SHOW POOLS").await.unwrap())
        .into_iter()
        .filter_map(|r| r[0].clone())
        .filter(|db| db != "pgbouncer")
        .collect()
}

/// Poll SHOW POOLS until `f` holds for its databases, for at most `secs`.
async fn pools_until(
    adm: &tokio_postgres::Client,
    secs: u64,
    f: impl Fn(&BTreeSet<String>) -> bool,
) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let dbs = pool_dbs(adm).await;
        if f(&dbs) || Instant::now() > deadline {
            return dbs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_database_pools_are_freed_after_autodb_idle_timeout() {
    let (pg, seed) = postgres(100);
    pg.psql("postgres", "create database auto_a").unwrap();
    let mux = start_with_admin(
        &pg,
        &seed,
        &format!(
            "auth_type = trust\nautodb_idle_timeout = 2\nserver_idle_timeout = 1\n\
             [databases]\n* = host=127.0.0.1 port={}\n",
            pg.port()
        ),
    );
    let url = |db: &str| mux.url(db, &seed.app_user, &seed.app_password);
    let adm = connect(&mux.url("pgbouncer", "admin", "admin-pw"))
        .await
        .unwrap();

    // a connected client keeps its automatic pool, however long it stays idle
    let a = connect(&url("auto_a")).await.unwrap();
    a.simple_query("select 1").await.unwrap();
    let named = connect(&url("synergyflow")).await.unwrap();
    named.simple_query("select 1").await.unwrap();
    drop(named);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let dbs = pool_dbs(&adm).await;
    assert!(dbs.contains("auto_a"), "{dbs:?}");

    // unused: its server closes after server_idle_timeout, the pool 2 s later; the named
    // database's pool, as unused, stays
    drop(a);
    let dbs = pools_until(&adm, 15, |d| !d.contains("auto_a")).await;
    assert!(
        !dbs.contains("auto_a"),
        "auto_a's pool was not freed: {dbs:?}"
    );
    assert!(dbs.contains("synergyflow"), "{dbs:?}");

    // the freed database is served again
    let a = connect(&url("auto_a")).await.unwrap();
    let rows = rows_of(&a.simple_query("select current_database()").await.unwrap());
    assert_eq!(rows[0][0].as_deref(), Some("auto_a"));
    assert!(pool_dbs(&adm).await.contains("auto_a"));

    // logins to names that do not exist fail with PostgreSQL's error and leave no pool
    for i in 0..40 {
        let e = connect(&url(&format!("nodb_{i}"))).await.unwrap_err();
        assert!(db_error(&e).1.contains("does not exist"), "nodb_{i}: {e:?}");
    }
    let dbs = pool_dbs(&adm).await;
    assert!(
        dbs.iter().filter(|d| d.starts_with("nodb_")).count() > 0,
        "{dbs:?}"
    );
    let dbs = pools_until(&adm, 15, |d| !d.iter().any(|d| d.starts_with("nodb_"))).await;
    assert!(
        !dbs.iter().any(|d| d.starts_with("nodb_")),
        "pools of failed logins stayed: {dbs:?}"
    );
    // the connected client's pool stayed through it all
    assert!(dbs.contains("auto_a"), "{dbs:?}");
    a.simple_query("select 1").await.unwrap();
}
