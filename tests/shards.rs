//! The shard runtime layout (`PGMUX_RUNTIME=shards`: one runtime per core) through a real pgmux process and a real PostgreSQL: clients spread over the shards, one server used by clients of every shard, many clients queued onto few servers.

mod common;

use common::faults::{OP_LIMIT, eventually, pool_row};
use common::*;
use futures_util::future::try_join_all;
use std::collections::HashSet;

const SHARDS: usize = 4;

fn start(pg: &pgmux::dev::TempPostgres, seed: &pgmux::dev::Seed, lines: &str) -> Pgmux {
    let threads = SHARDS.to_string();
    Pgmux::start_env(
        pg,
        &format!("auth_type = md5\nadmin_users = admin\n{lines}"),
        &[(&seed.app_user, &seed.app_password), ("admin", "admin-pw")],
        free_port(),
        &[("PGMUX_RUNTIME", "shards"), ("PGMUX_THREADS", &threads)],
    )
}

/// CPU ticks used so far by each of pgmux's shard threads (`pgmux-<n>`), by shard.
fn shard_ticks(pid: u32) -> Vec<u64> {
    let mut ticks = vec![0; SHARDS];
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        let Some(n) = comm.trim().strip_prefix("pgmux-") else {
            continue;
        };
        let stat = std::fs::read_to_string(t.join("stat")).unwrap_or_default();
        // fields after the command name: state is the 3rd field, utime and stime the 14th/15th
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let used: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        ticks[n.parse::<usize>().unwrap()] += used;
    }
    ticks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_serves_clients_of_every_shard_in_turn() {
    let (pg, seed) = postgres(40);
    let mux = start(&pg, &seed, "default_pool_size = 1");
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    // 8 clients: two on each shard (new clients go to the shard with the fewest)
    let mut clients = Vec::new();
    for _ in 0..2 * SHARDS {
        clients.push(connect(&url).await.unwrap());
    }
    // one server: taken in turn by clients of every shard, so it is moved from shard to shard
    // (registered anew each time) and must keep working, in and out of transactions
    let mut pids = HashSet::new();
    for round in 0..5 {
        for (i, c) in clients.iter().enumerate() {
            let v = (round * 100 + i) as i32;
            let row = c
                .query_one("select $1::int + 1, pg_backend_pid()", &[&v])
                .await
                .unwrap();
            assert_eq!(row.get::<_, i32>(0), v + 1);
            pids.insert(row.get::<_, i32>(1));
            c.batch_execute("begin; create temp table if not exists t(x int); rollback")
                .await
                .unwrap();
        }
    }
    assert_eq!(pids.len(), 1, "one server connection throughout: {pids:?}");
    let admin = connect(&mux.url("pgbouncer", "admin", "admin-pw"))
        .await
        .unwrap();
    // tokio-postgres closes each statement after the fact (Close + Sync sent in the
    // background), which takes the server for a moment: wait for the pool to settle
    let settled = eventually(OP_LIMIT, || async {
        let p = pool_row(&admin).await;
        p["sv_active"] == "0" && p["sv_idle"] == "1"
    })
    .await;
    let p = pool_row(&admin).await;
    assert!(settled, "the server is not back in the pool: {p:?}");
    assert_eq!(
        (p["cl_active"].as_str(), p["cl_waiting"].as_str()),
        ("8", "0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_queue_onto_few_servers_across_shards() {
    let (pg, seed) = postgres(40);
    let mux = start(&pg, &seed, "default_pool_size = 6\nquery_wait_timeout = 60");
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let before = shard_ticks(mux.pid());
    let mut clients = Vec::new();
    for _ in 0..3 {
        let futs: Vec<_> = (0..100).map(|_| connect(&url)).collect();
        clients.extend(try_join_all(futs).await.unwrap());
    }
    let work: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| async move {
            for j in 0..20 {
                let v = (i * 100 + j) as i32;
                // a transaction holds its server across statements
                c.batch_execute("begin").await?;
                let a: i32 = c.query_one("select $1::int", &[&v]).await?.get(0);
                let b: i32 = c.query_one("select $1::int * 2", &[&a]).await?.get(0);
                c.batch_execute("commit").await?;
                assert_eq!((a, b), (v, 2 * v));
            }
            Ok::<_, tokio_postgres::Error>(())
        })
        .collect();
    try_join_all(work).await.unwrap();
    let after = shard_ticks(mux.pid());
    // every shard ran clients
    for (n, (a, b)) in after.iter().zip(&before).enumerate() {
        assert!(a > b, "shard {n} did no work: {before:?} -> {after:?}");
    }
    assert!(backends(&pg, "synergyflow", "synergyflow_app") <= 6);
    let admin = connect(&mux.url("pgbouncer", "admin", "admin-pw"))
        .await
        .unwrap();
    let settled = eventually(OP_LIMIT, || async {
        pool_row(&admin).await["sv_active"] == "0"
    })
    .await;
    let p = pool_row(&admin).await;
    assert!(settled, "servers still in use: {p:?}");
    assert_eq!(
        (p["cl_active"].as_str(), p["cl_waiting"].as_str()),
        ("300", "0")
    );
    let idle: usize = p["sv_idle"].parse().unwrap();
    assert!((1..=6).contains(&idle), "sv_idle {idle}");
}
