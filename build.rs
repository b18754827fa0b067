//! Rebuild pgmux when the profile for profile-guided optimisation changes or `PGMUX_PGO` is set
//! differently (pgo/README.md): the rustc wrapper that applies it is invisible to cargo's change
//! tracking. Dependencies already built keep the flags they were built with.

fn main() {
    println!("cargo:rerun-if-changed=pgo/pgmux.profdata");
    println!("cargo:rerun-if-changed=pgo/rustc-wrapper");
    println!("cargo:rerun-if-env-changed=PGMUX_PGO");
}
