//! A process: all of its state, as plain data.
//!
//! This module is also the frame/value layout shared by the interpreter and (later)
//! the JIT: a frame's registers are `regs[base .. base + nregs]`, its arguments the first
//! `arity` of them, and a call puts the callee in `R[a]` and the arguments in
//! `R[a+1..]`, so the callee's frame starts at `a + 1` and arguments are never copied.

use crate::bytecode::ModuleHash;
use crate::heap::Heap;
use crate::runtime::{LinkedModule, Vm};
use crate::value::{Addr, FnRef, Value};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Marks a frame that is not running a module's top level.
pub const NOT_INIT: u32 = u32::MAX;

/// One activation of a Tern function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Module slot (index into the process's module table).
    pub module: u32,
    pub func: u32,
    /// The next instruction (or, after an error, the failing one).
    pub pc: u32,
    /// Index of register 0 of this frame in the process's register stack.
    pub base: u32,
    /// Absolute register receiving the return value.
    pub ret: u32,
    /// The running closure (0 when the function captures nothing).
    pub closure: Addr,
    /// The module slot whose top level this frame runs, or [`NOT_INIT`].
    pub init_of: u32,
}

/// Where a module's top level has got to, in this process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ModuleState {
    NotRun,
    Running,
    /// Ran; holds its exports.
    Ready(Value),
}

/// A module as this process uses it: its globals and its cached string constants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleInstance {
    pub hash: ModuleHash,
    pub globals_base: u32,
    pub globals_len: u32,
    pub state: ModuleState,
    /// Heap string for each constant, once loaded (0 = not yet).
    pub strs: Vec<Addr>,
}

/// An active `try`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handler {
    /// Index of the frame that owns it.
    pub depth: u32,
    /// Where the `catch` code starts.
    pub pc: u32,
    /// Absolute register receiving the error value.
    pub reg: u32,
}

/// A process. Everything here except `linked` is its state; `linked` is a node-local
/// cache of code derived from the module hashes (never part of an image).
#[derive(Debug, Clone)]
pub struct Process {
    pub pid: u64,
    pub frames: Vec<Frame>,
    pub regs: Vec<Value>,
    pub heap: Heap,
    pub globals: Vec<Value>,
    pub modules: Vec<ModuleInstance>,
    pub handlers: Vec<Handler>,
    pub reductions: u64,
    pub rng: u64,
    pub max_frames: u32,
    pub linked: Vec<Arc<LinkedModule>>,
}

/// Why a process could not be created or a module linked into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    MissingModule(ModuleHash),
    TooManyGlobals,
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::MissingModule(h) => write!(f, "module {h} is not loaded on this node"),
            LinkError::TooManyGlobals => write!(f, "too many module globals"),
        }
    }
}

impl Process {
    /// A process that will run the top level of module `main`.
    pub fn new(pid: u64, main: ModuleHash, vm: &Vm) -> Result<Process, LinkError> {
        let mut p = Process {
            pid,
            frames: Vec::new(),
            regs: Vec::new(),
            heap: Heap::new(vm.config.heap),
            globals: Vec::new(),
            modules: Vec::new(),
            handlers: Vec::new(),
            reductions: 0,
            rng: 0x853c_49e6_748f_ea9b ^ pid,
            max_frames: vm.config.max_frames,
            linked: Vec::new(),
        };
        let slot = p.link(main, vm)?;
        p.modules[slot as usize].state = ModuleState::Running;
        let nregs = usize::from(p.linked[slot as usize].module.functions[0].nregs);
        p.regs.resize(nregs.max(1), Value::Nil);
        p.frames.push(Frame { module: slot, func: 0, pc: 0, base: 0, ret: 0, closure: 0, init_of: slot });
        Ok(p)
    }

    /// The slot of module `hash` in this process, adding it (with fresh globals) if new.
    pub fn link(&mut self, hash: ModuleHash, vm: &Vm) -> Result<u32, LinkError> {
        if let Some(i) = self.modules.iter().position(|m| m.hash == hash) {
            return Ok(i as u32);
        }
        let lm = vm.module(&hash).ok_or(LinkError::MissingModule(hash))?.clone();
        let n = lm.module.globals.len();
        if self.globals.len() + n > u32::MAX as usize / 2 {
            return Err(LinkError::TooManyGlobals);
        }
        let base = self.globals.len() as u32;
        self.globals.resize(self.globals.len() + n, Value::Nil);
        self.modules.push(ModuleInstance {
            hash,
            globals_base: base,
            globals_len: n as u32,
            state: ModuleState::NotRun,
            strs: vec![0; lm.module.consts.len()],
        });
        self.linked.push(lm);
        Ok(self.modules.len() as u32 - 1)
    }

    /// Rebuilds the code cache from the module hashes (after a restore).
    pub fn relink(&mut self, vm: &Vm) -> Result<(), LinkError> {
        self.linked.clear();
        for m in &self.modules {
            self.linked.push(vm.module(&m.hash).ok_or(LinkError::MissingModule(m.hash))?.clone());
        }
        Ok(())
    }

    /// The number of registers in use: the highest register of any frame. (A caller's
    /// registers can reach above its callee's, so the top frame alone does not tell.)
    pub fn regs_top(&self) -> usize {
        let top = self
            .frames
            .iter()
            .map(|f| {
                let nregs = self
                    .linked
                    .get(f.module as usize)
                    .and_then(|m| m.module.functions.get(f.func as usize))
                    .map_or(0, |func| usize::from(func.nregs));
                f.base as usize + nregs
            })
            .max()
            .unwrap_or(0);
        top.min(self.regs.len())
    }

    /// Every value the process holds outside its heap: the collector's roots.
    pub fn roots(&self) -> Vec<Value> {
        let mut roots: Vec<Value> = self.regs[..self.regs_top()].to_vec();
        roots.extend_from_slice(&self.globals);
        for f in &self.frames {
            if f.closure != 0 {
                roots.push(Value::Closure(f.closure));
            }
        }
        for m in &self.modules {
            if let ModuleState::Ready(v) = m.state {
                roots.push(v);
            }
            roots.extend(m.strs.iter().filter(|&&a| a != 0).map(|&a| Value::Str(a)));
        }
        roots
    }

    /// Collects garbage now (at a safepoint).
    pub fn collect_garbage(&mut self) -> Result<(), crate::heap::HeapError> {
        let roots = self.roots();
        self.heap.collect(roots)
    }

    /// The name of a function, for messages and printing.
    pub fn fn_name(&self, f: FnRef) -> String {
        fn_name(&self.linked, f)
    }
}

pub fn fn_name(linked: &[Arc<LinkedModule>], f: FnRef) -> String {
    linked
        .get(f.module as usize)
        .and_then(|m| m.module.functions.get(f.func as usize))
        .map_or_else(|| "?".to_string(), |func| func.name.clone())
}
