//! Protocol-level named prepared statements in transaction mode: the pooler-wide statement
//! registry, each client's name → statement map, and the queue of replies the server owes.

use bytes::{BufMut, Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Bytes of a Bind that must be held to read its portal and statement names.
pub const BIND_PREFIX: usize = 4096;

/// One distinct statement (query text + parameter types) under its pooler-wide name.
#[derive(Debug)]
pub struct Statement {
    pub id: u64,
    /// `PGMUX_<id>`: the name servers know it by.
    pub name: String,
    /// The Parse body after the name: query text, NUL, parameter count and type OIDs.
    pub key: Bytes,
}

impl Statement {
    /// The Parse message that prepares this statement on a server.
    pub fn write_parse(&self, out: &mut BytesMut) {
        out.put_u8(b'P');
        out.put_u32((4 + self.name.len() + 1 + self.key.len()) as u32);
        out.put_slice(self.name.as_bytes());
        out.put_u8(0);
        out.put_slice(&self.key);
    }

    /// Close('S') for this statement (LRU eviction on a server).
    pub fn write_close(&self, out: &mut BytesMut) {
        out.put_u8(b'C');
        out.put_u32((4 + 1 + self.name.len() + 1) as u32);
        out.put_u8(b'S');
        out.put_slice(self.name.as_bytes());
        out.put_u8(0);
    }
}

/// Pooler-wide interning of statements, so clients preparing the same text share one server-side
/// statement. Bounded in entries and bytes; when full, new statements still work but are not
/// shared.
#[derive(Debug)]
pub struct StatementRegistry {
    inner: Mutex<RegistryInner>,
    next: AtomicU64,
    max_entries: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct RegistryInner {
    map: HashMap<Bytes, Arc<Statement>>,
    bytes: usize,
}

impl StatementRegistry {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        StatementRegistry {
            inner: Mutex::new(RegistryInner::default()),
            next: AtomicU64::new(1),
            max_entries,
            max_bytes,
        }
    }

    pub fn intern(&self, key: &[u8]) -> Arc<Statement> {
        let mut g = self.inner.lock().unwrap();
        if let Some(s) = g.map.get(key) {
            return s.clone();
        }
        let id = self.next.fetch_add(1, Relaxed);
        let st = Arc::new(Statement {
            id,
            name: format!("PGMUX_{id}"),
            key: Bytes::copy_from_slice(key),
        });
        // entries no client refers to any more are dropped first
        if g.map.len() >= self.max_entries || g.bytes + key.len() > self.max_bytes {
            let before = g.map.len();
            g.map.retain(|_, s| Arc::strong_count(s) > 1);
            if g.map.len() != before {
                g.bytes = g.map.keys().map(|k| k.len()).sum();
            }
        }
        if g.map.len() < self.max_entries && g.bytes + key.len() <= self.max_bytes {
            g.bytes += key.len();
            g.map.insert(st.key.clone(), st.clone());
        }
        st
    }

    /// The id a statement text already has, if registered.
    pub fn peek(&self, key: &[u8]) -> Option<u64> {
        self.inner.lock().unwrap().map.get(key).map(|s| s.id)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the server owes the client for each request sent, in order, and replies pgmux makes up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A Parse the client sent (forwarded): its ParseComplete goes to the client. The statement
    /// id (None for the unnamed statement) and the client's name, to undo on error.
    Parse(Option<u64>, Option<Bytes>),
    /// A Parse pgmux added before a Bind/Describe: its ParseComplete is swallowed.
    SwallowParse(u64),
    /// A Close pgmux sent to evict a statement: its CloseComplete is swallowed.
    SwallowClose,
    /// A request sent while nothing was tracked (Parse, Bind, Describe, Close or Execute naming
    /// no statement), still unanswered when tracking began: its reply is forwarded.
    Plain,
    Bind,
    DescribeStatement,
    DescribePortal,
    Execute,
    Close,
    Sync,
    /// A simple Query or FunctionCall: answered up to ReadyForQuery.
    Simple,
    /// A reply pgmux sends itself when everything before it has been answered (with the
    /// client's statement name for a ParseComplete, to undo if the server skips past it).
    Synthetic(u8, Option<Bytes>),
}

/// A client's named statements and the reply queue while prepared statements are tracked.
#[derive(Debug)]
pub struct ClientStatements {
    pub names: HashMap<Bytes, Arc<Statement>>,
    bytes: usize,
    pub expect: VecDeque<Expect>,
}

/// A client may not hold more than this many named statements, or this many bytes of them.
pub const MAX_CLIENT_STATEMENTS: usize = 10_000;
pub const MAX_CLIENT_STATEMENT_BYTES: usize = 16 * 1024 * 1024;

impl Default for ClientStatements {
    fn default() -> Self {
        ClientStatements {
            names: HashMap::new(),
            bytes: 0,
            expect: VecDeque::with_capacity(16),
        }
    }
}

impl ClientStatements {
    /// Register `name`; Err with PgBouncer's FATAL text when it is taken or the client is over
    /// its bounds.
    pub fn add(&mut self, name: &[u8], st: Arc<Statement>) -> Result<(), &'static str> {
        if self.names.contains_key(name) {
            return Err("prepared statement name is already in use");
        }
        let size = name.len() + st.key.len();
        if self.names.len() >= MAX_CLIENT_STATEMENTS
            || self.bytes + size > MAX_CLIENT_STATEMENT_BYTES
        {
            return Err("too many prepared statements for one client");
        }
        self.bytes += size;
        self.names.insert(Bytes::copy_from_slice(name), st);
        Ok(())
    }

    pub fn remove(&mut self, name: &[u8]) {
        if let Some(st) = self.names.remove(name) {
            self.bytes -= name.len() + st.key.len();
        }
    }

    pub fn clear(&mut self) {
        self.names.clear();
        self.bytes = 0;
    }

    /// The server entered COPY-in for the Execute at the head: the next `n` Syncs after it were
    /// sent during COPY-in and get no reply.
    pub fn drop_ignored_syncs(&mut self, n: usize) {
        let mut left = n;
        let mut i = 1;
        while left > 0 && i < self.expect.len() {
            if self.expect[i] == Expect::Sync {
                self.expect.remove(i);
                left -= 1;
            } else {
                i += 1;
            }
        }
    }

    pub fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        self.names.get(name)
    }
}

