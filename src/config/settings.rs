//! The [pgbouncer] settings as typed `General`, and the value parsers (PgBouncer's integer, time, bool and list syntax).

use super::{AuthType, PoolMode};
use std::path::PathBuf;
use std::time::Duration;

pub use super::table::{Kind, SETTINGS, Setting, find};

/// Integer as PgBouncer's strtol(base 0): decimal, 0x hex, leading-0 octal.
pub fn parse_int(v: &str) -> Result<i64, String> {
    let t = v.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let r = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(h, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        i64::from_str_radix(&t[1..], 8)
    } else {
        t.parse::<i64>()
    };
    r.map(|n| if neg { -n } else { n })
        .map_err(|_| format!("invalid integer value \"{v}\""))
}

pub fn parse_u32(v: &str) -> Result<u32, String> {
    let n = parse_int(v)?;
    u32::try_from(n).map_err(|_| format!("value \"{v}\" out of range"))
}

/// Linux's limit for a socket option (setsockopt would refuse more with EINVAL).
fn at_most(n: u32, max: u32) -> Result<u32, String> {
    if n > max {
        Err(format!("value {n} out of range (at most {max})"))
    } else {
        Ok(n)
    }
}

pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" => Ok(true),
        "0" | "no" | "off" | "false" => Ok(false),
        _ => Err(format!("invalid boolean value \"{v}\"")),
    }
}

/// Seconds, fractional allowed (PgBouncer's CF_TIME_USEC).
pub fn parse_time(v: &str) -> Result<Duration, String> {
    let f: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("invalid time value \"{v}\""))?;
    if !f.is_finite() || f < 0.0 {
        return Err(format!("invalid time value \"{v}\""));
    }
    Ok(Duration::from_secs_f64(f))
}

/// Comma list, items trimmed, empty items and duplicates dropped.
pub fn parse_list(v: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(item)) {
            out.push(item.to_string());
        }
    }
    out
}

pub fn parse_auth_type(v: &str) -> Result<AuthType, String> {
    Ok(match v.trim().to_ascii_lowercase().as_str() {
        "any" => AuthType::Any,
        "trust" => AuthType::Trust,
        "plain" => AuthType::Plain,
        "md5" => AuthType::Md5,
        "cert" => AuthType::Cert,
        "hba" => AuthType::Hba,
        "ldap" => AuthType::Ldap,
        "pam" => AuthType::Pam,
        "scram-sha-256" => AuthType::ScramSha256,
        _ => return Err(format!("invalid auth_type \"{v}\"")),
    })
}

pub fn parse_pool_mode(v: &str) -> Result<PoolMode, String> {
    Ok(match v.trim().to_ascii_lowercase().as_str() {
        "session" => PoolMode::Session,
        "transaction" => PoolMode::Transaction,
        "statement" => PoolMode::Statement,
        _ => return Err(format!("invalid pool_mode \"{v}\"")),
    })
}

fn opt_path(v: &str) -> Option<PathBuf> {
    let v = v.trim();
    if v.is_empty() {
        None
    } else {
        Some(PathBuf::from(v))
    }
}

fn opt_str(v: &str) -> Option<String> {
    let v = v.trim();
    if v.is_empty() {
        None
    } else {
        Some(v.to_string())
    }
}

