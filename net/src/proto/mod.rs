//! The protocols, sans-IO: each a state machine that does no I/O, reads no clock and
//! starts no thread (quinn-proto's shape: inputs in, actions and timeouts polled out,
//! time as an argument). The QUIC host (`node/`) and the simulators (`sim/`) drive the
//! same code.
//!
//! - `session`: one node and one peer — exactly-once, in-order delivery across
//!   reconnects, heartbeats, failure detection, incarnations.
//! - `migrate`: one migration, its source and its destination machines (with the
//!   message ordering of `tern_vm::node::order`, which they drive; their per-page maps
//!   are `tern_vm::pagebits::PageBits`, filled, counted and searched a word at a time,
//!   as the heap's own present bits are).
//! - `compress`: whether a migration's frames of pages go as lz4 blocks, decided frame
//!   by frame from the compression speed and ratio measured against the link's speed.
//! - `mechanism`: how a migration moves memory (one type for config, wire, CLI, reports).
//! - `policy`: the load policy — load measured over a window, which process to move
//!   where and why.
//! - `wire`: what nodes and operators say, in versioned frames.
//! - `hello`: what two nodes say first on a connection: their versions and features
//!   (a fixed layout, the same in every version).
//!
//! Nothing here imports quinn, tokio or the VM's threads; the VM types used are plain
//! data (the ops nodes send each other, `Order`).

pub mod compress;
pub mod hello;
pub mod mechanism;
pub mod migrate;
pub mod policy;
pub mod session;
pub mod wire;
