//! Peering (`peer_id`, `[peers]`): cancel keys that name the instance that issued them, and forwarding a CancelRequest to that peer over a bounded set of connections.

use crate::config::Config;
use crate::config::peers::PeerConfig;
use crate::dns::Dns;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// The two low bits of the key's last byte: hops left (PgBouncer's CANCELLATION_TTL_MASK).
pub const TTL_MASK: u8 = 0x03;
/// Cancel requests queued for one peer at most; more are dropped (and logged).
const MAX_WAITING: usize = 1000;
/// A forward that has not finished by then is abandoned.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Put `peer_id` into a fresh random key as PgBouncer 1.19+ lays it out: bytes 1-2 carry the id
/// (little end first), the two TTL bits of byte 7 are set. 45 random bits remain.
pub fn stamp_key(key: &mut [u8; 8], peer_id: u32) {
    if peer_id > 0 {
        key[1] = (peer_id & 0xff) as u8;
        key[2] = ((peer_id >> 8) & 0xff) as u8;
        key[7] |= TTL_MASK;
    }
}

/// The peer id a key names (meaningful only when peering is on).
pub fn key_peer(key: &[u8; 8]) -> u32 {
    key[1] as u32 | (key[2] as u32) << 8
}

/// One configured peer and its cancel-forwarding counters (SHOW PEER_POOLS).
pub struct Peer {
    pub cfg: PeerConfig,
    pub pool_size: usize,
    slots: Semaphore,
    /// A cancel request was forwarded here once: PgBouncer creates the peer pool then.
    pub used: AtomicBool,
    pub cl_waiting: AtomicUsize,
    pub cl_active: AtomicUsize,
    pub sv_login: AtomicUsize,
    pub sv_active: AtomicUsize,
}

/// The `[peers]` in force; replaced by RELOAD.
#[derive(Default)]
pub struct Peers {
    map: RwLock<BTreeMap<u32, Arc<Peer>>>,
}

struct Count<'a>(&'a AtomicUsize);
impl<'a> Count<'a> {
    fn new(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Relaxed);
        Count(c)
    }
}
impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Peers {
    pub fn new(cfg: &Config) -> Peers {
        let p = Peers::default();
        p.reconfigure(cfg);
        p
    }

    /// Apply `[peers]`: unchanged peers keep their counters, changed ones start afresh.
    pub fn reconfigure(&self, cfg: &Config) {
        let mut map = self.map.write().unwrap();
        let old = std::mem::take(&mut *map);
        for (id, pc) in &cfg.peers {
            let size = pc.pool_size.unwrap_or(cfg.general.default_pool_size).max(1) as usize;
            match old.get(id) {
                Some(p) if p.cfg == *pc && p.pool_size == size => {
                    map.insert(*id, p.clone());
                }
                _ => {
                    map.insert(
                        *id,
                        Arc::new(Peer {
                            cfg: pc.clone(),
                            pool_size: size,
                            slots: Semaphore::new(size),
                            used: AtomicBool::new(false),
                            cl_waiting: AtomicUsize::new(0),
                            cl_active: AtomicUsize::new(0),
                            sv_login: AtomicUsize::new(0),
                            sv_active: AtomicUsize::new(0),
                        }),
                    );
                }
            }
        }
    }

    pub fn all(&self) -> Vec<Arc<Peer>> {
        self.map.read().unwrap().values().cloned().collect()
    }

    /// Send `key` on to peer `id`. Never blocks anything but the cancel connection it serves.
    pub async fn forward(&self, id: u32, key: [u8; 8], dns: &Dns, unix_dir: &str) {
        let Some(peer) = self.map.read().unwrap().get(&id).cloned() else {
            tracing::info!(
                "cancel request for peer {id}: could not find peer to forward request to"
            );
            return;
        };
        peer.used.store(true, Relaxed);
        if peer.cl_waiting.load(Relaxed) >= MAX_WAITING {
            tracing::warn!("cancel request for peer {id} dropped: {MAX_WAITING} already waiting");
            return;
        }
        let work = async {
            let _permit = {
                let _w = Count::new(&peer.cl_waiting);
                peer.slots.acquire().await.ok()?
            };
            let _a = Count::new(&peer.cl_active);
            let mut stream = {
                let _l = Count::new(&peer.sv_login);
                connect(&peer.cfg, dns, unix_dir).await.ok()?
            };
            let _s = Count::new(&peer.sv_active);
            let (pid, secret) = key.split_at(4);
            let pkt = crate::protocol::frontend::cancel_request(
                u32::from_be_bytes(pid.try_into().ok()?),
                u32::from_be_bytes(secret.try_into().ok()?),
            );
            stream.write_all(&pkt).await.ok()?;
            // the peer closes once it has passed the request on
            let mut sink = [0u8; 64];
            while stream.read(&mut sink).await.ok()? > 0 {}
            Some(())
        };
        match tokio::time::timeout(FORWARD_TIMEOUT, work).await {
            Ok(Some(())) => tracing::debug!("cancel request forwarded to peer {id}"),
            Ok(None) => tracing::warn!("forwarding a cancel request to peer {id} failed"),
            Err(_) => tracing::warn!("forwarding a cancel request to peer {id} timed out"),
        }
    }
}

async fn connect(
    cfg: &PeerConfig,
    dns: &Dns,
    unix_dir: &str,
) -> std::io::Result<crate::server::stream::Stream> {
    use crate::server::stream::Stream;
    let host = cfg.host.as_deref().unwrap_or(unix_dir);
    if host.starts_with('/') {
        let path = format!("{host}/.s.PGSQL.{}", cfg.port);
        return Ok(Stream::Unix(tokio::net::UnixStream::connect(path).await?));
    }
    let addrs = dns.resolve(host, cfg.port).await?;
    Ok(Stream::Tcp(
        crate::server::login::connect_any(&addrs).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout_matches_pgbouncer() {
        let mut key = [0xffu8; 8];
        key[7] = 0xf0;
        stamp_key(&mut key, 0x1234);
        assert_eq!(key[1], 0x34);
        assert_eq!(key[2], 0x12);
        assert_eq!(key[7] & TTL_MASK, TTL_MASK);
        assert_eq!(key_peer(&key), 0x1234);
        let mut plain = [7u8; 8];
        stamp_key(&mut plain, 0);
        assert_eq!(plain, [7u8; 8]);
    }
}
