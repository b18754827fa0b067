//! Configuration in PgBouncer's format: pgbouncer.ini (sections, settings, databases, users) and userlist.txt.

pub mod databases;
pub mod hba;
pub mod ini;
pub mod peers;
pub mod settings;
pub mod table;
pub mod userlist;

pub use databases::{DatabaseConfig, UserConfig};
pub use settings::General;
pub use userlist::UserList;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}:{line}: {key}: {msg}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        key: String,
        msg: String,
    },
    #[error("{}:{line}: {msg}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    Any,
    Trust,
    Plain,
    Md5,
    Cert,
    Hba,
    Ldap,
    Pam,
    ScramSha256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    Session,
    Transaction,
    Statement,
}

/// Settings validated but not kept in a typed field: their raw text is all there is to compare.
fn has_untyped(name: &str) -> bool {
    let mut a = General::default();
    let before = format!("{a:?}");
    let st = settings::find(name).expect("known");
    let probe = match st.kind {
        settings::Kind::Int => "12345",
        settings::Kind::Time => "12345",
        _ => "pgmux-probe",
    };
    let _ = a.apply(name, probe);
    before == format!("{a:?}")
}

/// A loaded pgbouncer.ini.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub general: General,
    pub databases: BTreeMap<String, DatabaseConfig>,
    pub users: BTreeMap<String, UserConfig>,
    /// `[peers]`, by peer id.
    pub peers: BTreeMap<u32, peers::PeerConfig>,
    /// One line per accepted-but-not-implemented setting the file gives a non-default value.
    pub warnings: Vec<String>,
    /// The [pgbouncer] values as written (last one wins), for SHOW CONFIG and describe().
    pub raw: BTreeMap<String, String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let entries = ini::read_file(path)?;
        Self::from_entries(entries, path)
    }

    pub fn parse_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let entries = ini::parse_str(text, file)?;
        Self::from_entries(entries, file)
    }

    fn from_entries(entries: Vec<ini::Entry>, file: &Path) -> Result<Config, ConfigError> {
        let mut general = General::default();
        let mut databases = BTreeMap::new();
        let mut users = BTreeMap::new();
        let mut raw: BTreeMap<String, String> = BTreeMap::new();
        let mut set_at: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut peer_map: BTreeMap<u32, peers::PeerConfig> = BTreeMap::new();
        for e in &entries {
            let invalid = |key: &str, msg: String| ConfigError::Invalid {
                file: e.file.clone(),
                line: e.line,
                key: key.to_string(),
                msg,
            };
            match e.section.as_str() {
                "pgbouncer" => {
                    let Some(st) = settings::find(&e.key) else {
                        return Err(invalid(&e.key, "unknown setting".into()));
                    };
                    general
                        .apply(st.name, &e.value)
                        .map_err(|m| invalid(st.name, m))?;
                    raw.insert(st.name.to_string(), e.value.clone());
                    set_at.insert(st.name, e.line);
                }
                "databases" => {
                    if e.key.eq_ignore_ascii_case("pgbouncer") {
                        return Err(invalid(
                            &e.key,
                            "the database name \"pgbouncer\" is reserved for the admin console"
                                .into(),
                        ));
                    }
                    let d = databases::parse_database(&e.key, &e.value)
                        .map_err(|(k, m)| invalid(&k, m))?;
                    databases.insert(e.key.clone(), d);
                }
                "users" => {
                    let u =
                        databases::parse_user(&e.key, &e.value).map_err(|(k, m)| invalid(&k, m))?;
                    users.insert(e.key.clone(), u);
                }
                "peers" => {
                    let p = peers::parse_peer(&e.key, &e.value).map_err(|(k, m)| invalid(&k, m))?;
                    peer_map.insert(p.id, p);
                }
                other => {
                    return Err(ConfigError::Syntax {
                        file: e.file.clone(),
                        line: e.line,
                        msg: format!("unknown section [{other}]"),
                    });
                }
            }
        }
        if general.peer_id_auto {
            let me = peers::hostname();
            general.peer_id = peers::auto_peer_id(&me, peer_map.values()).ok_or_else(|| {
                ConfigError::Invalid {
                    file: file.to_path_buf(),
                    line: set_at.get("peer_id").copied().unwrap_or(0),
                    key: "peer_id".into(),
                    msg: format!("auto: no [peers] entry has host {me:?} or {me:?}.<domain>"),
                }
            })?;
        }
        let mut warnings = Vec::new();
        for name in set_at.keys() {
            let st = settings::find(name).expect("known");
            if st.implemented {
                continue;
            }
            // a value equal to the default changes nothing: no warning
            let mut def = General::default();
            let mut mine = General::default();
            let _ = def.apply(name, st.default);
            let _ = mine.apply(name, &raw[*name]);
            if raw[*name].trim() == st.default
                || (format!("{def:?}") == format!("{mine:?}") && !has_untyped(name))
            {
                continue;
            }
            warnings.push(format!(
                "setting \"{name}\" is accepted but not implemented by pgmux yet; ignored"
            ));
        }
        Ok(Config {
            file: file.to_path_buf(),
            general,
            databases,
            users,
            peers: peer_map,
            warnings,
            raw,
        })
    }

    /// The exact [databases] entry, else the `*` fallback.
    pub fn database(&self, name: &str) -> Option<&DatabaseConfig> {
        self.databases.get(name).or_else(|| self.databases.get("*"))
    }

    /// Rows for SHOW CONFIG: key, value, default, changeable.
    pub fn show_config_rows(&self) -> Vec<(String, String, String, bool)> {
        settings::SETTINGS
            .iter()
            .map(|st| {
                let v = self
                    .raw
                    .get(st.name)
                    .cloned()
                    .unwrap_or_else(|| st.default.to_string());
                (
                    st.name.to_string(),
                    v,
                    st.default.to_string(),
                    st.changeable,
                )
            })
            .collect()
    }

    /// What was understood, for `pgmux check`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "config file: {}", self.file.display());
        let _ = writeln!(s, "[pgbouncer]");
        for (k, v, def, _) in self.show_config_rows() {
            let st = settings::find(&k).expect("known");
            let mark = if !self.raw.contains_key(&k) {
                "default"
            } else if st.implemented {
                "set"
            } else {
                "set, not implemented"
            };
            let _ = def;
            let _ = writeln!(s, "  {k} = {v}  ({mark})");
        }
        let _ = writeln!(s, "[databases]");
        for d in self.databases.values() {
            let _ = writeln!(
                s,
                "  {} -> host={} port={} dbname={} user={} pool_size={} pool_mode={}",
                d.name,
                if d.hosts.is_empty() {
                    format!("unix:{}", self.general.unix_socket_dir)
                } else {
                    d.hosts.join(",")
                },
                d.port,
                d.dbname.as_deref().unwrap_or("(client's)"),
                d.user.as_deref().unwrap_or("(client's)"),
                d.pool_size
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| format!("{} (default)", self.general.default_pool_size)),
                format!("{:?}", d.pool_mode.unwrap_or(self.general.pool_mode)).to_lowercase(),
            );
        }
        if !self.peers.is_empty() {
            let _ = writeln!(
                s,
                "[peers] (this instance: peer_id {})",
                self.general.peer_id
            );
            for p in self.peers.values() {
                let _ = writeln!(
                    s,
                    "  {} -> host={} port={} pool_size={}",
                    p.id,
                    p.host.as_deref().unwrap_or("(unix_socket_dir)"),
                    p.port,
                    p.pool_size
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| format!("{} (default)", self.general.default_pool_size)),
                );
            }
        }
        if !self.users.is_empty() {
            let _ = writeln!(s, "[users]");
            for u in self.users.values() {
                let _ = writeln!(s, "  {}: {:?}", u.name, u);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const CNPG: &str = "\n[databases]\n* = host=shared-postgres-rw\n\n[pgbouncer]\npool_mode = transaction\nauth_user = pooler\nauth_query = SELECT usename, passwd FROM user_search($1)\nauth_dbname = postgres\n\nadmin_users = pgbouncer\nauth_file = /controller/configs/userlist.txt\nauth_hba_file = /controller/configs/pg_hba.conf\nauth_type = hba\nclient_idle_timeout = 0\nclient_tls_sslmode = prefer\ndefault_pool_size = 50\nidle_transaction_timeout = 600\nignore_startup_parameters = extra_float_digits,options,extra_float_digits,options\nlisten_addr = *\nlisten_port = 5432\nlog_stats = 0\nmax_client_conn = 1000\nmax_db_connections = 50\nserver_tls_sslmode = verify-ca\nunix_socket_dir = /controller/run\n";

    #[test]
    fn parses_what_cnpg_renders() {
        let c = Config::parse_str(CNPG, Path::new("/controller/configs/pgbouncer.ini")).unwrap();
        let g = &c.general;
        assert_eq!(g.pool_mode, PoolMode::Transaction);
        assert_eq!(g.max_client_conn, 1000);
        assert_eq!(g.default_pool_size, 50);
        assert_eq!(
            g.ignore_startup_parameters,
            vec!["extra_float_digits", "options"]
        );
        assert_eq!(g.listen_addr, vec!["*"]);
        assert_eq!(g.listen_port, 5432);
        assert_eq!(g.auth_type, AuthType::Hba);
        assert_eq!(g.idle_transaction_timeout, Duration::from_secs(600));
        assert_eq!(g.query_wait_timeout, Duration::from_secs(120));
        assert_eq!(g.track_extra_parameters, vec!["IntervalStyle"]);
        assert_eq!(
            c.database("anything").unwrap().hosts,
            vec!["shared-postgres-rw"]
        );
        // client_idle_timeout = 0 equals the default: no warning; the others warn once each
        assert!(!c.warnings.iter().any(|w| w.contains("client_idle_timeout")));
        assert!(!c.warnings.iter().any(|w| w.contains("\"log_stats\"")));
        // TLS settings are implemented now: no warning for them either
        assert!(!c.warnings.iter().any(|w| w.contains("tls")));
        assert_eq!(c.general.server_tls_sslmode, "verify-ca");
        assert!(c.describe().contains("max_client_conn = 1000"));
    }

    #[test]
    fn defaults_are_pgbouncers() {
        let c = Config::parse_str("[pgbouncer]\n", Path::new("x.ini")).unwrap();
        let g = &c.general;
        assert_eq!(
            (g.listen_port, g.max_client_conn, g.default_pool_size),
            (6432, 100, 20)
        );
        assert_eq!(g.unix_socket_dir, "/tmp");
        assert_eq!(g.unix_socket_mode, 0o777);
        assert_eq!(g.server_lifetime, Duration::from_secs(3600));
        assert_eq!(g.server_reset_query, "DISCARD ALL");
        assert_eq!(g.max_packet_size, 2147483647);
        assert_eq!(g.pool_mode, PoolMode::Session);
        assert_eq!(g.auth_type, AuthType::Md5);
        assert!(g.log_connections && g.log_disconnections && g.log_pooler_errors);
        assert!(c.warnings.is_empty());
        assert_eq!(c.show_config_rows().len(), settings::SETTINGS.len());
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = Config::parse_str(
            "[pgbouncer]\n\nmax_client_conn = lots\n",
            Path::new("/etc/p.ini"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/p.ini:3: max_client_conn: invalid integer value \"lots\""
        );
        let e = Config::parse_str("[pgbouncer]\nbogus_key = 1\n", Path::new("p.ini")).unwrap_err();
        assert_eq!(e.to_string(), "p.ini:2: bogus_key: unknown setting");
        let e = Config::parse_str("[pgbouncer]\npool_mode = sometimes\n", Path::new("p.ini"))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("p.ini:2: pool_mode: invalid value"),
            "{e}"
        );
        let e = Config::parse_str("[databases]\ndb = host=x colour=blue\n", Path::new("p.ini"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.ini:2: colour: unrecognized connection parameter: colour"
        );
        let e =
            Config::parse_str("[databases]\npgbouncer = host=x\n", Path::new("p.ini")).unwrap_err();
        assert!(e.to_string().contains("reserved"));
        let e =
            Config::parse_str("[pgbouncer]\nquery_timeout = -1\n", Path::new("p.ini")).unwrap_err();
        assert!(e.to_string().contains("query_timeout"));
        let e = Config::parse_str("[pgbouncer]\nlisten_port = 70000\n", Path::new("p.ini"))
            .unwrap_err();
        assert!(e.to_string().contains("listen_port"));
    }

    #[test]
    fn last_value_wins_and_octal_hex() {
        let c = Config::parse_str(
            "[pgbouncer]\nlisten_port = 1\nlisten_port = 2\nunix_socket_mode = 0700\nmax_client_conn = 0x10\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.general.listen_port, 2);
        assert_eq!(c.general.unix_socket_mode, 0o700);
        assert_eq!(c.general.max_client_conn, 16);
    }

    #[test]
    fn tcp_and_dns_settings_are_honoured_and_range_checked() {
        let c = Config::parse_str("[pgbouncer]\n", Path::new("x.ini")).unwrap();
        // PgBouncer's default: keepalive on, the kernel's timings
        assert!(c.general.tcp_keepalive);
        assert_eq!(c.general.tcp_keepidle, 0);
        let c = Config::parse_str(
            "[pgbouncer]\ntcp_keepalive = 0\ntcp_keepidle = 30\ntcp_keepintvl = 5\ntcp_keepcnt = 4\n\
             tcp_user_timeout = 9000\ntcp_socket_buffer = 65536\ndns_max_ttl = 30\n\
             dns_nxdomain_ttl = 5\nresolv_conf = /etc/resolv.conf\n",
            Path::new("x.ini"),
        )
        .unwrap();
        let g = &c.general;
        assert!(!g.tcp_keepalive);
        assert_eq!((g.tcp_keepidle, g.tcp_keepintvl, g.tcp_keepcnt), (30, 5, 4));
        assert_eq!((g.tcp_user_timeout, g.tcp_socket_buffer), (9000, 65536));
        // implemented: no "not implemented" warning
        let warned = |k: &str| c.warnings.iter().any(|w| w.contains(&format!("\"{k}\"")));
        for k in [
            "tcp_keepalive",
            "tcp_keepidle",
            "tcp_keepintvl",
            "tcp_keepcnt",
            "tcp_user_timeout",
            "tcp_socket_buffer",
            "dns_max_ttl",
            "dns_nxdomain_ttl",
            "resolv_conf",
        ] {
            assert!(!warned(k), "{k} warned: {:?}", c.warnings);
        }
        // beyond what Linux takes: an error naming file, line and key
        let e = Config::parse_str("[pgbouncer]\n\ntcp_keepcnt = 128\n", Path::new("x.ini"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.ini") && e.contains('3') && e.contains("tcp_keepcnt"),
            "{e}"
        );
        assert!(e.contains("at most 127"), "{e}");
        assert!(Config::parse_str("[pgbouncer]\ntcp_keepidle = 40000\n", Path::new("x")).is_err());
    }

    #[test]
    fn shipped_configs_parse() {
        let root = env!("CARGO_MANIFEST_DIR");
        let c = Config::load(&Path::new(root).join("config/synergyflow-pooler.ini")).unwrap();
        let g = &c.general;
        assert_eq!(g.max_client_conn, 1000);
        assert_eq!(g.default_pool_size, 50);
        assert_eq!(g.min_pool_size, 10);
        assert_eq!(g.reserve_pool_size, 10);
        assert_eq!(g.max_db_connections, 50);
        assert_eq!(g.max_user_connections, 50);
        assert_eq!(g.query_timeout, Duration::from_secs(300));
        assert_eq!(g.server_connect_timeout, Duration::from_secs(15));
        assert_eq!(g.auth_query, "SELECT usename, passwd FROM user_search($1)");
        let u = UserList::load(&Path::new(root).join("config/userlist.txt.example")).unwrap();
        assert!(u.len() >= 3);
    }
}