/// Split a C string off the front of `b`: (string, rest after the NUL).
pub fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|&c| c == 0)?;
    Some((&b[..i], &b[i + 1..]))
}

/// A synthetic ParseComplete / CloseComplete / BindComplete (tag with an empty body).
pub fn empty_message(out: &mut BytesMut, tag: u8) {
    out.put_u8(tag);
    out.put_u32(4);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_shares_and_stays_bounded() {
        let r = StatementRegistry::new(2, 1 << 20);
        let a = r.intern(b"select 1\0\0\0");
        let b = r.intern(b"select 1\0\0\0");
        assert!(Arc::ptr_eq(&a, &b));
        let c = r.intern(b"select 2\0\0\0");
        assert_ne!(a.id, c.id);
        drop(c);
        // full: the unreferenced entry makes room
        let d = r.intern(b"select 3\0\0\0");
        assert_eq!(r.len(), 2);
        let mut out = BytesMut::new();
        d.write_parse(&mut out);
        assert_eq!(out[0], b'P');
        assert_eq!(
            u32::from_be_bytes(out[1..5].try_into().unwrap()) as usize,
            out.len() - 1
        );
    }

    #[test]
    fn client_names_are_unique_and_bounded() {
        let r = StatementRegistry::new(10, 1 << 20);
        let mut c = ClientStatements::default();
        c.add(b"s1", r.intern(b"q\0\0\0")).unwrap();
        assert_eq!(
            c.add(b"s1", r.intern(b"q\0\0\0")),
            Err("prepared statement name is already in use")
        );
        c.remove(b"s1");
        c.add(b"s1", r.intern(b"q\0\0\0")).unwrap();
        let big = vec![b'x'; MAX_CLIENT_STATEMENT_BYTES];
        assert!(c.add(b"s2", r.intern(&big)).is_err());
    }
}
