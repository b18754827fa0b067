//! One task per client connection: startup, login, welcome, then the transaction relay.

pub mod auth;
pub mod lookup;
pub mod peer;
pub mod prepared;
pub mod relay;
pub mod startup;
pub mod timers;
pub mod tls;

use crate::protocol::startup::{StartupPacket, read_startup};
use crate::protocol::{ProtocolError, SQLSTATE_PROTOCOL_VIOLATION, backend};
use crate::server::stream::Stream;
use crate::state::Shared;
use bytes::BytesMut;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncWriteExt;

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// A client socket with its read buffer and identity for logs.
pub struct ClientConn {
    pub stream: Stream,
    pub rbuf: BytesMut,
    pub id: u64,
    /// `ip:port`, or `unix(pid)`.
    pub peer: String,
    /// `db/user` once known, for log lines.
    pub who: String,
    /// Connection kind and address for hba rules.
    pub hba_peer: crate::config::hba::Peer,
    /// The connecting process's uid on the unix socket (SO_PEERCRED), for peer auth.
    pub peer_uid: Option<u32>,
    pub connected: std::time::SystemTime,
}

impl ClientConn {
    pub async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(b).await
    }

    /// PgBouncer's log prefix: `C-0x..: db/user@addr`.
    pub fn prefix(&self) -> String {
        format!("C-{:#x}: {}@{}", self.id, self.who, self.peer)
    }
}

/// Why a client session ended.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Sent to the client as FATAL with this SQLSTATE, then the connection is closed.
    #[error("{message}")]
    Fatal { sqlstate: String, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
}

impl ClientError {
    pub fn fatal(msg: impl Into<String>) -> Self {
        ClientError::Fatal {
            sqlstate: SQLSTATE_PROTOCOL_VIOLATION.into(),
            message: msg.into(),
        }
    }
}

/// Serve one accepted connection until it ends. Never panics on client input. `_seat` is kept
/// (and dropped) with the connection: the accepting shard's count of its clients.
pub async fn handle(stream: Stream, peer: String, shared: Arc<Shared>, _seat: impl Send) {
    let (hba_peer, peer_uid) = peer::identify(&stream);
    let mut conn = ClientConn {
        stream,
        rbuf: BytesMut::new(),
        id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
        peer,
        who: "(nodb)/(nouser)".into(),
        hba_peer,
        peer_uid,
        connected: std::time::SystemTime::now(),
    };
    let cfg = shared.config();
    let started = std::time::Instant::now();
    let res = run(&mut conn, &shared).await;
    let err = match res {
        Ok(()) => return,
        Err(ClientError::Fatal { sqlstate, message }) => Some((sqlstate, message)),
        Err(ClientError::Protocol(ProtocolError::BadHeader)) => Some((
            SQLSTATE_PROTOCOL_VIOLATION.into(),
            "bad packet header".into(),
        )),
        Err(ClientError::Protocol(ProtocolError::BadPacket)) => {
            Some((SQLSTATE_PROTOCOL_VIOLATION.into(), "bad packet".into()))
        }
        Err(ClientError::Protocol(ProtocolError::UnknownPacket(_))) => {
            Some((SQLSTATE_PROTOCOL_VIOLATION.into(), "unknown pkt".into()))
        }
        Err(_) => None,
    };
    if let Some((code, msg)) = err {
        if cfg.general.log_pooler_errors {
            tracing::warn!("{} pooler error: {}", conn.prefix(), msg);
        }
        if cfg.general.log_disconnections {
            tracing::info!(
                "{} closing because: {} (age={}s)",
                conn.prefix(),
                msg,
                started.elapsed().as_secs()
            );
        }
        let mut out = BytesMut::new();
        backend::error_response(&mut out, "FATAL", &code, &msg);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), conn.write_all(&out)).await;
        Box::pin(linger(&mut conn)).await;
    }
}