/// Typed [pgbouncer] settings, each with PgBouncer 1.25's default.
#[derive(Debug, Clone)]
pub struct General {
    pub listen_addr: Vec<String>,
    pub listen_port: u16,
    pub listen_backlog: u32,
    pub unix_socket_dir: String,
    pub unix_socket_mode: u32,
    pub unix_socket_group: Option<String>,
    pub auth_type: AuthType,
    pub auth_file: Option<PathBuf>,
    pub auth_hba_file: Option<PathBuf>,
    pub auth_ident_file: Option<PathBuf>,
    pub auth_user: Option<String>,
    pub auth_query: String,
    pub auth_dbname: Option<String>,
    pub auth_query_cache_ttl: Duration,
    pub auth_unknown_user_mock: bool,
    pub pool_mode: PoolMode,
    pub max_client_conn: u32,
    pub default_pool_size: u32,
    pub min_pool_size: u32,
    pub reserve_pool_size: u32,
    pub reserve_pool_timeout: Duration,
    pub max_db_connections: u32,
    pub max_user_connections: u32,
    pub max_db_client_connections: u32,
    pub max_user_client_connections: u32,
    pub server_round_robin: bool,
    pub server_reset_query: String,
    pub server_reset_query_always: bool,
    pub server_check_query: String,
    pub server_check_delay: Duration,
    pub server_fast_close: bool,
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub server_connect_timeout: Duration,
    /// pgmux extension: connects in flight per pool (PgBouncer: 1); 0 = no limit.
    pub server_connect_concurrency: u32,
    pub server_login_retry: Duration,
    pub query_timeout: Duration,
    pub query_wait_timeout: Duration,
    pub query_wait_notify: Duration,
    pub client_idle_timeout: Duration,
    pub client_login_timeout: Duration,
    pub idle_transaction_timeout: Duration,
    pub transaction_timeout: Duration,
    pub cancel_wait_timeout: Duration,
    pub suspend_timeout: Duration,
    pub autodb_idle_timeout: Duration,
    pub ignore_startup_parameters: Vec<String>,
    pub track_extra_parameters: Vec<String>,
    pub max_packet_size: u32,
    pub pkt_buf: usize,
    pub sbuf_loopcnt: u32,
    pub max_prepared_statements: u32,
    pub application_name_add_host: bool,
    pub disable_pqexec: bool,
    pub log_connections: bool,
    pub log_disconnections: bool,
    pub log_pooler_errors: bool,
    pub log_stats: bool,
    pub stats_period: Duration,
    pub verbose: u32,
    pub logfile: Option<PathBuf>,
    pub log_json: bool,
    /// `sigterm_shutdown = wait_for_servers`: SIGTERM drains as SIGINT does.
    pub sigterm_waits_for_servers: bool,
    pub metrics_listen: Option<String>,
    pub pidfile: Option<PathBuf>,
    pub syslog: bool,
    pub admin_users: Vec<String>,
    pub stats_users: Vec<String>,
    pub user: Option<String>,
    pub so_reuseport: bool,
    pub tcp_keepalive: bool,
    pub tcp_keepcnt: u32,
    pub tcp_keepidle: u32,
    pub tcp_keepintvl: u32,
    pub tcp_user_timeout: u32,
    pub tcp_defer_accept: bool,
    pub tcp_socket_buffer: u32,
    pub dns_max_ttl: Duration,
    pub dns_nxdomain_ttl: Duration,
    /// A resolv.conf to use instead of /etc/resolv.conf (`nameserver` may carry a port: `ip:port`).
    pub resolv_conf: Option<PathBuf>,
    pub scram_iterations: u32,
    pub client_tls_sslmode: String,
    pub server_tls_sslmode: String,
    /// client_tls_* / server_tls_* files and lists, by setting name.
    pub tls: std::collections::BTreeMap<&'static str, String>,
    pub peer_id: u32,
    /// `peer_id = auto`: taken from the `[peers]` entry naming this host (resolved by Config).
    pub peer_id_auto: bool,
}

impl Default for General {
    fn default() -> Self {
        let mut g = General {
            listen_addr: vec![],
            listen_port: 0,
            listen_backlog: 0,
            unix_socket_dir: String::new(),
            unix_socket_mode: 0,
            unix_socket_group: None,
            auth_type: AuthType::Md5,
            auth_file: None,
            auth_hba_file: None,
            auth_ident_file: None,
            auth_user: None,
            auth_query: String::new(),
            auth_dbname: None,
            auth_query_cache_ttl: Duration::ZERO,
            auth_unknown_user_mock: false,
            pool_mode: PoolMode::Session,
            max_client_conn: 0,
            default_pool_size: 0,
            min_pool_size: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: Duration::ZERO,
            max_db_connections: 0,
            max_user_connections: 0,
            max_db_client_connections: 0,
            max_user_client_connections: 0,
            server_round_robin: false,
            server_reset_query: String::new(),
            server_reset_query_always: false,
            server_check_query: String::new(),
            server_check_delay: Duration::ZERO,
            server_fast_close: false,
            server_lifetime: Duration::ZERO,
            server_idle_timeout: Duration::ZERO,
            server_connect_timeout: Duration::ZERO,
            server_connect_concurrency: 1,
            server_login_retry: Duration::ZERO,
            query_timeout: Duration::ZERO,
            query_wait_timeout: Duration::ZERO,
            query_wait_notify: Duration::ZERO,
            client_idle_timeout: Duration::ZERO,
            client_login_timeout: Duration::ZERO,
            idle_transaction_timeout: Duration::ZERO,
            transaction_timeout: Duration::ZERO,
            cancel_wait_timeout: Duration::from_secs(10),
            suspend_timeout: Duration::ZERO,
            autodb_idle_timeout: Duration::from_secs(3600),
            ignore_startup_parameters: vec![],
            track_extra_parameters: vec![],
            max_packet_size: 0,
            pkt_buf: 0,
            sbuf_loopcnt: 0,
            max_prepared_statements: 0,
            application_name_add_host: false,
            disable_pqexec: false,
            log_connections: false,
            log_disconnections: false,
            log_pooler_errors: false,
            log_stats: false,
            stats_period: Duration::ZERO,
            verbose: 0,
            logfile: None,
            log_json: false,
            sigterm_waits_for_servers: false,
            metrics_listen: None,
            pidfile: None,
            syslog: false,
            admin_users: vec![],
            stats_users: vec![],
            user: None,
            so_reuseport: false,
            tcp_keepalive: true,
            tcp_keepcnt: 0,
            tcp_keepidle: 0,
            tcp_keepintvl: 0,
            tcp_user_timeout: 0,
            tcp_defer_accept: false,
            tcp_socket_buffer: 0,
            dns_max_ttl: Duration::ZERO,
            dns_nxdomain_ttl: Duration::ZERO,
            resolv_conf: None,
            scram_iterations: 0,
            client_tls_sslmode: String::new(),
            server_tls_sslmode: String::new(),
            tls: Default::default(),
            peer_id: 0,
            peer_id_auto: false,
        };
        for st in SETTINGS {
            g.apply(st.name, st.default).expect("defaults parse");
        }
        g
    }
}

