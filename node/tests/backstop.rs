//! The enforcement backstop against a tenant the library cannot see: a process that
//! allocates through a PRIVATE COPY of the simulated driver (copied to another path, opened
//! with `RTLD_LOCAL`), beyond its container's cap. The simulated driver counts memory per
//! process in its shared state, so NVML reports it, as the real driver does whatever path
//! allocated it. Checked: it is reported (and only it), killed under `kill` (and only it),
//! and a container garbling and truncating its usage file while the agent's janitor and
//! backstop run crashes nothing.
//!
//! The test binary re-runs itself as the tenants (`HAMI_BACKSTOP_TEST_ROLE`). It needs the
//! simulated driver built (`cargo build --release -p hami-fakegpu`, or `HAMI_FAKEGPU_LIB`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hami_hooks::cuda::pfn;
use hami_ledger::owner::{OwnerLock, ProcessAnchor};
use hami_ledger::paths::LedgerDir;
use hami_ledger::{ComputePolicy, ContainerLimits, DeviceLimit, Priority, UsageLedger, limits};
use hami_node::backstop::{Backstop, Enforcement};
use hami_node::janitor::Janitor;
use hami_node::nvml_processes::NvmlProcesses;
use hami_node::reclaimer::Reclaimer;

const ROLE_ENV: &str = "HAMI_BACKSTOP_TEST_ROLE";
const MIB: u64 = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if std::env::var(ROLE_ENV).as_deref() == Ok("tenant") {
        tenant(Path::new(&args[1]), args[2].parse().expect("bytes"));
    }
    a_private_driver_copy_beyond_the_cap_is_reported_then_killed();
    println!("test a_private_driver_copy_beyond_the_cap_is_reported_then_killed ... ok");
}

