//! Modules and kernels. A module is PTX text; the simulated device recognises its built-in
//! kernels by entry name (`hami_spin`, `hami_fill`, see `kernels/hami_kernels.ptx`) and
//! refuses to launch any other kernel, rather than pretend it ran.

use std::sync::Arc;

use hami_hooks::cuda::{
    CU_LAUNCH_PARAM_BUFFER_POINTER, CU_LAUNCH_PARAM_BUFFER_SIZE, CU_LAUNCH_PARAM_END,
    CUDA_ERROR_INVALID_HANDLE, CUDA_ERROR_INVALID_IMAGE, CUDA_ERROR_INVALID_VALUE,
    CUDA_ERROR_NOT_FOUND, CUresult,
};

use super::registry::Registry;

/// The kernels the simulated device can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// `hami_spin(u64 ns)`.
    Spin,
    /// `hami_fill(u64 dst, u32 value, u64 count)`.
    Fill,
    /// Any other entry: loadable, not launchable.
    Unsupported,
}

/// A loaded module.
pub struct Module {
    pub functions: Vec<(String, usize)>,
}

/// A kernel inside a module.
pub struct Function {
    pub name: String,
    pub kernel: Kernel,
}

pub static MODULES: Registry<Module> = Registry::new(0x6_0000_0000);
pub static FUNCTIONS: Registry<Function> = Registry::new(0x7_0000_0000);

/// Entry names of a PTX text; `CUDA_ERROR_INVALID_IMAGE` for cubins, fatbins and non-PTX.
pub fn ptx_entries(image: &[u8]) -> Result<Vec<String>, CUresult> {
    let text = std::str::from_utf8(image).map_err(|_| CUDA_ERROR_INVALID_IMAGE)?;
    if !text.contains(".version") || !text.contains(".target") {
        return Err(CUDA_ERROR_INVALID_IMAGE);
    }
    let mut entries = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(".entry") {
        rest = &rest[at + ".entry".len()..];
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '$')
            .collect();
        if !name.is_empty() {
            entries.push(name);
        }
    }
    Ok(entries)
}

/// Loads a module from PTX bytes (without the trailing NUL).
pub fn load(image: &[u8]) -> Result<usize, CUresult> {
    let functions = ptx_entries(image)?
        .into_iter()
        .map(|name| {
            let kernel = match name.as_str() {
                "hami_spin" => Kernel::Spin,
                "hami_fill" => Kernel::Fill,
                _ => Kernel::Unsupported,
            };
            let handle = FUNCTIONS
                .insert(Function {
                    name: name.clone(),
                    kernel,
                })
                .0;
            (name, handle)
        })
        .collect();
    Ok(MODULES.insert(Module { functions }).0)
}

/// `cuModuleUnload`.
pub fn unload(handle: usize) -> Result<(), CUresult> {
    let module = MODULES.remove(handle).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
    for (_, function) in &module.functions {
        FUNCTIONS.remove(*function);
    }
    Ok(())
}

/// `cuModuleGetFunction`.
pub fn function(module: usize, name: &str) -> Result<usize, CUresult> {
    let module = MODULES.get(module).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
    module
        .functions
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, h)| *h)
        .ok_or(CUDA_ERROR_NOT_FOUND)
}

/// The kernel behind a function handle.
pub fn kernel(handle: usize) -> Result<Arc<Function>, CUresult> {
    FUNCTIONS.get(handle).ok_or(CUDA_ERROR_INVALID_HANDLE)
}

/// Kernel arguments as given to `cuLaunchKernel`: `kernelParams` or an `extra` buffer.
pub struct Arguments {
    params: *mut *mut std::ffi::c_void,
    buffer: Option<(*const u8, usize)>,
}

