//! `hami-scheduler`: serves the kube-scheduler extender API (filter, prioritize, bind).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hami_scheduler::extender::{Extender, ExtenderState, HttpApiServer, listen};
use hami_scheduler::frag::TargetWorkload;
use hami_scheduler::model::ModelTable;
use hami_scheduler::policy::NodePolicy;
use hami_scheduler::trace;

#[derive(Parser)]
#[command(
    name = "hami-scheduler",
    version,
    about = "kube-scheduler extender: GPU-slice placement"
)]
struct Args {
    /// Address to serve the extender API on.
    #[arg(long, default_value = "0.0.0.0:8888")]
    listen: String,
    /// API server base URL (plain HTTP; in a cluster a `kubectl proxy` sidecar).
    #[arg(long, default_value = "http://127.0.0.1:8001")]
    api_server: String,
    /// File holding a bearer token for the API server.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Node policy for pods without `hami.io/node-scheduler-policy`.
    #[arg(long, default_value = "ours")]
    policy: NodePolicy,
    /// Task list (openb CSV format) describing the expected workload, for fgd and ours.
    #[arg(long)]
    workload: Option<PathBuf>,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Seconds between resyncs of bound pods from the API server (0: never).
    #[arg(long, default_value_t = 30)]
    resync_seconds: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let workload = match &args.workload {
        Some(path) => {
            let tasks = trace::read_tasks(path, &mut ModelTable::default())?;
            TargetWorkload::from_tasks(
                tasks
                    .iter()
                    .map(|t| (&t.key, t.request.models, t.request.memory_mib)),
                hami_scheduler::sim::WORKLOAD_COVERAGE,
            )
            .any_model()
        }
        None => TargetWorkload::default(),
    };
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let api = Arc::new(HttpApiServer::new(&args.api_server, token));
    let extender = Arc::new(Extender::new(
        ExtenderState::new(args.policy, workload),
        api,
    ));
    if args.resync_seconds > 0 {
        let resync = Arc::clone(&extender);
        let period = Duration::from_secs(args.resync_seconds);
        std::thread::spawn(move || {
            loop {
                if let Err(e) = resync.resync() {
                    eprintln!("hami-scheduler: resync failed: {e}");
                }
                std::thread::sleep(period);
            }
        });
    }
    let server = listen(&args.listen)?;
    eprintln!(
        "hami-scheduler: serving on {} with policy {}",
        args.listen, args.policy
    );
    extender.serve(server, args.threads);
    Ok(())
}
