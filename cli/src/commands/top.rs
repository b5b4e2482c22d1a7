//! `hami top`: a live view of a node's ledger, like `nvidia-smi` for slices: each device with
//! what the containers hold and were promised, each container with its memory against its cap,
//! its compute cap against the share it used, and its processes.
//!
//! It reads through `hami_node::view::NodeView`, which copies the containers' usage parts
//! rather than mapping them, so a container that truncates or garbles its entry shows up with
//! its problem and cannot stop the view. `--once` prints one frame; otherwise the screen is
//! redrawn every `--interval` until Ctrl-C.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use hami_ledger::SlotState;
use hami_ledger::paths::LedgerDir;
use hami_node::view::{ContainerView, NodeView};

const MIB: u64 = 1 << 20;
/// Characters of a container id shown (like `docker ps`).
const SHORT_ID: usize = 12;

#[derive(Args)]
pub struct TopArgs {
    /// Print one frame and exit (no busy share: that needs two readings).
    #[arg(long)]
    once: bool,
    /// Ledger directory (default: $HAMI_LEDGER_DIR, else /run/hami). A `hami run
    /// --ledger-dir DIR` is shown by `hami top --ledger-dir DIR`.
    #[arg(long)]
    ledger_dir: Option<PathBuf>,
    /// Milliseconds between redraws.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..))]
    interval: u64,
}

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let ledger = args
        .ledger_dir
        .map(LedgerDir::new)
        .unwrap_or_else(LedgerDir::from_env);
    let models = device_models();
    let mut shares = BusyShares::default();
    let mut stdout = std::io::stdout().lock();
    loop {
        let view = NodeView::read(&ledger);
        let frame = render(&view, &models, &shares.update(&view, Instant::now()));
        if args.once {
            stdout
                .write_all(frame.as_bytes())
                .context("writing to stdout")?;
            return Ok(());
        }
        // Clear the screen and home the cursor, then draw; Ctrl-C ends the process.
        write!(stdout, "\x1b[2J\x1b[H{frame}").context("writing to stdout")?;
        stdout.flush().context("writing to stdout")?;
        std::thread::sleep(Duration::from_millis(args.interval));
    }
}

/// Model names by UUID, when NVML answers (the ledger does not record them).
fn device_models() -> HashMap<String, String> {
    hami_node::discover_nvidia()
        .map(|devices| {
            devices
                .into_iter()
                .map(|d| (d.info.uuid, d.model))
                .collect()
        })
        .unwrap_or_default()
}

/// The busy share of each (container, device) between two frames, from the cumulative busy
/// time the container's compute limiter measures.
#[derive(Default)]
struct BusyShares {
    previous: HashMap<(String, String), (Instant, u64)>,
}

impl BusyShares {
    fn update(&mut self, view: &NodeView, now: Instant) -> HashMap<(String, String), f64> {
        let mut shares = HashMap::new();
        let mut next = HashMap::new();
        for container in &view.containers {
            for device in view.container_devices(container) {
                let Some(compute) = device.compute else {
                    continue;
                };
                let key = (container.id.clone(), device.uuid.to_owned());
                if let Some((then, before)) = self.previous.get(&key) {
                    let wall = now.saturating_duration_since(*then).as_nanos() as f64;
                    if wall > 0.0 && compute.measured_ns >= *before {
                        let share = (compute.measured_ns - before) as f64 / wall;
                        shares.insert(key.clone(), share.clamp(0.0, 1.0));
                    }
                }
                next.insert(key, (now, compute.measured_ns));
            }
        }
        self.previous = next;
        shares
    }
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / MIB)
}

fn short(id: &str) -> &str {
    id.get(..SHORT_ID).unwrap_or(id)
}

