//! Protocol-level named prepared statements in transaction mode (max_prepared_statements):
//! tokio-postgres and pgbench with many clients on a small pool, raw-protocol edge cases.

mod common;

use common::*;
use futures_util::future::try_join_all;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Many tokio-postgres clients (each preparing its own named statements "s0", "s1", … as the
/// driver does) share 3 servers; every result is checked, in and out of explicit transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_named_statements_across_servers() {
    let (pg, seed) = postgres(100);
    let mux = start_with_admin(&pg, &seed, "default_pool_size = 3");
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let setup = connect(&url).await.unwrap();
    setup
        .simple_query("create table kv(k int primary key, v text)")
        .await
        .unwrap();
    let tasks = (0..60).map(|t| {
        let url = url.clone();
        tokio::spawn(async move {
            let mut c = connect(&url).await?;
            let add = c.prepare("select $1::int + $2::int").await?;
            let ins = c
                .prepare("insert into kv values ($1, $2) returning k")
                .await?;
            let get = c.prepare("select v from kv where k = $1").await?;
            for i in 0..20i32 {
                let r = c.query_one(&add, &[&i, &t]).await?;
                assert_eq!(r.get::<_, i32>(0), i + t);
                if i % 5 == 0 {
                    // explicit transaction using the same statements
                    let tx = c.transaction().await?;
                    let k = t * 1000 + i;
                    let r = tx.query_one(&ins, &[&k, &format!("v{k}")]).await?;
                    assert_eq!(r.get::<_, i32>(0), k);
                    let r = tx.query_one(&get, &[&k]).await?;
                    assert_eq!(r.get::<_, String>(0), format!("v{k}"));
                    tx.commit().await?;
                }
            }
            // a pipeline: several queries in flight on one connection, one of them failing
            let bad = c.prepare("select 1 / $1::int").await?;
            let (a, b, z) = tokio::join!(
                c.query_one(&add, &[&1i32, &2i32]),
                c.query_one(&bad, &[&0i32]),
                c.query_one(&add, &[&3i32, &4i32]),
            );
            assert_eq!(a?.get::<_, i32>(0), 3);
            assert!(b.is_err());
            assert_eq!(z?.get::<_, i32>(0), 7);
            Ok::<_, tokio_postgres::Error>(())
        })
    });
    for r in try_join_all(tasks).await.unwrap() {
        r.unwrap();
    }
    assert!(backends(&pg, "synergyflow", &seed.app_user) <= 3);
    let n = rows_of(&setup.simple_query("select count(*) from kv").await.unwrap());
    assert_eq!(n[0][0].as_deref(), Some("240"));

    // the statements were parsed on the servers far fewer times than clients sent Parse
    let adm = connect(&mux.url("pgbouncer", "admin", "admin-pw"))
        .await
        .unwrap();
    let stats = rows_of(&adm.simple_query("SHOW STATS_TOTALS").await.unwrap());
    let s = stats
        .iter()
        .find(|r| r[0].as_deref() == Some("synergyflow"))
        .unwrap();
    let client_parses: u64 = s[9].as_ref().unwrap().parse().unwrap();
    let server_parses: u64 = s[10].as_ref().unwrap().parse().unwrap();
    assert!(client_parses >= 240, "{client_parses}");
    assert!(
        server_parses * 4 < client_parses,
        "server parses {server_parses} vs client parses {client_parses}"
    );
    // SHOW SERVERS / CLIENTS count prepared statements
    let servers = rows_of(&adm.simple_query("SHOW SERVERS").await.unwrap());
    assert!(
        servers.iter().any(|r| r[19].as_deref() != Some("0")),
        "{servers:?}"
    );
}

#[test]
fn pgbench_prepared_and_extended() {
    let (pg, seed) = postgres(100);
    let mux = start_with_admin(&pg, &seed, "default_pool_size = 5");
    let conn = format!(
        "host=127.0.0.1 port={} dbname=synergyflow user={}",
        mux.port, seed.app_user
    );
    pgbench_init(&pg, &conn, &seed.app_password);
    for mode in ["prepared", "extended"] {
        let run = std::process::Command::new(pg.tool("pgbench"))
            .args(["-c", "200", "-j", "2", "-t", "10", "-M", mode, "-n", &conn])
            .env("PGPASSWORD", &seed.app_password)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{mode}: {out}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            out.contains("number of transactions actually processed: 2000/2000"),
            "{out}"
        );
    }
    assert!(pgbench_balances_add_up(&pg));
    assert!(backends(&pg, "synergyflow", &seed.app_user) <= 5);
}

