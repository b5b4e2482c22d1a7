//! Streams, stream capture, events and graphs.

use std::ffi::{c_char, c_int, c_uint};

use hami_hooks::cuda::*;

use super::{guard, out};
use crate::driver::event::{EVENTS, Event};
use crate::driver::graph::{self, EXECS, GRAPHS};
use crate::driver::ops::Op;
use crate::driver::{context, initialised, stream};

fn current_device() -> Result<usize, CUresult> {
    initialised()?;
    Ok(context::current()?.device)
}

fn create(ph_stream: *mut CUstream, flags: c_uint) -> Result<(), CUresult> {
    let device = current_device()?;
    if flags & !CU_STREAM_NON_BLOCKING != 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    if ph_stream.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: checked non-null; writable by the API contract.
    unsafe { out(ph_stream, stream::create(device) as CUstream) }
}

/// # Safety
/// `ph_stream` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreate(ph_stream: *mut CUstream, flags: c_uint) -> CUresult {
    guard(|| create(ph_stream, flags))
}

/// # Safety
/// `ph_stream` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreateWithPriority(
    ph_stream: *mut CUstream,
    flags: c_uint,
    _priority: c_int,
) -> CUresult {
    guard(|| create(ph_stream, flags))
}

fn destroy(h_stream: CUstream) -> Result<(), CUresult> {
    initialised()?;
    stream::destroy(h_stream as usize)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamDestroy(h_stream: CUstream) -> CUresult {
    guard(|| destroy(h_stream))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamDestroy_v2(h_stream: CUstream) -> CUresult {
    guard(|| destroy(h_stream))
}

fn with_stream<T>(
    h_stream: CUstream,
    body: impl FnOnce(&stream::Stream) -> Result<T, CUresult>,
) -> Result<T, CUresult> {
    let device = current_device()?;
    body(&*stream::resolve(h_stream as usize, device)?)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamSynchronize(h_stream: CUstream) -> CUresult {
    guard(|| with_stream(h_stream, |s| s.synchronize()))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamSynchronize_ptsz(h_stream: CUstream) -> CUresult {
    guard(|| with_stream(h_stream, |s| s.synchronize()))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamQuery(h_stream: CUstream) -> CUresult {
    guard(|| with_stream(h_stream, |s| s.query()))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamQuery_ptsz(h_stream: CUstream) -> CUresult {
    guard(|| with_stream(h_stream, |s| s.query()))
}

fn wait_event(h_stream: CUstream, h_event: CUevent, flags: c_uint) -> Result<(), CUresult> {
    let device = current_device()?;
    if flags > 1 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let event = EVENTS
        .get(h_event as usize)
        .ok_or(CUDA_ERROR_INVALID_HANDLE)?;
    let target = stream::resolve(h_stream as usize, device)?;
    let sequence = event.issued();
    target.submit(Op::Wait { event, sequence });
    Ok(())
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWaitEvent(
    h_stream: CUstream,
    h_event: CUevent,
    flags: c_uint,
) -> CUresult {
    guard(|| wait_event(h_stream, h_event, flags))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWaitEvent_ptsz(
    h_stream: CUstream,
    h_event: CUevent,
    flags: c_uint,
) -> CUresult {
    guard(|| wait_event(h_stream, h_event, flags))
}

fn begin_capture(h_stream: CUstream, mode: CUstreamCaptureMode) -> Result<(), CUresult> {
    if !(CU_STREAM_CAPTURE_MODE_GLOBAL..=CU_STREAM_CAPTURE_MODE_RELAXED).contains(&mode) {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    with_stream(h_stream, |s| s.begin_capture())
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamBeginCapture(h_stream: CUstream) -> CUresult {
    guard(|| begin_capture(h_stream, CU_STREAM_CAPTURE_MODE_GLOBAL))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamBeginCapture_ptsz(h_stream: CUstream) -> CUresult {
    guard(|| begin_capture(h_stream, CU_STREAM_CAPTURE_MODE_GLOBAL))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamBeginCapture_v2(
    h_stream: CUstream,
    mode: CUstreamCaptureMode,
) -> CUresult {
    guard(|| begin_capture(h_stream, mode))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuStreamBeginCapture_v2_ptsz(
    h_stream: CUstream,
    mode: CUstreamCaptureMode,
) -> CUresult {
    guard(|| begin_capture(h_stream, mode))
}

fn end_capture(h_stream: CUstream, ph_graph: *mut CUgraph) -> Result<(), CUresult> {
    if ph_graph.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let ops = with_stream(h_stream, |s| s.end_capture())?;
    // SAFETY: checked non-null; writable by the API contract.
    unsafe { out(ph_graph, graph::create(ops) as CUgraph) }
}

/// # Safety
/// `ph_graph` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamEndCapture(
    h_stream: CUstream,
    ph_graph: *mut CUgraph,
) -> CUresult {
    guard(|| end_capture(h_stream, ph_graph))
}

/// # Safety
/// `ph_graph` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamEndCapture_ptsz(
    h_stream: CUstream,
    ph_graph: *mut CUgraph,
) -> CUresult {
    guard(|| end_capture(h_stream, ph_graph))
}

fn is_capturing(h_stream: CUstream, status: *mut CUstreamCaptureStatus) -> Result<(), CUresult> {
    let capturing = with_stream(h_stream, |s| Ok(s.is_capturing()))?;
    let value = if capturing {
        CU_STREAM_CAPTURE_STATUS_ACTIVE
    } else {
        CU_STREAM_CAPTURE_STATUS_NONE
    };
    // SAFETY: writable by the API contract (null refused by `out`).
    unsafe { out(status, value) }
}

/// # Safety
/// `capture_status` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamIsCapturing(
    h_stream: CUstream,
    capture_status: *mut CUstreamCaptureStatus,
) -> CUresult {
    guard(|| is_capturing(h_stream, capture_status))
}

/// # Safety
/// `capture_status` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamIsCapturing_ptsz(
    h_stream: CUstream,
    capture_status: *mut CUstreamCaptureStatus,
) -> CUresult {
    guard(|| is_capturing(h_stream, capture_status))
}

/// # Safety
/// `ph_event` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventCreate(ph_event: *mut CUevent, flags: c_uint) -> CUresult {
    guard(|| {
        initialised()?;
        context::current()?;
        if flags & !0x0f != 0 || ph_event.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let handle = EVENTS.insert(Event::new(flags)).0;
        // SAFETY: checked non-null; writable by the API contract.
        unsafe { out(ph_event, handle as CUevent) }
    })
}

fn record(h_event: CUevent, h_stream: CUstream) -> Result<(), CUresult> {
    let device = current_device()?;
    let event = EVENTS
        .get(h_event as usize)
        .ok_or(CUDA_ERROR_INVALID_HANDLE)?;
    let target = stream::resolve(h_stream as usize, device)?;
    let sequence = event.issue();
    target.submit(Op::Record { event, sequence });
    Ok(())
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventRecord(h_event: CUevent, h_stream: CUstream) -> CUresult {
    guard(|| record(h_event, h_stream))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventRecord_ptsz(h_event: CUevent, h_stream: CUstream) -> CUresult {
    guard(|| record(h_event, h_stream))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventQuery(h_event: CUevent) -> CUresult {
    guard(|| {
        initialised()?;
        let event = EVENTS
            .get(h_event as usize)
            .ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        if event.is_complete(None) {
            Ok(())
        } else {
            Err(CUDA_ERROR_NOT_READY)
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventSynchronize(h_event: CUevent) -> CUresult {
    guard(|| {
        initialised()?;
        EVENTS
            .get(h_event as usize)
            .ok_or(CUDA_ERROR_INVALID_HANDLE)?
            .wait(None);
        Ok(())
    })
}

fn elapsed(p_milliseconds: *mut f32, h_start: CUevent, h_end: CUevent) -> Result<(), CUresult> {
    initialised()?;
    let start = EVENTS
        .get(h_start as usize)
        .ok_or(CUDA_ERROR_INVALID_HANDLE)?;
    let end = EVENTS
        .get(h_end as usize)
        .ok_or(CUDA_ERROR_INVALID_HANDLE)?;
    let ms = start.elapsed_ms(&end)?;
    // SAFETY: writable by the API contract (null refused by `out`).
    unsafe { out(p_milliseconds, ms) }
}

/// # Safety
/// `p_milliseconds` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventElapsedTime(
    p_milliseconds: *mut f32,
    h_start: CUevent,
    h_end: CUevent,
) -> CUresult {
    guard(|| elapsed(p_milliseconds, h_start, h_end))
}

/// # Safety
/// `p_milliseconds` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventElapsedTime_v2(
    p_milliseconds: *mut f32,
    h_start: CUevent,
    h_end: CUevent,
) -> CUresult {
    guard(|| elapsed(p_milliseconds, h_start, h_end))
}

fn destroy_event(h_event: CUevent) -> Result<(), CUresult> {
    initialised()?;
    EVENTS
        .remove(h_event as usize)
        .map(|_| ())
        .ok_or(CUDA_ERROR_INVALID_HANDLE)
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventDestroy(h_event: CUevent) -> CUresult {
    guard(|| destroy_event(h_event))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuEventDestroy_v2(h_event: CUevent) -> CUresult {
    guard(|| destroy_event(h_event))
}

/// # Safety
/// `ph_graph` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphCreate(ph_graph: *mut CUgraph, flags: c_uint) -> CUresult {
    guard(|| {
        initialised()?;
        if flags != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: writable by the API contract (null refused by `out`).
        unsafe { out(ph_graph, graph::create(Vec::new()) as CUgraph) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGraphDestroy(h_graph: CUgraph) -> CUresult {
    guard(|| {
        initialised()?;
        GRAPHS
            .remove(h_graph as usize)
            .map(|_| ())
            .ok_or(CUDA_ERROR_INVALID_VALUE)
    })
}

fn instantiate(ph_graph_exec: *mut CUgraphExec, h_graph: CUgraph) -> Result<(), CUresult> {
    initialised()?;
    if ph_graph_exec.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let exec = graph::instantiate(h_graph as usize)?;
    // SAFETY: checked non-null; writable by the API contract.
    unsafe { out(ph_graph_exec, exec as CUgraphExec) }
}

/// # Safety
/// `ph_graph_exec` must be writable; the error outputs are not used.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphInstantiate(
    ph_graph_exec: *mut CUgraphExec,
    h_graph: CUgraph,
    _ph_error_node: *mut CUgraphNode,
    _log_buffer: *mut c_char,
    _buffer_size: usize,
) -> CUresult {
    guard(|| instantiate(ph_graph_exec, h_graph))
}

/// # Safety
/// `ph_graph_exec` must be writable; the error outputs are not used.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphInstantiate_v2(
    ph_graph_exec: *mut CUgraphExec,
    h_graph: CUgraph,
    _ph_error_node: *mut CUgraphNode,
    _log_buffer: *mut c_char,
    _buffer_size: usize,
) -> CUresult {
    guard(|| instantiate(ph_graph_exec, h_graph))
}

/// # Safety
/// `ph_graph_exec` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphInstantiateWithFlags(
    ph_graph_exec: *mut CUgraphExec,
    h_graph: CUgraph,
    _flags: u64,
) -> CUresult {
    guard(|| instantiate(ph_graph_exec, h_graph))
}

fn launch_graph(h_graph_exec: CUgraphExec, h_stream: CUstream) -> Result<(), CUresult> {
    let device = current_device()?;
    let exec = EXECS
        .get(h_graph_exec as usize)
        .ok_or(CUDA_ERROR_INVALID_VALUE)?;
    let target = stream::resolve(h_stream as usize, device)?;
    for op in &exec.ops {
        target.submit(op.clone());
    }
    Ok(())
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGraphLaunch(h_graph_exec: CUgraphExec, h_stream: CUstream) -> CUresult {
    guard(|| launch_graph(h_graph_exec, h_stream))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGraphLaunch_ptsz(h_graph_exec: CUgraphExec, h_stream: CUstream) -> CUresult {
    guard(|| launch_graph(h_graph_exec, h_stream))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuGraphExecDestroy(h_graph_exec: CUgraphExec) -> CUresult {
    guard(|| {
        initialised()?;
        EXECS
            .remove(h_graph_exec as usize)
            .map(|_| ())
            .ok_or(CUDA_ERROR_INVALID_VALUE)
    })
}
