//! A pool whose servers are socket pairs, for the pool's unit tests and the hot-path micro-benchmarks (no PostgreSQL; behaviour tests use a real one).

use super::{Mode, Pool, PoolSettings};
use crate::params::Tracked;
use crate::server::stream::Stream;
use crate::server::{ServerAddr, ServerConn, ServerState, ServerTarget};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

/// A transaction-mode pool of `size` for db/u with `idle` servers adopted idle: each is one end
/// of a unix socket pair, the other ends are returned (drop them and the servers see EOF).
/// Needs a tokio runtime.
#[doc(hidden)]
pub fn socketpair_pool(
    size: usize,
    idle: usize,
    query_wait_timeout: Duration,
) -> (Arc<Pool>, Vec<tokio::net::UnixStream>) {
    let general = crate::config::General::default();
    let target = ServerTarget {
        hosts: vec![],
        port: 5432,
        default_unix_dir: "/nonexistent".into(),
        dbname: "db".into(),
        user: "u".into(),
        password: std::sync::RwLock::new(None),
        startup: vec![],
        connect_query: None,
        connect_timeout: Duration::from_secs(1),
        next_host: AtomicUsize::new(0),
        tls: Arc::new(crate::tls::TlsState::new(&general).unwrap()),
        scram_keys: Default::default(),
        dns: Arc::new(crate::dns::Dns::new(&general)),
        tcp: Default::default(),
    };
    let settings = PoolSettings {
        size,
        min_size: 0,
        mode: Mode::Transaction,
        server_lifetime: Duration::from_secs(3600),
        server_idle_timeout: Duration::ZERO,
        query_wait_timeout,
        round_robin: false,
        reset_query: None,
        reserve_size: 0,
        reserve_timeout: Duration::from_secs(5),
        login_retry: Duration::from_secs(15),
        connect_concurrency: 1,
    };
    let tracked = Arc::new(Tracked::new(&[]));
    let group = super::group::ConnGroup::new(0);
    let p = Pool::new(
        "db".into(),
        "u".into(),
        target,
        settings,
        tracked.clone(),
        false,
        group.clone(),
        group,
    );
    let mut peers = Vec::new();
    for _ in 0..idle {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        peers.push(b);
        let now = crate::clock::now_us();
        p.adopt_idle(ServerConn::from(ServerState {
            id: ServerState::new_id(),
            stream: Stream::Unix(a),
            addr: ServerAddr::Unix("/test".into()),
            local: String::new(),
            key: (1, 2),
            params: tracked.empty_set(),
            created: now,
            last_used: now,
            epoch: 0,
            prepared: Default::default(),
            rbuf: Default::default(),
            shard: 0,
        }));
    }
    (p, peers)
}
