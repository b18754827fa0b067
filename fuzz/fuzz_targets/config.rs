//! pgbouncer.ini, auth_hba_file and auth_file (userlist.txt) parsers on arbitrary UTF-8:
//! each must return Ok or Err, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::config::Config;
use pgmux::config::hba::{Hba, Peer};
use pgmux::config::userlist::UserList;
use std::path::Path;

fuzz_target!(|text: &str| {
    let file = Path::new("fuzz.ini");
    // `%include <file>` and hba `@file` read files; a generated absolute or relative path could
    // name /dev/zero or a FIFO and hang the fuzzer. Paths without '/' stay in the fuzz directory.
    let reads_paths = text.contains('/');
    if !(reads_paths && text.contains("%include")) {
        if let Ok(c) = Config::parse_str(text, file) {
            let _ = c.describe();
            let _ = c.show_config_rows();
            let _ = c.database("postgres");
        }
    }
    if !(reads_paths && text.contains('@')) {
        if let Ok(h) = Hba::parse_str(text, Path::new("pg_hba.conf")) {
            let _ = h.eval(Peer::Unix, "db", "user");
            let addr = "10.1.2.3".parse().unwrap();
            let _ = h.eval(Peer::Tcp { addr, tls: true }, "db", "user");
            let addr = "::ffff:10.1.2.3".parse().unwrap();
            let _ = h.eval(Peer::Tcp { addr, tls: false }, "db", "db");
        }
    }
    if let Ok(u) = UserList::parse_str(text, Path::new("userlist.txt")) {
        for n in u.names() {
            assert!(u.get(&n).is_some());
        }
    }
});
