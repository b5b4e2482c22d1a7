//! `libhami.so`: the interception library loaded into every process of a capped container.
//!
//! - [`resolve`]: the `dlsym` export and the per-vendor registries that map the driver's real
//!   addresses to wrappers of exactly that ABI variant (the library never links a driver).
//! - [`runtime`]: lazy, fork-aware initialization; nothing runs at load time.
//! - [`engine`]: vendor-neutral accounting against the container's ledger entry.
//! - [`cuda`], [`nvml`]: the thin vendor entry points.
//! - [`limiter`]: the compute limiter's seam on every launch.
//!
//! `docs/intercept.md` describes the behaviour and the environment variables.

pub mod boundary;
pub mod config;
pub mod cuda;
pub mod engine;
pub mod limiter;
pub mod log;
pub mod nvml;
pub mod resolve;
pub mod runtime;
