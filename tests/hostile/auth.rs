//! Hostile clients, part 4: wrong, truncated and replayed SCRAM and md5 exchanges, and guessed cancel keys.

use super::*;

// ---------------------------------------------------------------------------------------------
// 5. broken SCRAM and md5 exchanges

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_exchanges_wrong_truncated_or_replayed() {
    let (pg, _seed) = postgres(50);
    let mux = Pgmux::start(&pg, "client_login_timeout = 10", &users());
    let port = mux.port;
    tokio::task::spawn_blocking(move || {
        let failed = || Some(fatal("SASL authentication failed"));
        let invalid_mech = || {
            Some(fatal(
                "client selected an invalid SASL authentication mechanism",
            ))
        };
        let pw = "synergyflow-dev-password";
        // mechanisms that were not offered
        for mech in [
            &b""[..],
            b"SCRAM-SHA-1",
            b"scram-sha-256",
            b"PLAIN",
            b"SCRAM-SHA-256 ",
        ] {
            let mut s = start_sasl(port, "synergyflow_app");
            s.write_all(&sasl_initial(mech, b"n,,n=,r=abcdef")).unwrap();
            expect_end(&mut s, invalid_mech(), &String::from_utf8_lossy(mech));
        }
        // truncated SASLInitialResponse packets
        for (what, body) in [
            ("no NUL after the mechanism", b"SCRAM-SHA-256".to_vec()),
            ("no data length", b"SCRAM-SHA-256\0".to_vec()),
            ("half a data length", b"SCRAM-SHA-256\0\0\0".to_vec()),
            ("data shorter than its length", {
                let mut b = b"SCRAM-SHA-256\0".to_vec();
                b.extend(100i32.to_be_bytes());
                b.extend(b"n,,n=,r=abc");
                b
            }),
            ("negative data length", {
                let mut b = b"SCRAM-SHA-256\0".to_vec();
                b.extend((-5i32).to_be_bytes());
                b.extend(b"n,,n=,r=abc");
                b
            }),
        ] {
            let mut s = start_sasl(port, "synergyflow_app");
            s.write_all(&msg(b'p', &body)).unwrap();
            expect_end(&mut s, Some(fatal("bad packet")), what);
        }
        // truncated or garbage client-first-messages
        for first in [
            &b""[..],
            b"n",
            b"n,",
            b"n,,",
            b"n,,n=",
            b"n,,n=,r=",
            b"n,,n=,r",
            b"y",
            b"\xff\xfe\x00\x01",
        ] {
            let mut s = start_sasl(port, "synergyflow_app");
            s.write_all(&sasl_initial(b"SCRAM-SHA-256", first)).unwrap();
            expect_end(&mut s, failed(), &format!("client-first {first:?}"));
        }
        // a well-formed exchange with a wrong password: a wrong proof
        let mut s = start_sasl(port, "synergyflow_app");
        let e = scram_exchange(&mut s, "not-the-password").unwrap_err();
        assert_eq!(Some(e), failed());
        assert_eq!(next(&mut s), Reply::Closed);

        // a successful session, recorded
        let mut s = start_sasl(port, "synergyflow_app");
        let (first, fin) = scram_exchange(&mut s, pw).unwrap();
        welcome(&mut s);
        drop(s);
        // its client-final replayed in a new session with the same client-first: the server
        // nonce differs, so the replay is refused
        let mut s = start_sasl(port, "synergyflow_app");
        s.write_all(&sasl_initial(b"SCRAM-SHA-256", &first))
            .unwrap();
        let Reply::Auth(11, sf) = next(&mut s) else {
            panic!("no server-first")
        };
        s.write_all(&msg(b'p', &fin)).unwrap();
        expect_end(&mut s, failed(), "replayed client-final");
        // the replay with its nonce rewritten to the new one: the proof no longer matches
        let new_nonce = String::from_utf8_lossy(&sf)
            .split(',')
            .next()
            .unwrap()
            .to_string();
        let fin_s = String::from_utf8_lossy(&fin).into_owned();
        let proof = fin_s.rsplit_once(",p=").unwrap().1;
        let mut s = start_sasl(port, "synergyflow_app");
        s.write_all(&sasl_initial(b"SCRAM-SHA-256", &first))
            .unwrap();
        let Reply::Auth(11, sf2) = next(&mut s) else {
            panic!("no server-first")
        };
        let nonce2 = String::from_utf8_lossy(&sf2)
            .split(',')
            .next()
            .unwrap()
            .to_string();
        assert_ne!(nonce2, new_nonce, "server nonces repeat");
        s.write_all(&msg(b'p', format!("c=biws,{nonce2},p={proof}").as_bytes()))
            .unwrap();
        expect_end(&mut s, failed(), "replayed proof with a fresh nonce");
        // a client-final with only the client's half of the nonce, or with an extra attribute
        for fin in [
            |_: &str| "c=biws,r=,p=AAAA".to_string(),
            |n: &str| format!("c=biws,{},p=", n),
            |n: &str| format!("c=biws,{n}"),
            |n: &str| format!("c=biws,{n},x=1,p={}", "A".repeat(44)),
            |n: &str| format!("c=biws,{n},p={}", "A".repeat(44)),
        ] {
            let mut s = start_sasl(port, "synergyflow_app");
            let sc = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
            s.write_all(&sasl_initial(b"SCRAM-SHA-256", sc.message()))
                .unwrap();
            let Reply::Auth(11, sf) = next(&mut s) else {
                panic!("no server-first")
            };
            let nonce = String::from_utf8_lossy(&sf)
                .split(',')
                .next()
                .unwrap()
                .to_string();
            let m = fin(&nonce);
            s.write_all(&msg(b'p', m.as_bytes())).unwrap();
            expect_end(&mut s, failed(), &m);
        }
        // the SASLInitialResponse sent twice
        let mut s = start_sasl(port, "synergyflow_app");
        let sc = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
        let init = sasl_initial(b"SCRAM-SHA-256", sc.message());
        s.write_all(&init).unwrap();
        assert!(matches!(next(&mut s), Reply::Auth(11, _)));
        s.write_all(&init).unwrap();
        expect_end(&mut s, failed(), "SASLInitialResponse twice");
        // a full valid login still works after all that
        let (mut s, _) = raw_login(port);
        assert_eq!(
            raw_query(&mut s, "select current_user").unwrap(),
            vec!["synergyflow_app"]
        );
    })
    .await
    .unwrap();
    assert_serving(&mux, "after broken SCRAM exchanges").await;
    assert_mem_bounded(&mux, "after broken SCRAM exchanges");
    let log = mux.log_text();
    assert!(
        !log.contains("synergyflow-dev-password"),
        "a password reached the log"
    );
}

