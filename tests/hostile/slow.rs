//! Hostile clients, part 2: silent and stalled logins, clients that stop reading, and the servers they hold.

use super::*;

// ---------------------------------------------------------------------------------------------
// 3. slow clients

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_stalled_logins_hit_client_login_timeout() {
    let (pg, _seed) = postgres(50);
    let mux = Pgmux::start(&pg, "client_login_timeout = 2", &users());
    let port = mux.port;
    tokio::task::spawn_blocking(move || {
        let timeout = || Some(fatal("client_login_timeout"));
        let t = Instant::now();
        // sends nothing at all
        let mut silent = raw(port);
        // half a startup packet
        let mut half = raw(port);
        let p = startup_packet("synergyflow_app", "synergyflow");
        half.write_all(&p[..10]).unwrap();
        // stops in the middle of SASL
        let mut mid = start_sasl(port, "synergyflow_app");
        let sc = ScramSha256::new(b"synergyflow-dev-password", ChannelBinding::unsupported());
        mid.write_all(&sasl_initial(b"SCRAM-SHA-256", sc.message()))
            .unwrap();
        assert!(matches!(next(&mut mid), Reply::Auth(11, _)));
        // announces a message and sends only part of it
        let mut part = start_sasl(port, "synergyflow_app");
        part.write_all(&[b'p', 0, 0, 0, 100, b'S']).unwrap();
        for (s, what) in [
            (&mut silent, "silent"),
            (&mut half, "half a startup packet"),
            (&mut mid, "stalled SASL"),
            (&mut part, "partial message"),
        ] {
            expect_end(s, timeout(), what);
            let el = t.elapsed();
            assert!(
                el >= Duration::from_millis(1500) && el < Duration::from_secs(8),
                "{what}: closed after {el:?}"
            );
        }
    })
    .await
    .unwrap();
    assert_serving(&mux, "after login timeouts").await;
    assert_mem_bounded(&mux, "after login timeouts");
    assert!(mux.log_text().contains("client_login_timeout"));
}

/// The pool's (cl_active, cl_waiting, sv_active, sv_idle) for synergyflow/synergyflow_app.
async fn pool_counts(admin: &tokio_postgres::Client) -> (i64, i64, i64, i64) {
    let rows = rows_of(&admin.simple_query("SHOW POOLS").await.unwrap());
    let r = rows
        .iter()
        .find(|r| {
            r[0].as_deref() == Some("synergyflow") && r[1].as_deref() == Some("synergyflow_app")
        })
        .expect("pool row");
    let n = |i: usize| r[i].as_deref().unwrap().parse::<i64>().unwrap();
    (n(2), n(3), n(6), n(9))
}

/// A client that asks for ~200 MB of rows and never reads them.
fn stalled_reader(port: u16) -> TcpStream {
    let (mut s, _) = raw_login(port);
    let mut q = b"select repeat('x', 1000000) from generate_series(1,200)".to_vec();
    q.push(0);
    s.write_all(&msg(b'Q', &q)).unwrap();
    s
}

