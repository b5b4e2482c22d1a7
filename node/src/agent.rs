//! The node agent behind `hami-node`: discovery into the node ledger, the janitor and the
//! enforcement backstop every interval, and the metrics endpoint; SIGTERM and SIGINT stop it
//! between passes.
//!
//! `--standalone` runs without the Kubernetes API and the kubelet. Without it the agent also
//! serves the kubelet device plugin, which is not wired yet: it then refuses to start and
//! says so, rather than run a node that kubelet cannot allocate on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hami_ledger::NodeLedger;
use hami_ledger::paths::LedgerDir;

use crate::backstop::{Backstop, Enforcement};
use crate::discovery::{NVML_LIBRARY, discover_nvidia};
use crate::janitor::Janitor;
use crate::nvml_processes::NvmlProcesses;
use crate::reclaimer::Reclaimer;

/// `hami-node` flags.
#[derive(Debug, Parser)]
#[command(
    name = "hami-node",
    about = "HAMi-rs node agent: ledger janitor, enforcement backstop, metrics"
)]
pub struct AgentArgs {
    /// Run without the Kubernetes API and the kubelet (no device plugin).
    #[arg(long)]
    pub standalone: bool,
    /// Ledger directory (default: $HAMI_LEDGER_DIR, else /run/hami).
    #[arg(long)]
    pub ledger_dir: Option<PathBuf>,
    /// Address of the Prometheus endpoint (GET /metrics).
    #[arg(long, default_value = "0.0.0.0:9394")]
    pub metrics_addr: SocketAddr,
    /// What the backstop does to a container over its memory cap: report or kill.
    #[arg(long, default_value = "report", value_parser = enforcement_arg)]
    pub enforce: Enforcement,
    /// Milliseconds between janitor and backstop passes.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..))]
    pub interval_ms: u64,
    /// NVML to load (a soname or a path).
    #[arg(long, default_value = NVML_LIBRARY)]
    pub nvml_library: PathBuf,
}

fn enforcement_arg(text: &str) -> Result<Enforcement, String> {
    Enforcement::parse(text).ok_or_else(|| format!("accepted: {}", Enforcement::ACCEPTED))
}

/// Set by SIGTERM/SIGINT; the loop stops at its next check.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    log::set_logger(&StderrLogger).map_err(|e| anyhow::anyhow!("installing the logger: {e}"))?;
    log::set_max_level(log::LevelFilter::Info);
    if !args.standalone {
        bail!(
            "the kubelet device plugin is not built into hami-node yet: run with --standalone \
             (janitor, backstop and metrics without Kubernetes)"
        );
    }
    let ledger = args
        .ledger_dir
        .clone()
        .map_or_else(LedgerDir::from_env, LedgerDir::new);
    refresh_node_ledger(&ledger)?;
    let janitor = Janitor::new(
        ledger.clone(),
        Reclaimer::this_executable().context("locating the hami-node executable")?,
    );
    let nvml = NvmlProcesses::open(&args.nvml_library)?;
    let mut backstop = Backstop::new(ledger.clone(), nvml, args.enforce);
    let server = crate::metrics::serve(args.metrics_addr, ledger.clone(), backstop.findings())
        .context("starting the metrics endpoint")?;
    log::info!(
        "hami-node: ledger {}, metrics on http://{}/metrics, enforce {:?}, every {} ms",
        ledger.root().display(),
        server.local_addr(),
        args.enforce,
        args.interval_ms
    );
    install_stop_handlers()?;
    let interval = Duration::from_millis(args.interval_ms);
    while !STOP.load(Ordering::Relaxed) {
        let started = Instant::now();
        match janitor.pass() {
            Ok(report) => {
                for id in &report.removed {
                    log::info!("janitor: removed the entry of container {id} (gone)");
                }
                if report.freed_slots > 0 {
                    log::info!("janitor: freed {} dead process slots", report.freed_slots);
                }
                report
                    .problems
                    .iter()
                    .for_each(|p| log::warn!("janitor: {p}"));
            }
            Err(e) => log::error!("janitor: {e}"),
        }
        match backstop.pass() {
            Ok(report) => report
                .problems
                .iter()
                .for_each(|p| log::warn!("backstop: {p}")),
            Err(e) => log::error!("backstop: {e}"),
        }
        while !STOP.load(Ordering::Relaxed) && started.elapsed() < interval {
            std::thread::sleep(Duration::from_millis(50).min(interval));
        }
    }
    log::info!("hami-node: stopping");
    Ok(())
}

/// Creates the node part from discovery, or replaces it when the devices changed (a
/// replaced part leaves running containers on the old contention cells: `docs/ledger.md`).
fn refresh_node_ledger(ledger: &LedgerDir) -> anyhow::Result<()> {
    let devices: Vec<_> = discover_nvidia()?.into_iter().map(|d| d.info).collect();
    let path = ledger.node();
    if let Ok(existing) = NodeLedger::open(&path)
        && existing.devices() == devices
    {
        return Ok(());
    }
    if path.exists() {
        log::warn!("the node's devices changed: replacing {}", path.display());
    }
    std::fs::create_dir_all(ledger.root())
        .with_context(|| format!("creating {}", ledger.root().display()))?;
    NodeLedger::create(&path, &devices).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn install_stop_handlers() -> anyhow::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `request_stop` only stores to an atomic, which is async-signal-safe; the
        // sigaction struct is zeroed (no flags, empty mask) and lives for the call.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = request_stop as *const () as usize;
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("installing signal handlers");
        }
    }
    Ok(())
}

/// Log lines on stderr, one per record (the DaemonSet's log).
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("{} {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_with_their_defaults_and_bad_words_are_named() {
        let args = AgentArgs::try_parse_from(["hami-node", "--standalone"]).unwrap();
        assert_eq!(args.enforce, Enforcement::Report);
        assert_eq!(args.metrics_addr.port(), 9394);
        assert_eq!(args.interval_ms, 2000);
        let kill = AgentArgs::try_parse_from(["hami-node", "--enforce", "kill"]).unwrap();
        assert_eq!(kill.enforce, Enforcement::Kill);
        let err = AgentArgs::try_parse_from(["hami-node", "--enforce", "maim"]).unwrap_err();
        assert!(err.to_string().contains("report, kill"), "{err}");
    }
}
