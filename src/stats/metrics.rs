//! Prometheus text exposition with prometheus-community pgbouncer_exporter's metric names, plus pgmux's latency histograms.

use super::histogram::BOUNDS_US;
use crate::admin::show::list_counts;
use crate::admin::show_pools::{db_rows, pool_rows};
use crate::state::Shared;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Escape a label value (backslash, quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out {
    s: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.s, "# HELP {name} {help}");
        let _ = writeln!(self.s, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        self.s.push_str(name);
        if !labels.is_empty() {
            self.s.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.s.push(',');
                }
                let _ = write!(self.s, "{k}=\"{}\"", esc(val));
            }
            self.s.push('}');
        }
        let _ = writeln!(self.s, " {v}");
    }

    fn gauge(&mut self, name: &str, help: &str, v: impl std::fmt::Display) {
        self.family(name, "gauge", help);
        self.sample(name, &[], v);
    }

    fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        (cum, sum_us): ([u64; BOUNDS_US.len() + 1], u64),
    ) {
        for (i, b) in BOUNDS_US.iter().enumerate() {
            let le = format!("{}", *b as f64 / 1e6);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &l, cum[i]);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &l, cum[BOUNDS_US.len()]);
        self.sample(&format!("{name}_sum"), labels, sum_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), labels, cum[BOUNDS_US.len()]);
    }
}

