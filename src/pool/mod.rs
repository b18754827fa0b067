//! Pools of server connections keyed by (database, user): checkout with a FIFO wait queue, LIFO reuse, close reasons.

mod checkout;
mod connect;
#[doc(hidden)]
pub mod fixture;
pub mod group;
mod handoff;
mod janitor;
pub mod pause;
mod queue;
mod view;

use view::server_meta;
pub use view::{PoolCounts, ServerMeta};
pub mod stats;

use crate::auth::ScramClientKeys;
use crate::params::{ParamSet, Tracked};
use crate::server::login::WelcomeParams;
use crate::server::{ServerConn, ServerError, ServerTarget};
pub use checkout::Begun;
use group::ConnGroup;
pub use handoff::{HandOff, Offer, OnLink, Wait};
use stats::PoolStats;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use thiserror::Error;

/// How clients share this pool's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Session,
    Transaction,
    Statement,
}

/// Limits and lifetimes resolved for one pool from [pgbouncer], [databases] and [users].
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub size: usize,
    pub min_size: usize,
    pub mode: Mode,
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub query_wait_timeout: Duration,
    pub round_robin: bool,
    pub reset_query: Option<String>,
    pub reserve_size: usize,
    pub reserve_timeout: Duration,
    /// server_login_retry: after a failed login, new clients fail fast for this long.
    pub login_retry: Duration,
    /// server_connect_concurrency: connects in flight at once (PgBouncer: 1); usize::MAX = no limit.
    pub connect_concurrency: usize,
}

/// The ParameterStatus set a new client is greeted with, cached from the pool's first server login.
#[derive(Debug)]
pub struct Welcome {
    pub list: WelcomeParams,
    pub params: ParamSet,
}

#[derive(Debug, Error)]
pub enum CheckoutError {
    #[error("query_wait_timeout")]
    WaitTimeout,
    #[error("{1}")]
    Server(String, String),
    #[error("pooler is shutting down")]
    Closed,
}

#[derive(Debug, Default)]
struct Inner {
    idle: Vec<ServerConn>,
    /// Waiting clients in arrival order (per shard), with when they started waiting. A client
    /// that stops waiting removes its entry (`withdraw`), so every entry is live.
    waiters: queue::Waiters,
    /// Connected plus connecting servers.
    total: usize,
    /// Servers lent to clients.
    active: usize,
    connecting: usize,
    /// Servers opened before the last RECONNECT (closed as soon as they are released).
    stale: usize,
    /// The settings checkout and checkin need, copied here so they are read under the lock
    /// already held (no RwLock and Arc traffic per transaction).
    hot: Hot,
}

