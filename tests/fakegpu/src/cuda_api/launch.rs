//! Modules and kernel launches (plain, `Ex`, cooperative, per-thread-stream variants).

use std::ffi::{CStr, c_char, c_uint, c_void};

use hami_hooks::cuda::*;

use super::{guard, out, read_in};
use crate::driver::memory::host_range;
use crate::driver::module::{self, Arguments, Kernel};
use crate::driver::ops::Op;
use crate::driver::{context, initialised, stream};

fn load_image(module_out: *mut CUmodule, image: *const c_void) -> Result<(), CUresult> {
    initialised()?;
    context::current()?;
    if module_out.is_null() || image.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: a PTX image is a NUL-terminated string (API contract for PTX input).
    let text = unsafe { CStr::from_ptr(image.cast::<c_char>()) };
    let handle = module::load(text.to_bytes())?;
    // SAFETY: checked non-null; writable by the API contract.
    unsafe { out(module_out, handle as CUmodule) }
}

/// # Safety
/// `module` must be writable, `image` a NUL-terminated PTX text.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoadData(module: *mut CUmodule, image: *const c_void) -> CUresult {
    guard(|| load_image(module, image))
}

/// # Safety
/// As `cuModuleLoadData`; JIT options are accepted and ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoadDataEx(
    module: *mut CUmodule,
    image: *const c_void,
    _num_options: c_uint,
    _options: *mut CUjit_option,
    _option_values: *mut *mut c_void,
) -> CUresult {
    guard(|| load_image(module, image))
}

/// # Safety
/// `module` must be writable, `fname` a C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoad(module: *mut CUmodule, fname: *const c_char) -> CUresult {
    guard(|| {
        initialised()?;
        context::current()?;
        if fname.is_null() || module.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: a NUL-terminated path by the API contract.
        let path = unsafe { CStr::from_ptr(fname) }
            .to_str()
            .map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
        let image = std::fs::read(path).map_err(|_| CUDA_ERROR_FILE_NOT_FOUND)?;
        let handle = module::load(&image)?;
        // SAFETY: checked non-null; writable by the API contract.
        unsafe { out(module, handle as CUmodule) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuModuleUnload(hmod: CUmodule) -> CUresult {
    guard(|| {
        initialised()?;
        module::unload(hmod as usize)
    })
}

/// # Safety
/// `hfunc` must be writable, `name` a C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleGetFunction(
    hfunc: *mut CUfunction,
    hmod: CUmodule,
    name: *const c_char,
) -> CUresult {
    guard(|| {
        initialised()?;
        if name.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: a NUL-terminated name by the API contract.
        let name = unsafe { CStr::from_ptr(name) }
            .to_str()
            .map_err(|_| CUDA_ERROR_NOT_FOUND)?;
        let handle = module::function(hmod as usize, name)?;
        // SAFETY: writable by the API contract (null refused by `out`).
        unsafe { out(hfunc, handle as CUfunction) }
    })
}

/// Queues one launch of `f` on `h_stream`.
///
/// # Safety
/// `params`/`extra` follow the `cuLaunchKernel` contract.
unsafe fn launch(
    f: CUfunction,
    grid: [c_uint; 3],
    block: [c_uint; 3],
    h_stream: CUstream,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> Result<(), CUresult> {
    initialised()?;
    let device = context::current()?.device;
    let function = module::kernel(f as usize)?;
    let threads = block.iter().map(|d| u64::from(*d)).product::<u64>();
    if grid.contains(&0) || block.contains(&0) || threads > 1024 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let target = stream::resolve(h_stream as usize, device)?;
    // SAFETY: forwarded launch contract.
    let arguments = unsafe { Arguments::new(params, extra) }?;
    let op = match function.kernel {
        Kernel::Spin => Op::Spin {
            device,
            ns: arguments.spin()?,
        },
        Kernel::Fill => {
            let (address, value, count) = arguments.fill()?;
            host_range(
                address,
                count.checked_mul(4).ok_or(CUDA_ERROR_INVALID_VALUE)?,
            )?;
            Op::Fill {
                device,
                address,
                value,
                count,
            }
        }
        Kernel::Unsupported => return Err(CUDA_ERROR_NOT_SUPPORTED),
    };
    target.submit(op);
    Ok(())
}

macro_rules! launch_kernel {
    ($($name:ident),*) => {$(
        /// # Safety
        /// Follows the `cuLaunchKernel` contract for `kernel_params` and `extra`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            f: CUfunction,
            grid_dim_x: c_uint,
            grid_dim_y: c_uint,
            grid_dim_z: c_uint,
            block_dim_x: c_uint,
            block_dim_y: c_uint,
            block_dim_z: c_uint,
            _shared_mem_bytes: c_uint,
            h_stream: CUstream,
            kernel_params: *mut *mut c_void,
            extra: *mut *mut c_void,
        ) -> CUresult {
            let (grid, block) = ([grid_dim_x, grid_dim_y, grid_dim_z], [block_dim_x, block_dim_y, block_dim_z]);
            // SAFETY: forwarded launch contract.
            guard(|| unsafe { launch(f, grid, block, h_stream, kernel_params, extra) })
        }
    )*};
}

launch_kernel!(cuLaunchKernel, cuLaunchKernel_ptsz);

macro_rules! launch_cooperative {
    ($($name:ident),*) => {$(
        /// # Safety
        /// Follows the `cuLaunchCooperativeKernel` contract for `kernel_params`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            f: CUfunction,
            grid_dim_x: c_uint,
            grid_dim_y: c_uint,
            grid_dim_z: c_uint,
            block_dim_x: c_uint,
            block_dim_y: c_uint,
            block_dim_z: c_uint,
            _shared_mem_bytes: c_uint,
            h_stream: CUstream,
            kernel_params: *mut *mut c_void,
        ) -> CUresult {
            let (grid, block) = ([grid_dim_x, grid_dim_y, grid_dim_z], [block_dim_x, block_dim_y, block_dim_z]);
            // SAFETY: forwarded launch contract; cooperative launches take no `extra`.
            guard(|| unsafe { launch(f, grid, block, h_stream, kernel_params, std::ptr::null_mut()) })
        }
    )*};
}

launch_cooperative!(cuLaunchCooperativeKernel, cuLaunchCooperativeKernel_ptsz);

macro_rules! launch_ex {
    ($($name:ident),*) => {$(
        /// # Safety
        /// `config` must be a valid `CUlaunchConfig`; arguments as for `cuLaunchKernel`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            config: *const CUlaunchConfig,
            f: CUfunction,
            kernel_params: *mut *mut c_void,
            extra: *mut *mut c_void,
        ) -> CUresult {
            guard(|| {
                // SAFETY: forwarded caller contract.
                let config = unsafe { read_in(config) }?;
                let grid = [config.gridDimX, config.gridDimY, config.gridDimZ];
                let block = [config.blockDimX, config.blockDimY, config.blockDimZ];
                // SAFETY: forwarded launch contract.
                unsafe { launch(f, grid, block, config.hStream, kernel_params, extra) }
            })
        }
    )*};
}

launch_ex!(cuLaunchKernelEx, cuLaunchKernelEx_ptsz);
