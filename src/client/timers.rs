//! Client timeouts checked by the janitor (every 1/3 s, like PgBouncer's): query_timeout,
//! idle_transaction_timeout, transaction_timeout, client_idle_timeout. The hot path only stores
//! timestamps in atomics; no per-connection timer is armed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::Waker;

/// An idle client frees its relay buffers after this long without a transaction (active
/// clients keep them: no allocation per transaction).
pub const TRIM_AFTER_MS: u64 = 2000;
use std::time::Duration;

/// Milliseconds of the monotonic clock (never 0, so 0 can mean "unset").
pub use crate::clock::now_ms;

pub const IDLE: u8 = 0;
pub const WAITING: u8 = 1;
pub const LINKED: u8 = 2;

/// Why the janitor ended a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kill {
    None = 0,
    QueryTimeout = 1,
    IdleTransaction = 2,
    TransactionTimeout = 3,
    ClientIdle = 4,
    /// KILL_CLIENT.
    AdminForced = 5,
    /// KILL db.
    DatabaseRemoved = 6,
    /// SHUTDOWN / SIGINT: the client wanted a server after the pooler began shutting down.
    ShuttingDown = 7,
    /// query_timeout passed while the client still waited for a server.
    WaitQueryTimeout = 8,
}

impl Kill {
    fn from_u8(v: u8) -> Kill {
        match v {
            1 => Kill::QueryTimeout,
            2 => Kill::IdleTransaction,
            3 => Kill::TransactionTimeout,
            4 => Kill::ClientIdle,
            5 => Kill::AdminForced,
            6 => Kill::DatabaseRemoved,
            7 => Kill::ShuttingDown,
            8 => Kill::WaitQueryTimeout,
            _ => Kill::None,
        }
    }

    /// PgBouncer's message for the client (FATAL 08P01) and the server close reason.
    pub fn message(self) -> &'static str {
        match self {
            Kill::QueryTimeout => "query timeout",
            Kill::IdleTransaction => "idle transaction timeout",
            Kill::TransactionTimeout => "transaction timeout",
            Kill::ClientIdle => "client_idle_timeout",
            Kill::AdminForced => "admin forced disconnect",
            Kill::DatabaseRemoved => "database removed",
            Kill::ShuttingDown => "server shutting down",
            // PgBouncer's text for a client that never got a server (underscore)
            Kill::WaitQueryTimeout => "query_timeout",
            Kill::None => "",
        }
    }
}

/// The limits that apply to one client (0 = off), in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub query_timeout: u64,
    pub idle_transaction_timeout: u64,
    pub transaction_timeout: u64,
    pub client_idle_timeout: u64,
    /// query_wait_notify: a client queued this long is told so once (a NOTICE).
    pub query_wait_notify: u64,
}

impl Limits {
    pub fn new(
        query: Duration,
        idle_tx: Duration,
        xact: Duration,
        client_idle: Duration,
    ) -> Limits {
        let ms = |d: Duration| d.as_millis() as u64;
        Limits {
            query_timeout: ms(query),
            idle_transaction_timeout: ms(idle_tx),
            transaction_timeout: ms(xact),
            client_idle_timeout: ms(client_idle),
            query_wait_notify: 0,
        }
    }

    pub fn with_wait_notify(mut self, d: Duration) -> Limits {
        self.query_wait_notify = d.as_millis() as u64;
        self
    }

    pub fn any(&self) -> bool {
        self.query_timeout
            + self.idle_transaction_timeout
            + self.transaction_timeout
            + self.client_idle_timeout
            + self.query_wait_notify
            > 0
    }
}

/// Who a client is, for SHOW CLIENTS and KILL_CLIENT.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    pub id: u64,
    pub user: String,
    /// The user of the pool serving this client (the forced user, if any).
    pub pool_user: String,
    pub database: String,
    pub addr: String,
    pub port: u16,
    pub local_addr: String,
    pub local_port: u16,
    pub connect_time: Option<std::time::SystemTime>,
    pub application_name: String,
    pub remote_pid: u32,
}

