//! The admin console through psql and tokio-postgres: SHOW layouts as PgBouncer 1.25 sends them,
//! permissions, errors that keep the session open, and the queries CNPG and pgbouncer_exporter run.

mod common;

use common::*;
use std::process::Command;

/// Run a console command with psql over TCP; returns (header, rows) split on '|', or stderr.
pub fn psql_admin(
    pg: &pgmux::dev::TempPostgres,
    mux: &Pgmux,
    user: &str,
    password: &str,
    sql: &str,
) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let out = Command::new(pg.tool("psql"))
        .args([
            "-X",
            "-A",
            "-F",
            "|",
            "-P",
            "footer=off",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(mux.port.to_string())
        .args(["-U", user, "-d", "pgbouncer", "-c", sql])
        .env("PGPASSWORD", password)
        .output()
        .expect("run psql");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap_or_default()
        .split('|')
        .map(str::to_string)
        .collect();
    let rows = lines
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect();
    Ok((header, rows))
}

const SOCKET_COLS: &str = "type,user,database,replication,state,addr,port,local_addr,local_port,connect_time,request_time,wait,wait_us,close_needed,ptr,link,remote_pid,tls,application_name,prepared_statements,id";

/// PgBouncer 1.25's column layouts (src/admin.c, src/stats.c).
fn layouts() -> Vec<(&'static str, String)> {
    vec![
        ("POOLS", "database,user,cl_active,cl_waiting,cl_active_cancel_req,cl_waiting_cancel_req,sv_active,sv_active_cancel,sv_being_canceled,sv_idle,sv_used,sv_tested,sv_login,maxwait,maxwait_us,pool_mode,load_balance_hosts".into()),
        ("STATS", "database,total_server_assignment_count,total_xact_count,total_query_count,total_received,total_sent,total_xact_time,total_query_time,total_wait_time,total_client_parse_count,total_server_parse_count,total_bind_count,avg_server_assignment_count,avg_xact_count,avg_query_count,avg_recv,avg_sent,avg_xact_time,avg_query_time,avg_wait_time,avg_client_parse_count,avg_server_parse_count,avg_bind_count".into()),
        ("STATS_TOTALS", "database,server_assignment_count,xact_count,query_count,bytes_received,bytes_sent,xact_time,query_time,wait_time,client_parse_count,server_parse_count,bind_count".into()),
        ("STATS_AVERAGES", "database,server_assignment_count,xact_count,query_count,bytes_received,bytes_sent,xact_time,query_time,wait_time,avg_client_parse_count,avg_server_parse_count,avg_bind_count".into()),
        ("TOTALS", "name,value".into()),
        ("SERVERS", SOCKET_COLS.into()),
        ("CLIENTS", SOCKET_COLS.into()),
        ("SOCKETS", format!("{SOCKET_COLS},recv_pos,pkt_pos,pkt_remain,send_pos,send_remain,pkt_avail,send_avail")),
        ("ACTIVE_SOCKETS", format!("{SOCKET_COLS},recv_pos,pkt_pos,pkt_remain,send_pos,send_remain,pkt_avail,send_avail")),
        ("DATABASES", "name,host,port,database,force_user,pool_size,min_pool_size,reserve_pool_size,server_lifetime,pool_mode,load_balance_hosts,max_connections,current_connections,max_client_connections,current_client_connections,paused,disabled".into()),
        ("USERS", "name,pool_size,reserve_pool_size,pool_mode,max_user_connections,current_connections,max_user_client_connections,current_client_connections".into()),
        ("CONFIG", "key,value,default,changeable".into()),
        ("LISTS", "list,items".into()),
        ("STATE", "key,value".into()),
        ("VERSION", "version".into()),
        ("MEM", "name,size,used,free,memtotal".into()),
        ("FDS", "fd,task,user,database,addr,port,cancel,link,client_encoding,std_strings,datestyle,timezone,password,scram_client_key,scram_server_key".into()),
        ("DNS_HOSTS", "hostname,ttl,addrs".into()),
        ("DNS_ZONES", "zonename,serial,count".into()),
        ("PEERS", "peer_id,host,port,pool_size".into()),
        ("PEER_POOLS", "peer_id,cl_active_cancel_req,cl_waiting_cancel_req,sv_active_cancel,sv_login".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_layouts_permissions_and_errors() {
    let (pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "admin_users = admin\nstats_users = watcher\ndefault_pool_size = 5",
        &[
            (&seed.app_user, &seed.app_password),
            ("admin", "admin-pw"),
            ("watcher", "watcher-pw"),
            ("nobody", "nobody-pw"),
        ],
    );
    // some traffic so pools, clients and servers exist
    let app = connect(&mux.url("synergyflow", &seed.app_user, &seed.app_password))
        .await
        .unwrap();
    app.simple_query("select 1").await.unwrap();

    for (cmd, cols) in layouts() {
        let (header, _) = psql_admin(&pg, &mux, "admin", "admin-pw", &format!("SHOW {cmd};"))
            .unwrap_or_else(|e| panic!("SHOW {cmd}: {e}"));
        assert_eq!(header.join(","), cols, "SHOW {cmd} columns");
    }
    // SHOW POOLS: 17 columns, load_balance_hosts NULL, admin pseudo-pool listed
    let c = connect(&mux.url("pgbouncer", "admin", "admin-pw"))
        .await
        .unwrap();
    let pools = rows_of(&c.simple_query("show pools").await.unwrap());
    assert!(pools.iter().all(|r| r.len() == 17 && r[16].is_none()));
    assert!(pools.iter().any(|r| r[0].as_deref() == Some("pgbouncer")));
    let app_pool = pools
        .iter()
        .find(|r| r[0].as_deref() == Some("synergyflow"))
        .expect("synergyflow pool");
    assert_eq!(app_pool[1].as_deref(), Some(seed.app_user.as_str()));
    assert_eq!(app_pool[2].as_deref(), Some("1"), "cl_active");
    assert_eq!(app_pool[15].as_deref(), Some("transaction"));
    // SHOW STATS has 23 columns and a row for the admin database
    let stats = rows_of(&c.simple_query("SHOW STATS;").await.unwrap());
    assert!(stats.iter().all(|r| r.len() == 23));
    assert!(stats.iter().any(|r| r[0].as_deref() == Some("pgbouncer")));
    // SHOW CLIENTS lists the app client by id; SHOW SERVERS its server
    let clients = rows_of(&c.simple_query("show clients").await.unwrap());
    assert!(
        clients
            .iter()
            .any(|r| r[2].as_deref() == Some("synergyflow")
                && r[1].as_deref() == Some(seed.app_user.as_str()))
    );
    let servers = rows_of(&c.simple_query("show servers").await.unwrap());
    assert!(servers.iter().any(|r| r[0].as_deref() == Some("S")
        && r[2].as_deref() == Some("synergyflow")
        && r[4].as_deref() == Some("idle")));
    // VERSION, STATE, LISTS, CONFIG values
    let v = rows_of(&c.simple_query("show version").await.unwrap());
    assert!(v[0][0].as_deref().unwrap().starts_with("PgBouncer 1.25"));
    let st = rows_of(&c.simple_query("SHOW STATE").await.unwrap());
    assert_eq!(st[0], vec![Some("active".into()), Some("yes".into())]);
    let lists = rows_of(&c.simple_query("SHOW LISTS").await.unwrap());
    let names: Vec<_> = lists.iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(
        names.join(","),
        "databases,users,peers,pools,peer_pools,free_clients,used_clients,login_clients,free_servers,used_servers,dns_names,dns_zones,dns_queries,dns_pending"
    );
    let cfg = rows_of(&c.simple_query("show config").await.unwrap());
    let dps = cfg
        .iter()
        .find(|r| r[0].as_deref() == Some("default_pool_size"))
        .unwrap();
    assert_eq!(dps[1].as_deref(), Some("5"));
    assert_eq!(dps[2].as_deref(), Some("20"));
    assert_eq!(dps[3].as_deref(), Some("yes"));
    // fake parameters, SELECT as SHOW
    let enc = rows_of(&c.simple_query("show client_encoding").await.unwrap());
    assert_eq!(enc[0][0].as_deref(), Some("UTF-8"));
    let sel = rows_of(&c.simple_query("SELECT version").await.unwrap());
    assert!(sel[0][0].as_deref().unwrap().starts_with("PgBouncer"));

    // errors keep the session open, with PgBouncer's texts
    let e = c.simple_query("show nonsense").await.unwrap_err();
    assert_eq!(
        db_error(&e).1,
        "invalid command 'show nonsense', use SHOW HELP;"
    );
    let e = c.simple_query("select 1 + 1").await.unwrap_err();
    assert!(db_error(&e).1.starts_with("invalid command"));
    let e = c.simple_query("resume").await.unwrap_err();
    assert_eq!(db_error(&e).1, "pooler is not paused/suspended");
    let e = c.simple_query("KILL_CLIENT abc").await.unwrap_err();
    assert_eq!(db_error(&e).1, "invalid client pointer supplied");
    let e = c.simple_query("KILL_CLIENT 999999").await.unwrap_err();
    assert_eq!(db_error(&e).1, "client not found");
    let e = c.simple_query("pause nosuchdb").await.unwrap_err();
    assert_eq!(db_error(&e).1, "no such database: nosuchdb");
    let e = c
        .simple_query("SET max_client_conn = lots")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).1, "SET failed");
    let e = c.simple_query("SET listen_port = 1").await.unwrap_err();
    assert_eq!(db_error(&e).1, "SET failed");
    assert_eq!(
        rows_of(&c.simple_query("show state").await.unwrap()).len(),
        3
    );
    // the extended protocol is refused
    let e = c.query("show pools", &[]).await.unwrap_err();
    assert!(
        db_error(&e)
            .1
            .contains("extended query protocol not supported by admin console"),
        "{e}"
    );

    // stats_users: SHOW yes, control no
    let w = connect(&mux.url("pgbouncer", "watcher", "watcher-pw"))
        .await
        .unwrap();
    assert!(!rows_of(&w.simple_query("show pools").await.unwrap()).is_empty());
    let e = w.simple_query("PAUSE").await.unwrap_err();
    assert_eq!(db_error(&e).1, "admin access needed");
    let e = w.simple_query("show fds").await.unwrap_err();
    assert_eq!(db_error(&e).1, "admin access needed");
    // a user in neither list
    let e = connect(&mux.url("pgbouncer", "nobody", "nobody-pw"))
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).1, "not allowed");
    // wrong password for an admin
    let e = connect(&mux.url("pgbouncer", "admin", "nope"))
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).1, "SASL authentication failed");

    // SHOW HELP prints the command list as a NOTICE (psql shows it on stderr)
    let out = Command::new(pg.tool("psql"))
        .args(["-X", "-h", "127.0.0.1", "-p", &mux.port.to_string()])
        .args(["-U", "admin", "-d", "pgbouncer", "-c", "SHOW HELP"])
        .env("PGPASSWORD", "admin-pw")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Console usage") && err.contains("SHOW HELP|CONFIG|DATABASES"),
        "{err}"
    );

    // the pooler's own OS user reaches the console as pgbouncer over the unix socket (CNPG's way)
    let out = Command::new(pg.tool("psql"))
        .args(["-X", "-A", "-t", "-h"])
        .arg(&mux.dir)
        .args([
            "-p",
            &mux.port.to_string(),
            "-U",
            "pgbouncer",
            "-d",
            "pgbouncer",
            "-c",
            "SHOW STATE",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("active|yes"));
}

