//! SHOW commands with PgBouncer 1.25's column names, order and types.

use super::{Role, error, ready};
use crate::client::timers::{self, ClientTimers};
use crate::pool::Mode;
use crate::protocol::backend::{
    self, OID_INT4 as I, OID_INT8 as Q, OID_NUMERIC as N, OID_TEXT as S,
};
use crate::state::Shared;
use bytes::BytesMut;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

/// One result row of text values (None = NULL).
pub type Row = Vec<Option<String>>;

pub fn t(s: impl Into<String>) -> Option<String> {
    Some(s.into())
}

pub fn n(v: impl std::fmt::Display) -> Option<String> {
    Some(v.to_string())
}

/// RowDescription, the rows, CommandComplete "SHOW" and ReadyForQuery.
pub fn table(out: &mut BytesMut, cols: &[(&str, u32)], rows: &[Row]) {
    backend::row_description(out, cols);
    for r in rows {
        backend::data_row(out, r);
    }
    ready(out, "SHOW");
}

pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Session => "session",
        Mode::Transaction => "transaction",
        Mode::Statement => "statement",
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`, PgBouncer's timestamp text.
fn ts(t: Option<SystemTime>) -> Option<String> {
    let s = crate::logging::timestamp(t?);
    Some(format!("{} UTC", &s[..19]))
}

fn ms_to_time(ms: u64) -> Option<SystemTime> {
    let age = timers::now_ms().saturating_sub(ms);
    Some(SystemTime::now() - std::time::Duration::from_millis(age))
}

pub fn show(shared: &Shared, role: Role, what: &str, query: &str, out: &mut BytesMut) {
    match what.to_ascii_lowercase().as_str() {
        "client_encoding" => fake(out, "client_encoding", "UTF-8"),
        "default_transaction_isolation" => {
            fake(out, "default_transaction_isolation", "read committed")
        }
        "standard_conforming_strings" => fake(out, "standard_conforming_strings", "on"),
        "datestyle" => fake(out, "datestyle", "ISO"),
        "timezone" => fake(out, "timezone", "GMT"),
        "extra_float_digits" => fake(out, "extra_float_digits", "2"),
        "help" => {
            backend::notice_with_detail(out, "Console usage", HELP);
            ready(out, "SHOW");
        }
        "version" => table(
            out,
            &[("version", S)],
            &[vec![t(format!("PgBouncer {}", super::COMPAT_VERSION))]],
        ),
        "state" => {
            let m = shared.pause.mode();
            let yn = |b: bool| t(if b { "yes" } else { "no" });
            table(
                out,
                &[("key", S), ("value", S)],
                &[
                    vec![t("active"), yn(m == crate::pool::pause::RUNNING)],
                    vec![t("paused"), yn(m == crate::pool::pause::PAUSED)],
                    vec![t("suspended"), yn(m == crate::pool::pause::SUSPENDED)],
                ],
            )
        }
        "config" => {
            let rows: Vec<Row> = shared
                .config()
                .show_config_rows()
                .into_iter()
                .map(|(k, v, d, c)| vec![t(k), t(v), t(d), t(if c { "yes" } else { "no" })])
                .collect();
            table(
                out,
                &[("key", S), ("value", S), ("default", S), ("changeable", S)],
                &rows,
            )
        }
        "lists" => lists(shared, out),
        "pools" => super::show_pools::pools(shared, out),
        "databases" => super::show_pools::databases(shared, out),
        "users" => super::show_pools::users(shared, out),
        "stats" => stats(shared, out, Layout::Stats),
        "stats_totals" => stats(shared, out, Layout::Totals),
        "stats_averages" => stats(shared, out, Layout::Averages),
        "totals" => totals(shared, out),
        "clients" => sockets(shared, out, Which::Clients, false),
        "servers" => sockets(shared, out, Which::Servers, false),
        "sockets" | "active_sockets" => sockets(shared, out, Which::Both, true),
        "mem" => table(
            out,
            &[
                ("name", S),
                ("size", I),
                ("used", I),
                ("free", I),
                ("memtotal", I),
            ],
            &[],
        ),
        "fds" => {
            if role != Role::Admin {
                return error(out, "admin access needed");
            }
            table(
                out,
                &[
                    ("fd", I),
                    ("task", S),
                    ("user", S),
                    ("database", S),
                    ("addr", S),
                    ("port", I),
                    ("cancel", Q),
                    ("link", I),
                    ("client_encoding", S),
                    ("std_strings", S),
                    ("datestyle", S),
                    ("timezone", S),
                    ("password", S),
                    ("scram_client_key", 17),
                    ("scram_server_key", 17),
                ],
                &[],
            )
        }
        "dns_hosts" => {
            let rows: Vec<Row> = shared
                .dns
                .hosts()
                .into_iter()
                .map(|h| vec![t(&h.hostname), n(h.ttl_secs as usize), t(&h.addrs)])
                .collect();
            table(out, &[("hostname", S), ("ttl", Q), ("addrs", S)], &rows)
        }
        "dns_zones" => table(out, &[("zonename", S), ("serial", Q), ("count", I)], &[]),
        "peers" => {
            let rows: Vec<Row> = shared
                .peers
                .all()
                .iter()
                .map(|p| {
                    vec![
                        n(p.cfg.id),
                        p.cfg.host.clone(),
                        n(p.cfg.port),
                        n(p.pool_size),
                    ]
                })
                .collect();
            table(
                out,
                &[("peer_id", I), ("host", S), ("port", I), ("pool_size", I)],
                &rows,
            )
        }
        "peer_pools" => table(
            out,
            &[
                ("peer_id", I),
                ("cl_active_cancel_req", I),
                ("cl_waiting_cancel_req", I),
                ("sv_active_cancel", I),
                ("sv_login", I),
            ],
            &shared
                .peers
                .all()
                .iter()
                .filter(|p| p.used.load(Relaxed))
                .map(|p| {
                    vec![
                        n(p.cfg.id),
                        n(p.cl_active.load(Relaxed)),
                        n(p.cl_waiting.load(Relaxed)),
                        n(p.sv_active.load(Relaxed)),
                        n(p.sv_login.load(Relaxed)),
                    ]
                })
                .collect::<Vec<Row>>(),
        ),
        _ => error(out, &format!("invalid command '{query}', use SHOW HELP;")),
    }
}

const HELP: &str = "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\tSHOW PEERS|PEER_POOLS\n\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n\tSHOW DNS_HOSTS|DNS_ZONES\n\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n\tSET key = arg\n\tRELOAD\n\tPAUSE [<db>]\n\tRESUME [<db>]\n\tDISABLE <db>\n\tENABLE <db>\n\tRECONNECT [<db>]\n\tKILL [<db>]\n\tKILL_CLIENT <client_id>\n\tSUSPEND\n\tSHUTDOWN\n\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n\tWAIT_CLOSE [<db>]";

fn fake(out: &mut BytesMut, name: &str, val: &str) {
    table(out, &[(name, S)], &[vec![t(val)]]);
}

/// Every item count SHOW LISTS and the metrics report.
pub fn list_counts(shared: &Shared) -> Vec<(&'static str, usize)> {
    let cfg = shared.config();
    let mut dbs: Vec<&str> = cfg
        .databases
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "*")
        .collect();
    let pool_dbs: Vec<String> = shared.pools.iter().map(|p| p.db.clone()).collect();
    dbs.extend(pool_dbs.iter().map(String::as_str));
    dbs.push("pgbouncer");
    dbs.sort_unstable();
    dbs.dedup();
    let used_clients = shared.clients.load(Relaxed) + shared.admin_clients.load(Relaxed);
    let logged_in = shared.timers.len();
    let servers: usize = shared.pools.iter().map(|p| p.pool_counts().total).sum();
    vec![
        ("databases", dbs.len()),
        ("users", super::show_pools::user_names(shared).len()),
        ("peers", shared.peers.all().len()),
        ("pools", shared.pools.len() + 1),
        (
            "peer_pools",
            shared
                .peers
                .all()
                .iter()
                .filter(|p| p.used.load(Relaxed))
                .count(),
        ),
        ("free_clients", 0),
        ("used_clients", used_clients),
        ("login_clients", used_clients.saturating_sub(logged_in)),
        ("free_servers", 0),
        ("used_servers", servers),
        ("dns_names", shared.dns.names()),
        ("dns_zones", 0),
        ("dns_queries", shared.dns.queries()),
        ("dns_pending", 0),
    ]
}

fn lists(shared: &Shared, out: &mut BytesMut) {
    let rows: Vec<Row> = list_counts(shared)
        .into_iter()
        .map(|(k, v)| vec![t(k), n(v)])
        .collect();
    table(out, &[("list", S), ("items", I)], &rows);
}

#[derive(PartialEq, Eq)]
enum Layout {
    Stats,
    Totals,
    Averages,
}

/// Per-database stats rows, the admin database first (as PgBouncer lists it).
pub fn db_stats(shared: &Shared) -> BTreeMap<String, crate::stats::DbStats> {
    let mut m = shared.periods.by_database(shared);
    m.entry("pgbouncer".into()).or_default();
    m
}

fn stats(shared: &Shared, out: &mut BytesMut, layout: Layout) {
    use crate::pool::stats::Snapshot;
    let vals = |s: &Snapshot| {
        [
            s.server_assignments,
            s.xacts,
            s.queries,
            s.bytes_received,
            s.bytes_sent,
            s.xact_time_us,
            s.query_time_us,
            s.wait_time_us,
            s.client_parses,
            s.server_parses,
            s.binds,
        ]
    };
    const BASE: [&str; 11] = [
        "server_assignment_count",
        "xact_count",
        "query_count",
        "bytes_received",
        "bytes_sent",
        "xact_time",
        "query_time",
        "wait_time",
        "client_parse_count",
        "server_parse_count",
        "bind_count",
    ];
    const STATS_TOTAL: [&str; 11] = [
        "total_server_assignment_count",
        "total_xact_count",
        "total_query_count",
        "total_received",
        "total_sent",
        "total_xact_time",
        "total_query_time",
        "total_wait_time",
        "total_client_parse_count",
        "total_server_parse_count",
        "total_bind_count",
    ];
    const STATS_AVG: [&str; 11] = [
        "avg_server_assignment_count",
        "avg_xact_count",
        "avg_query_count",
        "avg_recv",
        "avg_sent",
        "avg_xact_time",
        "avg_query_time",
        "avg_wait_time",
        "avg_client_parse_count",
        "avg_server_parse_count",
        "avg_bind_count",
    ];
    let mut names: Vec<&str> = vec!["database"];
    match layout {
        Layout::Stats => {
            names.extend(STATS_TOTAL);
            names.extend(STATS_AVG);
        }
        Layout::Totals => names.extend(BASE),
        Layout::Averages => {
            names.extend(&BASE[..8]);
            names.extend([
                "avg_client_parse_count",
                "avg_server_parse_count",
                "avg_bind_count",
            ]);
        }
    }
    let cols: Vec<(&str, u32)> = names
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, if i == 0 { S } else { N }))
        .collect();
    let mut rows = Vec::new();
    for (db, st) in db_stats(shared) {
        let mut r: Row = vec![t(db)];
        match layout {
            Layout::Stats => {
                r.extend(vals(&st.total).iter().map(n));
                r.extend(vals(&st.avg).iter().map(n));
            }
            Layout::Totals => r.extend(vals(&st.total).iter().map(n)),
            Layout::Averages => r.extend(vals(&st.avg).iter().map(n)),
        }
        rows.push(r);
    }
    table(out, &cols, &rows);
}

fn totals(shared: &Shared, out: &mut BytesMut) {
    use crate::pool::stats::Snapshot;
    let mut total = Snapshot::default();
    let mut avg = Snapshot::default();
    for st in db_stats(shared).values() {
        total.add(&st.total);
        avg.add(&st.avg);
    }
    let mut rows = Vec::new();
    for (prefix, s) in [("total", &total), ("avg", &avg)] {
        for (name, v) in [
            ("server_assignment_count", s.server_assignments),
            ("xact_count", s.xacts),
            ("query_count", s.queries),
            ("client_bytes", s.bytes_received),
            ("server_bytes", s.bytes_sent),
            ("xact_time", s.xact_time_us),
            ("query_time", s.query_time_us),
            ("wait_time", s.wait_time_us),
            ("ps_client_parse_count", s.client_parses),
            ("ps_server_parse_count", s.server_parses),
            ("ps_bind_count", s.binds),
        ] {
            rows.push(vec![t(format!("{prefix}_{name}")), n(v)]);
        }
    }
    table(out, &[("name", S), ("value", N)], &rows);
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Which {
    Clients,
    Servers,
    Both,
}

const SOCKET_COLS: [(&str, u32); 21] = [
    ("type", S),
    ("user", S),
    ("database", S),
    ("replication", S),
    ("state", S),
    ("addr", S),
    ("port", I),
    ("local_addr", S),
    ("local_port", I),
    ("connect_time", S),
    ("request_time", S),
    ("wait", I),
    ("wait_us", I),
    ("close_needed", I),
    ("ptr", S),
    ("link", S),
    ("remote_pid", I),
    ("tls", S),
    ("application_name", S),
    ("prepared_statements", I),
    ("id", I),
];
const DEBUG_COLS: [(&str, u32); 7] = [
    ("recv_pos", I),
    ("pkt_pos", I),
    ("pkt_remain", I),
    ("send_pos", I),
    ("send_remain", I),
    ("pkt_avail", I),
    ("send_avail", I),
];

fn client_row(c: &ClientTimers, debug: bool) -> Row {
    let m = &c.meta;
    let state = match c.state.load(Relaxed) {
        timers::WAITING => "waiting",
        timers::LINKED => "active",
        _ => "idle",
    };
    let wait_us = match c.wait_start.load(Relaxed) {
        0 => 0,
        w => timers::now_ms().saturating_sub(w) * 1000,
    };
    let link = c.server_id.load(Relaxed);
    let mut r = vec![
        t("C"),
        t(&m.user),
        t(&m.database),
        t("none"),
        t(if debug {
            format!("cl_{state}")
        } else {
            state.to_string()
        }),
        t(&m.addr),
        n(m.port),
        t(&m.local_addr),
        n(m.local_port),
        ts(m.connect_time),
        ts(ms_to_time(c.request_time.load(Relaxed))),
        n(wait_us / 1_000_000),
        n(wait_us % 1_000_000),
        n(0),
        t(format!("{:#x}", m.id)),
        t(if link == 0 {
            String::new()
        } else {
            format!("{link:#x}")
        }),
        n(m.remote_pid),
        t(""),
        t(&m.application_name),
        n(c.prepared.load(Relaxed)),
        n(m.id),
    ];
    if debug {
        r.extend(std::iter::repeat_n(n(0), DEBUG_COLS.len()));
    }
    r
}

fn sockets(shared: &Shared, out: &mut BytesMut, which: Which, debug: bool) {
    let mut cols: Vec<(&str, u32)> = SOCKET_COLS.to_vec();
    if debug {
        cols.extend(DEBUG_COLS);
    }
    let mut rows = Vec::new();
    let mut links: BTreeMap<u64, u64> = BTreeMap::new();
    let mut clients: Vec<_> = shared.timers.iter().map(|e| e.value().clone()).collect();
    clients.sort_by_key(|c| c.meta.id);
    for c in &clients {
        let s = c.server_id.load(Relaxed);
        if s != 0 {
            links.insert(s, c.meta.id);
        }
        if which != Which::Servers {
            rows.push(client_row(c, debug));
        }
    }
    if which != Which::Clients {
        let mut pools: Vec<_> = shared.pools.iter().map(|p| p.value().clone()).collect();
        pools.sort_by(|a, b| (&a.db, &a.user).cmp(&(&b.db, &b.user)));
        for p in pools {
            let idle = p.idle_ids();
            let stale = p.stale_count() > 0;
            let mut list = p.server_list();
            list.sort_by_key(|s| s.id);
            for s in list {
                let link = links.get(&s.id).copied();
                let state = if idle.contains(&s.id) {
                    "idle"
                } else if link.is_some() {
                    "active"
                } else {
                    "used"
                };
                let mut r = vec![
                    t("S"),
                    t(&p.user),
                    t(&p.db),
                    t("none"),
                    t(if debug {
                        format!("sv_{state}")
                    } else {
                        state.to_string()
                    }),
                    t(&s.addr),
                    n(s.port),
                    t(&s.local_addr),
                    n(s.local_port),
                    ts(Some(s.connect_time)),
                    ts(Some(s.connect_time)),
                    n(0),
                    n(0),
                    n(stale as u8),
                    t(format!("{:#x}", s.id)),
                    t(link.map(|l| format!("{l:#x}")).unwrap_or_default()),
                    n(s.remote_pid),
                    t(""),
                    t(""),
                    n(s.prepared.load(Relaxed)),
                    n(s.id),
                ];
                if debug {
                    r.extend(std::iter::repeat_n(n(0), DEBUG_COLS.len()));
                }
                rows.push(r);
            }
        }
    }
    table(out, &cols, &rows);
}
