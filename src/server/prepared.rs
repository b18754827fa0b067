//! The statements one server connection has prepared: an LRU of at most max_prepared_statements.

use crate::client::prepared::Statement;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct PreparedSet {
    /// Statement id → (statement, last use).
    map: HashMap<u64, (Arc<Statement>, u64)>,
    tick: u64,
    /// Shared with SHOW SERVERS.
    pub count: Arc<AtomicUsize>,
}

impl PreparedSet {
    /// True (and marked recently used) when the server has the statement.
    pub fn touch(&mut self, id: u64) -> bool {
        self.tick += 1;
        match self.map.get_mut(&id) {
            Some(e) => {
                e.1 = self.tick;
                true
            }
            None => false,
        }
    }

    /// Record a statement being prepared; returns the least recently used one to close when the
    /// set would grow past `cap`.
    pub fn insert(&mut self, st: Arc<Statement>, cap: usize) -> Option<Arc<Statement>> {
        self.tick += 1;
        let evicted = if self.map.len() >= cap.max(1) {
            let lru = self
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| *k);
            lru.and_then(|k| self.map.remove(&k)).map(|(s, _)| s)
        } else {
            None
        };
        self.map.insert(st.id, (st, self.tick));
        self.count.store(self.map.len(), Relaxed);
        evicted
    }

    pub fn remove(&mut self, id: u64) {
        self.map.remove(&id);
        self.count.store(self.map.len(), Relaxed);
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.count.store(0, Relaxed);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::prepared::StatementRegistry;

    #[test]
    fn lru_evicts_least_recently_used() {
        let r = StatementRegistry::new(100, 1 << 20);
        let (a, b, c) = (
            r.intern(b"a\0\0\0"),
            r.intern(b"b\0\0\0"),
            r.intern(b"c\0\0\0"),
        );
        let mut s = PreparedSet::default();
        assert!(s.insert(a.clone(), 2).is_none());
        assert!(s.insert(b.clone(), 2).is_none());
        assert!(s.touch(a.id));
        let ev = s.insert(c.clone(), 2).unwrap();
        assert_eq!(ev.id, b.id);
        assert!(s.touch(a.id) && s.touch(c.id) && !s.touch(b.id));
        assert_eq!(s.count.load(Relaxed), 2);
    }
}
