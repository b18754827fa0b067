//! Checkout: an idle server at once, or a place in the wait queue on the client's hand-off slot; split in two steps so the relay polls the wait itself (no nested future per transaction).

use super::handoff::{HandOff, Offer, Wait};
use super::{CheckoutError, Pool, localize, log_close, take_idle};
use crate::server::ServerConn;
use std::sync::Arc;

/// The first step of a checkout: a server, or a queued wait to poll (dropping it unpolled or
/// unfinished withdraws from the queue; see `Wait`).
#[derive(Debug)]
pub enum Begun<'a> {
    Ready(ServerConn),
    Queued(Wait<'a>),
}

impl Pool {
    /// Take a server for a client: an idle one (LIFO), else wait in FIFO order for one that is
    /// released or newly connected, for at most query_wait_timeout.
    pub async fn checkout(self: &Arc<Self>) -> Result<ServerConn, CheckoutError> {
        self.checkout_via(None, crate::clock::now_us(), &mut None)
            .await
    }

    /// `checkout`, waiting (if it has to) on the client's own hand-off slot, so a queued
    /// transaction allocates nothing; without one a slot is made for this wait. `now_us` is the
    /// caller's clock reading (`crate::clock`), the start of a wait. A queued wait takes
    /// `offer` (the request the releasing client may send on ahead, see `HandOff::presend`)
    /// and puts back what is left of it.
    pub async fn checkout_via(
        self: &Arc<Self>,
        slot: Option<&Arc<HandOff>>,
        now_us: u64,
        offer: &mut Option<Offer>,
    ) -> Result<ServerConn, CheckoutError> {
        let owned: Arc<HandOff>;
        let slot = match slot {
            Some(s) => s,
            None => {
                owned = HandOff::new();
                &owned
            }
        };
        match self.begin_checkout(slot, now_us, offer)? {
            Begun::Ready(s) => Ok(s),
            Begun::Queued(mut wait) => {
                let r = (&mut wait).await;
                *offer = wait.take_back();
                r
            }
        }
    }

    /// The first step of `checkout_via`: an idle server, or the client queued on `slot` with
    /// `offer` (taken; `Wait::take_back` returns what is left of it once the wait is over).
    pub fn begin_checkout<'a>(
        self: &'a Arc<Self>,
        slot: &'a Arc<HandOff>,
        now_us: u64,
        offer: &mut Option<Offer>,
    ) -> Result<Begun<'a>, CheckoutError> {
        let me = crate::shard::current();
        let mut g = self.inner.lock().unwrap();
        let hot = g.hot;
        while let Some(mut s) = if hot.round_robin && !g.idle.is_empty() {
            Some(g.idle.remove(0))
        } else {
            take_idle(&mut g.idle, me)
        } {
            if s.is_healthy() {
                g.active += 1;
                drop(g);
                return Ok(Begun::Ready(localize(s, me)));
            }
            self.free_slot(&mut g);
            self.forget(&mut g, &s);
            log_close(self, &s, "server conn crashed?", self.log_disconnections);
        }
        // fast fail while server logins are failing (server_login_retry), as PgBouncer
        if g.total == 0
            && let Some((at, code, msg)) = self.last_login_error.lock().unwrap().clone()
            && at.elapsed() < hot.login_retry
        {
            return Err(CheckoutError::Server(
                code,
                format!("server login has been failing, cached error: {msg} (server_login_retry)"),
            ));
        }
        slot.enqueue(offer.take());
        g.waiters.push(me, (now_us, slot.clone()));
        // no new connect (nor eviction for one) while enough are in flight
        let room = g.wants_connect();
        let opened = room && self.try_open(&mut g, 0);
        let capped = room && !opened && g.total < hot.size;
        drop(g);
        if opened {
            self.spawn_connect();
        } else if capped && self.evict_for_room() {
            // an idle server of another pool of this database/user was closed to make room
            let mut g = self.inner.lock().unwrap();
            if self.try_open(&mut g, 0) {
                drop(g);
                self.spawn_connect();
            }
        }
        Ok(Begun::Queued(Wait::new(self, slot, me)))
    }
}
