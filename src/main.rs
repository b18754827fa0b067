//! The `pgmux` binary: everything lives in the library; see `cli.rs`.

fn main() {
    std::process::exit(pgmux::cli::main());
}
