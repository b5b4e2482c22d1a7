//! Benchmarks and accuracy harnesses of HAMi-rs. The `hami bench` verbs are thin wrappers over
//! these modules; figures and the commands that made them are in `docs/benchmarks.md`.

pub mod hooks;
pub mod limiter;
pub mod sim_env;
