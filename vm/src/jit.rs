//! The contract between the interpreter and compiled code (the compiler itself is the
//! `tern-jit` crate; the VM knows only this).
//!
//! Compiled code is never part of a process: it is a node-local cache keyed by the
//! module's hash and the function's index ([`LinkedModule::jit`]), filled by a
//! [`Compiler`]. The interpreter enters it at a function's first instruction when it
//! calls it and at loop back edges (on-stack entry: the frame layout is the same, so
//! entering is a jump to the block of that pc). Compiled code reads and writes the
//! frames' registers, its module's globals, the frame stack (calls and returns pushed
//! and popped in place) and array elements, all in the interpreter's own layout, and
//! reaches everything else through [`Helpers`], which run the interpreter's own code.
//! Whatever the runtime must see (an error, a page fault, a system call, a collection
//! due, the time slice's fuel gone) makes it leave with every frame's pc saved
//! ([`LEFT_AT`], [`LEFT`]). So at every safepoint every live value is in the frames and
//! every resume point is a bytecode pc: an image never holds a machine address.
//!
//! The cache has a size limit ([`DEFAULT_CODE_LIMIT`], `VmConfig::jit_cache_bytes`): the
//! compiler evicts code to stay under it, unpublishing it from its slots
//! ([`JitSlot::reset`]), so a function's code may disappear at any time between two
//! reads of its slot. Whoever runs compiled code holds a `crossbeam_epoch` pin from
//! before it reads a slot until the code has returned (the interpreter: for a whole time
//! slice, [`crate::run`]), and the compiler frees evicted code only once every worker
//! pinned at the eviction has unpinned.

use crate::runtime::LinkedModule;
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
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

/// What compiled code is given and gives back: one per entry from the interpreter,
/// shared by the compiled functions it calls.
#[repr(C)]
#[derive(Debug)]
pub struct JitCtx {
    /// Register 0 of the running frame (re-read after every runtime call: the register
    /// stack may have moved).
    pub regs: *mut Value,
    /// Global 0 of the running function's module.
    pub globals: *mut Value,
    /// In: the instruction to start at. Out ([`LEFT_AT`]): the next one for the
    /// interpreter, in the frame on top.
    pub pc: u32,
    /// Compiled activations on the machine stack (bounded by [`MAX_DEPTH`]).
    pub depth: u32,
    /// The time slice left (reductions); a back edge and a call take one.
    pub fuel: i64,
    /// The runtime's own state (the process, the node), opaque to compiled code.
    pub rt: *mut std::ffi::c_void,
    /// The process's frames: compiled code pushes and pops them in place while it runs
    /// (`frames[..nframes]` are the frames; the runtime sets the `Vec`'s length from it).
    pub frames: *mut crate::process::Frame,
    pub nframes: u32,
    /// Compiled code pushes a frame only below this (the `Vec`'s capacity, and the
    /// process's frame limit); else the runtime does it.
    pub frames_end: u32,
    /// The running frame's `base` (its register 0 in the register stack).
    pub base: u32,
    /// The register stack's length.
    pub regs_len: u32,
    /// The frame index of the innermost `try` (-1: none): a return from a deeper frame
    /// drops none.
    pub handler_top: i32,
    /// Out of [`Helpers::access`] for a field: the map entry where it found the field
    /// (`u32::MAX`: none), which compiled code keeps at the instruction to look there
    /// first next time (an inline cache).
    pub entry: u32,
    /// The process's heap, for array elements read and written in place
    /// (`crate::heap::Heap::raw_view`; re-read after every runtime call).
    pub heap_words: *mut u64,
    pub heap_len: u64,
    pub heap_dirty: *mut u8,
    pub page_shift: u32,
    /// Pages not here (a lazy migration): compiled code leaves heap access to the runtime.
    pub absent_pages: u32,
    /// The heap strings of the running frame's module's constants (0: not made yet), for
    /// a field's name.
    pub strs: *const crate::value::Addr,
}

/// `JitCtx::pc` for a call from compiled code: the callee sets its registers beyond the
/// arguments to nil, then starts at instruction 0.
pub const CALL_ENTRY: u32 = u32::MAX - 1;

/// Compiled code of one function: returns [`LEFT_AT`], [`RETURNED`] or [`LEFT`].
pub type JitFn = unsafe extern "C" fn(*mut JitCtx) -> u32;

