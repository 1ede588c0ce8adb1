//! What a process runs against: the node's code store, its table of native functions,
//! and the [`Host`] through which the VM reaches the outside world.
//!
//! Code is immutable and content-addressed: a module is stored under the blake3 hash of
//! its encoding, verified once when it is added, and shared by every process.

use crate::bytecode::{Const, Module, ModuleHash};
use crate::heap::{Heap, HeapError};
use crate::value::Value;
use crate::verify::{verify, VerifyError};
use std::collections::HashMap;
use std::sync::Arc;

/// The VM's link to its host: console output and clocks. The VM knows nothing of
/// terminals, sockets or files; the host decides where output goes.
pub trait Host {
    /// Writes console output of the running process.
    fn console_write(&mut self, text: &str);
    /// Monotonic time in microseconds.
    fn mono_us(&self) -> u64;
    /// Wall-clock time in milliseconds since the Unix epoch.
    fn wall_ms(&self) -> u64;
    /// The console's input, line by line (`None`: its end), asked for once, when a
    /// program first reads it (`read_line()`); `None`: there is none.
    fn console_input(&mut self) -> Option<std::sync::mpsc::Receiver<Option<String>>> {
        None
    }
}

/// An error raised while running Tern code.
#[derive(Debug, Clone, PartialEq)]
pub enum Exn {
    /// A heap access that could not complete (page fault, heap limit, damage).
    Heap(HeapError),
    /// A runtime error with its message; a handler receives the message as a string.
    Error(String),
    /// A value raised by `error(v)`.
    Raise(Value),
    /// A system call: the native must be carried out by the node running the process
    /// (see [`crate::interp::Outcome::Sys`]).
    Sys,
}

impl From<HeapError> for Exn {
    fn from(e: HeapError) -> Self {
        Exn::Heap(e)
    }
}

impl Exn {
    pub fn msg(m: impl Into<String>) -> Exn {
        Exn::Error(m.into())
    }
}

/// What a native function can touch: the process's heap and random state, the host,
/// and the linked code (to name functions when printing them).
pub struct NativeCtx<'a> {
    pub heap: &'a mut Heap,
    pub host: &'a mut dyn Host,
    pub rng: &'a mut u64,
    pub linked: &'a [Arc<LinkedModule>],
}

pub type NativeFn = fn(&mut NativeCtx<'_>, &[Value]) -> Result<Value, Exn>;

/// The body of every system-call native: it stops the interpreter at the call so that
/// the node can carry it out with the whole process and node at hand.
pub fn sys_trap(_: &mut NativeCtx<'_>, _: &[Value]) -> Result<Value, Exn> {
    Err(Exn::Sys)
}

/// A native function and the argument counts it accepts.
#[derive(Clone, Copy)]
pub struct NativeDef {
    pub name: &'static str,
    pub min_args: u8,
    /// `u8::MAX`: any number.
    pub max_args: u8,
    pub f: NativeFn,
}

/// The node's table of native functions. Modules name natives; the table maps names
/// to indices when a module is loaded.
#[derive(Default, Clone)]
pub struct Natives {
    defs: Vec<NativeDef>,
    by_name: HashMap<&'static str, u32>,
}

impl Natives {
    pub fn new() -> Natives {
        Natives::default()
    }

    /// Adds natives; a later definition of the same name replaces the earlier one.
    pub fn register(&mut self, defs: &[NativeDef]) {
        for d in defs {
            match self.by_name.get(d.name) {
                Some(&i) => self.defs[i as usize] = *d,
                None => {
                    self.by_name.insert(d.name, self.defs.len() as u32);
                    self.defs.push(*d);
                }
            }
        }
    }

    pub fn lookup(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, id: u32) -> Option<&NativeDef> {
        self.defs.get(id as usize)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.defs.iter().map(|d| d.name).collect()
    }
}

/// A verified module with its natives resolved against this node's table.
#[derive(Debug)]
pub struct LinkedModule {
    pub hash: ModuleHash,
    pub module: Module,
    /// For each constant: the native's index when it is `Const::Native`.
    pub native_ids: Vec<u32>,
    /// For each constant: its value when it is a number (else nil), for the `...K`
    /// arithmetic instructions.
    pub numbers: Vec<Value>,
    /// For each function: the module globals it reads or writes, and the functions of
    /// this module it makes closures of (what a spawned process needs copied).
    pub footprints: Vec<Footprint>,
    /// For each function: its hotness and compiled code on this node (`crate::jit`).
    pub jit: Vec<crate::jit::JitSlot>,
}

/// What a function can reach directly (see [`LinkedModule::footprints`]).
#[derive(Debug, Default)]
pub struct Footprint {
    pub globals: Vec<u32>,
    pub funcs: Vec<u32>,
}

fn footprint(f: &crate::bytecode::Function) -> Footprint {
    let mut fp = Footprint::default();
    for op in &f.code {
        match *op {
            crate::bytecode::Op::GetGlobal { g, .. } | crate::bytecode::Op::SetGlobal { g, .. } => fp.globals.push(g),
            crate::bytecode::Op::Closure { f, .. } => fp.funcs.push(f),
            _ => {}
        }
    }
    fp.globals.sort_unstable();
    fp.globals.dedup();
    fp.funcs.sort_unstable();
    fp.funcs.dedup();
    fp
}

/// Why a module could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    Verify(VerifyError),
    UnknownNative(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Verify(e) => e.fmt(f),
            LoadError::UnknownNative(n) => write!(f, "module uses native function `{n}`, which this node does not have"),
        }
    }
}

