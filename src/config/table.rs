//! The table of PgBouncer 1.25's [pgbouncer] settings: names, defaults, value kinds, which pgmux implements, which RELOAD may change.

/// How a setting's value is parsed.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Int,
    Time,
    Str,
    Lookup(&'static [&'static str]),
}

pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: Kind,
    /// pgmux honours it; otherwise setting it to a non-default value warns once.
    pub implemented: bool,
    /// Can change on RELOAD (PgBouncer's CF_NO_RELOAD settings cannot).
    pub changeable: bool,
}

const AUTH_TYPES: &[&str] = &[
    "any",
    "trust",
    "plain",
    "md5",
    "cert",
    "hba",
    "ldap",
    "pam",
    "scram-sha-256",
];
const POOL_MODES: &[&str] = &["session", "transaction", "statement"];
const SHUTDOWN_MODES: &[&str] = &["wait_for_clients", "wait_for_servers"];
const LOG_FORMATS: &[&str] = &["text", "json"];
const SSLMODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

const fn s(
    name: &'static str,
    default: &'static str,
    kind: Kind,
    implemented: bool,
    changeable: bool,
) -> Setting {
    Setting {
        name,
        default,
        kind,
        implemented,
        changeable,
    }
}

use Kind::*;
/// Every PgBouncer 1.25 setting, in PgBouncer's (alphabetical) SHOW CONFIG order.
pub const SETTINGS: &[Setting] = &[
    s("admin_users", "", Str, true, true),
    s("application_name_add_host", "0", Int, true, true),
    s("auth_dbname", "", Str, true, true),
    s("auth_file", "", Str, true, true),
    s("auth_hba_file", "", Str, true, true),
    s("auth_ident_file", "", Str, false, true),
    s("auth_ldap_options", "", Str, false, true),
    s(
        "auth_query",
        "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin",
        Str,
        true,
        true,
    ),
    // pgmux extension (not in PgBouncer): cache auth_query results for this many seconds; 0 = off
    s("auth_query_cache_ttl", "0", Time, true, true),
    // pgmux extension: unknown users (auth_query found no row) get a mock SCRAM exchange, not `no such user`
    s("auth_unknown_user_mock", "0", Int, true, true),
    s("auth_type", "md5", Lookup(AUTH_TYPES), true, true),
    s("auth_user", "", Str, true, true),
    s("autodb_idle_timeout", "3600", Time, true, true),
    s("cancel_wait_timeout", "10", Time, true, true),
    s("client_idle_timeout", "0", Time, true, true),
    s("client_login_timeout", "60", Time, true, true),
    s("client_tls13_ciphers", "", Str, true, true),
    s("client_tls_ca_file", "", Str, true, true),
    s("client_tls_cert_file", "", Str, true, true),
    s("client_tls_ciphers", "default", Str, true, true),
    s("client_tls_dheparams", "auto", Str, false, true),
    s("client_tls_ecdhcurve", "auto", Str, false, true),
    s("client_tls_key_file", "", Str, true, true),
    s("client_tls_protocols", "secure", Str, true, true),
    s(
        "client_tls_sslmode",
        "disable",
        Lookup(SSLMODES),
        true,
        true,
    ),
    s("conffile", "", Str, true, true),
    s("default_pool_size", "20", Int, true, true),
    s("disable_pqexec", "0", Int, true, false),
    s("dns_max_ttl", "15", Time, true, true),
    s("dns_nxdomain_ttl", "15", Time, true, true),
    s("dns_zone_check_period", "0", Time, false, true),
    s("idle_transaction_timeout", "0", Time, true, true),
    s("ignore_startup_parameters", "", Str, true, true),
    s("job_name", "pgbouncer", Str, false, false),
    s("listen_addr", "", Str, true, false),
    s("listen_backlog", "128", Int, true, false),
    s("listen_port", "6432", Int, true, false),
    s("log_connections", "1", Int, true, true),
    s("log_disconnections", "1", Int, true, true),
    s("log_pooler_errors", "1", Int, true, true),
    s("log_stats", "1", Int, true, true),
    s("logfile", "", Str, true, true),
    // pgmux extension: `json` writes one JSON object per log line (for log collectors)
    s("log_format", "text", Lookup(LOG_FORMATS), true, false),
    s("max_client_conn", "100", Int, true, true),
    s("max_db_client_connections", "0", Int, true, true),
    s("max_db_connections", "0", Int, true, true),
    s("max_packet_size", "2147483647", Int, true, true),
    s("max_prepared_statements", "200", Int, true, true),
    s("max_user_client_connections", "0", Int, true, true),
    s("max_user_connections", "0", Int, true, true),
    // pgmux extension: address of the Prometheus /metrics, /healthz and /readyz endpoint ("" = off)
    s("metrics_listen", "", Str, true, false),
    s("min_pool_size", "0", Int, true, true),
    s("peer_id", "0", Str, true, true),
    s("pidfile", "", Str, true, false),
    s("pkt_buf", "4096", Int, true, false),
    s("pool_mode", "session", Lookup(POOL_MODES), true, true),
    s("query_timeout", "0", Time, true, true),
    s("query_wait_notify", "5", Int, true, true),
    s("query_wait_timeout", "120", Time, true, true),
    s("reserve_pool_size", "0", Int, true, true),
    s("reserve_pool_timeout", "5", Time, true, true),
    s("resolv_conf", "", Str, true, false),
    s("sbuf_loopcnt", "5", Int, true, true),
    s("scram_iterations", "4096", Int, true, true),
    s("server_check_delay", "30", Time, true, true),
    s("server_check_query", "<empty>", Str, true, true),
    // pgmux extension: connects in flight per pool; 1 = PgBouncer's one at a time, 0 = no limit
    s("server_connect_concurrency", "1", Int, true, true),
    s("server_connect_timeout", "15", Time, true, true),
    s("server_fast_close", "0", Int, false, true),
    s("server_idle_timeout", "600", Time, true, true),
    s("server_lifetime", "3600", Time, true, true),
    s("server_login_retry", "15", Time, true, true),
    s("server_reset_query", "DISCARD ALL", Str, true, true),
    s("server_reset_query_always", "0", Int, false, true),
    s("server_round_robin", "0", Int, true, true),
    s("server_tls13_ciphers", "", Str, true, true),
    s("server_tls_ca_file", "", Str, true, true),
    s("server_tls_cert_file", "", Str, true, true),
    s("server_tls_ciphers", "default", Str, true, true),
    s("server_tls_key_file", "", Str, true, true),
    s("server_tls_protocols", "secure", Str, true, true),
    s("server_tls_sslmode", "prefer", Lookup(SSLMODES), true, true),
    // pgmux extension: what SIGTERM does (wait_for_servers = as SIGINT, for Kubernetes pods)
    s(
        "sigterm_shutdown",
        "wait_for_clients",
        Lookup(SHUTDOWN_MODES),
        true,
        false,
    ),
    s("service_name", "", Str, false, false),
    s("so_reuseport", "0", Int, true, false),
    s("stats_period", "60", Int, true, true),
    s("stats_users", "", Str, true, true),
    s("suspend_timeout", "10", Time, false, true),
    s("syslog", "0", Int, false, true),
    s("syslog_facility", "daemon", Str, false, true),
    s("syslog_ident", "pgbouncer", Str, false, true),
    s("tcp_defer_accept", "1", Int, false, true),
    s("tcp_keepalive", "1", Int, true, true),
    s("tcp_keepcnt", "0", Int, true, true),
    s("tcp_keepidle", "0", Int, true, true),
    s("tcp_keepintvl", "0", Int, true, true),
    s("tcp_socket_buffer", "0", Int, true, true),
    s("tcp_user_timeout", "0", Int, true, true),
    s("track_extra_parameters", "IntervalStyle", Str, true, false),
    s("transaction_timeout", "0", Time, true, true),
    s("unix_socket_dir", "/tmp", Str, true, false),
    s("unix_socket_group", "", Str, true, false),
    s("unix_socket_mode", "0777", Int, true, false),
    s("user", "", Str, true, false),
    s("verbose", "0", Int, true, true),
];

pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}
