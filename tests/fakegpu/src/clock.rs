//! The one clock every process of the simulated device agrees on: `CLOCK_MONOTONIC`, which
//! is system-wide (also across containers) and read through the vDSO without a syscall.

/// Nanoseconds of `CLOCK_MONOTONIC`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Microseconds since the Unix epoch, the unit of NVML sample timestamps.
pub fn realtime_us() -> u64 {
    clock_ns(libc::CLOCK_REALTIME) / 1_000
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec and both clocks exist on every Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut now) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}
