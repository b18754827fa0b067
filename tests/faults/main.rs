//! Fault injection through a real pgmux process in front of a real PostgreSQL: restarts under load,
//! terminated backends, clients that vanish mid-query/transaction/COPY/pipeline, and session state
//! that must not cross from one client to another in transaction mode.

#[path = "../common/mod.rs"]
mod common;

mod backends;
mod restart;
mod state;

use common::faults::*;
use common::raw::*;
use common::*;
use pgmux::dev::TempPostgres;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::time::{sleep, timeout};

/// What one looping client saw.
#[derive(Default)]
struct Seen {
    /// (start, end, pid, backend_start epoch) of committed transactions.
    ok: Vec<(Instant, Instant, u32, f64)>,
    /// (start, SQLSTATE + message) of failed transactions and logins.
    errors: Vec<(Instant, String)>,
    hung: bool,
}

/// A short transaction of several round trips: its backend's pid and start time.
async fn short_txn(c: &tokio_postgres::Client) -> Result<(u32, f64), tokio_postgres::Error> {
    c.batch_execute("begin").await?;
    let r = c
        .simple_query(
            "select pg_backend_pid(), extract(epoch from backend_start) \
             from pg_stat_activity where pid = pg_backend_pid()",
        )
        .await?;
    let row = &rows_of(&r)[0];
    c.batch_execute("select pg_sleep(0.005)").await?;
    c.batch_execute("commit").await?;
    Ok((
        row[0].as_deref().unwrap().parse().unwrap(),
        row[1].as_deref().unwrap().parse().unwrap(),
    ))
}

/// Loop short transactions until `stop`, reconnecting when the connection is gone.
async fn load_client(url: String, stop: Arc<AtomicBool>, done: Arc<AtomicUsize>) -> Seen {
    let mut seen = Seen::default();
    'outer: while !stop.load(Relaxed) {
        let start = Instant::now();
        let c = match timeout(OP_LIMIT, connect(&url)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                seen.errors
                    .push((start, format!("login: {}", err_text(&e))));
                sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(_) => {
                seen.hung = true;
                break;
            }
        };
        while !stop.load(Relaxed) {
            let start = Instant::now();
            match timeout(OP_LIMIT, short_txn(&c)).await {
                Err(_) => {
                    seen.hung = true;
                    break 'outer;
                }
                Ok(Ok((pid, bs))) => {
                    seen.ok.push((start, Instant::now(), pid, bs));
                    done.fetch_add(1, Relaxed);
                }
                Ok(Err(e)) => {
                    seen.errors.push((start, err_text(&e)));
                    // a connection that cannot roll back is gone: log in again (one failure
                    // is recorded per failed transaction)
                    if c.is_closed()
                        || !matches!(
                            timeout(OP_LIMIT, c.batch_execute("rollback")).await,
                            Ok(Ok(()))
                        )
                    {
                        continue 'outer;
                    }
                    sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    seen
}

/// `n` looping clients.
fn spawn_load(
    url: &str,
    n: usize,
    stop: &Arc<AtomicBool>,
    done: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    (0..n)
        .map(|_| tokio::spawn(load_client(url.to_string(), stop.clone(), done.clone())))
        .collect()
}

/// Wait until `more` transactions beyond the current count have committed.
async fn progress(done: &AtomicUsize, more: usize, limit: Duration) -> bool {
    let target = done.load(Relaxed) + more;
    eventually(limit, || async { done.load(Relaxed) >= target }).await
}

/// Stop the load and collect what every client saw; each must finish.
async fn finish_load(stop: &AtomicBool, tasks: Vec<tokio::task::JoinHandle<Seen>>) -> Vec<Seen> {
    stop.store(true, Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        let s = timeout(Duration::from_secs(60), t)
            .await
            .expect("a client task did not finish")
            .unwrap();
        assert!(!s.hung, "a client operation hung");
        all.push(s);
    }
    all
}

/// Wait until a backend of the app user runs a statement starting with `prefix`.
async fn wait_running(pg: &TempPostgres, prefix: &str) {
    let sql = format!(
        "select count(*) from pg_stat_activity where usename = 'synergyflow_app' \
         and state = 'active' and query like '{prefix}%'"
    );
    assert!(
        eventually(Duration::from_secs(10), || async { su(pg, &sql) == "1" }).await,
        "`{prefix}` is not running"
    );
}
