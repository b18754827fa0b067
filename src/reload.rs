//! RELOAD and SIGHUP: re-read pgbouncer.ini, auth_file and auth_hba_file and apply them to running pools.

use crate::app::{load_hba, load_userlist};
use crate::config::Config;
use crate::state::Shared;

/// Re-read the files named by the running configuration. A bad file changes nothing.
pub fn reload(shared: &Shared) -> Result<(), String> {
    let file = shared.config().file.clone();
    let cfg = Config::load(&file).map_err(|e| e.to_string())?;
    let users = load_userlist(&cfg).map_err(|e| e.to_string())?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    // new certificate files (rotation) are read now; a broken one keeps the TLS setup in force
    shared
        .tls
        .reload(&cfg.general)
        .map_err(|e| format!("TLS: {e}"))?;
    shared.set_userlist(users);
    apply(shared, cfg);
    Ok(())
}

fn tls_settings(g: &crate::config::General) -> (String, Vec<(&'static str, String)>) {
    (
        g.server_tls_sslmode.clone(),
        g.tls
            .iter()
            .filter(|(k, _)| k.starts_with("server_"))
            .map(|(k, v)| (*k, v.clone()))
            .collect(),
    )
}

/// Make `cfg` the running configuration: pool sizes and limits change in place, pools whose
/// server address changed close their servers as they are released. Clients stay connected.
pub fn apply(shared: &Shared, cfg: Config) {
    let old = shared.config();
    for (k, st) in [
        (
            "listen_addr",
            old.general.listen_addr != cfg.general.listen_addr,
        ),
        (
            "listen_port",
            old.general.listen_port != cfg.general.listen_port,
        ),
        (
            "unix_socket_dir",
            old.general.unix_socket_dir != cfg.general.unix_socket_dir,
        ),
    ] {
        if st {
            tracing::warn!("{k} cannot be changed by RELOAD; restart pgmux to apply it");
        }
    }
    // as PgBouncer: a changed server-side TLS setting reconnects the pools
    if tls_settings(&old.general) != tls_settings(&cfg.general) {
        for p in shared.pools.iter() {
            p.value().reconnect("TLS configuration changed");
        }
    }
    shared.dns.reconfigure(&cfg.general);
    shared.tcp.reconfigure(&cfg.general);
    shared.peers.reconfigure(&cfg);
    shared.set_hba(load_hba(&cfg));
    shared.set_config(cfg.clone());
    let g = &cfg.general;
    for e in shared.db_groups.iter() {
        let max = cfg
            .database(e.key())
            .and_then(|d| d.max_db_connections)
            .unwrap_or(g.max_db_connections);
        e.value().set_max(max as usize);
    }
    for e in shared.user_groups.iter() {
        let max = cfg
            .users
            .get(e.key())
            .and_then(|u| u.max_user_connections)
            .unwrap_or(g.max_user_connections);
        e.value().set_max(max as usize);
    }
    let pools: Vec<_> = shared.pools.iter().map(|p| p.value().clone()).collect();
    for pool in pools {
        let Some(db) = cfg.database(&pool.db) else {
            // the database is gone from the file: no new servers after the current ones
            pool.reconnect("database removed from configuration");
            continue;
        };
        let (target, settings) = shared.resolve(&cfg, &pool.db, db, &pool.user);
        pool.set_settings(settings);
        let cur = pool.target();
        if cur.hosts != target.hosts || cur.port != target.port || cur.dbname != target.dbname {
            tracing::info!(
                "{}/{}: server address changed, closing its connections as they are released",
                pool.db,
                pool.user
            );
            pool.set_target(target);
        } else if let Some(pw) = target.password.read().unwrap().clone() {
            cur.set_password(&pw);
        }
    }
}
