//! Peering (peer_id, [peers]): a CancelRequest reaching any instance of a group cancels the query wherever it runs; wrong keys, dead peers and loops; SHOW PEERS / PEER_POOLS; RELOAD; several processes on one port.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

/// `peer_id = me` plus a [peers] block (after the [pgbouncer] lines, so it opens its own section).
fn peer_lines(me: u32, extra: &str, peers: &[(u32, String)]) -> String {
    let mut s = format!("peer_id = {me}\n{extra}\n[peers]\n");
    for (id, v) in peers {
        s.push_str(&format!("{id} = {v}\n"));
    }
    s
}

/// Send `token`'s CancelRequest to `port` on loopback (whichever instance listens there).
async fn cancel_via(token: &tokio_postgres::CancelToken, port: u16) {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    token.cancel_query_raw(s, NoTls).await.unwrap();
}

/// Run `select pg_sleep(30)` on `client`, cancel it through `port`, and return how long the
/// cancel took to land, checking the error is PostgreSQL's 57014 and the client still works.
async fn sleep_and_cancel(client: &tokio_postgres::Client, port: u16) -> Duration {
    let token = client.cancel_token();
    let t = Instant::now();
    let (res, _) = tokio::join!(client.simple_query("select pg_sleep(30)"), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel_via(&token, port).await;
    });
    let took = t.elapsed() - Duration::from_millis(300);
    let err = res.expect_err("the sleep was cancelled");
    assert_eq!(
        db_error(&err),
        (
            "57014".to_string(),
            "canceling statement due to user request".to_string()
        )
    );
    let v: i32 = client.query_one("select 7", &[]).await.unwrap().get(0);
    assert_eq!(v, 7, "the connection stays usable");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_query_through_any_of_three_instances() {
    let (pg, seed) = postgres(100);
    let users = [
        (seed.app_user.as_str(), seed.app_password.as_str()),
        ("admin", "admin-pw"),
    ];
    let ports = [free_port(), free_port(), free_port()];
    // the same [peers] block for all three, each listing itself too; peer 9 is not running
    let dead = free_port();
    let mut peers: Vec<(u32, String)> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u32 + 1, format!("host=127.0.0.1 port={p} pool_size=2")))
        .collect();
    peers.push((9, format!("host=127.0.0.1 port={dead}")));
    let muxes: Vec<Pgmux> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            Pgmux::start_on(
                &pg,
                &peer_lines(i as u32 + 1, "admin_users = admin", &peers),
                &users,
                port,
            )
        })
        .collect();
    let client = connect(&muxes[0].url("synergyflow", &seed.app_user, &seed.app_password))
        .await
        .unwrap();
    for &port in &ports {
        let took = sleep_and_cancel(&client, port).await;
        assert!(
            took < Duration::from_secs(1),
            "cancel via {port} took {took:?}"
        );
    }

    // SHOW PEERS lists the block; SHOW PEER_POOLS has a row for each peer forwarded to
    let admin2 = connect(&muxes[1].url("pgbouncer", "admin", "admin-pw"))
        .await
        .unwrap();
    let peers_rows = rows_of(&admin2.simple_query("SHOW PEERS").await.unwrap());
    assert_eq!(peers_rows.len(), 4, "{peers_rows:?}");
    assert_eq!(
        peers_rows[0],
        vec![
            Some("1".to_string()),
            Some("127.0.0.1".to_string()),
            Some(ports[0].to_string()),
            Some("2".to_string())
        ]
    );
    let msgs = admin2.simple_query("SHOW PEER_POOLS").await.unwrap();
    let cols: Vec<String> = match &msgs[0] {
        tokio_postgres::SimpleQueryMessage::RowDescription(d) => {
            d.iter().map(|c| c.name().to_string()).collect()
        }
        _ => panic!("no RowDescription"),
    };
    assert_eq!(
        cols,
        [
            "peer_id",
            "cl_active_cancel_req",
            "cl_waiting_cancel_req",
            "sv_active_cancel",
            "sv_login"
        ]
    );
    let pools = rows_of(&msgs);
    assert_eq!(
        pools.len(),
        1,
        "instance 2 forwarded to peer 1 only: {pools:?}"
    );
    assert_eq!(pools[0][0].as_deref(), Some("1"));
    let lists = rows_of(&admin2.simple_query("SHOW LISTS").await.unwrap());
    let item = |name: &str| {
        lists
            .iter()
            .find(|r| r[0].as_deref() == Some(name))
            .and_then(|r| r[1].clone())
            .unwrap()
    };
    assert_eq!(item("peers"), "4");
    assert_eq!(item("peer_pools"), "1");

    // wrong keys cancel nothing, on any instance; a key for the dead peer is dropped
    let victim = connect(&muxes[0].url("synergyflow", &seed.app_user, &seed.app_password))
        .await
        .unwrap();
    let attack = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (i, &port) in ports.iter().enumerate() {
            for n in 0..20u8 {
                let mut key = [0u8; 8];
                getrandom(&mut key);
                key[0] &= 0x7f;
                // half of them claim to come from instance 1 (the victim's), half from peer 9
                let peer: u16 = if n % 2 == 0 { 1 } else { 9 };
                key[1] = (peer & 0xff) as u8;
                key[2] = (peer >> 8) as u8;
                key[7] |= 3;
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                use tokio::io::AsyncWriteExt;
                let mut pkt = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
                pkt.extend_from_slice(&key);
                s.write_all(&pkt).await.unwrap();
                let _ = i;
            }
        }
    };
    let (res, _) = tokio::join!(victim.simple_query("select pg_sleep(2)"), attack);
    res.expect("guessed keys cancel nothing");
    let t = Instant::now();
    client.simple_query("select 1").await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "instances keep serving"
    );
    let dead_forward = Instant::now() + Duration::from_secs(15);
    while !muxes.iter().any(|m| {
        m.log_text()
            .contains("forwarding a cancel request to peer 9 failed")
    }) {
        assert!(Instant::now() < dead_forward, "no log of the dead peer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // RELOAD removes peer 9 and adds peer 5
    let ini = std::fs::read_to_string(&muxes[1].ini).unwrap();
    let ini = ini.replace(
        &format!("9 = host=127.0.0.1 port={dead}\n"),
        "5 = host=/nonexistent port=7000 pool_size=3\n",
    );
    std::fs::write(&muxes[1].ini, ini).unwrap();
    admin2.simple_query("RELOAD").await.unwrap();
    let ids: Vec<Option<String>> = rows_of(&admin2.simple_query("SHOW PEERS").await.unwrap())
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(
        ids,
        ["1", "2", "3", "5"].map(|s| Some(s.to_string())).to_vec()
    );
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(buf)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigured_peers_do_not_loop() {
    let (pg, seed) = postgres(100);
    let users = [(seed.app_user.as_str(), seed.app_password.as_str())];
    let (pa, pb) = (free_port(), free_port());
    // A is 1 and thinks 3 is B; B is 2 and thinks 3 is A: a key naming 3 bounces between them
    let a = Pgmux::start_on(
        &pg,
        &peer_lines(1, "", &[(3, format!("host=127.0.0.1 port={pb}"))]),
        &users,
        pa,
    );
    let b = Pgmux::start_on(
        &pg,
        &peer_lines(2, "", &[(3, format!("host=127.0.0.1 port={pa}"))]),
        &users,
        pb,
    );
    let mut key = [0x11u8, 3, 0, 0x22, 0x33, 0x44, 0x55, 0x03];
    key[0] &= 0x7f;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", pa)).unwrap();
    use std::io::Write;
    let mut pkt = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    pkt.extend_from_slice(&key);
    s.write_all(&pkt).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.log_text() + &b.log_text()).contains("TTL was exhausted") {
        assert!(Instant::now() < deadline, "no TTL exhaustion logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for m in [&a, &b] {
        let c = connect(&m.url("synergyflow", &seed.app_user, &seed.app_password))
            .await
            .unwrap();
        c.simple_query("select 1").await.unwrap();
    }
    // 3 hops and no more: A→B, B→A, A→B, then B drops it
    let forwards = (a.log_text() + &b.log_text())
        .matches("TTL was exhausted")
        .count();
    assert_eq!(forwards, 1);
}

/// psql, Ctrl-C: psql sends the CancelRequest on a new connection to the same port; `rounds`
/// times, each must land within 2 s with PostgreSQL's message.
async fn psql_cancels(pg: &pgmux::dev::TempPostgres, conn: &str, password: &str, rounds: u32) {
    for round in 0..rounds {
        let mut psql = Command::new(pg.tool("psql"))
            .args(["-X", "-c", "select pg_sleep(30)", conn])
            .env("PGPASSWORD", password)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while pg
            .psql(
                "postgres",
                "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'",
            )
            .unwrap()
            .trim()
            != "1"
        {
            assert!(Instant::now() < deadline, "the sleep did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let t = Instant::now();
        unsafe { libc::kill(psql.id() as i32, libc::SIGINT) };
        let out = tokio::task::block_in_place(|| {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Some(st) = psql.try_wait().unwrap() {
                    return Some(st);
                }
                if Instant::now() > deadline {
                    let _ = psql.kill();
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        assert!(out.is_some(), "round {round}: psql's cancel did not land");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "round {round}: {:?}",
            t.elapsed()
        );
        let mut err = String::new();
        use std::io::Read;
        psql.stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            err.contains("canceling statement due to user request"),
            "round {round}: {err}"
        );
    }
}

/// Several processes, one port (so_reuseport), peers over their unix sockets: psql's own cancel
/// (SIGINT to psql) lands on either process and always works; pgbench through the port fails
/// nothing while one process drains on SIGINT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn so_reuseport_group_cancels_and_drains() {
    let _migrate = Sysctl::migrate_req();
    let (pg, seed) = postgres(100);
    let users = [(seed.app_user.as_str(), seed.app_password.as_str())];
    let port = free_port();
    let base = std::env::temp_dir().join(format!("pgmux-peering-{}", std::process::id()));
    let dirs: Vec<std::path::PathBuf> = (1..=2).map(|i| base.join(format!("p{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let peers: Vec<(u32, String)> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| (i as u32 + 1, format!("host={} port={port}", d.display())))
        .collect();
    let mut procs: Vec<Pgmux> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let extra = format!(
                "so_reuseport = 1\nunix_socket_dir = {}\ndefault_pool_size = 10",
                d.display()
            );
            Pgmux::start_on(&pg, &peer_lines(i as u32 + 1, &extra, &peers), &users, port)
        })
        .collect();
    let conn = format!(
        "host=127.0.0.1 port={port} dbname=synergyflow user={}",
        seed.app_user
    );
    psql_cancels(&pg, &conn, &seed.app_password, 4).await;
    // pgJDBC: Statement.cancel() and setQueryTimeout() through the same port
    let jar = "/usr/share/java/postgresql.jar";
    assert!(
        std::path::Path::new(jar).exists(),
        "pgJDBC missing: apt-get install libpostgresql-jdbc-java (.ci/run does)"
    );
    let java = Command::new("java")
        .args(["-cp", jar])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/drivers/CancelTest.java"
        ))
        .args([
            "127.0.0.1",
            &port.to_string(),
            "synergyflow",
            &seed.app_user,
            &seed.app_password,
            "6",
        ])
        .output()
        .unwrap();
    assert!(
        java.status.success(),
        "pgJDBC cancels:\n{}\n{}",
        String::from_utf8_lossy(&java.stdout),
        String::from_utf8_lossy(&java.stderr)
    );

    // pgbench (a connection per transaction) while the first process drains on SIGINT
    pgbench_init(&pg, &conn, &seed.app_password);
    let bench = Command::new(pg.tool("pgbench"))
        .args(["-c", "8", "-j", "2", "-T", "12", "-C", "-n", &conn])
        .env("PGPASSWORD", &seed.app_password)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // cancels under load land too
    psql_cancels(&pg, &conn, &seed.app_password, 4).await;
    let code = tokio::task::block_in_place(|| {
        procs[0].signal_and_wait(libc::SIGINT, Duration::from_secs(20))
    });
    assert_eq!(code, Some(0));
    let out = tokio::task::block_in_place(|| bench.wait_with_output()).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}"
    );
    assert!(pgbench_balances_add_up(&pg));
    drop(procs.pop());
}
