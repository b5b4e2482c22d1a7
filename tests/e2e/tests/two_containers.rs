//! Two containers on one device: each capped by its own entry, neither sees the other's usage.

use hami_e2e::artifacts::c_program;
use hami_e2e::container::{Container, MIB, Machine};
use hami_e2e::program::{Holder, code, field, run_json};

#[test]
fn each_container_is_capped_independently() {
    let machine = Machine::new(1, 4096 * MIB);
    let small = Container::new("small", &[(machine.uuid(0), Some(512 * MIB))]);
    let large = Container::new("large", &[(machine.uuid(0), Some(1024 * MIB))]);
    let program = c_program("alloc_paths");

    let small_holder = Holder::spawn(
        small
            .command(&machine, &program)
            .args(["hold", &(512 * MIB).to_string()]),
    );
    assert_eq!(code(&small_holder.report, "code"), 0);
    assert_eq!(small.ledger().used(0), 512 * MIB);

    // The small container is full; the large one still gets its whole cap and sees only
    // its own usage.
    let report = run_json(large.command(&machine, &program).args([
        "fill",
        "alloc",
        &(64 * MIB).to_string(),
    ]));
    assert_eq!(field(&report, "allocations"), 16, "{report}");
    assert_eq!(field(&report, "total"), 1024 * MIB);
    assert_eq!(large.ledger().used(0), 0);
    assert_eq!(
        small.ledger().used(0),
        512 * MIB,
        "the large container changed the small one"
    );

    let refused = run_json(small.command(&machine, &program).args([
        "fill",
        "alloc",
        &(64 * MIB).to_string(),
    ]));
    assert_eq!(field(&refused, "allocations"), 0, "{refused}");
    assert_eq!(code(&refused, "code"), 2);
    small_holder.release();
}
