//! Criterion micro-benchmarks of the hot path: message-boundary scanning, pool checkout/checkin and the parameter-sync check.

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgmux::params::Tracked;
use pgmux::protocol::scan::Scanner;
use std::time::Duration;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A server reply to `SELECT` of 100 small rows, as it crosses the relay.
fn result_set() -> Vec<u8> {
    let mut v = msg(b'T', &[0u8; 30]);
    for _ in 0..100 {
        v.extend(msg(b'D', &[0u8; 40]));
    }
    v.extend(msg(b'C', b"SELECT 100\0"));
    v.extend(msg(b'Z', b"I"));
    v
}

fn scanning(c: &mut Criterion) {
    let data = result_set();
    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("server_result_100_rows", |b| {
        let mut sc = Scanner::new(1 << 30);
        let mut buf = BytesMut::with_capacity(data.len() * 2);
        b.iter(|| {
            buf.extend_from_slice(&data);
            let mut z = 0;
            while let Some(m) = sc.next(&mut buf, |t| t == b'Z' || t == b'S').unwrap() {
                z += (m.tag == b'Z') as u32;
            }
            let out = sc.take_scanned(&mut buf);
            assert_eq!(z, 1);
            std::hint::black_box(out);
        })
    });
    let q = msg(
        b'Q',
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;\0",
    );
    g.throughput(Throughput::Elements(1));
    g.bench_function("client_query", |b| {
        let mut sc = Scanner::new(1 << 30);
        let mut buf = BytesMut::with_capacity(1024);
        b.iter(|| {
            buf.extend_from_slice(&q);
            while let Some(m) = sc.next(&mut buf, |_| false).unwrap() {
                std::hint::black_box(m.tag);
            }
            std::hint::black_box(sc.take_scanned(&mut buf));
        })
    });
    g.finish();
}

fn pool(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = rt.block_on(async {
        let (pool, peers) = pgmux::pool::fixture::socketpair_pool(50, 50, Duration::from_secs(5));
        std::mem::forget(peers); // keep the other ends open for the whole run
        pool
    });
    c.bench_function("pool_checkout_checkin", |b| {
        b.iter(|| {
            rt.block_on(async {
                let s = pool.checkout().await.unwrap();
                pool.checkin(s, true);
            })
        })
    });
}

/// The check run on every server hand-over: does the server already have the client's tracked
/// parameters (client_encoding, DateStyle, TimeZone, ...)? Usually it does, and no SET is sent.
fn param_sync(c: &mut Criterion) {
    let t = Tracked::new(&["IntervalStyle".to_string()]);
    let fill = |set: &mut pgmux::params::ParamSet| {
        for (name, v) in [
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("TimeZone", "Europe/Berlin"),
            ("standard_conforming_strings", "on"),
            ("application_name", "synergyflow-api"),
            ("IntervalStyle", "postgres"),
        ] {
            set.set(t.index(name).unwrap(), v);
        }
    };
    let (mut client, mut server) = (t.empty_set(), t.empty_set());
    fill(&mut client);
    fill(&mut server);
    let mut g = c.benchmark_group("param_sync");
    // each case changes one server value further; the last needs a SET
    let cases = [
        ("in_sync", None),
        ("same_values_other_case", Some(("DateStyle", "iso, mdy"))),
        ("one_set_needed", Some(("TimeZone", "UTC"))),
    ];
    for (name, change) in cases {
        if let Some((k, v)) = change {
            server.set(t.index(k).unwrap(), v);
        }
        let needs_set = name == "one_set_needed";
        g.bench_function(name, |b| {
            b.iter(|| {
                let sql = std::hint::black_box(&client).sync_sql(&server, &t);
                assert_eq!(sql.is_some(), needs_set);
                sql
            })
        });
    }
    g.finish();
}

criterion_group!(benches, scanning, pool, param_sync);
criterion_main!(benches);
