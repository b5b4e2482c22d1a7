//! The simulated GPU for containers started through the shim: `libhami_fakegpu.so` mounted as
//! `libcuda.so.1` + `libnvidia-ml.so.1` the way nvidia-container-toolkit mounts the real driver,
//! its state directory shared by host and containers, and its host side
//! (`hami-fakegpu-host`), which tells each process its host PID as the real driver knows it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use super::{GIB, Lab, eventually, profile_dir, require_tools};

/// Memory of each simulated device.
pub const DEVICE_MEMORY: u64 = 4 * GIB;

/// The built artifacts the tests run (same profile as this test, or the env overrides).
pub struct Artifacts {
    pub libhami: PathBuf,
    pub fakegpu: PathBuf,
    pub fakegpu_host: PathBuf,
    pub client: PathBuf,
}

impl Artifacts {
    /// `None` (after printing why) when one is not built; panics under `CI=true`.
    pub fn locate(test: &str) -> Option<Artifacts> {
        let locate = |env: &str, file: &str| {
            std::env::var_os(env)
                .map(PathBuf::from)
                .unwrap_or_else(|| profile_dir().join(file))
        };
        let found = Artifacts {
            libhami: locate("HAMI_E2E_LIBHAMI", "libhami.so"),
            fakegpu: locate("HAMI_E2E_FAKEGPU", "libhami_fakegpu.so"),
            fakegpu_host: locate("HAMI_E2E_FAKEGPU_HOST", "hami-fakegpu-host"),
            client: locate("HAMI_E2E_CUDA_CLIENT", "hami-cuda-client"),
        };
        let missing: Vec<String> = [
            &found.libhami,
            &found.fakegpu,
            &found.fakegpu_host,
            &found.client,
        ]
        .into_iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
        if missing.is_empty() {
            return Some(found);
        }
        let why = format!(
            "missing {} (cargo build -p hami-intercept -p hami-fakegpu -p hami-cuda-client, same profile)",
            missing.join(", ")
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: {why}");
        }
        eprintln!("SKIPPED {test}: {why}");
        None
    }
}

/// A simulated machine: devices of 4 GiB, state shared by host and containers, and the host
/// side serving it until dropped.
pub struct Gpu {
    pub state: tempfile::TempDir,
    pub drivers: tempfile::TempDir,
    pub fakegpu: PathBuf,
    devices: u32,
    host_side: Child,
}

impl Gpu {
    pub fn new(artifacts: &Artifacts, devices: u32) -> Gpu {
        let drivers = tempfile::Builder::new()
            .prefix("hami-drivers-")
            .tempdir_in("/tmp")
            .unwrap();
        for name in ["libcuda.so.1", "libnvidia-ml.so.1"] {
            std::os::unix::fs::symlink(&artifacts.fakegpu, drivers.path().join(name)).unwrap();
        }
        let state = tempfile::Builder::new()
            .prefix("hami-fakegpu-")
            .tempdir_in("/tmp")
            .unwrap();
        let host_side = Command::new(&artifacts.fakegpu_host)
            .arg(state.path())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", artifacts.fakegpu_host.display()));
        let socket = state.path().join("host.sock");
        assert!(
            eventually(Duration::from_secs(10), || socket.exists()),
            "hami-fakegpu-host did not listen on {}",
            socket.display()
        );
        Gpu {
            state,
            drivers,
            fakegpu: artifacts.fakegpu.clone(),
            devices,
            host_side,
        }
    }

    /// The environment that makes a process see the simulated devices.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "LD_LIBRARY_PATH".into(),
                self.drivers.path().display().to_string(),
            ),
            (
                "HAMI_FAKEGPU_DIR".into(),
                self.state.path().display().to_string(),
            ),
            ("HAMI_FAKEGPU_DEVICES".into(), self.devices.to_string()),
            ("HAMI_FAKEGPU_MEMORY".into(), DEVICE_MEMORY.to_string()),
        ]
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.host_side.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.host_side.wait();
    }
}

/// A container root with the host's /usr (dynamically linked programs run), and what the test
/// container needs mounted: the driver, its state, the client.
pub struct Rootfs {
    dir: String,
    mounts: Vec<String>,
    env: Vec<String>,
}

impl Rootfs {
    pub fn new(lab: &Lab, gpu: &Gpu, artifacts: &Artifacts) -> Rootfs {
        let dir = lab.root().join("usr-rootfs");
        for sub in [
            "proc",
            "sys",
            "dev",
            "tmp",
            "etc",
            "run",
            "usr/bin",
            "usr/sbin",
            "usr/lib",
            "usr/lib64",
            "root",
        ] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            let _ = std::os::unix::fs::symlink(target, dir.join(link));
        }
        let bind = |path: &Path, mode: &str| {
            format!(
                "type=bind,src={0},dst={0},options=rbind:{mode}",
                path.display()
            )
        };
        // /usr itself stays the rootfs's own, so the shim's mount point /usr/local/lib/hami can
        // be created in it.
        let mut mounts: Vec<String> = [
            "/usr/bin",
            "/usr/sbin",
            "/usr/lib",
            "/usr/lib64",
            "/etc/ld.so.cache",
        ]
        .into_iter()
        .map(Path::new)
        .filter(|p| p.exists())
        .map(|p| bind(p, "ro"))
        .collect();
        mounts.push(bind(gpu.drivers.path(), "ro"));
        mounts.push(bind(gpu.state.path(), "rw"));
        for file in [&gpu.fakegpu, &artifacts.client] {
            let parent = file.parent().unwrap();
            let mount = bind(parent, "ro");
            if !mounts.contains(&mount) {
                mounts.push(mount);
            }
        }
        let env = gpu
            .env()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        Rootfs {
            dir: dir.display().to_string(),
            mounts,
            env,
        }
    }

    /// `ctr run` arguments up to (not including) the container id.
    pub fn run_args<'a>(
        &'a self,
        detach: bool,
        runtime: &'a str,
        annotations: &'a [&'a str],
    ) -> Vec<&'a str> {
        let mut args = vec![
            "run",
            if detach { "-d" } else { "--rm" },
            "--runtime",
            runtime,
        ];
        for annotation in annotations {
            args.extend(["--annotation", annotation]);
        }
        for mount in &self.mounts {
            args.extend(["--mount", mount]);
        }
        for env in &self.env {
            args.extend(["--env", env]);
        }
        args.extend(["--rootfs", &self.dir]);
        args
    }
}

/// A private containerd whose shim sees the simulated devices, and a rootfs to run the client.
pub struct Setup {
    pub lab: Lab,
    pub gpu: Gpu,
    pub rootfs: Rootfs,
    pub client: String,
}

/// A machine of two simulated devices; `None` (after printing why) when the tests cannot run
/// here; panics under `CI=true`.
pub fn setup(test: &str) -> Option<Setup> {
    setup_with_devices(test, 2)
}

/// As [`setup`], with `devices` simulated devices.
pub fn setup_with_devices(test: &str, devices: u32) -> Option<Setup> {
    require_tools(test)?;
    let artifacts = Artifacts::locate(test)?;
    let gpu = Gpu::new(&artifacts, devices);
    let env = gpu.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // containerd's environment reaches the shim: its NVML discovery sees the simulated devices.
    let lab = Lab::start(&env);
    lab.write_shim_config(&artifacts.libhami);
    let rootfs = Rootfs::new(&lab, &gpu, &artifacts);
    let client = artifacts.client.display().to_string();
    Some(Setup {
        lab,
        gpu,
        rootfs,
        client,
    })
}
