//! The `[peers]` section (PgBouncer 1.19+ peering): peer id → where to forward cancel requests, and `peer_id = auto`.

use super::databases::split_pairs;
use super::settings::parse_u32;

/// Highest peer id: two bytes of the cancel key, less the two TTL bits' neighbours PgBouncer keeps.
pub const MAX_PEER_ID: u32 = 16383;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub id: u32,
    /// Host name, address or unix-socket directory; None = the default unix socket directory.
    pub host: Option<String>,
    pub port: u16,
    /// Cancel requests in flight to this peer at once; None = default_pool_size.
    pub pool_size: Option<u32>,
}

/// Parse one `[peers]` line: `1 = host=10.0.0.1 port=6432 pool_size=10`.
pub fn parse_peer(key: &str, value: &str) -> Result<PeerConfig, (String, String)> {
    let id = key
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_PEER_ID).contains(n))
        .ok_or_else(|| {
            (
                key.to_string(),
                format!("invalid peer id \"{key}\" (1..{MAX_PEER_ID})"),
            )
        })?;
    let mut p = PeerConfig {
        id,
        host: None,
        port: 6432,
        pool_size: None,
    };
    for (k, v) in split_pairs(value).map_err(|e| (key.to_string(), e))? {
        let err = |m: String| (k.clone(), m);
        match k.as_str() {
            "host" => p.host = Some(v.trim().to_string()).filter(|h| !h.is_empty()),
            "port" => {
                p.port = v
                    .parse::<u16>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| err(format!("invalid port \"{v}\"")))?
            }
            "pool_size" => p.pool_size = Some(parse_u32(&v).map_err(err)?),
            _ => return Err((k.clone(), format!("unrecognized peer parameter: {k}"))),
        }
    }
    Ok(p)
}

/// `peer_id = auto` (pgmux extension): the id of the `[peers]` entry whose host is this machine's
/// host name, or its first label (`pooler-1` matches `host=pooler-1.pooler-peers.ns.svc`). One
/// ConfigMap then serves every StatefulSet replica.
pub fn auto_peer_id<'a>(
    hostname: &str,
    peers: impl IntoIterator<Item = &'a PeerConfig>,
) -> Option<u32> {
    let me = hostname.trim().to_ascii_lowercase();
    if me.is_empty() {
        return None;
    }
    peers.into_iter().find_map(|p| {
        let h = p.host.as_deref()?.to_ascii_lowercase();
        (h == me || h.split('.').next() == Some(me.as_str())).then_some(p.id)
    })
}

/// This machine's host name (gethostname(2); no NSS involved).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbouncer_peer_lines() {
        let p = parse_peer("2", "host=/tmp/pgb2 port=6433 pool_size=4").unwrap();
        assert_eq!(
            p,
            PeerConfig {
                id: 2,
                host: Some("/tmp/pgb2".into()),
                port: 6433,
                pool_size: Some(4)
            }
        );
        assert_eq!(parse_peer("7", "").unwrap().port, 6432);
        assert!(parse_peer("0", "host=x").is_err());
        assert!(parse_peer("16384", "host=x").is_err());
        assert!(parse_peer("one", "host=x").is_err());
        assert_eq!(parse_peer("1", "hots=x").unwrap_err().0, "hots");
        assert!(parse_peer("1", "port=0").is_err());
    }

    #[test]
    fn auto_matches_host_or_first_label() {
        let peers = [
            parse_peer("1", "host=pooler-0.peers.ns.svc").unwrap(),
            parse_peer("2", "host=pooler-1.peers.ns.svc").unwrap(),
            parse_peer("3", "host=10.0.0.3").unwrap(),
        ];
        assert_eq!(auto_peer_id("pooler-1", &peers), Some(2));
        assert_eq!(auto_peer_id("POOLER-0", &peers), Some(1));
        assert_eq!(auto_peer_id("pooler-1.peers.ns.svc", &peers), Some(2));
        assert_eq!(auto_peer_id("pooler-9", &peers), None);
        assert_eq!(auto_peer_id("", &peers), None);
    }
}
