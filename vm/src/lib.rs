//! Tern's process VM.
//!
//! A process is plain data ([`process::Process`]): registers and frames, a paged heap
//! ([`heap::Heap`]) whose references are word addresses inside the process's own address
//! space, its module table and globals. The interpreter ([`interp::run`]) runs it for a
//! budget of reductions and returns at a safepoint, where the process can be
//! snapshotted ([`snapshot`]) and restored in another VM instance, on another machine.
//!
//! A [`node::Node`] runs many processes as green threads on a few OS threads, with
//! messages, channels, timers, files and links, and freezes and moves them.
//!
//! `vm` knows nothing of sockets, files on disk or the network: console output, clocks
//! and file operations go through traits ([`runtime::Host`], [`node::Console`],
//! [`node::Files`]) that the host implements.

pub mod bytecode;
pub mod console_in;
pub mod flatten;
pub mod fmt;
pub mod heap;
pub mod interp;
pub mod jit;
pub mod message;
pub mod node;
pub mod object;
pub mod pagebits;
pub mod process;
pub mod runtime;
pub mod snapshot;
pub mod value;
pub mod verify;

pub use bytecode::{Module, ModuleHash, Op};
pub use interp::{run, Outcome, RuntimeError};
pub use process::Process;
pub use runtime::{Exn, Host, NativeCtx, NativeDef, Natives, Vm, VmConfig};
pub use value::Value;