/// One logged-in client as the janitor and the admin console see it: timestamps, state, kill switch.
///
/// Laid out in declaration order, aligned to a cache line: the eight words a transaction
/// writes fill the first line; the flags, the registered waker's identity and the limits (what
/// every poll and the janitor read) the second; what SHOW CLIENTS alone reads comes after. With
/// a thousand clients a client's lines are evicted between its transactions, so each line
/// touched is a miss.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct ClientTimers {
    /// The server this client holds now (0: none).
    pub server_id: AtomicU64,
    /// When the client started waiting for a server (0: not waiting).
    pub wait_start: AtomicU64,
    /// Last time the client sent a request.
    pub request_time: AtomicU64,
    /// Transactions completed on this connection (a shutdown lets a fresh client run its first).
    pub xacts: AtomicU64,
    /// First request of the query in flight (0: none).
    pub query_start: AtomicU64,
    /// When the current server was taken (0: none).
    pub xact_start: AtomicU64,
    /// Last byte from the linked server.
    pub server_activity: AtomicU64,
    /// When the client last became idle (no server).
    pub idle_since: AtomicU64,
    /// The client's task is woken when `kill`, `trim` or `wait_notice` is set (one waiter: the
    /// client's own task). Waking leaves it registered, so a task polled again with the same
    /// waker does not register again: `registered` names the waker stored in `waker` (its data
    /// and vtable addresses, written under the lock) and the poller compares it without locking.
    registered: [AtomicUsize; 2],
    pub state: AtomicU8,
    /// Set when the last ReadyForQuery said 'T' or 'E'.
    pub idle_tx: AtomicU8,
    kill: AtomicU8,
    /// The idle client keeps relay buffers (set by the client, cleared when it frees them).
    pub holds_buffers: AtomicBool,
    /// The janitor asks an idle client to free its buffers.
    trim: AtomicBool,
    /// query_wait_notify for the current wait: 0 not yet, 1 asked by the janitor, 2 sent.
    pub wait_notice: AtomicU8,
    pub limits: Limits,
    /// Named prepared statements the client holds (SHOW CLIENTS).
    pub prepared: std::sync::atomic::AtomicUsize,
    waker: Mutex<Option<Waker>>,
    pub meta: ClientMeta,
}

/// A waker's identity: the addresses of its data and vtable (what `Waker::will_wake` compares).
#[inline]
fn waker_id(w: &Waker) -> [usize; 2] {
    [
        w.data() as usize,
        w.vtable() as *const std::task::RawWakerVTable as usize,
    ]
}

impl ClientTimers {
    pub fn new(limits: Limits) -> ClientTimers {
        Self::with_meta(limits, ClientMeta::default())
    }

    pub fn with_meta(limits: Limits, meta: ClientMeta) -> ClientTimers {
        ClientTimers {
            meta,
            limits,
            server_id: AtomicU64::new(0),
            wait_start: AtomicU64::new(0),
            request_time: AtomicU64::new(now_ms()),
            prepared: Default::default(),
            xacts: AtomicU64::new(0),
            state: AtomicU8::new(IDLE),
            query_start: AtomicU64::new(0),
            xact_start: AtomicU64::new(0),
            server_activity: AtomicU64::new(0),
            idle_tx: AtomicU8::new(0),
            idle_since: AtomicU64::new(now_ms()),
            kill: AtomicU8::new(0),
            holds_buffers: AtomicBool::new(false),
            trim: AtomicBool::new(false),
            wait_notice: AtomicU8::new(0),
            waker: Mutex::new(None),
            registered: [AtomicUsize::new(0), AtomicUsize::new(0)],
        }
    }

    pub fn killed(&self) -> Kill {
        Kill::from_u8(self.kill.load(Relaxed))
    }

    /// End this client (admin command, shutdown); its task sends the reason as FATAL.
    pub fn kill(&self, why: Kill) {
        if self
            .kill
            .compare_exchange(0, why as u8, Relaxed, Relaxed)
            .is_ok()
        {
            self.wake();
        }
    }

    /// Resolves once the client has been ended (by the janitor, an admin command or shutdown).
    /// Once registered, a poll reads the flag and the stored waker's identity (the relay's own
    /// poll uses `poll_killed`).
    pub fn wait_killed(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.wait_for(|t| t.killed() != Kill::None)
    }

