//! `hami demo`: two tenants with different memory and compute caps share one simulated GPU.
//!
//! Each tenant is a `hami run` of a program that grabs device memory in steps until it has
//! what it asked for or the cap refuses more, then launches kernels nonstop. Every second the
//! demo prints, per tenant, the memory its ledger entry holds against its cap and its busy
//! share of the device (as the device measured it) against its compute cap, and it ends with
//! a one-line verdict. Nothing but `hami run` and the simulated device is involved.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use hami_bench::limiter::probe::{ProbeSample, SETTLE_LAG_NS, monotonic_ns};
use hami_bench::limiter::scenarios::{TenantSpec, tenant, worker};
use hami_bench::limiter::session::Session;
use hami_bench::limiter::worker::Launch;
use hami_bench::limiter::{DeviceKind, HarnessOptions, series_of};
use hami_ledger::UsageLedger;
use hami_ledger::paths::LedgerDir;

const MIB: u64 = 1 << 20;
/// Seconds the demo lets the caps settle before judging them.
const SETTLE_S: f64 = 3.0;
/// Largest distance from a compute cap the verdict accepts, points.
const TOLERANCE_PP: f64 = 3.0;

#[derive(Args)]
pub struct DemoArgs {
    /// How long the tenants run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

/// One tenant as the demo shows it.
struct Shown {
    spec: TenantSpec,
    memory_cap: u64,
    usage: Option<UsageLedger>,
    max_memory: u64,
}

impl Shown {
    fn new(name: &str, memory_gib: u64, cores: u32, ask_mib: u64, seconds: f64) -> Self {
        let mut spec = tenant(name, Some(cores), worker(1_000, seconds, Launch::Kernel));
        spec.memory = Some(format!("{memory_gib}Gi"));
        spec.worker.memory_mib = ask_mib;
        Self {
            spec,
            memory_cap: memory_gib << 30,
            usage: None,
            max_memory: 0,
        }
    }

    fn cores(&self) -> u32 {
        self.spec.cores.unwrap_or(100)
    }

    /// Bytes the tenant's ledger entry holds now (0 before `hami run` created it).
    fn memory_used(&mut self, ledger: &Path) -> u64 {
        if self.usage.is_none() {
            let path = LedgerDir::new(ledger).usage(&self.spec.name).ok();
            self.usage = path.and_then(|p| UsageLedger::attach(p).ok());
        }
        let used = self.usage.as_ref().map_or(0, |u| u.used(0));
        self.max_memory = self.max_memory.max(used);
        used
    }
}

fn share(samples: &[ProbeSample], pid: Option<u32>, from_ns: u64, to_ns: u64) -> Option<f64> {
    let series = series_of(pid?, samples);
    let (_, last) = series.span()?;
    // Up to 100 ms short of the window's end is still the window, seen by the last sample.
    (last + 100_000_000 >= to_ns).then(|| series.share(from_ns, to_ns.min(last)))
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.seconds < 5 {
        bail!(
            "--seconds {}: the demo needs at least 5 s to show caps settle",
            args.seconds
        );
    }
    let seconds = args.seconds as f64;
    let options = HarnessOptions {
        hami: std::env::current_exe().context("locating the hami executable")?,
        device: DeviceKind::Simulated,
        quick: false,
        only: Vec::new(),
        containers: None,
    };
    let mut tenants = [
        Shown::new("tenant-a", 1, 30, 1536, seconds),
        Shown::new("tenant-b", 2, 60, 1536, seconds),
    ];
    println!("hami demo: two tenants share one simulated GPU for {seconds} s");
    for t in &tenants {
        println!(
            "  {}: hami run --memory {} --cores {}  (asks for {} MiB, launches 1 ms kernels nonstop)",
            t.spec.name,
            t.spec.memory.as_deref().unwrap_or("-"),
            t.cores(),
            t.spec.worker.memory_mib
        );
    }
    let mut session = Session::new(&options, "demo").context("preparing the simulated device")?;
    let start = monotonic_ns();
    for t in &tenants {
        session.start(&t.spec).context("starting a tenant")?;
    }
    println!(
        "{:>5}  {:>22}  {:>14}  {:>22}  {:>14}",
        "time", "tenant-a memory", "tenant-a busy", "tenant-b memory", "tenant-b busy"
    );
    // The probe reports time once settled; it samples every 100 ms.
    let lag = SETTLE_LAG_NS + 150_000_000;
    for second in 1..=args.seconds {
        let at = start + second * 1_000_000_000 + lag;
        let now = monotonic_ns();
        if at > now {
            std::thread::sleep(Duration::from_nanos(at - now));
        }
        let samples = session.samples();
        let window_end = start + second * 1_000_000_000;
        let mut line = format!("{:>4}s", second);
        for t in &mut tenants {
            let used = t.memory_used(session.ledger_dir());
            let busy = share(
                &samples,
                session.pid_of(&t.spec.name),
                window_end.saturating_sub(1_000_000_000),
                window_end,
            );
            line.push_str(&format!(
                "  {:>9} / {:>4} MiB  {:>6} / {:>3}%",
                used / MIB,
                t.memory_cap / MIB,
                busy.map_or("-".into(), |b| format!("{:.1}%", b * 100.0)),
                t.cores()
            ));
        }
        println!("{line}");
    }
    let pids: Vec<Option<u32>> = tenants
        .iter()
        .map(|t| session.pid_of(&t.spec.name))
        .collect();
    let (_, samples) = session.finish().context("the tenants")?;
    let from = start + (SETTLE_S * 1e9) as u64;
    let to = start + args.seconds * 1_000_000_000;
    let mut held = true;
    let mut parts = Vec::new();
    for (t, pid) in tenants.iter().zip(pids) {
        let measured = share(&samples, pid, from, to).unwrap_or(0.0) * 100.0;
        let cap = f64::from(t.cores());
        let compute_ok = (measured - cap).abs() <= TOLERANCE_PP;
        let memory_ok = t.max_memory <= t.memory_cap;
        held &= compute_ok && memory_ok;
        parts.push(format!(
            "{} busy {measured:.1}% (cap {cap}%), memory peak {} MiB (cap {} MiB)",
            t.spec.name,
            t.max_memory / MIB,
            t.memory_cap / MIB
        ));
    }
    let verdict = if held { "caps held" } else { "caps NOT held" };
    println!(
        "verdict: {verdict} from {SETTLE_S} s on: {}",
        parts.join("; ")
    );
    if !held {
        bail!("a cap was not held (compute within ±{TOLERANCE_PP} points, memory never above)");
    }
    Ok(())
}
