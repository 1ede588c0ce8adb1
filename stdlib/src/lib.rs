//! Tern's standard library: native functions (Rust) and modules written in Tern.
//!
//! Natives see a process only through [`tern_vm::NativeCtx`] (its heap, random state,
//! and the host for console output and clocks), so they work the same wherever the
//! process runs. Library modules are Tern source embedded in the binary and compiled
//! like any other module when a program imports them.
//!
//! A native may be run again from the start after a page fault or a collection, so each
//! one does its reads and allocations first and changes reachable objects (or the random
//! state, or the console) only at the end.

mod collections;
mod core;
mod math;
mod strings;
mod time;
mod util;

#[cfg(test)]
mod tests;

use tern_vm::Natives;

/// The seeded generator behind `rand_int` and friends (splitmix64), for the host's
/// own deterministic choices too.
pub use time::next_u64 as splitmix64;

/// Every native function of the standard library.
pub fn natives() -> Natives {
    let mut n = Natives::new();
    n.register(core::NATIVES);
    n.register(strings::NATIVES);
    n.register(math::NATIVES);
    n.register(collections::NATIVES);
    n.register(time::NATIVES);
    n.register(&tern_vm::node::sys_natives());
    n
}

/// The source of standard library module `name` (`import name;`).
pub fn module_source(name: &str) -> Option<String> {
    let src = match name {
        "list" => include_str!("../lib/list.tern"),
        "math" => include_str!("../lib/math.tern"),
        _ => return None,
    };
    Some(src.to_string())
}
