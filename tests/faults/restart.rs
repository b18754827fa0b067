//! Faults, PostgreSQL itself: fast and immediate restarts under load, and PgBouncer's reasons while it is down.

use super::*;

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
