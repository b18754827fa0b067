//! Running the pooler: runtime, listeners, janitor, signals (HUP reload, TERM/INT graceful, QUIT immediate).

use crate::config::hba::Hba;
use crate::config::{Config, UserList};
use crate::listener;
use crate::state::{Control, Shared};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Listen(#[from] listener::ListenError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Load the userlist named by `auth_file` (empty when unset).
pub fn load_userlist(cfg: &Config) -> Result<UserList, crate::config::ConfigError> {
    match &cfg.general.auth_file {
        Some(p) => UserList::load(p),
        None => UserList::parse_str("", std::path::Path::new("<none>")),
    }
}

/// Load auth_hba_file when auth_type = hba; an unreadable or bad file rejects every login (logged).
pub fn load_hba(cfg: &Config) -> Hba {
    if cfg.general.auth_type != crate::config::AuthType::Hba {
        return Hba::default();
    }
    match &cfg.general.auth_hba_file {
        Some(p) => Hba::load(p).unwrap_or_else(|e| {
            tracing::error!("could not load auth_hba_file: {e}; all logins are rejected");
            Hba::default()
        }),
        None => {
            tracing::error!(
                "auth_type = hba but auth_hba_file is not set; all logins are rejected"
            );
            Hba::default()
        }
    }
}

/// Raise the soft open-files limit to the hard limit: every client and server is a socket.
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// The runtimes: one work-stealing runtime with a worker per core, or with
/// `PGMUX_RUNTIME=shards` one runtime per core (see `shard`).
pub fn runtime() -> std::io::Result<crate::shard::Runtimes> {
    crate::shard::Runtimes::build()
}

/// Serve until shutdown. `ready` is called once listeners are bound.
pub async fn serve(
    cfg: Config,
    shards: crate::shard::Shards,
    ready: impl FnOnce(),
) -> Result<(), AppError> {
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    // as PgBouncer: an unreadable auth_file is logged and the pooler runs without it
    let userlist = load_userlist(&cfg).unwrap_or_else(|e| {
        tracing::error!("could not load auth_file: {e}");
        UserList::default()
    });
    let hba = load_hba(&cfg);
    let listeners = listener::bind(&cfg.general).await?;
    let metrics =
        match &cfg.general.metrics_listen {
            Some(a) => Some(crate::stats::http::bind(a).await.map_err(|e| {
                listener::ListenError::Bind {
                    addr: a.clone(),
                    source: e,
                }
            })?),
            None => None,
        };
    let tls = crate::tls::TlsState::new(&cfg.general)?;
    let shared = Shared::new(cfg, userlist, hba, tls, shards);
    if let Some(m) = metrics {
        tracing::info!(
            "metrics on http://{}/metrics",
            m.local_addr().map(|a| a.to_string()).unwrap_or_default()
        );
        tokio::spawn(crate::stats::http::serve(m, shared.clone()));
    }
    for l in listeners {
        tokio::spawn(listener::serve(l, shared.clone()));
    }
    tokio::spawn(janitor(shared.clone()));
    let g = shared.config();
    tracing::info!(
        "listening on {}{}port {}",
        g.general.listen_addr.join(","),
        if g.general.unix_socket_dir.is_empty() {
            String::new()
        } else {
            format!(" and unix:{}/ ", g.general.unix_socket_dir)
        },
        g.general.listen_port
    );
    shared.listening.store(true, Ordering::Relaxed);
    ready();
    signals(shared).await
}

async fn janitor(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(333));
    let mut last_stats = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        for p in shared.pools.iter() {
            p.value().maintain();
        }
        let now = crate::client::timers::now_ms();
        for t in shared.timers.iter() {
            t.value().check(now);
        }
        let cfg = shared.config();
        crate::autodb::sweep(&shared, &cfg, now);
        let period = cfg.general.stats_period.max(Duration::from_secs(1));
        if last_stats.elapsed() >= period {
            last_stats = tokio::time::Instant::now();
            let (_, avg) = shared.periods.rotate(&shared);
            if cfg.general.log_stats {
                tracing::info!("{}", crate::stats::log_line(&avg));
            }
        }
    }
}

/// How the process is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Now,
    WaitForServers,
    WaitForClients,
}

