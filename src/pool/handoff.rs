//! The hand-off slot a queued checkout waits on: one per client, reused for every transaction (no channel allocated per wait), with race-free cancellation under the pool lock, and the queued request the releasing client sends on ahead.

use crate::server::ServerConn;
use bytes::{Buf, BytesMut};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// What a waiting client is sent: a server, a server error to pass on, or None when it waited
/// longer than query_wait_timeout (the janitor sends that: no timer per checkout).
pub(super) type Delivery = Result<ServerConn, Option<(String, String)>>;

/// A queued client's request, complete and the same for every server, which the client that
/// releases a server writes to it on the waiting client's behalf (as PgBouncer forwards a
/// waiting client's packet when it activates it): the waiting client's task is not run until
/// the server answers, one task switch less per transaction.
#[derive(Debug)]
pub struct Offer {
    /// Bytes not written yet (empty once all were sent on ahead).
    pub req: BytesMut,
    /// The client's tracked parameters (`ParamSet::packed`): only a server with the same gets
    /// the request without a parameter sync first.
    pub params: Arc<[u8]>,
    /// The client's shard: a server living on another is moved first, by the client itself.
    pub shard: u16,
    /// Bytes already written to the server by the releasing client.
    pub sent: usize,
    /// When all of it was sent on ahead and the link recorded (µs of `crate::clock`; 0: not).
    pub sent_at: u64,
}

/// What the releasing client records for the waiting one when it sends its request on ahead:
/// the cancel key's target and the timestamps the janitor and SHOW CLIENTS read.
pub trait OnLink: Send + Sync + std::fmt::Debug {
    fn linked(&self, server: &ServerConn, now_us: u64);
}

/// Where the pool puts the server (or error) for one waiting client. A client keeps one for its
/// whole connection; it is in a pool's wait queue at most once at a time.
///
/// Every change of `queued` and every delivery happens under the owning pool's lock, so a wait
/// that is given up (client gone, killed) either is still queued (and is removed) or already
/// holds its delivery (and the server goes to the next waiter, or is closed when part of the
/// request was sent on ahead): nothing is lost in between.
#[derive(Debug, Default)]
pub struct HandOff {
    state: Mutex<State>,
    /// Set for a client's slot: requests may be sent on ahead (`presend`).
    owner: Option<Arc<dyn OnLink>>,
}

#[derive(Debug, Default)]
struct State {
    delivery: Option<Delivery>,
    waker: Option<Waker>,
    /// In a pool's wait queue.
    queued: bool,
    offer: Option<Offer>,
}

impl HandOff {
    pub fn new() -> Arc<HandOff> {
        Arc::new(HandOff::default())
    }

    /// A client's slot: its queued requests may be sent on ahead; `owner` records the link.
    pub fn with_owner(owner: Arc<dyn OnLink>) -> Arc<HandOff> {
        Arc::new(HandOff {
            state: Mutex::default(),
            owner: Some(owner),
        })
    }

    /// Mark as queued (under the pool lock, as the entry is pushed), with the request that may
    /// be sent on ahead.
    pub(super) fn enqueue(&self, offer: Option<Offer>) {
        let mut s = self.state.lock().unwrap();
        debug_assert!(!s.queued && s.delivery.is_none());
        s.queued = true;
        s.offer = offer;
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

    /// `deliver` a server, except that a waiter whose request can go on ahead is not woken:
    /// true when the caller is to call `presend` once it has let go of the pool lock.
    pub(super) fn deliver_deferred(&self, server: ServerConn) -> bool {
        let waker = {
            let mut s = self.state.lock().unwrap();
            s.queued = false;
            let defer = self.owner.is_some()
                && s.waker.is_some()
                && !server.stream.is_tls()
                && s.offer.as_ref().is_some_and(|o| o.shard == server.shard);
            s.delivery = Some(Ok(server));
            if defer {
                return true;
            }
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        false
    }

    /// After `deliver_deferred`: write the waiting client's request to its server if their
    /// parameters match, record the link, and leave the client asleep until the server answers
    /// (its waker registered with the server socket); otherwise wake it to do all that itself.
    /// Nothing happens if the client took its delivery in the meantime.
    pub(super) fn presend(&self, now_us: u64) {
        let mut s = self.state.lock().unwrap();
        let st = &mut *s;
        let (Some(Ok(server)), Some(offer), Some(owner)) =
            (&mut st.delivery, &mut st.offer, &self.owner)
        else {
            return;
        };
        if server.params.packed()[..] == offer.params[..] {
            // readiness left from the previous transaction's reads would wake no one later
            server.stream.clear_read_ready();
            if let Ok(n) = server.stream.try_write(&offer.req) {
                offer.req.advance(n);
                offer.sent += n;
            }
            if offer.req.is_empty() {
                owner.linked(server, now_us);
                offer.sent_at = now_us.max(1);
                if let Some(w) = &st.waker
                    && server
                        .stream
                        .poll_read_ready(&mut Context::from_waker(w))
                        .is_pending()
                {
                    return;
                }
            }
        }
        if let Some(w) = st.waker.take() {
            drop(s);
            w.wake();
        }
    }

    /// Under the pool lock, for a wait that is given up: whether the slot was still queued (the
    /// caller removes its entry), a delivery that arrived but was never taken, and the offer
    /// (part of it may have gone to that server).
    pub(super) fn withdraw(&self) -> (bool, Option<Delivery>, Option<Offer>) {
        let mut s = self.state.lock().unwrap();
        s.waker = None;
        (
            std::mem::take(&mut s.queued),
            s.delivery.take(),
            s.offer.take(),
        )
    }

    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<(Delivery, Option<Offer>)> {
        let mut s = self.state.lock().unwrap();
        if let Some(d) = s.delivery.take() {
            return Poll::Ready((d, s.offer.take()));
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// A queued checkout: resolves with the server (moved to the waiting client's shard) or the
/// error, and keeps what is left of the offer for `take_back`; dropped before that, it
/// withdraws from the pool (see `Pool::withdraw`).
#[derive(Debug)]
pub struct Wait<'a> {
    pool: &'a Arc<super::Pool>,
    slot: &'a Arc<HandOff>,
    /// The waiting client's shard.
    shard: u16,
    done: bool,
    back: Option<Offer>,
}

impl<'a> Wait<'a> {
    pub(super) fn new(pool: &'a Arc<super::Pool>, slot: &'a Arc<HandOff>, shard: u16) -> Self {
        Wait {
            pool,
            slot,
            shard,
            done: false,
            back: None,
        }
    }

    /// The offer once the wait is over: its bytes not sent on ahead, `sent` and `sent_at`
    /// saying what went (None when the wait had none).
    pub fn take_back(&mut self) -> Option<Offer> {
        self.back.take()
    }
}

impl Future for Wait<'_> {
    type Output = Result<ServerConn, super::CheckoutError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.slot.poll_take(cx) {
            Poll::Ready((d, back)) => {
                self.done = true;
                self.back = back;
                Poll::Ready(match d {
                    Ok(s) => Ok(super::localize(s, self.shard)),
                    Err(Some((code, msg))) => Err(super::CheckoutError::Server(code, msg)),
                    Err(None) => Err(super::CheckoutError::WaitTimeout),
                })
            }
            Poll::Pending => Poll::Pending,
        }
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
mod tests;
