//! SCRAM-SHA-256 message parsers on arbitrary bytes: the server side (client-first, then
//! client-final) and the client side pgmux uses towards PostgreSQL (server-first, then
//! server-final). Optionally the fuzzed part is appended to the correct nonce so the parsers get
//! past the nonce checks. Errors are fine; panics are not, and nothing forged may verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::auth::{ScramClient, ScramClientKeys, ScramSecret, ScramServer};
use std::sync::OnceLock;

/// Input: a mode byte, then the first message, a NUL, and the last message.
struct Input {
    mode: u8,
    first: Vec<u8>,
    last: Vec<u8>,
}

fn split(data: &[u8]) -> Option<Input> {
    let (&mode, rest) = data.split_first()?;
    let (first, last) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    Some(Input {
        mode,
        first: first.to_vec(),
        last: last.to_vec(),
    })
}

fn secret() -> &'static ScramSecret {
    static S: OnceLock<ScramSecret> = OnceLock::new();
    // few iterations: the server side never runs PBKDF2, the client side only with a password
    S.get_or_init(|| ScramSecret::from_password("pencil", b"fuzzsaltfuzzsalt", 16))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fuzz_target!(|data: &[u8]| {
    let Some(inp) = split(data) else { return };
    let s = secret().clone();
    if inp.mode & 1 == 0 {
        // server side: what a client sends in SASLInitialResponse / SASLResponse
        let mech = if inp.mode & 8 == 0 {
            "SCRAM-SHA-256"
        } else {
            "SCRAM-SHA-256-PLUS"
        };
        let mut server = ScramServer::new(s);
        let Ok(sf) = server.client_first(mech, &inp.first) else {
            // client_final out of order must fail too
            assert!(server.client_final(&inp.last).is_err());
            return;
        };
        let sf = String::from_utf8(sf).expect("server-first is text");
        let nonce = sf
            .strip_prefix("r=")
            .and_then(|r| r.split(',').next())
            .unwrap();
        let fin = if inp.mode & 2 == 0 {
            inp.last.clone()
        } else {
            // c=biws is base64("n,,"), right for a client-first of "n,,..."
            format!("c=biws,r={nonce}{}", text(&inp.last)).into_bytes()
        };
        // without the password (or a recovered ClientKey) no proof can verify
        assert!(server.client_final(&fin).is_err());
        assert!(server.client_final(&fin).is_err(), "one attempt only");
    } else {
        // client side: what PostgreSQL sends in AuthenticationSASLContinue / SASLFinal
        let mut client = if inp.mode & 4 == 0 {
            ScramClient::with_keys(ScramClientKeys {
                client_key: [7; 32],
                server_key: s.server_key,
            })
        } else {
            // PBKDF2 runs with the server's iteration count: keep it small here
            if text(&inp.first).contains("i=") && !small_iterations(&inp.first) {
                return;
            }
            ScramClient::with_password("pencil")
        };
        let cf = String::from_utf8(client.client_first()).unwrap();
        let nonce = cf.rsplit("r=").next().unwrap().to_string();
        let first = if inp.mode & 2 == 0 {
            inp.first.clone()
        } else {
            format!("r={nonce}{}", text(&inp.first)).into_bytes()
        };
        if client.server_first(&first).is_err() {
            assert!(client.server_final(&inp.last).is_err());
            return;
        }
        // a forged server signature never verifies
        assert!(client.server_final(&inp.last).is_err());
    }
});

fn small_iterations(b: &[u8]) -> bool {
    text(b)
        .split(',')
        .filter_map(|a| a.strip_prefix("i="))
        .all(|i| i.parse::<u32>().map(|n| n <= 64).unwrap_or(true))
}
