//! Walking the messages of both directions: requests counted and checked on the way in, ReadyForQuery, ParameterStatus and COPY state on the way out.

use super::{CopyTrack, Relay, append, prepared};
use crate::client::ClientError;
use crate::pool::Mode;
use crate::protocol::scan::Msg;
use crate::protocol::take_cstr;
use std::sync::atomic::Ordering::Relaxed;

impl Relay<'_> {
    /// Walk new client messages: count requests, drop Terminate and stray COPY data.
    pub(super) fn scan_client(&mut self) -> Result<(), ClientError> {
        let ps = self.ps.is_some();
        self.ps_stalled = false;
        loop {
            let buf = &mut self.conn.rbuf;
            let m = if ps {
                self.cscan.next_need(buf, prepared::client_need)?
            } else {
                self.cscan.next(buf, |_| false)?
            };
            let Some(m) = m else { break };
            if ps {
                match self.ps_client(&m)? {
                    prepared::PsFlow::Continue => {}
                    prepared::PsFlow::Consumed => continue,
                    // left for when a server is linked
                    prepared::PsFlow::Wait => {
                        self.ps_stalled = true;
                        break;
                    }
                }
            }
            let buf = &mut self.conn.rbuf;
            match m.tag {
                b'Q' => {
                    if self.disable_pqexec {
                        return Err(ClientError::fatal("PQexec disallowed"));
                    }
                    self.pending += 1;
                    self.copy.last_exec = false;
                    self.mark_query();
                }
                b'F' => {
                    self.copy.last_exec = false;
                    self.pending += 1;
                    self.mark_query();
                }
                b'S' => {
                    self.ext_open = false;
                    // a Sync sent while the server is in COPY-in mode is ignored by it
                    if !self.copy.ignoring {
                        self.pending += 1;
                        if self.copy.last_exec && !self.copy.end_seen {
                            self.copy.syncs_after_exec += 1;
                        }
                        self.mark_query();
                    }
                }
                b'P' => {
                    self.parses += 1;
                    self.ext_open = true;
                }
                b'B' => {
                    self.binds += 1;
                    self.ext_open = true;
                }
                b'E' => {
                    self.ext_open = true;
                    self.copy = CopyTrack {
                        last_exec: true,
                        ..Default::default()
                    };
                }
                b'D' | b'C' => self.ext_open = true,
                b'H' => {}
                b'd' | b'c' | b'f' => {
                    if self.server.is_none() && self.c_out.is_empty() && m.start == 0 {
                        // late COPY data after the server was released: dropped, as PgBouncer does
                        self.cscan.discard_head(buf);
                    } else if m.tag != b'd' {
                        self.copy_in = false;
                        self.copy.end_seen = true;
                        self.copy.ignoring = false;
                    }
                }
                b'X' => {
                    self.cscan.truncate(buf, m.start);
                    self.terminated = true;
                    break;
                }
                other => {
                    return Err(ClientError::Protocol(
                        crate::protocol::ProtocolError::UnknownPacket(other),
                    ));
                }
            }
        }
        let done = self.cscan.take_scanned(&mut self.conn.rbuf);
        append(&mut self.c_out, done);
        Ok(())
    }

    /// Walk new server messages: ReadyForQuery, tracked ParameterStatus, COPY-in start.
    pub(super) fn scan_server(&mut self) -> Result<(), ClientError> {
        if self.ps.is_some() {
            return if self.plain.on {
                self.scan_server_plain()
            } else {
                self.scan_server_ps()
            };
        }
        while let Some(m) = self.next_server_msg(|t| t == b'Z' || t == b'S')? {
            self.on_server_msg(&m)?;
        }
        let done = self.sscan.take_scanned(&mut self.s_in);
        append(&mut self.s_out, done);
        Ok(())
    }

    /// A request that expects a ReadyForQuery arrived: start the query clocks if none runs.
    #[inline]
    fn mark_query(&mut self) {
        if self.query_start.is_none() {
            self.query_start = Some(self.now_us);
        }
        if let Some(t) = &self.timers
            && t.query_start.load(Relaxed) == 0
        {
            t.query_start.store(self.now_ms, Relaxed);
        }
    }

    /// The next complete server message (with its body when `need_body` says so); a malformed
    /// one breaks the server link.
    pub(super) fn next_server_msg(
        &mut self,
        need_body: impl Fn(u8) -> bool,
    ) -> Result<Option<Msg>, ClientError> {
        self.sscan.next(&mut self.s_in, need_body).map_err(|_| {
            self.server_broken = true;
            ClientError::fatal("server conn crashed?")
        })
    }

    /// Bookkeeping for one server message: ReadyForQuery, tracked ParameterStatus, COPY-in start.
    /// Most messages (rows, completions) need none and return here without a call.
    #[inline(always)]
    pub(super) fn on_server_msg(&mut self, m: &Msg) -> Result<(), ClientError> {
        match m.tag {
            b'Z' | b'S' | b'G' | b'W' | b'E' | b'N' => self.on_server_msg_slow(m),
            _ => Ok(()),
        }
    }

    fn on_server_msg_slow(&mut self, m: &Msg) -> Result<(), ClientError> {
        match m.tag {
            b'E' | b'N' if self.pending == 0 => self.server_dirty = true,
            b'Z' => {
                self.server_dirty = false;
                let body = m.body.clone().unwrap();
                self.status = self.s_in.get(body.start).copied().unwrap_or(b'I');
                self.pending = self.pending.saturating_sub(1);
                self.queries += 1;
                if let Some(t) = self.query_start.take() {
                    let us = self.now_us.saturating_sub(t);
                    self.query_time_us += us;
                    self.pool.stats.local().query_hist.observe(us);
                    if self.pending > 0 {
                        self.query_start = Some(self.now_us);
                    }
                }
                if self.status == b'T' && self.mode == Mode::Statement {
                    return Err(ClientError::fatal(
                        "transaction blocks not allowed in statement pooling mode",
                    ));
                }
                if self.pending == 0 {
                    self.copy_in = false;
                    if let Some(t) = &self.timers {
                        t.query_start.store(0, Relaxed);
                        t.idle_tx.store((self.status != b'I') as u8, Relaxed);
                    }
                }
            }
            b'S' => {
                let body = &self.s_in[m.body.clone().unwrap()];
                if let Some((k, rest)) = take_cstr(body)
                    && let Some((v, _)) = take_cstr(rest)
                    && let Some(i) = self.shared.tracked.index_bytes(k)
                {
                    let v = String::from_utf8_lossy(v);
                    self.params.set(i, &v);
                    if let Some(s) = self.server.as_mut() {
                        s.params.set(i, &v);
                    }
                }
            }
            b'G' | b'W' => {
                self.copy_in = true;
                // COPY FROM STDIN run by Execute: Syncs the client pipelined after that Execute
                // (before its CopyDone) are ignored by the server, so no ReadyForQuery comes
                if m.tag == b'G' && self.copy.last_exec {
                    let n = std::mem::take(&mut self.copy.syncs_after_exec);
                    self.pending = self.pending.saturating_sub(n);
                    if let Some(ps) = self.ps.as_mut() {
                        ps.drop_ignored_syncs(n as usize);
                    }
                    if !self.copy.end_seen {
                        self.copy.ignoring = true;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}
