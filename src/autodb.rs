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
        let Some(((db, user), _)) = freed else {
            continue;
        };
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