async fn signals(shared: Arc<Shared>) -> Result<(), AppError> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut control = shared.take_control().expect("control channel taken once");
    let mut draining: Option<Stop> = None;
    loop {
        let drained = async {
            loop {
                match draining {
                    Some(Stop::WaitForClients) if shared.clients.load(Ordering::Relaxed) == 0 => {
                        return;
                    }
                    Some(Stop::WaitForServers) if servers_released(&shared) => return,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        };
        let req = tokio::select! {
            _ = hup.recv() => {
                tracing::info!("got SIGHUP, re-reading config");
                if let Err(e) = crate::reload::reload(&shared) {
                    tracing::error!("RELOAD failed, keeping the old configuration: {e}");
                }
                continue;
            }
            _ = usr1.recv() => {
                tracing::info!("got SIGUSR1, pausing all activity");
                let _ = shared.pause.set_global(crate::pool::pause::PAUSED);
                continue;
            }
            _ = usr2.recv() => {
                if draining.is_none() {
                    tracing::info!("got SIGUSR2, continuing");
                    let _ = shared.pause.resume_all();
                }
                continue;
            }
            _ = quit.recv() => {
                tracing::info!("got SIGQUIT, fast exit");
                Stop::Now
            }
            _ = term.recv() => {
                if draining.is_some() {
                    tracing::info!("got SIGTERM while shutting down, fast exit");
                    Stop::Now
                } else if shared.config().general.sigterm_waits_for_servers {
                    tracing::info!("got SIGTERM, shutting down (sigterm_shutdown = wait_for_servers), waiting for all servers connections to be released");
                    Stop::WaitForServers
                } else {
                    tracing::info!("got SIGTERM, shutting down, waiting for all clients to disconnect");
                    Stop::WaitForClients
                }
            }
            _ = int.recv() => {
                if draining.is_some() {
                    tracing::info!("got SIGINT while shutting down, fast exit");
                    Stop::Now
                } else {
                    tracing::info!("got SIGINT, shutting down, waiting for all servers connections to be released");
                    Stop::WaitForServers
                }
            }
            Some(c) = control.recv() => match c {
                Control::ShutdownNow => Stop::Now,
                Control::ShutdownWaitForServers => Stop::WaitForServers,
                Control::ShutdownWaitForClients => Stop::WaitForClients,
            },
            _ = drained => break,
        };
        match req {
            Stop::Now => break,
            other => {
                start_drain(&shared, other);
                draining = Some(other);
            }
        }
    }
    // clients still connected are told why before the process goes
    for t in shared.timers.iter() {
        t.value().kill(crate::client::timers::Kill::ShuttingDown);
    }
    for p in shared.pools.iter() {
        p.value().close_idle("shutting down");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let g = &shared.config().general;
    if !g.unix_socket_dir.is_empty() {
        let _ = std::fs::remove_file(format!("{}/.s.PGSQL.{}", g.unix_socket_dir, g.listen_port));
    }
    Ok(())
}

/// No server is lent to a client or logging in, and no client accepted before the listener
/// closed is still logging in or waiting to run its first transaction (for at most 10 s).
fn servers_released(shared: &Shared) -> bool {
    let busy_servers = shared.pools.iter().any(|p| {
        let c = p.value().pool_counts();
        c.active > 0 || c.connecting > 0
    });
    if busy_servers {
        return false;
    }
    let now = crate::client::timers::now_ms();
    let registered = shared
        .timers
        .iter()
        .filter(|t| t.value().meta.database != "pgbouncer")
        .count();
    let fresh = shared.timers.iter().any(|t| {
        let t = t.value();
        t.meta.database != "pgbouncer"
            && t.xacts.load(Ordering::Relaxed) == 0
            && now.saturating_sub(t.idle_since.load(Ordering::Relaxed)) < 10_000
    });
    let logging_in = shared.clients.load(Ordering::Relaxed) > registered;
    !fresh && !logging_in
}

fn start_drain(shared: &Shared, how: Stop) {
    let mode = match how {
        Stop::WaitForServers => crate::state::SHUTDOWN_WAIT_FOR_SERVERS,
        _ => crate::state::SHUTDOWN_WAIT_FOR_CLIENTS,
    };
    shared.shutdown_mode.store(mode, Ordering::Relaxed);
    shared.shutting_down.store(true, Ordering::Relaxed);
    shared.shutdown.notify_waiters();
}
