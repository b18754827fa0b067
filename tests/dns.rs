//! Server host names resolved by pgmux's own DNS client (no glibc NSS): resolv_conf, the dns_max_ttl cache, NXDOMAIN, SHOW DNS_HOSTS.

mod common;

use common::*;
use std::sync::atomic::Ordering::SeqCst;

const NAME: &str = "shared-postgres-rw.cnpg-system.svc.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_names_resolve_through_resolv_conf() {
    let (pg, seed) = postgres(100);
    let (dns_port, hits) = fake_dns::serve(&[NAME]);
    let dir = std::env::temp_dir().join(format!("pgmux-dns-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let resolv = dir.join("resolv.conf");
    // the search list applies to short names as in a pod; the port form is a pgmux extension
    std::fs::write(
        &resolv,
        format!("search cnpg-system.svc\nnameserver 127.0.0.1:{dns_port}\noptions ndots:1\n"),
    )
    .unwrap();
    let mux = start_with_admin(
        &pg,
        &seed,
        &format!(
            "resolv_conf = {}\n\
             dns_max_ttl = 30\n\
             [databases]\n\
             named = host=shared-postgres-rw.cnpg-system.svc port={p} dbname=synergyflow\n\
             short = host=shared-postgres-rw port={p} dbname=synergyflow\n\
             missing = host=no-such-host.cnpg-system.svc port={p} dbname=synergyflow\n",
            resolv.display(),
            p = pg.port()
        ),
    );
    let url = |db: &str| mux.url(db, &seed.app_user, &seed.app_password);

    for db in ["named", "short"] {
        let c = connect(&url(db))
            .await
            .unwrap_or_else(|e| panic!("{db}: {e}"));
        let v: i32 = c.query_one("select 40 + 2", &[]).await.unwrap().get(0);
        assert_eq!(v, 42);
    }
    let after_first = hits.load(SeqCst);
    assert!(after_first >= 1, "the DNS server was never asked");

    // new server connections within dns_max_ttl come from the cache
    let admin = connect(&mux.url("pgbouncer", "admin", "admin-pw"))
        .await
        .unwrap();
    admin.simple_query("RECONNECT").await.unwrap();
    for _ in 0..3 {
        let c = connect(&url("named")).await.unwrap();
        c.simple_query("select 1").await.unwrap();
    }
    assert_eq!(hits.load(SeqCst), after_first, "cached answer not used");

    let rows = rows_of(&admin.simple_query("SHOW DNS_HOSTS").await.unwrap());
    let named = rows
        .iter()
        .find(|r| r[0].as_deref() == Some("shared-postgres-rw.cnpg-system.svc"))
        .unwrap_or_else(|| panic!("no row in {rows:?}"));
    assert_eq!(named[2].as_deref(), Some("127.0.0.1"));
    let ttl: u64 = named[1].as_deref().unwrap().parse().unwrap();
    assert!(ttl <= 30, "ttl {ttl} beyond dns_max_ttl");
    let lists = rows_of(&admin.simple_query("SHOW LISTS").await.unwrap());
    let names = lists
        .iter()
        .find(|r| r[0].as_deref() == Some("dns_names"))
        .unwrap();
    assert!(names[1].as_deref().unwrap().parse::<u32>().unwrap() >= 2);

    // a name that does not exist: the client gets an error, nothing else is disturbed
    let err = connect(&url("missing")).await;
    let err = match err {
        Err(e) => e,
        Ok(c) => c.simple_query("select 1").await.unwrap_err(),
    };
    assert!(
        !db_error(&err).1.is_empty(),
        "no error text for an unresolvable host: {err:?}"
    );
    assert!(
        mux.log_text().contains("DNS lookup failed: no-such-host"),
        "{}",
        mux.log_text()
    );
    let c = connect(&url("named")).await.unwrap();
    c.simple_query("select 1").await.unwrap();
}