/// The compiled code stopped; the interpreter goes on at `JitCtx::pc` in the frame on top.
pub const LEFT_AT: u32 = 0;
/// The function returned: its frame is popped and the caller's registers are in `JitCtx`.
pub const RETURNED: u32 = 1;
/// The runtime took over (a call into code not compiled, an error, the end of the time
/// slice, a collection due): the frames say where everything is.
pub const LEFT: u32 = 2;

/// Compiled activations nested on a worker's machine stack at most: a deeper call
/// leaves for the interpreter (whose frames are plain data), so deep Tern recursion
/// never overflows a machine stack.
pub const MAX_DEPTH: u32 = 200;

/// Offsets in [`JitCtx`], for the code generator.
pub mod ctx_layout {
    pub const REGS: i32 = 0;
    pub const GLOBALS: i32 = 8;
    pub const PC: i32 = 16;
    pub const DEPTH: i32 = 20;
    pub const FUEL: i32 = 24;
    pub const RT: i32 = 32;
    pub const FRAMES: i32 = 40;
    pub const NFRAMES: i32 = 48;
    pub const FRAMES_END: i32 = 52;
    pub const BASE: i32 = 56;
    pub const REGS_LEN: i32 = 60;
    pub const HANDLER_TOP: i32 = 64;
    pub const HEAP_WORDS: i32 = 72;
    pub const HEAP_LEN: i32 = 80;
    pub const HEAP_DIRTY: i32 = 88;
    pub const PAGE_SHIFT: i32 = 96;
    pub const ABSENT_PAGES: i32 = 100;
    pub const ENTRY: i32 = 68;
    pub const STRS: i32 = 104;

    #[cfg(test)]
    #[test]
    fn the_layout_compiled_code_relies_on() {
        use super::JitCtx;
        use std::mem::offset_of;
        assert_eq!(
            [
                REGS,
                GLOBALS,
                PC,
                DEPTH,
                FUEL,
                RT,
                FRAMES,
                NFRAMES,
                FRAMES_END,
                BASE,
                REGS_LEN,
                HANDLER_TOP,
                HEAP_WORDS,
                HEAP_LEN,
                HEAP_DIRTY,
                PAGE_SHIFT,
                ABSENT_PAGES,
                ENTRY,
                STRS
            ]
            .map(|o| o as usize),
            [
                offset_of!(JitCtx, regs),
                offset_of!(JitCtx, globals),
                offset_of!(JitCtx, pc),
                offset_of!(JitCtx, depth),
                offset_of!(JitCtx, fuel),
                offset_of!(JitCtx, rt),
                offset_of!(JitCtx, frames),
                offset_of!(JitCtx, nframes),
                offset_of!(JitCtx, frames_end),
                offset_of!(JitCtx, base),
                offset_of!(JitCtx, regs_len),
                offset_of!(JitCtx, handler_top),
                offset_of!(JitCtx, heap_words),
                offset_of!(JitCtx, heap_len),
                offset_of!(JitCtx, heap_dirty),
                offset_of!(JitCtx, page_shift),
                offset_of!(JitCtx, absent_pages),
                offset_of!(JitCtx, entry),
                offset_of!(JitCtx, strs)
            ]
        );
    }
}

/// Offsets in a [`JitSlot`]: compiled code calls a function of its own module through
/// the module's slots (`LinkedModule::jit`).
pub mod slot_layout {
    pub const SIZE: i32 = std::mem::size_of::<super::JitSlot>() as i32;
    /// The compiled code's address (0 until compiled).
    pub const CODE: i32 = 0;
    /// The function's register count (u16) and arity (u8).
    pub const NREGS: i32 = 8;
    pub const ARITY: i32 = 10;

    #[cfg(test)]
    #[test]
    fn the_layout_compiled_code_relies_on() {
        use super::JitSlot;
        use std::mem::offset_of;
        assert_eq!(
            [CODE, NREGS, ARITY].map(|o| o as usize),
            [offset_of!(JitSlot, addr), offset_of!(JitSlot, nregs), offset_of!(JitSlot, arity)]
        );
    }
}

