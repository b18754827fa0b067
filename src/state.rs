//! Shared state of a running pooler (config, userlist, pools, cancel keys, counters), passed around as an `Arc`.

use crate::cancel::CancelRegistry;
use crate::config::hba::Hba;
use crate::config::{Config, DatabaseConfig, PoolMode, UserList};
use crate::params::Tracked;
use crate::pool::group::ConnGroup;
use crate::pool::{Mode, Pool, PoolSettings};
use crate::server::ServerTarget;
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, RwLock};
use tokio::sync::Notify;

pub struct Shared {
    config: RwLock<Arc<Config>>,
    userlist: RwLock<Arc<UserList>>,
    hba: RwLock<Arc<Hba>>,
    pub tracked: Arc<Tracked>,
    pub pools: DashMap<(String, String), Arc<Pool>>,
    /// max_db_connections counters, by database name.
    pub db_groups: DashMap<String, Arc<ConnGroup>>,
    /// max_user_connections counters, by user name.
    pub user_groups: DashMap<String, Arc<ConnGroup>>,
    /// Connected clients per database and per user (max_db/user_client_connections).
    pub db_clients: DashMap<String, Arc<AtomicUsize>>,
    pub user_clients: DashMap<String, Arc<AtomicUsize>>,
    pub cancel: CancelRegistry,
    /// Connected non-admin clients (for max_client_conn).
    pub clients: AtomicUsize,
    pub shutting_down: AtomicBool,
    pub shutdown: Notify,
    /// Cached ad-hoc SCRAM secrets derived from plaintext userlist passwords: user → (password, secret).
    pub adhoc_scram: DashMap<String, (String, crate::auth::ScramSecret)>,
    /// One derivation at a time per stripe of users: a burst of first logins runs PBKDF2 once,
    /// not once per client.
    pub adhoc_gate: [tokio::sync::Mutex<()>; 8],
    /// auth_query results, when `auth_query_cache_ttl` is set: (auth database, user) → outcome.
    pub auth_cache:
        crate::auth::cache::LookupCache<(String, String), crate::client::lookup::CachedLookup>,
    /// Clients with timeouts to watch, by client id (swept by the janitor).
    pub timers: DashMap<u64, Arc<crate::client::timers::ClientTimers>>,
    /// Random per-process seed for mock SCRAM secrets of unknown users.
    pub mock_seed: [u8; 16],
    /// PAUSE / SUSPEND / DISABLE state.
    pub pause: crate::pool::pause::PauseState,
    /// SHUTDOWN mode: 0 running, SHUTDOWN_WAIT_FOR_SERVERS, SHUTDOWN_WAIT_FOR_CLIENTS.
    pub shutdown_mode: std::sync::atomic::AtomicU8,
    /// stats_period snapshots behind the avg_* columns.
    pub periods: crate::stats::Periods,
    /// Requests from the admin console to the main loop (SHUTDOWN).
    pub control: tokio::sync::mpsc::Sender<Control>,
    control_rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Control>>>,
    /// Listening sockets are bound and accepting.
    pub listening: AtomicBool,
    /// Connected admin-console sessions.
    pub admin_clients: AtomicUsize,
    /// Pooler-wide prepared statements (max_prepared_statements).
    pub statements: crate::client::prepared::StatementRegistry,
    /// TLS towards clients and towards PostgreSQL.
    pub tls: Arc<crate::tls::TlsState>,
    /// Host name resolution (hickory, dns_max_ttl cache).
    pub dns: Arc<crate::dns::Dns>,
    /// tcp_keepalive and the other TCP socket options, for new client and server sockets.
    pub tcp: Arc<crate::sockopt::TcpTuning>,
    /// `[peers]` and their cancel-forwarding counters.
    pub peers: crate::peers::Peers,
    /// The runtimes clients run on (one per core), and how many clients each has.
    pub shards: Arc<crate::shard::Shards>,
}

