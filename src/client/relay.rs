//! The transaction relay: forwards raw bytes both ways, tracks message boundaries, and lends/returns the server.
//!
//! A server is taken when the client sends its first message of a transaction and returned on
//! ReadyForQuery 'I' with no Sync/Query outstanding, no unsynced extended-protocol messages, not in
//! COPY-in, and nothing half-forwarded. Both directions are full duplex with bounded buffers.

mod acquire;
mod prepared;
mod release;
mod scan;

use super::{ClientConn, ClientError};
use crate::cancel::CancelSlot;
use crate::client::timers::{self, ClientTimers, Limits};
use crate::params::ParamSet;
use crate::pool::{CheckoutError, Mode, Pool};
use crate::protocol::scan::Scanner;
use crate::server::ServerConn;
use crate::state::Shared;
use bytes::{Buf, BytesMut};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::Instant;
use tokio::io::AsyncWrite;

/// Stop reading a side while this many bytes wait to be written to the other.
const BACKPRESSURE: usize = 256 * 1024;
/// Read space reserved before a client read (PgBouncer's pkt_buf default).
const CLIENT_CHUNK: usize = 4096;
/// Read space reserved before a server read (results are larger).
const SERVER_CHUNK: usize = 8192;
/// An idle client frees a read buffer that grew past this (a large COPY or query) at once;
/// smaller ones are kept until the janitor finds the client idle (timers::TRIM_AFTER_MS).
const KEEP_BUF: usize = 64 * 1024;

pub fn checkout_error(e: CheckoutError) -> ClientError {
    match e {
        CheckoutError::WaitTimeout => ClientError::fatal("query_wait_timeout"),
        CheckoutError::Server(code, msg) => ClientError::Fatal {
            sqlstate: code,
            message: msg,
        },
        CheckoutError::Closed => ClientError::fatal("server shutting down"),
    }
}

pub struct Relay<'a> {
    conn: &'a mut ClientConn,
    shared: &'a Shared,
    pool: Arc<Pool>,
    /// The pool's mode when the client logged in.
    mode: Mode,
    params: ParamSet,
    slot: Arc<CancelSlot>,
    /// Where the pool hands this client a server when it has to queue (reused every transaction).
    handoff: Arc<crate::pool::HandOff>,
    cscan: Scanner,
    /// Complete client bytes waiting to be written to the server.
    c_out: BytesMut,
    /// Bytes read from the server, not yet scanned.
    s_in: BytesMut,
    sscan: Scanner,
    /// Complete server bytes waiting to be written to the client.
    s_out: BytesMut,
    server: Option<ServerConn>,
    /// ReadyForQuery messages still expected (one per Query, Sync, FunctionCall).
    pending: u32,
    /// Extended-protocol messages sent since the last Sync.
    ext_open: bool,
    copy_in: bool,
    /// Status byte of the last ReadyForQuery.
    status: u8,
    terminated: bool,
    /// The linked server failed a read or write.
    server_broken: bool,
    /// The server sent an ErrorResponse or NoticeResponse with no request outstanding (a dying
    /// backend's FATAL right after a ReadyForQuery): it is not released before the next
    /// ReadyForQuery, as PgBouncer's `ready = false`.
    server_dirty: bool,
    /// Timestamps for the janitor's timeouts (None when no timeout applies).
    timers: Option<Arc<ClientTimers>>,
    /// The janitor ended this client; close the server with this reason.
    kill_server: Option<&'static str>,
    /// server_check_query (None: disabled; "<empty>" sends an empty query) and server_check_delay.
    check_query: Option<String>,
    check_delay: std::time::Duration,
    disable_pqexec: bool,
    started: Instant,
    /// When the transaction got its server (µs of `crate::clock`, as every `*_start` here).
    xact_start: Option<u64>,
    bytes_in: u64,
    bytes_out: u64,
    queries: u64,
    query_time_us: u64,
    parses: u64,
    binds: u64,
    /// When the oldest unanswered query (Query, Sync, FunctionCall) was received.
    query_start: Option<u64>,
    /// Parse messages sent to servers (differs from `parses` when statements are tracked).
    server_parses: u64,
    /// Named prepared statements tracked per client (transaction/statement mode with
    /// max_prepared_statements > 0).
    ps: Option<Box<crate::client::prepared::ClientStatements>>,
    /// Nothing is tracked while the client names no prepared statement (see `Plain`).
    plain: Plain,
    /// max_prepared_statements: the per-server LRU size.
    ps_cap: usize,
    /// A message that needs a linked server was left unscanned.
    need_server: bool,
    /// Scanning stopped at a message that waits (for a server or a pending Parse): reading
    /// from the client pauses once a backlog builds up.
    ps_stalled: bool,
    copy: CopyTrack,
    /// Free the buffers at the next idle wait (set at login: the startup's buffer goes).
    trim_next: bool,
    /// The clock read once per I/O event (`tick`), used by every timestamp taken while
    /// handling it.
    now_us: u64,
    now_ms: u64,
}

