//! Faults, one connection at a time: terminated backends and clients that vanish mid-query, transaction, COPY or pipeline.

use super::*;

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
