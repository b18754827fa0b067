//! The pool's side of the janitor: idle timeouts and lifetimes of idle servers, query_wait_timeout for queued clients, the reserve pool, min_pool_size.

use super::Pool;
use std::sync::Arc;

impl Pool {
    /// Janitor pass (every 1/3 s): close idle servers past server_idle_timeout (keeping
    /// min_pool_size) or server_lifetime; take from the reserve pool for clients waiting longer
    /// than reserve_pool_timeout; open connections up to min_pool_size while clients are connected.
    pub fn maintain(self: &Arc<Self>) {
        let mut closing = Vec::new();
        let mut open = 0;
        let settings = self.settings();
        {
            let mut g = self.inner.lock().unwrap();
            let now = crate::clock::now_us();
            let us = crate::clock::us;
            let idle_to = settings.server_idle_timeout;
            let life = settings.server_lifetime;
            let mut i = 0;
            while i < g.idle.len() {
                let healthy = g.idle[i].is_healthy();
                let s = &g.idle[i];
                let reason = if !healthy {
                    Some("server conn crashed?")
                } else if !life.is_zero() && self.life_over(s, g.hot, now) {
                    Some("server lifetime over")
                } else if !idle_to.is_zero()
                    && now.saturating_sub(s.last_used) >= us(idle_to)
                    && g.total - closing.len() > settings.min_size
                {
                    Some("server idle timeout")
                } else {
                    None
                };
                match reason {
                    Some(r) => closing.push((g.idle.remove(i), r)),
                    None => i += 1,
                }
            }
            // query_wait_timeout, checked here every 1/3 s as PgBouncer's janitor does
            let wait_to = settings.query_wait_timeout;
            while !wait_to.is_zero()
                && g.waiters
                    .oldest()
                    .is_some_and(|t| now.saturating_sub(t) >= us(wait_to))
            {
                if let Some((_, w)) = g.waiters.pop_oldest() {
                    w.deliver(Err(None));
                }
            }
            let oldest_wait = g.waiters.oldest().map(|t| now.saturating_sub(t));
            if settings.reserve_size > 0
                && oldest_wait.is_some_and(|w| w >= us(settings.reserve_timeout))
                && g.wants_connect()
                && g.total >= settings.size
                && self.try_open(&mut g, settings.reserve_size)
            {
                tracing::warn!(
                    "{}/{}: taking connection from reserve_pool",
                    self.db,
                    self.user
                );
                open += 1;
            }
            if self.clients.load(std::sync::atomic::Ordering::Relaxed) > 0
                && g.total < settings.min_size
                && g.connecting < g.hot.connect_concurrency
                && self.try_open(&mut g, 0)
            {
                open += 1;
            }
        }
        for (s, r) in closing {
            self.close(s, r);
        }
        for _ in 0..open {
            self.spawn_connect();
        }
    }
}
