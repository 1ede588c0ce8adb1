//! The Tern node and the `tern` command.
//!
//! - `runner`: one node in this OS process (`tern run`), or two for `--migrate-every`.
//! - `config`, `certs`, `tls`: the mesh's config file, its certificates, mutual TLS.
//! - `session`: the sans-IO node-to-node protocol (exactly-once, in-order delivery
//!   across reconnects; heartbeats, failure detection); `sim` runs it deterministically.
//! - `wire`: what nodes and operators say to each other, in versioned frames.
//! - `mesh`: a mesh node (VM + QUIC endpoint + sessions); `ctl`: the operator protocol.
//! - `migrate`: the sans-IO migration protocol (per-migration source and destination
//!   state machines); `migrate_sim` runs it deterministically. Groundwork: not yet
//!   driven by the QUIC node.

pub mod certs;
pub mod config;
pub mod mechanism;
pub mod migrate;
pub mod migrate_sim;
pub mod node;
pub mod ops;
pub mod runner;
pub mod session;
pub mod sim;
pub mod tls;
pub mod wire;

pub use node as mesh;
pub use node::migration;
pub use ops::{cmd, ctl, repl};
