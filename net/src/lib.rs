//! The Tern node and the `tern` command.
//!
//! Three layers, imports going one way (ARCHITECTURE.md, "Code map", `net/`):
//!
//! - Top level, knowing neither `node` nor `ops`: `proto` (the sans-IO protocols:
//!   `session`, `migrate`, `mechanism`, `wire`) and `sim` (their deterministic
//!   simulators); `runner` (one node in this OS process, or two for `--migrate-every`);
//!   `config`, `certs`, `tls` (the mesh's config file, its certificates, mutual TLS).
//! - `node`: the QUIC host, a mesh node (VM + QUIC endpoint + sessions + the
//!   migration driver).
//! - `ops`: the operator's side (the operator protocol, the mesh commands, the REPL,
//!   report tables), on `node`'s public API.
//!
//! `mesh`, `migration`, `cmd`, `ctl` and `repl` are re-exported at the top: the paths
//! tests, `bench/` and `main.rs` use.

pub mod certs;
pub mod config;
#[doc(hidden)]
pub mod fuzz;
pub mod node;
pub mod ops;
pub mod proto;
pub mod runner;
pub mod sim;
pub mod tls;

pub use node as mesh;
pub use node::migration;
pub use ops::{cmd, ctl, repl};
