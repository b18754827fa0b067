//! SHOW POOLS, DATABASES and USERS (the per-pool, per-database and per-user views).

use super::show::mode_name;
use crate::client::timers;
use crate::protocol::backend::{OID_INT4 as I, OID_TEXT as S};
use crate::state::Shared;
use bytes::BytesMut;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::show::{Row, n, t, table};

/// One SHOW POOLS line, shared with the metrics endpoint.
#[derive(Debug, Clone, Default)]
pub struct PoolRow {
    pub database: String,
    pub user: String,
    pub cl_active: usize,
    pub cl_waiting: usize,
    pub sv_active: usize,
    pub sv_idle: usize,
    pub sv_used: usize,
    pub sv_tested: usize,
    pub sv_login: usize,
    pub maxwait: Duration,
    pub pool_mode: &'static str,
}

/// SHOW POOLS rows: the admin pseudo-pool first, then every pool by (database, user).
pub fn pool_rows(shared: &Shared) -> Vec<PoolRow> {
    // clients by pool from the registry: (db, pool user) -> (active, waiting, longest wait)
    let mut cl: BTreeMap<(String, String), (usize, usize, u64)> = BTreeMap::new();
    let now = timers::now_ms();
    for c in shared.timers.iter() {
        let c = c.value();
        let e = cl
            .entry((c.meta.database.clone(), c.meta.pool_user.clone()))
            .or_default();
        if c.state.load(Relaxed) == timers::WAITING {
            e.1 += 1;
            let w = c.wait_start.load(Relaxed);
            if w != 0 {
                e.2 = e.2.max(now.saturating_sub(w));
            }
        } else {
            e.0 += 1;
        }
    }
    let admin = cl
        .get(&("pgbouncer".to_string(), "pgbouncer".to_string()))
        .copied()
        .unwrap_or_default();
    let admin_total = shared.admin_clients.load(Relaxed);
    let mut rows = vec![PoolRow {
        database: "pgbouncer".into(),
        user: "pgbouncer".into(),
        cl_active: admin_total.max(admin.0),
        pool_mode: "statement",
        ..Default::default()
    }];
    let mut pools: Vec<_> = shared.pools.iter().map(|p| p.value().clone()).collect();
    pools.sort_by(|a, b| (&a.db, &a.user).cmp(&(&b.db, &b.user)));
    for p in pools {
        let c = p.pool_counts();
        let (active, waiting, wait_ms) = cl
            .get(&(p.db.clone(), p.user.clone()))
            .copied()
            .unwrap_or_default();
        rows.push(PoolRow {
            database: p.db.clone(),
            user: p.user.clone(),
            cl_active: active,
            cl_waiting: waiting,
            sv_active: c.active,
            sv_idle: c.idle,
            sv_used: 0,
            sv_tested: 0,
            sv_login: c.connecting,
            maxwait: Duration::from_millis(wait_ms).max(c.max_wait),
            pool_mode: mode_name(p.settings().mode),
        });
    }
    rows
}

pub fn pools(shared: &Shared, out: &mut BytesMut) {
    let cols = [
        ("database", S),
        ("user", S),
        ("cl_active", I),
        ("cl_waiting", I),
        ("cl_active_cancel_req", I),
        ("cl_waiting_cancel_req", I),
        ("sv_active", I),
        ("sv_active_cancel", I),
        ("sv_being_canceled", I),
        ("sv_idle", I),
        ("sv_used", I),
        ("sv_tested", I),
        ("sv_login", I),
        ("maxwait", I),
        ("maxwait_us", I),
        ("pool_mode", S),
        ("load_balance_hosts", S),
    ];
    let rows: Vec<Row> = pool_rows(shared)
        .into_iter()
        .map(|r| {
            vec![
                t(r.database),
                t(r.user),
                n(r.cl_active),
                n(r.cl_waiting),
                n(0),
                n(0),
                n(r.sv_active),
                n(0),
                n(0),
                n(r.sv_idle),
                n(r.sv_used),
                n(r.sv_tested),
                n(r.sv_login),
                n(r.maxwait.as_secs()),
                n(r.maxwait.subsec_micros()),
                t(r.pool_mode),
                // NULL unless the host list has a comma: CNPG scans this into a nullable int
                None,
            ]
        })
        .collect();
    table(out, &cols, &rows);
}

/// One SHOW DATABASES line, shared with the metrics endpoint.
#[derive(Debug, Clone, Default)]
pub struct DbRow {
    pub name: String,
    pub host: Option<String>,
    pub port: u16,
    pub database: String,
    pub force_user: Option<String>,
    pub pool_size: u32,
    pub min_pool_size: u32,
    pub reserve_pool_size: u32,
    pub server_lifetime: u64,
    pub pool_mode: Option<&'static str>,
    pub load_balance_hosts: Option<String>,
    pub max_connections: usize,
    pub current_connections: usize,
    pub max_client_connections: u32,
    pub current_client_connections: usize,
    pub paused: bool,
    pub disabled: bool,
}

