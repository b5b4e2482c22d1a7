//! hami-scheduler: GPU placement for HAMi-rs.
//!
//! - [`cluster`], [`request`], [`fit`]: the cluster state, what a task asks for, the hard
//!   constraints and topology-aware device choice.
//! - [`frag`], [`policy`]: the fragmentation measure and the node policies (the FGD
//!   paper's baselines, FGD, ours, HAMi's binpack/spread).
//! - [`trace`], [`sim`], [`plot`]: the openb trace, the paper's simulation protocol, and the
//!   allocation-curve SVG.
//! - [`extender`]: the kube-scheduler extender (filter, prioritize, bind).

pub mod cluster;
pub mod extender;
pub mod fit;
pub mod frag;
pub mod model;
pub mod plot;
pub mod policy;
pub mod request;
pub mod rng;
pub mod sim;
pub mod trace;
