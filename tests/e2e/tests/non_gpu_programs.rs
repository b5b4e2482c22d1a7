//! A program that never touches a GPU behaves exactly as without the library: same output,
//! same exit status, nothing printed — even when the configuration is garbage (nothing is
//! read until a driver entry point is reached).

use std::process::{Command, Output};

use hami_e2e::artifacts::libhami;
use hami_e2e::container::{Container, MIB, Machine};

fn compare(name: &str, build: impl Fn() -> Command, preload: &[(&str, String)]) {
    let plain: Output = build().output().expect("run without the library");
    let mut preloaded = build();
    preloaded.env("LD_PRELOAD", libhami());
    for (key, value) in preload {
        preloaded.env(key, value);
    }
    let preloaded = preloaded.output().expect("run with the library");
    assert_eq!(
        plain.status.code(),
        preloaded.status.code(),
        "{name}: exit status"
    );
    assert_eq!(plain.stdout, preloaded.stdout, "{name}: stdout");
    assert_eq!(
        String::from_utf8_lossy(&plain.stderr),
        String::from_utf8_lossy(&preloaded.stderr),
        "{name}: stderr"
    );
}

/// A named way to build the same command twice.
type Program = (&'static str, Box<dyn Fn() -> Command>);

fn programs() -> Vec<Program> {
    vec![
        ("/bin/true", Box::new(|| Command::new("/bin/true"))),
        ("/bin/false", Box::new(|| Command::new("/bin/false"))),
        (
            "python3 -c pass",
            Box::new(|| {
                let mut c = Command::new("python3");
                c.args(["-c", "pass"]);
                c
            }),
        ),
        (
            "python3 printing",
            Box::new(|| {
                let mut c = Command::new("python3");
                c.args([
                    "-c",
                    "import sys, ctypes; print('out'); print('err', file=sys.stderr); sys.exit(3)",
                ]);
                c
            }),
        ),
        (
            "sh",
            Box::new(|| {
                let mut c = Command::new("/bin/sh");
                c.args(["-c", "echo hello; ls / >/dev/null; exit 7"]);
                c
            }),
        ),
    ]
}

#[test]
fn unaffected_inside_a_capped_container() {
    let machine = Machine::new(1, 1024 * MIB);
    let container = Container::new("non-gpu", &[(machine.uuid(0), Some(256 * MIB))]);
    let env = [
        ("HAMI_LEDGER_LIMITS", container.limits.display().to_string()),
        ("HAMI_LEDGER_USAGE", container.usage.display().to_string()),
    ];
    for (name, build) in programs() {
        compare(name, build, &env);
    }
    let snapshot = container.ledger().snapshot();
    assert_eq!(container.ledger().used(0), 0);
    assert!(
        format!("{snapshot:?}").matches("Live").count() == 0,
        "a non-GPU process must not even claim a slot: {snapshot:?}"
    );
}

#[test]
fn unaffected_even_with_garbage_configuration() {
    let env = [
        ("CUDA_DEVICE_MEMORY_LIMIT", "lots".to_owned()),
        ("HAMI_LOG", "debug".to_owned()),
    ];
    for (name, build) in programs() {
        compare(name, build, &env);
    }
}

#[test]
fn probing_for_a_driver_symbol_does_not_load_the_driver() {
    let machine = Machine::new(1, 1024 * MIB);
    let container = Container::new("probe", &[(machine.uuid(0), Some(256 * MIB))]);
    let script = "import ctypes\n\
                  try:\n    ctypes.CDLL(None).cuMemAlloc_v2\n\
                  except AttributeError:\n    pass\n\
                  print('libcuda' in open('/proc/self/maps').read())";
    let output = container
        .command(&machine, "python3")
        .args(["-c", script])
        .output()
        .expect("python3");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "False",
        "{output:?}"
    );
}
