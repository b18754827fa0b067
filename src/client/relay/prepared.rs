//! Named prepared statements in transaction mode: client messages rewritten for the linked
//! server (pooler-wide names, Parse added where the server lacks a statement, synthetic
//! ParseComplete/CloseComplete) and server replies matched against the queue of expected ones.

use super::{Plain, Relay, append};
use crate::client::ClientError;
use crate::client::prepared::{BIND_PREFIX, Expect, Statement, cstr, empty_message};
use crate::protocol::scan::Msg;
use bytes::BufMut;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// How much of each client message the rewrite needs to see.
pub(super) fn client_need(tag: u8) -> usize {
    match tag {
        b'P' | b'D' | b'C' => usize::MAX,
        b'B' => BIND_PREFIX,
        _ => 0,
    }
}

/// Server messages whose bodies are inspected (or that must never be half-forwarded, so a
/// synthetic reply cannot land inside them).
fn server_need(tag: u8) -> bool {
    matches!(tag, b'Z' | b'S' | b'N' | b'A' | b'C' | b'1' | b'3')
}

/// What the relay does after `ps_client`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PsFlow {
    /// Count the message as usual.
    Continue,
    /// pgmux answered it (and the messages after it) itself.
    Consumed,
    /// It needs a linked server: left unscanned until after the checkout.
    Wait,
}

fn bad_packet() -> ClientError {
    ClientError::fatal("bad packet")
}

