//! Reclaiming dead process slots of usage parts in a sacrificial child process.
//!
//! A reclaim pass must map the usage part read-write (it changes counters by compare-and-swap,
//! alongside the container's live processes), and a container can truncate its own usage part
//! under that mapping: touching it then raises `SIGBUS`. So the node agent never maps a usage
//! part itself; it runs `hami-node reclaim-usage PATH...` (this module's [`run_child`]), which
//! prints one line per part as it goes. If a hostile part kills or hangs the child, the agent
//! loses only that child: it names the part that was in progress, skips it, and starts a new
//! child for the rest.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hami_ledger::UsageLedger;

/// First argument that turns `hami-node` into a reclaim child.
pub const RECLAIM_COMMAND: &str = "reclaim-usage";

/// How long one child may take for one part before it is killed (a pass is bounded: at most
/// ~10 ms of waiting for operations in flight, then one lock attempt per slot).
const PER_PART: Duration = Duration::from_secs(2);

/// What happened to one usage part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartOutcome {
    /// Slots freed by the pass (0 when another pass was running or this one gave up).
    Reclaimed { freed_slots: usize },
    /// The part could not be attached or reclaimed (named in the text).
    Failed(String),
    /// The child died or hung on this part (a hostile file); it is skipped this time.
    Crashed(String),
}

/// Runs reclaim children with the program at `program` (the `hami-node` binary).
#[derive(Clone, Debug)]
pub struct Reclaimer {
    program: PathBuf,
}

impl Reclaimer {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }

    /// `hami-node` next to this executable's name: the running agent itself.
    pub fn this_executable() -> std::io::Result<Self> {
        std::env::current_exe().map(Self::new)
    }

    /// Reclaims dead slots of every part in `parts`, each once, in children of its own kind.
    pub fn reclaim(&self, parts: &[PathBuf]) -> Vec<(PathBuf, PartOutcome)> {
        let mut outcomes = Vec::with_capacity(parts.len());
        let mut rest = parts;
        while !rest.is_empty() {
            let done = self.one_child(rest, &mut outcomes);
            // `done` parts have an outcome; the next one, if the child stopped early, crashed it.
            rest = &rest[done..];
        }
        outcomes
    }

    /// Runs one child over `parts`; returns how many parts got an outcome (at least one).
    fn one_child(&self, parts: &[PathBuf], outcomes: &mut Vec<(PathBuf, PartOutcome)>) -> usize {
        let spawned = Command::new(&self.program)
            .arg(RECLAIM_COMMAND)
            .args(parts)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let text = format!("cannot start {}: {e}", self.program.display());
                outcomes.extend(
                    parts
                        .iter()
                        .map(|p| (p.clone(), PartOutcome::Failed(text.clone()))),
                );
                return parts.len();
            }
        };
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return 0;
        };
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        let deadline = Instant::now() + PER_PART * u32::try_from(parts.len()).unwrap_or(u32::MAX);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let lines = reader.join().unwrap_or_default();
        let mut done = 0;
        for (part, line) in parts.iter().zip(&lines) {
            outcomes.push((part.clone(), parse_line(line)));
            done += 1;
        }
        if done < parts.len() {
            let why = match status {
                Some(status) => format!("the reclaim child died on it ({status})"),
                None => "the reclaim child hung on it and was killed".to_owned(),
            };
            outcomes.push((parts[done].clone(), PartOutcome::Crashed(why)));
            done += 1;
        }
        done
    }
}

fn parse_line(line: &str) -> PartOutcome {
    if let Some(freed) = line.strip_prefix("freed ") {
        return match freed.trim().parse() {
            Ok(freed_slots) => PartOutcome::Reclaimed { freed_slots },
            Err(_) => PartOutcome::Failed(format!("unreadable reclaim reply {line:?}")),
        };
    }
    PartOutcome::Failed(line.strip_prefix("error ").unwrap_or(line).to_owned())
}

/// The child: reclaims each part in `paths` in order, one line each on stdout (`freed N` or
/// `error TEXT`), flushed before the next part so the parent knows how far it got. Returns
/// the exit status.
pub fn run_child(paths: &[String]) -> i32 {
    let mut out = std::io::stdout().lock();
    for path in paths {
        let line = match reclaim_one(Path::new(path)) {
            Ok(freed) => format!("freed {freed}"),
            Err(text) => format!("error {}", text.replace('\n', " ")),
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return 1;
        }
    }
    0
}

fn reclaim_one(path: &Path) -> Result<usize, String> {
    let usage = UsageLedger::attach(path).map_err(|e| e.to_string())?;
    let report = usage.reclaim_dead().map_err(|e| e.to_string())?;
    Ok(report.freed_slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines_parse_to_outcomes() {
        assert_eq!(
            parse_line("freed 3"),
            PartOutcome::Reclaimed { freed_slots: 3 }
        );
        assert_eq!(
            parse_line("error /x is not valid"),
            PartOutcome::Failed("/x is not valid".into())
        );
        assert!(matches!(parse_line("freed x"), PartOutcome::Failed(_)));
    }

    #[test]
    fn a_child_that_dies_costs_only_the_part_in_progress() {
        // `sh -c 'echo freed 1; kill -9 $$' reclaim-usage a b c` stands for a child that
        // reclaimed `a` and then died on `b`.
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("dies");
        std::fs::write(&program, "#!/bin/sh\necho freed 1\nkill -9 $$\n").unwrap();
        std::fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let parts: Vec<PathBuf> = ["a", "b", "c", "d"].iter().map(PathBuf::from).collect();
        let outcomes = Reclaimer::new(&program).reclaim(&parts);
        let kinds: Vec<&PartOutcome> = outcomes.iter().map(|(_, o)| o).collect();
        assert_eq!(outcomes.len(), 4, "{outcomes:?}");
        assert_eq!(kinds[0], &PartOutcome::Reclaimed { freed_slots: 1 });
        assert!(matches!(kinds[1], PartOutcome::Crashed(_)));
        assert_eq!(kinds[2], &PartOutcome::Reclaimed { freed_slots: 1 });
        assert!(matches!(kinds[3], PartOutcome::Crashed(_)));
        assert_eq!(outcomes[1].0, PathBuf::from("b"));
    }
}
