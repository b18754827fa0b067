//! PgBouncer's TCP socket settings (`tcp_keepalive`, `tcp_keepidle`, `tcp_keepintvl`, `tcp_keepcnt`, `tcp_user_timeout`, `tcp_socket_buffer`) applied to every client and server TCP socket; RELOAD changes them for sockets opened after it.

use crate::config::General;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::time::Duration;
use tokio::net::TcpStream;

/// The settings in force: RELOAD stores them, each new socket reads them.
#[derive(Debug, Default)]
pub struct TcpTuning {
    keepalive: AtomicBool,
    keepidle: AtomicU32,
    keepintvl: AtomicU32,
    keepcnt: AtomicU32,
    user_timeout_ms: AtomicU32,
    socket_buffer: AtomicU32,
}

impl TcpTuning {
    pub fn new(g: &General) -> Self {
        let t = Self::default();
        t.reconfigure(g);
        t
    }

    /// Take the values of a (re)loaded configuration.
    pub fn reconfigure(&self, g: &General) {
        self.keepalive.store(g.tcp_keepalive, Relaxed);
        self.keepidle.store(g.tcp_keepidle, Relaxed);
        self.keepintvl.store(g.tcp_keepintvl, Relaxed);
        self.keepcnt.store(g.tcp_keepcnt, Relaxed);
        self.user_timeout_ms.store(g.tcp_user_timeout, Relaxed);
        self.socket_buffer.store(g.tcp_socket_buffer, Relaxed);
    }

    /// Set the options on a connected socket, as PgBouncer's `tune_socket` does: `SO_KEEPALIVE`
    /// from `tcp_keepalive`, and when it is on the keepalive timings that are not 0 (0 keeps the
    /// kernel's default); `TCP_USER_TIMEOUT` and both buffer sizes when they are not 0.
    pub fn apply(&self, s: &TcpStream) -> std::io::Result<()> {
        let sock = socket2::SockRef::from(s);
        let keepalive = self.keepalive.load(Relaxed);
        sock.set_keepalive(keepalive)?;
        if keepalive {
            let mut ka = socket2::TcpKeepalive::new();
            let mut any = false;
            let secs = |a: &AtomicU32| Duration::from_secs(a.load(Relaxed).into());
            if self.keepidle.load(Relaxed) > 0 {
                ka = ka.with_time(secs(&self.keepidle));
                any = true;
            }
            if self.keepintvl.load(Relaxed) > 0 {
                ka = ka.with_interval(secs(&self.keepintvl));
                any = true;
            }
            let cnt = self.keepcnt.load(Relaxed);
            if cnt > 0 {
                ka = ka.with_retries(cnt);
                any = true;
            }
            if any {
                sock.set_tcp_keepalive(&ka)?;
            }
        }
        let ut = self.user_timeout_ms.load(Relaxed);
        if ut > 0 {
            sock.set_tcp_user_timeout(Some(Duration::from_millis(ut.into())))?;
        }
        let buf = self.socket_buffer.load(Relaxed) as usize;
        if buf > 0 {
            sock.set_send_buffer_size(buf)?;
            sock.set_recv_buffer_size(buf)?;
        }
        Ok(())
    }

    /// `apply`, logging a failure instead of returning it (the connection goes on with the
    /// kernel's defaults; the values are range-checked when the configuration is read).
    pub fn apply_or_warn(&self, s: &TcpStream, what: &str) {
        if let Err(e) = self.apply(s) {
            tracing::warn!("{what}: setting TCP socket options failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn options_land_on_the_socket_and_zero_keeps_the_kernel_default() {
        let (a, b) = pair().await;
        let default_idle = socket2::SockRef::from(&b).tcp_keepalive_time().unwrap();
        let mut g = General {
            tcp_keepalive: true,
            tcp_keepidle: 17,
            tcp_keepintvl: 5,
            tcp_keepcnt: 4,
            tcp_user_timeout: 9000,
            tcp_socket_buffer: 1 << 18,
            ..Default::default()
        };
        let t = TcpTuning::new(&g);
        t.apply(&a).unwrap();
        let s = socket2::SockRef::from(&a);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(17));
        assert_eq!(s.tcp_keepalive_interval().unwrap(), Duration::from_secs(5));
        assert_eq!(s.tcp_keepalive_retries().unwrap(), 4);
        assert_eq!(
            s.tcp_user_timeout().unwrap(),
            Some(Duration::from_millis(9000))
        );
        // Linux reports twice the size asked for (its bookkeeping overhead)
        assert!(s.send_buffer_size().unwrap() >= 1 << 18);

        // keepalive on with no timings: the kernel's defaults stay
        g.tcp_keepidle = 0;
        g.tcp_keepintvl = 0;
        g.tcp_keepcnt = 0;
        g.tcp_user_timeout = 0;
        g.tcp_socket_buffer = 0;
        t.reconfigure(&g);
        t.apply(&b).unwrap();
        let s = socket2::SockRef::from(&b);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), default_idle);
        assert_eq!(s.tcp_user_timeout().unwrap(), None);

        // tcp_keepalive = 0 turns it off
        g.tcp_keepalive = false;
        t.reconfigure(&g);
        t.apply(&b).unwrap();
        assert!(!socket2::SockRef::from(&b).keepalive().unwrap());
    }
}
