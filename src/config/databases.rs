//! [databases] connection strings and [users] entries, as PgBouncer's loader parses them.

use super::PoolMode;
use super::settings::{parse_pool_mode, parse_time, parse_u32};
use std::time::Duration;

/// One `[databases]` entry: `name = key=value ...`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatabaseConfig {
    pub name: String,
    /// None → the client's database name.
    pub dbname: Option<String>,
    /// Empty → the unix socket in unix_socket_dir; a value starting with '/' is a socket dir.
    pub hosts: Vec<String>,
    pub port: u16,
    /// Forced user.
    pub user: Option<String>,
    pub password: Option<String>,
    pub auth_user: Option<String>,
    pub auth_query: Option<String>,
    pub auth_dbname: Option<String>,
    pub pool_size: Option<u32>,
    pub min_pool_size: Option<u32>,
    pub reserve_pool_size: Option<u32>,
    pub max_db_connections: Option<u32>,
    pub max_db_client_connections: Option<u32>,
    pub server_lifetime: Option<Duration>,
    pub query_wait_timeout: Option<Duration>,
    pub pool_mode: Option<PoolMode>,
    pub connect_query: Option<String>,
    pub client_encoding: Option<String>,
    pub datestyle: Option<String>,
    pub timezone: Option<String>,
    pub application_name: Option<String>,
    pub load_balance_hosts: Option<String>,
}

/// One `[users]` entry: `name = key=value ...`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserConfig {
    pub name: String,
    pub pool_mode: Option<PoolMode>,
    pub pool_size: Option<u32>,
    pub reserve_pool_size: Option<u32>,
    pub max_user_connections: Option<u32>,
    pub max_user_client_connections: Option<u32>,
    pub query_timeout: Option<Duration>,
    pub query_wait_timeout: Option<Duration>,
    pub idle_transaction_timeout: Option<Duration>,
    pub transaction_timeout: Option<Duration>,
    pub client_idle_timeout: Option<Duration>,
}

/// Split a libpq-style `key=value key='quoted value'` string. `''` inside quotes is a quote;
/// a backslash is kept as is (PgBouncer's loader does the same).
pub fn split_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s[ks..i].to_ascii_lowercase();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            return Err(format!(
                "syntax error in connection string near \"{}\"",
                &s[ks..]
            ));
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut val = String::new();
        if i < b.len() && b[i] == b'\'' {
            i += 1;
            loop {
                if i >= b.len() {
                    return Err(format!("unterminated quoted value for \"{key}\""));
                }
                if b[i] == b'\'' {
                    if i + 1 < b.len() && b[i + 1] == b'\'' {
                        val.push('\'');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                // as in PgBouncer, a backslash is an ordinary character; only '' escapes a quote
                let ch = s[i..].chars().next().unwrap();
                val.push(ch);
                i += ch.len_utf8();
            }
        } else {
            let vs = i;
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            val.push_str(&s[vs..i]);
        }
        out.push((key, val));
    }
    Ok(out)
}

fn opt(v: &str) -> Option<String> {
    if v.is_empty() {
        None
    } else {
        Some(v.to_string())
    }
}

/// Parse a [databases] value. Errors use PgBouncer's wording where it has one.
pub fn parse_database(name: &str, value: &str) -> Result<DatabaseConfig, (String, String)> {
    let mut d = DatabaseConfig {
        name: name.to_string(),
        port: 5432,
        ..Default::default()
    };
    let pairs = split_pairs(value).map_err(|e| (name.to_string(), e))?;
    for (k, v) in pairs {
        let err = |m: String| (k.clone(), m);
        match k.as_str() {
            "dbname" => d.dbname = opt(&v),
            "host" => {
                d.hosts = v
                    .split(',')
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .collect()
            }
            "port" => {
                d.port = v
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| err(format!("invalid port \"{v}\"")))?
            }
            "user" => d.user = opt(&v),
            "password" => d.password = Some(v),
            "auth_user" => d.auth_user = opt(&v),
            "auth_query" => d.auth_query = opt(&v),
            "auth_dbname" => d.auth_dbname = opt(&v),
            "pool_size" => d.pool_size = Some(parse_u32(&v).map_err(err)?),
            "min_pool_size" => d.min_pool_size = Some(parse_u32(&v).map_err(err)?),
            "reserve_pool" | "reserve_pool_size" => {
                d.reserve_pool_size = Some(parse_u32(&v).map_err(err)?)
            }
            "max_db_connections" => d.max_db_connections = Some(parse_u32(&v).map_err(err)?),
            "max_db_client_connections" => {
                d.max_db_client_connections = Some(parse_u32(&v).map_err(err)?)
            }
            "server_lifetime" => d.server_lifetime = Some(parse_time(&v).map_err(err)?),
            "query_wait_timeout" => d.query_wait_timeout = Some(parse_time(&v).map_err(err)?),
            "pool_mode" => d.pool_mode = Some(parse_pool_mode(&v).map_err(err)?),
            "connect_query" => d.connect_query = opt(&v),
            "client_encoding" => d.client_encoding = opt(&v),
            "datestyle" => d.datestyle = opt(&v),
            "timezone" => d.timezone = opt(&v),
            "application_name" => d.application_name = opt(&v),
            "load_balance_hosts" => match v.as_str() {
                "disable" | "round-robin" => d.load_balance_hosts = Some(v),
                _ => return Err(err(format!("invalid load_balance_hosts \"{v}\""))),
            },
            _ => return Err((k.clone(), format!("unrecognized connection parameter: {k}"))),
        }
    }
    Ok(d)
}

