//! containerd-shim-hami-v2: containerd runs this binary for runtime type `io.containerd.hami.v2`.

use containerd_shim::Config;
use hami_shim::contention::{PUBLISH_COMMAND, run_publisher_process};
use hami_shim::daemon;
use hami_shim::shim::{HamiShim, RUNTIME_ID};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(PUBLISH_COMMAND) {
        std::process::exit(run_publisher_process(&args[2..]));
    }
    // No SIGCHLD reaper: it would steal the exit status of the backend shim commands this process
    // runs and waits for; the backend shim reaps the containers itself.
    let config = Config {
        no_reaper: true,
        ..Config::default()
    };
    // The daemon serves task API v2 and v3 (see `daemon`); `start` and `delete` go through the
    // library.
    if let Ok(flags) = containerd_shim::parse(&args[1..])
        && daemon::is_daemon(&flags)
    {
        if let Err(e) = daemon::serve(&flags, config) {
            log::error!("shim daemon: {e}");
            std::process::exit(1);
        }
        return;
    }
    containerd_shim::run::<HamiShim>(RUNTIME_ID, Some(config));
}
