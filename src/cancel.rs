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
        shared
            .cancel
            .cancel(&key, cfg.general.cancel_wait_timeout)
            .await;
    }

    /// Forward a cancel for `key` to the server currently linked to that client. Unknown keys and
    /// idle clients are ignored, as in PgBouncer; a cancel not sent within `wait`
    /// (cancel_wait_timeout, 0 = no limit) is dropped.
    pub async fn cancel(&self, key: &[u8; 8], wait: std::time::Duration) -> bool {
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
        let res = if wait.is_zero() {
            Ok(res.await)
        } else {
            tokio::time::timeout(wait, res).await
        };
        match res {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!("cancel request to {addr} failed: {e}");
                false
            }
            Err(_) => {
                tracing::warn!(
                    "cancel request to {addr} not sent within cancel_wait_timeout, dropped"
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A listening socket whose accept queue is full: a connect to it hangs (the kernel drops
    /// the SYNs), as towards a server that stopped answering.
    fn full_listener() -> (
        socket2::Socket,
        Vec<std::net::TcpStream>,
        std::net::SocketAddr,
    ) {
        use socket2::{Domain, Socket, Type};
        let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        l.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        l.listen(0).unwrap();
        let addr = l.local_addr().unwrap().as_socket().unwrap();
        let fill = (0..4)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
            })
            .collect();
        (l, fill, addr)
    }

    #[tokio::test]
    async fn a_cancel_not_sent_within_cancel_wait_timeout_is_dropped() {
        let (_l, _fill, addr) = full_listener();
        let reg = CancelRegistry::default();
        let g = reg.register(0);
        g.slot.link(&ServerAddr::Tcp(addr), (1, 2));
        let t = Instant::now();
        assert!(!reg.cancel(&g.key, Duration::from_millis(300)).await);
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "{took:?}"
        );
        // unknown keys and idle clients: nothing is sent
        assert!(!reg.cancel(&[9; 8], Duration::from_secs(1)).await);
        g.slot.unlink();
        assert!(!reg.cancel(&g.key, Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn a_cancel_reaches_a_listening_server() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let reg = CancelRegistry::default();
        let g = reg.register(0);
        g.slot.link(&ServerAddr::Tcp(addr), (7, 9));
        let (sent, got) = tokio::join!(reg.cancel(&g.key, Duration::ZERO), async {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut s, &mut b)
                .await
                .unwrap();
            b
        });
        assert!(sent);
        assert_eq!(got, frontend::cancel_request(7, 9).to_vec());
    }
}
