//! The ledger under faults: clients commit numbered transfers through pgmux while backends are
//! terminated, PostgreSQL restarts and clients vanish mid-transaction; every acknowledged
//! COMMIT is in the database, nothing uncommitted is, and the books balance.

mod common;

use common::faults::OP_LIMIT;
use common::*;
use pgmux::dev::TempPostgres;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::time::{sleep, timeout};

const ACCOUNTS: u64 = 20;
const OPENING: i64 = 1000;

/// xorshift64: deterministic per client, no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Transfer ids by outcome, as one client saw them.
#[derive(Default)]
struct Outcomes {
    /// COMMIT returned success.
    acked: Vec<i64>,
    /// An error (or a kill) before COMMIT was sent: must not be in the database.
    failed: Vec<i64>,
    /// COMMIT was sent but its reply never came: either way is fine.
    unknown: Vec<i64>,
    /// When each acknowledged transfer committed.
    acked_at: Vec<Instant>,
    hung: bool,
}

enum Step {
    Done,
    /// Failed before COMMIT; the connection may still be usable.
    Failed,
    /// The client itself vanished before COMMIT.
    KilledBefore,
    /// The client vanished just after sending COMMIT.
    KilledInCommit,
    /// COMMIT itself returned an error.
    CommitError,
}

/// One transfer as a transaction of several round trips; the client may vanish on purpose.
async fn transfer(
    c: &tokio_postgres::Client,
    conn: &tokio::task::JoinHandle<()>,
    rng: &mut Rng,
    id: i64,
    extended: bool,
) -> Step {
    let src = rng.below(ACCOUNTS) as i32;
    let dst = ((src as u64 + 1 + rng.below(ACCOUNTS - 1)) % ACCOUNTS) as i32;
    let amount = 1 + rng.below(100) as i64;
    // lock accounts in id order: no deadlocks between transfers
    let (first, second) = if src < dst {
        ((src, -amount), (dst, amount))
    } else {
        ((dst, amount), (src, -amount))
    };
    let body = async {
        c.batch_execute("begin").await?;
        if extended {
            c.execute(
                "insert into ledger(id, src, dst, amount) values ($1, $2, $3, $4)",
                &[&id, &src, &dst, &amount],
            )
            .await?;
            for (acct, delta) in [first, second] {
                c.execute(
                    "update accounts set balance = balance + $1 where id = $2",
                    &[&delta, &acct],
                )
                .await?;
            }
        } else {
            c.batch_execute(&format!(
                "insert into ledger(id, src, dst, amount) values ({id}, {src}, {dst}, {amount})"
            ))
            .await?;
            for (acct, delta) in [first, second] {
                c.batch_execute(&format!(
                    "update accounts set balance = balance + {delta} where id = {acct}"
                ))
                .await?;
            }
        }
        Ok::<(), tokio_postgres::Error>(())
    };
    if body.await.is_err() {
        return Step::Failed;
    }
    match rng.below(100) {
        0 | 1 => {
            conn.abort();
            return Step::KilledBefore;
        }
        2 => {
            // COMMIT goes out, then the client is gone before the reply
            let _ = timeout(Duration::from_millis(2), c.batch_execute("commit")).await;
            conn.abort();
            return Step::KilledInCommit;
        }
        _ => {}
    }
    match c.batch_execute("commit").await {
        Ok(()) => Step::Done,
        Err(_) => Step::CommitError,
    }
}

