//! Graphs: what a stream capture recorded, instantiated and replayed onto a stream.

use std::sync::{Mutex, PoisonError};

use hami_hooks::cuda::{CUDA_ERROR_INVALID_VALUE, CUresult};

use super::ops::Op;
use super::registry::Registry;

/// A graph under construction (captured work, in order).
pub struct Graph {
    pub ops: Mutex<Vec<Op>>,
}

/// An instantiated graph.
pub struct GraphExec {
    pub ops: Vec<Op>,
}

pub static GRAPHS: Registry<Graph> = Registry::new(0x8_0000_0000);
pub static EXECS: Registry<GraphExec> = Registry::new(0x9_0000_0000);

/// A new graph holding `ops`.
pub fn create(ops: Vec<Op>) -> usize {
    GRAPHS
        .insert(Graph {
            ops: Mutex::new(ops),
        })
        .0
}

/// `cuGraphInstantiate*`.
pub fn instantiate(graph: usize) -> Result<usize, CUresult> {
    let graph = GRAPHS.get(graph).ok_or(CUDA_ERROR_INVALID_VALUE)?;
    let ops = graph
        .ops
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Ok(EXECS.insert(GraphExec { ops }).0)
}
