//! Rebuild pgmux when the profile for profile-guided optimisation changes (pgo/README.md): the
//! rustc wrapper that applies it is invisible to cargo's change tracking.

fn main() {
    println!("cargo:rerun-if-changed=pgo/pgmux.profdata");
    println!("cargo:rerun-if-changed=pgo/rustc-wrapper");
}
