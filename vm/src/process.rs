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

/// One activation of a Tern function. Laid out as C: compiled code pushes and pops
/// frames ([`frame_layout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C)]
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

/// Offsets in a [`Frame`], for compiled code.
pub mod frame_layout {
    pub const SIZE: i32 = std::mem::size_of::<super::Frame>() as i32;
    pub const MODULE: i32 = 0;
    pub const FUNC: i32 = 4;
    pub const PC: i32 = 8;
    pub const BASE: i32 = 12;
    pub const RET: i32 = 16;
    pub const CLOSURE: i32 = 20;
    pub const INIT_OF: i32 = 24;

    #[cfg(test)]
    #[test]
    fn the_layout_compiled_code_relies_on() {
        use super::Frame;
        use std::mem::offset_of;
        assert_eq!(SIZE, 28);
        assert_eq!(
            [MODULE, FUNC, PC, BASE, RET, CLOSURE, INIT_OF].map(|o| o as usize),
            [
                offset_of!(Frame, module),
                offset_of!(Frame, func),
                offset_of!(Frame, pc),
                offset_of!(Frame, base),
                offset_of!(Frame, ret),
                offset_of!(Frame, closure),
                offset_of!(Frame, init_of)
            ]
        );
    }
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

/// How a file was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileMode {
    /// `"r"`: read from the start.
    Read,
    /// `"w"`: created or truncated, then written.
    Write,
    /// `"a"`: created if missing; every write goes to the end.
    Append,
    /// `"r+"`: read and write an existing file.
    ReadWrite,
}

impl FileMode {
    pub fn parse(s: &str) -> Option<FileMode> {
        Some(match s {
            "r" => FileMode::Read,
            "w" => FileMode::Write,
            "a" => FileMode::Append,
            "r+" => FileMode::ReadWrite,
            _ => return None,
        })
    }
    pub fn can_read(self) -> bool {
        matches!(self, FileMode::Read | FileMode::ReadWrite)
    }
    pub fn can_write(self) -> bool {
        !matches!(self, FileMode::Read)
    }
}

/// An open file in a process's resource table: by name, so that it can be reopened
/// wherever the process goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFile {
    /// The name the program opened, relative to the node's file root.
    pub name: String,
    pub mode: FileMode,
    pub offset: u64,
}

/// The outcome of a file operation, kept until the call that asked for it runs again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoResult {
    /// Open succeeded.
    Opened,
    /// Bytes read (empty at the end of the file), and the new offset.
    Read { data: Vec<u8>, offset: u64 },
    /// Bytes written, and the new offset.
    Wrote { count: u64, offset: u64 },
    /// The operation failed with this message.
    Failed(String),
    /// A process was started on another node, with this pid.
    Spawned(u64),
    /// A migration asked for with `migrate(pid, node)` finished: the process is on this node.
    Migrated(String),
    /// Line `k` of the process's console input (`None`: the input ended).
    ConsoleLine { k: u64, line: Option<String> },
    /// `spawn_on` with a list of nodes: the children's pids in the list's order (`None`
    /// where the node went down before it answered).
    SpawnedAll(Vec<Option<u64>>),
    /// A REPL's shell process is to run this module's top level next.
    ShellEval(ModuleHash),
}

/// A module of a [`SpawnSpec`]: which, where its globals start, and whether its top
/// level is still running in the parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecModule {
    pub hash: ModuleHash,
    pub globals_base: u32,
    pub running: bool,
}

/// A spawn on another node: see [`Process::spawn_spec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpawnSpec {
    pub modules: Vec<SpecModule>,
    pub rng: u64,
    pub max_frames: u32,
    pub console: u64,
    /// The child's home node: its parent's.
    pub home: u16,
    pub call: crate::message::Message,
    pub env_globals: Vec<u32>,
    pub env: crate::message::Message,
}

