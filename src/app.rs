//! Running the pooler: runtime, listeners, janitor, signals (HUP reload, TERM/INT graceful, QUIT immediate).

use crate::config::hba::Hba;
use crate::config::{Config, UserList};
use crate::listener;
use crate::state::Shared;
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

/// Build a multi-threaded runtime with one worker per core.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    raise_fd_limit();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Serve until shutdown. `ready` is called once listeners are bound.
pub async fn serve(cfg: Config, ready: impl FnOnce()) -> Result<(), AppError> {
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
    let shared = Shared::new(cfg, userlist, hba);
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
    ready();
    signals(shared).await
}

async fn janitor(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(333));
    loop {
        tick.tick().await;
        for p in shared.pools.iter() {
            p.value().maintain();
        }
        let now = crate::client::timers::now_ms();
        for t in shared.timers.iter() {
            t.value().check(now);
        }
    }
}

async fn signals(shared: Arc<Shared>) -> Result<(), AppError> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut draining = false;
    loop {
        let wait_clients = async {
            loop {
                if draining && shared.clients.load(Ordering::Relaxed) == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            _ = hup.recv() => reload(&shared),
            _ = quit.recv() => {
                tracing::info!("got SIGQUIT, fast exit");
                break;
            }
            _ = term.recv() => {
                if draining { tracing::info!("got SIGTERM while shutting down, fast exit"); break; }
                tracing::info!("got SIGTERM, shutting down, waiting for all clients to disconnect");
                start_drain(&shared);
                draining = true;
            }
            _ = int.recv() => {
                if draining { tracing::info!("got SIGINT while shutting down, fast exit"); break; }
                tracing::info!("got SIGINT, shutting down, waiting for all clients to disconnect");
                start_drain(&shared);
                draining = true;
            }
            _ = wait_clients => break,
        }
    }
    for p in shared.pools.iter() {
        p.value().close_idle("shutting down");
    }
    Ok(())
}

fn start_drain(shared: &Shared) {
    shared.shutting_down.store(true, Ordering::Relaxed);
    shared.shutdown.notify_waiters();
}

/// SIGHUP: re-read the userlist (settings reload arrives with the admin-console issue).
fn reload(shared: &Shared) {
    let cfg = shared.config();
    match Config::load(&cfg.file).and_then(|c| load_userlist(&c)) {
        Ok(u) => {
            tracing::info!(
                "got SIGHUP, re-read auth_file ({} users) and auth_hba_file",
                u.len()
            );
            shared.set_userlist(u);
            if let Ok(c) = Config::load(&cfg.file) {
                shared.set_hba(load_hba(&c));
            }
        }
        Err(e) => tracing::error!("RELOAD failed, keeping the old configuration: {e}"),
    }
}
