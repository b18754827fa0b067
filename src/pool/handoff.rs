//! The hand-off slot a queued checkout waits on: one per client, reused for every transaction (no channel allocated per wait), with race-free cancellation under the pool lock.

use crate::server::ServerConn;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// What a waiting client is sent: a server, a server error to pass on, or None when it waited
/// longer than query_wait_timeout (the janitor sends that: no timer per checkout).
pub(super) type Delivery = Result<ServerConn, Option<(String, String)>>;

/// Where the pool puts the server (or error) for one waiting client. A client keeps one for its
/// whole connection; it is in a pool's wait queue at most once at a time.
///
/// Every change of `queued` and every delivery happens under the owning pool's lock, so a wait
/// that is given up (client gone, killed) either is still queued (and is removed) or already
/// holds its delivery (and the server goes to the next waiter): nothing is lost in between.
#[derive(Debug, Default)]
pub struct HandOff {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    delivery: Option<Delivery>,
    waker: Option<Waker>,
    /// In a pool's wait queue.
    queued: bool,
}

impl HandOff {
    pub fn new() -> Arc<HandOff> {
        Arc::new(HandOff::default())
    }

    /// Mark as queued (under the pool lock, as the entry is pushed).
    pub(super) fn enqueue(&self) {
        let mut s = self.state.lock().unwrap();
        debug_assert!(!s.queued && s.delivery.is_none());
        s.queued = true;
    }

