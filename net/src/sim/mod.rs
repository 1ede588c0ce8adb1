//! Deterministic, seeded simulators of the protocols in `proto/`: every node, the
//! network and its faults in one thread, driven by one generator, with checkers after
//! every step; a failing seed replays exactly, with a trace.
//!
//! - `harness`: what both share (the generator, the failure with its replay command,
//!   the traced rerun).
//! - `session`: the session protocol under loss, duplication, reordering, partitions
//!   and crashes.
//! - `migrate`: the migration protocol and the VM's message ordering, under crashes,
//!   stalls and partitions, with partners on every node sending throughout.
//! - `policy`: the load policy on many nodes with processes arriving and ending, a
//!   fluid model of CPU instead of a VM: no oscillation, no undone decision, balanced
//!   when settled.

pub mod harness;
pub mod migrate;
pub mod policy;
pub mod session;
