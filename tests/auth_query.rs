//! auth_query through an auth user against a SCRAM-only PostgreSQL: pass-through, errors, rotation, the cache.

mod common;

use common::*;
use std::process::Command;

const AUTH: &str = "auth_user = pgmux_auth\n\
                    auth_query = SELECT usename, passwd FROM user_search($1)\n\
                    auth_dbname = postgres\n\
                    auth_type = md5\n";

fn pgbench(pg: &pgmux::dev::TempPostgres, args: &[&str], password: &str) -> (bool, String) {
    let out = Command::new(pg.tool("pgbench"))
        .args(args)
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn user_search_calls(pg: &pgmux::dev::TempPostgres) -> i64 {
    pg.psql(
        "postgres",
        "select coalesce(sum(calls), 0) from pg_stat_user_functions where funcname = 'user_search'",
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_pass_through_errors_and_rotation() {
    let (pg, seed) = postgres(150);
    // pgmux knows only the auth user; every other user is looked up
    let mux = Pgmux::start(&pg, AUTH, &[(&seed.auth_user, &seed.auth_password)]);
    let url = |user: &str, pw: &str| mux.url("synergyflow", user, pw);

    // SCRAM client login against the pg_authid verifier, then a server login with the recovered keys
    let c = connect(&url(&seed.app_user, &seed.app_password))
        .await
        .unwrap();
    let who: String = c
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, seed.app_user);
    // psql as well
    let out = Command::new(pg.tool("psql"))
        .args([
            "-X",
            "-At",
            "-c",
            "select 40+2",
            &format!(
                "host=127.0.0.1 port={} dbname=synergyflow user={}",
                mux.port, seed.app_user
            ),
        ])
        .env("PGPASSWORD", &seed.app_password)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // an md5-stored user: md5 client auth and md5 server login from the md5 secret
    let m = connect(&mux.url("postgres", "md5_user", "md5-password"))
        .await
        .unwrap();
    assert_eq!(
        m.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );

    // PostgreSQL asks plain_user for a cleartext password, pgmux only holds the SCRAM verifier
    let e = connect(&mux.url("postgres", "plain_user", "plain-password"))
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).1, "server login failed: wrong password type");

    // errors
    let e = connect(&url(&seed.app_user, "wrong")).await.unwrap_err();
    assert_eq!(
        db_error(&e),
        ("08P01".into(), "SASL authentication failed".into())
    );
    let e = connect(&url("nobody", "x")).await.unwrap_err();
    assert_eq!(db_error(&e), ("08P01".into(), "no such user".into()));
    pg.psql(
        "postgres",
        "ALTER ROLE synergyflow_app VALID UNTIL '2000-01-01'",
    )
    .unwrap();
    let e = connect(&url(&seed.app_user, &seed.app_password))
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&e),
        ("08P01".into(), "password authentication failed".into()),
        "expired password"
    );
    pg.psql(
        "postgres",
        "ALTER ROLE synergyflow_app VALID UNTIL 'infinity'",
    )
    .unwrap();
    pg.psql(
        "postgres",
        "REVOKE EXECUTE ON FUNCTION public.user_search(text) FROM pgmux_auth",
    )
    .unwrap();
    let e = connect(&url(&seed.app_user, &seed.app_password))
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&e),
        ("08P01".into(), "bouncer config error".into())
    );
    assert!(
        mux.log_text()
            .contains("permission denied for function user_search"),
        "{}",
        mux.log_text()
    );
    pg.psql(
        "postgres",
        "GRANT EXECUTE ON FUNCTION public.user_search(text) TO pgmux_auth",
    )
    .unwrap();

    // rotation: the new password works at once, the old one stops working
    pg.psql(
        "postgres",
        "ALTER ROLE synergyflow_app PASSWORD 'rotated-password'",
    )
    .unwrap();
    let n = connect(&url(&seed.app_user, "rotated-password"))
        .await
        .unwrap();
    assert_eq!(
        n.query_one("select 5", &[]).await.unwrap().get::<_, i32>(0),
        5
    );
    let e = connect(&url(&seed.app_user, &seed.app_password))
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).1, "SASL authentication failed");
    // the session opened before the rotation still works
    assert_eq!(
        c.query_one("select 6", &[]).await.unwrap().get::<_, i32>(0),
        6
    );
    // no SET was ever sent on the auth connection: its application_name is still empty
    let apps = pg
        .psql("postgres", "select count(*) from pg_stat_activity where usename = 'pgmux_auth' and application_name <> ''")
        .unwrap();
    assert_eq!(apps.trim(), "0");
}

