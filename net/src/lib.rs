//! The Tern node and the `tern` command.
//!
//! Three layers, imports going one way (ARCHITECTURE.md, "Code map", `net/`):
//!
//! - Top level, knowing neither `node` nor `ops`: `runner` (one node in this OS
//!   process, or two for `--migrate-every`); `config`, `certs`, `tls` (the mesh's config
//!   file, its certificates, mutual TLS); `mechanism` (how a migration moves memory);
//!   `session` (the sans-IO node-to-node protocol: exactly-once, in-order delivery
//!   across reconnects, heartbeats, failure detection) and `sim`, which runs it
//!   deterministically; `wire` (what nodes and operators say, in versioned frames);
//!   `migrate` (the sans-IO migration machines) and `migrate_sim`.
//! - `node`: the QUIC host, a mesh node (VM + QUIC endpoint + sessions + the
//!   migration driver).
//! - `ops`: the operator's side (the operator protocol, the mesh commands, the REPL,
//!   report tables), on `node`'s public API.
//!
//! `mesh`, `migration`, `cmd`, `ctl` and `repl` are re-exported at the top: the paths
//! tests, `bench/` and `main.rs` use.

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
