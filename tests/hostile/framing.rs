//! Hostile clients, part 1: broken startup packets, messages before authentication completes, and bad message lengths after login.

use super::*;

// ---------------------------------------------------------------------------------------------
// 1. broken startup

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_broken_startup_packets() {
    let (pg, _seed) = postgres(50);
    let mux = Pgmux::start(&pg, "client_login_timeout = 10", &users());
    let port = mux.port;
    tokio::task::spawn_blocking(move || {
        let bad_header = || Some(fatal("bad packet header"));
        // garbage as the first packet: an HTTP request, 0xff bytes, pseudo-random bytes
        for (what, bytes) in [
            ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
            ("0xff", vec![0xff; 64]),
            (
                "random",
                (0..200u32).map(|i| (i * 7919 % 251) as u8).collect(),
            ),
        ] {
            let mut s = raw(port);
            s.write_all(&bytes).unwrap();
            expect_end(&mut s, bad_header(), what);
        }
        // length fields: 0, 7 (< 8), negative, 2 GiB, just over the 64 KiB startup limit
        for len in [
            0u32,
            7,
            0x8000_0000,
            0xffff_ffff,
            0x7fff_ffff,
            64 * 1024 + 1,
        ] {
            let mut s = raw(port);
            let mut p = len.to_be_bytes().to_vec();
            p.extend(196608u32.to_be_bytes());
            s.write_all(&p).unwrap();
            expect_end(&mut s, bad_header(), &format!("length {len:#x}"));
        }
        // a well-framed packet with a protocol code that is neither v3, v2 nor a request
        for code in [0x1234_5678u32, 0x0004_0000, 0x0001_0000, 0] {
            let mut s = raw(port);
            let mut p = 16u32.to_be_bytes().to_vec();
            p.extend(code.to_be_bytes());
            p.extend(b"user\0x\0\0\0");
            s.write_all(&p[..16]).unwrap();
            expect_end(&mut s, bad_header(), &format!("code {code:#x}"));
        }
        // a v3 packet whose parameters are not NUL-terminated
        let mut s = raw(port);
        let mut p = 20u32.to_be_bytes().to_vec();
        p.extend(196608u32.to_be_bytes());
        p.extend(b"user\0synergy");
        s.write_all(&p).unwrap();
        expect_end(&mut s, Some(fatal("bad packet")), "unterminated parameters");
        // a PasswordMessage before any startup packet (PgBouncer's text)
        let mut s = raw(port);
        s.write_all(&msg(b'p', b"secret\0")).unwrap();
        expect_end(
            &mut s,
            Some(fatal("client password pkt before startup packet")),
            "password first",
        );
        // half a startup packet, then the socket is closed: nothing to answer, nothing leaks
        for _ in 0..20 {
            let mut s = raw(port);
            let p = startup_packet("synergyflow_app", "synergyflow");
            s.write_all(&p[..p.len() / 2]).unwrap();
            drop(s);
        }
        // half a startup packet, then silence: the write side is shut, pgmux closes
        let mut s = raw(port);
        let p = startup_packet("synergyflow_app", "synergyflow");
        s.write_all(&p[..p.len() / 2]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        expect_end(&mut s, None, "half a packet then FIN");

        // a startup packet and the SCRAM exchange split byte by byte with small delays: logs in
        let mut s = raw(port);
        for b in startup_packet("synergyflow_app", "synergyflow") {
            s.write_all(&[b]).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        match next(&mut s) {
            Reply::Auth(10, _) => {}
            other => panic!("byte-by-byte startup: {other:?}"),
        }
        let mut sc = ScramSha256::new(b"synergyflow-dev-password", ChannelBinding::unsupported());
        for b in sasl_initial(b"SCRAM-SHA-256", sc.message()) {
            s.write_all(&[b]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let Reply::Auth(11, sf) = next(&mut s) else {
            panic!("no SASLContinue")
        };
        sc.update(&sf).unwrap();
        for b in msg(b'p', sc.message()) {
            s.write_all(&[b]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let Reply::Auth(12, fin) = next(&mut s) else {
            panic!("no SASLFinal")
        };
        sc.finish(&fin).unwrap();
        welcome(&mut s);
        assert_eq!(raw_query(&mut s, "select 41 + 1").unwrap(), vec!["42"]);
        // and a query split byte by byte too
        for b in msg(b'Q', b"select 'slow'\0") {
            s.write_all(&[b]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut got = Vec::new();
        loop {
            match next(&mut s) {
                Reply::Msg(b'D', d) => got.push(String::from_utf8_lossy(&d[6..]).into_owned()),
                Reply::Msg(b'Z', _) => break,
                Reply::Msg(..) => {}
                other => panic!("byte-by-byte query: {other:?}"),
            }
        }
        assert_eq!(got, vec!["slow"]);
    })
    .await
    .unwrap();
    assert_serving(&mux, "after broken startup packets").await;
    assert_mem_bounded(&mux, "after broken startup packets");
    let log = mux.log_text();
    assert!(log.contains("pooler error: bad packet header"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_before_authentication_completes() {
    let (pg, _seed) = postgres(50);
    let mux = Pgmux::start(&pg, "client_login_timeout = 10", &users());
    let port = mux.port;
    tokio::task::spawn_blocking(move || {
        // every frontend message type (and some unknown letters), well framed
        let kinds: Vec<(u8, Vec<u8>)> = vec![
            (b'Q', b"select 1\0".to_vec()),
            (b'P', b"\0select 1\0\0\0".to_vec()),
            (b'B', b"\0\0\0\0\0\0\0\0".to_vec()),
            (b'E', b"\0\0\0\0\0".to_vec()),
            (b'D', b"S\0".to_vec()),
            (b'C', b"S\0".to_vec()),
            (b'S', vec![]),
            (b'H', vec![]),
            (b'X', vec![]),
            (b'd', b"copy data".to_vec()),
            (b'c', vec![]),
            (b'f', b"oops\0".to_vec()),
            (b'F', vec![0; 10]),
            (b'z', b"??".to_vec()),
            (b'!', vec![]),
            (0x7f, vec![1, 2, 3]),
        ];
        for (tag, body) in &kinds {
            let what = format!("{:?} after the startup packet", *tag as char);
            // right after the startup packet (in the same write, and after the auth request)
            let mut s = raw(port);
            let mut p = startup_packet("synergyflow_app", "synergyflow");
            p.extend(msg(*tag, body));
            s.write_all(&p).unwrap();
            assert!(matches!(next(&mut s), Reply::Auth(10, _)), "{what}");
            expect_end(&mut s, Some(fatal("bad packet")), &what);

            // in the middle of the SASL exchange (after the server-first-message)
            let what = format!("{:?} in the middle of SASL", *tag as char);
            let mut s = start_sasl(port, "synergyflow_app");
            let sc = ScramSha256::new(b"synergyflow-dev-password", ChannelBinding::unsupported());
            s.write_all(&sasl_initial(b"SCRAM-SHA-256", sc.message()))
                .unwrap();
            assert!(matches!(next(&mut s), Reply::Auth(11, _)), "{what}");
            write_or_reset(&mut s, &msg(*tag, body));
            expect_end(&mut s, Some(fatal("bad packet")), &what);
        }
        // a header-only message announcing a large body is refused at once, without waiting for it
        let mut s = start_sasl(port, "synergyflow_app");
        s.write_all(&[b'Q', 0, 0, 0xff, 0]).unwrap();
        let t = Instant::now();
        expect_end(&mut s, Some(fatal("bad packet")), "announced Query");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // the startup packet sent again instead of the SASL response
        let mut s = start_sasl(port, "synergyflow_app");
        s.write_all(&startup_packet("synergyflow_app", "synergyflow"))
            .unwrap();
        let t = Instant::now();
        expect_end(
            &mut s,
            Some(fatal("client re-sent startup pkt")),
            "re-sent startup packet",
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // an SSLRequest or a CancelRequest in the middle of the exchange
        for p in [
            [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f].to_vec(),
            cancel_packet(16, &[0; 8]),
        ] {
            let mut s = start_sasl(port, "synergyflow_app");
            s.write_all(&p).unwrap();
            expect_end(
                &mut s,
                Some(fatal("client re-sent startup pkt")),
                "startup-phase request during SASL",
            );
        }
        // a PasswordMessage longer than any auth message may be
        let mut s = start_sasl(port, "synergyflow_app");
        let mut hdr = vec![b'p'];
        hdr.extend(((1u32 << 20) + 4).to_be_bytes());
        s.write_all(&hdr).unwrap();
        expect_end(
            &mut s,
            Some(fatal("bad packet header")),
            "1 MiB auth message",
        );
    })
    .await
    .unwrap();
    assert_serving(&mux, "after messages before authentication").await;
    assert_mem_bounded(&mux, "after messages before authentication");
}

// ---------------------------------------------------------------------------------------------
// 2. bad lengths after login

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_message_lengths_after_login() {
    let (pg, _seed) = postgres(50);
    let mux = Pgmux::start(&pg, "max_packet_size = 65536", &users());
    let port = mux.port;
    let before = mem_kib(mux.pid()).0;
    tokio::task::spawn_blocking(move || {
        // lengths beyond max_packet_size, up to 4 GiB, on the hot path and on the prepared-statement
        // path (Parse is buffered whole): refused from the header alone, nothing is allocated
        for (tag, len) in [
            (b'Q', 65537u32),
            (b'Q', 0x7fff_ffff),
            (b'Q', 0xffff_ffff),
            (b'P', 0x7fff_ffff),
            (b'B', 0x4000_0000),
            (b'd', 0x8000_0000),
            (b'z', 0x7fff_ffff),
        ] {
            let (mut s, _) = raw_login(port);
            let mut hdr = vec![tag];
            hdr.extend(len.to_be_bytes());
            s.write_all(&hdr).unwrap();
            expect_end(
                &mut s,
                Some(fatal("bad packet header")),
                &format!("{:?} len {len:#x}", tag as char),
            );
        }
        // lengths below 4 (the length counts itself)
        for len in [0u32, 1, 3] {
            let (mut s, _) = raw_login(port);
            let mut p = vec![b'Q'];
            p.extend(len.to_be_bytes());
            p.extend(b"select 1\0");
            s.write_all(&p).unwrap();
            expect_end(
                &mut s,
                Some(fatal("bad packet header")),
                &format!("len {len}"),
            );
        }
        // the same after a valid query in the same write, and inside a transaction
        let (mut s, _) = raw_login(port);
        assert_eq!(raw_query(&mut s, "begin").unwrap(), Vec::<String>::new());
        let mut p = msg(b'Q', b"select 1\0");
        p.extend([b'Q', 0xff, 0xff, 0xff, 0xff]);
        s.write_all(&p).unwrap();
        let mut saw_error = false;
        loop {
            match next(&mut s) {
                Reply::Error(sev, code, m) => {
                    assert_eq!(
                        (sev.as_str(), code.as_str(), m.as_str()),
                        ("FATAL", "08P01", "bad packet header")
                    );
                    saw_error = true;
                }
                Reply::Closed => break,
                Reply::Msg(..) => {}
                other => panic!("{other:?}"),
            }
        }
        assert!(saw_error);
        // a message just under the limit is fine
        let (mut s, _) = raw_login(port);
        let big = format!("select length('{}')", "x".repeat(60_000));
        assert_eq!(raw_query(&mut s, &big).unwrap(), vec!["60000"]);
        // a large message announced, half sent, then the client vanishes
        for _ in 0..10 {
            let (mut s, _) = raw_login(port);
            let mut p = vec![b'Q'];
            p.extend(60_004u32.to_be_bytes());
            p.extend(vec![b'x'; 30_000]);
            s.write_all(&p).unwrap();
        }
    })
    .await
    .unwrap();
    assert_serving(&mux, "after bad lengths").await;
    let (rss, _) = assert_mem_bounded(&mux, "after bad lengths");
    // nothing near a GiB was reserved for the announced lengths
    assert!(
        rss < before + 64 * 1024,
        "RSS grew from {before} KiB to {rss} KiB"
    );
    let backends = backends(&pg, "synergyflow", "synergyflow_app");
    assert!(backends <= 50, "{backends}");
}
