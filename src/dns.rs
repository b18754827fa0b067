//! Host name resolution for server connections: a pure-Rust DNS resolver (hickory) behind PgBouncer's `dns_max_ttl` / `dns_nxdomain_ttl` cache, so names resolve without glibc's NSS (static binary, `FROM scratch` image).

use dashmap::DashMap;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Host names kept at most (names come from the configuration, so this is never reached in practice).
const MAX_NAMES: usize = 4096;

struct Entry {
    /// Empty for a cached failure (NXDOMAIN or no answer).
    addrs: Arc<[IpAddr]>,
    expires: Instant,
    /// Round-robin position over `addrs`, as PgBouncer rotates several answers.
    next: Arc<AtomicUsize>,
}

/// A cached name as SHOW DNS_HOSTS lists it.
pub struct HostRow {
    pub hostname: String,
    pub ttl_secs: u64,
    pub addrs: String,
}

/// The resolver and its cache; one per process, in `Shared`.
pub struct Dns {
    /// None when no resolv.conf could be read: then the C library (getaddrinfo) resolves.
    resolver: RwLock<Option<Arc<TokioResolver>>>,
    /// (dns_max_ttl, dns_nxdomain_ttl) the resolver was built with.
    ttls: Mutex<(Duration, Duration)>,
    resolv_conf: PathBuf,
    cache: DashMap<String, Entry>,
    in_flight: AtomicUsize,
}

struct InFlight<'a>(&'a AtomicUsize);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Dns {
    pub fn new(g: &crate::config::General) -> Dns {
        let resolv_conf = g
            .resolv_conf
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/resolv.conf"));
        let ttls = (g.dns_max_ttl, g.dns_nxdomain_ttl);
        Dns {
            resolver: RwLock::new(build(&resolv_conf, ttls)),
            ttls: Mutex::new(ttls),
            resolv_conf,
            cache: DashMap::new(),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// RELOAD: new TTLs rebuild the resolver and empty the cache (resolv_conf needs a restart, as in PgBouncer).
    pub fn reconfigure(&self, g: &crate::config::General) {
        let ttls = (g.dns_max_ttl, g.dns_nxdomain_ttl);
        let mut cur = self.ttls.lock().unwrap();
        if *cur != ttls {
            *cur = ttls;
            *self.resolver.write().unwrap() = build(&self.resolv_conf, ttls);
            self.cache.clear();
        }
    }

    /// Every address of `host` (an IP literal as is, a name from the cache or a fresh lookup),
    /// starting with the next one in turn; callers try them in order, as libpq does
    /// (`localhost` may answer ::1 where only 127.0.0.1 listens).
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let now = Instant::now();
        let cached = self
            .cache
            .get(host)
            .and_then(|e| (e.expires > now).then(|| (e.addrs.clone(), e.next.clone())));
        let (addrs, next) = match cached {
            Some(c) => c,
            None => self.lookup(host, port, now).await?,
        };
        if addrs.is_empty() {
            return Err(not_found(host, "cached negative answer"));
        }
        let start = next.fetch_add(1, Relaxed) % addrs.len();
        Ok((0..addrs.len())
            .map(|k| SocketAddr::new(addrs[(start + k) % addrs.len()], port))
            .collect())
    }

    /// Every address of `host` (for binding listen_addr), without caching.
    pub async fn resolve_all(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let (ips, _) = self.query(host, port).await?;
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    async fn query(&self, host: &str, port: u16) -> io::Result<(Vec<IpAddr>, Option<Instant>)> {
        self.in_flight.fetch_add(1, Relaxed);
        let _guard = InFlight(&self.in_flight);
        let resolver = self.resolver.read().unwrap().clone();
        match resolver {
            Some(r) => {
                let answer = r
                    .lookup_ip(host)
                    .await
                    .map_err(|e| not_found(host, &e.to_string()))?;
                let ips: Vec<IpAddr> = answer.iter().collect();
                if ips.is_empty() {
                    return Err(not_found(host, "no address"));
                }
                Ok((ips, Some(answer.valid_until())))
            }
            None => {
                let ips: Vec<IpAddr> = tokio::net::lookup_host((host, port))
                    .await
                    .map_err(|e| not_found(host, &e.to_string()))?
                    .map(|a| a.ip())
                    .collect();
                Ok((ips, None))
            }
        }
    }

    async fn lookup(
        &self,
        host: &str,
        port: u16,
        now: Instant,
    ) -> io::Result<(Arc<[IpAddr]>, Arc<AtomicUsize>)> {
        let (max_ttl, nx_ttl) = *self.ttls.lock().unwrap();
        let result = self.query(host, port).await;
        let (addrs, expires): (Arc<[IpAddr]>, Instant) = match &result {
            Ok((ips, valid_until)) => {
                let cap = now + max_ttl;
                let exp = valid_until.map_or(cap, |v| v.min(cap));
                (ips.clone().into(), exp)
            }
            Err(_) => (Arc::from(Vec::new()), now + nx_ttl),
        };
        let next = Arc::new(AtomicUsize::new(0));
        if expires > now {
            if self.cache.len() >= MAX_NAMES {
                self.cache.retain(|_, e| e.expires > now);
            }
            if self.cache.len() < MAX_NAMES || self.cache.contains_key(host) {
                self.cache.insert(
                    host.to_string(),
                    Entry {
                        addrs: addrs.clone(),
                        expires,
                        next: next.clone(),
                    },
                );
            }
        }
        match result {
            Ok(_) => Ok((addrs, next)),
            Err(e) => {
                tracing::warn!("DNS lookup failed: {e}");
                Err(e)
            }
        }
    }

    /// SHOW DNS_HOSTS rows, by host name.
    pub fn hosts(&self) -> Vec<HostRow> {
        let now = Instant::now();
        let mut rows: Vec<HostRow> = self
            .cache
            .iter()
            .map(|e| HostRow {
                hostname: e.key().clone(),
                ttl_secs: e.expires.saturating_duration_since(now).as_secs(),
                addrs: e
                    .addrs
                    .iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            })
            .collect();
        rows.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        rows
    }

    /// Cached names (SHOW LISTS dns_names).
    pub fn names(&self) -> usize {
        self.cache.len()
    }

    /// Lookups running now (SHOW LISTS dns_queries).
    pub fn queries(&self) -> usize {
        self.in_flight.load(Relaxed)
    }
}

fn not_found(host: &str, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{host}: {why}"))
}

/// A hickory resolver from `path`, or None (with a warning) when it cannot be read.
fn build(path: &Path, (max_ttl, nx_ttl): (Duration, Duration)) -> Option<Arc<TokioResolver>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(
                "cannot read {}: {e}; host names are resolved by the C library",
                path.display()
            );
            return None;
        }
    };
    let (config, mut opts) = match parse_resolv_conf(&text) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(
                "{}: {e}; host names are resolved by the C library",
                path.display()
            );
            return None;
        }
    };
    opts.positive_max_ttl = Some(max_ttl);
    opts.negative_max_ttl = Some(nx_ttl);
    opts.cache_size = 256;
    let r = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build();
    match r {
        Ok(r) => Some(Arc::new(r)),
        Err(e) => {
            tracing::warn!("DNS resolver: {e}; host names are resolved by the C library");
            None
        }
    }
}