/// Prepared-statement mode while the reply queue is empty and every request the server still
/// owes a reply names no prepared statement: nothing is queued or matched, replies are only
/// counted, until a message naming a statement arrives (then the open segment's unanswered
/// requests are queued as `Expect::Plain`). Entered again whenever the server is released and
/// after a prepare pgmux answered itself.
#[derive(Debug, Default, Clone, Copy)]
struct Plain {
    on: bool,
    /// Requests (Parse, Bind, Describe, Close, Execute) sent since the last Sync or Query.
    sent: u32,
    /// Replies to them (ParseComplete ... CommandComplete) since the last ReadyForQuery.
    replies: u32,
    /// An ErrorResponse arrived since the last ReadyForQuery.
    err: bool,
}

impl Plain {
    fn on() -> Self {
        Plain {
            on: true,
            ..Default::default()
        }
    }
}

/// Syncs around an extended-protocol COPY FROM STDIN (the server ignores those it receives in
/// COPY-in mode).
#[derive(Debug, Default, Clone, Copy)]
struct CopyTrack {
    /// The client's latest request was an Execute.
    last_exec: bool,
    /// Syncs sent since that Execute and before a CopyDone/CopyFail.
    syncs_after_exec: u32,
    /// The client sent CopyDone or CopyFail since that Execute.
    end_seen: bool,
    /// The server is in COPY-in mode and the client has not ended it: its Syncs are ignored.
    ignoring: bool,
}

impl<'a> Relay<'a> {
    pub fn new(
        conn: &'a mut ClientConn,
        shared: &'a Shared,
        pool: Arc<Pool>,
        params: ParamSet,
        slot: Arc<CancelSlot>,
        limits: Limits,
        meta: timers::ClientMeta,
    ) -> Self {
        let t = Arc::new(ClientTimers::with_meta(limits, meta));
        shared.timers.insert(conn.id, t.clone());
        let timers = Some(t);
        let handoff = crate::pool::HandOff::with_owner(Arc::new(acquire::LinkMarks {
            cancel: slot.clone(),
            timers: timers.clone(),
        }));
        let cfg = shared.config();
        let max = cfg.general.max_packet_size as usize;
        let mode = pool.settings().mode;
        Relay {
            conn,
            shared,
            mode,
            pool,
            params,
            slot,
            handoff,
            cscan: Scanner::new(max),
            c_out: BytesMut::new(),
            s_in: BytesMut::new(),
            sscan: Scanner::new(usize::MAX >> 1),
            s_out: BytesMut::new(),
            server: None,
            pending: 0,
            ext_open: false,
            copy_in: false,
            status: b'I',
            terminated: false,
            server_broken: false,
            server_dirty: false,
            timers,
            kill_server: None,
            check_query: match cfg.general.server_check_query.trim() {
                "" => None,
                "<empty>" => Some(String::new()),
                q => Some(q.to_string()),
            },
            check_delay: cfg.general.server_check_delay,
            disable_pqexec: cfg.general.disable_pqexec,
            started: Instant::now(),
            xact_start: None,
            bytes_in: 0,
            bytes_out: 0,
            queries: 0,
            query_time_us: 0,
            parses: 0,
            binds: 0,
            query_start: None,
            server_parses: 0,
            ps: (cfg.general.max_prepared_statements > 0 && mode != Mode::Session)
                .then(Default::default),
            plain: Plain::on(),
            ps_cap: cfg.general.max_prepared_statements as usize,
            need_server: false,
            ps_stalled: false,
            copy: CopyTrack::default(),
            trim_next: true,
            now_us: crate::clock::now_us(),
            now_ms: crate::clock::now_ms(),
        }
    }

    /// Read the clock (once per I/O event).
    #[inline]
    pub(super) fn tick(&mut self) {
        self.now_us = crate::clock::now_us();
        self.now_ms = self.now_us / 1000;
    }

