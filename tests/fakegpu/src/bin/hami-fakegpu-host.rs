//! `hami-fakegpu-host DIR`: the host side of the simulated device whose state is in `DIR`.
//! Run it in the host's PID namespace while containers use the device; it tells each process
//! its host PID, so NVML reports host PIDs as the real driver does (`host_pid` module docs).
//! Stops on SIGTERM or SIGINT and removes its socket.

use std::path::PathBuf;

use hami_fakegpu::host_pid::HostSide;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: hami-fakegpu-host STATE_DIR");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    // SAFETY: a zeroed sigset_t is a valid argument for sigemptyset, which initialises it;
    // sigaddset and pthread_sigmask only read and write that set. Blocking the signals before
    // the server thread starts makes every thread inherit the mask, so sigwait gets them.
    let signals = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let host = match HostSide::serve(&dir) {
        Ok(host) => host,
        Err(e) => {
            eprintln!("hami-fakegpu-host: cannot serve {}: {e}", dir.display());
            std::process::exit(1);
        }
    };
    let mut received = 0;
    // SAFETY: `signals` was initialised above; `received` is a valid out pointer.
    unsafe { libc::sigwait(&signals, &mut received) };
    drop(host);
}