/// Parse a [users] value.
pub fn parse_user(name: &str, value: &str) -> Result<UserConfig, (String, String)> {
    let mut u = UserConfig {
        name: name.to_string(),
        ..Default::default()
    };
    let pairs = split_pairs(value).map_err(|e| (name.to_string(), e))?;
    for (k, v) in pairs {
        let err = |m: String| (k.clone(), m);
        match k.as_str() {
            "pool_mode" => u.pool_mode = Some(parse_pool_mode(&v).map_err(err)?),
            "pool_size" => u.pool_size = Some(parse_u32(&v).map_err(err)?),
            "reserve_pool" | "reserve_pool_size" => {
                u.reserve_pool_size = Some(parse_u32(&v).map_err(err)?)
            }
            "max_user_connections" => u.max_user_connections = Some(parse_u32(&v).map_err(err)?),
            "max_user_client_connections" => {
                u.max_user_client_connections = Some(parse_u32(&v).map_err(err)?)
            }
            "query_timeout" => u.query_timeout = Some(parse_time(&v).map_err(err)?),
            "query_wait_timeout" => u.query_wait_timeout = Some(parse_time(&v).map_err(err)?),
            "idle_transaction_timeout" => {
                u.idle_transaction_timeout = Some(parse_time(&v).map_err(err)?)
            }
            "transaction_timeout" => u.transaction_timeout = Some(parse_time(&v).map_err(err)?),
            "client_idle_timeout" => u.client_idle_timeout = Some(parse_time(&v).map_err(err)?),
            _ => return Err((k.clone(), format!("unrecognized user parameter: {k}"))),
        }
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connstrings() {
        let d = parse_database(
            "app",
            "host=a,b port=6543 dbname='my db' user=u password='it''s' pool_size=7 reserve_pool=2 pool_mode=session auth_query='SELECT x FROM f($1)'",
        )
        .unwrap();
        assert_eq!(d.hosts, vec!["a", "b"]);
        assert_eq!(d.port, 6543);
        assert_eq!(d.dbname.as_deref(), Some("my db"));
        assert_eq!(d.password.as_deref(), Some("it's"));
        assert_eq!(d.pool_size, Some(7));
        assert_eq!(d.reserve_pool_size, Some(2));
        assert_eq!(d.pool_mode, Some(PoolMode::Session));
        assert_eq!(d.auth_query.as_deref(), Some("SELECT x FROM f($1)"));
        let star = parse_database("*", "host=shared-postgres-rw").unwrap();
        assert_eq!((star.port, star.dbname.clone()), (5432, None));
        let e = parse_database("x", "host=a bogus=1").unwrap_err();
        assert_eq!(e.1, "unrecognized connection parameter: bogus");
        assert!(parse_database("x", "port=abc").is_err());
        assert!(parse_database("x", "dbname='open").is_err());
        assert!(parse_database("x", "host").is_err());
        let b = parse_database("x", r"password='a\b'").unwrap();
        assert_eq!(b.password.as_deref(), Some(r"a\b"));
        let u = parse_user(
            "bob",
            "pool_mode=transaction max_user_connections=3 query_timeout=2.5",
        )
        .unwrap();
        assert_eq!(u.max_user_connections, Some(3));
        assert_eq!(u.query_timeout, Some(Duration::from_millis(2500)));
        assert!(parse_user("bob", "nope=1").is_err());
    }
}
