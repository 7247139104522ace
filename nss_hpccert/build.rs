//! The module's SONAME is the name glibc loads and the package installs:
//! `libnss_hpccert.so.2` (a shared object in a library directory needs one; Debian's lintian
//! refuses it without).

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnss_hpccert.so.2");
}