/// resolv.conf as glibc reads it, plus `nameserver ip:port` / `nameserver [v6]:port` (as c-ares
/// accepts), which the test suite and local setups use to reach a resolver on another port.
pub fn parse_resolv_conf(text: &str) -> Result<(ResolverConfig, ResolverOpts), String> {
    let mut ports: Vec<(IpAddr, u16)> = Vec::new();
    let mut plain = String::with_capacity(text.len());
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver")
            && let Some(Ok(sa)) = words.next().map(str::parse::<SocketAddr>)
        {
            ports.push((sa.ip(), sa.port()));
            plain.push_str(&format!("nameserver {}\n", sa.ip()));
            continue;
        }
        plain.push_str(line);
        plain.push('\n');
    }
    let (config, opts) = hickory_resolver::system_conf::parse_resolv_conf(plain.as_bytes())
        .map_err(|e| e.to_string())?;
    if ports.is_empty() {
        return Ok((config, opts));
    }
    let (domain, search, mut servers) = config.into_parts();
    for ns in &mut servers {
        if let Some((_, port)) = ports.iter().find(|(ip, _)| *ip == ns.ip) {
            for c in &mut ns.connections {
                c.port = *port;
            }
        }
    }
    Ok((ResolverConfig::from_parts(domain, search, servers), opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_with_port() {
        let (c, _) =
            parse_resolv_conf("search svc.cluster.local\nnameserver 127.0.0.1:5353\n").unwrap();
        let ns = &c.name_servers()[0];
        assert_eq!(ns.ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert!(ns.connections.iter().all(|c| c.port == 5353));
        assert_eq!(c.search()[0].to_string(), "svc.cluster.local");
    }

    #[test]
    fn plain_nameserver_keeps_port_53() {
        let (c, _) = parse_resolv_conf("nameserver 10.96.0.10\noptions ndots:5\n").unwrap();
        assert!(c.name_servers()[0].connections.iter().all(|c| c.port == 53));
    }

    #[test]
    fn no_nameserver_is_an_error() {
        assert!(parse_resolv_conf("search example.com\n").is_err());
    }
}