/// Close gracefully after an error: send FIN, then drain what the client still sends for a moment,
/// so the kernel does not answer with a RST that would destroy the error message in flight.
async fn linger(conn: &mut ClientConn) {
    use tokio::io::AsyncReadExt;
    let _ = conn.stream.shutdown().await;
    let mut sink = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(250);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, conn.stream.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
}

async fn run(conn: &mut ClientConn, shared: &Arc<Shared>) -> Result<(), ClientError> {
    let cfg = shared.config();
    let g = &cfg.general;
    let tls = shared.tls.client();
    let login = async {
        if let Some(acc) = &tls.acceptor
            && tls::starts_with_tls(conn).await?
        {
            tls::upgrade(conn, acc, false).await?;
        }
        loop {
            let pkt = match read_startup(&mut conn.stream, &mut conn.rbuf).await {
                // a tagged PasswordMessage where the startup packet should be
                Err(ProtocolError::BadHeader) if conn.rbuf.first() == Some(&b'p') => {
                    return Err(ClientError::fatal(
                        "client password pkt before startup packet",
                    ));
                }
                r => r?,
            };
            match pkt {
                StartupPacket::Ssl => match &tls.acceptor {
                    Some(acc) if !conn.stream.is_unix() && !conn.stream.is_tls() => {
                        tls::upgrade(conn, acc, true).await?
                    }
                    _ => conn.write_all(b"N").await?,
                },
                StartupPacket::GssEnc => conn.write_all(b"N").await?,
                StartupPacket::Cancel { key } => {
                    crate::cancel::CancelRegistry::dispatch(shared, key).await;
                    return Ok(None);
                }
                StartupPacket::BadCancel => {
                    tracing::debug!("{} bad cancel request", conn.prefix());
                    return Ok(None);
                }
                StartupPacket::OldProtocol => {
                    return Err(ClientError::fatal("old V2 protocol not supported"));
                }
                StartupPacket::Startup {
                    minor,
                    params,
                    protocol_options,
                } => {
                    if minor > 0 || !protocol_options.is_empty() {
                        let opts: Vec<&[u8]> =
                            protocol_options.iter().map(|s| s.as_bytes()).collect();
                        let mut out = BytesMut::new();
                        backend::negotiate_protocol_version(&mut out, 0, &opts);
                        conn.write_all(&out).await?;
                    }
                    return Ok(Some(params));
                }
            }
        }
    };
    // client_login_timeout covers the startup packet and the whole authentication exchange
    let login_deadline = tokio::time::Instant::now() + g.client_login_timeout;
    // boxed: the login's state is freed once it is done instead of sizing every client's task
    let login = Box::pin(login);
    let params = if g.client_login_timeout.is_zero() {
        login.await?
    } else {
        match tokio::time::timeout_at(login_deadline, login).await {
            Ok(r) => r?,
            Err(_) => return Err(ClientError::fatal("client_login_timeout")),
        }
    };
    let Some(params) = params else { return Ok(()) };
    // client_tls_sslmode require and stricter: TCP clients must use TLS (unix sockets are exempt)
    if tls.mode.required() && !conn.stream.is_unix() && !conn.stream.is_tls() {
        return Err(ClientError::fatal("SSL required"));
    }
    let add_host = g.application_name_add_host.then_some(conn.peer.as_str());
    let info = startup::decide(
        &params,
        &shared.tracked,
        &g.ignore_startup_parameters,
        add_host,
    )
    .map_err(ClientError::fatal)?;
    conn.who = format!("{}/{}", info.database, info.user);

    if info.database == "pgbouncer" {
        return Box::pin(admin_login(conn, shared, &info.user, login_deadline)).await;
    }
    let _count = ClientCount::new(shared);
    if shared.clients.load(Ordering::Relaxed) > g.max_client_conn as usize {
        return Err(ClientError::fatal(
            "no more connections allowed (max_client_conn)",
        ));
    }
    if g.log_connections {
        tracing::info!(
            "{} login attempt: db={} user={} tls=no replication=no",
            conn.prefix(),
            info.database,
            info.user
        );
    }
    let db = cfg.database(&info.database).cloned();
    let forced = db.as_ref().is_some_and(|d| d.user.is_some());
    let auth = Box::pin(auth::authenticate(
        conn,
        shared,
        &info.user,
        &info.database,
        db.as_ref().map(|d| (info.database.as_str(), d)),
    ));
    let outcome = if g.client_login_timeout.is_zero() {
        auth.await?
    } else {
        match tokio::time::timeout_at(login_deadline, auth).await {
            Ok(r) => r?,
            Err(_) => return Err(ClientError::fatal("client_login_timeout")),
        }
    };
    let Some(db) = db else {
        return Err(ClientError::fatal(format!(
            "no such database: {}",
            info.database
        )));
    };
    // during a shutdown only TCP connections accepted before the listener closed get here, and
    // they are served; the unix socket stays open for the admin console only
    if shared.shutting_down.load(Ordering::Relaxed) && conn.stream.is_unix() {
        return Err(ClientError::fatal("server shutting down"));
    }
    if shared.pause.is_disabled(&info.database) {
        return Err(ClientError::fatal(format!(
            "database \"{}\" is disabled",
            info.database
        )));
    }
    let pool = shared.pool_for(&info.database, &db, &info.user);
    if let Some(secret) = &outcome.looked_up
        && !forced
        && db.password.is_none()
    {
        pool.target().set_password(secret);
    }
    if let Some(keys) = outcome.scram_keys
        && !forced
    {
        pool.set_scram_keys(keys);
    }
    let _in_pool = Counted::new(pool.clients_counter());
    // client caps per database and per user (PgBouncer >= 1.24)
    let ucfg = cfg.users.get(&info.user);
    let db_max = db
        .max_db_client_connections
        .unwrap_or(g.max_db_client_connections) as usize;
    let db_count = shared
        .db_clients
        .entry(info.database.clone())
        .or_default()
        .clone();
    let _db_client = Counted::new(db_count);
    if db_max > 0 && _db_client.value() > db_max {
        return Err(ClientError::fatal(
            "client connections exceeded (max_db_client_connections)",
        ));
    }
    let user_max = ucfg
        .and_then(|u| u.max_user_client_connections)
        .unwrap_or(g.max_user_client_connections) as usize;
    let user_count = shared
        .user_clients
        .entry(info.user.clone())
        .or_default()
        .clone();
    let _user_client = Counted::new(user_count);
    if user_max > 0 && _user_client.value() > user_max {
        return Err(ClientError::fatal(
            "client connections exceeded (max_user_client_connections)",
        ));
    }
    let welcome = pool.ensure_welcome().await.map_err(relay::checkout_error)?;
    let cancel = shared.cancel.register(cfg.general.peer_id);
    let mut params = info.params;
    params.fill_from(&welcome.params);

    let mut out = BytesMut::with_capacity(512);
    backend::auth_request(&mut out, backend::AUTH_OK, &[]);
    for (k, v) in &welcome.list {
        let v = shared
            .tracked
            .index(k)
            .and_then(|i| params.get(i))
            .unwrap_or(v);
        backend::parameter_status(&mut out, k.as_bytes(), v.as_bytes());
    }
    let (pid, secret) = (
        u32::from_be_bytes(cancel.key[0..4].try_into().unwrap()),
        u32::from_be_bytes(cancel.key[4..8].try_into().unwrap()),
    );
    backend::backend_key_data(&mut out, pid, secret);
    backend::ready_for_query(&mut out, b'I');
    conn.write_all(&out).await?;
    pool.stats
        .local()
        .client_logins
        .fetch_add(1, Ordering::Relaxed);

    let u = cfg.users.get(&info.user);
    let limits = timers::Limits::new(
        u.and_then(|u| u.query_timeout).unwrap_or(g.query_timeout),
        u.and_then(|u| u.idle_transaction_timeout)
            .unwrap_or(g.idle_transaction_timeout),
        u.and_then(|u| u.transaction_timeout)
            .unwrap_or(g.transaction_timeout),
        u.and_then(|u| u.client_idle_timeout)
            .unwrap_or(g.client_idle_timeout),
    )
    .with_wait_notify(g.query_wait_notify);
    let app = shared
        .tracked
        .index("application_name")
        .and_then(|i| params.get(i))
        .unwrap_or("")
        .to_string();
    let mut meta = client_meta(conn, &info.database, &info.user, &app, g.listen_port);
    meta.pool_user = pool.user.clone();
    let mut relay = relay::Relay::new(
        conn,
        shared,
        pool,
        params,
        cancel.slot.clone(),
        limits,
        meta,
    );
    let res = relay.run().await;
    relay.finish().await;
    if g.log_disconnections && res.is_ok() {
        tracing::info!(
            "{} closing because: client close request (age={}s)",
            relay.conn_prefix(),
            relay.age_secs()
        );
    }
    res
}

