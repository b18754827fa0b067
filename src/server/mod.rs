//! Server connections: where they go (`ServerTarget`), what they carry (`ServerConn`), and why they fail.

pub mod auth_query;
pub mod login;
pub mod prepared;
pub mod stream;

use crate::params::ParamSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use stream::Stream;
use thiserror::Error;

/// Where and as whom a pool connects.
pub struct ServerTarget {
    pub hosts: Vec<String>,
    pub port: u16,
    /// Used when `hosts` is empty (PgBouncer connects over the unix socket then).
    pub default_unix_dir: String,
    pub dbname: String,
    pub user: String,
    /// Raw secret (plaintext, md5..., SCRAM-SHA-256$...) used to answer the server's auth request.
    /// Replaced when auth_query returns a new one (password rotation).
    pub password: std::sync::RwLock<Option<String>>,
    /// Extra StartupMessage parameters from the [databases] entry.
    pub startup: Vec<(String, String)>,
    pub connect_query: Option<String>,
    pub connect_timeout: Duration,
    pub next_host: AtomicUsize,
    /// The TLS setup in force (its server side is read at each connect, so rotated
    /// certificates apply to new connections; never used on unix sockets).
    pub tls: std::sync::Arc<crate::tls::TlsState>,
    /// SCRAM keys derived from the plaintext password for the server's salt: (password, salt,
    /// iterations, keys). PBKDF2 then runs once per pool, not once per server login.
    pub scram_keys: std::sync::Mutex<Option<DerivedKeys>>,
    /// Resolves host names in `hosts`.
    pub dns: std::sync::Arc<crate::dns::Dns>,
    /// TCP socket options (tcp_keepalive, ...) for new server connections.
    pub tcp: std::sync::Arc<crate::sockopt::TcpTuning>,
}

/// SCRAM keys derived from a plaintext password: (password, salt, iterations, keys).
pub type DerivedKeys = (String, Vec<u8>, u32, crate::auth::ScramClientKeys);

/// The address a server connection went to, for cancel requests and logs.
#[derive(Debug, Clone)]
pub enum ServerAddr {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

/// Debug output never shows the secret.
impl std::fmt::Debug for ServerTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTarget")
            .field("hosts", &self.hosts)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish_non_exhaustive()
    }
}

impl ServerTarget {
    pub fn set_password(&self, secret: &str) {
        let mut g = self.password.write().unwrap();
        if g.as_deref() != Some(secret) {
            *g = Some(secret.to_string());
        }
    }
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddr::Tcp(a) => write!(f, "{a}"),
            ServerAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);

/// One logged-in connection to PostgreSQL, boxed: it moves between the pool, the wait queue and
/// relays once per transaction, so a move is one pointer.
#[derive(Debug)]
pub struct ServerConn(Box<ServerState>);

impl std::ops::Deref for ServerConn {
    type Target = ServerState;
    #[inline]
    fn deref(&self) -> &ServerState {
        &self.0
    }
}

impl std::ops::DerefMut for ServerConn {
    #[inline]
    fn deref_mut(&mut self) -> &mut ServerState {
        &mut self.0
    }
}

impl From<ServerState> for ServerConn {
    fn from(s: ServerState) -> Self {
        ServerConn(Box::new(s))
    }
}

/// What a server connection carries.
#[derive(Debug)]
pub struct ServerState {
    pub id: u64,
    pub stream: Stream,
    pub addr: ServerAddr,
    pub local: String,
    /// The server's own BackendKeyData.
    pub key: (u32, u32),
    /// Current values of the tracked parameters on this server.
    pub params: ParamSet,
    /// When it was opened and last returned to the pool (µs of `crate::clock`).
    pub created: u64,
    pub last_used: u64,
    /// The pool's reconnect epoch when this connection was opened (RECONNECT, changed host).
    pub epoch: u64,
    /// Named statements prepared on this server by pgmux (max_prepared_statements).
    pub prepared: prepared::PreparedSet,
    /// Read buffer lent to the relay of the client holding this server: it stays with the
    /// connection, so a transaction allocates no read buffer.
    pub rbuf: bytes::BytesMut,
    /// The shard (runtime) whose I/O driver the socket is registered with.
    pub shard: u16,
}

impl ServerState {
    pub fn new_id() -> u64 {
        NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed)
    }

    pub fn age(&self) -> Duration {
        Duration::from_micros(crate::clock::now_us().saturating_sub(self.created))
    }

    /// True when an idle connection is still usable: no EOF and no unexpected bytes
    /// (a terminated backend sends a FATAL ErrorResponse before closing).
    pub fn is_healthy(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The TCP or unix-socket connect itself failed (refused, unreachable).
    #[error("connect failed: {0}")]
    ConnectFailed(std::io::Error),
    #[error("connect timeout")]
    Timeout,
    /// The server refused the login: passed to clients with the server's SQLSTATE and text.
    #[error("{message}")]
    Login { sqlstate: String, message: String },
    #[error("server login failed: {0}")]
    Auth(String),
    #[error("{0}")]
    Protocol(#[from] crate::protocol::ProtocolError),
    #[error("server conn crashed?")]
    Crashed,
    #[error("server TLS: {0}")]
    Tls(String),
}

impl ServerError {
    /// SQLSTATE and message a waiting client is sent (and the server_login_retry cached
    /// error): PgBouncer's reasons, never an OS error text.
    pub fn client_error(&self) -> (String, String) {
        use crate::protocol::ProtocolError;
        let m = match self {
            ServerError::Login { sqlstate, message } => {
                return (sqlstate.clone(), message.clone());
            }
            ServerError::ConnectFailed(_) => "connect failed".to_string(),
            ServerError::Io(_)
            | ServerError::Crashed
            | ServerError::Protocol(ProtocolError::Eof | ProtocolError::Io(_)) => {
                "server conn crashed?".to_string()
            }
            other => other.to_string(),
        };
        ("08P01".to_string(), m)
    }
}
