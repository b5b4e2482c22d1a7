//! Shared harness of the simulated-device tests: one simulated machine per test binary
//! (8 devices of 1 GiB, each test uses its own device so tests can run in parallel), the
//! built `libhami_fakegpu.so` loaded through `dlopen` as a driver user would, and the
//! `runtime_like` C program compiled with `cc` for multi-process tests.

#![allow(dead_code)]

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use libloading::Library;

/// Memory of every simulated device in the tests.
pub const DEVICE_MEMORY: u64 = 1 << 30;
/// Devices of the simulated machine.
pub const DEVICES: usize = 8;

/// The simulated machine of this test binary.
pub struct Machine {
    pub lib: Library,
    pub state_dir: PathBuf,
    pub lib_dir: PathBuf,
    /// The device's host side (host PIDs for processes in PID namespaces of their own).
    pub _host: hami_fakegpu::host_pid::HostSide,
}

/// Directory of the running test's build profile (`target/<profile>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps directory");
    deps.parent().expect("profile directory").to_path_buf()
}

/// The built simulated driver: `$HAMI_FAKEGPU_LIB`, else the newest build under the test's
/// profile (`cargo test` refreshes `deps/` without copying the library up a level).
pub fn fakegpu_library() -> PathBuf {
    hami_fakegpu::built_library().unwrap_or_else(|| {
        panic!(
            "libhami_fakegpu.so not found under {}: build the crate first",
            profile_dir().display()
        )
    })
}

/// The kernels every test program loads.
pub fn kernels_ptx() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/hami_kernels.ptx")
}

/// A lib directory in which the driver's sonames point at the simulated driver.
pub fn driver_lib_dir(root: &Path) -> PathBuf {
    let lib_dir = root.join("lib");
    std::fs::create_dir_all(&lib_dir).expect("lib dir");
    for name in [
        "libcuda.so.1",
        "libcuda.so",
        "libnvidia-ml.so.1",
        "libnvidia-ml.so",
    ] {
        let link = lib_dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(fakegpu_library(), &link).expect("symlink");
    }
    lib_dir
}

static MACHINE: OnceLock<Machine> = OnceLock::new();

/// A directory for this test process's machine under the build profile; directories left by
/// earlier test processes that are gone are removed first (the library itself must outlive
/// every test thread, so nothing is removed at exit).
fn state_root() -> PathBuf {
    let parent = profile_dir().join("fakegpu-test-state");
    if let Ok(entries) = std::fs::read_dir(&parent) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_string_lossy()
                .rsplit('-')
                .next()
                .and_then(|p| p.parse::<i32>().ok());
            // SAFETY: kill with signal 0 only checks whether the process exists.
            let gone = pid.is_some_and(|pid| unsafe { libc::kill(pid, 0) } != 0);
            if gone {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let exe = std::env::current_exe().expect("test executable");
    let name = exe
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let root = parent.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("test state directory");
    root
}

/// The machine of this test binary, created (and the library loaded) on first use.
pub fn machine() -> &'static Machine {
    MACHINE.get_or_init(|| {
        let root = state_root();
        let state_dir = root.join("state");
        let lib_dir = driver_lib_dir(&root);
        // SAFETY: runs once, under the OnceLock, before the simulated driver is loaded; no
        // other thread of this test binary reads these variables concurrently (the tests
        // only reach the driver through `machine()`, which is still initialising).
        unsafe {
            std::env::set_var("HAMI_FAKEGPU_DIR", &state_dir);
            std::env::set_var("HAMI_FAKEGPU_DEVICES", DEVICES.to_string());
            std::env::set_var("HAMI_FAKEGPU_MEMORY", DEVICE_MEMORY.to_string());
            std::env::set_var("HAMI_FAKEGPU_SMS", "16");
        }
        std::fs::create_dir_all(&state_dir).expect("state directory");
        let host = hami_fakegpu::host_pid::HostSide::serve(&state_dir).expect("host side");
        // SAFETY: loading the simulated driver runs no initialisers with preconditions.
        let lib =
            unsafe { Library::new(lib_dir.join("libcuda.so.1")) }.expect("dlopen libcuda.so.1");
        let machine = Machine {
            lib,
            state_dir,
            lib_dir,
            _host: host,
        };
        let init: hami_hooks::cuda::pfn::cuInit = machine.sym("cuInit");
        // SAFETY: cuInit takes flags by value.
        assert_eq!(unsafe { init(0) }, 0, "cuInit");
        machine
    })
}

impl Machine {
    /// A symbol of the simulated driver, typed by the caller (use `hami_hooks::*::pfn`).
    pub fn sym<T: Copy>(&self, name: &str) -> T {
        // SAFETY: the caller names the symbol's exact function-pointer type from the table.
        unsafe {
            *self
                .lib
                .get::<T>(name.as_bytes())
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        }
    }

    /// A command that runs on this machine (through `LD_LIBRARY_PATH`).
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env("LD_LIBRARY_PATH", &self.lib_dir)
            .env("HAMI_FAKEGPU_DIR", &self.state_dir)
            .env("HAMI_FAKEGPU_DEVICES", DEVICES.to_string())
            .env("HAMI_FAKEGPU_MEMORY", DEVICE_MEMORY.to_string());
        command
    }

    /// Retains device `device`'s primary context and makes it current on this thread.
    pub fn use_device(&self, device: i32) {
        let retain: hami_hooks::cuda::pfn::cuDevicePrimaryCtxRetain =
            self.sym("cuDevicePrimaryCtxRetain");
        let set: hami_hooks::cuda::pfn::cuCtxSetCurrent = self.sym("cuCtxSetCurrent");
        let mut ctx = std::ptr::null_mut();
        // SAFETY: valid out-pointer; the context handle comes from the driver.
        unsafe {
            assert_eq!(retain(&mut ctx, device), 0);
            assert_eq!(set(ctx), 0);
        }
    }

    /// `cuMemGetInfo_v2` of the current device: (free, total).
    pub fn mem_info(&self) -> (usize, usize) {
        let info: hami_hooks::cuda::pfn::cuMemGetInfo_v2 = self.sym("cuMemGetInfo_v2");
        let (mut free, mut total) = (0, 0);
        // SAFETY: valid out-pointers.
        assert_eq!(unsafe { info(&mut free, &mut total) }, 0);
        (free, total)
    }
}

/// The `runtime_like` C program, compiled with `cc` once per test binary.
pub fn runtime_like() -> PathBuf {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("cprog/runtime_like.c");
            let out_dir = profile_dir().join("fakegpu-cprog");
            std::fs::create_dir_all(&out_dir).expect("cprog dir");
            let target = out_dir.join("runtime_like");
            let scratch = out_dir.join(format!("runtime_like.{}", std::process::id()));
            let output = Command::new("cc")
                .args(["-O2", "-Wall", "-Werror", "-o"])
                .arg(&scratch)
                .arg(&source)
                .arg("-ldl")
                .output()
                .expect("cc must be installed to build tests/fakegpu/cprog/runtime_like.c");
            assert!(
                output.status.success(),
                "cc failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            std::fs::rename(&scratch, &target).expect("install runtime_like");
            target
        })
        .clone()
}

/// Parses the one JSON line a test program printed.
pub fn json(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no JSON in output: {stdout}\nstderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line}: {e}"))
}

/// A NUL-terminated copy of `text`.
pub fn c(text: &str) -> CString {
    CString::new(text).expect("no NUL")
}