/// One frame of the view.
fn render(
    view: &NodeView,
    models: &HashMap<String, String>,
    shares: &HashMap<(String, String), f64>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "hami top  ledger {}  {} devices  {} containers",
        view.root.display(),
        view.devices.len(),
        view.containers.len()
    );
    if let Some(problem) = &view.node_problem {
        let _ = writeln!(out, "node part: {problem}");
    }
    if let Some(problem) = &view.containers_problem {
        let _ = writeln!(out, "containers: {problem}");
    }
    let model = |uuid: &str| models.get(uuid).map_or("-", String::as_str);
    // UUIDs and model names vary in length: their columns fit the longest.
    let uuid_width = view
        .devices
        .iter()
        .map(|d| d.info.uuid.len())
        .fold(4, usize::max);
    let model_width = view
        .devices
        .iter()
        .map(|d| model(&d.info.uuid).len())
        .fold(5, usize::max);
    let _ = writeln!(
        out,
        "\n{:<4} {:<uuid_width$} {:<model_width$} {:>22} {:>12} {:>10}",
        "DEV", "UUID", "MODEL", "MEMORY USED / TOTAL", "COMMITTED", "CONTAINERS"
    );
    for device in &view.devices {
        let _ = writeln!(
            out,
            "{:<4} {:<uuid_width$} {:<model_width$} {:>22} {:>12} {:>10}",
            device.info.index,
            device.info.uuid,
            model(&device.info.uuid),
            format!(
                "{} / {}",
                mib(device.memory_used),
                mib(device.info.total_memory)
            ),
            mib(device.memory_committed),
            device.containers,
        );
    }
    let _ = writeln!(
        out,
        "\n{:<12} {:>4} {:>22} {:>7} {:>5} {:>10}  PROCESSES",
        "CONTAINER", "DEV", "MEMORY USED / CAP", "COMPUTE", "BUSY", "THROTTLED"
    );
    for container in &view.containers {
        render_container(&mut out, view, container, shares);
    }
    out
}

fn render_container(
    out: &mut String,
    view: &NodeView,
    container: &ContainerView,
    shares: &HashMap<(String, String), f64>,
) {
    let processes = processes(container);
    let devices = view.container_devices(container);
    for (row, device) in devices.iter().enumerate() {
        let memory = format!(
            "{} / {}",
            device.used.map_or_else(|| "?".into(), mib),
            device.limit.memory_limit.map_or_else(|| "-".into(), mib)
        );
        let share = shares
            .get(&(container.id.clone(), device.uuid.to_owned()))
            .map_or_else(|| "-".into(), |s| format!("{:.0}%", s * 100.0));
        let throttled = device.compute.map_or_else(
            || "-".into(),
            |c| format!("{:.1}s", c.throttled_ns as f64 / 1e9),
        );
        let _ = writeln!(
            out,
            "{:<12} {:>4} {:>22} {:>7} {:>5} {:>10}  {}",
            if row == 0 { short(&container.id) } else { "" },
            device
                .node_index
                .map_or_else(|| "?".into(), |i| i.to_string()),
            memory,
            device
                .limit
                .compute_percent
                .map_or_else(|| "-".into(), |p| format!("{p}%")),
            share,
            throttled,
            if row == 0 { processes.as_str() } else { "" },
        );
    }
    if devices.is_empty() {
        let _ = writeln!(out, "{:<12} {:>4}", short(&container.id), "-");
    }
    if let Some(problem) = &container.problem {
        let _ = writeln!(out, "  {}: {problem}", short(&container.id));
    }
}

/// "N: pid pid ..." of the live slots; a host PID, when known, follows as `pid/host`.
fn processes(container: &ContainerView) -> String {
    let Some(usage) = &container.usage else {
        return "?".into();
    };
    let pids: Vec<String> = usage
        .snapshot
        .slots
        .iter()
        .filter(|s| s.state == SlotState::Live && s.alive == Some(true))
        .map(|s| match s.host_pid {
            Some(host) if host != s.pid => format!("{}/{host}", s.pid),
            _ => s.pid.to_string(),
        })
        .collect();
    if pids.is_empty() {
        return "0".into();
    }
    format!("{}: {}", pids.len(), pids.join(" "))
}
