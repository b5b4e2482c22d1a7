//! The kube-scheduler extender: filter and prioritize with the placement policies, bind
//! with the exact devices written into pod annotations.

pub mod api;
pub mod demand;
pub mod inventory;
pub mod server;
pub mod state;
pub mod wire;

pub use api::{ApiError, ApiServer, HttpApiServer};
pub use server::{Extender, listen};
pub use state::ExtenderState;
