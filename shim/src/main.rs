//! containerd-shim-hami-v2: containerd runs this binary for runtime type `io.containerd.hami.v2`.

use containerd_shim::Config;
use hami_shim::shim::{HamiShim, RUNTIME_ID};

fn main() {
    // No SIGCHLD reaper: it would steal the exit status of the backend shim commands this process
    // runs and waits for; the backend shim reaps the containers itself.
    let config = Config {
        no_reaper: true,
        ..Config::default()
    };
    containerd_shim::run::<HamiShim>(RUNTIME_ID, Some(config));
}