// ---- raw protocol ----

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn parse(name: &str, q: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    b.extend_from_slice(q.as_bytes());
    b.extend_from_slice(&[0, 0, 0]);
    msg(b'P', &b)
}

fn bind(stmt: &str, params: &[&[u8]]) -> Vec<u8> {
    let mut b = vec![0];
    b.extend_from_slice(stmt.as_bytes());
    b.push(0);
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for p in params {
        b.extend_from_slice(&(p.len() as i32).to_be_bytes());
        b.extend_from_slice(p);
    }
    b.extend_from_slice(&0u16.to_be_bytes());
    msg(b'B', &b)
}

fn execute() -> Vec<u8> {
    msg(b'E', &[0, 0, 0, 0, 0])
}

fn sync() -> Vec<u8> {
    msg(b'S', &[])
}

fn close_stmt(name: &str) -> Vec<u8> {
    let mut b = vec![b'S'];
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    msg(b'C', &b)
}

/// A raw client logged in with trust auth.
struct Raw(TcpStream);

impl Raw {
    fn connect(port: u16, user: &str) -> Raw {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&startup_packet(user, "synergyflow")).unwrap();
        let mut r = Raw(s);
        r.until(b'Z');
        r
    }

    fn send(&mut self, parts: &[Vec<u8>]) {
        let all: Vec<u8> = parts.concat();
        self.0.write_all(&all).unwrap();
    }

    fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut h = [0u8; 5];
        self.0.read_exact(&mut h).ok()?;
        let len = u32::from_be_bytes(h[1..5].try_into().unwrap()) as usize - 4;
        let mut b = vec![0; len];
        self.0.read_exact(&mut b).ok()?;
        Some((h[0], b))
    }

    /// Tags read up to and including `last`.
    fn until(&mut self, last: u8) -> Vec<u8> {
        let mut tags = Vec::new();
        loop {
            let (t, _) = self.read().expect("message");
            if t == b'N' || t == b'S' || t == b'K' || t == b'R' {
                if t == last {
                    tags.push(t);
                    return tags;
                }
                continue;
            }
            tags.push(t);
            if t == last {
                return tags;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_protocol_edge_cases() {
    let (pg, seed) = postgres(100);
    let mux = start_with_admin(
        &pg,
        &seed,
        "default_pool_size = 2\nmax_prepared_statements = 2\nauth_type = trust",
    );
    let port = mux.port;
    let user = seed.app_user.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::connect(port, &user);
        // Parse + Flush: the ParseComplete arrives without a Sync
        c.send(&[parse("a", "select 1"), msg(b'H', &[])]);
        assert_eq!(c.until(b'1'), vec![b'1']);
        c.send(&[bind("a", &[]), execute(), sync()]);
        assert_eq!(c.until(b'Z'), vec![b'2', b'D', b'C', b'Z']);
        // more statements than the server LRU holds (2): each is re-prepared as needed
        c.send(&[
            parse("b", "select 2"),
            parse("c", "select 3"),
            parse("d", "select $1::text"),
            sync(),
        ]);
        assert_eq!(c.until(b'Z'), vec![b'1', b'1', b'1', b'Z']);
        for round in 0..3 {
            for (name, want) in [("a", "1"), ("b", "2"), ("c", "3")] {
                c.send(&[bind(name, &[]), execute(), sync()]);
                let mut got = None;
                loop {
                    let (t, b) = c.read().unwrap();
                    if t == b'D' {
                        got = Some(String::from_utf8_lossy(&b[6..]).to_string());
                    }
                    if t == b'Z' {
                        break;
                    }
                    assert_ne!(
                        t,
                        b'E',
                        "round {round} {name}: {}",
                        String::from_utf8_lossy(&b)
                    );
                }
                assert_eq!(got.as_deref(), Some(want), "round {round} {name}");
            }
        }
        // a large Bind parameter (beyond the held prefix) streams through
        let big = vec![b'x'; 300_000];
        c.send(&[bind("d", &[&big]), execute(), sync()]);
        loop {
            let (t, b) = c.read().unwrap();
            if t == b'D' {
                assert_eq!(b.len(), 2 + 4 + big.len());
            }
            if t == b'Z' {
                break;
            }
            assert_ne!(t, b'E');
        }
        // a large Parse (200 KB of query text) as a named statement, executed on any server
        let long_query = format!("select length('{}')", "y".repeat(200_000));
        c.send(&[parse("long", &long_query), sync()]);
        assert_eq!(c.until(b'Z'), vec![b'1', b'Z']);
        c.send(&[bind("long", &[]), execute(), sync()]);
        let mut got = None;
        loop {
            let (t, b) = c.read().unwrap();
            assert_ne!(t, b'E', "{}", String::from_utf8_lossy(&b));
            if t == b'D' {
                got = Some(String::from_utf8_lossy(&b[6..]).to_string());
            }
            if t == b'Z' {
                break;
            }
        }
        assert_eq!(got.as_deref(), Some("200000"));
        // an error inside a pipeline: the server skips to Sync, bookkeeping follows
        c.send(&[
            parse("bad", "select 1/(random()*0)::int"),
            bind("bad", &[]),
            execute(),
            bind("a", &[]),
            execute(),
            sync(),
            bind("a", &[]),
            execute(),
            sync(),
        ]);
        assert_eq!(c.until(b'Z'), vec![b'1', b'2', b'E', b'Z']);
        let mut tags = Vec::new();
        loop {
            let (t, b) = c.read().unwrap();
            assert_ne!(t, b'E', "{}", String::from_utf8_lossy(&b));
            tags.push(t);
            if t == b'Z' {
                break;
            }
        }
        assert_eq!(tags, vec![b'2', b'D', b'C', b'Z']);
        // Close removes the client's name (synthetic CloseComplete); the name can be reused
        c.send(&[close_stmt("a"), parse("a", "select 42"), sync()]);
        assert_eq!(c.until(b'Z'), vec![b'3', b'1', b'Z']);
        // DEALLOCATE ALL clears the client's statements
        c.send(&[msg(b'Q', b"DEALLOCATE ALL\0")]);
        c.until(b'Z');
        c.send(&[parse("a", "select 7"), sync()]);
        assert_eq!(c.until(b'Z'), vec![b'1', b'Z']);
        // SQL-level PREPARE/EXECUTE inside one transaction works (it is per server)
        c.send(&[msg(
            b'Q',
            b"BEGIN; PREPARE q(int) AS SELECT $1 * 2; EXECUTE q(21); DEALLOCATE q; COMMIT\0",
        )]);
        let tags = c.until(b'Z');
        assert!(!tags.contains(&b'E'), "{tags:?}");
        // duplicate name → PgBouncer's FATAL
        c.send(&[parse("dup", "select 1"), parse("dup", "select 1"), sync()]);
        let mut fatal = None;
        while let Some((t, b)) = c.read() {
            if t == b'E' {
                fatal = Some(String::from_utf8_lossy(&b).to_string());
                break;
            }
        }
        assert!(
            fatal
                .unwrap()
                .contains("prepared statement name is already in use"),
            "duplicate name"
        );
        // unknown name → PgBouncer's FATAL
        let mut c = Raw::connect(port, &user);
        c.send(&[bind("nope", &[]), execute(), sync()]);
        let (t, b) = c.read().unwrap();
        assert_eq!(t, b'E');
        assert!(String::from_utf8_lossy(&b).contains("prepared statement did not exist"));
    })
    .await
    .unwrap();
}

/// An extended-protocol COPY FROM STDIN (tokio-postgres pipelines a Sync the server ignores in
/// COPY-in mode) ends with the server released, with and without statement tracking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_through_extended_protocol_releases_the_server() {
    use futures_util::SinkExt;
    let (pg, seed) = postgres(100);
    for mps in [0, 200] {
        let mux = start_with_admin(
            &pg,
            &seed,
            &format!("default_pool_size = 1\nmax_prepared_statements = {mps}"),
        );
        let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
        let a = connect(&url).await.unwrap();
        a.simple_query("create table if not exists cp(v int)")
            .await
            .unwrap();
        let sink = a.copy_in("copy cp from stdin").await.unwrap();
        let mut sink = Box::pin(sink);
        sink.send(bytes::Bytes::from_static(b"1\n2\n3\n"))
            .await
            .unwrap();
        assert_eq!(sink.as_mut().finish().await.unwrap(), 3);
        // the only server is free again for another client
        let b = connect(&url).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(3), b.simple_query("select 1"))
            .await
            .unwrap_or_else(|_| {
                panic!("server not released after COPY (max_prepared_statements={mps})")
            });
        r.unwrap();
        a.query_one("select count(*) from cp", &[]).await.unwrap();
    }
}

