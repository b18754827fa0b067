//! Console command dispatch and the control commands: PAUSE, RESUME, SUSPEND, DISABLE, ENABLE, RECONNECT, KILL, KILL_CLIENT, WAIT_CLOSE, RELOAD, SHUTDOWN, SET.

use super::{Command, Role, error, error_code, ready};
use crate::client::timers::Kill;
use crate::pool::Pool;
use crate::pool::pause::{PAUSED, SUSPENDED};
use crate::state::{Control, Shared};
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;

/// Run one console query, writing the reply to `out`. Returns true after SHUTDOWN (immediate).
pub async fn execute(
    shared: &Arc<Shared>,
    self_id: u64,
    role: Role,
    q: &str,
    out: &mut BytesMut,
) -> bool {
    let Some(cmd) = super::parse(q) else {
        error(out, &format!("invalid command '{q}', use SHOW HELP;"));
        return false;
    };
    let (cmd, arg) = match cmd {
        Command::Set(k, v) => {
            set(shared, role, &k, &v, out);
            return false;
        }
        Command::Plain(c, a) => (c, a),
    };
    if cmd == "show" || cmd == "select" {
        super::show::show(shared, role, &arg, q, out);
        return false;
    }
    const KNOWN: &[&str] = &[
        "disable",
        "enable",
        "kill",
        "kill_client",
        "pause",
        "reconnect",
        "reload",
        "resume",
        "shutdown",
        "suspend",
        "wait_close",
    ];
    if !KNOWN.contains(&cmd.as_str()) {
        error(out, &format!("invalid command '{q}', use SHOW HELP;"));
        return false;
    }
    if role != Role::Admin {
        error(out, "admin access needed");
        return false;
    }
    let db_arg = (!arg.is_empty()).then_some(arg.as_str());
    match cmd.as_str() {
        "pause" => pause(shared, db_arg, out).await,
        "resume" => resume(shared, db_arg, out),
        "suspend" => {
            if db_arg.is_some() {
                error(out, &format!("invalid command '{q}', use SHOW HELP;"));
            } else if shared.pause.paused_dbs() > 0 {
                error(out, "cannot suspend with paused databases");
            } else if let Err(e) = shared.pause.set_global(SUSPENDED) {
                error(out, e);
            } else {
                tracing::info!("SUSPEND command issued");
                wait_idle(shared, None).await;
                ready(out, "SUSPEND");
            }
        }
        "disable" | "enable" => {
            let on = cmd == "disable";
            match db_arg {
                None => error(out, "a database is required"),
                Some("pgbouncer") => error(out, &format!("cannot {cmd} admin db: pgbouncer")),
                Some(db) if !known_db(shared, db) => error(out, &format!("no such database: {db}")),
                Some(db) => {
                    tracing::info!("{} '{db}' command issued", cmd.to_uppercase());
                    shared.pause.set_disabled(db, on);
                    ready(out, &cmd.to_uppercase());
                }
            }
        }
        "reconnect" => match db_arg {
            Some("pgbouncer") => error(out, "cannot reconnect admin db: pgbouncer"),
            Some(db) if !known_db(shared, db) => error(out, &format!("no such database: {db}")),
            _ => {
                tracing::info!("RECONNECT command issued");
                for p in pools_of(shared, db_arg) {
                    p.reconnect("RECONNECT issued");
                }
                ready(out, "RECONNECT");
            }
        },
        "wait_close" => match db_arg {
            Some("pgbouncer") => error(out, "cannot wait in admin db: pgbouncer"),
            Some(db) if !known_db(shared, db) => error(out, &format!("no such database: {db}")),
            _ => {
                tracing::info!("WAIT_CLOSE command issued");
                let pools = pools_of(shared, db_arg);
                while pools.iter().any(|p| p.stale_count() > 0) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                ready(out, "WAIT_CLOSE");
            }
        },
        "kill" => kill(shared, db_arg, self_id, out),
        "kill_client" => {
            let Ok(id) = arg.parse::<u64>() else {
                error(out, "invalid client pointer supplied");
                return false;
            };
            match shared.timers.get(&id).map(|t| t.value().clone()) {
                Some(t) if id != self_id => {
                    t.kill(Kill::AdminForced);
                    ready(out, "KILL_CLIENT");
                }
                _ => error(out, "client not found"),
            }
        }
        "reload" => {
            if db_arg.is_some() {
                error(out, &format!("invalid command '{q}', use SHOW HELP;"));
                return false;
            }
            tracing::info!("RELOAD command issued");
            match crate::reload::reload(shared) {
                Ok(()) => ready(out, "RELOAD"),
                Err(e) => {
                    tracing::error!("RELOAD failed: {e}");
                    error_code(
                        out,
                        "F0000",
                        "RELOAD failed, see logs for additional details",
                    );
                }
            }
        }
        "shutdown" => {
            let req = match arg.to_ascii_lowercase().as_str() {
                "" => Control::ShutdownNow,
                "wait_for_servers" => Control::ShutdownWaitForServers,
                "wait_for_clients" => Control::ShutdownWaitForClients,
                _ => {
                    error(out, &format!("invalid command '{q}', use SHOW HELP;"));
                    return false;
                }
            };
            let _ = shared.control.send(req).await;
            if req == Control::ShutdownNow {
                return true;
            }
            ready(out, "SHUTDOWN");
        }
        _ => unreachable!("checked against KNOWN"),
    }
    false
}