pub const SHUTDOWN_WAIT_FOR_SERVERS: u8 = 1;
pub const SHUTDOWN_WAIT_FOR_CLIENTS: u8 = 2;

/// What the admin console asks the main loop to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    ShutdownNow,
    ShutdownWaitForServers,
    ShutdownWaitForClients,
}

impl Shared {
    pub fn new(
        config: Config,
        userlist: UserList,
        hba: Hba,
        tls: crate::tls::TlsState,
        shards: crate::shard::Shards,
    ) -> Arc<Shared> {
        let tracked = Arc::new(Tracked::new(&config.general.track_extra_parameters));
        let (control, control_rx) = tokio::sync::mpsc::channel(8);
        Arc::new(Shared {
            pause: Default::default(),
            shards: Arc::new(shards),
            shutdown_mode: Default::default(),
            periods: Default::default(),
            control,
            control_rx: std::sync::Mutex::new(Some(control_rx)),
            listening: AtomicBool::new(false),
            admin_clients: AtomicUsize::new(0),
            statements: crate::client::prepared::StatementRegistry::new(100_000, 64 << 20),
            tls: Arc::new(tls),
            dns: Arc::new(crate::dns::Dns::new(&config.general)),
            tcp: Arc::new(crate::sockopt::TcpTuning::new(&config.general)),
            peers: crate::peers::Peers::new(&config),
            config: RwLock::new(Arc::new(config)),
            userlist: RwLock::new(Arc::new(userlist)),
            hba: RwLock::new(Arc::new(hba)),
            tracked,
            pools: DashMap::new(),
            db_groups: DashMap::new(),
            user_groups: DashMap::new(),
            db_clients: DashMap::new(),
            user_clients: DashMap::new(),
            cancel: CancelRegistry::default(),
            clients: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            shutdown: Notify::new(),
            adhoc_scram: DashMap::new(),
            adhoc_gate: Default::default(),
            auth_cache: crate::auth::cache::LookupCache::new(10_000),
            timers: DashMap::new(),
            mock_seed: {
                let mut s = [0u8; 16];
                getrandom::fill(&mut s).expect("OS random source");
                s
            },
        })
    }

    /// The receiving end of `control`, taken once by the main loop.
    pub fn take_control(&self) -> Option<tokio::sync::mpsc::Receiver<Control>> {
        self.control_rx.lock().unwrap().take()
    }

    pub fn set_config(&self, c: Config) {
        *self.config.write().unwrap() = Arc::new(c);
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap().clone()
    }

    pub fn userlist(&self) -> Arc<UserList> {
        self.userlist.read().unwrap().clone()
    }

    pub fn hba(&self) -> Arc<Hba> {
        self.hba.read().unwrap().clone()
    }

    pub fn set_hba(&self, h: Hba) {
        *self.hba.write().unwrap() = Arc::new(h);
    }

    pub fn set_userlist(&self, u: UserList) {
        *self.userlist.write().unwrap() = Arc::new(u);
        self.adhoc_scram.clear();
    }

    /// The pool for a client of `db` logged in as `user` (the forced user, if the entry has one).
    pub fn pool_for(&self, db_name: &str, db: &DatabaseConfig, user: &str) -> Arc<Pool> {
        let pool_user = db.user.clone().unwrap_or_else(|| user.to_string());
        let key = (db_name.to_string(), pool_user.clone());
        if let Some(p) = self.pools.get(&key) {
            p.touch();
            return p.clone();
        }
        let cfg = self.config();
        let g = &cfg.general;
        let ucfg = cfg.users.get(&pool_user);
        let (target, settings) = self.resolve(&cfg, db_name, db, &pool_user);
        // one shared counter per database and per user, for max_db_connections / max_user_connections
        let db_max = db.max_db_connections.unwrap_or(g.max_db_connections) as usize;
        let db_group = self
            .db_groups
            .entry(db_name.to_string())
            .or_insert_with(|| ConnGroup::new(db_max))
            .clone();
        let user_max = ucfg
            .and_then(|u| u.max_user_connections)
            .unwrap_or(g.max_user_connections) as usize;
        let user_group = self
            .user_groups
            .entry(pool_user.clone())
            .or_insert_with(|| ConnGroup::new(user_max))
            .clone();
        // the pool map's entry lock makes creation race-free: a loser's pool is never registered
        match self.pools.entry(key) {
            dashmap::Entry::Occupied(e) => e.get().clone(),
            dashmap::Entry::Vacant(v) => {
                let pool = Pool::new(
                    db_name.to_string(),
                    pool_user,
                    target,
                    settings,
                    self.tracked.clone(),
                    g.log_disconnections,
                    db_group,
                    user_group,
                );
                pool.set_shards(self.shards.clone());
                v.insert(pool.clone());
                pool
            }
        }
    }

