//! The runtime layout, and which shard (runtime) the current thread runs: by default one work-stealing runtime with a worker per core; with `PGMUX_RUNTIME=shards`, one runtime per core, new clients spread over them at accept.
//!
//! In the shard layout a shard's clients, and the servers they use, are registered with that
//! shard's own I/O driver and run on its one thread: no work stealing, no shared driver. The
//! pools stay shared (one set of limits, one SHOW POOLS); a released server goes to a waiting
//! client of its own shard (`pool::queue`), a new one is opened on the shard of the longest
//! waiter, and a server that changes shard is moved to the new shard's driver
//! (`Stream::rehome`). On this 2-core machine, shared with PostgreSQL and pgbench, the two
//! layouts measured at par (benches/README.md), so the default stays work-stealing; the shard
//! layout is there to be measured where there are many cores.

use crate::server::stream::Stream;
use crate::state::Shared;
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::{Handle, Runtime};

thread_local! {
    static CURRENT: Cell<u16> = const { Cell::new(0) };
}

/// The shard the calling thread runs (0 outside a shard's worker, and in the default layout).
#[inline]
pub fn current() -> u16 {
    CURRENT.with(|c| c.get())
}

/// The runtimes of a running pooler: `main` runs the listeners, the janitor, the metrics
/// endpoint and signal handling as well as its share of clients (admin-console sessions are
/// clients too); `rest` run clients only.
pub struct Runtimes {
    pub main: Runtime,
    rest: Vec<Runtime>,
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
}

fn builder(workers: usize, shard: u16) -> tokio::runtime::Builder {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(workers);
    // how many tasks a worker runs between looks at the sockets: tokio's default (61) lets a
    // released server's next client wait behind a long run of tasks; 3 measured best on the
    // load benchmark (1000 clients: +20-25% TPS against 61; 1 did as well with more syscalls)
    b.event_interval(env_usize("PGMUX_EVENT_INTERVAL").unwrap_or(3) as u32);
    b.thread_name(format!("pgmux-{shard}"));
    b.on_thread_start(move || CURRENT.with(|c| c.set(shard)));
    b.enable_all();
    b
}

impl Runtimes {
    /// One work-stealing runtime with a worker per core (or `PGMUX_THREADS`); with
    /// `PGMUX_RUNTIME=shards`, that many single-worker runtimes.
    pub fn build() -> std::io::Result<Runtimes> {
        crate::app::raise_fd_limit();
        let n = env_usize("PGMUX_THREADS").unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        if !std::env::var("PGMUX_RUNTIME").is_ok_and(|v| v == "shards") {
            return Ok(Runtimes {
                main: builder(n, 0).build()?,
                rest: Vec::new(),
            });
        }
        let n = n.min(u16::MAX as usize);
        let main = builder(1, 0).build()?;
        let rest = (1..n)
            .map(|i| builder(1, i as u16).build())
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Runtimes { main, rest })
    }

    /// Handles of every shard, `main` first.
    pub fn shards(&self) -> Shards {
        Shards::new(
            std::iter::once(&self.main)
                .chain(&self.rest)
                .map(|r| r.handle().clone())
                .collect(),
        )
    }

    /// Stop every runtime, waiting at most `d` for each.
    pub fn shutdown_timeout(self, d: std::time::Duration) {
        self.main.shutdown_timeout(d);
        for r in self.rest {
            r.shutdown_timeout(d);
        }
    }
}

/// Where new clients go: the shard with the fewest connected clients.
pub struct Shards {
    handles: Vec<Handle>,
    clients: Vec<AtomicUsize>,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shards({})", self.handles.len())
    }
}

/// Counts a client against its shard while its task lives.
struct Seat(Arc<Shared>, usize);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.shards.clients[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shards {
    pub fn new(handles: Vec<Handle>) -> Shards {
        let clients = handles.iter().map(|_| AtomicUsize::new(0)).collect();
        Shards { handles, clients }
    }

    /// Run a task on shard `k` (the current runtime when there is no such shard).
    pub fn spawn_on<F>(&self, k: u16, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match self.handles.get(k as usize) {
            Some(h) if self.handles.len() > 1 => drop(h.spawn(f)),
            _ => drop(tokio::spawn(f)),
        }
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Run a newly accepted client on the least-loaded shard. A socket that changes shard is
    /// registered with the new shard's driver (accepting registered it with this one's).
    pub fn spawn_client(shared: &Arc<Shared>, stream: Stream, peer: String) {
        let me = &shared.shards;
        // clients are accepted in plain text (TLS starts later, on the client's own task); a
        // stream that could not be moved would stay here
        let k = if me.handles.len() == 1 || matches!(stream, Stream::Tls(_)) {
            (current() as usize).min(me.handles.len() - 1)
        } else {
            (0..me.handles.len())
                .min_by_key(|&i| me.clients[i].load(Ordering::Relaxed))
                .unwrap_or(0)
        };
        me.clients[k].fetch_add(1, Ordering::Relaxed);
        let seat = Seat(shared.clone(), k);
        let shared = shared.clone();
        if k == current() as usize || me.handles.len() == 1 {
            // boxed: the client future is several KiB, and tokio moves an unboxed one
            // through several frames on spawn (a copy each); the seat goes into it as an
            // argument (a wrapping `async` block would be one more future state per poll)
            tokio::spawn(Box::pin(crate::client::handle(stream, peer, shared, seat)));
            return;
        }
        let moved = match stream {
            Stream::Tcp(t) => t.into_std().map(Moved::Tcp),
            Stream::Unix(u) => u.into_std().map(Moved::Unix),
            Stream::Tls(_) => return,
        };
        let moved = match moved {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("accept: could not hand the connection to a worker: {e}");
                return;
            }
        };
        me.handles[k].spawn(Box::pin(async move {
            let stream = match moved {
                Moved::Tcp(s) => tokio::net::TcpStream::from_std(s).map(Stream::Tcp),
                Moved::Unix(s) => tokio::net::UnixStream::from_std(s).map(Stream::Unix),
            };
            match stream {
                Ok(s) => crate::client::handle(s, peer, shared, seat).await,
                Err(e) => tracing::warn!("accept: could not register the connection: {e}"),
            }
        }));
    }
}

enum Moved {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}
