//! Giving the server back: after a transaction (release), when the client leaves (finish), and the per-transaction counters.

use super::Relay;
use crate::client::timers;
use crate::pool::Mode;
use crate::server::login::run_simple;
use std::sync::atomic::Ordering::Relaxed;

impl Relay<'_> {
    pub(super) fn release(&mut self) {
        if let Some(mut server) = self.server.take() {
            std::mem::swap(&mut self.s_in, &mut server.rbuf);
            // the reply queue is empty: nothing needs tracking until a statement is named
            self.plain = super::Plain::on();
            self.slot.unlink();
            if let Some(t) = &self.timers {
                t.xact_start.store(0, Relaxed);
                t.query_start.store(0, Relaxed);
                t.idle_tx.store(0, Relaxed);
                t.idle_since.store(self.now_ms, Relaxed);
                t.server_id.store(0, Relaxed);
                t.state.store(timers::IDLE, Relaxed);
            }
            self.flush_stats();
            self.pool.checkin_at(server, true, self.now_us);
        }
    }

    pub(super) fn flush_stats(&mut self) {
        if let Some(t) = &self.timers {
            t.xacts.fetch_add(1, Relaxed);
        }
        use crate::pool::stats::PoolStats as P;
        let s = self.pool.stats.local();
        P::add(&s.xacts, 1);
        P::add(&s.queries, std::mem::take(&mut self.queries));
        P::add(&s.bytes_received, std::mem::take(&mut self.bytes_in));
        P::add(&s.bytes_sent, std::mem::take(&mut self.bytes_out));
        P::add(&s.query_time_us, std::mem::take(&mut self.query_time_us));
        let parses = std::mem::take(&mut self.parses);
        P::add(&s.client_parses, parses);
        let sp = std::mem::take(&mut self.server_parses);
        // without statement tracking every Parse goes to the server as is
        P::add(
            &s.server_parses,
            if self.ps.is_some() { sp } else { parses },
        );
        P::add(&s.binds, std::mem::take(&mut self.binds));
        if let Some(t) = self.xact_start.take() {
            let us = self.now_us.saturating_sub(t);
            P::add(&s.xact_time_us, us);
            s.xact_hist.observe(us);
        }
    }

    /// After the client is gone: return a clean server (session mode: after the reset query),
    /// close one left inside a transaction.
    pub async fn finish(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        self.slot.unlink();
        self.flush_stats();
        if self.server_broken {
            self.pool.close_active(server, "server conn crashed?");
            return;
        }
        if let Some(why) = self.kill_server {
            self.pool.close_active(server, why);
            return;
        }
        if !self.server_clean() {
            let reason = if self.pending > 0 {
                "client disconnected with query in progress"
            } else {
                "client disconnect while server was not ready"
            };
            self.pool.close_active(server, reason);
            return;
        }
        if self.mode == Mode::Session
            && let Some(q) = self.pool.settings().reset_query.clone()
            && let Err(e) = run_simple(&mut server, &q, &self.shared.tracked).await
        {
            tracing::warn!("server_reset_query failed: {e}");
            self.pool.close_active(server, "server_reset_query failed");
            return;
        }
        std::mem::swap(&mut self.s_in, &mut server.rbuf);
        self.pool.checkin(server, true);
    }
}
