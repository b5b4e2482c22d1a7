//! The cudarc client (`hami-cuda-client`, which loads the driver at run time and resolves
//! entry points the way cudarc does) is capped like any CUDA program.

use hami_e2e::artifacts::cuda_client;
use hami_e2e::container::{Container, MIB, Machine};
use hami_e2e::program::{code, field, run_json};

#[test]
fn fill_until_oom_stops_at_the_cap_with_code_2() {
    let machine = Machine::new(1, 4096 * MIB);
    let cap = 1024 * MIB;
    let step = 64 * MIB;
    let container = Container::new("cudarc", &[(machine.uuid(0), Some(cap))]);
    let report = run_json(container.command(&machine, cuda_client()).args([
        "fill-until-oom",
        "--step",
        "64Mi",
    ]));
    let allocated = field(&report, "allocated_bytes");
    assert!(allocated <= cap && allocated + step > cap, "{report}");
    assert_eq!(code(&report, "error_code"), 2, "{report}");
    assert_eq!(field(&report, "mem_info_total"), cap, "{report}");
    assert_eq!(field(&report, "mem_info_free"), cap - allocated, "{report}");
    assert_eq!(container.ledger().used(0), 0, "every allocation was freed");
}

#[test]
fn uncapped_the_client_fills_the_device() {
    let machine = Machine::new(1, 1024 * MIB);
    let report =
        run_json(
            machine
                .command(cuda_client())
                .args(["fill-until-oom", "--step", "64Mi"]),
        );
    assert_eq!(field(&report, "allocated_bytes"), 1024 * MIB, "{report}");
}
