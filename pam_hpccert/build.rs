//! The module is linked `-z nodelete`: libpam unloads its modules at `pam_end`, and a Rust
//! module's lazily built statics (its own, and x509-parser's extension table) would be lost,
//! not freed, at every unload: about 2 KB per transaction in a long-running PAM application
//! (seen with valgrind). Kept loaded, they are built once per process.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