/// A tenant: allocates `bytes` through its own copy of the driver, then waits.
fn tenant(private_driver: &Path, bytes: u64) -> ! {
    // RTLD_LOCAL: nothing else in the process resolves through this copy, and no preload
    // library's hooks are consulted for the calls made through it.
    let library = unsafe {
        // SAFETY: loading the simulated driver runs no initialisers with preconditions.
        libloading::os::unix::Library::open(Some(private_driver), libc::RTLD_NOW | libc::RTLD_LOCAL)
    }
    .expect("dlopen the private copy");
    // SAFETY: each symbol is typed by the hooks table's signature for its name.
    let (init, retain, set, alloc) = unsafe {
        (
            *library.get::<pfn::cuInit>(b"cuInit\0").expect("cuInit"),
            *library
                .get::<pfn::cuDevicePrimaryCtxRetain>(b"cuDevicePrimaryCtxRetain\0")
                .expect("retain"),
            *library
                .get::<pfn::cuCtxSetCurrent>(b"cuCtxSetCurrent\0")
                .expect("set"),
            *library
                .get::<pfn::cuMemAlloc_v2>(b"cuMemAlloc_v2\0")
                .expect("alloc"),
        )
    };
    let mut ctx = std::ptr::null_mut();
    let mut pointer = 0;
    // SAFETY: valid out-pointers; the context comes from the driver.
    unsafe {
        assert_eq!(init(0), 0, "cuInit");
        assert_eq!(retain(&mut ctx, 0), 0, "cuDevicePrimaryCtxRetain");
        assert_eq!(set(ctx), 0, "cuCtxSetCurrent");
        assert_eq!(alloc(&mut pointer, bytes as usize), 0, "cuMemAlloc_v2");
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .expect("stdout");
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// The built simulated driver: `$HAMI_FAKEGPU_LIB`, else the newest under this profile.
fn fakegpu_library() -> PathBuf {
    hami_fakegpu::built_library()
        .expect("libhami_fakegpu.so: build it with `cargo build --release -p hami-fakegpu`")
}

struct Container {
    id: String,
    tenant: Child,
    _owner: OwnerLock,
}

impl Container {
    /// An entry capped at `cap` on `uuid` whose only process allocates `bytes` through a
    /// private driver copy (anchored as a process tree, like `hami run`).
    fn start(
        ledger: &LedgerDir,
        id: &str,
        uuid: &str,
        cap: u64,
        bytes: u64,
        driver: &Path,
    ) -> Self {
        let dir = ledger.container_dir(id).expect("entry dir");
        let owner = OwnerLock::acquire(&dir).expect("owner");
        let written = ContainerLimits {
            container_id: id.into(),
            devices: vec![DeviceLimit {
                uuid: uuid.into(),
                memory_limit: Some(cap),
                compute_percent: None,
                policy: ComputePolicy::Hard,
                priority: Priority::Normal,
            }],
        };
        limits::write(ledger.limits(id).expect("limits path"), &written).expect("limits");
        UsageLedger::create(ledger.usage(id).expect("usage path"), 1).expect("usage");
        let mut tenant = Command::new(std::env::current_exe().expect("test executable"))
            .env(ROLE_ENV, "tenant")
            .arg(driver)
            .arg(bytes.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn tenant");
        let mut line = String::new();
        BufReader::new(tenant.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line.trim(), "ready", "tenant {id} failed to allocate");
        ProcessAnchor::Tree {
            root_pid: tenant.id(),
        }
        .write(&dir)
        .expect("anchor");
        Self {
            id: id.into(),
            tenant,
            _owner: owner,
        }
    }

    fn alive(&mut self) -> bool {
        self.tenant.try_wait().expect("try_wait").is_none()
    }
}

fn a_private_driver_copy_beyond_the_cap_is_reported_then_killed() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let lib_dir = scratch.path().join("lib");
    std::fs::create_dir_all(&lib_dir).expect("lib dir");
    let library = fakegpu_library();
    std::os::unix::fs::symlink(&library, lib_dir.join("libnvidia-ml.so.1")).expect("link");
    let private = scratch.path().join("private/libcuda-copy.so");
    std::fs::create_dir_all(private.parent().expect("parent")).expect("private dir");
    std::fs::copy(&library, &private).expect("copy the driver");
    // SAFETY: single-threaded here: no thread has started, nothing reads the environment.
    unsafe {
        std::env::set_var("HAMI_FAKEGPU_DIR", scratch.path().join("state"));
        std::env::set_var("HAMI_FAKEGPU_DEVICES", "1");
        std::env::set_var("HAMI_FAKEGPU_MEMORY", (1u64 << 30).to_string());
    }
    std::fs::create_dir_all(scratch.path().join("state")).expect("state dir");

    let nvml = |path: &Path| NvmlProcesses::open(path).expect("NVML of the simulated device");
    let nvml_path = lib_dir.join("libnvidia-ml.so.1");
    let uuid = nvml(&nvml_path).snapshot().expect("devices")[0].0.clone();
    let ledger = LedgerDir::new(scratch.path().join("ledger"));
    let mut greedy = Container::start(&ledger, "greedy", &uuid, 64 * MIB, 200 * MIB, &private);
    let mut modest = Container::start(&ledger, "modest", &uuid, 256 * MIB, 100 * MIB, &private);

    // Report: the greedy container, and only it, is reported; nobody is killed.
    let mut backstop = Backstop::new(ledger.clone(), nvml(&nvml_path), Enforcement::Report);
    let report = backstop.pass().expect("backstop pass");
    assert!(report.problems.is_empty(), "{report:?}");
    assert!(report.killed.is_empty());
    assert_eq!(report.over_cap.len(), 1, "{report:?}");
    let sample = &report.over_cap[0];
    assert_eq!(sample.container_id, greedy.id);
    assert_eq!(sample.pid, greedy.tenant.id());
    assert_eq!(sample.device_uuid, uuid);
    assert!(sample.used_bytes >= 200 * MIB, "{sample:?}");
    assert_eq!(sample.limit_bytes, 64 * MIB);
    assert!(greedy.alive() && modest.alive());

    // A container garbles and truncates its usage file while the agent's passes read the
    // ledger: every pass completes, nothing crashes, the findings are the same.
    let usage = ledger.usage(&modest.id).expect("usage path");
    let janitor = Janitor::new(
        ledger.clone(),
        Reclaimer::new(env!("CARGO_BIN_EXE_hami-node")),
    );
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| garble(&usage, &stop));
        for _ in 0..50 {
            let janitor_report = janitor.pass().expect("janitor pass");
            assert!(janitor_report.removed.is_empty(), "{janitor_report:?}");
            let report = backstop.pass().expect("backstop pass");
            assert_eq!(report.over_cap.len(), 1, "{report:?}");
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(greedy.alive() && modest.alive());

    // Kill: the greedy tenant is killed, the modest one left alone.
    let mut enforcing = Backstop::new(ledger.clone(), nvml(&nvml_path), Enforcement::Kill);
    let report = enforcing.pass().expect("backstop pass");
    assert_eq!(report.killed, vec![greedy.tenant.id()], "{report:?}");
    let status = greedy.tenant.wait().expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(modest.alive());
    let after = enforcing.pass().expect("backstop pass");
    assert!(
        after.over_cap.is_empty() && after.killed.is_empty(),
        "{after:?}"
    );
    assert_eq!(
        hami_node::metrics::ScrapeExtras::kills(&*enforcing.findings()),
        1
    );
    modest.tenant.kill().expect("kill");
    modest.tenant.wait().expect("wait");
}

/// What a hostile container does to its own usage part: garbage, then a short file, again.
fn garble(usage: &Path, stop: &AtomicBool) {
    let mut round = 0u8;
    while !stop.load(Ordering::Relaxed) {
        round = round.wrapping_add(1);
        let _ = std::fs::write(usage, vec![round; 4096]);
        let _ = std::fs::write(usage, [round; 10]);
        std::thread::sleep(Duration::from_micros(200));
    }
}
