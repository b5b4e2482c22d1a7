//! Whether this process runs in a container the shim capped, and what the environment may
//! still say there.
//!
//! The shim mounts the container's ledger entry at fixed paths (`hami_ledger::paths`) and
//! names the library in the container's `/etc/ld.so.preload`. The environment it sets is a
//! convenience, not the authority: a process started with `env -i`, `sudo` or a supervisor that
//! resets the environment, or one that points `HAMI_LEDGER_*` elsewhere, must be capped exactly
//! like the container's first process. So inside such a container the ledger paths are the
//! fixed ones whatever the environment says, and the variables that would loosen a cap (the
//! standalone caps, `GPU_CORE_UTILIZATION_POLICY`, the context charge) are not read. Where the
//! preload file names the shim's library but no ledger entry is mounted, the caps cannot be
//! found: the library refuses device memory rather than run uncapped.

use std::io::Read;
use std::path::Path;

use hami_ledger::paths::{
    CONTAINER_LIBRARY_PATH, CONTAINER_LIMITS_PATH, CONTAINER_NODE_PATH, CONTAINER_USAGE_PATH,
};

/// The container's preload file, which names the library.
const PRELOAD_FILE: &str = "/etc/ld.so.preload";
/// More than any preload file holds; a larger one is not the shim's.
const PRELOAD_MAX_BYTES: u64 = 64 * 1024;

/// Where this process runs, as far as its caps are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confinement {
    /// Not in a shim's container: the environment configures the library.
    Host,
    /// In a capped container: the ledger entry is at the fixed paths.
    Container,
    /// The container's preload file names the shim's library, but no ledger entry is mounted.
    LedgerMissing,
}

impl Confinement {
    /// This process's confinement, looked up once (the memory engine and the limiter ask).
    pub fn current() -> Confinement {
        static CURRENT: std::sync::OnceLock<Confinement> = std::sync::OnceLock::new();
        *CURRENT.get_or_init(Confinement::detect)
    }

    /// Looks at this process's file system (at initialization only: a few syscalls).
    pub fn detect() -> Confinement {
        Confinement::from_probes(
            Path::new(CONTAINER_LIMITS_PATH).exists(),
            preload_names(Path::new(PRELOAD_FILE), CONTAINER_LIBRARY_PATH),
        )
    }

    /// The decision, from whether the limits part is mounted and whether the preload file
    /// names the shim's library.
    pub fn from_probes(limits_mounted: bool, preloaded_by_shim: bool) -> Confinement {
        match (limits_mounted, preloaded_by_shim) {
            (true, _) => Confinement::Container,
            (false, true) => Confinement::LedgerMissing,
            (false, false) => Confinement::Host,
        }
    }

    /// The configuration lookup in force: in a container, the fixed ledger paths whatever
    /// `env` says, and no variable that loosens a cap.
    pub fn lookup<'a>(
        self,
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            if self == Confinement::Host {
                return env(name);
            }
            match name {
                super::vars::LEDGER_LIMITS => Some(CONTAINER_LIMITS_PATH.to_owned()),
                super::vars::LEDGER_USAGE => Some(CONTAINER_USAGE_PATH.to_owned()),
                super::vars::LEDGER_NODE => Some(CONTAINER_NODE_PATH.to_owned()),
                super::vars::LOG | super::vars::MAX_ALLOCATIONS => env(name),
                _ => None,
            }
        }
    }
}

/// Whether the preload file at `path` names `library`. Anything but a small regular file (a
/// FIFO, a device, a huge file) is not the shim's and names nothing; it is never read.
fn preload_names(path: &Path, library: &str) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.len() > PRELOAD_MAX_BYTES {
        return false;
    }
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut text = String::new();
    if file
        .take(PRELOAD_MAX_BYTES)
        .read_to_string(&mut text)
        .is_err()
    {
        return false;
    }
    text.split(|c: char| c.is_whitespace() || c == ':')
        .any(|entry| entry == library)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HAMI_LEDGER_LIMITS" => Some("/tmp/elsewhere/limits.ledger".into()),
            "HAMI_MEMORY_LIMIT" => Some("64Gi".into()),
            "GPU_CORE_UTILIZATION_POLICY" => Some("disable".into()),
            "HAMI_LOG" => Some("debug".into()),
            _ => None,
        }
    }

    #[test]
    fn in_a_container_the_fixed_paths_win_over_the_environment() {
        let lookup = Confinement::Container.lookup(&env);
        assert_eq!(
            lookup("HAMI_LEDGER_LIMITS").as_deref(),
            Some(CONTAINER_LIMITS_PATH)
        );
        assert_eq!(
            lookup("HAMI_LEDGER_USAGE").as_deref(),
            Some(CONTAINER_USAGE_PATH)
        );
        assert_eq!(
            lookup("HAMI_LEDGER_NODE").as_deref(),
            Some(CONTAINER_NODE_PATH)
        );
        assert_eq!(lookup("HAMI_MEMORY_LIMIT"), None, "no standalone cap");
        assert_eq!(
            lookup("GPU_CORE_UTILIZATION_POLICY"),
            None,
            "cannot disable"
        );
        assert_eq!(lookup("HAMI_LOG").as_deref(), Some("debug"));
    }

    #[test]
    fn on_a_host_the_environment_configures() {
        let lookup = Confinement::Host.lookup(&env);
        assert_eq!(
            lookup("HAMI_LEDGER_LIMITS").as_deref(),
            Some("/tmp/elsewhere/limits.ledger")
        );
        assert_eq!(lookup("HAMI_MEMORY_LIMIT").as_deref(), Some("64Gi"));
    }

    #[test]
    fn the_decision() {
        assert_eq!(Confinement::from_probes(true, true), Confinement::Container);
        assert_eq!(
            Confinement::from_probes(true, false),
            Confinement::Container
        );
        assert_eq!(
            Confinement::from_probes(false, true),
            Confinement::LedgerMissing
        );
        assert_eq!(Confinement::from_probes(false, false), Confinement::Host);
    }

    #[test]
    fn the_preload_file_is_read_only_when_it_is_a_small_regular_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("ld.so.preload");
        std::fs::write(&file, format!("/lib/other.so\n{CONTAINER_LIBRARY_PATH}\n")).unwrap();
        assert!(preload_names(&file, CONTAINER_LIBRARY_PATH));
        std::fs::write(&file, "/lib/other.so /usr/local/lib/hami/libhami.so.bak").unwrap();
        assert!(!preload_names(&file, CONTAINER_LIBRARY_PATH));
        assert!(!preload_names(
            &dir.path().join("missing"),
            CONTAINER_LIBRARY_PATH
        ));
        // A FIFO would block a reader: it is refused without being opened.
        let fifo = dir.path().join("fifo");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        assert!(!preload_names(&fifo, CONTAINER_LIBRARY_PATH));
    }
}
