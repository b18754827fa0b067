//! `autodb_idle_timeout`: pools of databases reached through the `[databases]` `*` fallback are freed once they have had no client and no server connection for that long, as PgBouncer frees its automatic databases, so database names chosen by clients cannot grow the pool map without bound.

use crate::config::Config;
use crate::state::Shared;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// One janitor pass (every 1/3 s): free the automatic pools vacant for `autodb_idle_timeout`.
pub fn sweep(shared: &Shared, cfg: &Config, now_ms: u64) {
    let timeout = cfg.general.autodb_idle_timeout;
    if timeout.is_zero() || !cfg.databases.contains_key("*") {
        return;
    }
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let expired: Vec<(String, String)> = shared
        .pools
        .iter()
        .filter(|e| !cfg.databases.contains_key(&e.key().0))
        .filter(|e| e.value().vacant_for(now_ms, timeout_ms))
        .map(|e| e.key().clone())
        .collect();
    for key in expired {
        // Only the map holds the pool (no client, connect task or console command has it), and
        // `pool_for` cannot hand it out meanwhile: it clones under the same shard lock.
        let freed = shared
            .pools
            .remove_if(&key, |_, p| Arc::strong_count(p) == 1 && p.is_vacant());
        let Some(((db, user), pool)) = freed else {
            continue;
        };
        // the pool holds its database's counters: let go of it before looking at them
        drop(pool);
        tracing::debug!("{db}/{user}: automatic database pool unused for {timeout:?}, freed");
        if shared.pools.iter().any(|e| e.key().0 == db) {
            continue;
        }
        // the database's shared counters go with its last pool, unless a login holds them
        shared
            .db_groups
            .remove_if(&db, |_, g| Arc::strong_count(g) == 1);
        shared.db_clients.remove_if(&db, |_, c| {
            Arc::strong_count(c) == 1 && c.load(Relaxed) == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[tokio::test]
    async fn vacant_automatic_pools_go_with_their_counters_named_and_held_ones_stay() {
        let cfg = Config::parse_str(
            "[databases]\n* = host=127.0.0.1 port=1\nnamed = host=127.0.0.1 port=1\n\
             [pgbouncer]\nautodb_idle_timeout = 2\n",
            Path::new("x.ini"),
        )
        .unwrap();
        let tls = crate::tls::TlsState::new(&cfg.general).unwrap();
        let shards = crate::shard::Shards::new(vec![tokio::runtime::Handle::current()]);
        let shared = Shared::new(
            cfg.clone(),
            Default::default(),
            Default::default(),
            tls,
            shards,
        );
        let db = |n: &str| cfg.database(n).unwrap().clone();
        drop(shared.pool_for("auto1", &db("auto1"), "u"));
        drop(shared.pool_for("named", &db("named"), "u"));
        let held = shared.pool_for("auto2", &db("auto2"), "u");
        assert!(shared.db_groups.contains_key("auto1"));

        // the first vacant look starts the clock; freed once 2 s have passed since
        sweep(&shared, &cfg, 10_000);
        sweep(&shared, &cfg, 11_000);
        assert_eq!(shared.pools.len(), 3);
        sweep(&shared, &cfg, 12_000);
        let keys: Vec<String> = shared.pools.iter().map(|e| e.key().0.clone()).collect();
        assert!(!keys.contains(&"auto1".to_string()), "{keys:?}");
        assert!(keys.contains(&"named".to_string()), "{keys:?}");
        // held by a client (an Arc outside the map): stays, however long
        assert!(keys.contains(&"auto2".to_string()), "{keys:?}");
        assert!(!shared.db_groups.contains_key("auto1"));
        assert!(shared.db_groups.contains_key("auto2"));

        // a login between two looks starts the clock again
        drop(held);
        sweep(&shared, &cfg, 20_000);
        drop(shared.pool_for("auto2", &db("auto2"), "u"));
        sweep(&shared, &cfg, 22_500);
        assert!(shared.pools.iter().any(|e| e.key().0 == "auto2"));
        sweep(&shared, &cfg, 24_500);
        assert!(!shared.pools.iter().any(|e| e.key().0 == "auto2"));
        assert!(!shared.db_groups.contains_key("auto2"));

        // autodb_idle_timeout = 0: nothing is freed
        let off = Config::parse_str(
            "[databases]\n* = host=127.0.0.1 port=1\n[pgbouncer]\nautodb_idle_timeout = 0\n",
            Path::new("x.ini"),
        )
        .unwrap();
        drop(shared.pool_for("auto3", &db("auto3"), "u"));
        sweep(&shared, &off, 30_000);
        sweep(&shared, &off, 90_000);
        assert!(shared.pools.iter().any(|e| e.key().0 == "auto3"));
    }
}
