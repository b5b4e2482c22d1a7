//! Streams: an ordered queue of [`Op`]s executed by one worker thread per stream, so a
//! launch returns at once and the work runs asynchronously, in order.
//!
//! Work submitted to an idle stream that cannot block (a zero-length spin, a copy, an event
//! record) is done on the caller's thread: the hook-overhead benchmark launches millions of
//! empty kernels and must measure the launch path, not a thread hand-off.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use hami_hooks::cuda::{
    CU_STREAM_LEGACY, CU_STREAM_PER_THREAD, CUDA_ERROR_ILLEGAL_STATE, CUDA_ERROR_INVALID_HANDLE,
    CUDA_ERROR_NOT_READY, CUDA_ERROR_STREAM_CAPTURE_UNMATCHED,
    CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, CUresult,
};

use super::ops::Op;
use super::registry::Registry;
use crate::config::MAX_DEVICES;

/// One stream.
pub struct Stream {
    pub device: usize,
    pub default: bool,
    queue: Mutex<Queue>,
    work: Condvar,
    idle: Condvar,
}

#[derive(Default)]
struct Queue {
    ops: VecDeque<Op>,
    /// Ops accepted by the queue, and ops finished.
    submitted: u64,
    completed: u64,
    worker: bool,
    closing: bool,
    capture: Option<Vec<Op>>,
}

/// Queued, unfinished ops per device, so that synchronous calls on an idle device cost
/// nothing.
static PENDING: [AtomicU64; MAX_DEVICES] = [const { AtomicU64::new(0) }; MAX_DEVICES];

static STREAMS: Registry<Stream> = Registry::new(0x5_0000_0000);
static DEFAULT_STREAMS: [OnceLock<Arc<Stream>>; MAX_DEVICES] =
    [const { OnceLock::new() }; MAX_DEVICES];

impl Stream {
    fn new(device: usize, default: bool) -> Stream {
        Stream {
            device,
            default,
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            idle: Condvar::new(),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `op` (or records it into the graph being captured).
    pub fn submit(self: &Arc<Self>, op: Op) {
        let mut queue = self.queue();
        if let Some(capture) = queue.capture.as_mut() {
            capture.push(op);
            return;
        }
        if queue.submitted == queue.completed && !op.may_block() {
            drop(queue);
            op.execute();
            return;
        }
        queue.ops.push_back(op);
        queue.submitted += 1;
        PENDING[self.device].fetch_add(1, Ordering::AcqRel);
        if queue.worker {
            self.work.notify_one();
        } else {
            queue.worker = true;
            let stream = self.clone();
            let spawned = std::thread::Builder::new()
                .name("fakegpu-stream".into())
                .spawn(move || stream.run());
            if spawned.is_err() {
                // No thread could be started: run the queue here rather than lose it.
                queue.worker = false;
                drop(queue);
                self.drain_inline();
            }
        }
    }

    fn drain_inline(&self) {
        loop {
            let op = {
                let mut queue = self.queue();
                match queue.ops.pop_front() {
                    Some(op) => op,
                    None => return,
                }
            };
            self.finish(op);
        }
    }

    fn run(&self) {
        loop {
            let op = {
                let mut queue = self.queue();
                loop {
                    if let Some(op) = queue.ops.pop_front() {
                        break op;
                    }
                    if queue.closing {
                        queue.worker = false;
                        return;
                    }
                    queue = self
                        .work
                        .wait(queue)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            };
            self.finish(op);
        }
    }

    /// Executes `op` and counts it done. An event record completes under the queue lock,
    /// together with the count, so that whoever the event or the stream releases sees both.
    fn finish(&self, op: Op) {
        let record = matches!(op, Op::Record { .. });
        if !record {
            op.execute();
        }
        let mut queue = self.queue();
        queue.completed += 1;
        PENDING[self.device].fetch_sub(1, Ordering::AcqRel);
        if record {
            op.execute();
        }
        self.idle.notify_all();
    }

    /// Blocks until everything queued so far is done.
    pub fn synchronize(&self) -> Result<(), CUresult> {
        let mut queue = self.queue();
        if queue.capture.is_some() {
            return Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        let target = queue.submitted;
        while queue.completed < target {
            queue = self
                .idle
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
        Ok(())
    }

    /// `cuStreamQuery`.
    pub fn query(&self) -> Result<(), CUresult> {
        let queue = self.queue();
        if queue.capture.is_some() {
            return Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        if queue.completed == queue.submitted {
            Ok(())
        } else {
            Err(CUDA_ERROR_NOT_READY)
        }
    }

    /// Starts capturing: later work goes into a graph instead of running.
    pub fn begin_capture(&self) -> Result<(), CUresult> {
        if self.default {
            return Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        let mut queue = self.queue();
        if queue.capture.is_some() {
            return Err(CUDA_ERROR_ILLEGAL_STATE);
        }
        queue.capture = Some(Vec::new());
        Ok(())
    }

    /// Ends capturing and returns the captured work.
    pub fn end_capture(&self) -> Result<Vec<Op>, CUresult> {
        self.queue()
            .capture
            .take()
            .ok_or(CUDA_ERROR_STREAM_CAPTURE_UNMATCHED)
    }

    /// Whether the stream is capturing.
    pub fn is_capturing(&self) -> bool {
        self.queue().capture.is_some()
    }

    fn close(&self) {
        let mut queue = self.queue();
        queue.closing = true;
        self.work.notify_all();
    }
}

/// `cuStreamCreate`.
pub fn create(device: usize) -> usize {
    STREAMS.insert(Stream::new(device, false)).0
}

/// `cuStreamDestroy`: queued work still completes.
pub fn destroy(handle: usize) -> Result<(), CUresult> {
    let stream = STREAMS.remove(handle).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
    stream.close();
    Ok(())
}

/// The default stream of `device` (legacy and per-thread default streams are one here).
pub fn default_stream(device: usize) -> Arc<Stream> {
    DEFAULT_STREAMS[device]
        .get_or_init(|| Arc::new(Stream::new(device, true)))
        .clone()
}

/// The stream behind a handle; null, `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD` are the
/// default stream of `device` (the current context's).
pub fn resolve(handle: usize, device: usize) -> Result<Arc<Stream>, CUresult> {
    match handle {
        0 | CU_STREAM_LEGACY | CU_STREAM_PER_THREAD => Ok(default_stream(device)),
        _ => STREAMS.get(handle).ok_or(CUDA_ERROR_INVALID_HANDLE),
    }
}

/// Waits for every stream of `device` (what synchronous calls and `cuCtxSynchronize` do).
pub fn synchronize_device(device: usize) -> Result<(), CUresult> {
    if PENDING[device].load(Ordering::Acquire) == 0 {
        return Ok(());
    }
    default_stream(device).synchronize()?;
    for stream in STREAMS
        .all()
        .into_iter()
        .filter(|s| s.device == device && !s.is_capturing())
    {
        stream.synchronize()?;
    }
    Ok(())
}
