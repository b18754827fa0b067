//! Fault injection through a real pgmux process in front of a real PostgreSQL: restarts under load,
//! terminated backends, clients that vanish mid-query/transaction/COPY/pipeline, and session state
//! that must not cross from one client to another in transaction mode.

mod common;

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

/// PostgreSQL restarted under 200 looping clients: in-flight transactions fail (no hang), every
/// client finishes, service resumes within seconds, and only new backends serve afterwards.
async fn restart_under_load(mode: &str, extra: &str) {
    let (pg, seed) = postgres(100);
    let mux = start_with_admin(
        &pg,
        &seed,
        &format!("auth_type = plain\ndefault_pool_size = 15\nserver_login_retry = 1\n{extra}"),
    );
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let tasks = spawn_load(&url, 200, &stop, &done);
    assert!(
        progress(&done, 400, Duration::from_secs(60)).await,
        "load did not get going"
    );

    // an idle client with a prepared statement and a SET rides through the restart
    let idle = connect(&url).await.unwrap();
    idle.batch_execute("set TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    let stmt = idle
        .prepare("select $1::int + 1, current_setting('TimeZone')")
        .await
        .unwrap();
    idle.query_one(&stmt, &[&1i32]).await.unwrap();

    let t0 = epoch_now();
    let restart_start = Instant::now();
    tokio::task::block_in_place(|| pg.restart(mode)).unwrap();
    let t1 = Instant::now();
    // service resumes: fresh transactions commit again
    assert!(
        progress(&done, 400, Duration::from_secs(30)).await,
        "no service after the {mode} restart"
    );
    let seen = finish_load(&stop, tasks).await;

    let errors: Vec<&(Instant, String)> = seen.iter().flat_map(|s| &s.errors).collect();
    assert!(
        errors.iter().any(|(t, _)| *t < t1),
        "no in-flight transaction failed during the {mode} restart"
    );
    // nothing fails once PostgreSQL is back and the first transaction went through
    let first_ok = seen
        .iter()
        .flat_map(|s| &s.ok)
        .filter(|(start, ..)| *start >= t1)
        .map(|(_, end, ..)| *end)
        .min()
        .expect("a transaction after the restart");
    assert!(
        first_ok.duration_since(t1) < Duration::from_secs(10),
        "first transaction after the restart took {:?}",
        first_ok.duration_since(t1)
    );
    // no server connection from before the restart served a transaction started after it
    for s in &seen {
        for (start, _, pid, bs) in &s.ok {
            if *start >= t1 {
                assert!(
                    *bs >= t0 - 1.0,
                    "transaction after the restart ran on backend {pid} started before it"
                );
            }
        }
    }
    let after: usize = seen
        .iter()
        .map(|s| s.ok.iter().filter(|o| o.0 >= t1).count())
        .sum();
    assert!(after >= 400, "{after}");
    // what clients are told is PostgreSQL's error or PgBouncer's reason, never an OS error text
    for (_, e) in &errors {
        assert!(!e.contains("os error"), "{e}");
    }
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for (_, e) in &errors {
        *kinds.entry(e.clone()).or_default() += 1;
    }
    eprintln!("{mode} restart errors: {kinds:?}");
    eprintln!(
        "{mode} restart: {} errors (e.g. {:?}), restart took {:?}, first commit {:?} after it",
        errors.len(),
        errors.first().map(|e| &e.1),
        t1 - restart_start,
        first_ok.duration_since(t1)
    );
    // SHOW SERVERS lists only live backends, and no client is left waiting
    let admin = admin_of(&mux).await;
    assert!(
        eventually(Duration::from_secs(10), || servers_all_live(&pg, &admin)).await,
        "stale servers listed: {:?}",
        show(&admin, "SHOW SERVERS").await
    );
    assert_full_capacity(&url, &admin, 15).await;
    let r = timeout(OP_LIMIT, idle.query_one(&stmt, &[&6i32]))
        .await
        .expect("the idle client hangs")
        .unwrap();
    assert_eq!(
        (r.get::<_, i32>(0), r.get::<_, String>(1)),
        (7, "Asia/Tokyo".to_string())
    );
    // and a new client is served at once
    let c = connect(&url).await.unwrap();
    let r = timeout(OP_LIMIT, short_txn(&c)).await.unwrap().unwrap();
    assert!(r.1 >= t0 - 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fast_restart_under_load() {
    restart_under_load("fast", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_immediate_restart_under_load() {
    // server_check_query before every reuse: the check meets the dead servers
    restart_under_load("immediate", "server_check_delay = 0").await;
}

/// A failure caused by the client's own backend being terminated (or its connection closing
/// because of that).
fn is_termination(e: &str) -> bool {
    e.starts_with("57P01 ")
        || e == "08P01 server conn crashed?"
        || e == " connection closed"
        || e.starts_with(" error communicating with the server")
        || e.starts_with(" unexpected EOF")
}

/// Terminate logged-in backends of the app user picked by `filter` (SQL condition); returns how
/// many. Backends still logging in are left alone: a failed server login fails the clients
/// waiting for the pool (PgBouncer's fast-fail), which is not what these tests look at.
fn terminate(pg: &TempPostgres, filter: &str) -> usize {
    su(
        pg,
        &format!(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity \
             where usename = 'synergyflow_app' and pid <> pg_backend_pid() \
             and state is not null and {filter}"
        ),
    )
    .parse()
    .unwrap()
}

/// Backends terminated mid-transaction and between transactions: only the client on that
/// backend sees an error, the others keep committing, and the pool refills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_fail_only_their_client() {
    let (pg, seed) = postgres(100);
    let mux = start_with_admin(&pg, &seed, "auth_type = plain\ndefault_pool_size = 10");
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let admin = admin_of(&mux).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let tasks = spawn_load(&url, 20, &stop, &done);
    let go = Duration::from_secs(30);
    assert!(progress(&done, 100, go).await);
    let mut killed = 0;

    // mid-transaction: the victim's next statement fails, its connection ends
    let victim = connect(&url).await.unwrap();
    victim.batch_execute("begin").await.unwrap();
    let pid: i32 = victim
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // the victim's server stays with it for the whole transaction
    let state = su(
        &pg,
        &format!("select state || ': ' || query from pg_stat_activity where pid = {pid}"),
    );
    assert_eq!(state, "idle in transaction: select pg_backend_pid()");
    killed += terminate(&pg, &format!("pid = {pid}"));
    assert_eq!(killed, 1);
    let e = timeout(OP_LIMIT, victim.simple_query("select 1"))
        .await
        .expect("the victim hangs")
        .unwrap_err();
    assert!(is_termination(&err_text(&e)), "{e:?}");
    assert!(
        eventually(Duration::from_secs(5), || async { victim.is_closed() }).await,
        "the victim's connection stays open"
    );
    assert!(progress(&done, 100, go).await);

    // between transactions: the backend a client used last goes away; that client (not linked
    // to it any more) is not affected; its prepared statement and SET follow it to a new server
    let idle = connect(&url).await.unwrap();
    idle.batch_execute("set TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    let stmt = idle
        .prepare("select $1::int + 1, current_setting('TimeZone')")
        .await
        .unwrap();
    let pid: i32 = idle
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    killed += terminate(&pg, &format!("pid = {pid}"));
    let still_fine = || async {
        let r = timeout(OP_LIMIT, idle.query_one(&stmt, &[&6i32]))
            .await
            .expect("the idle client hangs")
            .unwrap();
        assert_eq!(
            (r.get::<_, i32>(0), r.get::<_, String>(1)),
            (7, "Asia/Tokyo".to_string())
        );
    };
    still_fine().await;
    assert!(progress(&done, 100, go).await);

    // random backends, busy or idle, a few at a time
    for _ in 0..3 {
        killed += terminate(
            &pg,
            "pid in (select pid from pg_stat_activity where usename = 'synergyflow_app' order by random() limit 3)",
        );
        assert!(progress(&done, 100, go).await, "no progress after kills");
    }
    // the whole pool at once
    killed += terminate(&pg, "true");
    assert!(
        progress(&done, 200, go).await,
        "no progress after killing the pool"
    );
    // the pool refilled with new backends
    assert!(
        eventually(Duration::from_secs(10), || servers_all_live(&pg, &admin)).await,
        "{:?}",
        show(&admin, "SHOW SERVERS").await
    );
    assert!(backends(&pg, "synergyflow", &seed.app_user) > 0);
    let seen = finish_load(&stop, tasks).await;

    let errors: Vec<&String> = seen.iter().flat_map(|s| &s.errors).map(|e| &e.1).collect();
    // the victim was not a load client: at most one load client per other terminated backend
    assert!(
        errors.len() < killed,
        "{} load-client errors for {killed} terminated backends: {errors:?}",
        errors.len()
    );
    for e in &errors {
        assert!(is_termination(e), "unexpected error: {e}");
    }
    eprintln!(
        "terminated {killed} backends; {} load-client errors: {errors:?}",
        errors.len()
    );
    assert_full_capacity(&url, &admin, 10).await;
    // and the idle client is still fine
    still_fine().await;
}

/// After a client vanished: no backend idle in a transaction, none still running `running`,
/// and row `id` of fault_rows can be locked by another client.
async fn assert_cleaned_up(pg: &TempPostgres, url: &str, id: i32, running: &str) {
    let stuck = format!(
        "select count(*) from pg_stat_activity where usename = 'synergyflow_app' and \
         (state like 'idle in transaction%' or (state = 'active' and query like '{running}%'))"
    );
    assert!(
        eventually(Duration::from_secs(10), || async { su(pg, &stuck) == "0" }).await,
        "a backend is left over: {}",
        su(
            pg,
            "select pid, state, query from pg_stat_activity where usename = 'synergyflow_app'"
        )
    );
    let c = connect(url).await.unwrap();
    c.batch_execute("begin").await.unwrap();
    let v: i32 = timeout(
        OP_LIMIT,
        c.query_one(
            "select v from fault_rows where id = $1 for update nowait",
            &[&id],
        ),
    )
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("row {id} still locked: {e:?}"))
    .get(0);
    assert_eq!(
        v, 0,
        "the vanished client's change to row {id} was committed"
    );
    c.batch_execute("commit").await.unwrap();
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

/// Clients vanishing mid-query, mid-transaction, mid-COPY and mid-pipeline leave no open
/// transaction or lock behind, and the pool is back to full service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_clients_leave_no_transaction_or_lock() {
    // PostgreSQL notices a closed connection during a running query only with this check; it
    // shows that pgmux closes the server instead of keeping or reusing it
    let (pg, seed) = postgres_with(100, &["client_connection_check_interval = 200"]);
    let mux = start_with_admin(&pg, &seed, "auth_type = plain\ndefault_pool_size = 4");
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let (user, pw) = (seed.app_user.as_str(), seed.app_password.as_str());
    let setup = connect(&url).await.unwrap();
    setup
        .batch_execute(
            "create table fault_rows(id int primary key, v int not null default 0); \
             insert into fault_rows(id) select generate_series(1, 10); \
             create table fault_copy(id int, v text)",
        )
        .await
        .unwrap();
    let login = || Raw::login(mux.port, "synergyflow", user, pw);

    // mid-query inside a transaction holding a row lock (simple protocol), reset
    let mut r = login().await;
    r.send(&q(
        "begin; update fault_rows set v = 1 where id = 1; select pg_sleep(60)",
    ))
    .await;
    wait_running(&pg, "begin; update fault_rows set v = 1 where id = 1").await;
    r.kill(true);
    assert_cleaned_up(&pg, &url, 1, "begin; update").await;

    // mid-transaction, idle, after SELECT ... FOR UPDATE; closed without Terminate
    let mut r = login().await;
    r.send(&q("begin")).await;
    r.until(b'Z').await;
    r.send(&q("update fault_rows set v = 2 where id = 2")).await;
    r.until(b'Z').await;
    r.send(&q("select v from fault_rows where id = 3 for update"))
        .await;
    let m = r.until(b'Z').await;
    assert_eq!(m.last().unwrap().1, b"T");
    r.kill(false);
    assert_cleaned_up(&pg, &url, 2, "-").await;
    assert_cleaned_up(&pg, &url, 3, "-").await;

    // mid-COPY FROM STDIN inside a transaction: data sent, no CopyDone
    let mut r = login().await;
    r.send(&q("begin; update fault_rows set v = 4 where id = 4"))
        .await;
    r.until(b'Z').await;
    r.send(&q("copy fault_copy from stdin")).await;
    r.until(b'G').await;
    for i in 0..100 {
        r.send(&msg(b'd', format!("{i}\trow {i}\n").as_bytes()))
            .await;
    }
    wait_running(&pg, "copy fault_copy").await;
    r.kill(true);
    assert_cleaned_up(&pg, &url, 4, "copy").await;
    assert_eq!(su(&pg, "select count(*) from fault_copy"), "0");

    // mid-pipeline: extended-protocol messages executed with Flush but never Synced (an implicit
    // transaction holding a row lock), closed without Terminate
    let mut r = login().await;
    let mut p = parse("", "update fault_rows set v = 5 where id = 5");
    p.extend(bind(""));
    p.extend(execute());
    p.extend(parse("", "select pg_backend_pid()"));
    p.extend(bind(""));
    p.extend(execute());
    p.extend(flush());
    r.send(&p).await;
    let m = r.until(b'D').await;
    assert!(m.iter().all(|(t, _)| *t != b'E'), "{m:?}");
    r.until(b'C').await;
    r.kill(false);
    assert_cleaned_up(&pg, &url, 5, "-").await;

    // mid-pipeline with a Sync still to come and a query running, reset
    let mut r = login().await;
    let mut p = parse("", "update fault_rows set v = 6 where id = 6");
    p.extend(bind(""));
    p.extend(execute());
    p.extend(parse("", "select pg_sleep(60)"));
    p.extend(bind(""));
    p.extend(execute());
    p.extend(sync());
    r.send(&p).await;
    wait_running(&pg, "select pg_sleep(60)").await;
    r.kill(true);
    assert_cleaned_up(&pg, &url, 6, "select pg_sleep").await;

    // half a large message forwarded, inside a transaction holding a lock, closed
    let mut r = login().await;
    r.send(&q("begin; update fault_rows set v = 7 where id = 7"))
        .await;
    r.until(b'Z').await;
    let big = q(&format!("select '{}'", "x".repeat(1 << 20)));
    r.send(&big[..big.len() / 2]).await;
    r.kill(false);
    assert_cleaned_up(&pg, &url, 7, "-").await;

    // mid-COPY TO STDOUT far larger than the buffers (the server is held back by backpressure),
    // reset after the first rows
    let mut r = login().await;
    r.send(&q("begin; update fault_rows set v = 8 where id = 8"))
        .await;
    r.until(b'Z').await;
    r.send(&q(
        "copy (select g, repeat('x', 1000) from generate_series(1, 10000000) g) to stdout",
    ))
    .await;
    r.until(b'H').await;
    r.until(b'd').await;
    r.kill(true);
    assert_cleaned_up(&pg, &url, 8, "copy (select").await;

    // queued for a server (all four are held), then gone: its query may still run once a server
    // is free, but that server is closed, not left in the transaction
    let admin = admin_of(&mux).await;
    let mut holders = Vec::new();
    for id in 1..=4 {
        let c = connect(&url).await.unwrap();
        c.batch_execute(&format!(
            "begin; update fault_rows set v = v where id = {id}"
        ))
        .await
        .unwrap();
        holders.push(c);
    }
    let mut r = login().await;
    r.send(&q("begin; update fault_rows set v = 9 where id = 9"))
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            num(&pool_row(&admin).await, "cl_waiting") == 1
        })
        .await
    );
    r.kill(true);
    for c in &holders {
        c.batch_execute("commit").await.unwrap();
    }
    drop(holders);
    assert_cleaned_up(&pg, &url, 9, "-").await;

    // full service: four clients hold the four servers at once, nobody waits
    assert_full_capacity(&url, &admin, 4).await;
    assert!(
        eventually(Duration::from_secs(10), || servers_all_live(&pg, &admin)).await,
        "{:?}",
        show(&admin, "SHOW SERVERS").await
    );
    let log = mux.log_text();
    assert!(
        log.contains("client disconnect while server was not ready"),
        "{log}"
    );
}

/// Transaction mode with one server: tracked parameters, temp tables, protocol-level prepared
/// statements and a broken transaction state stay with their client; a server in a failed or
/// unknown state is never handed to another client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_stays_with_its_client() {
    let (pg, seed) = postgres(100);
    let mux = start_with_admin(&pg, &seed, "auth_type = plain\ndefault_pool_size = 1");
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let (user, pw) = (seed.app_user.as_str(), seed.app_password.as_str());
    let login = || Raw::login(mux.port, "synergyflow", user, pw);
    let admin = admin_of(&mux).await;
    let a = connect(&url).await.unwrap();
    let b = connect(&url).await.unwrap();
    let pid = value(&a, "select pg_backend_pid()").await;
    assert_eq!(
        value(&b, "select pg_backend_pid()").await,
        pid,
        "one server"
    );

    // tracked parameters: A's SETs follow A, B keeps its own values on the same server
    let tracked = [
        ("TimeZone", "Asia/Tokyo"),
        ("application_name", "client-a"),
        ("DateStyle", "SQL, DMY"),
        ("IntervalStyle", "sql_standard"),
    ];
    let mut before = Vec::new();
    for (name, _) in tracked {
        before.push(value(&b, &format!("show {name}")).await);
    }
    for (name, v) in tracked {
        a.simple_query(&format!("set {name} = '{v}'"))
            .await
            .unwrap();
    }
    for ((name, v), old) in tracked.iter().zip(&before) {
        assert_eq!(
            &value(&b, &format!("show {name}")).await,
            old,
            "{name} leaked"
        );
        assert_eq!(value(&a, &format!("show {name}")).await, *v, "{name} lost");
    }
    assert_eq!(value(&b, "select pg_backend_pid()").await, pid);

    // temp tables: ON COMMIT DROP ones are gone with their transaction
    a.batch_execute(
        "begin; create temp table t_ocd(x int) on commit drop; insert into t_ocd values (1); commit",
    )
    .await
    .unwrap();
    assert_eq!(
        value(&b, "select count(*) from pg_class where relname = 't_ocd'").await,
        "0"
    );

    // protocol-level named statements: B cannot use A's, and the same name is B's own
    let mut ra = login().await;
    let mut rb = login().await;
    let mut p = parse("stmt_x", "select 'a'::text");
    p.extend(sync());
    assert!(ra.request(&p).await.error.is_none());
    assert_eq!(ra.run_named("stmt_x").await.rows, [Some("a".into())]);
    let mut p = parse("stmt_x", "select 'b'::text");
    p.extend(sync());
    let r = rb.request(&p).await;
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(rb.run_named("stmt_x").await.rows, [Some("b".into())]);
    assert_eq!(ra.run_named("stmt_x").await.rows, [Some("a".into())]);
    let mut rc = login().await;
    let mut bx = bind("stmt_x");
    bx.extend(execute());
    bx.extend(sync());
    rc.send(&bx).await;
    let (sev, code, m) = rc.fatal().await;
    assert_eq!(
        (sev.as_str(), code.as_str(), m.as_str()),
        ("FATAL", "08P01", "prepared statement did not exist")
    );

    // a client inside a failed transaction keeps the server: others wait, then get it clean
    let r = ra.simple("begin; select 1/0").await;
    assert_eq!((r.status, r.error.unwrap().1.as_str()), (b'E', "22012"));
    let waiting = tokio::spawn({
        let url = url.clone();
        async move {
            let c = connect(&url).await.unwrap();
            value(&c, "select 'served'").await
        }
    });
    assert!(
        eventually(Duration::from_secs(10), || async {
            num(&pool_row(&admin).await, "cl_waiting") == 1
        })
        .await,
        "the failed transaction's server was handed out"
    );
    let r = ra.simple("select 1").await;
    assert_eq!(r.error.unwrap().1, "25P02");
    let r = ra.simple("rollback").await;
    assert_eq!((r.status, r.error), (b'I', None));
    let served = timeout(OP_LIMIT, waiting).await.unwrap().unwrap();
    assert_eq!(served, "served");

    // clients that leave a server in a failed or unknown state: it is closed, never reused
    let leave: [(&str, &[u8]); 5] = [
        ("aborted, reset", b"begin; select 1/0"),
        ("aborted, Terminate", b"begin; select 1/0"),
        (
            "temp table in an open transaction",
            b"begin; create temp table t_gone(x int)",
        ),
        ("unsynced failed Parse", b""),
        ("query running", b"select pg_sleep(60)"),
    ];
    for (what, sql) in leave {
        let mut r = login().await;
        let pid = r.simple("select pg_backend_pid()").await.rows[0]
            .clone()
            .unwrap();
        match what {
            "unsynced failed Parse" => {
                let mut p = parse("", "selec oops");
                p.extend(flush());
                r.send(&p).await;
                let (tag, body) = r.recv().await;
                assert_eq!((tag, error_fields(&body).1.as_str()), (b'E', "42601"));
                r.kill(false);
            }
            "query running" => {
                r.send(&q(std::str::from_utf8(sql).unwrap())).await;
                wait_running(&pg, "select pg_sleep(60)").await;
                r.kill(true);
            }
            _ => {
                let reply = r.simple(std::str::from_utf8(sql).unwrap()).await;
                assert_ne!(reply.status, b'I', "{what}");
                if what.ends_with("Terminate") {
                    r.send(&msg(b'X', &[])).await;
                }
                r.kill(what.ends_with("reset"));
            }
        }
        // the next client gets a clean, different server
        let mut next = login().await;
        let reply = next
            .simple("select pg_backend_pid(), count(*) from pg_class where relname = 't_gone'")
            .await;
        assert_eq!((reply.status, &reply.error), (b'I', &None), "{what}");
        assert_ne!(
            reply.rows[0].as_deref(),
            Some(pid.as_str()),
            "{what}: server reused"
        );
        let reply = next
            .simple("select count(*) from pg_class where relname = 't_gone'")
            .await;
        assert_eq!(reply.rows, [Some("0".into())], "{what}");
        let reply = next.simple("begin; select 1; commit").await;
        assert_eq!((reply.status, &reply.error), (b'I', &None), "{what}");
        next.send(&msg(b'X', &[])).await;
    }
    assert_eq!(value(&a, "show TimeZone").await, "Asia/Tokyo");
}

