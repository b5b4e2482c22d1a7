//! Running the C test programs and reading their one-line JSON reports.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Runs `command` to completion and parses the JSON line it prints.
pub fn run_json(command: &mut Command) -> serde_json::Value {
    let output = command.output().expect("spawn test program");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "program failed ({}): stdout {stdout} stderr {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    parse_line(stdout.lines().last().unwrap_or_default())
}

/// Parses one JSON report line.
pub fn parse_line(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON report ({e}): {line:?}"))
}

/// A program that reports one line, then holds its memory until its stdin closes.
pub struct Holder {
    pub child: Child,
    pub report: serde_json::Value,
}

impl Holder {
    /// Spawns `command` and waits for its report line.
    pub fn spawn(command: &mut Command) -> Holder {
        Holder::start(command).report()
    }

    /// Spawns `command` without waiting for its report (to start many at once).
    pub fn start(command: &mut Command) -> Started {
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn test program");
        Started { child }
    }

    /// Closes stdin and waits for the exit.
    pub fn release(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "holder exited with {status}");
    }
}

/// A u64 field of a report.
pub fn field(report: &serde_json::Value, name: &str) -> u64 {
    report[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

/// An i64 field of a report.
pub fn code(report: &serde_json::Value, name: &str) -> i64 {
    report[name]
        .as_i64()
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

/// A started program whose report has not been read yet.
pub struct Started {
    pub child: Child,
}

impl Started {
    /// Waits for the report line.
    pub fn report(mut self) -> Holder {
        let stdout = self.child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read report");
        assert!(
            !line.is_empty(),
            "program exited before reporting: {:?}",
            self.child.wait()
        );
        Holder {
            child: self.child,
            report: parse_line(line.trim()),
        }
    }
}