impl Inner {
    /// A waiting client has no connect of its own in flight and the pool may start another
    /// (server_connect_concurrency; PgBouncer starts one at a time per pool).
    fn wants_connect(&self) -> bool {
        self.connecting < self.waiters.len() && self.connecting < self.hot.connect_concurrency
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Hot {
    size: usize,
    round_robin: bool,
    lifetime: Duration,
    login_retry: Duration,
    connect_concurrency: usize,
}

impl Hot {
    fn of(s: &PoolSettings) -> Hot {
        Hot {
            size: s.size,
            round_robin: s.round_robin,
            lifetime: s.server_lifetime,
            login_retry: s.login_retry,
            connect_concurrency: s.connect_concurrency,
        }
    }
}

#[derive(Debug)]
pub struct Pool {
    pub db: String,
    pub user: String,
    target: RwLock<Arc<ServerTarget>>,
    settings: RwLock<Arc<PoolSettings>>,
    /// Bumped by RECONNECT and by a reload that changes where the pool connects.
    epoch: AtomicU64,
    /// Every open server connection, for SHOW SERVERS (changed only on connect and close).
    servers: Mutex<HashMap<u64, ServerMeta>>,
    pub tracked: Arc<Tracked>,
    pub stats: PoolStats,
    /// Clients logged in to this pool (min_pool_size is kept only while there are some).
    pub clients: Arc<AtomicUsize>,
    inner: Mutex<Inner>,
    welcome: Mutex<Option<Arc<Welcome>>>,
    scram_keys: Mutex<Option<ScramClientKeys>>,
    log_disconnections: bool,
    db_group: Arc<ConnGroup>,
    user_group: Arc<ConnGroup>,
    /// When a server was last closed for server_lifetime (ms, timers::now_ms), to spread them out.
    last_lifetime_close: std::sync::atomic::AtomicU64,
    /// The last failed server login (when, SQLSTATE, message), for server_login_retry.
    last_login_error: Mutex<Option<(Instant, String, String)>>,
    /// The runtimes a new server connection can be opened on (unset: the current one).
    shards: std::sync::OnceLock<Arc<crate::shard::Shards>>,
    /// autodb_idle_timeout: when the janitor first found the pool without clients and servers
    /// (clock::now_ms; 0 = in use since).
    vacant_since: AtomicU64,
}

/// Why a server connection is closed (logged as `closing because: <reason> (age=Ns)`).
pub fn log_close(pool: &Pool, server: &ServerConn, reason: &str, enabled: bool) {
    if enabled {
        tracing::info!(
            "S-{:#x}: {}/{}@{} closing because: {} (age={}s)",
            server.id,
            pool.db,
            pool.user,
            server.addr,
            reason,
            server.age().as_secs()
        );
    }
}

impl Pool {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: String,
        user: String,
        target: ServerTarget,
        settings: PoolSettings,
        tracked: Arc<Tracked>,
        log_disconnections: bool,
        db_group: Arc<ConnGroup>,
        user_group: Arc<ConnGroup>,
    ) -> Arc<Pool> {
        let hot = Hot::of(&settings);
        let p = Arc::new(Pool {
            db,
            user,
            target: RwLock::new(Arc::new(target)),
            settings: RwLock::new(Arc::new(settings)),
            epoch: AtomicU64::new(0),
            servers: Mutex::new(HashMap::new()),
            tracked,
            stats: PoolStats::default(),
            clients: Arc::new(AtomicUsize::new(0)),
            inner: Mutex::new(Inner {
                hot,
                ..Default::default()
            }),
            welcome: Mutex::new(None),
            scram_keys: Mutex::new(None),
            log_disconnections,
            db_group,
            user_group,
            last_login_error: Mutex::new(None),
            last_lifetime_close: std::sync::atomic::AtomicU64::new(0),
            shards: std::sync::OnceLock::new(),
            vacant_since: AtomicU64::new(0),
        });
        p.db_group.add_member(&p);
        p.user_group.add_member(&p);
        p
    }

    /// Open new server connections on these runtimes (see `spawn_connect`).
    pub fn set_shards(&self, shards: Arc<crate::shard::Shards>) {
        let _ = self.shards.set(shards);
    }

    fn set_hot(&self, s: &PoolSettings) {
        self.inner.lock().unwrap().hot = Hot::of(s);
    }

    fn is_stale(&self, s: &ServerConn) -> bool {
        s.epoch < self.epoch.load(Relaxed)
    }

    /// Bookkeeping for a server that stops existing (the caller has freed its slot).
    fn forget(&self, g: &mut Inner, s: &ServerConn) {
        if self.is_stale(s) {
            g.stale = g.stale.saturating_sub(1);
        }
        self.servers.lock().unwrap().remove(&s.id);
    }

    /// No client logged in and no server connection open or opening.
    pub fn is_vacant(&self) -> bool {
        self.clients.load(Relaxed) == 0 && self.inner.lock().unwrap().total == 0
    }

    /// A login looked the pool up: it is in use (autodb_idle_timeout starts again).
    pub fn touch(&self) {
        if self.vacant_since.load(Relaxed) != 0 {
            self.vacant_since.store(0, Relaxed);
        }
    }

    /// Whether the pool has been vacant, at each look and with no login between, for at least
    /// `timeout_ms` as of `now_ms`; the first vacant look starts the clock.
    pub fn vacant_for(&self, now_ms: u64, timeout_ms: u64) -> bool {
        if !self.is_vacant() {
            self.vacant_since.store(0, Relaxed);
            return false;
        }
        match self.vacant_since.load(Relaxed) {
            0 => {
                self.vacant_since.store(now_ms.max(1), Relaxed);
                false
            }
            since => now_ms.saturating_sub(since) >= timeout_ms,
        }
    }

    pub fn clients_counter(&self) -> Arc<AtomicUsize> {
        self.clients.clone()
    }

    pub fn welcome(&self) -> Option<Arc<Welcome>> {
        self.welcome.lock().unwrap().clone()
    }

    pub fn set_scram_keys(&self, keys: ScramClientKeys) {
        *self.scram_keys.lock().unwrap() = Some(keys);
    }

    /// (active, idle, total, waiting) counts, for tests and SHOW POOLS.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let g = self.inner.lock().unwrap();
        (g.active, g.idle.len(), g.total, g.waiters.len())
    }

