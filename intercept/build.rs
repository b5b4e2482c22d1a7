//! Links the unwinder statically into libhami.so.
//!
//! libhami.so is preloaded into every process of a container, most of which never touch a GPU.
//! A std `cdylib` normally needs `libgcc_s.so.1` for unwinding, and loading that one extra
//! library is most of what the preload costs such a process (docs/intercept.md). The library
//! needs unwinding (every `extern "C"` entry point catches panics), so instead of
//! `panic = "abort"` we hand the linker a `libgcc_s.so` script that names the static unwinder
//! `libgcc_eh.a`. Its symbols stay private: a cdylib exports only its `#[no_mangle]` items, so
//! the application's own unwinder (C++ exceptions) is never interposed.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os == "linux" && target_env == "gnu" {
        std::fs::write(out.join("libgcc_s.so"), "INPUT(-lgcc_eh)\n")
            .expect("writing the unwinder link script");
        println!("cargo::rustc-link-search=native={}", out.display());
    }
    println!("cargo::rerun-if-changed=build.rs");
}