impl Raw {
    /// Tags and DataRow values (first column) read up to and including `last`.
    fn collect(&mut self, last: u8) -> (Vec<u8>, Vec<String>) {
        let (mut tags, mut values) = (Vec::new(), Vec::new());
        loop {
            let (t, b) = self.read().expect("message");
            if t == b'N' || t == b'S' {
                continue;
            }
            if t == b'D' {
                values.push(String::from_utf8_lossy(&b[6..]).to_string());
            }
            tags.push(t);
            if t == last {
                return (tags, values);
            }
        }
    }
}

/// Requests naming no statement are forwarded untracked; the first one naming a statement
/// starts tracking with the replies still owed queued ahead of it: in an open pipeline segment,
/// behind complete segments, after a Flush answered part of the segment, after an error the
/// server skips past, and with a synthetic CloseComplete that must follow an owed reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_requests_then_named_ones_in_one_pipeline() {
    let (pg, seed) = postgres(100);
    let mux = start_with_admin(
        &pg,
        &seed,
        "default_pool_size = 1\nmax_prepared_statements = 2\nauth_type = trust",
    );
    let port = mux.port;
    let user = seed.app_user.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = Raw::connect(port, &user);
        let (h, tags) = (msg(b'H', &[]), |s: &[u8]| s.to_vec());
        // answered by pgmux: "a" is on no server yet
        c.send(&[parse("a", "select 11"), sync()]);
        assert_eq!(c.collect(b'Z').0, tags(b"1Z"));
        // one open segment: unnamed Parse/Bind/Execute, then "a" (pgmux prepares it first and
        // swallows that ParseComplete behind the three owed replies)
        c.send(&[
            parse("", "select 5"),
            bind("", &[]),
            execute(),
            bind("a", &[]),
            execute(),
            sync(),
        ]);
        assert_eq!(
            c.collect(b'Z'),
            (tags(b"12DC2DCZ"), vec!["5".into(), "11".into()])
        );
        // a complete unnamed segment ahead of a named one in the same write (the named one
        // waits for its ReadyForQuery; "c" is on no server, so its Parse is added and swallowed)
        c.send(&[parse("c", "select 14"), sync()]);
        assert_eq!(c.collect(b'Z').0, tags(b"1Z"));
        c.send(&[
            parse("", "select 6"),
            bind("", &[]),
            execute(),
            sync(),
            bind("c", &[]),
            execute(),
            sync(),
        ]);
        assert_eq!(c.collect(b'Z'), (tags(b"12DCZ"), vec!["6".into()]));
        assert_eq!(c.collect(b'Z'), (tags(b"2DCZ"), vec!["14".into()]));
        // a Flush answers part of the segment before the named Parse arrives
        c.send(&[parse("", "select 7"), bind("", &[]), h.clone()]);
        assert_eq!(c.collect(b'2').0, tags(b"12"));
        c.send(&[
            execute(),
            parse("b", "select 12"),
            bind("b", &[]),
            execute(),
            sync(),
        ]);
        assert_eq!(
            c.collect(b'Z'),
            (tags(b"DC12DCZ"), vec!["7".into(), "12".into()])
        );
        // an error in the open segment: the server skips the named Bind up to the Sync
        c.send(&[
            parse("", "select 1/(random()*0)::int"),
            bind("", &[]),
            execute(),
            h.clone(),
        ]);
        assert_eq!(c.collect(b'E').0, tags(b"12E"));
        c.send(&[bind("a", &[]), execute(), sync()]);
        assert_eq!(c.collect(b'Z').0, tags(b"Z"));
        c.send(&[bind("a", &[]), execute(), sync()]);
        assert_eq!(c.collect(b'Z'), (tags(b"2DCZ"), vec!["11".into()]));
        // a named Close answered by pgmux after the owed ParseComplete, then the name reused
        c.send(&[
            parse("", "select 8"),
            close_stmt("b"),
            parse("b", "select 13"),
            bind("b", &[]),
            execute(),
            sync(),
        ]);
        assert_eq!(c.collect(b'Z'), (tags(b"1312DCZ"), vec!["13".into()]));
        // the only server was released: another client gets it
        let mut d = Raw::connect(port, &user);
        d.send(&[msg(b'Q', b"select 3\0")]);
        assert_eq!(d.collect(b'Z'), (tags(b"TDCZ"), vec!["3".into()]));
        // and the first client still works
        c.send(&[bind("a", &[]), execute(), sync()]);
        assert_eq!(c.collect(b'Z'), (tags(b"2DCZ"), vec!["11".into()]));
    })
    .await
    .unwrap();
}
