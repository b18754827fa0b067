//! Taking a server for a transaction: PAUSE and shutdown checks, the wait queue with query_wait_notify, server_check_query, parameter sync.

use super::{Relay, checkout_error};
use crate::cancel::CancelSlot;
use crate::client::ClientError;
use crate::client::timers::{self, ClientTimers};
use crate::pool::{Begun, Mode, Offer};
use crate::server::ServerConn;
use crate::server::login::run_simple;
use bytes::BytesMut;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;

/// What the releasing client records for this one when it sends its request on ahead
/// (`HandOff::presend`): the same as `acquire` records itself.
#[derive(Debug)]
pub(super) struct LinkMarks {
    pub cancel: Arc<CancelSlot>,
    pub timers: Option<Arc<ClientTimers>>,
}

impl crate::pool::OnLink for LinkMarks {
    fn linked(&self, server: &ServerConn, now_us: u64) {
        mark_linked(&self.cancel, self.timers.as_deref(), server, now_us / 1000);
    }
}

/// The client is linked to `server`: cancel requests go there; the janitor and SHOW CLIENTS
/// see it active.
fn mark_linked(cancel: &CancelSlot, t: Option<&ClientTimers>, server: &ServerConn, now_ms: u64) {
    cancel.link(&server.addr, server.key);
    if let Some(t) = t {
        t.xact_start.store(now_ms, Relaxed);
        t.server_activity.store(now_ms, Relaxed);
        t.wait_start.store(0, Relaxed);
        t.request_time.store(now_ms, Relaxed);
        t.server_id.store(server.id, Relaxed);
        t.state.store(timers::LINKED, Relaxed);
    }
}

