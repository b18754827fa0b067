//! auth_hba_file: PgBouncer's subset of pg_hba.conf (local/host/hostssl/hostnossl, database and user
//! lists with `all`, `sameuser`, `@file`, addresses and CIDR masks, and the auth methods).

use super::ConfigError;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbaMethod {
    Trust,
    Reject,
    Password,
    Md5,
    ScramSha256,
    Peer,
    Cert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnType {
    Local,
    Host,
    HostSsl,
    HostNoSsl,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NameMatch {
    All,
    SameUser,
    Replication,
    Name(String),
}

#[derive(Debug, Clone)]
enum AddrMatch {
    All,
    Net(IpAddr, u8),
}

#[derive(Debug, Clone)]
struct Rule {
    conn: ConnType,
    databases: Vec<NameMatch>,
    users: Vec<NameMatch>,
    addr: Option<AddrMatch>,
    method: HbaMethod,
}

/// How a client is connected, for rule matching.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Unix,
    Tcp { addr: IpAddr, tls: bool },
}

#[derive(Debug, Clone, Default)]
pub struct Hba {
    rules: Vec<Rule>,
}

/// Split a line into tokens; double quotes keep commas/spaces and make keywords literal.
fn tokens(line: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_q = false;
    for c in line.chars() {
        match c {
            '"' => {
                in_q = !in_q;
                quoted = true;
            }
            '#' if !in_q => break,
            c if c.is_whitespace() && !in_q => {
                if !cur.is_empty() || quoted {
                    out.push((std::mem::take(&mut cur), quoted));
                    quoted = false;
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() || quoted {
        out.push((cur, quoted));
    }
    out
}

fn names(tok: &str, quoted: bool, dir: &Path, depth: usize) -> Result<Vec<NameMatch>, String> {
    let mut out = Vec::new();
    for item in tok.split(',').filter(|s| !s.is_empty()) {
        if quoted {
            out.push(NameMatch::Name(item.to_string()));
            continue;
        }
        match item {
            "all" => out.push(NameMatch::All),
            "sameuser" => out.push(NameMatch::SameUser),
            "replication" => out.push(NameMatch::Replication),
            f if f.starts_with('@') => {
                if depth > 5 {
                    return Err("too deeply nested @file".into());
                }
                let p = dir.join(&f[1..]);
                let text =
                    std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                for l in text.lines() {
                    for (t, q) in tokens(l) {
                        out.extend(names(&t, q, dir, depth + 1)?);
                    }
                }
            }
            n => out.push(NameMatch::Name(n.to_string())),
        }
    }
    Ok(out)
}

fn parse_addr(tok: &str, next: Option<&str>) -> Result<(AddrMatch, bool), String> {
    if tok == "all" {
        return Ok((AddrMatch::All, false));
    }
    if let Some((a, bits)) = tok.split_once('/') {
        let ip: IpAddr = a
            .parse()
            .map_err(|_| format!("invalid address \"{tok}\""))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("invalid mask \"{tok}\""))?;
        return Ok((AddrMatch::Net(ip, bits), false));
    }
    let ip: IpAddr = tok
        .parse()
        .map_err(|_| format!("invalid address \"{tok}\""))?;
    // "address netmask" form
    if let Some(mask) = next.and_then(|m| m.parse::<IpAddr>().ok()) {
        let bits = match mask {
            IpAddr::V4(m) => u32::from(m).count_ones() as u8,
            IpAddr::V6(m) => u128::from(m).count_ones() as u8,
        };
        return Ok((AddrMatch::Net(ip, bits), true));
    }
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    Ok((AddrMatch::Net(ip, bits), false))
}

fn in_net(addr: IpAddr, net: IpAddr, bits: u8) -> bool {
    let addr = match (addr, net) {
        (IpAddr::V6(a), IpAddr::V4(_)) => {
            a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(a))
        }
        _ => addr,
    };
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits as u32)
            };
            u32::from(a) & m == u32::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits as u32)
            };
            u128::from(a) & m == u128::from(n) & m
        }
        _ => false,
    }
}

