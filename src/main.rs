//! The `pgmux` binary: everything lives in the library; see `cli.rs`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's arena is committed lazily: committed eagerly (its default on Linux) the memory of
/// 1000 busy clients cost about 29 MiB of RSS instead of 20 (measured with the load benchmark).
/// Set from `.init_array` (ELF: Linux, the platform pgmux ships for), before the first allocation
/// reserves the arena.
#[cfg(target_os = "linux")]
extern "C" fn allocator_options() {
    const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    // SAFETY: sets one integer option; runs before any Rust code allocates.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static ALLOCATOR_OPTIONS: extern "C" fn() = allocator_options;

fn main() {
    std::process::exit(pgmux::cli::main());
}