impl Arguments {
    /// Reads the argument block of a launch.
    ///
    /// # Safety
    /// `params` must be null or point to one valid pointer per kernel parameter; `extra`
    /// must be null or a `CU_LAUNCH_PARAM_END`-terminated list as the driver API defines.
    pub unsafe fn new(
        params: *mut *mut std::ffi::c_void,
        extra: *mut *mut std::ffi::c_void,
    ) -> Result<Arguments, CUresult> {
        let mut buffer = None;
        if !extra.is_null() {
            let (mut pointer, mut size) = (None, None);
            let mut index = 0;
            loop {
                // SAFETY: the caller guarantees an END-terminated key/value list.
                let key = unsafe { *extra.add(index) } as usize;
                match key {
                    CU_LAUNCH_PARAM_END => break,
                    CU_LAUNCH_PARAM_BUFFER_POINTER => {
                        // SAFETY: every key but END is followed by its value.
                        pointer = Some(unsafe { *extra.add(index + 1) } as *const u8);
                    }
                    CU_LAUNCH_PARAM_BUFFER_SIZE => {
                        // SAFETY: as above; the value of BUFFER_SIZE points to a size_t.
                        let size_ptr = unsafe { *extra.add(index + 1) } as *const usize;
                        if size_ptr.is_null() {
                            return Err(CUDA_ERROR_INVALID_VALUE);
                        }
                        // SAFETY: non-null pointer to the caller's size_t.
                        size = Some(unsafe { *size_ptr });
                    }
                    _ => return Err(CUDA_ERROR_INVALID_VALUE),
                }
                index += 2;
            }
            match (pointer, size) {
                (Some(pointer), Some(size)) if !pointer.is_null() => buffer = Some((pointer, size)),
                _ => return Err(CUDA_ERROR_INVALID_VALUE),
            }
        } else if params.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        Ok(Arguments { params, buffer })
    }

    /// Reads parameter `index`, which sits at `offset` in a packed argument buffer.
    fn read<T: Copy>(&self, index: usize, offset: usize) -> Result<T, CUresult> {
        match self.buffer {
            Some((pointer, size)) => {
                if offset + size_of::<T>() > size {
                    return Err(CUDA_ERROR_INVALID_VALUE);
                }
                // SAFETY: the buffer holds `size` bytes (launch contract), checked above.
                Ok(unsafe { pointer.add(offset).cast::<T>().read_unaligned() })
            }
            None => {
                // SAFETY: `params` holds one pointer per parameter (launch contract).
                let value = unsafe { *self.params.add(index) };
                if value.is_null() {
                    return Err(CUDA_ERROR_INVALID_VALUE);
                }
                // SAFETY: the pointer refers to the parameter's value of type T.
                Ok(unsafe { value.cast::<T>().read_unaligned() })
            }
        }
    }

    /// `hami_spin(u64 ns)`.
    pub fn spin(&self) -> Result<u64, CUresult> {
        self.read::<u64>(0, 0)
    }

    /// `hami_fill(u64 dst, u32 value, u64 count)`.
    pub fn fill(&self) -> Result<(u64, u32, u64), CUresult> {
        Ok((
            self.read::<u64>(0, 0)?,
            self.read::<u32>(1, 8)?,
            self.read::<u64>(2, 16)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_ptx_exposes_both_kernels() {
        let ptx = include_str!("../../kernels/hami_kernels.ptx");
        assert_eq!(
            ptx_entries(ptx.as_bytes()).unwrap(),
            vec!["hami_spin", "hami_fill"]
        );
    }

    #[test]
    fn binaries_are_not_ptx() {
        assert_eq!(
            ptx_entries(b"\x7fELF\x02\x01"),
            Err(CUDA_ERROR_INVALID_IMAGE)
        );
        assert_eq!(ptx_entries(b"hello"), Err(CUDA_ERROR_INVALID_IMAGE));
    }

    #[test]
    fn arguments_come_from_params_or_a_packed_buffer() {
        let (mut dst, mut value, mut count) = (0xdead_beef_u64, 7u32, 9u64);
        let mut params = [
            (&mut dst as *mut u64).cast::<std::ffi::c_void>(),
            (&mut value as *mut u32).cast(),
            (&mut count as *mut u64).cast(),
        ];
        // SAFETY: three valid parameter pointers, no extra.
        let args = unsafe { Arguments::new(params.as_mut_ptr(), std::ptr::null_mut()) }.unwrap();
        assert_eq!(args.fill().unwrap(), (0xdead_beef, 7, 9));

        let mut packed = [0u8; 24];
        packed[0..8].copy_from_slice(&5u64.to_ne_bytes());
        let mut size = packed.len();
        let mut extra = [
            CU_LAUNCH_PARAM_BUFFER_POINTER as *mut std::ffi::c_void,
            packed.as_mut_ptr().cast(),
            CU_LAUNCH_PARAM_BUFFER_SIZE as *mut std::ffi::c_void,
            (&mut size as *mut usize).cast(),
            CU_LAUNCH_PARAM_END as *mut std::ffi::c_void,
        ];
        // SAFETY: a well-formed extra list over a 24-byte buffer.
        let args = unsafe { Arguments::new(std::ptr::null_mut(), extra.as_mut_ptr()) }.unwrap();
        assert_eq!(args.spin().unwrap(), 5);
    }
}
