//! Caps shared by several pools: max_db_connections (per database) and max_user_connections (per user).

use super::Pool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Server connections counted across every pool of one database or one user.
#[derive(Debug)]
pub struct ConnGroup {
    count: AtomicUsize,
    /// 0 = unlimited.
    max: std::sync::atomic::AtomicUsize,
    members: Mutex<Vec<Weak<Pool>>>,
}

impl ConnGroup {
    pub fn new(max: usize) -> Arc<ConnGroup> {
        Arc::new(ConnGroup {
            count: AtomicUsize::new(0),
            max: std::sync::atomic::AtomicUsize::new(max),
            members: Mutex::new(Vec::new()),
        })
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// RELOAD: a new cap applies to connections opened from now on.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    pub fn is_capped(&self) -> bool {
        self.max() > 0
    }

    pub fn is_full(&self) -> bool {
        self.max() > 0 && self.count() >= self.max()
    }

    /// Count one more connection if the cap allows it.
    pub fn try_take(&self) -> bool {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (self.max() == 0 || c < self.max()).then_some(c + 1)
            })
            .is_ok()
    }

    pub fn give(&self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn add_member(&self, p: &Arc<Pool>) {
        let mut m = self.members.lock().unwrap();
        m.retain(|w| w.strong_count() > 0);
        m.push(Arc::downgrade(p));
    }

    pub fn members(&self) -> Vec<Arc<Pool>> {
        self.members
            .lock()
            .unwrap()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps() {
        let g = ConnGroup::new(2);
        assert!(g.try_take() && g.try_take());
        assert!(!g.try_take());
        assert!(g.is_full());
        g.give();
        assert!(g.try_take());
        let u = ConnGroup::new(0);
        for _ in 0..100 {
            assert!(u.try_take());
        }
        assert!(!u.is_full());
    }
}
