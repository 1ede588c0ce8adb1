//! The Tern node and the `tern` command.
//!
//! For now this is the single-node runner: compile a program, load it into a VM, run
//! its process to completion (optionally snapshotting it every R reductions and
//! restoring it into a fresh VM instance, to show that a process is plain data). The
//! mesh, its QUIC transport and the migration protocols come here next.

pub mod runner;
pub mod session;
pub mod sim;