pub fn db_rows(shared: &Shared) -> Vec<DbRow> {
    let cfg = shared.config();
    let g = &cfg.general;
    let mut names: BTreeSet<String> = cfg
        .databases
        .keys()
        .filter(|k| *k != "*")
        .cloned()
        .collect();
    names.extend(shared.pools.iter().map(|p| p.db.clone()));
    let mut rows = vec![DbRow {
        name: "pgbouncer".into(),
        port: g.listen_port,
        database: "pgbouncer".into(),
        force_user: Some("pgbouncer".into()),
        pool_size: 2,
        server_lifetime: g.server_lifetime.as_secs(),
        pool_mode: Some("statement"),
        current_client_connections: shared.admin_clients.load(Relaxed),
        ..Default::default()
    }];
    for name in names {
        let Some(d) = cfg.database(&name) else {
            continue;
        };
        let current = shared
            .db_groups
            .get(&name)
            .map(|gr| gr.count())
            .unwrap_or(0);
        rows.push(DbRow {
            name: name.clone(),
            host: (!d.hosts.is_empty()).then(|| d.hosts.join(",")),
            port: d.port,
            database: d.dbname.clone().unwrap_or_else(|| name.clone()),
            force_user: d.user.clone(),
            pool_size: d.pool_size.unwrap_or(g.default_pool_size),
            min_pool_size: d.min_pool_size.unwrap_or(g.min_pool_size),
            reserve_pool_size: d.reserve_pool_size.unwrap_or(g.reserve_pool_size),
            server_lifetime: d.server_lifetime.unwrap_or(g.server_lifetime).as_secs(),
            pool_mode: d.pool_mode.map(|m| match m {
                crate::config::PoolMode::Session => "session",
                crate::config::PoolMode::Transaction => "transaction",
                crate::config::PoolMode::Statement => "statement",
            }),
            load_balance_hosts: (d.hosts.len() > 1).then(|| {
                d.load_balance_hosts
                    .clone()
                    .unwrap_or_else(|| "round-robin".into())
            }),
            max_connections: d.max_db_connections.unwrap_or(g.max_db_connections) as usize,
            current_connections: current,
            max_client_connections: d
                .max_db_client_connections
                .unwrap_or(g.max_db_client_connections),
            current_client_connections: shared
                .db_clients
                .get(&name)
                .map(|c| c.load(Relaxed))
                .unwrap_or(0),
            paused: shared.pause.db_paused(&name),
            disabled: shared.pause.is_disabled(&name),
        });
    }
    rows
}

pub fn databases(shared: &Shared, out: &mut BytesMut) {
    let cols = [
        ("name", S),
        ("host", S),
        ("port", I),
        ("database", S),
        ("force_user", S),
        ("pool_size", I),
        ("min_pool_size", I),
        ("reserve_pool_size", I),
        ("server_lifetime", I),
        ("pool_mode", S),
        ("load_balance_hosts", S),
        ("max_connections", I),
        ("current_connections", I),
        ("max_client_connections", I),
        ("current_client_connections", I),
        ("paused", I),
        ("disabled", I),
    ];
    let rows: Vec<Row> = db_rows(shared)
        .into_iter()
        .map(|d| {
            vec![
                t(d.name),
                d.host,
                n(d.port),
                t(d.database),
                d.force_user,
                n(d.pool_size),
                n(d.min_pool_size),
                n(d.reserve_pool_size),
                n(d.server_lifetime),
                d.pool_mode.map(str::to_string),
                d.load_balance_hosts,
                n(d.max_connections),
                n(d.current_connections),
                n(d.max_client_connections),
                n(d.current_client_connections),
                n(d.paused as u8),
                n(d.disabled as u8),
            ]
        })
        .collect();
    table(out, &cols, &rows);
}

/// Users PgBouncer would have in its user list: auth_file, [users], pool users, the admin user.
pub fn user_names(shared: &Shared) -> BTreeSet<String> {
    let cfg = shared.config();
    let mut names: BTreeSet<String> = cfg.users.keys().cloned().collect();
    names.extend(shared.userlist().names());
    names.extend(shared.pools.iter().map(|p| p.user.clone()));
    names.insert("pgbouncer".into());
    names
}

pub fn users(shared: &Shared, out: &mut BytesMut) {
    let cfg = shared.config();
    let g = &cfg.general;
    let cols = [
        ("name", S),
        ("pool_size", S),
        ("reserve_pool_size", S),
        ("pool_mode", S),
        ("max_user_connections", I),
        ("current_connections", I),
        ("max_user_client_connections", I),
        ("current_client_connections", I),
    ];
    let rows: Vec<Row> = user_names(shared)
        .into_iter()
        .map(|name| {
            let u = cfg.users.get(&name);
            // PgBouncer prints these with "%9d" when set and "" when not
            let pad = |v: Option<u32>| t(v.map(|v| format!("{v:9}")).unwrap_or_default());
            let current = shared
                .user_groups
                .get(&name)
                .map(|gr| gr.count())
                .unwrap_or(0);
            vec![
                t(name.clone()),
                pad(u.and_then(|u| u.pool_size)),
                pad(u.and_then(|u| u.reserve_pool_size)),
                u.and_then(|u| u.pool_mode).map(|m| {
                    match m {
                        crate::config::PoolMode::Session => "session",
                        crate::config::PoolMode::Transaction => "transaction",
                        crate::config::PoolMode::Statement => "statement",
                    }
                    .to_string()
                }),
                n(u.and_then(|u| u.max_user_connections)
                    .unwrap_or(g.max_user_connections)),
                n(current),
                n(u.and_then(|u| u.max_user_client_connections)
                    .unwrap_or(g.max_user_client_connections)),
                n(shared
                    .user_clients
                    .get(&name)
                    .map(|c| c.load(Relaxed))
                    .unwrap_or(0)),
            ]
        })
        .collect();
    table(out, &cols, &rows);
}