    /// Resolves once `cond` holds; the janitor and admin commands wake the client's task
    /// after changing what `cond` reads.
    fn wait_for<'a>(
        &'a self,
        cond: impl Fn(&Self) -> bool + 'a,
    ) -> impl std::future::Future<Output = ()> + 'a {
        std::future::poll_fn(move |cx| self.poll_cond(cx, &cond))
    }

    /// Ready once `cond` holds; otherwise the task is registered to be woken (once: while the
    /// stored waker is this one, a poll only reads two words and the flags).
    #[inline]
    fn poll_cond(
        &self,
        cx: &mut std::task::Context<'_>,
        cond: impl Fn(&Self) -> bool,
    ) -> std::task::Poll<()> {
        if cond(self) {
            return std::task::Poll::Ready(());
        }
        let id = waker_id(cx.waker());
        if self.registered[0].load(Relaxed) == id[0] && self.registered[1].load(Relaxed) == id[1] {
            // a flag set before the wake that follows it is seen at the poll that wake causes
            return std::task::Poll::Pending;
        }
        self.register(cx.waker(), id);
        // a flag set before the registration (its wake found the old waker or none)
        if cond(self) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    #[cold]
    fn register(&self, w: &Waker, id: [usize; 2]) {
        let mut g = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        *g = Some(w.clone());
        self.registered[0].store(id[0], Relaxed);
        self.registered[1].store(id[1], Relaxed);
    }

    /// Wake the client's task (after setting the flag it is to see); it stays registered.
    fn wake(&self) {
        let g = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = g.as_ref() {
            w.wake_by_ref();
        }
    }

    /// `wait_killed` for a hand-written poll (the relay's).
    #[inline]
    pub fn poll_killed(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.poll_cond(cx, |t| t.killed() != Kill::None)
    }

    /// Ready when the janitor asks this idle client to free its buffers (the flag is cleared
    /// by `take_trim`).
    #[inline]
    pub fn poll_trim(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.poll_cond(cx, |t| t.trim.load(Relaxed))
    }

    /// Ready when the client was ended or the janitor found it queued longer than
    /// query_wait_notify (`wait_notice` is 1); the caller tells which.
    #[inline]
    pub fn poll_killed_or_notice(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.poll_cond(cx, |t| {
            t.killed() != Kill::None || t.wait_notice.load(Relaxed) == 1
        })
    }

    /// True (once) when the janitor asked for the buffers to be freed.
    pub fn take_trim(&self) -> bool {
        self.trim.load(Relaxed) && self.trim.swap(false, Relaxed)
    }

    /// Janitor check; returns true when it ended the client.
    pub fn check(&self, now: u64) -> bool {
        if self.holds_buffers.load(Relaxed)
            && self.state.load(Relaxed) == IDLE
            && now.saturating_sub(self.idle_since.load(Relaxed)) > TRIM_AFTER_MS
            && !self.trim.swap(true, Relaxed)
        {
            self.wake();
        }
        if self.kill.load(Relaxed) != 0 || !self.limits.any() {
            return false;
        }
        let l = &self.limits;
        let over =
            |start: u64, limit: u64| limit > 0 && start > 0 && now.saturating_sub(start) > limit;
        let reason = match self.state.load(Relaxed) {
            LINKED => {
                if over(self.query_start.load(Relaxed), l.query_timeout) {
                    Kill::QueryTimeout
                } else if self.idle_tx.load(Relaxed) == 1
                    && self.query_start.load(Relaxed) == 0
                    && over(
                        self.server_activity.load(Relaxed),
                        l.idle_transaction_timeout,
                    )
                {
                    Kill::IdleTransaction
                } else if over(self.xact_start.load(Relaxed), l.transaction_timeout) {
                    Kill::TransactionTimeout
                } else {
                    Kill::None
                }
            }
            IDLE if over(self.idle_since.load(Relaxed), l.client_idle_timeout) => Kill::ClientIdle,
            WAITING => {
                let waiting = self.wait_start.load(Relaxed);
                // query_timeout counts from the request (or from the wait when no request
                // that expects an answer was sent, e.g. a Parse alone)
                let asked = match self.query_start.load(Relaxed) {
                    0 => waiting,
                    q => q,
                };
                if over(asked, l.query_timeout) {
                    Kill::WaitQueryTimeout
                } else {
                    if over(waiting, l.query_wait_notify)
                        && self
                            .wait_notice
                            .compare_exchange(0, 1, Relaxed, Relaxed)
                            .is_ok()
                    {
                        self.wake();
                    }
                    Kill::None
                }
            }
            _ => Kill::None,
        };
        if reason == Kill::None {
            return false;
        }
        self.kill.store(reason as u8, Relaxed);
        self.wake();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering::SeqCst;
    use std::task::Context;

    struct Count(AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    /// The task registers once; every later wake (trim, then kill) still reaches it, and a
    /// poll with another waker moves the registration to that one.
    #[test]
    fn wakes_reach_a_task_registered_once() {
        let t = ClientTimers::new(Limits::default());
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        let mut cx = Context::from_waker(&wa);
        assert!(t.poll_killed(&mut cx).is_pending());
        assert!(t.poll_trim(&mut cx).is_pending());
        t.trim.store(true, Relaxed);
        t.wake();
        assert_eq!(a.0.load(SeqCst), 1);
        assert!(t.poll_trim(&mut cx).is_ready());
        assert!(t.take_trim());
        // polled again without registering anew: the first wake did not use the registration up
        assert!(t.poll_killed(&mut cx).is_pending());
        assert!(t.poll_trim(&mut cx).is_pending());
        t.kill(Kill::AdminForced);
        assert_eq!(a.0.load(SeqCst), 2);
        assert!(t.poll_killed(&mut cx).is_ready());
        // another waker takes over
        let t = ClientTimers::new(Limits::default());
        assert!(t.poll_killed(&mut cx).is_pending());
        assert!(t.poll_killed(&mut Context::from_waker(&wb)).is_pending());
        t.kill(Kill::ClientIdle);
        assert_eq!((a.0.load(SeqCst), b.0.load(SeqCst)), (2, 1));
    }

    #[test]
    fn janitor_rules() {
        let t = ClientTimers::new(Limits {
            query_timeout: 100,
            idle_transaction_timeout: 50,
            transaction_timeout: 0,
            client_idle_timeout: 30,
            query_wait_notify: 0,
        });
        let now = now_ms();
        t.idle_since.store(now, Relaxed);
        assert!(!t.check(now + 10));
        t.state.store(LINKED, Relaxed);
        t.query_start.store(now, Relaxed);
        assert!(!t.check(now + 90));
        t.query_start.store(0, Relaxed);
        t.idle_tx.store(1, Relaxed);
        t.server_activity.store(now, Relaxed);
        assert!(t.check(now + 60));
        assert_eq!(t.killed(), Kill::IdleTransaction);
        let u = ClientTimers::new(Limits {
            client_idle_timeout: 30,
            ..Default::default()
        });
        assert!(u.check(now_ms() + 40));
        assert_eq!(u.killed().message(), "client_idle_timeout");
    }

    #[test]
    fn janitor_watches_waiting_clients() {
        let t = ClientTimers::new(Limits {
            query_timeout: 100,
            query_wait_notify: 20,
            ..Default::default()
        });
        let now = now_ms();
        t.state.store(WAITING, Relaxed);
        t.wait_start.store(now, Relaxed);
        t.query_start.store(now, Relaxed);
        assert!(!t.check(now + 10));
        assert_eq!(t.wait_notice.load(Relaxed), 0);
        // past query_wait_notify: the notice is asked for once
        assert!(!t.check(now + 30));
        assert_eq!(t.wait_notice.load(Relaxed), 1);
        t.wait_notice.store(2, Relaxed);
        assert!(!t.check(now + 40));
        assert_eq!(t.wait_notice.load(Relaxed), 2);
        // past query_timeout while still waiting: PgBouncer's 'query_timeout'
        assert!(t.check(now + 110));
        assert_eq!(t.killed().message(), "query_timeout");
    }

    #[test]
    fn janitor_asks_idle_clients_to_free_buffers() {
        let t = ClientTimers::new(Limits::default());
        let now = now_ms();
        t.idle_since.store(now, Relaxed);
        t.holds_buffers.store(true, Relaxed);
        t.check(now + 100);
        assert!(!t.take_trim());
        t.check(now + TRIM_AFTER_MS + 1);
        assert!(t.take_trim());
        assert!(!t.take_trim());
    }
}
#[cfg(test)]
mod layout {
    use super::{ClientTimers as T, Limits};
    use std::mem::{align_of, offset_of, size_of};

    /// What a transaction writes fills the first cache line; what every poll and the janitor
    /// read, the second.
    #[test]
    fn hot_fields_take_the_first_two_cache_lines() {
        assert_eq!(align_of::<T>(), 64);
        assert_eq!(offset_of!(T, server_id), 0);
        assert_eq!(offset_of!(T, idle_since) + 8, 64);
        assert_eq!(offset_of!(T, registered), 64);
        assert!(offset_of!(T, wait_notice) < 128);
        assert!(offset_of!(T, limits) + size_of::<Limits>() <= 128);
    }
}
