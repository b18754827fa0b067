//! Pools of server connections keyed by (database, user): checkout with a FIFO wait queue, LIFO reuse, close reasons.

pub mod stats;

use crate::auth::ScramClientKeys;
use crate::params::{ParamSet, Tracked};
use crate::server::login::{self, WelcomeParams};
use crate::server::{ServerConn, ServerError, ServerTarget};
use stats::PoolStats;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::oneshot;

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

type Delivery = Result<ServerConn, (String, String)>;

#[derive(Debug, Default)]
struct Inner {
    idle: Vec<ServerConn>,
    waiters: VecDeque<oneshot::Sender<Delivery>>,
    /// Connected plus connecting servers.
    total: usize,
    /// Servers lent to clients.
    active: usize,
    connecting: usize,
}

#[derive(Debug)]
pub struct Pool {
    pub db: String,
    pub user: String,
    pub target: ServerTarget,
    pub settings: PoolSettings,
    pub tracked: Arc<Tracked>,
    pub stats: PoolStats,
    inner: Mutex<Inner>,
    welcome: Mutex<Option<Arc<Welcome>>>,
    scram_keys: Mutex<Option<ScramClientKeys>>,
    log_disconnections: bool,
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
    pub fn new(
        db: String,
        user: String,
        target: ServerTarget,
        settings: PoolSettings,
        tracked: Arc<Tracked>,
        log_disconnections: bool,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            db,
            user,
            target,
            settings,
            tracked,
            stats: PoolStats::default(),
            inner: Mutex::new(Inner::default()),
            welcome: Mutex::new(None),
            scram_keys: Mutex::new(None),
            log_disconnections,
        })
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

    /// Take a server for a client: an idle one (LIFO), else wait in FIFO order for one that is
    /// released or newly connected, for at most query_wait_timeout.
    pub async fn checkout(self: &Arc<Self>) -> Result<ServerConn, CheckoutError> {
        let rx = {
            let mut g = self.inner.lock().unwrap();
            while let Some(s) = if self.settings.round_robin && !g.idle.is_empty() {
                Some(g.idle.remove(0))
            } else {
                g.idle.pop()
            } {
                if s.is_healthy() {
                    g.active += 1;
                    return Ok(s);
                }
                g.total -= 1;
                log_close(self, &s, "server conn crashed?", self.log_disconnections);
            }
            let (tx, rx) = oneshot::channel();
            g.waiters.push_back(tx);
            if g.total < self.settings.size {
                g.total += 1;
                g.connecting += 1;
                drop(g);
                self.spawn_connect();
            }
            rx
        };
        let res = if self.settings.query_wait_timeout.is_zero() {
            rx.await.map_err(|_| CheckoutError::Closed)
        } else {
            match tokio::time::timeout(self.settings.query_wait_timeout, rx).await {
                Ok(r) => r.map_err(|_| CheckoutError::Closed),
                Err(_) => Err(CheckoutError::WaitTimeout),
            }
        };
        match res? {
            Ok(s) => Ok(s),
            Err((code, msg)) => Err(CheckoutError::Server(code, msg)),
        }
    }

    /// Open one more server connection in the background; it is handed to the first waiter.
    /// The caller has already counted it in `total` and `connecting`.
    fn spawn_connect(self: &Arc<Self>) {
        let pool = self.clone();
        tokio::spawn(async move {
            let keys = pool.scram_keys.lock().unwrap().clone();
            match login::connect(&pool.target, &pool.tracked, keys).await {
                Ok((conn, welcome)) => {
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
                    pool.inner.lock().unwrap().connecting -= 1;
                    pool.give_back(conn);
                }
                Err(e) => {
                    tracing::warn!("{}/{}: server login failed: {}", pool.db, pool.user, e);
                    let (code, msg) = e.client_error();
                    let mut g = pool.inner.lock().unwrap();
                    g.total -= 1;
                    g.connecting -= 1;
                    // Nobody else can serve the waiters: pass the server's error on, as PgBouncer does.
                    if g.total == 0 {
                        for w in g.waiters.drain(..) {
                            let _ = w.send(Err((code.clone(), msg.clone())));
                        }
                    }
                }
            }
        });
    }

    /// Return a server after a transaction (or session). `reusable` is false when its state is unknown.
    pub fn checkin(self: &Arc<Self>, server: ServerConn, reusable: bool) {
        self.inner.lock().unwrap().active -= 1;
        if !reusable {
            self.close(server, "client disconnect while server was not ready");
            return;
        }
        if !self.settings.server_lifetime.is_zero() && server.age() >= self.settings.server_lifetime
        {
            self.close(server, "server lifetime over");
            return;
        }
        self.give_back(server);
    }

    /// Close a server that is not lent to anyone, and replace it if clients are waiting.
    pub fn close(self: &Arc<Self>, server: ServerConn, reason: &str) {
        log_close(self, &server, reason, self.log_disconnections);
        let _ = server.stream.try_write(&[b'X', 0, 0, 0, 4]);
        drop(server);
        let mut g = self.inner.lock().unwrap();
        g.total -= 1;
        g.waiters.retain(|w| !w.is_closed());
        if !g.waiters.is_empty() && g.total < self.settings.size {
            g.total += 1;
            g.connecting += 1;
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
        server.last_used = Instant::now();
        let mut g = self.inner.lock().unwrap();
        while let Some(w) = g.waiters.pop_front() {
            g.active += 1;
            match w.send(Ok(server)) {
                Ok(()) => return,
                Err(Ok(s)) => {
                    g.active -= 1;
                    server = s;
                }
                Err(Err(_)) => unreachable!("only Ok is sent here"),
            }
        }
        g.idle.push(server);
    }

    /// Add an already logged-in server to the pool as idle (warm-up, benchmarks).
    pub fn adopt_idle(self: &Arc<Self>, server: ServerConn) {
        self.inner.lock().unwrap().total += 1;
        self.give_back(server);
    }

    /// Janitor pass: close idle servers past server_idle_timeout or server_lifetime, keeping min_size.
    pub fn maintain(self: &Arc<Self>) {
        let mut closing = Vec::new();
        {
            let mut g = self.inner.lock().unwrap();
            let now = Instant::now();
            let idle_to = self.settings.server_idle_timeout;
            let life = self.settings.server_lifetime;
            let mut i = 0;
            while i < g.idle.len() {
                let s = &g.idle[i];
                let reason = if !s.is_healthy() {
                    Some("server conn crashed?")
                } else if !life.is_zero() && s.age() >= life {
                    Some("server lifetime over")
                } else if !idle_to.is_zero()
                    && now.duration_since(s.last_used) >= idle_to
                    && g.total - closing.len() > self.settings.min_size
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
        }
        for (s, r) in closing {
            self.close(s, r);
        }
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

/// Errors opening a server are passed on to clients with the server's own SQLSTATE.
impl From<ServerError> for CheckoutError {
    fn from(e: ServerError) -> Self {
        let (c, m) = e.client_error();
        CheckoutError::Server(c, m)
    }
}
