//! Helpers for the fault tests: polling, the admin console's view of the pool, SQL as the
//! superuser, and the check that a pool has all its slots after a fault.

use super::{Pgmux, connect, db_error, rows_of};
use pgmux::dev::TempPostgres;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::time::{sleep, timeout};

/// Generous bound for one client operation: anything longer is a hang.
pub const OP_LIMIT: Duration = Duration::from_secs(40);

/// SQL as the superuser, from async code.
pub fn su(pg: &TempPostgres, sql: &str) -> String {
    tokio::task::block_in_place(|| pg.psql("synergyflow", sql).unwrap())
        .trim()
        .to_string()
}

pub fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Poll `cond` every 50 ms until it holds; false after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// An admin-console command's rows as column-name → value maps.
pub async fn show(admin: &tokio_postgres::Client, cmd: &str) -> Vec<HashMap<String, String>> {
    let msgs = timeout(OP_LIMIT, admin.simple_query(cmd))
        .await
        .expect("admin console hangs")
        .unwrap();
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), r.get(i).unwrap_or("").to_string()))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

pub async fn admin_of(mux: &Pgmux) -> tokio_postgres::Client {
    connect(&mux.url("pgbouncer", "admin", "admin-pw"))
        .await
        .unwrap()
}

/// The synergyflow pool's SHOW POOLS row.
pub async fn pool_row(admin: &tokio_postgres::Client) -> HashMap<String, String> {
    show(admin, "SHOW POOLS")
        .await
        .into_iter()
        .find(|r| r["database"] == "synergyflow")
        .expect("synergyflow pool")
}

pub fn num(r: &HashMap<String, String>, k: &str) -> i64 {
    r[k].parse().unwrap()
}

/// Pids of live PostgreSQL backends.
pub fn live_pids(pg: &TempPostgres) -> HashSet<u32> {
    su(pg, "select pid from pg_stat_activity")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// Every server SHOW SERVERS lists is a live backend (none left over from before a fault).
pub async fn servers_all_live(pg: &TempPostgres, admin: &tokio_postgres::Client) -> bool {
    let live = live_pids(pg);
    show(admin, "SHOW SERVERS")
        .await
        .iter()
        .all(|r| live.contains(&r["remote_pid"].parse::<u32>().unwrap()))
}

/// All `size` servers of the pool can be held at once and no more exist: the faults leaked no
/// slot either way.
pub async fn assert_full_capacity(url: &str, admin: &tokio_postgres::Client, size: usize) {
    let mut holders = Vec::new();
    for _ in 0..size {
        let c = connect(url).await.unwrap();
        timeout(OP_LIMIT, c.batch_execute("begin; select 1"))
            .await
            .expect("no server for a new transaction: a pool slot leaked")
            .unwrap();
        holders.push(c);
    }
    let p = pool_row(admin).await;
    assert_eq!(
        (num(&p, "sv_active"), num(&p, "cl_waiting")),
        (size as i64, 0),
        "{p:?}"
    );
    for c in &holders {
        c.batch_execute("commit").await.unwrap();
    }
    let p = pool_row(admin).await;
    assert_eq!(
        (num(&p, "sv_active"), num(&p, "cl_waiting")),
        (0, 0),
        "{p:?}"
    );
    let servers = show(admin, "SHOW SERVERS").await;
    assert!(
        servers.len() <= size,
        "more servers than the pool size: {servers:?}"
    );
}

/// An error's SQLSTATE and text (empty SQLSTATE for a closed connection).
pub fn err_text(e: &tokio_postgres::Error) -> String {
    let (c, m) = db_error(e);
    format!("{c} {m}")
}

/// The first column of the first row of a simple query.
pub async fn value(c: &tokio_postgres::Client, sql: &str) -> String {
    let m = timeout(OP_LIMIT, c.simple_query(sql))
        .await
        .expect("query hangs")
        .unwrap();
    rows_of(&m)[0][0].clone().unwrap_or_default()
}