/// PostgreSQL down: clients are told PgBouncer's reason (`connect failed`, also as the
/// server_login_retry cached error), not an OS error text; service resumes when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_errors_use_pgbouncer_reasons() {
    let (mut pg, seed) = postgres(100);
    let mux = start_with_admin(
        &pg,
        &seed,
        "auth_type = plain\ndefault_pool_size = 2\nserver_login_retry = 1",
    );
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let c = connect(&url).await.unwrap();
    assert_eq!(value(&c, "select 1").await, "1");
    tokio::task::block_in_place(|| pg.stop());
    let e = timeout(OP_LIMIT, c.simple_query("select 1"))
        .await
        .expect("the client hangs")
        .unwrap_err();
    assert_eq!(db_error(&e), ("08P01".into(), "connect failed".into()));
    let n = connect(&url).await.unwrap();
    let e = timeout(OP_LIMIT, n.simple_query("select 1"))
        .await
        .expect("the client hangs")
        .unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "08P01".into(),
            "server login has been failing, cached error: connect failed (server_login_retry)"
                .into()
        )
    );
    tokio::task::block_in_place(|| pg.start_again()).unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            match connect(&url).await {
                Ok(c) => c.simple_query("select 1").await.is_ok(),
                Err(_) => false,
            }
        })
        .await,
        "no service after PostgreSQL came back"
    );
}
