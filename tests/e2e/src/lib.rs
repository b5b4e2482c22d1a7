//! End-to-end harness for `libhami.so` on the simulated device.
//!
//! The tests run real processes: a C program that behaves like the CUDA runtime (compiled
//! with `cc` at test time), preloaded with `libhami.so`, over the simulated driver
//! (`libhami_fakegpu.so` served as `libcuda.so.1` and `libnvidia-ml.so.1`). Ledger entries are
//! written with `hami-ledger`, exactly as the shim and `hami run` write them.
//!
//! Artifacts are found next to the test executable's target profile directory (CI runs
//! `cargo build --release --workspace` first), or through `HAMI_E2E_LIBHAMI` and
//! `HAMI_E2E_FAKEGPU`; a missing one is a test failure naming what to build.

pub mod artifacts;
pub mod container;
pub mod program;