#[test]
fn thousand_logins_through_auth_query_and_the_cache() {
    let (pg, seed) = postgres_with(150, &["track_functions = 'all'"]);
    let init = Command::new(pg.tool("pgbench"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port().to_string(),
            "-U",
            "postgres",
            "-i",
            "-q",
            "-s",
            "1",
            "synergyflow",
        ])
        .output()
        .unwrap();
    assert!(init.status.success());
    pg.psql(
        "synergyflow",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO synergyflow_app",
    )
    .unwrap();
    let burst = |port: u16| {
        let conn = format!("host=127.0.0.1 port={port} dbname=synergyflow user=synergyflow_app");
        pgbench(
            &pg,
            &["-n", "-S", "-c", "1000", "-j", "2", "-t", "2", &conn],
            &seed.app_password,
        )
    };

    // without the cache (PgBouncer's behaviour): one lookup per login
    let mut mux = Pgmux::start(
        &pg,
        &format!("{AUTH}default_pool_size = 50"),
        &[(&seed.auth_user, &seed.auth_password)],
    );
    let (ok, out) = burst(mux.port);
    assert!(ok, "{out}");
    assert!(
        out.contains("number of transactions actually processed: 2000/2000"),
        "{out}"
    );
    assert!(out.contains("number of failed transactions: 0"), "{out}");
    assert!(backends(&pg, "synergyflow", "synergyflow_app") <= 50);
    // stop pgmux so its auth backends exit and flush their function statistics
    mux.signal_and_wait(3, std::time::Duration::from_secs(10));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let uncached = user_search_calls(&pg);
    assert!(
        uncached >= 1000,
        "expected one auth_query per login, saw {uncached}"
    );

    // with auth_query_cache_ttl: a burst of 1000 logins runs a handful of queries
    let mut mux = Pgmux::start(
        &pg,
        &format!("{AUTH}default_pool_size = 50\nauth_query_cache_ttl = 60"),
        &[(&seed.auth_user, &seed.auth_password)],
    );
    let (ok, out) = burst(mux.port);
    assert!(ok, "{out}");
    assert!(out.contains("number of failed transactions: 0"), "{out}");
    mux.signal_and_wait(3, std::time::Duration::from_secs(10));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let cached = user_search_calls(&pg) - uncached;
    assert!(
        cached <= 10,
        "expected the cache to absorb the burst, saw {cached} lookups"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_database_auth_user_and_unknown_user_mock() {
    let (pg, seed) = postgres(100);
    let lines = format!(
        "auth_type = md5\nauth_unknown_user_mock = 1\n[databases]\n\
         perdb = host=127.0.0.1 port={} dbname=synergyflow auth_user=pgmux_auth auth_dbname=postgres \
         auth_query='SELECT usename, passwd FROM public.user_search($1)'",
        pg.port()
    );
    let mux = Pgmux::start(&pg, &lines, &[(&seed.auth_user, &seed.auth_password)]);
    // the [databases] entry's own auth_user/auth_dbname/auth_query
    let c = connect(&mux.url("perdb", &seed.app_user, &seed.app_password))
        .await
        .unwrap();
    let db: String = c
        .query_one("select current_database()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(db, "synergyflow");
    // a database without auth_user: the user is unknown there, the login fails
    let e = connect(&mux.url("synergyflow", &seed.app_user, &seed.app_password))
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).1, "password authentication failed");
    // auth_unknown_user_mock: an unknown user looks exactly like a wrong password
    let wrong = connect(&mux.url("perdb", &seed.app_user, "wrong"))
        .await
        .unwrap_err();
    let unknown = connect(&mux.url("perdb", "nobody_at_all", "wrong"))
        .await
        .unwrap_err();
    assert_eq!(db_error(&wrong), db_error(&unknown));
    assert_eq!(
        db_error(&unknown),
        ("08P01".into(), "SASL authentication failed".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_with_the_lookup_cache_on() {
    let (pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        &format!("{AUTH}auth_query_cache_ttl = 300"),
        &[(&seed.auth_user, &seed.auth_password)],
    );
    // md5: a login that fails against the cached secret is re-checked at once against a fresh lookup
    let m = connect(&mux.url("postgres", "md5_user", "md5-password"))
        .await
        .unwrap();
    drop(m);
    pg.psql(
        "postgres",
        "SET password_encryption = 'md5'; ALTER ROLE md5_user PASSWORD 'md5-rotated'",
    )
    .unwrap();
    let m = connect(&mux.url("postgres", "md5_user", "md5-rotated"))
        .await
        .unwrap();
    assert_eq!(
        m.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
    let e = connect(&mux.url("postgres", "md5_user", "md5-password"))
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).1, "password authentication failed");
    // SCRAM: the failed exchange drops the cached verifier, so the retry uses the new one
    let url = |pw: &str| mux.url("synergyflow", &seed.app_user, pw);
    connect(&url(&seed.app_password)).await.unwrap();
    pg.psql(
        "postgres",
        "ALTER ROLE synergyflow_app PASSWORD 'scram-rotated'",
    )
    .unwrap();
    // the first attempt still meets the cached verifier (a SCRAM proof cannot be re-checked
    // against a verifier with another salt), and drops it...
    let first = connect(&url("scram-rotated")).await.unwrap_err();
    assert_eq!(db_error(&first).1, "SASL authentication failed");
    // ...so the next attempt uses the fresh one
    let ok = connect(&url("scram-rotated")).await.unwrap();
    assert_eq!(
        ok.query_one("select 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
    let e = connect(&url(&seed.app_password)).await.unwrap_err();
    assert_eq!(db_error(&e).1, "SASL authentication failed");
}
