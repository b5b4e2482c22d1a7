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