    /// Where a pool connects and its limits, from [pgbouncer], [databases] and [users].
    pub fn resolve(
        &self,
        cfg: &Config,
        db_name: &str,
        db: &DatabaseConfig,
        pool_user: &str,
    ) -> (ServerTarget, PoolSettings) {
        let g = &cfg.general;
        let ucfg = cfg.users.get(pool_user);
        let password = db
            .password
            .clone()
            .or_else(|| self.userlist().get(pool_user).map(str::to_string));
        let mut startup = Vec::new();
        for (k, v) in [
            ("client_encoding", &db.client_encoding),
            ("datestyle", &db.datestyle),
            ("timezone", &db.timezone),
            ("application_name", &db.application_name),
        ] {
            if let Some(v) = v {
                startup.push((k.to_string(), v.clone()));
            }
        }
        let target = ServerTarget {
            hosts: db.hosts.clone(),
            port: db.port,
            default_unix_dir: g.server_unix_dir().to_string(),
            dbname: db.dbname.clone().unwrap_or_else(|| db_name.to_string()),
            user: pool_user.to_string(),
            password: std::sync::RwLock::new(password),
            startup,
            connect_query: db.connect_query.clone(),
            connect_timeout: g.server_connect_timeout,
            next_host: AtomicUsize::new(0),
            tls: self.tls.clone(),
            dns: self.dns.clone(),
            tcp: self.tcp.clone(),
            scram_keys: Default::default(),
        };
        let mode = ucfg
            .and_then(|u| u.pool_mode)
            .or(db.pool_mode)
            .unwrap_or(g.pool_mode);
        let size = ucfg
            .and_then(|u| u.pool_size)
            .or(db.pool_size)
            .unwrap_or(g.default_pool_size);
        let settings = PoolSettings {
            size: if size == 0 { usize::MAX } else { size as usize },
            min_size: db.min_pool_size.unwrap_or(g.min_pool_size) as usize,
            mode: match mode {
                PoolMode::Session => Mode::Session,
                PoolMode::Transaction => Mode::Transaction,
                PoolMode::Statement => Mode::Statement,
            },
            server_lifetime: db.server_lifetime.unwrap_or(g.server_lifetime),
            server_idle_timeout: g.server_idle_timeout,
            query_wait_timeout: ucfg
                .and_then(|u| u.query_wait_timeout)
                .or(db.query_wait_timeout)
                .unwrap_or(g.query_wait_timeout),
            round_robin: g.server_round_robin,
            reset_query: if g.server_reset_query.trim().is_empty() {
                None
            } else {
                Some(g.server_reset_query.clone())
            },
            reserve_size: ucfg
                .and_then(|u| u.reserve_pool_size)
                .or(db.reserve_pool_size)
                .unwrap_or(g.reserve_pool_size) as usize,
            reserve_timeout: g.reserve_pool_timeout,
            login_retry: g.server_login_retry,
            connect_concurrency: match g.server_connect_concurrency {
                0 => usize::MAX,
                n => n as usize,
            },
        };
        (target, settings)
    }
}