fn known_db(shared: &Shared, db: &str) -> bool {
    shared.config().database(db).is_some() || shared.pools.iter().any(|p| p.db == db)
}

fn pools_of(shared: &Shared, db: Option<&str>) -> Vec<Arc<Pool>> {
    shared
        .pools
        .iter()
        .filter(|p| db.is_none_or(|d| p.db == d))
        .map(|p| p.value().clone())
        .collect()
}

/// Wait until no server of the given pools is lent to a client or still logging in.
async fn wait_idle(shared: &Shared, db: Option<&str>) {
    loop {
        let busy = pools_of(shared, db).iter().any(|p| {
            let c = p.pool_counts();
            c.active > 0 || c.connecting > 0
        });
        if !busy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// PAUSE [db]: new transactions wait; returns once running ones have finished and the servers
/// are closed.
async fn pause(shared: &Shared, db: Option<&str>, out: &mut BytesMut) {
    if shared.pause.mode() != crate::pool::pause::RUNNING {
        return error(out, "already suspended/paused");
    }
    match db {
        None => {
            tracing::info!("PAUSE command issued");
            if let Err(e) = shared.pause.set_global(PAUSED) {
                return error(out, e);
            }
        }
        Some("pgbouncer") => return error(out, "cannot pause admin db: pgbouncer"),
        Some(d) if !known_db(shared, d) => return error(out, &format!("no such database: {d}")),
        Some(d) => {
            tracing::info!("PAUSE '{d}' command issued");
            shared.pause.pause_db(d);
        }
    }
    wait_idle(shared, db).await;
    for p in pools_of(shared, db) {
        p.close_idle("pause mode");
    }
    ready(out, "PAUSE");
}

fn resume(shared: &Shared, db: Option<&str>, out: &mut BytesMut) {
    if shared
        .shutdown_mode
        .load(std::sync::atomic::Ordering::Relaxed)
        != 0
    {
        return error(out, "pooler is shutting down");
    }
    match db {
        None => {
            tracing::info!("RESUME command issued");
            if let Err(e) = shared.pause.resume_all() {
                return error(out, e);
            }
        }
        Some(d) => {
            tracing::info!("RESUME '{d}' command issued");
            if !known_db(shared, d) {
                return error(out, &format!("no such database: {d}"));
            }
            if !shared.pause.resume_db(d) {
                return error(out, &format!("database {d} is not paused"));
            }
        }
    }
    ready(out, "RESUME");
}

/// KILL [db]: drop the clients and servers of the database(s) now; they stay paused until RESUME.
fn kill(shared: &Shared, db: Option<&str>, self_id: u64, out: &mut BytesMut) {
    if shared.pause.mode() != crate::pool::pause::RUNNING {
        return error(out, "already suspended/paused");
    }
    match db {
        Some("pgbouncer") => return error(out, "cannot kill admin db: pgbouncer"),
        Some(d) if !known_db(shared, d) => return error(out, &format!("no such database: {d}")),
        _ => {}
    }
    tracing::info!("KILL command issued");
    let dbs: Vec<String> = match db {
        Some(d) => vec![d.to_string()],
        None => {
            let mut v: Vec<String> = shared.pools.iter().map(|p| p.db.clone()).collect();
            v.extend(
                shared
                    .config()
                    .databases
                    .keys()
                    .filter(|k| *k != "*")
                    .cloned(),
            );
            v.sort();
            v.dedup();
            v
        }
    };
    for d in &dbs {
        shared.pause.pause_db(d);
    }
    for t in shared.timers.iter() {
        let m = &t.value().meta;
        if m.id != self_id && m.database != "pgbouncer" && dbs.contains(&m.database) {
            t.value().kill(Kill::DatabaseRemoved);
        }
    }
    for p in pools_of(shared, db) {
        p.reconnect("database removed");
    }
    ready(out, "KILL");
}

/// SET key = value: changeable settings only; applied like a reload.
fn set(shared: &Shared, role: Role, key: &str, val: &str, out: &mut BytesMut) {
    const FAKE: &[&str] = &[
        "client_encoding",
        "default_transaction_isolation",
        "standard_conforming_strings",
        "datestyle",
        "timezone",
        "extra_float_digits",
    ];
    if FAKE.iter().any(|f| f.eq_ignore_ascii_case(key)) {
        crate::protocol::backend::notice_response(out, "NOTICE", "00000", "SET ignored");
        return ready(out, "SET");
    }
    if role != Role::Admin {
        return error(out, "admin access needed");
    }
    let changeable = crate::config::settings::find(key).is_some_and(|s| s.changeable);
    let mut cfg = (*shared.config()).clone();
    let ok = changeable && cfg.general.apply(key, val).is_ok();
    if !ok {
        return error(out, "SET failed");
    }
    let name = crate::config::settings::find(key)
        .map(|s| s.name)
        .unwrap_or(key);
    if name.contains("_tls")
        && let Err(e) = shared.tls.reload(&cfg.general)
    {
        tracing::error!("SET {name}: {e}");
        return error(out, "SET failed");
    }
    cfg.raw.insert(name.to_string(), val.to_string());
    tracing::info!("SET {name}={val}");
    crate::reload::apply(shared, cfg);
    ready(out, &format!("SET {key}={val}"));
}