/// Log in to the admin console: the pooler's own OS user as `pgbouncer` on the unix socket is
/// let in without a password (as PgBouncer); others authenticate, then must be in admin_users
/// or stats_users.
async fn admin_login(
    conn: &mut ClientConn,
    shared: &Arc<Shared>,
    user: &str,
    deadline: tokio::time::Instant,
) -> Result<(), ClientError> {
    let cfg = shared.config();
    // SAFETY: getuid has no preconditions.
    let own_uid = unsafe { libc::getuid() };
    let role = if user == "pgbouncer" && conn.peer_uid == Some(own_uid) {
        if cfg.general.log_connections {
            tracing::info!("{} pgbouncer access from unix socket", conn.prefix());
        }
        crate::admin::Role::Admin
    } else {
        let auth = auth::authenticate(conn, shared, user, "pgbouncer", None);
        if cfg.general.client_login_timeout.is_zero() {
            auth.await?;
        } else {
            match tokio::time::timeout_at(deadline, auth).await {
                Ok(r) => {
                    r?;
                }
                Err(_) => return Err(ClientError::fatal("client_login_timeout")),
            }
        }
        match crate::admin::role_of(shared, user) {
            Some(r) => r,
            None => return Err(ClientError::fatal("not allowed")),
        }
    };
    crate::admin::session(conn, shared, user, role).await
}