/// `md5` + md5(md5(password + user) + salt), as a client sends it.
fn md5_response(password: &str, user: &str, salt: &[u8]) -> String {
    postgres_protocol::authentication::md5_hash(
        user.as_bytes(),
        password.as_bytes(),
        salt.try_into().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_exchanges_wrong_truncated_or_replayed() {
    let (pg, _seed) = postgres(50);
    let mux = Pgmux::start(&pg, "auth_type = md5\nclient_login_timeout = 10", &users());
    let port = mux.port;
    tokio::task::spawn_blocking(move || {
        let (user, pw) = ("synergyflow_app", "synergyflow-dev-password");
        let start = || {
            let mut s = raw(port);
            s.write_all(&startup_packet(user, "synergyflow")).unwrap();
            match next(&mut s) {
                Reply::Auth(5, salt) => (s, salt),
                other => panic!("expected AuthenticationMD5Password, got {other:?}"),
            }
        };
        let failed = || Some(fatal("password authentication failed"));
        let cstr = |v: &str| {
            let mut b = v.as_bytes().to_vec();
            b.push(0);
            b
        };
        // a correct answer logs in (and is recorded)
        let (mut s, salt1) = start();
        let good1 = md5_response(pw, user, &salt1);
        s.write_all(&msg(b'p', &cstr(&good1))).unwrap();
        welcome(&mut s);
        assert_eq!(raw_query(&mut s, "select 1").unwrap(), vec!["1"]);
        drop(s);
        // wrong answers
        for (what, body) in [
            ("wrong password", cstr(&md5_response("wrong", user, &salt1))),
            ("the cleartext password", cstr(pw)),
            (
                "the stored md5 secret",
                cstr(&pgmux::auth::md5::md5_secret(pw, user)),
            ),
            ("31 hex digits", cstr(&good1[..34])),
            ("33 hex digits", cstr(&format!("{good1}0"))),
            ("uppercase hex", cstr(&good1.to_uppercase())),
            ("garbage bytes", vec![0xff, 0xfe, 0x80, 0]),
            ("a long password", cstr(&"x".repeat(60_000))),
        ] {
            let (mut s, _) = start();
            s.write_all(&msg(b'p', &body)).unwrap();
            expect_end(&mut s, failed(), what);
        }
        // replayed: the answer for another session's salt
        let (mut s, salt2) = start();
        assert_ne!(salt1, salt2, "salts repeat");
        s.write_all(&msg(b'p', &cstr(&good1))).unwrap();
        expect_end(&mut s, failed(), "replayed md5 answer");
        // truncated password messages
        let (mut s, salt) = start();
        let good = md5_response(pw, user, &salt);
        s.write_all(&msg(b'p', good.as_bytes())).unwrap(); // no NUL
        expect_end(&mut s, Some(fatal("bad packet")), "no NUL");
        let (mut s, _) = start();
        s.write_all(&msg(b'p', b"\0")).unwrap();
        expect_end(
            &mut s,
            Some(fatal("empty password returned by client")),
            "empty",
        );
        let (mut s, _) = start();
        s.write_all(&msg(b'p', b"")).unwrap();
        expect_end(&mut s, Some(fatal("bad packet")), "empty body");
        // announced longer than sent, then closed: no answer, no leak
        let (mut s, salt) = start();
        let good = cstr(&md5_response(pw, user, &salt));
        let m = msg(b'p', &good);
        s.write_all(&m[..m.len() - 10]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        expect_end(&mut s, None, "truncated then FIN");
        // a SCRAM message where md5 was asked for
        let (mut s, _) = start();
        s.write_all(&sasl_initial(b"SCRAM-SHA-256", b"n,,n=,r=abc"))
            .unwrap();
        expect_end(&mut s, failed(), "SASL answer to md5");
    })
    .await
    .unwrap();
    let c = connect(&mux.url("synergyflow", "synergyflow_app", "synergyflow-dev-password"))
        .await
        .unwrap();
    assert_eq!(
        c.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
    assert_mem_bounded(&mux, "after broken md5 exchanges");
}

// ---------------------------------------------------------------------------------------------
// 6. cancel requests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessed_cancel_keys_cancel_nothing() {
    let (pg, _seed) = postgres(50);
    let mux = Pgmux::start(&pg, "", &users());
    let port = mux.port;
    tokio::task::spawn_blocking(move || {
        let (mut victim, key) = raw_login(port);
        let send_cancel = |p: &[u8]| {
            let mut s = raw(port);
            write_or_reset(&mut s, p);
            // pgmux closes without an answer
            expect_end(&mut s, None, "cancel request");
        };
        let run_sleep = |victim: &mut TcpStream, attack: &dyn Fn()| {
            let mut q = b"select pg_sleep(2)".to_vec();
            q.push(0);
            victim.write_all(&msg(b'Q', &q)).unwrap();
            let t = Instant::now();
            attack();
            let mut rows = Vec::new();
            let mut err = None;
            loop {
                match next(victim) {
                    Reply::Msg(b'D', d) => rows.push(d),
                    Reply::Msg(b'Z', _) => break,
                    Reply::Error(_, code, m) => err = Some((code, m)),
                    Reply::Msg(..) => {}
                    other => panic!("victim: {other:?}"),
                }
            }
            (rows.len(), err, t.elapsed())
        };
        // random keys, and every single-bit neighbour of the victim's real key, while its query runs
        let (rows, err, el) = run_sleep(&mut victim, &|| {
            let mut rnd = [0u8; 8 * 500];
            getrandom::fill(&mut rnd).unwrap();
            for k in rnd.chunks(8) {
                send_cancel(&cancel_packet(16, k));
            }
            for bit in 0..64 {
                let mut k = key;
                k[bit / 8] ^= 1 << (bit % 8);
                send_cancel(&cancel_packet(16, &k));
            }
        });
        assert_eq!((rows, err), (1, None), "guessed keys cancelled the query");
        assert!(el >= Duration::from_millis(1900), "{el:?}");
        // the real key with a wrong packet length (extra bytes, missing bytes) is dropped
        let (rows, err, _) = run_sleep(&mut victim, &|| {
            let mut long = key.to_vec();
            long.extend([0, 0, 0, 0]);
            send_cancel(&cancel_packet(20, &long));
            send_cancel(&cancel_packet(12, &key[..4]));
            send_cancel(&cancel_packet(15, &key[..7]));
            // a length field that disagrees with the bytes sent
            let mut p = cancel_packet(16, &key);
            p[3] = 24;
            let mut s = raw(port);
            s.write_all(&p).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            expect_end(&mut s, None, "cancel shorter than announced");
        });
        assert_eq!(
            (rows, err),
            (1, None),
            "a malformed cancel request cancelled the query"
        );
        // control: the real key in a correct packet does cancel
        let (rows, err, el) = run_sleep(&mut victim, &|| {
            std::thread::sleep(Duration::from_millis(300));
            send_cancel(&cancel_packet(16, &key));
        });
        assert_eq!(rows, 0);
        let (code, m) = err.expect("the real key did not cancel");
        assert_eq!(code, "57014", "{m}");
        assert!(el < Duration::from_millis(1900), "{el:?}");
        // the victim's session is still usable
        assert_eq!(raw_query(&mut victim, "select 9").unwrap(), vec!["9"]);
    })
    .await
    .unwrap();
    assert_serving(&mux, "after guessed cancel keys").await;
    assert_mem_bounded(&mux, "after guessed cancel keys");
}