/// Is some backend of the app user blocked writing to pgmux (backpressure reached PostgreSQL)?
fn backend_blocked_on_write(pg: &pgmux::dev::TempPostgres) -> bool {
    pg.psql(
        "postgres",
        "select count(*) from pg_stat_activity where usename = 'synergyflow_app' \
         and state = 'active' and wait_event = 'ClientWrite'",
    )
    .unwrap()
    .trim()
        != "0"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_keeps_memory_bounded_and_releases_its_server() {
    let (pg, seed) = postgres(50);
    let mux = start_with_admin(&pg, &seed, "default_pool_size = 2\nquery_wait_timeout = 30");
    let admin = connect(&mux.url("pgbouncer", "admin", "admin-pw"))
        .await
        .unwrap();
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let other = connect(&url).await.unwrap();
    other.simple_query("select 1").await.unwrap();
    let (rss0, _) = mem_kib(mux.pid());

    let port = mux.port;
    let a = tokio::task::spawn_blocking(move || stalled_reader(port))
        .await
        .unwrap();
    // PostgreSQL ends up blocked writing: pgmux stopped reading because its buffers are full
    assert!(
        wait_until(30, || async { backend_blocked_on_write(&pg) }).await,
        "the backend never blocked on ClientWrite"
    );
    // memory during the stall, sampled for a while: bounded buffers, not the 200 MB result
    let mut peak = 0;
    for _ in 0..10 {
        let (rss, _) = mem_kib(mux.pid());
        peak = peak.max(rss);
        // the other client keeps working on the pool's second server meanwhile
        let r = other.query_one("select 2", &[]).await.unwrap();
        assert_eq!(r.get::<_, i32>(0), 2);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, hwm) = assert_mem_bounded(&mux, "during the stall");
    eprintln!("slow reader: RSS before {rss0} KiB, peak during stall {peak} KiB, HWM {hwm} KiB");
    assert!(
        peak < rss0 + 64 * 1024,
        "RSS grew from {rss0} to {peak} KiB"
    );
    // (a Row keeps its statement: the driver's Close + Sync go out when the last one drops)
    assert!(
        wait_until(10, || async { pool_counts(&admin).await.2 == 1 }).await,
        "the stalled client does not hold exactly one server: {:?}",
        pool_counts(&admin).await
    );

    // a second stalled reader takes the other server: the pool is exhausted, a new query waits
    let b = tokio::task::spawn_blocking(move || stalled_reader(port))
        .await
        .unwrap();
    assert!(wait_until(30, || async { pool_counts(&admin).await.2 == 2 }).await);
    let waiter = tokio::spawn({
        let url = url.clone();
        async move {
            let c = connect(&url).await.unwrap();
            c.query_one("select 3", &[]).await.unwrap().get::<_, i32>(0)
        }
    });
    assert!(
        wait_until(10, || async { pool_counts(&admin).await.1 == 1 }).await,
        "the third client is not waiting"
    );
    // the stalled readers disconnect: their servers are released (closed mid-result) and the
    // waiting client gets one
    drop(a);
    drop(b);
    let got = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the waiting client was never served")
        .unwrap();
    assert_eq!(got, 3);
    assert!(
        wait_until(10, || async {
            let (_, w, act, _) = pool_counts(&admin).await;
            w == 0 && act == 0
        })
        .await
    );
    assert!(wait_until(10, || async { !backend_blocked_on_write(&pg) }).await);
    assert_serving(&mux, "after the stalled readers left").await;
    assert_mem_bounded(&mux, "after the stalled readers left");
    // both servers were closed mid-result, not returned to the pool
    assert!(
        wait_until(10, || async {
            mux.log_text()
                .matches("closing because: client disconnected with query in progress")
                .count()
                == 2
        })
        .await,
        "{}",
        mux.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_frees_the_server_of_a_stalled_reader() {
    let (pg, seed) = postgres(50);
    let mux = start_with_admin(&pg, &seed, "default_pool_size = 1\nquery_timeout = 2");
    let admin = connect(&mux.url("pgbouncer", "admin", "admin-pw"))
        .await
        .unwrap();
    let port = mux.port;
    let t = Instant::now();
    let a = tokio::task::spawn_blocking(move || stalled_reader(port))
        .await
        .unwrap();
    assert!(wait_until(30, || async { backend_blocked_on_write(&pg) }).await);
    // query_timeout ends the stalled query: the only server is closed and the next client is served
    assert!(
        wait_until(20, || async { pool_counts(&admin).await.2 == 0 }).await,
        "the stalled client's server was not released"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_serving(&mux, "after query_timeout").await;
    assert_mem_bounded(&mux, "after query_timeout");
    assert!(mux.log_text().contains("closing because: query timeout"));
    drop(a);
}