impl Hba {
    pub fn load(path: &Path) -> Result<Hba, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            file: path.to_path_buf(),
            source: e,
        })?;
        Self::parse_str(&text, path)
    }

    pub fn parse_str(text: &str, file: &Path) -> Result<Hba, ConfigError> {
        let dir: PathBuf = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = tokens(line);
            if t.is_empty() {
                continue;
            }
            let err = |msg: String| ConfigError::Syntax {
                file: file.to_path_buf(),
                line: i + 1,
                msg,
            };
            let conn = match t[0].0.as_str() {
                "local" => ConnType::Local,
                "host" => ConnType::Host,
                "hostssl" => ConnType::HostSsl,
                "hostnossl" => ConnType::HostNoSsl,
                other => return Err(err(format!("unknown connection type \"{other}\""))),
            };
            let need = if conn == ConnType::Local { 4 } else { 5 };
            if t.len() < need {
                return Err(err("too few fields".into()));
            }
            let databases = names(&t[1].0, t[1].1, &dir, 0).map_err(err)?;
            let users = names(&t[2].0, t[2].1, &dir, 0).map_err(err)?;
            let (addr, method_idx) = if conn == ConnType::Local {
                (None, 3)
            } else {
                let (a, two) = parse_addr(&t[3].0, t.get(4).map(|x| x.0.as_str())).map_err(err)?;
                (Some(a), if two { 5 } else { 4 })
            };
            let m = t
                .get(method_idx)
                .map(|x| x.0.as_str())
                .ok_or_else(|| err("missing auth method".into()))?;
            let method = match m {
                "trust" => HbaMethod::Trust,
                "reject" => HbaMethod::Reject,
                "password" => HbaMethod::Password,
                "md5" => HbaMethod::Md5,
                "scram-sha-256" => HbaMethod::ScramSha256,
                "peer" => HbaMethod::Peer,
                "cert" => HbaMethod::Cert,
                other => return Err(err(format!("unsupported auth method \"{other}\""))),
            };
            rules.push(Rule {
                conn,
                databases,
                users,
                addr,
                method,
            });
        }
        Ok(Hba { rules })
    }

    /// The method of the first matching rule; no match rejects.
    pub fn eval(&self, peer: Peer, db: &str, user: &str) -> HbaMethod {
        for r in &self.rules {
            let conn_ok = match (r.conn, peer) {
                (ConnType::Local, Peer::Unix) => true,
                (ConnType::Host, Peer::Tcp { .. }) => true,
                (ConnType::HostSsl, Peer::Tcp { tls, .. }) => tls,
                (ConnType::HostNoSsl, Peer::Tcp { tls, .. }) => !tls,
                _ => false,
            };
            if !conn_ok {
                continue;
            }
            let db_ok = r.databases.iter().any(|d| match d {
                NameMatch::All => true,
                NameMatch::SameUser => db == user,
                NameMatch::Replication => false,
                NameMatch::Name(n) => n == db,
            });
            let user_ok = r.users.iter().any(|u| match u {
                NameMatch::All => true,
                NameMatch::Name(n) => n == user,
                _ => false,
            });
            let addr_ok = match (&r.addr, peer) {
                (None, _) | (Some(AddrMatch::All), _) => true,
                (Some(AddrMatch::Net(n, b)), Peer::Tcp { addr, .. }) => in_net(addr, *n, *b),
                _ => false,
            };
            if db_ok && user_ok && addr_ok {
                return r.method;
            }
        }
        HbaMethod::Reject
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cnpg_rules_and_matching() {
        let text = "\nlocal pgbouncer pgbouncer peer\n# comment\nhost app,other \"all\" 10.0.0.0 255.0.0.0 trust\nhostssl all all 0.0.0.0/0 scram-sha-256\nhostnossl all bob 192.168.1.5 password\nhost all all 0.0.0.0/0 md5\nhost all all ::/0 md5\n";
        let h = Hba::parse_str(text, Path::new("/x/pg_hba.conf")).unwrap();
        let tcp = |a: &str, tls| Peer::Tcp {
            addr: a.parse().unwrap(),
            tls,
        };
        assert_eq!(
            h.eval(Peer::Unix, "pgbouncer", "pgbouncer"),
            HbaMethod::Peer
        );
        assert_eq!(h.eval(Peer::Unix, "app", "x"), HbaMethod::Reject);
        // "all" quoted is a user literally named all
        assert_eq!(
            h.eval(tcp("10.1.2.3", false), "app", "all"),
            HbaMethod::Trust
        );
        assert_eq!(
            h.eval(tcp("10.1.2.3", false), "app", "alice"),
            HbaMethod::Md5
        );
        assert_eq!(
            h.eval(tcp("10.1.2.3", true), "app", "alice"),
            HbaMethod::ScramSha256
        );
        assert_eq!(
            h.eval(tcp("192.168.1.5", false), "db", "bob"),
            HbaMethod::Password
        );
        assert_eq!(
            h.eval(tcp("192.168.1.6", false), "db", "bob"),
            HbaMethod::Md5
        );
        assert_eq!(h.eval(tcp("::1", false), "db", "bob"), HbaMethod::Md5);
        assert_eq!(
            h.eval(tcp("::ffff:10.0.0.1", false), "app", "all"),
            HbaMethod::Trust
        );
        assert!(Hba::parse_str("host all all 1.2.3.4/40 trust", Path::new("x")).is_err());
        assert!(Hba::parse_str("host all all all gss", Path::new("x")).is_err());
        assert!(Hba::parse_str("hostgssenc all all all trust", Path::new("x")).is_err());
        assert!(Hba::parse_str("local all", Path::new("x")).is_err());
    }

    #[test]
    fn at_file_lists() {
        let d = std::env::temp_dir().join(format!("pgmux-hba-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("admins"), "alice\nbob, carol\n").unwrap();
        let h = Hba::parse_str(
            "host all @admins 0.0.0.0/0 trust\nhost sameuser all 0.0.0.0/0 md5\n",
            &d.join("hba.conf"),
        )
        .unwrap();
        let p = Peer::Tcp {
            addr: "1.1.1.1".parse().unwrap(),
            tls: false,
        };
        assert_eq!(h.eval(p, "x", "carol"), HbaMethod::Trust);
        assert_eq!(h.eval(p, "dave", "dave"), HbaMethod::Md5);
        assert_eq!(h.eval(p, "x", "dave"), HbaMethod::Reject);
        let _ = std::fs::remove_dir_all(&d);
    }
}