impl std::error::Error for LoadError {}

/// The node's code: modules by hash, and its natives.
#[derive(Default)]
pub struct Vm {
    /// Modules can arrive while the node runs (from other nodes, from a REPL).
    modules: parking_lot::RwLock<HashMap<ModuleHash, Arc<LinkedModule>>>,
    pub natives: Natives,
    pub config: VmConfig,
    /// The node's compiler, when `config.jit` is not `Off` (see `crate::jit`).
    pub jit: Option<Arc<dyn crate::jit::Compiler>>,
}

/// Per-process limits and scheduling settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmConfig {
    pub heap: crate::heap::HeapConfig,
    /// Call-depth limit.
    pub max_frames: u32,
    /// Reductions a process runs before it yields.
    pub budget: u32,
    /// When functions are compiled (with a compiler set: [`Vm::jit`]).
    pub jit: crate::jit::JitMode,
    /// Calls and loop back edges that make a function hot (`JitMode::On`).
    pub jit_threshold: u32,
    /// The size limit of the node's code cache, bytes of machine code (see `crate::jit`).
    pub jit_cache_bytes: u64,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            heap: Default::default(),
            max_frames: 10_000,
            budget: 4000,
            jit: Default::default(),
            jit_threshold: 1000,
            jit_cache_bytes: crate::jit::DEFAULT_CODE_LIMIT,
        }
    }
}

impl Vm {
    pub fn new(natives: Natives, config: VmConfig) -> Vm {
        Vm { modules: Default::default(), natives, config, jit: None }
    }

    /// Verifies and adds a module; returns its hash. Adding a module twice is cheap.
    pub fn load(&self, module: Module) -> Result<ModuleHash, LoadError> {
        let hash = module.hash();
        if self.modules.read().contains_key(&hash) {
            return Ok(hash);
        }
        verify(&module).map_err(LoadError::Verify)?;
        let mut native_ids = Vec::with_capacity(module.consts.len());
        for c in &module.consts {
            native_ids.push(match c {
                Const::Native(n) => self.natives.lookup(n).ok_or_else(|| LoadError::UnknownNative(n.clone()))?,
                _ => u32::MAX,
            });
        }
        let numbers = module
            .consts
            .iter()
            .map(|c| match c {
                Const::Int(i) => Value::Int(*i),
                Const::Float(f) => Value::Float(*f),
                _ => Value::Nil,
            })
            .collect();
        let footprints = module.functions.iter().map(footprint).collect();
        let jit = module.functions.iter().map(|f| crate::jit::JitSlot::new(f.nregs, f.arity)).collect();
        self.modules.write().entry(hash).or_insert_with(|| Arc::new(LinkedModule { hash, module, native_ids, numbers, footprints, jit }));
        Ok(hash)
    }

    pub fn module(&self, hash: &ModuleHash) -> Option<Arc<LinkedModule>> {
        self.modules.read().get(hash).cloned()
    }

    pub fn has_module(&self, hash: &ModuleHash) -> bool {
        self.modules.read().contains_key(hash)
    }

    /// The hashes of every module this node has.
    pub fn module_hashes(&self) -> Vec<ModuleHash> {
        self.modules.read().keys().copied().collect()
    }
}
