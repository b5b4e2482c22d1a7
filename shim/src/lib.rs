//! containerd-shim-hami-v2: the containerd runtime `io.containerd.hami.v2`.
//!
//! A ttrpc proxy in front of the stock runc shim. At `Create` it reads the container's `hami.io/*`
//! annotations, places it on device(s), writes its ledger entry and rewrites its OCI spec so that
//! `libhami.so` caps every process; everything else is forwarded unchanged.

pub mod backend;
pub mod backend_process;
pub mod config;
pub mod contention;
pub mod daemon;
pub mod inventory;
pub mod ledger_entry;
pub mod pid_map;
pub mod placement;
pub mod prepare;
pub mod proxy;
pub mod shim;
pub mod spec_rewrite;
pub mod task_api;
