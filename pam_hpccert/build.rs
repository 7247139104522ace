//! The module is linked `-z nodelete`: libpam unloads its modules at `pam_end`, and a Rust
//! module's lazily built statics (its own, and x509-parser's extension table) would be lost,
//! not freed, at every unload: about 2 KB per transaction in a long-running PAM application
//! (seen with valgrind). Kept loaded, they are built once per process.
//!
//! pam-bindings links libpam as `-lpam`, which the linker answers with the development symlink
//! `libpam.so` (Debian: libpam0g-dev). The module needs only the runtime library, so a
//! one-line linker script of that name in `OUT_DIR`, `INPUT(libpam.so.0)`, answers `-lpam`
//! with it (glibc's `libc.so` is such a script): building still needs no development
//! package, and the module's `DT_NEEDED` stays `libpam.so.0`.

use std::io;
use std::path::PathBuf;

fn main() -> io::Result<()> {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    let out = std::env::var_os("OUT_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| io::Error::other("cargo did not set OUT_DIR"))?;
    let dir = out.join("libpam-link");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("libpam.so"), "INPUT(libpam.so.0)\n")?;
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
