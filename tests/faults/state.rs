//! Faults, session state: what a client sets stays with it in transaction mode, and a server in a failed or unknown state goes to no one else.

use super::*;

/// Transaction mode with one server: tracked parameters, temp tables, protocol-level prepared
/// statements and a broken transaction state stay with their client; a server in a failed or
/// unknown state is never handed to another client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_stays_with_its_client() {
    let (pg, seed) = postgres(100);
    let mux = start_with_admin(&pg, &seed, "auth_type = plain\ndefault_pool_size = 1");
    let url = mux.url("synergyflow", &seed.app_user, &seed.app_password);
    let (user, pw) = (seed.app_user.as_str(), seed.app_password.as_str());
    let login = || Raw::login(mux.port, "synergyflow", user, pw);
    let admin = admin_of(&mux).await;
    let a = connect(&url).await.unwrap();
    let b = connect(&url).await.unwrap();
    let pid = value(&a, "select pg_backend_pid()").await;
    assert_eq!(
        value(&b, "select pg_backend_pid()").await,
        pid,
        "one server"
    );

    // tracked parameters: A's SETs follow A, B keeps its own values on the same server
    let tracked = [
        ("TimeZone", "Asia/Tokyo"),
        ("application_name", "client-a"),
        ("DateStyle", "SQL, DMY"),
        ("IntervalStyle", "sql_standard"),
    ];
    let mut before = Vec::new();
    for (name, _) in tracked {
        before.push(value(&b, &format!("show {name}")).await);
    }
    for (name, v) in tracked {
        a.simple_query(&format!("set {name} = '{v}'"))
            .await
            .unwrap();
    }
    for ((name, v), old) in tracked.iter().zip(&before) {
        assert_eq!(
            &value(&b, &format!("show {name}")).await,
            old,
            "{name} leaked"
        );
        assert_eq!(value(&a, &format!("show {name}")).await, *v, "{name} lost");
    }
    assert_eq!(value(&b, "select pg_backend_pid()").await, pid);

    // temp tables: ON COMMIT DROP ones are gone with their transaction
    a.batch_execute(
        "begin; create temp table t_ocd(x int) on commit drop; insert into t_ocd values (1); commit",
    )
    .await
    .unwrap();
    assert_eq!(
        value(&b, "select count(*) from pg_class where relname = 't_ocd'").await,
        "0"
    );

    // protocol-level named statements: B cannot use A's, and the same name is B's own
    let mut ra = login().await;
    let mut rb = login().await;
    let mut p = parse("stmt_x", "select 'a'::text");
    p.extend(sync());
    assert!(ra.request(&p).await.error.is_none());
    assert_eq!(ra.run_named("stmt_x").await.rows, [Some("a".into())]);
    let mut p = parse("stmt_x", "select 'b'::text");
    p.extend(sync());
    let r = rb.request(&p).await;
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(rb.run_named("stmt_x").await.rows, [Some("b".into())]);
    assert_eq!(ra.run_named("stmt_x").await.rows, [Some("a".into())]);
    let mut rc = login().await;
    let mut bx = bind("stmt_x");
    bx.extend(execute());
    bx.extend(sync());
    rc.send(&bx).await;
    let (sev, code, m) = rc.fatal().await;
    assert_eq!(
        (sev.as_str(), code.as_str(), m.as_str()),
        ("FATAL", "08P01", "prepared statement did not exist")
    );

    // a client inside a failed transaction keeps the server: others wait, then get it clean
    let r = ra.simple("begin; select 1/0").await;
    assert_eq!((r.status, r.error.unwrap().1.as_str()), (b'E', "22012"));
    let waiting = tokio::spawn({
        let url = url.clone();
        async move {
            let c = connect(&url).await.unwrap();
            value(&c, "select 'served'").await
        }
    });
    assert!(
        eventually(Duration::from_secs(10), || async {
            num(&pool_row(&admin).await, "cl_waiting") == 1
        })
        .await,
        "the failed transaction's server was handed out"
    );
    let r = ra.simple("select 1").await;
    assert_eq!(r.error.unwrap().1, "25P02");
    let r = ra.simple("rollback").await;
    assert_eq!((r.status, r.error), (b'I', None));
    let served = timeout(OP_LIMIT, waiting).await.unwrap().unwrap();
    assert_eq!(served, "served");

    // clients that leave a server in a failed or unknown state: it is closed, never reused
    let leave: [(&str, &[u8]); 5] = [
        ("aborted, reset", b"begin; select 1/0"),
        ("aborted, Terminate", b"begin; select 1/0"),
        (
            "temp table in an open transaction",
            b"begin; create temp table t_gone(x int)",
        ),
        ("unsynced failed Parse", b""),
        ("query running", b"select pg_sleep(60)"),
    ];
    for (what, sql) in leave {
        let mut r = login().await;
        let pid = r.simple("select pg_backend_pid()").await.rows[0]
            .clone()
            .unwrap();
        match what {
            "unsynced failed Parse" => {
                let mut p = parse("", "selec oops");
                p.extend(flush());
                r.send(&p).await;
                let (tag, body) = r.recv().await;
                assert_eq!((tag, error_fields(&body).1.as_str()), (b'E', "42601"));
                r.kill(false);
            }
            "query running" => {
                r.send(&q(std::str::from_utf8(sql).unwrap())).await;
                wait_running(&pg, "select pg_sleep(60)").await;
                r.kill(true);
            }
            _ => {
                let reply = r.simple(std::str::from_utf8(sql).unwrap()).await;
                assert_ne!(reply.status, b'I', "{what}");
                if what.ends_with("Terminate") {
                    r.send(&msg(b'X', &[])).await;
                }
                r.kill(what.ends_with("reset"));
            }
        }
        // the next client gets a clean, different server
        let mut next = login().await;
        let reply = next
            .simple("select pg_backend_pid(), count(*) from pg_class where relname = 't_gone'")
            .await;
        assert_eq!((reply.status, &reply.error), (b'I', &None), "{what}");
        assert_ne!(
            reply.rows[0].as_deref(),
            Some(pid.as_str()),
            "{what}: server reused"
        );
        let reply = next
            .simple("select count(*) from pg_class where relname = 't_gone'")
            .await;
        assert_eq!(reply.rows, [Some("0".into())], "{what}");
        let reply = next.simple("begin; select 1; commit").await;
        assert_eq!((reply.status, &reply.error), (b'I', &None), "{what}");
        next.send(&msg(b'X', &[])).await;
    }
    assert_eq!(value(&a, "show TimeZone").await, "Asia/Tokyo");
}
