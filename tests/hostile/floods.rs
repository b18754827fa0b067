//! Hostile clients, part 3: connection floods past max_client_conn and file-descriptor exhaustion.

use super::*;

// ---------------------------------------------------------------------------------------------
// 4. floods

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_past_max_client_conn() {
    let (pg, seed) = postgres(50);
    let mux = Pgmux::start(&pg, "max_client_conn = 50", &users());
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let kept = connect(&url).await.unwrap();
    kept.simple_query("select 1").await.unwrap();
    let port = mux.port;
    let (held, refused, other) = tokio::task::spawn_blocking(move || {
        // 49 more logins stop in the middle of SASL: with `kept` that is max_client_conn
        let held: Vec<TcpStream> = (0..49)
            .map(|_| start_sasl(port, "synergyflow_app"))
            .collect();
        // 200 more: every one is refused with PgBouncer's text, concurrently
        let refused: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..50)
                        .map(|_| {
                            let mut s = raw(port);
                            s.write_all(&startup_packet("synergyflow_app", "synergyflow"))
                                .unwrap();
                            let r = next(&mut s);
                            (r, next(&mut s))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>();
        let other = refused.iter().filter(|(r, end)| {
            *r != fatal("no more connections allowed (max_client_conn)") || *end != Reply::Closed
        });
        (held, refused.len(), other.count())
    })
    .await
    .unwrap();
    assert_eq!((refused, other), (200, 0));
    // the logged-in client kept working throughout
    assert_eq!(
        kept.query_one("select 5", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        5
    );
    // once the held logins go, new clients get in
    drop(held);
    assert!(
        wait_until(10, || async {
            match connect(&url).await {
                Ok(c) => c.simple_query("select 1").await.is_ok(),
                Err(_) => false,
            }
        })
        .await,
        "no client got in after the flood"
    );
    assert_serving(&mux, "after the max_client_conn flood").await;
    assert_mem_bounded(&mux, "after the max_client_conn flood");
}

/// Lower both open-files limits of a running process.
fn set_nofile(pid: u32, n: u64) {
    let rl = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: prlimit on a child process with a valid rlimit and no old-limit output.
    let r = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &rl,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fd_exhaustion_is_survived_without_spinning() {
    let (pg, seed) = postgres(50);
    let mux = Pgmux::start(&pg, "listen_backlog = 512", &users());
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    // a client logged in before the flood, with its server already in the pool
    let kept = connect(&url).await.unwrap();
    kept.simple_query("select 1").await.unwrap();
    // pgmux raises its soft limit to the hard one at start: lower both now
    set_nofile(mux.pid(), 128);
    let base = open_fds(mux.pid());
    assert!(base < 100, "{base} fds open already");

    // more connections than fds: pgmux accepts until EMFILE, the rest wait in the (large) backlog
    let port = mux.port;
    let mut flood = Vec::new();
    for _ in 0..250 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            flood.push(s);
        }
    }
    eprintln!("fd flood: {} connections made", flood.len());
    assert!(
        flood.len() > 128,
        "only {} connections got through",
        flood.len()
    );
    assert!(
        wait_until(10, || async { mux.log_text().contains("accept failed") }).await,
        "pgmux never ran out of fds"
    );
    let fds = open_fds(mux.pid());
    assert!((100..=130).contains(&fds), "{fds} fds open");
    // while the flood is held open: no busy loop on the failing accept
    let c0 = cpu_secs(mux.pid());
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cpu = (cpu_secs(mux.pid()) - c0) / t0.elapsed().as_secs_f64();
    eprintln!(
        "fd flood: {} connections held, pgmux has {fds} fds, CPU {:.1}% of a core",
        flood.len(),
        cpu * 100.0
    );
    assert!(cpu < 0.25, "pgmux used {:.0}% of a core", cpu * 100.0);
    // the logged-in client still works (its server needs no new fd)
    assert_eq!(
        kept.query_one("select 6", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        6
    );
    // the flood goes away: new clients are served again
    drop(flood);
    assert!(
        wait_until(30, || async {
            match tokio::time::timeout(Duration::from_secs(5), connect(&url)).await {
                Ok(Ok(c)) => c.simple_query("select 1").await.is_ok(),
                _ => false,
            }
        })
        .await,
        "pgmux did not recover after the fd flood"
    );
    assert_serving(&mux, "after the fd flood").await;
    assert_mem_bounded(&mux, "after the fd flood");
    assert!(
        wait_until(10, || async { open_fds(mux.pid()) < base + 10 }).await,
        "fds leaked: {} open, {base} before",
        open_fds(mux.pid())
    );
}
