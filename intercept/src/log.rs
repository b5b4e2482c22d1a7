//! Opt-in diagnostics on stderr.
//!
//! HAMi-core printed four lines per CUDA process at its default level, which leaked into
//! application output and `nvidia-smi`. This library is silent unless `HAMI_LOG` asks
//! (`error`, `warn`, `info`, `debug`); the level is read once at initialization, so a log site
//! on a hot path costs one relaxed load. The single exception is a refusal to enforce a
//! configuration (garbage limits, a damaged ledger): that is printed at `error`, which is on by
//! default, because failing closed without saying why would be worse than noise.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

/// How much the library says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Error as u8);

impl Level {
    /// Reads a `HAMI_LOG` value; unknown words keep the default rather than failing a process.
    pub fn parse(text: &str) -> Option<Level> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" | "none" | "0" => Some(Level::Off),
            "error" | "1" => Some(Level::Error),
            "warn" | "warning" | "2" => Some(Level::Warn),
            "info" | "3" => Some(Level::Info),
            "debug" | "trace" | "4" => Some(Level::Debug),
            _ => None,
        }
    }
}

/// Sets the process-wide level (once, at initialization).
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether a message at `level` would be written.
#[inline]
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Writes one line; called through the macros below so arguments are only formatted when enabled.
pub fn write_line(level: Level, args: std::fmt::Arguments<'_>) {
    let tag = match level {
        Level::Off => return,
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
    };
    // SAFETY: getpid has no preconditions and cannot fail.
    let pid = unsafe { libc::getpid() };
    let line = format!("[hami {tag} pid {pid}] {args}\n");
    // One write call per line so lines of concurrent processes do not interleave; errors are
    // ignored because a closed stderr must not change what the application sees.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Logs at a level when enabled.
#[macro_export]
macro_rules! hami_log {
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::write_line($level, format_args!($($arg)*));
        }
    };
}