impl SpawnSpec {
    /// Every module the child needs: its table and the messages' functions.
    pub fn needs(&self) -> Vec<ModuleHash> {
        let mut out: Vec<ModuleHash> = self.modules.iter().map(|m| m.hash).collect();
        for h in self.call.modules().into_iter().chain(self.env.modules()) {
            if !out.contains(&h) {
                out.push(h);
            }
        }
        out
    }
}

/// The process's system state: what its blocking calls and resources need. Plain data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcSys {
    /// When the blocking call in progress times out (node monotonic µs), if it has a
    /// timeout. Set by the first attempt of the call and kept while it is re-issued.
    pub deadline_us: Option<u64>,
    /// The result of a file operation finished while the process waited for it. (Out
    /// of line: most processes never have one, and every process carries the field.)
    pub io_result: Option<Box<IoResult>>,
    /// The resource table: open files by handle number.
    pub files: Vec<Option<OpenFile>>,
    /// Exits of linked processes arrive as messages instead of ending this one.
    pub trap_exits: bool,
    /// Where the process's console output goes: the console (a REPL or `tern ctl`
    /// session, named like a pid: node + serial) it was started from, inherited by every
    /// process it spawns, wherever they run; 0 for the log of the node it was spawned on.
    pub console: u64,
    /// Its clock (`mono_ms`) is its node's plus this: set when it arrives on a node, so
    /// that the clock goes on from where it was instead of jumping to another node's.
    pub clock_offset_us: i64,
    /// Its home node (Sprite's home node): where its location-dependent calls run
    /// wherever it is — relative file names resolve in that node's file root. The node
    /// it was started on, or its parent's home; 0: the node its pid was born on.
    pub home: u16,
    /// Location-dependent calls it made while away from its home node (each a round
    /// trip there: the home's price).
    pub home_calls: u64,
    /// Its coprocess group (a [`crate::value::Value::Group`]'s name), 0 for none: the
    /// members of a group live on one node and migrate together.
    pub group: u64,
    /// Lines of console input it has read (`read_line()`): the number of the next.
    pub console_reads: u64,
    /// The load policy leaves it where it is (`pin()`, `spawn(f, {pin: true})`); an
    /// operator or the program itself may still move it.
    pub pinned: bool,
    /// It is a REPL's shell process (`crate::node::Node::spawn_shell`): it runs each
    /// line typed as a module's top level, and stays on its node.
    pub shell: bool,
}

impl ProcSys {
    /// Takes the result of the finished operation the process waited for.
    pub fn take_io(&mut self) -> Option<IoResult> {
        self.io_result.take().map(|r| *r)
    }

    /// Leaves `r` for the process's call, which runs again to take it.
    pub fn set_io(&mut self, r: IoResult) {
        self.io_result = Some(Box::new(r));
    }
}

/// A process. Everything here except `linked` and `jit_rest` is its state: `linked` is a
/// node-local cache of code derived from the module hashes and `jit_rest` a hint for this
/// node's interpreter (neither is part of an image).
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
    pub sys: ProcSys,
    pub linked: Vec<Arc<LinkedModule>>,
    pub jit_rest: JitRest,
}

/// Whether entering compiled code pays for this process now. Entering and leaving costs
/// more than the interpreter does for a few instructions, and a loop that makes a
/// system call (`recv`, `send`) on every turn leaves its compiled code at each one: a
/// process whose last [`JitRest::SHORT_RUNS`] entries each ran no more than a turn of
/// a loop is interpreted for the next [`JitRest::REST`] reductions, then tried again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitRest {
    /// Entries in a row that left after at most [`JitRest::SHORT_FUEL`] back edges and calls.
    short: u8,
    resting: bool,
    /// The low 32 bits of its reductions count when it began to rest (kept small: this
    /// is in every process).
    since: u32,
}