/// The whole /metrics page.
pub fn render(shared: &Shared) -> String {
    let mut o = Out { s: String::new() };
    o.gauge(
        "pgbouncer_up",
        "The pooler answers (always 1 when scraped).",
        1,
    );
    o.family(
        "pgbouncer_version_info",
        "gauge",
        "The PgBouncer version pgmux is compatible with.",
    );
    o.sample(
        "pgbouncer_version_info",
        &[("version", crate::admin::COMPAT_VERSION)],
        1,
    );

    // SHOW LISTS
    for (list, v) in list_counts(shared) {
        let name = match list {
            "databases" => "pgbouncer_databases",
            "users" => "pgbouncer_users",
            "pools" => "pgbouncer_pools",
            "free_clients" => "pgbouncer_free_clients",
            "used_clients" => "pgbouncer_used_clients",
            "login_clients" => "pgbouncer_login_clients",
            "free_servers" => "pgbouncer_free_servers",
            "used_servers" => "pgbouncer_used_servers",
            "dns_names" => "pgbouncer_cached_dns_names",
            "dns_zones" => "pgbouncer_cached_dns_zones",
            "dns_queries" => "pgbouncer_in_flight_dns_queries",
            _ => continue,
        };
        o.gauge(name, &format!("SHOW LISTS {list}"), v);
    }

    // SHOW CONFIG
    let cfg = shared.config();
    o.gauge(
        "pgbouncer_config_max_client_connections",
        "max_client_conn",
        cfg.general.max_client_conn,
    );
    o.gauge(
        "pgbouncer_config_max_user_connections",
        "max_user_connections",
        cfg.general.max_user_connections,
    );

    // SHOW CLIENTS, counted by (database, user, application_name, state)
    let mut by: BTreeMap<(String, String, String, &str), u64> = BTreeMap::new();
    for c in shared.timers.iter() {
        let c = c.value();
        let state = match c.state.load(std::sync::atomic::Ordering::Relaxed) {
            crate::client::timers::WAITING => "waiting",
            crate::client::timers::LINKED => "active",
            _ => "idle",
        };
        *by.entry((
            c.meta.database.clone(),
            c.meta.user.clone(),
            c.meta.application_name.clone(),
            state,
        ))
        .or_default() += 1;
    }
    o.family(
        "pgbouncer_client_connections",
        "gauge",
        "Client connections by state.",
    );
    for ((db, user, app, state), n) in by {
        o.sample(
            "pgbouncer_client_connections",
            &[
                ("database", &db),
                ("user", &user),
                ("application_name", &app),
                ("state", state),
            ],
            n,
        );
    }

    // SHOW DATABASES
    let dbs = db_rows(shared);
    type DbGet = fn(&crate::admin::show_pools::DbRow) -> u64;
    let fams: [(&str, &str, DbGet); 6] = [
        ("pgbouncer_databases_pool_size", "pool_size", |d| {
            d.pool_size as u64
        }),
        (
            "pgbouncer_databases_reserve_pool",
            "reserve_pool_size",
            |d| d.reserve_pool_size as u64,
        ),
        (
            "pgbouncer_databases_max_connections",
            "max_connections",
            |d| d.max_connections as u64,
        ),
        (
            "pgbouncer_databases_current_connections",
            "current_connections",
            |d| d.current_connections as u64,
        ),
        ("pgbouncer_databases_paused", "paused", |d| d.paused as u64),
        ("pgbouncer_databases_disabled", "disabled", |d| {
            d.disabled as u64
        }),
    ];
    for (name, help, get) in fams {
        o.family(name, "gauge", &format!("SHOW DATABASES {help}"));
        for d in &dbs {
            let port = d.port.to_string();
            o.sample(
                name,
                &[
                    ("name", &d.name),
                    ("host", d.host.as_deref().unwrap_or("")),
                    ("port", &port),
                    ("database", &d.database),
                    ("force_user", d.force_user.as_deref().unwrap_or("")),
                    ("pool_mode", d.pool_mode.unwrap_or("")),
                ],
                get(d),
            );
        }
    }

    // SHOW STATS_TOTALS (times in seconds, as the exporter converts them)
    let stats = crate::admin::show::db_stats(shared);
    type StGet = fn(&crate::pool::stats::Snapshot) -> f64;
    let fams: [(&str, &str, StGet); 11] = [
        ("queries_pooled_total", "Queries pooled.", |s| {
            s.queries as f64
        }),
        (
            "queries_duration_seconds_total",
            "Time spent in queries.",
            |s| s.query_time_us as f64 / 1e6,
        ),
        (
            "received_bytes_total",
            "Bytes received from clients.",
            |s| s.bytes_received as f64,
        ),
        ("sent_bytes_total", "Bytes sent to clients.", |s| {
            s.bytes_sent as f64
        }),
        (
            "client_wait_seconds_total",
            "Time clients waited for a server.",
            |s| s.wait_time_us as f64 / 1e6,
        ),
        (
            "sql_transactions_pooled_total",
            "Transactions pooled.",
            |s| s.xacts as f64,
        ),
        (
            "server_in_transaction_seconds_total",
            "Time servers spent in transactions.",
            |s| s.xact_time_us as f64 / 1e6,
        ),
        ("client_parses_total", "Parse messages from clients.", |s| {
            s.client_parses as f64
        }),
        (
            "server_parses_total",
            "Parse messages sent to servers.",
            |s| s.server_parses as f64,
        ),
        ("binds_total", "Bind messages.", |s| s.binds as f64),
        (
            "server_assignments_total",
            "Server assignments to clients.",
            |s| s.server_assignments as f64,
        ),
    ];
    for (suffix, help, get) in fams {
        let name = format!("pgbouncer_stats_totals_{suffix}");
        o.family(&name, "counter", help);
        for (db, st) in &stats {
            o.sample(&name, &[("database", db)], get(&st.total));
        }
    }

    // SHOW POOLS
    let pools = pool_rows(shared);
    type PoolGet = fn(&crate::admin::show_pools::PoolRow) -> f64;
    let fams: [(&str, PoolGet); 12] = [
        ("pgbouncer_pools_client_active_connections", |p| {
            p.cl_active as f64
        }),
        ("pgbouncer_pools_client_active_cancel_connections", |_| 0.0),
        ("pgbouncer_pools_client_waiting_connections", |p| {
            p.cl_waiting as f64
        }),
        ("pgbouncer_pools_client_waiting_cancel_connections", |_| 0.0),
        ("pgbouncer_pools_server_active_connections", |p| {
            p.sv_active as f64
        }),
        ("pgbouncer_pools_server_active_cancel_connections", |_| 0.0),
        ("pgbouncer_pools_server_being_canceled_connections", |_| 0.0),
        ("pgbouncer_pools_server_idle_connections", |p| {
            p.sv_idle as f64
        }),
        ("pgbouncer_pools_server_used_connections", |p| {
            p.sv_used as f64
        }),
        ("pgbouncer_pools_server_testing_connections", |p| {
            p.sv_tested as f64
        }),
        ("pgbouncer_pools_server_login_connections", |p| {
            p.sv_login as f64
        }),
        ("pgbouncer_pools_client_maxwait_seconds", |p| {
            p.maxwait.as_secs_f64()
        }),
    ];
    for (name, get) in fams {
        o.family(name, "gauge", "SHOW POOLS");
        for p in &pools {
            o.sample(
                name,
                &[("database", &p.database), ("user", &p.user)],
                get(p),
            );
        }
    }

    // pgmux's own latency histograms (no PgBouncer exporter can give these)
    let mut ps: Vec<_> = shared.pools.iter().map(|p| p.value().clone()).collect();
    ps.sort_by(|a, b| (&a.db, &a.user).cmp(&(&b.db, &b.user)));
    for (name, help, pick) in [
        (
            "pgmux_query_duration_seconds",
            "Query latency: request received to ReadyForQuery.",
            0,
        ),
        (
            "pgmux_transaction_duration_seconds",
            "Transaction latency: server assigned to server released.",
            1,
        ),
        (
            "pgmux_client_wait_seconds",
            "Time a client waited for a server.",
            2,
        ),
    ] {
        o.family(name, "histogram", help);
        for p in &ps {
            let h = p.stats.histogram(pick);
            o.histogram(name, &[("database", &p.db), ("user", &p.user)], h);
        }
    }
    o.s
}
