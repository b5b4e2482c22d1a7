//! Locating the built libraries and compiling the C test programs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The target profile directory the running test executable was built into.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // <target>/<profile>/deps/<test-binary>
    let deps = exe.parent().expect("deps directory");
    deps.parent().unwrap_or(deps).to_path_buf()
}

fn locate(env: &str, file: &str, package: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let profile = profile_dir();
    let candidates = [profile.join(file), profile.join("deps").join(file)];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{file} not found in {} (build it first: `cargo build --workspace` with the same \
             profile, or `cargo build -p {package}`), or set {env}",
                profile.display()
            )
        })
}

/// `libhami.so`.
pub fn libhami() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| locate("HAMI_E2E_LIBHAMI", "libhami.so", "hami-intercept"))
        .clone()
}

/// `libhami_fakegpu.so`, the simulated driver.
pub fn fakegpu() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| locate("HAMI_E2E_FAKEGPU", "libhami_fakegpu.so", "hami-fakegpu"))
        .clone()
}

/// `hami-cuda-client`, the cudarc test client.
pub fn cuda_client() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        locate(
            "HAMI_E2E_CUDA_CLIENT",
            "hami-cuda-client",
            "hami-cuda-client",
        )
    })
    .clone()
}

/// A directory with `libcuda.so.1` and `libnvidia-ml.so.1` pointing at the simulated driver,
/// for `LD_LIBRARY_PATH`.
pub fn driver_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in ["libcuda.so.1", "libnvidia-ml.so.1"] {
            std::os::unix::fs::symlink(fakegpu(), dir.path().join(name)).expect("symlink driver");
        }
        dir
    })
    .path()
}

/// Compiles a C program of `tests/e2e/cprog` once per test process and returns its path.
pub fn c_program(name: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    // Serialized: a second thread must not run a binary the compiler is still writing.
    static COMPILING: Mutex<()> = Mutex::new(());
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"));
    let output = dir.path().join(name);
    let _guard = COMPILING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if output.is_file() {
        return output;
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("cprog")
        .join(format!("{name}.c"));
    compile(&source, &output);
    output
}

/// Compiles one C file into `output` (written aside, then renamed into place).
pub fn compile(source: &Path, output: &Path) {
    let aside = output.with_extension("building");
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-O2", "-Wall", "-o"])
        .arg(&aside)
        .arg(source)
        .arg("-ldl")
        .status()
        .expect("a C compiler (cc) is needed to build the test programs");
    assert!(status.success(), "compiling {} failed", source.display());
    std::fs::rename(&aside, output).expect("move the compiled program into place");
}
