//! Command line, PgBouncer-compatible: `pgmux [-d] [-q] [-v] CONFIG`, plus `pgmux check CONFIG` and `pgmux dev`.

use crate::app;
use crate::config::Config;
use std::path::PathBuf;

const USAGE: &str = "pgmux is a PgBouncer-compatible PostgreSQL connection pooler.

Usage:
  pgmux [OPTION]... CONFIG_FILE
  pgmux check CONFIG_FILE     validate a pgbouncer.ini and print what was understood
  pgmux dev [--port PORT]     throwaway PostgreSQL plus pgmux in front of it

Options:
  -d, --daemon      run in background (requires pidfile and logfile)
  -q, --quiet       run quietly (no log to stderr)
  -v, --verbose     increase verbosity
  -u, --user=USER   accepted for compatibility (pgmux never changes user)
  -V, --version     show version, then exit
  -h, --help        show this help, then exit
";

#[derive(Debug, Default)]
struct Opts {
    daemon: bool,
    quiet: bool,
    verbose: u32,
    config: Option<PathBuf>,
}

/// Entry point; returns the process exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check") => return check(&args[1..]),
        Some("dev") => return crate::devcmd::run(&args[1..]),
        _ => {}
    }
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-d" | "--daemon" => o.daemon = true,
            "-q" | "--quiet" => o.quiet = true,
            "-v" | "--verbose" => o.verbose += 1,
            "-vv" => o.verbose += 2,
            "-u" | "--user" => {
                it.next();
            }
            s if s.starts_with("--user=") => {}
            "-R" | "--reboot" => {
                eprintln!(
                    "pgmux: online restart (-R) is not supported; use so_reuseport and a rolling restart"
                );
                return 1;
            }
            "-V" | "--version" => {
                println!(
                    "pgmux {} (PgBouncer 1.25 compatible)",
                    env!("CARGO_PKG_VERSION")
                );
                return 0;
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return 0;
            }
            s if s.starts_with('-') => {
                eprintln!("pgmux: unknown option {s}\n{USAGE}");
                return 1;
            }
            s => o.config = Some(PathBuf::from(s)),
        }
    }
    let Some(path) = o.config else {
        eprint!("pgmux: need config file\n{USAGE}");
        return 1;
    };
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgmux: {e}");
            return 1;
        }
    };
    if o.daemon {
        if cfg.general.pidfile.is_none() {
            eprintln!("pgmux: in daemon mode the pidfile must be set");
            return 1;
        }
        if let Err(e) = daemonize() {
            eprintln!("pgmux: daemonize failed: {e}");
            return 1;
        }
    }
    let logfile = cfg.general.logfile.clone();
    if let Err(e) = crate::logging::init(
        logfile.as_deref(),
        o.quiet || o.daemon,
        o.verbose.max(cfg.general.verbose),
        cfg.general.log_json,
    ) {
        eprintln!("pgmux: cannot open logfile: {e}");
        return 1;
    }
    let pidfile = cfg.general.pidfile.clone();
    if let Some(p) = &pidfile
        && let Err(e) = std::fs::write(p, format!("{}\n", std::process::id()))
    {
        eprintln!("pgmux: cannot write pidfile {}: {e}", p.display());
        return 1;
    }
    let rt = match app::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgmux: {e}");
            return 1;
        }
    };
    let res = rt.main.block_on(app::serve(cfg, rt.shards(), || {}));
    if let Some(p) = &pidfile {
        let _ = std::fs::remove_file(p);
    }
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match res {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("pgmux: {e}");
            1
        }
    }
}

fn check(args: &[String]) -> i32 {
    let Some(path) = args.first() else {
        eprintln!("usage: pgmux check CONFIG_FILE");
        return 1;
    };
    match Config::load(std::path::Path::new(path)) {
        Ok(cfg) => {
            print!("{}", cfg.describe());
            for w in &cfg.warnings {
                println!("warning: {w}");
            }
            match app::load_userlist(&cfg) {
                Ok(u) => println!("auth_file: {} users", u.len()),
                Err(crate::config::ConfigError::Io { file, source }) => {
                    println!(
                        "warning: auth_file {} cannot be read here ({source})",
                        file.display()
                    )
                }
                Err(e) => {
                    eprintln!("pgmux: {e}");
                    return 1;
                }
            }
            println!("configuration OK");
            0
        }
        Err(e) => {
            eprintln!("pgmux: {e}");
            1
        }
    }
}

/// Classic double fork; stdio to /dev/null. Must run before any threads exist.
fn daemonize() -> std::io::Result<()> {
    // SAFETY: called from main before the runtime or any other thread is started.
    unsafe {
        match libc::fork() {
            -1 => return Err(std::io::Error::last_os_error()),
            0 => {}
            _ => libc::_exit(0),
        }
        if libc::setsid() == -1 {
            return Err(std::io::Error::last_os_error());
        }
        match libc::fork() {
            -1 => return Err(std::io::Error::last_os_error()),
            0 => {}
            _ => libc::_exit(0),
        }
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
    Ok(())
}
