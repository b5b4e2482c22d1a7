//! `hami-fakegpu-health DIR INDEX lost|healthy`: marks device INDEX of the simulated device
//! whose state is in `DIR` lost (NVML answers `NVML_ERROR_GPU_IS_LOST` for it in every process,
//! the way a GPU that fell off the bus answers) or healthy again. For health-checking tests.

use std::path::PathBuf;

use hami_fakegpu::state::SharedState;

const USAGE: &str = "usage: hami-fakegpu-health STATE_DIR DEVICE_INDEX lost|healthy";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, index, health] = args.as_slice() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let lost = match health.as_str() {
        "lost" => true,
        "healthy" => false,
        other => {
            eprintln!("hami-fakegpu-health: {other:?} is not a health; {USAGE}");
            std::process::exit(2);
        }
    };
    let Ok(index) = index.parse::<usize>() else {
        eprintln!("hami-fakegpu-health: {index:?} is not a device index; {USAGE}");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let state = match SharedState::open_existing(&dir) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("hami-fakegpu-health: {e}");
            std::process::exit(1);
        }
    };
    if !state.set_lost(index, lost) {
        eprintln!(
            "hami-fakegpu-health: no device {index} in {} ({} devices)",
            dir.display(),
            state.device_count()
        );
        std::process::exit(1);
    }
}
