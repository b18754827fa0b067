//! Transaction pooling through a real pgmux process in front of a real PostgreSQL, with tokio-postgres, psql and pgbench.

mod common;

use common::*;
use futures_util::{SinkExt, TryStreamExt, future::try_join_all};
use std::time::Duration;
use tokio_postgres::types::Type;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_extended_pipeline_and_copy() {
    let (pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "default_pool_size = 5",
        &[(&seed.app_user, &seed.app_password)],
    );
    let c = connect(&mux.url("synergyflow", &seed.app_user, &seed.app_password))
        .await
        .unwrap();

    // simple protocol, several statements in one Query
    let msgs = c.simple_query("create table t(id int primary key, v text); insert into t values (1,'a'),(2,'b'); select count(*) from t").await.unwrap();
    let rows: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(rows, vec!["2"]);

    // extended protocol with parameters (unnamed statements)
    // extended protocol with parameters, unnamed statement (one round trip)
    let r = c
        .query_typed("select v from t where id = $1", &[(&2i32, Type::INT4)])
        .await
        .unwrap();
    assert_eq!(r[0].get::<_, String>(0), "b");

    // pipelining: many extended-protocol queries in flight on one connection
    let nums: Vec<i32> = (0..50).collect();
    let c = &c;
    let futs: Vec<_> = nums
        .iter()
        .map(|i| async move {
            c.query_typed("select $1::int + 1", &[(i, Type::INT4)])
                .await
        })
        .collect();
    let res = try_join_all(futs).await.unwrap();
    for (i, r) in res.iter().enumerate() {
        assert_eq!(r[0].get::<_, i32>(0), i as i32 + 1);
    }

    // an error inside a pipeline does not break the session
    let err = c.query_one("select 1/0", &[]).await.unwrap_err();
    assert_eq!(db_error(&err).0, "22012");
    assert_eq!(
        c.query_one("select 42", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        42
    );

    // COPY FROM STDIN
    let sink = c.copy_in("copy t (id, v) from stdin").await.unwrap();
    let mut sink = Box::pin(sink);
    let mut data = String::new();
    for i in 10..1010 {
        data.push_str(&format!("{i}\tv{i}\n"));
    }
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    let n = sink.as_mut().finish().await.unwrap();
    assert_eq!(n, 1000);

    // COPY TO STDOUT
    let stream = c
        .copy_out("copy (select id from t order by id) to stdout")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let text: String = chunks
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(text.lines().count(), 1002);

    // a transaction keeps its server: temp objects and txid stay the same inside it
    c.batch_execute("begin").await.unwrap();
    let a: i64 = c
        .query_one("select pg_backend_pid()::bigint", &[])
        .await
        .unwrap()
        .get(0);
    let b: i64 = c
        .query_one("select pg_backend_pid()::bigint", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(a, b);
    c.batch_execute("commit").await.unwrap();

    // notices pass through
    let msgs = c
        .simple_query("do $$ begin raise notice 'hello'; end $$")
        .await
        .unwrap();
    assert!(!msgs.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_parameters_follow_the_client_across_servers() {
    let (pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "default_pool_size = 4",
        &[(&seed.app_user, &seed.app_password)],
    );
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let x = connect(&url).await.unwrap();
    let y = connect(&url).await.unwrap();

    x.batch_execute("SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    let pid1: i64 = x
        .query_one("select pg_backend_pid()::bigint", &[])
        .await
        .unwrap()
        .get(0);
    // y takes the idle server x just used (LIFO) and holds it inside a transaction
    y.batch_execute("begin").await.unwrap();
    let ypid: i64 = y
        .query_one("select pg_backend_pid()::bigint", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ypid, pid1, "LIFO reuse expected");
    // y's server inherited nothing: its TimeZone is y's own
    let ytz: String = y
        .query_one("select current_setting('TimeZone')", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(ytz, "Asia/Tokyo");

    // x now runs on another backend and still sees its TimeZone
    let row = x
        .query_one(
            "select pg_backend_pid()::bigint, current_setting('TimeZone')",
            &[],
        )
        .await
        .unwrap();
    let (pid2, tz): (i64, String) = (row.get(0), row.get(1));
    assert_ne!(pid2, pid1, "expected a different backend");
    assert_eq!(tz, "Asia/Tokyo");
    y.batch_execute("commit").await.unwrap();

    // application_name from the startup packet follows too
    let z = connect(&format!("{url} application_name=zapp"))
        .await
        .unwrap();
    let app: String = z
        .query_one("select current_setting('application_name')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(app, "zapp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_mid_transaction_leaves_nothing_behind() {
    let (pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "default_pool_size = 2",
        &[(&seed.app_user, &seed.app_password)],
    );
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let setup = connect(&url).await.unwrap();
    setup
        .batch_execute("create table locked(id int)")
        .await
        .unwrap();

    // raw socket, so we can vanish without Terminate
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    client
        .batch_execute(
            "begin; lock table locked in access exclusive mode; insert into locked values (1)",
        )
        .await
        .unwrap();
    driver.abort(); // drops the socket mid-transaction
    drop(client);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let idle_tx = pg
            .psql(
                "postgres",
                "select count(*) from pg_stat_activity where state like 'idle in transaction%'",
            )
            .unwrap();
        if idle_tx.trim() == "0" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "backend left idle in transaction"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // the lock is free and the insert rolled back
    let c = connect(&url).await.unwrap();
    c.batch_execute(
        "set lock_timeout = '2s'; begin; lock table locked in access exclusive mode nowait; commit",
    )
    .await
    .unwrap();
    let n: i64 = c
        .query_one("select count(*) from locked", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    assert!(
        mux.log_text()
            .contains("closing because: client disconnect while server was not ready")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_clients_onto_fifty_servers() {
    let (pg, seed) = postgres(120);
    let mux = Pgmux::start(
        &pg,
        // md5 keeps 1000 client logins cheap: this test is about multiplexing
        "default_pool_size = 50\nquery_wait_timeout = 60\nauth_type = md5",
        &[(&seed.app_user, &seed.app_password)],
    );
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    // connect 1000 clients (bounded concurrency for the handshakes)
    let mut clients = Vec::new();
    for chunk in 0..10 {
        let futs: Vec<_> = (0..100).map(|_| connect(&url)).collect();
        clients.extend(
            try_join_all(futs)
                .await
                .unwrap_or_else(|e| panic!("chunk {chunk}: {e}")),
        );
    }
    assert_eq!(clients.len(), 1000);
    // max_client_conn = 1000: the 1001st client is refused, the first 1000 keep working
    let e = connect(&url).await.unwrap_err();
    assert_eq!(
        db_error(&e),
        (
            "08P01".into(),
            "no more connections allowed (max_client_conn)".into()
        )
    );

    let work: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| async move {
            for j in 0..3 {
                // unnamed statements: Parse/Bind/Execute/Sync in one round trip
                let v = i as i32 * 10 + j;
                let rows = c
                    .query_typed("select $1::int, pg_sleep(0.005)::text", &[(&v, Type::INT4)])
                    .await?;
                let r = &rows[0];
                assert_eq!(r.get::<_, i32>(0), i as i32 * 10 + j);
            }
            Ok::<_, tokio_postgres::Error>(())
        })
        .collect();
    let pgref = &pg;
    let sampler = async {
        let mut max = 0;
        for _ in 0..40 {
            let n =
                tokio::task::block_in_place(|| backends(pgref, "synergyflow", "synergyflow_app"));
            max = max.max(n);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        max
    };
    let (res, max) = tokio::join!(try_join_all(work), sampler);
    res.unwrap();
    let after = backends(&pg, "synergyflow", "synergyflow_app");
    assert!(max <= 50, "saw {max} server connections");
    assert!(after <= 50, "{after} server connections after the run");
    assert!(
        max >= 10,
        "expected real concurrency, saw only {max} server connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_running_query() {
    let (pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "default_pool_size = 5",
        &[(&seed.app_user, &seed.app_password)],
    );
    let c = connect(&mux.url("synergyflow", &seed.app_user, &seed.app_password))
        .await
        .unwrap();
    let token = c.cancel_token();
    let start = std::time::Instant::now();
    let q = c.simple_query("select pg_sleep(20)");
    let canceller = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    };
    let (res, ()) = tokio::join!(q, canceller);
    let err = res.unwrap_err();
    assert_eq!(db_error(&err).0, "57014", "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
    // the connection still works afterwards
    assert_eq!(
        c.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );

    // a cancel with a wrong key does nothing
    let other = connect(&mux.url("synergyflow", &seed.app_user, &seed.app_password))
        .await
        .unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", mux.port)).unwrap();
    use std::io::Write;
    let mut pkt = 16u32.to_be_bytes().to_vec();
    pkt.extend(80877102u32.to_be_bytes());
    pkt.extend([1, 2, 3, 4, 5, 6, 7, 8]);
    s.write_all(&pkt).unwrap();
    let r = other.query_one("select pg_sleep(0.3)::text", &[]).await;
    assert!(r.is_ok());
}

#[test]
fn psql_and_pgbench_through_pgmux() {
    let (pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "default_pool_size = 10",
        &[(&seed.app_user, &seed.app_password)],
    );

    let conn = format!(
        "host=127.0.0.1 port={} dbname=synergyflow user={}",
        mux.port, seed.app_user
    );
    let out = std::process::Command::new(pg.tool("psql"))
        .args([
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "select 1+1",
            "-c",
            "show timezone",
            &conn,
        ])
        .env("PGPASSWORD", &seed.app_password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("2\n"));

    pgbench_init(&pg, &conn, &seed.app_password);
    for mode in ["simple", "extended"] {
        let run = std::process::Command::new(pg.tool("pgbench"))
            .args(["-c", "40", "-j", "2", "-t", "50", "-M", mode, "-n", &conn])
            .env("PGPASSWORD", &seed.app_password)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{mode}: {}\n{}",
            out,
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            out.contains("number of transactions actually processed: 2000/2000"),
            "{out}"
        );
        assert!(out.contains("number of failed transactions: 0"), "{out}");
    }
    // every pgbench transaction was accounted for: the balances moved consistently
    assert!(pgbench_balances_add_up(&pg));
    assert!(backends(&pg, "synergyflow", "synergyflow_app") <= 10);
}