/// What SHOW CLIENTS shows about this client.
pub fn client_meta(
    conn: &ClientConn,
    db: &str,
    user: &str,
    app: &str,
    listen_port: u16,
) -> timers::ClientMeta {
    let (addr, port, pid) = match conn.peer.strip_prefix("unix(") {
        Some(rest) => (
            "unix".to_string(),
            listen_port,
            rest.trim_end_matches(')').parse().unwrap_or(0),
        ),
        None => match conn.peer.rsplit_once(':') {
            Some((a, p)) => (
                a.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse().unwrap_or(0),
                0,
            ),
            None => (conn.peer.clone(), 0, 0),
        },
    };
    let (local_addr, mut local_port) = conn.stream.local_addr();
    if conn.stream.is_unix() {
        local_port = listen_port;
    }
    timers::ClientMeta {
        id: conn.id,
        user: user.to_string(),
        pool_user: user.to_string(),
        database: db.to_string(),
        addr,
        port,
        local_addr,
        local_port,
        connect_time: Some(conn.connected),
        application_name: app.to_string(),
        remote_pid: pid,
    }
}

/// Holds one count in a shared counter while alive.
struct Counted(Arc<std::sync::atomic::AtomicUsize>);

impl Counted {
    fn new(c: Arc<std::sync::atomic::AtomicUsize>) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        Counted(c)
    }

    fn value(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a connected client for max_client_conn while alive.
struct ClientCount<'a>(&'a Shared);

impl<'a> ClientCount<'a> {
    fn new(s: &'a Shared) -> Self {
        s.clients.fetch_add(1, Ordering::Relaxed);
        ClientCount(s)
    }
}

impl Drop for ClientCount<'_> {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}