    pub fn conn_prefix(&self) -> String {
        self.conn.prefix()
    }

    pub fn age_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Relay until the client leaves. `Ok` means the client closed the session normally.
    pub async fn run(&mut self) -> Result<(), ClientError> {
        loop {
            self.scan_client()?;
            if self.terminated {
                return Ok(());
            }
            if self.server.is_none() && (!self.c_out.is_empty() || self.need_server) {
                self.acquire().await?;
                self.need_server = false;
                // scan again with the server known (prepared statements are rewritten for it)
                continue;
            }
            // to the server first, then release, then to the client: the server is back in the
            // pool before the client can see the ReadyForQuery that ends the transaction (so
            // SHOW POOLS, run right after, never counts it as still in use), and a waiting
            // client gets it one write sooner
            self.write_server_now()?;
            if self.server.is_some() && self.releasable() && self.mode != Mode::Session {
                self.release();
            }
            self.write_client_now()?;
            self.step().await?;
        }
    }

    /// One round of I/O: read or write whichever side is ready.
    async fn step(&mut self) -> Result<(), ClientError> {
        let c_room = self.c_out.len() < BACKPRESSURE
            && !(self.ps_stalled && self.conn.rbuf.len() >= BACKPRESSURE);
        let s_room = self.s_out.len() < BACKPRESSURE;
        // an idle client (no server, nothing buffered) waits for its next message; it keeps its
        // buffers while it is busy and frees them once idle for a while, so 1000s of connected
        // clients cost little memory, as in PgBouncer
        if self.server.is_none()
            && self.conn.rbuf.is_empty()
            && self.s_out.is_empty()
            && !self.conn.stream.is_tls()
        {
            let ready = loop {
                if self.trim_next
                    || self.conn.rbuf.capacity() > KEEP_BUF
                    || self.timers.as_ref().is_some_and(|t| t.take_trim())
                {
                    self.free_buffers();
                } else if let Some(t) = &self.timers
                    && !t.holds_buffers.load(Relaxed)
                {
                    t.holds_buffers.store(true, Relaxed);
                }
                let (timers, stream) = (self.timers.as_deref(), &self.conn.stream);
                let r = std::future::poll_fn(|cx| {
                    if let Some(t) = timers {
                        if t.poll_killed(cx).is_ready() {
                            return Poll::Ready(Idle::Killed);
                        }
                        if t.poll_trim(cx).is_ready() {
                            return Poll::Ready(Idle::Trim);
                        }
                    }
                    stream.poll_read_ready(cx).map(Idle::Readable)
                })
                .await;
                break match r {
                    Idle::Killed => None,
                    Idle::Trim => continue,
                    Idle::Readable(r) => Some(r),
                };
            };
            match ready {
                // go on to read: the read below consumes the readiness
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(e.into()),
                None => {
                    return Err(ClientError::fatal(
                        self.timers
                            .as_ref()
                            .map(|t| t.killed().message())
                            .unwrap_or("client_idle_timeout"),
                    ));
                }
            }
        }
        let conn = &mut *self.conn;
        let (cstream, cbuf) = (&mut conn.stream, &mut conn.rbuf);
        if cbuf.capacity() - cbuf.len() < 512 {
            cbuf.reserve(CLIENT_CHUNK);
        }
        let mut server = self.server.as_mut().map(|s| &mut s.stream);
        if server.is_some() && self.s_in.capacity() - self.s_in.len() < 1024 {
            self.s_in.reserve(SERVER_CHUNK);
        }
        let (timers, c_out, s_out, s_in) = (
            self.timers.as_deref(),
            &self.c_out,
            &self.s_out,
            &mut self.s_in,
        );
        // one hand-written poll over both sockets, in a fixed order (kill switch, writes,
        // then reads): no per-round futures as a `select!` would build
        let ev = std::future::poll_fn(|cx| {
            if let Some(t) = timers
                && t.poll_killed(cx).is_ready()
            {
                return Poll::Ready(Ev::Killed);
            }
            if let Some(ss) = server.as_deref_mut()
                && !c_out.is_empty()
                && let Poll::Ready(r) = Pin::new(ss).poll_write(cx, c_out)
            {
                return Poll::Ready(Ev::ToServer(r));
            }
            if !s_out.is_empty()
                && let Poll::Ready(r) = Pin::new(&mut *cstream).poll_write(cx, s_out)
            {
                return Poll::Ready(Ev::ToClient(r));
            }
            if s_room
                && let Some(ss) = server.as_deref_mut()
                && let Poll::Ready(r) = ss.poll_read_buf(cx, s_in)
            {
                return Poll::Ready(Ev::FromServer(r));
            }
            if c_room && let Poll::Ready(r) = cstream.poll_read_buf(cx, cbuf) {
                return Poll::Ready(Ev::FromClient(r));
            }
            Poll::Pending
        })
        .await;
        self.tick();
        match ev {
            Ev::Killed => {
                let why = self
                    .timers
                    .as_ref()
                    .map(|t| t.killed().message())
                    .unwrap_or("client_idle_timeout");
                if self.server.is_some() {
                    self.kill_server = Some(why);
                }
                return Err(ClientError::fatal(why));
            }
            Ev::ToServer(Ok(n)) if n > 0 => self.c_out.advance(n),
            Ev::ToServer(_) | Ev::FromServer(Err(_)) | Ev::FromServer(Ok(0)) => {
                self.server_broken = true;
                return Err(ClientError::fatal("server conn crashed?"));
            }
            Ev::FromServer(Ok(n)) => {
                if let Some(t) = &self.timers {
                    t.server_activity.store(self.now_ms, Relaxed);
                }
                self.bytes_out += n as u64;
                self.scan_server()?;
            }
            Ev::ToClient(Ok(n)) if n > 0 => self.s_out.advance(n),
            Ev::ToClient(Ok(_)) => {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
            Ev::ToClient(Err(e)) | Ev::FromClient(Err(e)) => return Err(e.into()),
            Ev::FromClient(Ok(0)) => {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            Ev::FromClient(Ok(n)) => self.bytes_in += n as u64,
        }
        Ok(())
    }

    /// Drop the relay's buffers (an idle client).
    fn free_buffers(&mut self) {
        self.trim_next = false;
        self.conn.rbuf = BytesMut::new();
        self.s_in = BytesMut::new();
        self.c_out = BytesMut::new();
        self.s_out = BytesMut::new();
        if let Some(t) = &self.timers {
            t.holds_buffers.store(false, Relaxed);
        }
    }

    /// Write what is ready now if the socket takes it: the common case needs no extra poll
    /// round, and the written bytes stop pinning their read buffer.
    fn write_client_now(&mut self) -> Result<(), ClientError> {
        if !self.s_out.is_empty() && !self.conn.stream.is_tls() {
            match self.conn.stream.try_write(&self.s_out) {
                Ok(n) => self.s_out.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The same towards the server.
    fn write_server_now(&mut self) -> Result<(), ClientError> {
        if !self.c_out.is_empty()
            && let Some(server) = &mut self.server
            && !server.stream.is_tls()
        {
            match server.stream.try_write(&self.c_out) {
                Ok(n) => self.c_out.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    self.server_broken = true;
                    return Err(ClientError::fatal("server conn crashed?"));
                }
            }
        }
        Ok(())
    }

    fn releasable(&self) -> bool {
        self.ps.as_ref().is_none_or(|p| p.expect.is_empty()) && self.server_clean()
    }

    /// The server is between transactions with nothing in flight either way.
    fn server_clean(&self) -> bool {
        self.status == b'I'
            && !self.server_dirty
            && self.pending == 0
            && !self.ext_open
            && !self.copy_in
            && self.c_out.is_empty()
            && self.cscan.at_boundary()
            && self.sscan.at_boundary()
            && self.s_in.is_empty()
    }
}

/// Queue `more` behind `out` (no copy when they are adjacent in one allocation).
#[inline]
fn append(out: &mut BytesMut, more: BytesMut) {
    if more.is_empty() {
        return;
    }
    if out.is_empty() {
        *out = more;
    } else {
        out.unsplit(more);
    }
}

/// Outcome of one I/O round.
enum Ev {
    Killed,
    ToServer(std::io::Result<usize>),
    ToClient(std::io::Result<usize>),
    FromServer(std::io::Result<usize>),
    FromClient(std::io::Result<usize>),
}

/// What woke an idle client.
enum Idle {
    Killed,
    Trim,
    Readable(std::io::Result<()>),
}

impl Drop for Relay<'_> {
    fn drop(&mut self) {
        if self.timers.is_some() {
            self.shared.timers.remove(&self.conn.id);
        }
        if let Some(server) = self.server.take() {
            self.slot.unlink();
            self.pool
                .close_active(server, "client disconnect while server was not ready");
        }
    }
}