/// The runtime's entry points for compiled code (`crate::interp` implements them with
/// the interpreter's own code). Every one takes the context and the instruction's pc;
/// afterwards `regs`, `globals` and `fuel` are re-read from the context.
#[derive(Debug, Clone, Copy)]
pub struct Helpers {
    /// Runs instruction `pc` exactly as the interpreter does. Returns the next
    /// instruction of the same frame, or `u32::MAX` when compiled code must return
    /// [`LEFT`] (another frame runs now, an error was raised, the slice is over).
    pub step: unsafe extern "C" fn(*mut JitCtx, u32) -> u32,
    /// `Call` at `pc`: 0 to return [`LEFT`]; 1 when it is done (a native ran) and the
    /// code goes on at `pc + 1`; otherwise the address of the callee's compiled code,
    /// to be called with the same context (its frame is pushed, `JitCtx::pc` is 0).
    pub call: unsafe extern "C" fn(*mut JitCtx, u32) -> usize,
    /// `Return`/`ReturnNil` at `pc`: [`RETURNED`] (the caller's registers are in the
    /// context) or [`LEFT`].
    pub ret: unsafe extern "C" fn(*mut JitCtx, u32) -> u32,
    /// `GetIndex`, `SetIndex`, `GetField` or `SetField` ([`ACCESS_GET_INDEX`]...) at `pc`,
    /// with its operands `a, b, c` (`k` for a field's name): returns as `step` does.
    pub access: unsafe extern "C" fn(*mut JitCtx, u32, u32, u32, u32, u32) -> u32,
}

/// `Helpers::access`'s kinds of instruction.
pub const ACCESS_GET_INDEX: u32 = 0;
pub const ACCESS_SET_INDEX: u32 = 1;
pub const ACCESS_GET_FIELD: u32 = 2;
pub const ACCESS_SET_FIELD: u32 = 3;

/// Per function of a linked module: how hot it is and its code, while compiled.
///
/// Code comes and goes: the compiler publishes it ([`JitSlot::set_code`]) and, when it
/// evicts the generation of the code cache that holds it, unpublishes it
/// ([`JitSlot::reset`]): the function is interpreted again, counts toward hotness from
/// zero, and is compiled again if it turns hot again. Code unpublished may still be
/// running (the interpreter or compiled code read its address just before), so the
/// compiler frees it only once no worker can be using it: the interpreter holds a
/// `crossbeam_epoch` pin while it may run compiled code (a time slice, [`crate::run`]).
#[derive(Debug)]
#[repr(C)]
pub struct JitSlot {
    /// The code's address while compiled (0: not compiled, or evicted), for calls from
    /// compiled code and for the interpreter.
    addr: AtomicUsize,
    nregs: u16,
    arity: u8,
    count: AtomicU32,
    /// 0: not asked for; 1: asked for (being compiled, or compiled); 2: failed or not
    /// worth it (interpreted for good).
    state: AtomicU8,
    /// When its code was ready ([`clock_us`]; 0 while not compiled).
    compiled_at: AtomicU64,
    /// A bit per instruction: whether entering the code there is worth it (the compiled
    /// code would run a whole loop, not leave at once). It depends only on the bytecode:
    /// set at the first compilation, kept across evictions.
    entries: OnceLock<Box<[u64]>>,
}

impl JitSlot {
    /// The slot of a function with `nregs` registers and `arity` parameters.
    pub fn new(nregs: u16, arity: u8) -> JitSlot {
        JitSlot {
            addr: AtomicUsize::new(0),
            nregs,
            arity,
            count: AtomicU32::new(0),
            state: AtomicU8::new(0),
            compiled_at: AtomicU64::new(0),
            entries: OnceLock::new(),
        }
    }

    /// Whether entering the code at `pc` is worth it (once compiled).
    #[inline]
    fn entry_at(&self, pc: usize) -> bool {
        self.entries.get().is_some_and(|bits| bits.get(pc / 64).is_some_and(|w| w & (1 << (pc % 64)) != 0))
    }

    /// Whether the interpreter has anything to do here at `pc`: count toward hotness,
    /// look for code still being compiled, or enter code worth entering at `pc`. False
    /// for a function given up on, and where its code would leave at once.
    #[inline]
    pub fn visit(&self, pc: usize) -> bool {
        if self.addr.load(Ordering::Acquire) != 0 {
            self.entry_at(pc)
        } else {
            self.state.load(Ordering::Relaxed) != 2
        }
    }

