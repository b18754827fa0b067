//! Cancel keys: each client's random BackendKeyData, and forwarding a CancelRequest to the server running its query.

use crate::protocol::frontend;
use crate::server::ServerAddr;
use crate::server::stream::Stream;
use dashmap::DashMap;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};

/// Where a client's query is running right now, if anywhere.
#[derive(Debug, Default)]
pub struct CancelSlot {
    target: Mutex<Option<(ServerAddr, (u32, u32))>>,
}

impl CancelSlot {
    pub fn link(&self, addr: &ServerAddr, key: (u32, u32)) {
        *self.target.lock().unwrap() = Some((addr.clone(), key));
    }

    pub fn unlink(&self) {
        *self.target.lock().unwrap() = None;
    }
}

/// All live client keys.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    map: DashMap<[u8; 8], Arc<CancelSlot>>,
}

/// Removes the key when the client goes away.
pub struct CancelGuard<'a> {
    reg: &'a CancelRegistry,
    pub key: [u8; 8],
    pub slot: Arc<CancelSlot>,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        self.reg.map.remove(&self.key);
    }
}

impl CancelRegistry {
    /// A fresh random key from the OS CSPRNG (high bit of the pid cleared, as PgBouncer does),
    /// carrying `peer_id` when peering is on.
    pub fn register(&self, peer_id: u32) -> CancelGuard<'_> {
        loop {
            let mut key = [0u8; 8];
            getrandom::fill(&mut key).expect("OS random source");
            key[0] &= 0x7f;
            crate::peers::stamp_key(&mut key, peer_id);
            let slot = Arc::new(CancelSlot::default());
            if let dashmap::Entry::Vacant(v) = self.map.entry(key) {
                v.insert(slot.clone());
                return CancelGuard {
                    reg: self,
                    key,
                    slot,
                };
            }
        }
    }

    /// A CancelRequest as received: with peering on, a key issued by another peer is forwarded
    /// to it (one hop used up), else the local client's query is cancelled.
    pub async fn dispatch(shared: &crate::state::Shared, mut key: [u8; 8]) {
        let cfg = shared.config();
        let me = cfg.general.peer_id;
        if me > 0 {
            let owner = crate::peers::key_peer(&key);
            if owner != me {
                if key[7] & crate::peers::TTL_MASK == 0 {
                    tracing::info!(
                        "failed to forward cancel request because its TTL was exhausted"
                    );
                    return;
                }
                key[7] -= 1;
                let dir = cfg.general.server_unix_dir();
                shared.peers.forward(owner, key, &shared.dns, dir).await;
                return;
            }
            // stored keys carry all TTL bits; the request may have used some hops
            key[7] |= crate::peers::TTL_MASK;
        }
        shared.cancel.cancel(&key).await;
    }

    /// Forward a cancel for `key` to the server currently linked to that client. Unknown keys and
    /// idle clients are ignored, as in PgBouncer.
    pub async fn cancel(&self, key: &[u8; 8]) -> bool {
        let target = match self.map.get(key) {
            Some(slot) => slot.target.lock().unwrap().clone(),
            None => {
                tracing::debug!("cancel request for unknown key");
                return false;
            }
        };
        let Some((addr, (pid, secret))) = target else {
            tracing::debug!("cancel request for idle client");
            return false;
        };
        let pkt = frontend::cancel_request(pid, secret);
        let res = async {
            let mut s = match &addr {
                ServerAddr::Tcp(a) => Stream::Tcp(TcpStream::connect(a).await?),
                ServerAddr::Unix(p) => Stream::Unix(UnixStream::connect(p).await?),
            };
            s.write_all(&pkt).await?;
            s.shutdown().await?;
            Ok::<_, std::io::Error>(())
        };
        match tokio::time::timeout(std::time::Duration::from_secs(10), res).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!("cancel request to {addr} failed: {e}");
                false
            }
            Err(_) => false,
        }
    }
}
