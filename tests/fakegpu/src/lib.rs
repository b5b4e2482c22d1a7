//! `hami-fakegpu`: a simulated NVIDIA driver. Built as a cdylib it serves as `libcuda.so.1`
//! and `libnvidia-ml.so.1` (the real sonames and C ABI), so an unmodified program that
//! dlopens the driver runs on it through `LD_LIBRARY_PATH`.
//!
//! Devices are described by `HAMI_FAKEGPU_*` variables ([`config`]); their state lives in a
//! file under `HAMI_FAKEGPU_DIR` shared by every process ([`state`]), so processes — and
//! containers that mount the directory — really contend for memory and execution time.
//! See `docs/fakegpu.md`.

pub mod clock;
pub mod config;
pub mod cuda_api;
pub mod driver;
pub mod host_pid;
pub mod nvml_api;
pub mod state;

/// The built simulated driver, for tests in any crate: `$HAMI_FAKEGPU_LIB`, else the newest
/// `libhami_fakegpu.so` under the running test's build profile (`cargo test` refreshes `deps/`
/// without copying the library up a level). `None` when it is not built.
pub fn built_library() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("HAMI_FAKEGPU_LIB") {
        return Some(path.into());
    }
    let exe = std::env::current_exe().ok()?;
    let profile = exe.parent()?.parent()?;
    [
        profile.join("libhami_fakegpu.so"),
        profile.join("deps/libhami_fakegpu.so"),
    ]
    .into_iter()
    .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
    .max()
    .map(|(_, p)| p)
}
