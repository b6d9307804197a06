//! Gives the shared library the soname the install script installs it under.
//!
//! Cargo names the artifact `libdgq_capi.so` (the `dgq` library name belongs to the root package);
//! consumers link against the installed `libdgq.so`, whose soname `libdgq.so.<ABI>` must be baked
//! into the library so that programs record it (and not the build-tree name) as their dependency.

/// Must equal `DGQ_ABI_VERSION` in src/lib.rs (a unit test checks it).
const ABI_VERSION: u32 = 2;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let soname = format!("libdgq.so.{ABI_VERSION}");
    println!("cargo:rustc-env=DGQ_CAPI_SONAME={soname}");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "freebsd" || os == "android" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    }
}