async fn ledger_client(
    url: String,
    n: i64,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> Outcomes {
    let mut out = Outcomes::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let extended = n % 2 == 0;
    let mut seq = 0i64;
    'outer: while !stop.load(Relaxed) {
        let (c, conn) = match timeout(
            OP_LIMIT,
            tokio_postgres::connect(&url, tokio_postgres::NoTls),
        )
        .await
        {
            Ok(Ok(pair)) => pair,
            Ok(Err(_)) => {
                sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(_) => {
                out.hung = true;
                break;
            }
        };
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        while !stop.load(Relaxed) {
            seq += 1;
            let id = n * 1_000_000 + seq;
            let step = match timeout(OP_LIMIT, transfer(&c, &conn, &mut rng, id, extended)).await {
                Ok(s) => s,
                Err(_) => {
                    out.hung = true;
                    break 'outer;
                }
            };
            match step {
                Step::Done => {
                    out.acked.push(id);
                    out.acked_at.push(Instant::now());
                    acked.fetch_add(1, Relaxed);
                }
                Step::Failed => {
                    out.failed.push(id);
                    let rolled_back = !c.is_closed()
                        && matches!(
                            timeout(OP_LIMIT, c.batch_execute("rollback")).await,
                            Ok(Ok(()))
                        );
                    if !rolled_back {
                        continue 'outer;
                    }
                }
                Step::KilledBefore => {
                    out.failed.push(id);
                    continue 'outer;
                }
                Step::KilledInCommit | Step::CommitError => {
                    out.unknown.push(id);
                    continue 'outer;
                }
            }
        }
    }
    out
}

fn su(pg: &TempPostgres, sql: &str) -> String {
    pg.psql("synergyflow", sql).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_survives_faults() {
    // the harness turns synchronous_commit off for speed: an immediate shutdown would then lose
    // acknowledged commits by design, whatever the pooler does
    let (pg, seed) = postgres_with(100, &["synchronous_commit = on"]);
    let mux = start_with_admin(
        &pg,
        &seed,
        "auth_type = plain\ndefault_pool_size = 10\nserver_login_retry = 1",
    );
    let pg = Arc::new(pg);
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let setup = connect(&url).await.unwrap();
    setup
        .batch_execute(&format!(
            "create table accounts(id int primary key, balance bigint not null); \
             insert into accounts select g, {OPENING} from generate_series(0, {}) g; \
             create table ledger(id bigint primary key, src int not null, dst int not null, \
             amount bigint not null)",
            ACCOUNTS - 1
        ))
        .await
        .unwrap();
    drop(setup);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (1..=30)
        .map(|n| tokio::spawn(ledger_client(url.clone(), n, stop.clone(), acked.clone())))
        .collect();
    let wait_acked = |more: usize| {
        let acked = acked.clone();
        async move {
            let target = acked.load(Relaxed) + more;
            let deadline = Instant::now() + Duration::from_secs(60);
            while acked.load(Relaxed) < target {
                assert!(Instant::now() < deadline, "no progress");
                sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_acked(200).await;

    // faults: terminated backends (busy, idle or logging in), a fast and an immediate restart
    // (crash recovery: acknowledged commits must survive it); the clients vanish on their own now
    // and then
    let mut restarted_at = None;
    let mut terminated = 0usize;
    for round in 0..20 {
        if round == 6 || round == 14 {
            let mode = if round == 6 { "fast" } else { "immediate" };
            let p = pg.clone();
            tokio::task::spawn_blocking(move || p.restart(mode))
                .await
                .unwrap()
                .unwrap();
            restarted_at = Some(Instant::now());
            wait_acked(50).await;
        }
        let p = pg.clone();
        let n: usize = tokio::task::spawn_blocking(move || {
            su(
                &p,
                "select count(pg_terminate_backend(pid)) from pg_stat_activity \
                 where usename = 'synergyflow_app' and pid in (select pid from pg_stat_activity \
                 where usename = 'synergyflow_app' order by random() limit 2)",
            )
        })
        .await
        .unwrap()
        .parse()
        .unwrap();
        terminated += n;
        sleep(Duration::from_millis(250)).await;
    }
    // no more faults: service goes on
    wait_acked(200).await;
    stop.store(true, Relaxed);
    let mut all = Vec::new();
    for c in clients {
        let o = timeout(Duration::from_secs(60), c)
            .await
            .expect("a client did not finish")
            .unwrap();
        assert!(!o.hung, "a client operation hung");
        all.push(o);
    }

    let p = pg.clone();
    let in_db: HashSet<i64> = tokio::task::spawn_blocking(move || {
        su(&p, "select id from ledger")
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    })
    .await
    .unwrap();
    let acked_ids: HashSet<i64> = all.iter().flat_map(|o| o.acked.iter().copied()).collect();
    let failed: HashSet<i64> = all.iter().flat_map(|o| o.failed.iter().copied()).collect();
    let unknown: HashSet<i64> = all.iter().flat_map(|o| o.unknown.iter().copied()).collect();
    let lost: Vec<_> = acked_ids.difference(&in_db).collect();
    assert!(lost.is_empty(), "acknowledged transfers missing: {lost:?}");
    let phantom: Vec<_> = in_db.intersection(&failed).collect();
    assert!(
        phantom.is_empty(),
        "transfers that never sent COMMIT are in the database: {phantom:?}"
    );
    let unexplained: Vec<_> = in_db
        .iter()
        .filter(|id| !acked_ids.contains(id) && !unknown.contains(id))
        .collect();
    assert!(unexplained.is_empty(), "{unexplained:?}");
    let unknown_committed = unknown.iter().filter(|id| in_db.contains(id)).count();

    // the books: money is conserved, and every balance is its opening plus its ledger lines
    let p = pg.clone();
    let (total, off) = tokio::task::spawn_blocking(move || {
        (
            su(&p, "select sum(balance) from accounts"),
            su(
                &p,
                "select count(*) from accounts a where balance <> 1000 \
                 + coalesce((select sum(amount) from ledger where dst = a.id), 0) \
                 - coalesce((select sum(amount) from ledger where src = a.id), 0)",
            ),
        )
    })
    .await
    .unwrap();
    assert_eq!(total, (ACCOUNTS as i64 * OPENING).to_string());
    assert_eq!(off, "0", "balances disagree with the ledger");

    let restarted_at = restarted_at.unwrap();
    let after_restart = all
        .iter()
        .flat_map(|o| &o.acked_at)
        .filter(|t| **t > restarted_at)
        .count();
    assert!(
        after_restart >= 250,
        "{after_restart} acknowledged after the last restart"
    );
    eprintln!(
        "ledger: {} acked, {} failed before COMMIT, {} unknown ({unknown_committed} of them \
         committed), {terminated} backends terminated, {after_restart} acked after the last restart",
        acked_ids.len(),
        failed.len(),
        unknown.len()
    );
    drop(mux);
}
