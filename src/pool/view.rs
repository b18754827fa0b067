//! What the admin console and metrics see of a pool (server list, counts) and the operations they drive (RECONNECT, reload).

use super::{Pool, PoolSettings};
use crate::server::{ServerConn, ServerTarget};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

/// What SHOW SERVERS lists about one server connection.
#[derive(Debug, Clone)]
pub struct ServerMeta {
    pub id: u64,
    pub addr: String,
    pub port: u16,
    pub local_addr: String,
    pub local_port: u16,
    pub connect_time: SystemTime,
    pub remote_pid: u32,
    /// Statements prepared on it (SHOW SERVERS prepared_statements).
    pub prepared: Arc<std::sync::atomic::AtomicUsize>,
}

/// Server counts for SHOW POOLS.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolCounts {
    pub active: usize,
    pub idle: usize,
    pub total: usize,
    pub waiting: usize,
    pub connecting: usize,
    pub stale: usize,
    /// How long the oldest waiting client has waited.
    pub max_wait: Duration,
}

impl Pool {
    pub fn settings(&self) -> Arc<PoolSettings> {
        self.settings.read().unwrap().clone()
    }

    pub fn set_settings(self: &Arc<Self>, s: PoolSettings) {
        self.set_hot(&s);
        *self.settings.write().unwrap() = Arc::new(s);
        self.kick();
    }

    pub fn target(&self) -> Arc<ServerTarget> {
        self.target.read().unwrap().clone()
    }

    /// Point the pool somewhere else (reload changed host/port/dbname): idle servers are
    /// closed now, the others when released.
    pub fn set_target(self: &Arc<Self>, t: ServerTarget) {
        if t.password.read().unwrap().is_none()
            && let Some(pw) = self.target().password.read().unwrap().clone()
        {
            t.set_password(&pw);
        }
        *self.target.write().unwrap() = Arc::new(t);
        self.reconnect("database configuration changed");
    }

    /// RECONNECT: every server open now is closed as soon as it is not in use.
    pub fn reconnect(self: &Arc<Self>, reason: &str) {
        let idle = {
            let mut g = self.inner.lock().unwrap();
            self.epoch.fetch_add(1, Relaxed);
            g.stale = g.total;
            std::mem::take(&mut g.idle)
        };
        for s in idle {
            self.close(s, reason);
        }
    }

    /// Server connections that a RECONNECT still waits to close.
    pub fn stale_count(&self) -> usize {
        self.inner.lock().unwrap().stale
    }

    pub fn server_list(&self) -> Vec<ServerMeta> {
        self.servers.lock().unwrap().values().cloned().collect()
    }

    pub fn idle_ids(&self) -> Vec<u64> {
        self.inner
            .lock()
            .unwrap()
            .idle
            .iter()
            .map(|s| s.id)
            .collect()
    }

    pub fn pool_counts(&self) -> PoolCounts {
        let g = self.inner.lock().unwrap();
        PoolCounts {
            active: g.active,
            idle: g.idle.len(),
            total: g.total,
            waiting: g.waiters.len(),
            connecting: g.connecting,
            stale: g.stale,
            max_wait: g
                .waiters
                .oldest()
                .map(|t| std::time::Duration::from_micros(crate::clock::now_us().saturating_sub(t)))
                .unwrap_or_default(),
        }
    }
}

pub(super) fn server_meta(s: &ServerConn) -> ServerMeta {
    let (addr, port) = match &s.addr {
        crate::server::ServerAddr::Tcp(a) => (a.ip().to_string(), a.port()),
        crate::server::ServerAddr::Unix(p) => (
            p.parent()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            p.extension()
                .and_then(|e| e.to_str())
                .and_then(|e| e.parse().ok())
                .unwrap_or(0),
        ),
    };
    let (local_addr, local_port) = match s.local.rsplit_once(':') {
        Some((a, p)) => (a.to_string(), p.parse().unwrap_or(0)),
        None => (s.local.clone(), 0),
    };
    ServerMeta {
        id: s.id,
        addr,
        port,
        local_addr,
        local_port,
        connect_time: SystemTime::now() - s.age(),
        remote_pid: s.key.0,
        prepared: s.prepared.count.clone(),
    }
}
