//! The operator's side of a mesh: the operator protocol (`ctl.rs`: what a node answers
//! and the client `tern ctl`/`tern repl` use), the mesh commands of `tern` (`cmd.rs`),
//! the REPL (`repl.rs`) and how their results are printed (`report.rs`). Built on the
//! node's public API (`crate::node`); the node knows nothing of this folder.

pub mod cmd;
pub mod ctl;
pub mod dashboard;
pub mod prom;
pub mod repl;
pub mod report;
pub mod snippet;
