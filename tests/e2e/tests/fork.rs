//! A forked child charges through its own process slot, so its bytes are reclaimed when it
//! dies instead of being pinned to the parent's live slot.

use hami_e2e::artifacts::c_program;
use hami_e2e::container::{Container, MIB, Machine};
use hami_e2e::program::{Holder, code, field};

#[test]
fn a_forked_child_charges_its_own_slot() {
    let machine = Machine::new(1, 4096 * MIB);
    let container = Container::new("fork", &[(machine.uuid(0), Some(1024 * MIB))]);
    let parent = Holder::spawn(container.command(&machine, c_program("alloc_paths")).args([
        "fork",
        &(128 * MIB).to_string(),
        &(64 * MIB).to_string(),
    ]));
    assert_eq!(code(&parent.report, "code"), 0, "{}", parent.report);
    assert_eq!(
        field(&parent.report, "child_exit"),
        0,
        "the child's allocation failed"
    );
    let ledger = container.ledger();
    ledger.reclaim_dead().expect("reclaim");
    assert_eq!(
        ledger.used(0),
        128 * MIB,
        "only the live parent's bytes remain"
    );
    parent.release();
}