impl Relay<'_> {
    /// Handle one client message in prepared-statement mode.
    pub(super) fn ps_client(&mut self, m: &Msg) -> Result<PsFlow, ClientError> {
        // in plain mode None means it left plain mode: the message goes the tracked way
        if self.plain.on
            && let Some(flow) = self.plain_client(m)?
        {
            return Ok(flow);
        }
        let expect = match m.tag {
            b'P' | b'B' | b'D' | b'C' => {
                if self.server.is_none() && m.tag == b'P' && self.prepare_locally(m)? {
                    return Ok(PsFlow::Consumed);
                }
                if self.server.is_none() {
                    self.cscan.rewind(m.start);
                    self.need_server = true;
                    return Ok(PsFlow::Wait);
                }
                // the unnamed statement and portals need no rewrite and never wait: the message
                // stays where it is in the read buffer and goes out with its neighbours
                if let Some(expect) = self.unnamed_expect(m)? {
                    if m.tag == b'P' {
                        self.server_parses += 1;
                    }
                    self.push(expect);
                    self.flush_synthetic();
                    return Ok(PsFlow::Continue);
                }
                if self.must_wait_for_parse(m) {
                    self.cscan.rewind(m.start);
                    return Ok(PsFlow::Wait);
                }
                self.ps_rewrite(m)?;
                return Ok(PsFlow::Continue);
            }
            b'E' => Expect::Execute,
            b'S' if self.copy.ignoring => return Ok(PsFlow::Continue),
            b'S' => Expect::Sync,
            b'Q' | b'F' => Expect::Simple,
            _ => return Ok(PsFlow::Continue),
        };
        self.ps.as_mut().unwrap().expect.push_back(expect);
        Ok(PsFlow::Continue)
    }

    /// A client message while nothing is tracked (`Plain`): messages naming no prepared
    /// statement are forwarded and only counted; the first one naming one leaves plain mode
    /// (None: handle it as tracked) once the replies still owed can be put in the queue, or
    /// waits until they can.
    fn plain_client(&mut self, m: &Msg) -> Result<Option<PsFlow>, ClientError> {
        match m.tag {
            b'P' | b'B' | b'D' | b'C' => {
                if self.unnamed_expect(m)?.is_some() {
                    if m.tag == b'P' {
                        self.server_parses += 1;
                    }
                    self.plain.sent += 1;
                    return Ok(Some(PsFlow::Continue));
                }
            }
            b'E' => {
                self.plain.sent += 1;
                return Ok(Some(PsFlow::Continue));
            }
            // a Sync or Query ends what the open segment owes with a ReadyForQuery
            b'S' | b'Q' | b'F' => {
                self.plain.sent = 0;
                return Ok(Some(PsFlow::Continue));
            }
            _ => return Ok(Some(PsFlow::Continue)),
        }
        // requests ended by a Sync or Query are answered up to their ReadyForQuery without more
        // input from the client, as is a COPY the client's earlier bytes drive: wait for those
        if self.pending > 0 || self.copy_in || self.copy.ignoring {
            self.cscan.rewind(m.start);
            return Ok(Some(PsFlow::Wait));
        }
        if self.ext_open && self.plain.err {
            // the server reported an error in this segment and skips everything up to the
            // Sync: this message is never executed, so it goes as it is and nothing is tracked
            return Ok(Some(PsFlow::Continue));
        }
        // the open segment's requests whose replies have not come yet go in the queue first
        // (without a server: those scanned before this message, sent once one is linked)
        let owed = if self.ext_open {
            self.plain.sent.saturating_sub(self.plain.replies)
        } else {
            0
        };
        self.plain = Plain::default();
        let ps = self.ps.as_mut().unwrap();
        debug_assert!(ps.expect.is_empty());
        for _ in 0..owed {
            ps.expect.push_back(Expect::Plain);
        }
        Ok(None)
    }

    /// Server bytes while nothing is tracked: replies are forwarded as they come and counted
    /// for the open segment; DEALLOCATE ALL / DISCARD ALL still clear the statements.
    pub(super) fn scan_server_plain(&mut self) -> Result<(), ClientError> {
        while let Some(m) = self.next_server_msg(|t| matches!(t, b'Z' | b'S' | b'C'))? {
            self.on_server_msg(&m)?;
            match m.tag {
                b'1' | b'2' | b'3' | b'T' | b'n' | b'I' | b's' => self.plain.replies += 1,
                b'C' => {
                    self.plain.replies += 1;
                    self.on_command_complete(&m);
                }
                b'Z' => {
                    self.plain.replies = 0;
                    self.plain.err = false;
                }
                b'E' => self.plain.err = true,
                _ => {}
            }
        }
        let done = self.sscan.take_scanned(&mut self.s_in);
        append(&mut self.s_out, done);
        Ok(())
    }

    /// DEALLOCATE ALL and DISCARD ALL drop every statement of the client and of the server.
    fn on_command_complete(&mut self, m: &Msg) {
        let body = &self.s_in[m.body.clone().unwrap()];
        if body.starts_with(b"DEALLOCATE ALL\0") || body.starts_with(b"DISCARD ALL\0") {
            if let Some(ps) = self.ps.as_mut() {
                ps.clear();
            }
            if let Some(s) = self.server.as_mut() {
                s.prepared.clear();
            }
            self.count_statements();
        }
    }

    /// A Parse/Bind/Describe that relies on a statement whose Parse went to this server in an
    /// earlier, still unanswered pipeline segment waits for that answer: if that segment fails,
    /// the server skips the Parse, and this message must then prepare it again.
    fn must_wait_for_parse(&self, m: &Msg) -> bool {
        let (Some(ps), Some(body)) = (self.ps.as_ref(), m.body.as_ref()) else {
            return false;
        };
        // statements whose Parse is unanswered in a segment a later Sync has already closed;
        // usually none, and then nothing else is looked at
        let Some(last_sync) = ps.expect.iter().rposition(|e| *e == Expect::Sync) else {
            return false;
        };
        let mut pending = ps.expect.iter().take(last_sync).filter_map(|e| match e {
            Expect::Parse(Some(i), _) | Expect::SwallowParse(i) => Some(*i),
            _ => None,
        });
        let mut pending = pending.by_ref().peekable();
        if pending.peek().is_none() {
            return false;
        }
        let body = &self.conn.rbuf[body.clone()];
        let id = match m.tag {
            b'P' => cstr(body)
                .filter(|(n, _)| !n.is_empty())
                .and_then(|(_, key)| self.shared.statements.peek(key)),
            b'B' => cstr(body)
                .and_then(|(_, r)| cstr(r))
                .and_then(|(n, _)| ps.get(n))
                .map(|st| st.id),
            b'D' if body.first() == Some(&b'S') => cstr(&body[1..])
                .and_then(|(n, _)| ps.get(n))
                .map(|st| st.id),
            _ => None,
        };
        id.is_some_and(|id| pending.any(|i| i == id))
    }

    /// libpq's PQprepare (named Parse messages then Sync) from a client outside a transaction
    /// with no server: answered by pgmux itself, and the statement is prepared on whichever
    /// server first needs it. A blocking prepare then never waits for a server (pgbench -M
    /// prepared with more clients than servers would otherwise deadlock its own threads).
    /// Returns false when the messages do not have that shape; nothing is consumed then.
    fn prepare_locally(&mut self, m: &Msg) -> Result<bool, ClientError> {
        if self.status != b'I' || !self.c_out.is_empty() || !self.cscan.at_boundary() {
            return Ok(false);
        }
        if !self.ps.as_ref().is_some_and(|p| p.expect.is_empty()) {
            return Ok(false);
        }
        // walk complete messages from this Parse: named Parses, then one Sync
        let buf = &self.conn.rbuf[m.start..];
        let mut at = 0;
        let mut parses = Vec::new();
        loop {
            if buf.len() < at + 5 {
                return Ok(false);
            }
            let len = u32::from_be_bytes(buf[at + 1..at + 5].try_into().unwrap()) as usize;
            if len < 4 || buf.len() < at + 1 + len {
                return Ok(false);
            }
            let body = &buf[at + 5..at + 1 + len];
            match buf[at] {
                b'P' => {
                    let (name, _) = cstr(body).ok_or_else(bad_packet)?;
                    if name.is_empty() {
                        return Ok(false);
                    }
                    parses.push((at + 5, at + 5 + name.len(), at + 1 + len));
                }
                b'S' if !parses.is_empty() => {
                    at += 1 + len;
                    break;
                }
                _ => return Ok(false),
            }
            at += 1 + len;
        }
        // take the Parses and the Sync out of the client's stream and answer them here
        let mut head = self.cscan.take_scanned(&mut self.conn.rbuf);
        let tail = head.split_off(m.start);
        append(&mut self.c_out, head);
        debug_assert!(tail.len() <= at);
        let bytes = if tail.len() < at {
            let mut t = tail;
            t.unsplit(self.conn.rbuf.split_to(at - t.len()));
            t
        } else {
            tail
        };
        for (name_start, name_end, end) in parses {
            let name = &bytes[name_start..name_end];
            let st = self.shared.statements.intern(&bytes[name_end + 1..end]);
            self.ps
                .as_mut()
                .unwrap()
                .add(name, st)
                .map_err(ClientError::fatal)?;
            self.parses += 1;
            empty_message(&mut self.s_out, b'1');
        }
        crate::protocol::backend::ready_for_query(&mut self.s_out, b'I');
        self.count_statements();
        // nothing is owed and no server is linked: back to untracked
        self.plain = Plain::on();
        Ok(true)
    }

    /// Rewrite a Parse, Bind, Describe or Close naming a prepared statement for the linked
    /// server into `c_out` (`unnamed_expect` has already taken every message naming none).
    fn ps_rewrite(&mut self, m: &Msg) -> Result<(), ClientError> {
        // everything before this message goes out as it is
        let mut head = self.cscan.take_scanned(&mut self.conn.rbuf);
        let msg = head.split_off(m.start);
        append(&mut self.c_out, head);
        let body = m
            .body
            .as_ref()
            .map(|r| &msg[r.start - m.start..r.end - m.start])
            .ok_or_else(bad_packet)?;
        match m.tag {
            b'P' => {
                let (name, key) = cstr(body).ok_or_else(bad_packet)?;
                debug_assert!(!name.is_empty());
                self.server_parses += 1;
                let st = self.shared.statements.intern(key);
                let ps = self.ps.as_mut().unwrap();
                ps.add(name, st.clone()).map_err(ClientError::fatal)?;
                let name = bytes::Bytes::copy_from_slice(name);
                self.count_statements();
                let server = self.server.as_mut().unwrap();
                if server.prepared.touch(st.id) {
                    self.server_parses -= 1;
                    self.push(Expect::Synthetic(b'1', Some(name)));
                } else {
                    self.evict_for(&st);
                    st.write_parse(&mut self.c_out);
                    self.push(Expect::Parse(Some(st.id), Some(name)));
                }
            }
            b'B' => {
                let (portal, rest) = cstr(body).ok_or_else(bad_packet)?;
                let (stmt, rest) = cstr(rest).ok_or_else(bad_packet)?;
                let st = self.statement(stmt)?;
                self.ensure_prepared(&st);
                let new_len = 4 + m.body_len - stmt.len() + st.name.len();
                self.c_out.put_u8(b'B');
                self.c_out.put_u32(new_len as u32);
                self.c_out.put_slice(portal);
                self.c_out.put_u8(0);
                self.c_out.put_slice(st.name.as_bytes());
                self.c_out.put_u8(0);
                // the rest of the held prefix; anything beyond streams through unchanged
                self.c_out.put_slice(rest);
                self.push(Expect::Bind);
            }
            // Describe / Close of a named statement ('S'; portals are never rewritten)
            b'D' => {
                let (name, _) = cstr(&body[1..]).ok_or_else(bad_packet)?;
                let st = self.statement(name)?;
                self.ensure_prepared(&st);
                self.c_out.put_u8(b'D');
                self.c_out.put_u32((4 + 1 + st.name.len() + 1) as u32);
                self.c_out.put_u8(b'S');
                self.c_out.put_slice(st.name.as_bytes());
                self.c_out.put_u8(0);
                self.push(Expect::DescribeStatement);
            }
            b'C' => {
                let (name, _) = cstr(&body[1..]).ok_or_else(bad_packet)?;
                // only the client's mapping goes; the server keeps it for others
                self.ps.as_mut().unwrap().remove(name);
                self.count_statements();
                self.push(Expect::Synthetic(b'3', None));
            }
            _ => unreachable!("only P, B, D, C are rewritten"),
        }
        self.flush_synthetic();
        Ok(())
    }

    /// The reply expected for a Parse/Bind/Describe/Close that names no prepared statement
    /// (forwarded unchanged), or None when the message names one (rewritten).
    fn unnamed_expect(&self, m: &Msg) -> Result<Option<Expect>, ClientError> {
        let body = m
            .body
            .as_ref()
            .map(|r| &self.conn.rbuf[r.clone()])
            .ok_or_else(bad_packet)?;
        Ok(match m.tag {
            b'P' => {
                let (name, _) = cstr(body).ok_or_else(bad_packet)?;
                name.is_empty().then_some(Expect::Parse(None, None))
            }
            b'B' => {
                let (_, rest) = cstr(body).ok_or_else(bad_packet)?;
                let (stmt, _) = cstr(rest).ok_or_else(bad_packet)?;
                stmt.is_empty().then_some(Expect::Bind)
            }
            b'D' | b'C' => {
                let (&kind, rest) = body.split_first().ok_or_else(bad_packet)?;
                let (name, _) = cstr(rest).ok_or_else(bad_packet)?;
                match (m.tag, kind == b'S' && !name.is_empty()) {
                    (_, true) => None,
                    (b'D', false) if kind == b'S' => Some(Expect::DescribeStatement),
                    (b'D', false) => Some(Expect::DescribePortal),
                    _ => Some(Expect::Close),
                }
            }
            _ => None,
        })
    }

    #[inline]
    fn push(&mut self, e: Expect) {
        self.ps.as_mut().unwrap().expect.push_back(e);
    }

    fn count_statements(&self) {
        if let (Some(t), Some(ps)) = (&self.timers, &self.ps) {
            t.prepared.store(ps.names.len(), Relaxed);
        }
    }

    /// The client's statement by its name, or PgBouncer's FATAL.
    fn statement(&self, name: &[u8]) -> Result<Arc<Statement>, ClientError> {
        self.ps
            .as_ref()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| ClientError::fatal("prepared statement did not exist"))
    }

    /// Make room in the server's LRU for `st`, closing the least recently used statement.
    fn evict_for(&mut self, st: &Arc<Statement>) {
        let server = self.server.as_mut().unwrap();
        if let Some(old) = server.prepared.insert(st.clone(), self.ps_cap) {
            old.write_close(&mut self.c_out);
            self.push(Expect::SwallowClose);
        }
    }

    /// Prepare `st` on the linked server first if it lacks it (the reply is swallowed).
    fn ensure_prepared(&mut self, st: &Arc<Statement>) {
        if self.server.as_mut().unwrap().prepared.touch(st.id) {
            return;
        }
        self.evict_for(st);
        st.write_parse(&mut self.c_out);
        self.server_parses += 1;
        self.push(Expect::SwallowParse(st.id));
    }

    /// Send the synthetic replies at the head of the queue (everything before them is answered).
    #[inline]
    fn flush_synthetic(&mut self) {
        let head_synthetic = matches!(
            self.ps.as_ref().and_then(|p| p.expect.front()),
            Some(Expect::Synthetic(..))
        );
        if head_synthetic && self.sscan.at_boundary() {
            self.flush_synthetic_now();
        }
    }

    #[cold]
    fn flush_synthetic_now(&mut self) {
        let done = self.sscan.take_scanned(&mut self.s_in);
        append(&mut self.s_out, done);
        let ps = self.ps.as_mut().unwrap();
        while let Some(Expect::Synthetic(tag, _)) = ps.expect.front() {
            empty_message(&mut self.s_out, *tag);
            ps.expect.pop_front();
        }
    }

    /// Server bytes in prepared-statement mode: match replies to the queue, swallow the ones to
    /// requests pgmux added, and put synthetic replies in their place.
    pub(super) fn scan_server_ps(&mut self) -> Result<(), ClientError> {
        while let Some(m) = self.next_server_msg(server_need)? {
            self.on_server_msg(&m)?;
            let ps = self.ps.as_mut().unwrap();
            // the head's kind only (no clone of the statement name it may hold)
            let head = ps.expect.front().map(std::mem::discriminant);
            let is = |e: &Expect| head == Some(std::mem::discriminant(e));
            let mut swallow = false;
            match m.tag {
                b'1' => {
                    swallow = is(&Expect::SwallowParse(0));
                    ps.expect.pop_front();
                }
                b'3' => {
                    swallow = is(&Expect::SwallowClose);
                    ps.expect.pop_front();
                }
                b'2' => {
                    ps.expect.pop_front();
                }
                b'T' | b'n'
                    if is(&Expect::DescribeStatement)
                        || is(&Expect::DescribePortal)
                        || is(&Expect::Plain) =>
                {
                    ps.expect.pop_front();
                }
                b'C' | b'I' | b's' => {
                    if is(&Expect::Execute) || is(&Expect::Plain) {
                        ps.expect.pop_front();
                    }
                    if m.tag == b'C' {
                        self.on_command_complete(&m);
                    }
                }
                b'Z' => {
                    ps.expect.pop_front();
                }
                b'E' if !(head.is_none() || is(&Expect::Simple)) => {
                    self.ps_error_skip();
                }
                _ => {}
            }
            if swallow {
                let mut all = self.sscan.take_scanned(&mut self.s_in);
                let _dropped = all.split_off(m.start);
                append(&mut self.s_out, all);
            }
            self.flush_synthetic();
        }
        let done = self.sscan.take_scanned(&mut self.s_in);
        append(&mut self.s_out, done);
        Ok(())
    }

    /// An ErrorResponse in the extended protocol: the server skips everything up to Sync, so the
    /// replies to those requests never come; statements they would have created do not exist.
    fn ps_error_skip(&mut self) {
        let ps = self.ps.as_mut().unwrap();
        let server = self.server.as_mut();
        let mut undo_server = Vec::new();
        while let Some(e) = ps.expect.front() {
            if *e == Expect::Sync {
                break;
            }
            match ps.expect.pop_front().unwrap() {
                Expect::Parse(id, name) => {
                    if let Some(id) = id {
                        undo_server.push(id);
                    }
                    if let Some(n) = name {
                        ps.remove(&n);
                    }
                }
                Expect::SwallowParse(id) => undo_server.push(id),
                Expect::Synthetic(b'1', Some(n)) => ps.remove(&n),
                _ => {}
            }
        }
        if let Some(s) = server {
            for id in undo_server {
                s.prepared.remove(id);
            }
        }
        self.count_statements();
    }
}
