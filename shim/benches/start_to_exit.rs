//! Container start-to-exit time through the `hami` runtime vs `io.containerd.runc.v2`.
//!
//! `cargo bench -p containerd-shim-hami-v2 --bench start_to_exit` (root, containerd + runc +
//! busybox installed; `HAMI_CONTAINERD_BIN=<dir>` for another containerd, see
//! `scripts/containerd-versions.sh`). Runs `ctr run --rm ... /bin/true` on a private containerd,
//! interleaving the runtimes so drift hits all alike, and prints medians of 20 and the ratios to
//! the runc shim of the same containerd.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{GIB, Lab, busybox_rootfs, require_tools, text, unique};

const RUNS: usize = 20;
const WARMUP: usize = 3;

struct Variant {
    name: &'static str,
    runtime: &'static str,
    annotations: &'static [&'static str],
    samples: Vec<Duration>,
}

fn main() {
    let Some(()) = require_tools("start_to_exit") else {
        return;
    };
    let lab = Lab::start(&[]);
    lab.write_node_ledger(1, 16 * GIB);
    let rootfs = lab.root().join("rootfs");
    busybox_rootfs(&rootfs);
    let rootfs = rootfs.display().to_string();
    let mut variants = [
        Variant {
            name: "runc.v2 (baseline)",
            runtime: "io.containerd.runc.v2",
            annotations: &[],
            samples: Vec::new(),
        },
        Variant {
            name: "hami, no annotation",
            runtime: "io.containerd.hami.v2",
            annotations: &[],
            samples: Vec::new(),
        },
        Variant {
            name: "hami, capped 1Gi",
            runtime: "io.containerd.hami.v2",
            annotations: &["hami.io/gpu-memory=1Gi"],
            samples: Vec::new(),
        },
    ];
    for round in 0..WARMUP + RUNS {
        for variant in &mut variants {
            let id = unique("bench");
            let mut args = vec!["run", "--rm", "--runtime", variant.runtime];
            for annotation in variant.annotations {
                args.extend(["--annotation", annotation]);
            }
            args.extend(["--rootfs", &rootfs, &id, "/bin/true"]);
            let started = Instant::now();
            let out = lab.ctr(&args);
            let elapsed = started.elapsed();
            assert!(out.status.success(), "{}: {}", variant.name, text(&out));
            if round >= WARMUP {
                variant.samples.push(elapsed);
            }
        }
    }
    let baseline = median(&mut variants[0].samples.clone());
    println!(
        "containerd {}: container start-to-exit (`ctr run --rm ... /bin/true`), median of {RUNS}:",
        support::containerd::containerd_version()
    );
    for variant in &mut variants {
        let m = median(&mut variant.samples);
        let ratio = m.as_secs_f64() / baseline.as_secs_f64();
        let min = variant.samples.iter().min().copied().unwrap_or_default();
        let max = variant.samples.iter().max().copied().unwrap_or_default();
        println!(
            "  {:<22} median {:>7.1} ms  (min {:>6.1}, max {:>6.1})  ratio {:.2}x",
            variant.name,
            ms(m),
            ms(min),
            ms(max),
            ratio
        );
    }
    let mut prepare = prepare_times(&lab.log());
    if !prepare.is_empty() {
        println!(
            "  shim Create work (capped), median of {}: {:.2} ms",
            prepare.len(),
            ms(median(&mut prepare))
        );
    }
}

/// The shim's own Create work (annotations, placement, ledger entry, spec rewrite), from the
/// `prepared in <duration>` lines it logs to containerd's log.
fn prepare_times(log: &str) -> Vec<Duration> {
    log.lines()
        .filter_map(|line| line.split("prepared in ").nth(1))
        .filter_map(|rest| {
            let value = rest.split(['"', ' ', '\\']).next()?;
            let (number, scale) = if let Some(v) = value.strip_suffix("ms") {
                (v, 1e-3)
            } else if let Some(v) = value.strip_suffix("µs") {
                (v, 1e-6)
            } else if let Some(v) = value.strip_suffix("ns") {
                (v, 1e-9)
            } else {
                (value.strip_suffix('s')?, 1.0)
            };
            Some(Duration::from_secs_f64(number.parse::<f64>().ok()? * scale))
        })
        .collect()
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