impl General {
    /// Where servers and peers without a host are reached: unix_socket_dir, or /tmp when the
    /// listening socket is switched off ("").
    pub fn server_unix_dir(&self) -> &str {
        if self.unix_socket_dir.is_empty() {
            "/tmp"
        } else {
            &self.unix_socket_dir
        }
    }

    /// Set one setting from its text value.
    pub fn apply(&mut self, name: &str, v: &str) -> Result<(), String> {
        let st = find(name).ok_or_else(|| "unknown setting".to_string())?;
        if let Kind::Lookup(opts) = st.kind
            && !opts.iter().any(|o| o.eq_ignore_ascii_case(v.trim()))
        {
            return Err(format!(
                "invalid value \"{v}\", expected one of: {}",
                opts.join(", ")
            ));
        }
        match st.name {
            "listen_addr" => self.listen_addr = parse_list(v),
            "listen_port" => {
                self.listen_port =
                    u16::try_from(parse_int(v)?).map_err(|_| format!("invalid port \"{v}\""))?
            }
            "listen_backlog" => self.listen_backlog = parse_u32(v)?,
            "unix_socket_dir" => self.unix_socket_dir = v.trim().to_string(),
            "unix_socket_mode" => self.unix_socket_mode = parse_u32(v)?,
            "unix_socket_group" => self.unix_socket_group = opt_str(v),
            "auth_type" => self.auth_type = parse_auth_type(v)?,
            "auth_file" => self.auth_file = opt_path(v),
            "auth_hba_file" => self.auth_hba_file = opt_path(v),
            "auth_ident_file" => self.auth_ident_file = opt_path(v),
            "auth_user" => self.auth_user = opt_str(v),
            "auth_query" => self.auth_query = v.trim().to_string(),
            "auth_dbname" => self.auth_dbname = opt_str(v),
            "auth_query_cache_ttl" => self.auth_query_cache_ttl = parse_time(v)?,
            "auth_unknown_user_mock" => self.auth_unknown_user_mock = parse_bool(v)?,
            "pool_mode" => self.pool_mode = parse_pool_mode(v)?,
            "max_client_conn" => self.max_client_conn = parse_u32(v)?,
            "default_pool_size" => self.default_pool_size = parse_u32(v)?,
            "min_pool_size" => self.min_pool_size = parse_u32(v)?,
            "reserve_pool_size" => self.reserve_pool_size = parse_u32(v)?,
            "reserve_pool_timeout" => self.reserve_pool_timeout = parse_time(v)?,
            "max_db_connections" => self.max_db_connections = parse_u32(v)?,
            "max_user_connections" => self.max_user_connections = parse_u32(v)?,
            "max_db_client_connections" => self.max_db_client_connections = parse_u32(v)?,
            "max_user_client_connections" => self.max_user_client_connections = parse_u32(v)?,
            "server_round_robin" => self.server_round_robin = parse_bool(v)?,
            "server_reset_query" => self.server_reset_query = v.trim().to_string(),
            "server_reset_query_always" => self.server_reset_query_always = parse_bool(v)?,
            "server_check_query" => self.server_check_query = v.trim().to_string(),
            "server_check_delay" => self.server_check_delay = parse_time(v)?,
            "server_fast_close" => self.server_fast_close = parse_bool(v)?,
            "server_lifetime" => self.server_lifetime = parse_time(v)?,
            "server_idle_timeout" => self.server_idle_timeout = parse_time(v)?,
            "server_connect_timeout" => self.server_connect_timeout = parse_time(v)?,
            "server_connect_concurrency" => self.server_connect_concurrency = parse_u32(v)?,
            "server_login_retry" => self.server_login_retry = parse_time(v)?,
            "query_timeout" => self.query_timeout = parse_time(v)?,
            "query_wait_timeout" => self.query_wait_timeout = parse_time(v)?,
            "query_wait_notify" => self.query_wait_notify = parse_time(v)?,
            "client_idle_timeout" => self.client_idle_timeout = parse_time(v)?,
            "client_login_timeout" => self.client_login_timeout = parse_time(v)?,
            "idle_transaction_timeout" => self.idle_transaction_timeout = parse_time(v)?,
            "transaction_timeout" => self.transaction_timeout = parse_time(v)?,
            "cancel_wait_timeout" => self.cancel_wait_timeout = parse_time(v)?,
            "suspend_timeout" => self.suspend_timeout = parse_time(v)?,
            "autodb_idle_timeout" => self.autodb_idle_timeout = parse_time(v)?,
            "ignore_startup_parameters" => {
                self.ignore_startup_parameters = parse_list(v)
                    .into_iter()
                    .map(|s| s.to_ascii_lowercase())
                    .collect()
            }
            "track_extra_parameters" => self.track_extra_parameters = parse_list(v),
            "max_packet_size" => self.max_packet_size = parse_u32(v)?,
            "pkt_buf" => self.pkt_buf = parse_u32(v)? as usize,
            "sbuf_loopcnt" => self.sbuf_loopcnt = parse_u32(v)?,
            "max_prepared_statements" => self.max_prepared_statements = parse_u32(v)?,
            "application_name_add_host" => self.application_name_add_host = parse_bool(v)?,
            "disable_pqexec" => self.disable_pqexec = parse_bool(v)?,
            "log_connections" => self.log_connections = parse_bool(v)?,
            "log_disconnections" => self.log_disconnections = parse_bool(v)?,
            "log_pooler_errors" => self.log_pooler_errors = parse_bool(v)?,
            "log_stats" => self.log_stats = parse_bool(v)?,
            "stats_period" => self.stats_period = Duration::from_secs(parse_u32(v)? as u64),
            "verbose" => self.verbose = parse_u32(v)?,
            "logfile" => self.logfile = opt_path(v),
            "log_format" => self.log_json = v.trim().eq_ignore_ascii_case("json"),
            "sigterm_shutdown" => {
                self.sigterm_waits_for_servers = v.trim().eq_ignore_ascii_case("wait_for_servers")
            }
            "metrics_listen" => self.metrics_listen = opt_str(v),
            "pidfile" => self.pidfile = opt_path(v),
            "syslog" => self.syslog = parse_bool(v)?,
            "admin_users" => self.admin_users = parse_list(v),
            "stats_users" => self.stats_users = parse_list(v),
            "user" => self.user = opt_str(v),
            "so_reuseport" => self.so_reuseport = parse_bool(v)?,
            "tcp_keepalive" => self.tcp_keepalive = parse_bool(v)?,
            "tcp_keepcnt" => self.tcp_keepcnt = at_most(parse_u32(v)?, 127)?,
            "tcp_keepidle" => self.tcp_keepidle = at_most(parse_u32(v)?, 32767)?,
            "tcp_keepintvl" => self.tcp_keepintvl = at_most(parse_u32(v)?, 32767)?,
            "tcp_user_timeout" => self.tcp_user_timeout = at_most(parse_u32(v)?, i32::MAX as u32)?,
            "tcp_defer_accept" => self.tcp_defer_accept = parse_u32(v)? > 0,
            "tcp_socket_buffer" => {
                self.tcp_socket_buffer = at_most(parse_u32(v)?, i32::MAX as u32 / 2)?
            }
            "dns_max_ttl" => self.dns_max_ttl = parse_time(v)?,
            "dns_nxdomain_ttl" => self.dns_nxdomain_ttl = parse_time(v)?,
            "resolv_conf" => self.resolv_conf = opt_path(v),
            "scram_iterations" => self.scram_iterations = parse_u32(v)?.max(1),
            "client_tls_sslmode" => self.client_tls_sslmode = v.trim().to_ascii_lowercase(),
            "server_tls_sslmode" => self.server_tls_sslmode = v.trim().to_ascii_lowercase(),
            n if n.contains("_tls") => {
                self.tls.insert(st.name, v.trim().to_string());
            }
            "peer_id" => {
                if v.trim().eq_ignore_ascii_case("auto") {
                    self.peer_id_auto = true;
                    self.peer_id = 0;
                } else {
                    let n = parse_u32(v)?;
                    if n > super::peers::MAX_PEER_ID {
                        return Err(format!("peer_id {n} out of range (0..16383)"));
                    }
                    self.peer_id_auto = false;
                    self.peer_id = n;
                }
            }
            // accepted, validated by kind, not stored in a typed field
            _ => match st.kind {
                Kind::Int => {
                    parse_int(v)?;
                }
                Kind::Time => {
                    parse_time(v)?;
                }
                _ => {}
            },
        }
        Ok(())
    }
}