    /// Give the waiter its result (under the pool lock, the entry just popped) and wake it.
    pub(super) fn deliver(&self, d: Delivery) {
        let waker = {
            let mut s = self.state.lock().unwrap();
            s.queued = false;
            s.delivery = Some(d);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Under the pool lock, for a wait that is given up: whether the slot was still queued (the
    /// caller removes its entry), and a delivery that arrived but was never taken.
    pub(super) fn withdraw(&self) -> (bool, Option<Delivery>) {
        let mut s = self.state.lock().unwrap();
        s.waker = None;
        (std::mem::take(&mut s.queued), s.delivery.take())
    }

    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Delivery> {
        let mut s = self.state.lock().unwrap();
        if let Some(d) = s.delivery.take() {
            return Poll::Ready(d);
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// A queued checkout: resolves with the delivery; dropped before that, it withdraws from the
/// pool (see `Pool::withdraw`).
pub(super) struct Wait<'a> {
    pub pool: &'a super::Pool,
    pub slot: &'a Arc<HandOff>,
    pub done: bool,
}

impl Future for Wait<'_> {
    type Output = Delivery;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Delivery> {
        let r = self.slot.poll_take(cx);
        if r.is_ready() {
            self.done = true;
        }
        r
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.pool.withdraw(self.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HandOff;
    use crate::params::Tracked;
    use crate::pool::{Mode, Pool, PoolSettings};
    use crate::server::stream::Stream;
    use crate::server::{ServerAddr, ServerConn, ServerState, ServerTarget};
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    /// A pool of `size` with `idle` adopted servers (socket pairs; the peers are returned).
    fn pool(size: usize, idle: usize) -> (Arc<Pool>, Vec<tokio::net::UnixStream>) {
        let general = crate::config::General::default();
        let target = ServerTarget {
            hosts: vec![],
            port: 5432,
            default_unix_dir: "/nonexistent".into(),
            dbname: "db".into(),
            user: "u".into(),
            password: std::sync::RwLock::new(None),
            startup: vec![],
            connect_query: None,
            connect_timeout: Duration::from_secs(1),
            next_host: AtomicUsize::new(0),
            tls: Arc::new(crate::tls::TlsState::new(&general).unwrap()),
            scram_keys: Default::default(),
            dns: Arc::new(crate::dns::Dns::new(&general)),
        };
        let settings = PoolSettings {
            size,
            min_size: 0,
            mode: Mode::Transaction,
            server_lifetime: Duration::from_secs(3600),
            server_idle_timeout: Duration::ZERO,
            query_wait_timeout: Duration::from_secs(60),
            round_robin: false,
            reset_query: None,
            reserve_size: 0,
            reserve_timeout: Duration::from_secs(5),
            login_retry: Duration::from_secs(15),
            connect_concurrency: 1,
        };
        let tracked = Arc::new(Tracked::new(&[]));
        let group = crate::pool::group::ConnGroup::new(0);
        let p = Pool::new(
            "db".into(),
            "u".into(),
            target,
            settings,
            tracked.clone(),
            false,
            group.clone(),
            group,
        );
        let mut peers = Vec::new();
        for _ in 0..idle {
            let (a, b) = tokio::net::UnixStream::pair().unwrap();
            peers.push(b);
            let now = crate::clock::now_us();
            p.adopt_idle(ServerConn::from(ServerState {
                id: ServerState::new_id(),
                stream: Stream::Unix(a),
                addr: ServerAddr::Unix("/test".into()),
                local: String::new(),
                key: (1, 2),
                params: tracked.empty_set(),
                created: now,
                last_used: now,
                epoch: 0,
                prepared: Default::default(),
                rbuf: Default::default(),
                shard: 0,
            }));
        }
        (p, peers)
    }

    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    /// (active, idle, waiting)
    fn counts(p: &Pool) -> (usize, usize, usize) {
        let (a, i, _, w) = p.counts();
        (a, i, w)
    }

    #[tokio::test]
    async fn queued_waits_are_served_in_order_and_a_given_up_wait_leaves_the_queue() {
        let (p, _peers) = pool(1, 1);
        let held = p.checkout().await.unwrap();
        let (b_slot, c_slot) = (HandOff::new(), HandOff::new());
        let mut b = Box::pin(p.checkout_via(Some(&b_slot), crate::clock::now_us()));
        let mut c = Box::pin(p.checkout_via(Some(&c_slot), crate::clock::now_us()));
        assert!(poll_once(b.as_mut()).is_pending());
        assert!(poll_once(c.as_mut()).is_pending());
        assert_eq!(counts(&p), (1, 0, 2));
        drop(b); // the client went away while queued
        assert_eq!(counts(&p), (1, 0, 1));
        p.checkin(held, true);
        let Poll::Ready(Ok(s)) = poll_once(c.as_mut()) else {
            panic!("the remaining waiter gets the server");
        };
        assert_eq!(counts(&p), (1, 0, 0));
        p.checkin(s, true);
        assert_eq!(counts(&p), (0, 1, 0));
        // the slot given up earlier is reusable
        let s = p
            .checkout_via(Some(&b_slot), crate::clock::now_us())
            .await
            .unwrap();
        p.checkin(s, true);
        assert_eq!(counts(&p), (0, 1, 0));
    }

    #[tokio::test]
    async fn a_server_delivered_to_a_wait_given_up_goes_to_the_next_waiter_or_idle() {
        let (p, _peers) = pool(1, 1);
        let held = p.checkout().await.unwrap();
        let slots = [HandOff::new(), HandOff::new()];
        let mut b = Box::pin(p.checkout_via(Some(&slots[0]), crate::clock::now_us()));
        let mut c = Box::pin(p.checkout_via(Some(&slots[1]), crate::clock::now_us()));
        assert!(poll_once(b.as_mut()).is_pending());
        assert!(poll_once(c.as_mut()).is_pending());
        p.checkin(held, true); // delivered to b, which never takes it
        assert_eq!(counts(&p), (1, 0, 1));
        drop(b);
        assert_eq!(counts(&p), (1, 0, 0));
        drop(c); // c held it by then: it goes idle, nothing is lost
        assert_eq!(counts(&p), (0, 1, 0));
        // one slot serves many waits in a row
        let held = p.checkout().await.unwrap();
        for _ in 0..3 {
            let mut w = Box::pin(p.checkout_via(Some(&slots[0]), crate::clock::now_us()));
            assert!(poll_once(w.as_mut()).is_pending());
            drop(w);
        }
        assert_eq!(counts(&p), (1, 0, 0));
        let mut w = Box::pin(p.checkout_via(Some(&slots[0]), crate::clock::now_us()));
        assert!(poll_once(w.as_mut()).is_pending());
        p.checkin(held, true);
        assert!(matches!(poll_once(w.as_mut()), Poll::Ready(Ok(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_clients_racing_checkout_cancel_and_checkin_lose_no_server() {
        let (p, _peers) = pool(3, 3);
        let mut tasks = Vec::new();
        for i in 0..16u64 {
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                let slot = HandOff::new();
                for j in 0..300u64 {
                    if (i + j) % 3 == 0 {
                        // give up after a very short wait
                        let r = tokio::time::timeout(
                            Duration::from_micros(50),
                            p.checkout_via(Some(&slot), crate::clock::now_us()),
                        )
                        .await;
                        if let Ok(r) = r {
                            p.checkin(r.unwrap(), true);
                        }
                        continue;
                    }
                    let s = p
                        .checkout_via(Some(&slot), crate::clock::now_us())
                        .await
                        .unwrap();
                    tokio::task::yield_now().await;
                    p.checkin(s, true);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (active, idle, total, waiting) = p.counts();
        assert_eq!((active, idle, total, waiting), (0, 3, 3, 0));
    }
}
