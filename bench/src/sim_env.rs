//! The simulated device's environment for benchmark children, taken from `hami sim env`.

use std::path::Path;
use std::process::Command;

use thiserror::Error;

/// Why the simulated device's environment could not be prepared.
#[derive(Debug, Error)]
pub enum SimEnvError {
    #[error("running `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

/// Runs `<hami> sim env --state-dir <dir> <extra..>` and returns its `export` lines as pairs.
pub fn simulated_device_env(
    hami: &Path,
    state_dir: &Path,
    extra: &[&str],
) -> Result<Vec<(String, String)>, SimEnvError> {
    let command = format!(
        "{} sim env --state-dir {}",
        hami.display(),
        state_dir.display()
    );
    let output = Command::new(hami)
        .args(["sim", "env", "--state-dir"])
        .arg(state_dir)
        .args(extra)
        .output()
        .map_err(|source| SimEnvError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(SimEnvError::Failed {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(parse_exports(&String::from_utf8_lossy(&output.stdout)))
}

/// `export NAME=VALUE` lines (VALUE bare, 'single' or "double" quoted) as pairs.
pub fn parse_exports(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(name, value)| {
            let value = value.trim();
            let unquoted = ['\'', '"']
                .iter()
                .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .unwrap_or(value);
            (name.trim().to_owned(), unquoted.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_lines_are_parsed_with_or_without_quotes() {
        let text = "export A=1\nexport B='x y'\n# comment\nexport C=\"/p:/q\"\n";
        assert_eq!(
            parse_exports(text),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "x y".into()),
                ("C".into(), "/p:/q".into())
            ]
        );
    }
}
