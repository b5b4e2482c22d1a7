//! The simulated device's environment for benchmark children: exactly what
//! `eval "$(hami sim env ...)"` gives a shell, so the children see what a user's program sees.

use std::path::Path;
use std::process::Command;

use thiserror::Error;

/// Why the simulated device's environment could not be prepared.
#[derive(Debug, Error)]
pub enum SimEnvError {
    #[error("running `hami sim env` through /bin/sh: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("`hami sim env` failed: {0}")]
    Failed(String),
}

/// The whole environment after `eval "$(<hami> sim env --state-dir <dir> <extra..>)"`.
pub fn simulated_device_env(
    hami: &Path,
    state_dir: &Path,
    extra: &[&str],
) -> Result<Vec<(String, String)>, SimEnvError> {
    let output = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"lines=$("$0" sim env --state-dir "$@") || exit 1; eval "$lines" && env -0"#)
        .arg(hami)
        .arg(state_dir)
        .args(extra)
        .output()
        .map_err(SimEnvError::Spawn)?;
    if !output.status.success() {
        return Err(SimEnvError::Failed(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    Ok(parse_env0(&output.stdout))
}

/// `env -0` output as pairs.
fn parse_env0(bytes: &[u8]) -> Vec<(String, String)> {
    bytes
        .split(|b| *b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .filter_map(|entry| entry.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env0_entries_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_env0(b"A=1\0B=x=y\0\0"),
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
    }
}
