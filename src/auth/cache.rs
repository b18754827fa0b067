//! A bounded, TTL'd cache of auth_query lookups with single-flight: concurrent logins of one user share one query.

use dashmap::DashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

struct Entry<V> {
    created: Instant,
    cell: Arc<OnceCell<(V, Duration)>>,
}

impl<V> Entry<V> {
    fn fresh(&self, now: Instant) -> bool {
        match self.cell.get() {
            None => true, // in flight: join it
            Some((_, ttl)) => now < self.created + *ttl,
        }
    }
}

pub struct LookupCache<K, V> {
    map: DashMap<K, Entry<V>>,
    max_entries: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> LookupCache<K, V> {
    pub fn new(max_entries: usize) -> Self {
        LookupCache {
            map: DashMap::new(),
            max_entries: max_entries.max(1),
        }
    }

    /// The cached value for `key`, or the result of `fetch` (value, how long to keep it), shared
    /// with every concurrent caller for the same key. Returns (value, served from an earlier fetch).
    pub async fn get_or_fetch<F, Fut>(&self, key: K, fetch: F) -> (V, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (V, Duration)>,
    {
        let now = Instant::now();
        // look up first and drop the shard guard before any insert (DashMap guards must not be held)
        let hit = self
            .map
            .get(&key)
            .filter(|e| e.fresh(now))
            .map(|e| e.cell.clone());
        let (cell, existed) = match hit {
            Some(cell) => (cell, true),
            None => {
                if self.map.len() >= self.max_entries {
                    self.map.retain(|_, e| e.fresh(now));
                    if self.map.len() >= self.max_entries {
                        self.map.clear();
                    }
                }
                let cell = Arc::new(OnceCell::new());
                self.map.insert(
                    key,
                    Entry {
                        created: now,
                        cell: cell.clone(),
                    },
                );
                (cell, false)
            }
        };
        let mut ran = false;
        let (v, _) = cell
            .get_or_init(|| {
                ran = true;
                fetch()
            })
            .await;
        (v.clone(), existed && !ran)
    }

    pub fn invalidate(&self, key: &K) {
        self.map.remove(key);
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
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn single_flight_ttl_and_bound() {
        let c: Arc<LookupCache<String, u32>> = Arc::new(LookupCache::new(2));
        let calls = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let c = c.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                c.get_or_fetch("u".into(), || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    (7, Duration::from_secs(60))
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().0, 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // zero TTL: the next call fetches again
        let (v, cached) = c
            .get_or_fetch("z".into(), || async { (1, Duration::ZERO) })
            .await;
        assert_eq!((v, cached), (1, false));
        let (v, cached) = c
            .get_or_fetch("z".into(), || async { (2, Duration::ZERO) })
            .await;
        assert_eq!((v, cached), (2, false));
        let (_, cached) = c
            .get_or_fetch("u".into(), || async { (8, Duration::ZERO) })
            .await;
        assert!(cached || c.len() <= 2);
        c.invalidate(&"u".to_string());
        let (v, _) = c
            .get_or_fetch("u".into(), || async { (9, Duration::from_secs(1)) })
            .await;
        assert_eq!(v, 9);
        assert!(c.len() <= 2);
    }
}
