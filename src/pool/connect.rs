//! Opening a server connection for a pool in the background, on the shard of the client most likely to get it.

use super::view::server_meta;
use super::{Pool, Welcome};
use crate::server::login;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

impl Pool {
    /// Open one more server connection in the background; it is handed to the first waiter.
    /// The caller has already counted it (`try_open`).
    /// It is opened on the shard of the longest waiter, the client it will most likely go to,
    /// so servers are spread over the shards as the waiting clients are.
    pub(super) fn spawn_connect(self: &Arc<Self>) {
        let pool = self.clone();
        let task = async move {
            let keys = pool.scram_keys.lock().unwrap().clone();
            let epoch = pool.epoch.load(Relaxed);
            let target = pool.target();
            match login::connect(&target, &pool.tracked, keys).await {
                Ok((mut conn, welcome)) => {
                    conn.epoch = epoch;
                    pool.servers
                        .lock()
                        .unwrap()
                        .insert(conn.id, server_meta(&conn));
                    tracing::info!(
                        "S-{:#x}: {}/{}@{} new connection to server (from {})",
                        conn.id,
                        pool.db,
                        pool.user,
                        conn.addr,
                        conn.local
                    );
                    {
                        let mut w = pool.welcome.lock().unwrap();
                        if w.is_none() {
                            *w = Some(Arc::new(Welcome {
                                params: conn.params.clone(),
                                list: welcome,
                            }));
                        }
                    }
                    *pool.last_login_error.lock().unwrap() = None;
                    pool.inner.lock().unwrap().connecting -= 1;
                    if pool.is_stale(&conn) {
                        pool.close(conn, "database configuration changed");
                    } else {
                        pool.give_back(conn);
                    }
                    // with connects capped, growth goes on one connect at a time
                    pool.kick();
                }
                Err(e) => {
                    tracing::warn!("{}/{}: server login failed: {}", pool.db, pool.user, e);
                    let (code, msg) = e.client_error();
                    *pool.last_login_error.lock().unwrap() =
                        Some((Instant::now(), code.clone(), msg.clone()));
                    let mut g = pool.inner.lock().unwrap();
                    pool.free_slot(&mut g);
                    g.connecting -= 1;
                    // Nobody else can serve the waiters: pass the server's error on, as PgBouncer does.
                    if g.total == 0 {
                        for (_, w) in g.waiters.take_all() {
                            w.deliver(Err(Some((code.clone(), msg.clone()))));
                        }
                    }
                }
            }
        };
        match self.shards.get() {
            Some(shards) if shards.len() > 1 => {
                let home = self.inner.lock().unwrap().waiters.oldest_shard();
                shards.spawn_on(home.unwrap_or_else(crate::shard::current), task);
            }
            _ => drop(tokio::spawn(task)),
        }
    }
}
