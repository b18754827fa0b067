//! A queued client's request sent on ahead by the client that releases the server (real pgmux, real PostgreSQL): parameters, cancel, timeouts and pipelines without Sync stay right.

mod common;

use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Simple-protocol rows of `q`, first column.
async fn col(c: &tokio_postgres::Client, q: &str) -> Vec<String> {
    rows_of(&c.simple_query(q).await.unwrap())
        .into_iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_clients_with_different_parameters_each_see_their_own() {
    let (pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "default_pool_size = 1",
        &[(&seed.app_user, &seed.app_password)],
    );
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let c = connect(&url).await.unwrap();
            let tz = if i % 2 == 0 { "Asia/Tokyo" } else { "UTC" };
            c.batch_execute(&format!("SET TimeZone = '{tz}'"))
                .await
                .unwrap();
            // one server for all eight: every query after the first waits in the queue and is
            // handed the server by another client, half of them with the other TimeZone
            for _ in 0..40 {
                assert_eq!(col(&c, "show timezone").await, vec![tz.to_string()]);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(backends(&pg, "synergyflow", &seed.app_user), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_on_ahead_can_be_cancelled_and_times_out() {
    let (pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "default_pool_size = 1\nquery_timeout = 3",
        &[(&seed.app_user, &seed.app_password)],
    );
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let holder = connect(&url).await.unwrap();
    let waiter = connect(&url).await.unwrap();

    // the waiter queues behind a transaction; the holder's COMMIT hands it the server
    holder.batch_execute("begin; select 1").await.unwrap();
    let token = waiter.cancel_token();
    let start = Instant::now();
    let q = waiter.simple_query("select pg_sleep(20)");
    let other = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        holder.batch_execute("commit").await.unwrap();
        // the sleep is running now, on the server the holder gave back
        tokio::time::sleep(Duration::from_millis(700)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    };
    let (res, ()) = tokio::join!(q, other);
    let err = res.unwrap_err();
    assert_eq!(db_error(&err).0, "57014", "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(col(&waiter, "select 7").await, vec!["7".to_string()]);

    // query_timeout (3 s) ends a query sent on ahead as it ends any other
    holder.batch_execute("begin; select 1").await.unwrap();
    let start = Instant::now();
    let q = waiter.simple_query("select pg_sleep(20)");
    let other = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        holder.batch_execute("commit").await.unwrap();
    };
    let (res, ()) = tokio::join!(q, other);
    let err = res.unwrap_err();
    let waited = start.elapsed();
    assert_eq!(db_error(&err).1, "query timeout", "{err:?}");
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    // the holder and a new client still get served
    assert_eq!(col(&holder, "select 8").await, vec!["8".to_string()]);
    let again = connect(&url).await.unwrap();
    assert_eq!(col(&again, "select 9").await, vec!["9".to_string()]);
}

/// One protocol message: tag, length, body.
fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend(((body.len() + 4) as u32).to_be_bytes());
    m.extend(body);
    m
}

/// Read messages until a ReadyForQuery; returns their tags.
fn read_until_ready(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut tags = Vec::new();
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).unwrap();
        tags.push(head[0]);
        if head[0] == b'Z' {
            return tags;
        }
    }
}

/// Log in a raw client (the pooler trusts clients in this test).
fn raw_login(port: u16, user: &str) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&startup_packet(user, "synergyflow")).unwrap();
    read_until_ready(&mut s);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_pipeline_without_sync_waits_for_its_sync() {
    let (pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "auth_type = trust\ndefault_pool_size = 1",
        &[(&seed.app_user, &seed.app_password)],
    );
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let holder = connect(&url).await.unwrap();
    holder.batch_execute("begin; select 1").await.unwrap();

    let (port, user) = (mux.port, seed.app_user.clone());
    let raw = tokio::task::spawn_blocking(move || {
        let mut s = raw_login(port, &user);
        // Parse, Bind, Execute of an unnamed statement, no Sync yet: queued behind the holder
        let mut batch = msg(b'P', b"\0select 41 + 1\0\0\0");
        batch.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
        batch.extend(msg(b'E', b"\0\0\0\0\0"));
        s.write_all(&batch).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        // the holder committed meanwhile; the server has not answered (no Sync), and it must
        // not wait for an answer before reading the Sync
        s.write_all(&msg(b'S', b"")).unwrap();
        read_until_ready(&mut s)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.batch_execute("commit").await.unwrap();
    let tags = raw.await.unwrap();
    assert_eq!(tags, b"12DCZ".to_vec());
    assert_eq!(col(&holder, "select 5").await, vec!["5".to_string()]);
}