impl Relay<'_> {
    /// Take a server for the next transaction and bring its tracked parameters in line.
    pub(super) async fn acquire(&mut self) -> Result<(), ClientError> {
        // the clock was read when the request arrived
        let wait_start = self.now_us;
        if let Some(t) = &self.timers {
            t.wait_start.store(self.now_ms, Relaxed);
            t.state.store(timers::WAITING, Relaxed);
        }
        // SHUTDOWN WAIT_FOR_SERVERS (SIGINT): a client that has had its transactions is sent
        // away at this boundary (it reconnects to the new process); one accepted just before the
        // listener closed still gets its first transaction, so a restart loses no work
        if self.shared.shutdown_mode.load(Relaxed) == crate::state::SHUTDOWN_WAIT_FOR_SERVERS
            && self
                .timers
                .as_ref()
                .is_none_or(|t| t.xacts.load(Relaxed) > 0)
        {
            return Err(ClientError::fatal("server shutting down"));
        }
        // PAUSE / SUSPEND: new transactions wait for RESUME, bounded by query_wait_timeout
        if self.shared.pause.is_paused(&self.pool.db) {
            let limit = self.pool.settings().query_wait_timeout;
            let t = self.timers.clone();
            tokio::select! {
                ok = self.shared.pause.wait_resumed(&self.pool.db, limit) => if !ok {
                    return Err(ClientError::fatal("query_wait_timeout"));
                },
                _ = killed(t.as_deref()) => return Err(killed_error(t.as_deref())),
            }
        }
        loop {
            let mut offer = self.offer();
            let r = self.checkout_with_notice(&mut offer).await;
            // what was not sent on ahead is written as usual; `sent_at`: all of it was, and the
            // link recorded then
            let (sent, sent_at) = match offer {
                Some(o) => {
                    self.c_out = o.req;
                    (o.sent, o.sent_at)
                }
                None => (0, 0),
            };
            let mut server = r?;
            self.tick();
            // server_check_delay / server_check_query: test a server that sat idle too long
            // (one handed over with a request sent on ahead was in use just now)
            if sent == 0
                && let Some(q) = &self.check_query
                && self.now_us.saturating_sub(server.last_used)
                    >= crate::clock::us(self.check_delay)
                && run_simple(&mut server, q, &self.shared.tracked)
                    .await
                    .is_err()
            {
                self.pool.close_active(server, "server check failed");
                continue;
            }
            // (a request is sent on ahead only to a server with the client's parameters)
            if sent == 0
                && let Some(sql) = self.params.sync_sql(&server.params, &self.shared.tracked)
            {
                match run_simple(&mut server, &sql, &self.shared.tracked).await {
                    Ok(()) => {
                        for i in 0..self.shared.tracked.len() {
                            if self.params.get(i).is_some()
                                && let Some(v) = server.params.get(i)
                            {
                                let v = v.to_string();
                                self.params.set(i, &v);
                            }
                        }
                    }
                    Err(crate::server::ServerError::Login { sqlstate, message }) => {
                        self.pool.close_active(server, "invalid server parameter");
                        return Err(ClientError::Fatal { sqlstate, message });
                    }
                    Err(_) => {
                        // the idle server died under us: try another one
                        self.pool.close_active(server, "server conn crashed?");
                        continue;
                    }
                }
            }
            let linked_at = if sent_at > 0 {
                sent_at
            } else {
                mark_linked(&self.slot, self.timers.as_deref(), &server, self.now_ms);
                self.now_us
            };
            let stats = self.pool.stats.local();
            let waited = linked_at.saturating_sub(wait_start);
            crate::pool::stats::PoolStats::add(&stats.wait_time_us, waited);
            stats.wait_hist.observe(waited);
            crate::pool::stats::PoolStats::add(&stats.server_assignments, 1);
            self.status = b'I';
            self.xact_start = Some(linked_at);
            // the server's own read buffer serves this transaction
            std::mem::swap(&mut self.s_in, &mut server.rbuf);
            self.server = Some(server);
            return Ok(());
        }
    }

    /// Checkout; if the client waits longer than query_wait_notify, tell it once with
    /// PgBouncer's NOTICE; end the wait when the janitor ends the client (query_timeout while
    /// queued, admin commands). The janitor watches the wait (query_wait_notify, query_timeout,
    /// query_wait_timeout): no timer is armed per checkout, and one hand-written poll (no
    /// `select!` futures) checks the checkout, then the kill switch and the notice flag.
    async fn checkout_with_notice(
        &mut self,
        offer: &mut Option<Offer>,
    ) -> Result<ServerConn, ClientError> {
        // field borrows, no Arc clones: this runs once per transaction
        let t = self.timers.as_deref();
        if let Some(t) = t
            && t.wait_notice.load(Relaxed) != 0
        {
            t.wait_notice.store(0, Relaxed);
        }
        // the queued wait is polled here, not through a checkout future of its own: one
        // future state less to read on every poll
        let mut wait = match self
            .pool
            .begin_checkout(&self.handoff, self.now_us, offer)
            .map_err(checkout_error)?
        {
            Begun::Ready(s) => return Ok(s),
            Begun::Queued(w) => w,
        };
        loop {
            let r = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = std::pin::Pin::new(&mut wait).poll(cx) {
                    return Poll::Ready(Some(r));
                }
                match t {
                    Some(t) => t.poll_killed_or_notice(cx).map(|()| None),
                    None => Poll::Pending,
                }
            })
            .await;
            if let Some(r) = r {
                *offer = wait.take_back();
                return r.map_err(checkout_error);
            }
            let Some(t) = t else { continue };
            if t.killed() != timers::Kill::None {
                return Err(killed_error(Some(t)));
            }
            t.wait_notice.store(2, Relaxed);
            if self.s_out.is_empty() {
                let mut b = BytesMut::new();
                crate::protocol::backend::notice_response(
                    &mut b,
                    "NOTICE",
                    "00000",
                    "No server connection available in postgres backend, client being queued",
                );
                let _ = self.conn.write_all(&b).await;
            }
        }
    }
}

impl Relay<'_> {
    /// The request a releasing client may send on ahead if this one has to queue: complete,
    /// ending in a message the server answers (so this client is woken by the answer), and the
    /// same whichever server gets it (nothing waits for a server to be rewritten, no check query
    /// due).
    fn offer(&mut self) -> Option<Offer> {
        if self.mode == Mode::Session
            || self.c_out.is_empty()
            || self.need_server
            || self.ps_stalled
            || !self.conn.rbuf.is_empty()
            || self.pending == 0
            || self.ext_open
            || self.copy_in
            || (self.check_query.is_some() && self.check_delay.is_zero())
        {
            return None;
        }
        Some(Offer {
            req: std::mem::take(&mut self.c_out),
            params: self.params.packed().clone(),
            shard: crate::shard::current(),
            sent: 0,
            sent_at: 0,
        })
    }
}

fn killed_error(t: Option<&crate::client::timers::ClientTimers>) -> ClientError {
    ClientError::fatal(
        t.map(|t| t.killed().message())
            .unwrap_or("admin forced disconnect"),
    )
}

/// Resolves when the janitor has ended this client; never without timers.
async fn killed(t: Option<&crate::client::timers::ClientTimers>) {
    match t {
        Some(t) => t.wait_killed().await,
        None => std::future::pending().await,
    }
}
