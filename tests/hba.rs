//! auth_type = hba: each method on each connection type, and peer authentication on the unix socket.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_methods_and_peer() {
    let (pg, seed) = postgres(100);
    pg.psql(
        "postgres",
        "CREATE ROLE root LOGIN PASSWORD 'root-password'",
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("pgmux-hba-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hba = dir.join("pg_hba.conf");
    std::fs::write(
        &hba,
        "local all root peer\n\
         local all trust_user peer\n\
         host synergyflow synergyflow_app 127.0.0.1/32 scram-sha-256\n\
         host postgres md5_user 127.0.0.1/32 md5\n\
         host all plain_user 127.0.0.1/32 password\n\
         host all trust_user 127.0.0.1/32 trust\n\
         host all rejectme 0.0.0.0/0 reject\n\
         hostssl all all 0.0.0.0/0 trust\n",
    )
    .unwrap();
    let users: &[(&str, &str)] = &[
        (&seed.app_user, &seed.app_password),
        ("md5_user", "md5-password"),
        ("plain_user", "plain-password"),
        ("trust_user", "unused"),
        ("rejectme", "x"),
        ("root", "root-password"),
    ];
    let mux = Pgmux::start(
        &pg,
        &format!("auth_type = hba\nauth_hba_file = {}", hba.display()),
        users,
    );
    let ok = |url: String| async move {
        let c = connect(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        c.query_one("select current_user::text", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    let fails = |url: String| async move { db_error(&connect(&url).await.unwrap_err()) };

    assert_eq!(
        ok(mux.url("synergyflow", &seed.app_user, &seed.app_password)).await,
        seed.app_user
    );
    assert_eq!(
        fails(mux.url("synergyflow", &seed.app_user, "bad")).await.1,
        "SASL authentication failed"
    );
    assert_eq!(
        ok(mux.url("postgres", "md5_user", "md5-password")).await,
        "md5_user"
    );
    assert_eq!(
        fails(mux.url("postgres", "md5_user", "bad")).await.1,
        "password authentication failed"
    );
    assert_eq!(
        ok(mux.url("postgres", "plain_user", "plain-password")).await,
        "plain_user"
    );
    assert_eq!(
        fails(mux.url("postgres", "plain_user", "bad")).await.1,
        "password authentication failed"
    );
    assert_eq!(
        ok(mux.url("postgres", "trust_user", "whatever")).await,
        "trust_user"
    );
    assert_eq!(
        fails(mux.url("postgres", "rejectme", "x")).await,
        ("08P01".into(), "login rejected".into())
    );
    // no rule matches (hostssl needs TLS): rejected
    assert_eq!(
        fails(mux.url("postgres", &seed.app_user, &seed.app_password))
            .await
            .1,
        "login rejected"
    );

    // peer on the unix socket: this test runs as root
    let me = pgmux::client::peer::user_name(unsafe { libc_geteuid() }).unwrap();
    let sock = |user: &str, db: &str| {
        format!(
            "host={} port={} dbname={db} user={user} password=x",
            mux.dir.display(),
            mux.port
        )
    };
    if me == "root" {
        assert_eq!(ok(sock("root", "postgres")).await, "root");
    }
    assert_eq!(
        fails(sock("trust_user", "postgres")).await,
        ("08P01".into(), "unix socket login rejected".into())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