/// The exact query sequence CNPG's metrics collector and prometheus-community's pgbouncer_exporter
/// run (simple protocol, client_encoding/datestyle startup parameters), and the values they read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cnpg_and_exporter_queries() {
    let (pg, seed) = postgres(100);
    let mux = Pgmux::start(
        &pg,
        "admin_users = pgbouncer\nstats_period = 1",
        &[
            (&seed.app_user, &seed.app_password),
            ("pgbouncer", "pgb-pw"),
        ],
    );
    let app = connect(&mux.url("synergyflow", &seed.app_user, &seed.app_password))
        .await
        .unwrap();
    for _ in 0..20 {
        app.simple_query("select 1").await.unwrap();
    }
    for _ in 0..5 {
        app.query("select $1::int", &[&1i32]).await.unwrap();
    }
    // pgx: client_encoding=UTF8, datestyle=ISO in the startup packet
    let url = format!(
        "{} options='-c client_encoding=UTF8 -c datestyle=ISO'",
        mux.url("pgbouncer", "pgbouncer", "pgb-pw")
    );
    let c = connect(&url).await.unwrap();
    // CNPG: SHOW LISTS; SHOW POOLS; SHOW STATS; with column counts 2 / 17 / 23
    let lists = rows_of(&c.simple_query("SHOW LISTS;").await.unwrap());
    assert!(
        lists
            .iter()
            .all(|r| r.len() == 2 && r[1].as_ref().unwrap().parse::<i64>().is_ok())
    );
    let pools = rows_of(&c.simple_query("SHOW POOLS;").await.unwrap());
    assert!(pools.iter().all(|r| r.len() == 17));
    for r in &pools {
        for v in &r[2..15] {
            v.as_ref().unwrap().parse::<i32>().unwrap();
        }
        assert!(r[16].is_none(), "load_balance_hosts must be NULL for CNPG");
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let stats = rows_of(&c.simple_query("SHOW STATS;").await.unwrap());
    assert!(stats.iter().all(|r| r.len() == 23));
    let s = stats
        .iter()
        .find(|r| r[0].as_deref() == Some("synergyflow"))
        .unwrap();
    let num = |i: usize| s[i].as_ref().unwrap().parse::<u64>().unwrap();
    assert!(num(2) >= 25, "total_xact_count {}", num(2));
    assert!(num(3) >= 25, "total_query_count {}", num(3));
    assert!(num(4) > 0 && num(5) > 0, "bytes");
    assert!(num(7) > 0, "total_query_time");
    assert!(num(9) >= 5, "total_client_parse_count {}", num(9));
    assert!(num(11) >= 5, "total_bind_count {}", num(11));
    // exporter: SHOW VERSION, CONFIG (4 columns), CLIENTS, DATABASES, STATS_TOTALS
    let v = rows_of(&c.simple_query("SHOW VERSION;").await.unwrap());
    assert_eq!(v[0][0].as_deref(), Some("PgBouncer 1.25.2"));
    let cfg = rows_of(&c.simple_query("SHOW CONFIG;").await.unwrap());
    assert!(cfg.iter().all(|r| r.len() == 4));
    for k in ["max_client_conn", "max_user_connections"] {
        let r = cfg.iter().find(|r| r[0].as_deref() == Some(k)).unwrap();
        r[1].as_ref().unwrap().parse::<i64>().unwrap();
    }
    let clients = rows_of(&c.simple_query("SHOW CLIENTS;").await.unwrap());
    assert!(clients.iter().all(|r| r.len() == 21));
    assert!(
        clients
            .iter()
            .any(|r| r[2].as_deref() == Some("synergyflow"))
    );
    let dbs = rows_of(&c.simple_query("SHOW DATABASES;").await.unwrap());
    assert!(dbs.iter().all(|r| r.len() == 17));
    let d = dbs
        .iter()
        .find(|r| r[0].as_deref() == Some("synergyflow"))
        .unwrap();
    assert_eq!(d[5].as_deref(), Some("50"), "pool_size");
    assert_eq!(d[12].as_deref(), Some("1"), "current_connections");
    let totals = rows_of(&c.simple_query("SHOW STATS_TOTALS;").await.unwrap());
    let t = totals
        .iter()
        .find(|r| r[0].as_deref() == Some("synergyflow"))
        .unwrap();
    assert_eq!(t.len(), 12);
    assert!(t[2].as_ref().unwrap().parse::<u64>().unwrap() >= 25);
}
