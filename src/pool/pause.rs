//! Pause, suspend and disable states (PAUSE/RESUME/SUSPEND/DISABLE/ENABLE/KILL), and waiting for RESUME.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::watch;

pub const RUNNING: u8 = 0;
pub const PAUSED: u8 = 1;
pub const SUSPENDED: u8 = 2;

#[derive(Debug)]
pub struct PauseState {
    global: AtomicU8,
    dbs: Mutex<BTreeSet<String>>,
    disabled: Mutex<BTreeSet<String>>,
    /// Fast path for the hot path: false while nothing at all is paused.
    any: AtomicBool,
    /// Bumped on every RESUME so waiters re-check.
    generation: watch::Sender<u64>,
}

impl Default for PauseState {
    fn default() -> Self {
        PauseState {
            global: AtomicU8::new(RUNNING),
            dbs: Mutex::new(BTreeSet::new()),
            disabled: Mutex::new(BTreeSet::new()),
            any: AtomicBool::new(false),
            generation: watch::Sender::new(0),
        }
    }
}

impl PauseState {
    fn refresh(&self) {
        let any = self.global.load(Relaxed) != RUNNING || !self.dbs.lock().unwrap().is_empty();
        self.any.store(any, Relaxed);
        self.generation.send_modify(|g| *g += 1);
    }

    /// The global mode: RUNNING, PAUSED or SUSPENDED.
    pub fn mode(&self) -> u8 {
        self.global.load(Relaxed)
    }

    #[inline]
    pub fn is_paused(&self, db: &str) -> bool {
        if !self.any.load(Relaxed) {
            return false;
        }
        self.global.load(Relaxed) != RUNNING || self.dbs.lock().unwrap().contains(db)
    }

    pub fn db_paused(&self, db: &str) -> bool {
        self.dbs.lock().unwrap().contains(db)
    }

    pub fn paused_dbs(&self) -> usize {
        self.dbs.lock().unwrap().len()
    }

    /// Wait until `db` is no longer paused; false if `limit` (0 = none) passed first.
    pub async fn wait_resumed(&self, db: &str, limit: Duration) -> bool {
        let mut rx = self.generation.subscribe();
        let deadline = (!limit.is_zero()).then(|| tokio::time::Instant::now() + limit);
        loop {
            if !self.is_paused(db) {
                return true;
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, rx.changed()).await.is_err() {
                        return !self.is_paused(db);
                    }
                }
                None => {
                    let _ = rx.changed().await;
                }
            }
        }
    }

    pub fn set_global(&self, mode: u8) -> Result<(), &'static str> {
        if self.global.load(Relaxed) != RUNNING && mode != RUNNING {
            return Err("already suspended/paused");
        }
        self.global.store(mode, Relaxed);
        self.refresh();
        Ok(())
    }

    pub fn pause_db(&self, db: &str) {
        self.dbs.lock().unwrap().insert(db.to_string());
        self.refresh();
    }

    /// RESUME without a database: undoes PAUSE, SUSPEND and KILL of every database.
    pub fn resume_all(&self) -> Result<(), &'static str> {
        let had = self.global.swap(RUNNING, Relaxed) != RUNNING;
        let had_db = {
            let mut d = self.dbs.lock().unwrap();
            let had = !d.is_empty();
            d.clear();
            had
        };
        self.refresh();
        if had || had_db {
            Ok(())
        } else {
            Err("pooler is not paused/suspended")
        }
    }

    pub fn resume_db(&self, db: &str) -> bool {
        let had = self.dbs.lock().unwrap().remove(db);
        self.refresh();
        had
    }

    pub fn set_disabled(&self, db: &str, on: bool) {
        let mut d = self.disabled.lock().unwrap();
        if on {
            d.insert(db.to_string());
        } else {
            d.remove(db);
        }
    }

    pub fn is_disabled(&self, db: &str) -> bool {
        self.disabled.lock().unwrap().contains(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pause_and_resume() {
        let p = PauseState::default();
        assert!(!p.is_paused("a"));
        p.pause_db("a");
        assert!(p.is_paused("a") && !p.is_paused("b"));
        assert!(!p.wait_resumed("a", Duration::from_millis(50)).await);
        assert!(p.resume_db("a"));
        assert!(p.wait_resumed("a", Duration::from_millis(50)).await);
        p.set_global(PAUSED).unwrap();
        assert_eq!(p.set_global(PAUSED), Err("already suspended/paused"));
        assert!(p.is_paused("b"));
        assert!(p.resume_all().is_ok());
        assert_eq!(p.resume_all(), Err("pooler is not paused/suspended"));
    }
}
