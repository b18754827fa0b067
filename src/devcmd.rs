//! `pgmux dev`: a throwaway PostgreSQL with the seed's objects, and pgmux in front of it until Ctrl-C.

use crate::app;
use crate::config::Config;

pub fn run(args: &[String]) -> i32 {
    let mut port = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" | "-p" => port = it.next().and_then(|p| p.parse().ok()),
            s => {
                eprintln!("pgmux dev: unknown argument {s}");
                return 1;
            }
        }
    }
    let _ = crate::logging::init(None, false, 0, false);
    eprintln!("pgmux dev: starting a throwaway PostgreSQL...");
    let env = match crate::dev::prepare_dev_env(port) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("pgmux dev: {e}");
            return 1;
        }
    };
    let cfg = match Config::load(&env.ini_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgmux dev: generated config is invalid: {e}");
            return 1;
        }
    };
    let rt = match app::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgmux dev: {e}");
            return 1;
        }
    };
    let psql = env.psql_command();
    let res = rt.main.block_on(app::serve(cfg, rt.shards(), || {
        eprintln!(
            "\npgmux dev is ready.\n  PostgreSQL: 127.0.0.1:{} (data in a temp dir, removed on exit)\n  pgmux:      127.0.0.1:{} (config {})\n\nConnect with:\n  {psql}\n\nPress Ctrl-C to stop (Ctrl-C twice to force).\n",
            env.pg.port(),
            env.listen_port,
            env.ini_path.display()
        );
    }));
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    drop(env);
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pgmux dev: {e}");
            1
        }
    }
}
