//! Copies and memsets: synchronous ones wait for the device's streams, asynchronous ones
//! are ordered on their stream. Device ranges are checked against live allocations.

use std::ffi::{c_uint, c_void};
use std::sync::Arc;

use hami_hooks::cuda::*;

use super::guard;
use crate::driver::memory::host_range;
use crate::driver::ops::Op;
use crate::driver::{context, initialised, stream};

fn device_of_current() -> Result<usize, CUresult> {
    initialised()?;
    Ok(context::current()?.device)
}

/// Runs `op` synchronously: after everything queued on the device, before returning.
fn run_sync(op: Op) -> Result<(), CUresult> {
    let device = device_of_current()?;
    stream::synchronize_device(device)?;
    op.execute();
    Ok(())
}

fn run_async(op: Op, h_stream: CUstream) -> Result<(), CUresult> {
    let device = device_of_current()?;
    let target = stream::resolve(h_stream as usize, device)?;
    // Like the driver, a copy into pageable host memory (all host memory here) returns only
    // once the bytes are there; callers such as cudarc rely on it.
    let to_host = matches!(op, Op::Copy { dst, .. } if host_range(dst, 1).is_err());
    target.submit(op);
    if to_host && !target.is_capturing() {
        target.synchronize()?;
    }
    Ok(())
}

fn htod(dst: CUdeviceptr, src: *const c_void, len: usize) -> Result<Op, CUresult> {
    if src.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    host_range(dst, len as u64)?;
    // SAFETY: the caller's host buffer holds `len` bytes (API contract). Staging it now
    // lets the caller reuse the buffer as soon as the call returns, like pageable copies.
    let bytes = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), len) }.to_vec();
    Ok(Op::Upload {
        dst,
        bytes: Arc::new(bytes),
    })
}

fn dtoh(dst: *mut c_void, src: CUdeviceptr, len: usize) -> Result<Op, CUresult> {
    if dst.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    host_range(src, len as u64)?;
    Ok(Op::Copy {
        dst: dst as usize as u64,
        src,
        len: len as u64,
    })
}

fn dtod(dst: CUdeviceptr, src: CUdeviceptr, len: usize) -> Result<Op, CUresult> {
    host_range(dst, len as u64)?;
    host_range(src, len as u64)?;
    Ok(Op::Copy {
        dst,
        src,
        len: len as u64,
    })
}

fn set8(dst: CUdeviceptr, value: u8, count: usize) -> Result<Op, CUresult> {
    host_range(dst, count as u64)?;
    Ok(Op::Set8 {
        dst,
        value,
        count: count as u64,
    })
}

fn set32(dst: CUdeviceptr, value: c_uint, count: usize) -> Result<Op, CUresult> {
    let bytes = (count as u64)
        .checked_mul(4)
        .ok_or(CUDA_ERROR_INVALID_VALUE)?;
    host_range(dst, bytes)?;
    Ok(Op::Set32 {
        dst,
        value,
        count: count as u64,
    })
}

macro_rules! sync_and_async {
    ($(
        $sync:ident, $sync_ptds:ident, $async_:ident, $async_ptsz:ident:
            ($($arg:ident : $ty:ty),*) => $make:expr;
    )*) => {$(
        /// # Safety
        /// Host pointers must be valid for the byte count (driver API contract).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $sync($($arg: $ty),*) -> CUresult {
            guard(|| run_sync($make?))
        }

        /// # Safety
        /// Host pointers must be valid for the byte count (driver API contract).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $sync_ptds($($arg: $ty),*) -> CUresult {
            guard(|| run_sync($make?))
        }

        /// # Safety
        /// Host pointers must be valid for the byte count until the stream reaches the copy.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $async_($($arg: $ty,)* h_stream: CUstream) -> CUresult {
            guard(|| run_async($make?, h_stream))
        }

        /// # Safety
        /// Host pointers must be valid for the byte count until the stream reaches the copy.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $async_ptsz($($arg: $ty,)* h_stream: CUstream) -> CUresult {
            guard(|| run_async($make?, h_stream))
        }
    )*};
}

sync_and_async! {
    cuMemcpy, cuMemcpy_ptds, cuMemcpyAsync, cuMemcpyAsync_ptsz:
        (dst: CUdeviceptr, src: CUdeviceptr, byte_count: usize) => dtod(dst, src, byte_count);
    cuMemcpyHtoD_v2, cuMemcpyHtoD_v2_ptds, cuMemcpyHtoDAsync_v2, cuMemcpyHtoDAsync_v2_ptsz:
        (dst_device: CUdeviceptr, src_host: *const c_void, byte_count: usize) => htod(dst_device, src_host, byte_count);
    cuMemcpyDtoH_v2, cuMemcpyDtoH_v2_ptds, cuMemcpyDtoHAsync_v2, cuMemcpyDtoHAsync_v2_ptsz:
        (dst_host: *mut c_void, src_device: CUdeviceptr, byte_count: usize) => dtoh(dst_host, src_device, byte_count);
    cuMemcpyDtoD_v2, cuMemcpyDtoD_v2_ptds, cuMemcpyDtoDAsync_v2, cuMemcpyDtoDAsync_v2_ptsz:
        (dst_device: CUdeviceptr, src_device: CUdeviceptr, byte_count: usize) => dtod(dst_device, src_device, byte_count);
    cuMemsetD8_v2, cuMemsetD8_v2_ptds, cuMemsetD8Async, cuMemsetD8Async_ptsz:
        (dst_device: CUdeviceptr, uc: u8, n: usize) => set8(dst_device, uc, n);
    cuMemsetD32_v2, cuMemsetD32_v2_ptds, cuMemsetD32Async, cuMemsetD32Async_ptsz:
        (dst_device: CUdeviceptr, ui: c_uint, n: usize) => set32(dst_device, ui, n);
}
