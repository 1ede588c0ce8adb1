//! The protocols, sans-IO: each a state machine that does no I/O, reads no clock and
//! starts no thread (quinn-proto's shape: inputs in, actions and timeouts polled out,
//! time as an argument). The QUIC host (`node/`) and the simulators (`sim/`) drive the
//! same code.
//!
//! - `session`: one node and one peer — exactly-once, in-order delivery across
//!   reconnects, heartbeats, failure detection, incarnations.
//! - `migrate`: one migration, its source and its destination machines (with the
//!   message ordering of `tern_vm::node::order`, which they drive).
//! - `pagebits`: a bit per page of a migrating heap, filled, counted and searched a word
//!   at a time (absence kept as ranges costs nothing per page).
//! - `mechanism`: how a migration moves memory (one type for config, wire, CLI, reports).
//! - `policy`: the load policy — load measured over a window, which process to move
//!   where and why.
//! - `wire`: what nodes and operators say, in versioned frames.
//! - `hello`: what two nodes say first on a connection: their versions and features
//!   (a fixed layout, the same in every version).
//!
//! Nothing here imports quinn, tokio or the VM's threads; the VM types used are plain
//! data (the ops nodes send each other, `Order`).

pub mod hello;
pub mod mechanism;
pub mod migrate;
pub mod pagebits;
pub mod policy;
pub mod session;
pub mod wire;
