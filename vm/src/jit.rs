//! The contract between the interpreter and compiled code (the compiler itself is the
//! `tern-jit` crate; the VM knows only this).
//!
//! Compiled code is never part of a process: it is a node-local cache keyed by the
//! module's hash and the function's index ([`LinkedModule::jit`]), filled by a
//! [`Compiler`]. The interpreter enters it at a function's first instruction when it
//! calls it and at loop back edges (on-stack entry: the frame layout is the same, so
//! entering is a jump to the block of that pc). Compiled code reads and writes only the
//! running frame's registers (`JitCtx::regs`) and its module's globals (`JitCtx::globals`),
//! in the interpreter's own layout, and leaves
//! by setting `JitCtx::pc` to the next instruction for the interpreter to run: at an
//! instruction it does not compile, when a guard fails (an operand is not an int, an
//! addition overflows — the interpreter then runs that instruction itself, with its
//! errors and messages), or when the time slice's fuel runs out at a back edge. So at
//! every safepoint every live value is in the frame and the resume point is a bytecode
//! pc: an image never holds a machine address.

use crate::runtime::LinkedModule;
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

/// When functions are compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum JitMode {
    /// Never: the interpreter runs everything.
    Off,
    /// A function is compiled (in the background) once hot: its calls and loop back
    /// edges reach the threshold.
    #[default]
    On,
    /// Every function at its first call, before it runs (for tests).
    Always,
}

impl std::str::FromStr for JitMode {
    type Err = String;
    fn from_str(s: &str) -> Result<JitMode, String> {
        match s {
            "off" => Ok(JitMode::Off),
            "on" => Ok(JitMode::On),
            "always" => Ok(JitMode::Always),
            _ => Err(format!("unknown JIT mode {s:?} (off, on or always)")),
        }
    }
}

/// What compiled code is given and gives back.
#[repr(C)]
#[derive(Debug)]
pub struct JitCtx {
    /// Register 0 of the running frame.
    pub regs: *mut Value,
    /// Global 0 of the running function's module.
    pub globals: *mut Value,
    /// In: the instruction to start at. Out: the next one for the interpreter.
    pub pc: u32,
    pub _pad: u32,
    /// The time slice left (reductions); a back edge takes one.
    pub fuel: i64,
}

/// Compiled code of one function.
pub type JitFn = unsafe extern "C" fn(*mut JitCtx);

/// Per function of a linked module: how hot it is and its code, once compiled.
#[derive(Debug, Default)]
pub struct JitSlot {
    count: AtomicU32,
    /// 0: not asked for; 1: asked for; 2: failed or not worth it (interpreted for good).
    state: AtomicU8,
    /// The code's address, and a bit per instruction: whether entering there is worth
    /// it (the compiled code would run a whole loop, not leave at once).
    code: OnceLock<(usize, Box<[u64]>)>,
}

impl JitSlot {
    /// Whether the interpreter has anything to do here at `pc`: count toward hotness,
    /// look for code still being compiled, or enter code worth entering at `pc`. False
    /// for a function given up on, and where its code would leave at once.
    #[inline]
    pub fn visit(&self, pc: usize) -> bool {
        match self.code.get() {
            Some((_, bits)) => bits.get(pc / 64).is_some_and(|w| w & (1 << (pc % 64)) != 0),
            None => self.state.load(Ordering::Relaxed) != 2,
        }
    }

    /// Whether the function has been compiled.
    #[inline]
    pub fn is_compiled(&self) -> bool {
        self.code.get().is_some()
    }

    /// The compiled code, if it is worth entering at instruction `pc`.
    #[inline]
    pub fn entry(&self, pc: usize) -> Option<JitFn> {
        let (addr, entries) = self.code.get()?;
        if entries.get(pc / 64).is_some_and(|w| w & (1 << (pc % 64)) != 0) {
            // SAFETY: only `set_code` stores here, and only a `JitFn`'s address.
            Some(unsafe { std::mem::transmute::<usize, JitFn>(*addr) })
        } else {
            None
        }
    }

    /// Stores the compiled code (the compiler keeps its memory alive as long as the
    /// node) and the instructions where entering it is worth it.
    pub fn set_code(&self, f: JitFn, entries: &[bool]) {
        let mut bits = vec![0u64; entries.len().div_ceil(64)];
        for (i, _) in entries.iter().enumerate().filter(|(_, &e)| e) {
            bits[i / 64] |= 1 << (i % 64);
        }
        let _ = self.code.set((f as usize, bits.into_boxed_slice()));
    }

    /// The compiler could not compile it (or chose not to): it stays interpreted.
    pub fn set_failed(&self) {
        self.state.store(2, Ordering::Relaxed);
    }

    /// Counts a call or back edge; true once (when it becomes hot at `threshold`).
    #[inline]
    pub fn heat(&self, threshold: u32) -> bool {
        // Asked for already (or given up on): nothing more to count.
        if self.state.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        n >= threshold && self.state.compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// Calls and back edges counted so far.
    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Compiles functions for a node.
pub trait Compiler: Send + Sync {
    /// Compiles function `func` of `lm` and stores it in `lm.jit[func]` (or marks it
    /// failed): in the background, or before returning when `wait`.
    fn compile(&self, lm: &Arc<LinkedModule>, func: u32, wait: bool);
    /// Functions compiled so far.
    fn compiled(&self) -> u64;
}
