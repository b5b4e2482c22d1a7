//! One file per verb.

pub mod bench;
pub mod bench_hooks;
pub mod bench_limiter;
pub mod demo;
pub mod run;
pub mod sim;
pub mod simulate;
pub mod top;
