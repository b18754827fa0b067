//! The `pgmux` binary: everything lives in the library; see `cli.rs`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(pgmux::cli::main());
}