impl JitRest {
    /// Entries in a row that must each be short before the process rests.
    pub const SHORT_RUNS: u8 = 4;
    /// At most this much fuel (back edges and calls) makes an entry short.
    pub const SHORT_FUEL: i64 = 2;
    /// Reductions a resting process runs interpreted.
    pub const REST: u32 = 200_000;

    /// Whether compiled code may be entered at `reductions`. (Counted modulo 2^32: a
    /// process interpreted for 2^32 reductions since it began to rest may rest once
    /// more, which costs nothing but speed.)
    #[inline]
    pub fn entering(&self, reductions: u64) -> bool {
        !self.resting || (reductions as u32).wrapping_sub(self.since) >= Self::REST
    }

    /// Compiled code ran `used` fuel and left; the process is at `reductions`.
    pub fn ran(&mut self, used: i64, reductions: u64) {
        self.resting = false;
        if used > Self::SHORT_FUEL {
            self.short = 0;
            return;
        }
        self.short += 1;
        if self.short >= Self::SHORT_RUNS {
            self.short = 0;
            self.resting = true;
            self.since = reductions as u32;
        }
    }
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
            sys: ProcSys::default(),
            linked: Vec::new(),
            jit_rest: JitRest::default(),
        };
        let slot = p.link(main, vm)?;
        p.modules[slot as usize].state = ModuleState::Running;
        let nregs = usize::from(p.linked[slot as usize].module.functions[0].nregs);
        p.regs.resize(nregs.max(1), Value::Nil);
        p.frames.push(Frame { module: slot, func: 0, pc: 0, base: 0, ret: 0, closure: 0, init_of: slot });
        Ok(p)
    }

    /// Its home node ([`ProcSys::home`]).
    pub fn home(&self) -> u16 {
        if self.sys.home != 0 {
            self.sys.home
        } else {
            crate::value::name_node(self.pid)
        }
    }

    /// What another node needs to start `callee(args...)` as a child of this process
    /// (`call`, `env_globals` and `env` as for [`Process::spawn`]): the module table by
    /// hash, and the messages. Plain data, for the wire.
    pub fn spawn_spec(&self, call: crate::message::Message, env_globals: Vec<u32>, env: crate::message::Message) -> SpawnSpec {
        SpawnSpec {
            modules: self
                .modules
                .iter()
                .map(|m| SpecModule { hash: m.hash, globals_base: m.globals_base, running: m.state == ModuleState::Running })
                .collect(),
            rng: self.rng,
            max_frames: self.max_frames,
            console: self.sys.console,
            home: self.home(),
            call,
            env_globals,
            env,
        }
    }

    /// The globals a process started with `roots` (a function and its arguments) can
    /// reach: those its functions read or write, through the functions those globals
    /// hold, the closures they make, the functions closures have captured, and the
    /// functions in maps reached (module exports). Sorted.
    pub fn reachable_globals(&self, roots: &[Value]) -> Vec<u32> {
        let mut marked = vec![false; self.globals.len()];
        let mut seen: Vec<FnRef> = Vec::new();
        let mut stack: Vec<FnRef> = Vec::new();
        let heap = &self.heap;
        let mut todo: Vec<(Value, u32)> = Vec::new();
        let mut push = |v: Value, stack: &mut Vec<FnRef>, depth: u32| {
            todo.push((v, depth));
            while let Some((v, d)) = todo.pop() {
                match v {
                    Value::Func(f) => stack.push(f),
                    Value::Closure(c) => {
                        if let Ok(f) = crate::object::closure_fn(heap, c) {
                            stack.push(f);
                        }
                        let n = crate::object::closure_box_count(heap, c).unwrap_or(0);
                        for i in 0..n {
                            if let Ok(b) = crate::object::closure_box(heap, c, i).and_then(|b| crate::object::box_get(heap, b)) {
                                if d > 0 {
                                    todo.push((b, d - 1));
                                }
                            }
                        }
                    }
                    Value::Map(m) if d > 0 => {
                        for (_, x) in crate::object::map_entries(heap, m).unwrap_or_default() {
                            todo.push((x, d - 1));
                        }
                    }
                    _ => {}
                }
            }
        };
        for &r in roots {
            push(r, &mut stack, 4);
        }
        while let Some(f) = stack.pop() {
            if seen.contains(&f) {
                continue;
            }
            seen.push(f);
            let (Some(lm), Some(m)) = (self.linked.get(f.module as usize), self.modules.get(f.module as usize)) else { continue };
            let Some(fp) = lm.footprints.get(f.func as usize) else { continue };
            for &g in &fp.globals {
                let i = (m.globals_base + g) as usize;
                if i < marked.len() && !marked[i] {
                    marked[i] = true;
                    push(self.globals[i], &mut stack, 4);
                }
            }
            stack.extend(fp.funcs.iter().map(|&func| FnRef { module: f.module, func }));
        }
        marked.iter().enumerate().filter(|(_, &m)| m).map(|(i, _)| i as u32).collect()
    }

    /// The slot of module `hash` in this process, adding it (with fresh globals) if new.
    pub fn link(&mut self, hash: ModuleHash, vm: &Vm) -> Result<u32, LinkError> {
        if let Some(i) = self.modules.iter().position(|m| m.hash == hash) {
            return Ok(i as u32);
        }
        let lm = vm.module(&hash).ok_or(LinkError::MissingModule(hash))?;
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
            self.linked.push(vm.module(&m.hash).ok_or(LinkError::MissingModule(m.hash))?);
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

    /// Collects garbage now (at a safepoint). Not while a page is absent: that is
    /// `Err(Fault(page))`, and the collection waits until every page is here.
    pub fn collect_garbage(&mut self) -> Result<(), crate::heap::HeapError> {
        if let Some(p) = self.heap.first_absent() {
            self.heap.gc_wanted = false;
            return Err(crate::heap::HeapError::Fault(p));
        }
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

#[cfg(test)]
mod jit_rest_tests {
    use super::JitRest;

    #[test]
    fn short_entries_in_a_row_rest_the_process_and_a_long_one_does_not() {
        let mut r = JitRest::default();
        assert!(r.entering(0));
        // Short, short, long: the count starts again.
        r.ran(1, 10);
        r.ran(JitRest::SHORT_FUEL, 20);
        r.ran(JitRest::SHORT_FUEL + 1, 30);
        for i in 1..JitRest::SHORT_RUNS {
            r.ran(0, 30 + u64::from(i));
            assert!(r.entering(30 + u64::from(i)), "rested after {i} short entries");
        }
        r.ran(0, 1_000);
        assert!(!r.entering(1_000));
        assert!(!r.entering(1_000 + u64::from(JitRest::REST) - 1));
        // Rested long enough: tried again, and it takes as many short entries again.
        let later = 1_000 + u64::from(JitRest::REST);
        assert!(r.entering(later));
        r.ran(0, later);
        assert!(r.entering(later + 1));
        // Past 2^32 reductions too.
        let mut r = JitRest::default();
        let big = (1u64 << 32) - 10;
        for _ in 0..JitRest::SHORT_RUNS {
            r.ran(0, big);
        }
        assert!(!r.entering(big + 100));
        assert!(r.entering(big + u64::from(JitRest::REST)));
    }

    /// Every process carries these: the JIT hint a word, no more, and the process
    /// 456 bytes (576 while a file operation's result was inline, 536 while its heap's
    /// free lists and collector figures were: the heap is 176 bytes).
    #[test]
    fn a_process_stays_small() {
        assert!(std::mem::size_of::<JitRest>() <= 8);
        assert!(std::mem::size_of::<super::Process>() <= 456, "{} bytes", std::mem::size_of::<super::Process>());
        assert!(std::mem::size_of::<crate::heap::Heap>() <= 176, "{} bytes", std::mem::size_of::<crate::heap::Heap>());
    }
}