    /// Whether the compiler gave up on it (it stays interpreted).
    pub fn given_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == 2 && !self.is_compiled()
    }

    /// Whether the function is compiled now (its code published, not evicted).
    #[inline]
    pub fn is_compiled(&self) -> bool {
        self.addr.load(Ordering::Acquire) != 0
    }

    /// The compiled code, if it is worth entering at instruction `pc`. The caller must
    /// hold a `crossbeam_epoch` pin from before this call until the code has returned:
    /// the code may be evicted meanwhile, and the compiler frees it only once every
    /// worker that was pinned when it was evicted has unpinned.
    #[inline]
    pub fn entry(&self, pc: usize) -> Option<JitFn> {
        let addr = self.addr.load(Ordering::Acquire);
        if addr != 0 && self.entry_at(pc) {
            // SAFETY: only `set_code` stores a non-zero address here, and only a `JitFn`'s.
            Some(unsafe { std::mem::transmute::<usize, JitFn>(addr) })
        } else {
            None
        }
    }

    /// Publishes the compiled code (the compiler keeps its memory alive until it
    /// evicts it and no worker can be running it) and the instructions where entering
    /// it is worth it.
    pub fn set_code(&self, f: JitFn, entries: &[bool]) {
        self.entries.get_or_init(|| {
            let mut bits = vec![0u64; entries.len().div_ceil(64)];
            for (i, _) in entries.iter().enumerate().filter(|(_, &e)| e) {
                bits[i / 64] |= 1 << (i % 64);
            }
            bits.into_boxed_slice()
        });
        self.compiled_at.store(clock_us().max(1), Ordering::Relaxed);
        self.addr.store(f as usize, Ordering::Release);
    }

    /// Unpublishes the code (the compiler evicted it): the function is interpreted
    /// again, not asked for, with a count of 0, so it is compiled again once hot again.
    /// Code that read the address before may still run it: see [`JitSlot::entry`].
    pub fn reset(&self) {
        self.addr.store(0, Ordering::Release);
        self.compiled_at.store(0, Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
        self.state.store(0, Ordering::Release);
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
        n >= threshold && self.request()
    }

    /// Asks for it to be compiled: true the first time (the caller then hands it to the
    /// compiler), false when asked for already or given up on.
    pub fn request(&self) -> bool {
        self.state.compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// When its code was ready ([`clock_us`]), if it is compiled.
    pub fn compiled_at(&self) -> Option<u64> {
        Some(self.compiled_at.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }

    /// Calls and back edges counted so far (since it was last evicted).
    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Compiles functions for a node.
pub trait Compiler: Send + Sync {
    /// Compiles function `func` of `lm` and stores it in `lm.jit[func]` (or marks it
    /// failed): in the background, or before returning when `wait`.
    fn compile(&self, lm: &Arc<LinkedModule>, func: u32, wait: bool);
    /// What it has done so far.
    fn stats(&self) -> JitStats;
}

/// The code cache's default size limit (`tern run --jit-cache-mib`, `limits.jit_cache_bytes`
/// in mesh.toml).
pub const DEFAULT_CODE_LIMIT: u64 = 64 << 20;

/// A compiler's work so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JitStats {
    /// Functions compiled (a function evicted and compiled again counts twice).
    pub compiled: u64,
    /// Functions left interpreted: Cranelift refused them, or their code alone is more
    /// than half the code cache.
    pub failed: u64,
    /// Machine code in the cache now (its two generations; not what was evicted).
    pub code_bytes: u64,
    /// Functions unpublished by evictions (interpreted again, compiled again if hot).
    pub evicted: u64,
    /// Generations of the code cache evicted.
    pub flushes: u64,
    /// Evicted generations whose memory has been freed (once no worker could be
    /// running their code).
    pub freed: u64,
    /// Time to compile each function, µs, in the order they were compiled.
    pub compile_us: Vec<u64>,
}

/// Microseconds on this node's monotonic clock (for the times compiled code became
/// ready, against a migration's resume).
pub fn clock_us() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_micros() as u64
}

/// A module's functions compiled on this node: the hotness profile a migration carries,
/// so that the destination compiles them again before the process needs them.
pub fn compiled_functions(lm: &LinkedModule) -> Vec<u32> {
    lm.jit.iter().enumerate().filter(|(_, s)| s.is_compiled()).map(|(i, _)| i as u32).collect()
}

/// Has function `func` of `lm` compiled in the background, unless it is (or is being)
/// compiled already. True when it was asked for now.
pub fn precompile(vm: &crate::runtime::Vm, lm: &Arc<LinkedModule>, func: u32) -> bool {
    let Some(compiler) = vm.jit.as_deref().filter(|_| vm.config.jit != JitMode::Off) else { return false };
    match lm.jit.get(func as usize) {
        Some(slot) if slot.request() => {
            compiler.compile(lm, func, false);
            true
        }
        _ => false,
    }
}

/// The runtime's entry points for compiled code.
pub fn helpers() -> Helpers {
    crate::interp::helpers()
}