    /// Count a new connection against the pool size (plus `allowance` from the reserve) and the
    /// database/user caps. The caller then spawns the connect.
    fn try_open(&self, g: &mut Inner, allowance: usize) -> bool {
        if g.total >= g.hot.size.saturating_add(allowance) {
            return false;
        }
        if !self.db_group.try_take() {
            return false;
        }
        if !self.user_group.try_take() {
            self.db_group.give();
            return false;
        }
        g.total += 1;
        g.connecting += 1;
        true
    }

    /// A connection stopped counting (closed, or its connect failed).
    fn free_slot(&self, g: &mut Inner) {
        g.total -= 1;
        self.db_group.give();
        self.user_group.give();
    }

    /// PgBouncer's eviction: when max_db_connections/max_user_connections is reached, close the
    /// longest-idle server of another pool of the same database or user.
    fn evict_for_room(self: &Arc<Self>) -> bool {
        for group in [&self.db_group, &self.user_group] {
            if !group.is_full() {
                continue;
            }
            for m in group.members() {
                if Arc::ptr_eq(&m, self) {
                    continue;
                }
                let victim = {
                    let mut g = m.inner.lock().unwrap();
                    let oldest = g
                        .idle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| s.last_used)
                        .map(|(i, _)| i);
                    oldest.map(|i| {
                        let s = g.idle.remove(i);
                        m.free_slot(&mut g);
                        m.forget(&mut g, &s);
                        s
                    })
                };
                if let Some(mut s) = victim {
                    log_close(&m, &s, "evicted", m.log_disconnections);
                    let _ = s.stream.try_write(&[b'X', 0, 0, 0, 4]);
                    return true;
                }
            }
        }
        false
    }

    /// Return a server after a transaction (or session). `reusable` is false when its state is unknown.
    pub fn checkin(self: &Arc<Self>, server: ServerConn, reusable: bool) {
        self.checkin_at(server, reusable, crate::clock::now_us())
    }

    /// `checkin` with the clock already read (µs of `crate::clock`); one lock when the server
    /// goes back.
    pub fn checkin_at(self: &Arc<Self>, mut server: ServerConn, reusable: bool, now: u64) {
        let mut g = self.inner.lock().unwrap();
        g.active -= 1;
        let reason = if !reusable {
            Some("client disconnect while server was not ready")
        } else if self.is_stale(&server) {
            Some("database configuration changed")
        } else if self.life_over(&server, g.hot, now) {
            Some("server lifetime over")
        } else {
            None
        };
        if let Some(r) = reason {
            drop(g);
            self.close(server, r);
            return;
        }
        server.last_used = now;
        // as hand_over, but the waiting client's request may go on ahead (outside the lock)
        let ahead = match g.waiters.pop_for(server.shard) {
            Some((_, w)) => {
                g.active += 1;
                w.deliver_deferred(server).then_some(w)
            }
            None => {
                g.idle.push(server);
                None
            }
        };
        drop(g);
        if let Some(w) = ahead {
            w.presend(now);
        }
    }

    /// PgBouncer's life_over: past server_lifetime (0 = use once), and lifetime closes are spread
    /// out, at most one per server_lifetime / pool_size, so a pool is not reconnected all at once.
    fn life_over(&self, s: &ServerConn, hot: Hot, now_us: u64) -> bool {
        let life = hot.lifetime;
        if now_us.saturating_sub(s.created) < crate::clock::us(life) {
            return false;
        }
        let gap = if hot.size > 0 && hot.size != usize::MAX {
            life / hot.size as u32
        } else {
            Duration::ZERO
        };
        let now = now_us / 1000;
        let last = self
            .last_lifetime_close
            .load(std::sync::atomic::Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < gap.as_millis() as u64 {
            return false;
        }
        self.last_lifetime_close
            .store(now, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// Close a server that is not lent to anyone, and let waiting clients (here or in pools
    /// sharing a database/user cap) use the freed slot.
    pub fn close(self: &Arc<Self>, mut server: ServerConn, reason: &str) {
        log_close(self, &server, reason, self.log_disconnections);
        let _ = server.stream.try_write(&[b'X', 0, 0, 0, 4]);
        {
            let mut g = self.inner.lock().unwrap();
            self.free_slot(&mut g);
            self.forget(&mut g, &server);
        }
        drop(server);
        self.kick();
        for group in [&self.db_group, &self.user_group] {
            if group.is_capped() {
                for m in group.members() {
                    if !Arc::ptr_eq(&m, self) {
                        m.kick();
                    }
                }
            }
        }
    }

    /// Open a connection for waiting clients if there is room.
    pub fn kick(self: &Arc<Self>) {
        let mut g = self.inner.lock().unwrap();
        if g.wants_connect() && self.try_open(&mut g, 0) {
            drop(g);
            self.spawn_connect();
        }
    }

    /// Close a server that is lent to a client (server crashed, client vanished mid-transaction).
    pub fn close_active(self: &Arc<Self>, server: ServerConn, reason: &str) {
        self.inner.lock().unwrap().active -= 1;
        self.close(server, reason);
    }

    fn give_back(self: &Arc<Self>, mut server: ServerConn) {
        server.last_used = crate::clock::now_us();
        let mut g = self.inner.lock().unwrap();
        self.hand_over(&mut g, server);
    }

    /// The first waiter gets the server (of the server's shard, unless another shard's has
    /// waited clearly longer: `queue::Waiters::pop_for`); else it goes idle.
    fn hand_over(&self, g: &mut Inner, server: ServerConn) {
        match g.waiters.pop_for(server.shard) {
            Some((_, w)) => {
                g.active += 1;
                w.deliver(Ok(server));
            }
            None => g.idle.push(server),
        }
    }

    /// A queued checkout was given up (its future dropped): leave the queue, or pass on a
    /// server that was delivered but never taken. Under the pool lock, so no hand-over can
    /// slip between the check and the removal.
    fn withdraw(self: &Arc<Self>, slot: &Arc<HandOff>) {
        let mut g = self.inner.lock().unwrap();
        let (queued, delivered, offer) = slot.withdraw();
        if queued {
            g.waiters.remove(slot);
        }
        if let Some(Ok(server)) = delivered {
            if offer.is_some_and(|o| o.sent > 0) {
                // the server has (part of) a request whose client is gone
                drop(g);
                self.close_active(server, "client disconnect while server was not ready");
                return;
            }
            g.active -= 1;
            self.hand_over(&mut g, server);
        }
    }

    /// Add an already logged-in server to the pool as idle (warm-up, benchmarks).
    pub fn adopt_idle(self: &Arc<Self>, server: ServerConn) {
        self.servers
            .lock()
            .unwrap()
            .insert(server.id, server_meta(&server));
        {
            let mut g = self.inner.lock().unwrap();
            g.total += 1;
            self.db_group.try_take();
            self.user_group.try_take();
        }
        self.give_back(server);
    }

    /// Ensure a welcome (ParameterStatus set) exists by logging in one server if needed.
    pub async fn ensure_welcome(self: &Arc<Self>) -> Result<Arc<Welcome>, CheckoutError> {
        if let Some(w) = self.welcome() {
            return Ok(w);
        }
        let s = self.checkout().await?;
        self.checkin(s, true);
        self.welcome().ok_or(CheckoutError::Closed)
    }

    /// Close every idle server (shutdown, RECONNECT).
    pub fn close_idle(self: &Arc<Self>, reason: &str) {
        let idle: Vec<ServerConn> = std::mem::take(&mut self.inner.lock().unwrap().idle);
        for s in idle {
            self.close(s, reason);
        }
    }
}

/// An idle server for a client on shard `me`: the most recently used one living on that shard,
/// else the most recently used of any.
fn take_idle(idle: &mut Vec<ServerConn>, me: u16) -> Option<ServerConn> {
    match idle.iter().rposition(|s| s.shard == me) {
        Some(i) => Some(idle.remove(i)),
        None => idle.pop(),
    }
}

/// A server taken by a client on shard `me`, moved to that shard's I/O driver if it lived on
/// another (kept where it was if that fails: it still works, with wake-ups across threads).
pub(super) fn localize(mut s: ServerConn, me: u16) -> ServerConn {
    if s.shard != me {
        match s.stream.rehome() {
            Ok(()) => s.shard = me,
            Err(e) => tracing::debug!("S-{:#x}: stays on its shard: {e}", s.id),
        }
    }
    s
}

/// Errors opening a server are passed on to clients with the server's own SQLSTATE.
impl From<ServerError> for CheckoutError {
    fn from(e: ServerError) -> Self {
        let (c, m) = e.client_error();
        CheckoutError::Server(c, m)
    }
}
