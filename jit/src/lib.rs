//! Tern's JIT: hot functions compiled by Cranelift into machine code that never enters a
//! process's state (the contract is `tern_vm::jit`).
//!
//! One Cranelift function per Tern function, `fn(*mut JitCtx) -> status`. It starts with
//! a jump table on `ctx.pc` (so the interpreter can enter at the first instruction or at
//! any loop header), then one block per bytecode instruction. Each instruction reads and
//! writes the frame's registers in memory, laid out as the interpreter's
//! (`tern_vm::value::layout`): nothing lives only in a machine register across an
//! instruction, so wherever the code leaves, the frames are the whole state. Inline:
//! int and float arithmetic, comparisons and jumps (guarded: any other operand, an
//! overflow or a risky divisor goes to the runtime), calls and returns of compiled
//! functions of the same module (frames pushed and popped in place), and nil, bool, int
//! and float array elements. Through the runtime's helpers (`tern_vm::jit::Helpers`):
//! field and other index access, other calls and returns, and every other instruction,
//! which `Helpers::step` runs with the interpreter's own code (its errors, messages and
//! positions). A back edge and a call take one unit of fuel and leave when the time
//! slice is used up, so a compiled infinite loop is still preempted, frozen, moved and
//! killed.
//!
//! Compiling happens on a thread of its own (a function made hot keeps running in the
//! interpreter until its code is ready), or at once for `JitMode::Always`.
//!
//! The code cache has a size limit ([`Jit::with_limit`]; 64 MiB by default) and two
//! generations, each a `JITModule` of at most half of it (Cranelift frees a module's
//! memory only all at once). New code goes to the current generation; when a function's
//! code would not fit there, the old generation is evicted: every function it holds is
//! unpublished (`JitSlot::reset`: interpreted again, and compiled again, into the new
//! generation, if it turns hot again), the current generation becomes the old one and a
//! fresh one becomes current. Evicted code may still be running on a worker, so its
//! module is freed through `crossbeam_epoch`: the interpreter is pinned for each time
//! slice in which it may enter compiled code, and the compiler defers the free until
//! every worker pinned at the eviction has unpinned. (LuaJIT flushes its whole
//! machine-code area when it is full; two generations keep the code compiled last.)

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, AbiParam, Block, BlockArg, InstBuilder, JumpTableData, MemFlagsData, SigRef, Type, UserFuncName, Value as Val,
};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Module, ModuleReloc};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use tern_vm::bytecode::{Const, Op};
use tern_vm::jit::{
    ctx_layout, slot_layout, Compiler, Helpers, JitFn, ACCESS_GET_FIELD, ACCESS_GET_INDEX, ACCESS_SET_FIELD, ACCESS_SET_INDEX, CALL_ENTRY,
    LEFT, LEFT_AT, MAX_DEPTH, RETURNED,
};
use tern_vm::process::{frame_layout, NOT_INIT};
use tern_vm::runtime::LinkedModule;
use tern_vm::value::{layout, Value};

/// A node's compiler: Cranelift, a code cache of two generations, and a thread compiling
/// what turns hot.
pub struct Jit {
    inner: Arc<Mutex<Inner>>,
    jobs: crossbeam_channel::Sender<(Arc<LinkedModule>, u32)>,
}

/// Code compiled into one `JITModule` (whose memory can only be freed all at once).
struct Generation {
    module: JITModule,
    /// Whose code it holds: their slots are reset when it is evicted (a module dropped
    /// meanwhile has no slot left to reset).
    functions: Vec<(Weak<LinkedModule>, u32)>,
    /// Machine code in it.
    bytes: u64,
    /// The inline caches of its code's field instructions (`Gen::caches`), which the
    /// code writes and reads by address.
    caches: Vec<Box<[AtomicU32]>>,
}

impl Generation {
    fn new(isa: &OwnedTargetIsa) -> Generation {
        Generation {
            module: JITModule::new(JITBuilder::with_isa(isa.clone(), cranelift_module::default_libcall_names())),
            functions: Vec::new(),
            bytes: 0,
            caches: Vec::new(),
        }
    }
}

struct Inner {
    isa: OwnedTargetIsa,
    /// Where new code goes.
    current: Generation,
    /// The generation before, evicted when `current` is full.
    old: Option<Generation>,
    ctx: cranelift_codegen::Context,
    fctx: FunctionBuilderContext,
    stats: tern_vm::jit::JitStats,
    /// The code cache's size limit: each generation holds at most half of it.
    limit: u64,
    /// Evicted generations freed so far (counted by the deferred frees, which run on
    /// whichever thread collects them, without this lock).
    freed: Arc<AtomicU64>,
}

/// The code cache's default size limit.
pub use tern_vm::jit::DEFAULT_CODE_LIMIT;

impl Jit {
    /// A compiler for this machine's CPU (an error if Cranelift does not support it),
    /// with a code cache of [`DEFAULT_CODE_LIMIT`] bytes.
    pub fn new() -> Result<Jit, String> {
        Jit::with_limit(DEFAULT_CODE_LIMIT)
    }

    /// A compiler whose code cache holds at most `limit` bytes of machine code, in two
    /// generations of at most `limit / 2` each. When a function's code would not fit in
    /// the current generation, the old one is evicted (its functions are interpreted
    /// again, and compiled again into the new current generation once hot again), the
    /// current one becomes the old one and new code goes to a fresh one. Evicted code may
    /// still be running on a worker: its memory is freed only once every worker pinned
    /// at the eviction has unpinned (`crossbeam_epoch`; see `tern_vm::jit`). A function
    /// whose code alone is more than `limit / 2` stays interpreted.
    pub fn with_limit(limit: u64) -> Result<Jit, String> {
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").map_err(|e| e.to_string())?;
        flags.set("use_colocated_libcalls", "false").map_err(|e| e.to_string())?;
        flags.set("is_pic", "false").map_err(|e| e.to_string())?;
        let isa = cranelift_native::builder()
            .map_err(|e| format!("no code generator for this CPU: {e}"))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| e.to_string())?;
        let current = Generation::new(&isa);
        let ctx = current.module.make_context();
        let inner = Arc::new(Mutex::new(Inner {
            isa,
            current,
            old: None,
            ctx,
            fctx: FunctionBuilderContext::new(),
            stats: Default::default(),
            limit,
            freed: Default::default(),
        }));
        let (jobs, rx) = crossbeam_channel::unbounded::<(Arc<LinkedModule>, u32)>();
        let worker = inner.clone();
        std::thread::Builder::new()
            .name("tern-jit".into())
            .spawn(move || loop {
                // While evicted code waits to be freed, this thread also moves the
                // frees along now and then (the workers do as they pin, but an idle
                // node pins nothing).
                let job = if frees_pending(&worker) {
                    match rx.recv_timeout(std::time::Duration::from_millis(20)) {
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                            crossbeam_epoch::pin().flush();
                            continue;
                        }
                        job => job.ok(),
                    }
                } else {
                    rx.recv().ok()
                };
                let Some((lm, func)) = job else { break };
                compile_into(&worker, &lm, func);
            })
            .map_err(|e| format!("cannot start the compiler thread: {e}"))?;
        Ok(Jit { inner, jobs })
    }
}

impl Compiler for Jit {
    fn compile(&self, lm: &Arc<LinkedModule>, func: u32, wait: bool) {
        if wait || self.jobs.send((lm.clone(), func)).is_err() {
            compile_into(&self.inner, lm, func);
        }
    }

    fn stats(&self) -> tern_vm::jit::JitStats {
        let g = self.inner.lock();
        tern_vm::jit::JitStats { freed: g.freed.load(Ordering::Relaxed), ..g.stats.clone() }
    }
}

fn compile_into(inner: &Mutex<Inner>, lm: &Arc<LinkedModule>, func: u32) {
    let Some(slot) = lm.jit.get(func as usize) else { return };
    if slot.is_compiled() {
        return;
    }
    let Some(f) = lm.module.functions.get(func as usize) else { return };
    let entries = entries(&f.code);
    let mut g = inner.lock();
    let t = std::time::Instant::now();
    match compile(&mut g, lm, func) {
        Ok(Some((f, size))) => {
            g.stats.compiled += 1;
            g.stats.code_bytes += size;
            g.stats.compile_us.push(t.elapsed().as_micros() as u64);
            g.current.functions.push((Arc::downgrade(lm), func));
            slot.set_code(f, &entries);
        }
        Ok(None) => {
            tracing::info!(module = %lm.module.name, func, limit = g.limit, "stays interpreted: its code alone is more than half the JIT's code cache");
            g.stats.failed += 1;
            slot.set_failed();
        }
        Err(e) => {
            tracing::info!(module = %lm.module.name, func, "stays interpreted: Cranelift could not compile it: {e}");
            g.stats.failed += 1;
            slot.set_failed();
        }
    }
    drop(g);
    // Evicted generations are freed as threads pin and unpin; this moves the ones this
    // thread deferred along, and frees those no worker can be running any more.
    crossbeam_epoch::pin().flush();
}

/// Whether some evicted generation is not freed yet.
fn frees_pending(inner: &Mutex<Inner>) -> bool {
    let g = inner.lock();
    g.freed.load(Ordering::Relaxed) < g.stats.flushes
}

/// Makes room for `size` bytes of code in the current generation: when they would not
/// fit, evicts the old generation and starts a fresh current one. False when `size` is
/// more than a generation may hold.
fn make_room(g: &mut Inner, size: u64) -> bool {
    let half = g.limit / 2;
    if size > half {
        return false;
    }
    if g.current.bytes + size <= half {
        return true;
    }
    let fresh = Generation::new(&g.isa);
    let full = std::mem::replace(&mut g.current, fresh);
    if let Some(old) = g.old.replace(full) {
        evict(g, old);
    }
    true
}

/// Unpublishes every function of `old` and frees its memory once no worker can be
/// running its code.
fn evict(g: &mut Inner, old: Generation) {
    let guard = crossbeam_epoch::pin();
    let mut evicted = 0;
    for (lm, func) in &old.functions {
        if let Some(slot) = lm.upgrade().as_ref().and_then(|lm| lm.jit.get(*func as usize)) {
            slot.reset();
            evicted += 1;
        }
    }
    g.stats.evicted += evicted;
    g.stats.flushes += 1;
    g.stats.code_bytes -= old.bytes;
    tracing::debug!(functions = evicted, bytes = old.bytes, "the JIT's code cache evicted a generation");
    let (module, caches) = (old.module, old.caches);
    let freed = g.freed.clone();
    // Runs once every thread pinned now (before the slots above were reset, any of them
    // may have read one of the old addresses) has unpinned: the interpreter holds its
    // pin while it may run compiled code, and pins before it reads any slot.
    guard.defer(move || {
        // SAFETY: no slot holds an address in this module any more (reset above, before
        // this was deferred), and every worker that may have read one before was pinned
        // then and has unpinned since, so none is running this code or about to: the
        // interpreter enters compiled code, and compiled code calls other compiled code,
        // only through slots, within one pin.
        unsafe { module.free_memory() };
        drop(caches);
        freed.fetch_add(1, Ordering::Relaxed);
    });
    guard.flush();
}

/// Where the interpreter enters the compiled code: a call (the first instruction) and the
/// start of every loop (from its back edge, when the loop was already running).
fn entries(code: &[Op]) -> Vec<bool> {
    let mut out = vec![false; code.len()];
    if let Some(first) = out.first_mut() {
        *first = true;
    }
    for (j, op) in code.iter().enumerate() {
        if let Some(off) = jump_offset(op).filter(|&off| off < 0) {
            let t = (j as i64 + 1 + i64::from(off)) as usize;
            if let Some(e) = out.get_mut(t) {
                *e = true;
            }
        }
    }
    out
}

/// The offset of a jump instruction.
fn jump_offset(op: &Op) -> Option<i32> {
    match *op {
        Op::Jmp { off }
        | Op::JmpIf { off, .. }
        | Op::JmpIfNot { off, .. }
        | Op::JmpIfNil { off, .. }
        | Op::JmpIfNotNil { off, .. }
        | Op::JmpIfLt { off, .. }
        | Op::JmpIfLe { off, .. }
        | Op::JmpIfEq { off, .. }
        | Op::JmpIfNotLt { off, .. }
        | Op::JmpIfNotLe { off, .. }
        | Op::JmpIfNotEq { off, .. }
        | Op::JmpIfLtI { off, .. }
        | Op::JmpIfLeI { off, .. }
        | Op::JmpIfGtI { off, .. }
        | Op::JmpIfGeI { off, .. }
        | Op::JmpIfEqI { off, .. }
        | Op::JmpIfNotLtI { off, .. }
        | Op::JmpIfNotLeI { off, .. }
        | Op::JmpIfNotGtI { off, .. }
        | Op::JmpIfNotGeI { off, .. }
        | Op::JmpIfNotEqI { off, .. }
        | Op::ForPrep { off, .. }
        | Op::ForLoop { off, .. }
        | Op::IterNext { off, .. } => Some(off),
        _ => None,
    }
}

/// The code generator's state for one function.
struct Gen<'f> {
    b: FunctionBuilder<'f>,
    /// The `JitCtx` pointer (the entry block's parameter: it dominates every block).
    cx: Val,
    regs: Variable,
    globals: Variable,
    /// The running frame's `base` (i32).
    base: Variable,
    fuel: Variable,
    out_pc: Variable,
    blocks: Vec<Block>,
    /// Goes to the block of the pc it is given (anything else: `exit_raw`).
    dispatch: Block,
    /// Leaves with `out_pc` and `fuel` for the interpreter ([`LEFT_AT`]).
    exit_at: Block,
    /// Leaves with the status it is given (the runtime holds the state).
    exit_with: Block,
    ptr: Type,
    helpers: Helpers,
    step_sig: SigRef,
    call_sig: SigRef,
    ret_sig: SigRef,
    fn_sig: SigRef,
    access_sig: SigRef,
    /// The inline caches of the function's field instructions: a u32 per instruction
    /// (the map entry it last found its field in), in data of the code's own module.
    caches: Option<Val>,
    /// For each pc, its cache's index (field instructions only).
    cache_of: Vec<u32>,
}

const MEM: MemFlagsData = MemFlagsData::trusted();

impl Gen<'_> {
    fn at(r: u8) -> i32 {
        i32::from(r) * layout::SIZE
    }
    fn tag(&mut self, r: u8) -> Val {
        let regs = self.b.use_var(self.regs);
        self.b.ins().load(types::I8, MEM, regs, Self::at(r) + layout::TAG)
    }
    fn int(&mut self, r: u8) -> Val {
        let regs = self.b.use_var(self.regs);
        self.b.ins().load(types::I64, MEM, regs, Self::at(r) + layout::PAYLOAD)
    }
    fn float(&mut self, r: u8) -> Val {
        let regs = self.b.use_var(self.regs);
        self.b.ins().load(types::F64, MEM, regs, Self::at(r) + layout::PAYLOAD)
    }
    /// Stores a value of tag `tag` with payload `payload` (an i64 or f64) in `r`.
    fn put(&mut self, r: u8, tag: u8, payload: Val) {
        let regs = self.b.use_var(self.regs);
        let t = self.b.ins().iconst(types::I8, i64::from(tag));
        self.b.ins().store(MEM, t, regs, Self::at(r) + layout::TAG);
        self.b.ins().store(MEM, payload, regs, Self::at(r) + layout::PAYLOAD);
    }
    fn put_bool(&mut self, r: u8, c: Val) {
        let w = self.b.ins().uextend(types::I64, c);
        self.put(r, layout::TAG_BOOL, w);
    }
    fn copy(&mut self, from: Val, fo: i32, to: Val, to_off: i32) {
        let lo = self.b.ins().load(types::I64, MEM, from, fo);
        let hi = self.b.ins().load(types::I64, MEM, from, fo + 8);
        self.b.ins().store(MEM, lo, to, to_off);
        self.b.ins().store(MEM, hi, to, to_off + 8);
    }
    /// The heap's payload word for register `r`, whose tag `t` (i64) is at most
    /// `TAG_CLOSURE`: 0 for nil, a bool's byte, an address's four bytes, else the word.
    fn heap_payload(&mut self, r: u8, t: Val) -> Val {
        let regs = self.b.use_var(self.regs);
        let word = self.b.ins().load(types::I64, MEM, regs, Self::at(r) + layout::PAYLOAD);
        let byte = self.b.ins().load(types::I8, MEM, regs, Self::at(r) + layout::PAYLOAD);
        let byte = self.b.ins().uextend(types::I64, byte);
        let addr = self.b.ins().load(types::I32, MEM, regs, Self::at(r) + layout::PAYLOAD);
        let addr = self.b.ins().uextend(types::I64, addr);
        let zero = self.b.ins().iconst(types::I64, 0);
        let is_ref = self.b.ins().icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, t, i64::from(layout::TAG_STR));
        let p = self.b.ins().select(is_ref, addr, word);
        let is_bool = self.b.ins().icmp_imm_s(IntCC::Equal, t, i64::from(layout::TAG_BOOL));
        let p = self.b.ins().select(is_bool, byte, p);
        let is_nil = self.b.ins().icmp_imm_s(IntCC::Equal, t, i64::from(layout::TAG_NIL));
        self.b.ins().select(is_nil, zero, p)
    }
    /// Marks dirty the pages of heap words `w` and `w + 1` (as `Heap::store_value`).
    fn mark_dirty(&mut self, w: Val) {
        let dirty = self.ctx_load(self.ptr, ctx_layout::HEAP_DIRTY);
        let shift = self.ctx_load(types::I32, ctx_layout::PAGE_SHIFT);
        let shift = self.b.ins().uextend(types::I64, shift);
        let one = self.b.ins().iconst(types::I8, 1);
        for k in 0..2 {
            let w = self.b.ins().iadd_imm_s(w, k);
            let page = self.b.ins().ushr(w, shift);
            let d = self.b.ins().iadd(dirty, page);
            self.b.ins().store(MEM, one, d, 0);
        }
    }
    fn is_tag(&mut self, r: u8, tag: u8) -> Val {
        let t = self.tag(r);
        self.b.ins().icmp_imm_s(IntCC::Equal, t, i64::from(tag))
    }
    fn both(&mut self, x: u8, y: u8, tag: u8) -> Val {
        let a = self.is_tag(x, tag);
        let c = self.is_tag(y, tag);
        self.b.ins().band(a, c)
    }
    /// A new block to continue in when `cond` holds; else the runtime runs `pc`.
    fn guard(&mut self, cond: Val, pc: usize) {
        let ok = self.b.create_block();
        let slow = self.b.create_block();
        self.b.ins().brif(cond, ok, NONE, slow, NONE);
        self.b.switch_to_block(slow);
        self.step(pc);
        self.b.switch_to_block(ok);
    }
    /// Three ways on the operands' tags: both ints (the current block goes on there), both
    /// floats (the returned block), or anything else (the runtime runs `pc`).
    fn int_or_float(&mut self, x: u8, y: u8, pc: usize) -> Block {
        let ints = self.b.create_block();
        let not_ints = self.b.create_block();
        let floats = self.b.create_block();
        let slow = self.b.create_block();
        let c = self.both(x, y, layout::TAG_INT);
        self.b.ins().brif(c, ints, NONE, not_ints, NONE);
        self.b.switch_to_block(not_ints);
        let c = self.both(x, y, layout::TAG_FLOAT);
        self.b.ins().brif(c, floats, NONE, slow, NONE);
        self.b.switch_to_block(slow);
        self.step(pc);
        self.b.switch_to_block(ints);
        floats
    }
    fn save_fuel(&mut self) {
        let f = self.b.use_var(self.fuel);
        self.b.ins().store(MEM, f, self.cx, ctx_layout::FUEL);
    }
    /// After a runtime call: the register stack may have moved, the frame changed, the
    /// fuel been spent.
    fn reload(&mut self) {
        let r = self.b.ins().load(self.ptr, MEM, self.cx, ctx_layout::REGS);
        self.b.def_var(self.regs, r);
        let g = self.b.ins().load(self.ptr, MEM, self.cx, ctx_layout::GLOBALS);
        self.b.def_var(self.globals, g);
        let f = self.b.ins().load(types::I64, MEM, self.cx, ctx_layout::FUEL);
        self.b.def_var(self.fuel, f);
        let base = self.b.ins().load(types::I32, MEM, self.cx, ctx_layout::BASE);
        self.b.def_var(self.base, base);
    }
    fn ctx_load(&mut self, ty: Type, off: i32) -> Val {
        self.b.ins().load(ty, MEM, self.cx, off)
    }
    fn ctx_store(&mut self, v: Val, off: i32) {
        self.b.ins().store(MEM, v, self.cx, off);
    }
    /// The heap string of constant `k` of the running module (an i32; 0 until made).
    fn module_str(&mut self, k: u32) -> Val {
        let strs = self.ctx_load(self.ptr, ctx_layout::STRS);
        let at = self.b.ins().iadd_imm_s(strs, i64::from(k) * 4);
        self.b.ins().load(types::I32, MEM, at, 0)
    }
    /// The address of instruction `pc`'s inline cache, if it has one.
    fn cache(&mut self, pc: usize) -> Option<Val> {
        let base = self.caches?;
        let i = *self.cache_of.get(pc)?;
        (i != u32::MAX).then(|| self.b.ins().iadd_imm_s(base, i64::from(i) * 4))
    }
    /// `a & b` of two conditions.
    fn and(&mut self, a: Val, b: Val) -> Val {
        self.b.ins().band(a, b)
    }
    fn helper(&mut self, sig: SigRef, addr: usize, pc: usize) -> Val {
        self.save_fuel();
        let f = self.b.ins().iconst(self.ptr, addr as i64);
        let p = self.b.ins().iconst(types::I32, pc as i64);
        let call = self.b.ins().call_indirect(sig, f, &[self.cx, p]);
        let r = self.b.inst_results(call)[0];
        self.reload();
        r
    }
    /// The runtime runs instruction `pc` (the interpreter's own code), and the compiled
    /// code goes on where it says.
    fn step(&mut self, pc: usize) {
        let r = self.helper(self.step_sig, self.helpers.step as usize, pc);
        self.go_to_pc(r, pc + 1);
    }
    /// Goes on at the pc in `r`: `likely` directly, any other through the jump table.
    fn go_to_pc(&mut self, r: Val, likely: usize) {
        let arg = [BlockArg::Value(r)];
        match self.blocks.get(likely).copied() {
            Some(next) => {
                let is_next = self.b.ins().icmp_imm_s(IntCC::Equal, r, likely as i64);
                self.b.ins().brif(is_next, next, NONE, self.dispatch, &arg);
            }
            None => {
                self.b.ins().jump(self.dispatch, &arg);
            }
        }
    }
    /// Continues at `target` (a back edge takes fuel, and leaves when it is out).
    fn goto(&mut self, pc: usize, target: usize) {
        if target > pc {
            self.b.ins().jump(self.blocks[target], NONE);
            return;
        }
        let f = self.b.use_var(self.fuel);
        let f = self.b.ins().iadd_imm_s(f, -1);
        self.b.def_var(self.fuel, f);
        let out = self.b.ins().icmp_imm_s(IntCC::SignedLessThanOrEqual, f, 0);
        let stop = self.b.create_block();
        self.b.ins().brif(out, stop, NONE, self.blocks[target], NONE);
        self.b.switch_to_block(stop);
        self.leave_at(target);
    }
    fn leave_at(&mut self, pc: usize) {
        let v = self.b.ins().iconst(types::I32, pc as i64);
        self.b.def_var(self.out_pc, v);
        self.b.ins().jump(self.exit_at, NONE);
    }
    /// Branches on `cond` to `target` (taken) or `next`.
    fn branch(&mut self, pc: usize, cond: Val, target: usize, next: usize) {
        let taken = self.b.create_block();
        let not = self.b.create_block();
        self.b.ins().brif(cond, taken, NONE, not, NONE);
        self.b.switch_to_block(taken);
        self.goto(pc, target);
        self.b.switch_to_block(not);
        self.goto(pc, next);
    }
    fn exit_with(&mut self, status: Val) {
        self.b.ins().jump(self.exit_with, &[BlockArg::Value(status)]);
    }
}

const NONE: &[BlockArg] = &[];

/// Compiles function `func` of `lm` into the current generation (evicting the old one
/// when it is full): its code and size in bytes, or None when its code alone is more than
/// a generation may hold.
fn compile(g: &mut Inner, lm: &LinkedModule, func: u32) -> Result<Option<(JitFn, u64)>, String> {
    let f = lm.module.functions.get(func as usize).ok_or("no such function")?;
    let code = &f.code;
    if code.is_empty() {
        return Err("no code".into());
    }
    let Inner { current, ctx, fctx, isa, .. } = &mut *g;
    let module = &mut current.module;
    module.clear_context(ctx);
    let tcfg = module.target_config();
    let ptr = tcfg.pointer_type();
    let mut fn_sig = module.make_signature();
    fn_sig.params.push(AbiParam::new(ptr));
    fn_sig.returns.push(AbiParam::new(types::I32));
    let helper_sig = |ret: Type| {
        let mut s = module.make_signature();
        s.params.push(AbiParam::new(ptr));
        s.params.push(AbiParam::new(types::I32));
        s.returns.push(AbiParam::new(ret));
        s
    };
    let (step_sig, call_sig, ret_sig) = (helper_sig(types::I32), helper_sig(ptr), helper_sig(types::I32));
    let mut access_sig = helper_sig(types::I32);
    access_sig.params.extend([AbiParam::new(types::I32), AbiParam::new(types::I32), AbiParam::new(types::I32), AbiParam::new(types::I32)]);
    ctx.func.signature = fn_sig.clone();
    ctx.func.name = UserFuncName::user(0, 0);
    // A u32 per field instruction: its inline cache, as long as the code.
    let mut cache_of = vec![u32::MAX; code.len()];
    let mut sites = 0u32;
    for (pc, op) in code.iter().enumerate() {
        if matches!(op, Op::GetField { .. } | Op::SetField { .. }) {
            cache_of[pc] = sites;
            sites += 1;
        }
    }
    // Kept by the generation the code goes to, and freed with it.
    let cells: Option<Box<[AtomicU32]>> = (sites > 0).then(|| (0..sites).map(|_| AtomicU32::new(0)).collect());
    let cells_at = cells.as_ref().map(|c| c.as_ptr() as i64);
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        let (step_sig, call_sig, ret_sig, fn_sig, access_sig) = (
            b.import_signature(step_sig),
            b.import_signature(call_sig),
            b.import_signature(ret_sig),
            b.import_signature(fn_sig),
            b.import_signature(access_sig),
        );
        let exit_at = b.create_block();
        let exit_with = b.create_block();
        b.append_block_param(exit_with, types::I32);
        let dispatch = b.create_block();
        b.append_block_param(dispatch, types::I32);
        let blocks: Vec<_> = code.iter().map(|_| b.create_block()).collect();
        let regs = b.declare_var(ptr);
        let globals = b.declare_var(ptr);
        let base = b.declare_var(types::I32);
        let fuel = b.declare_var(types::I64);
        let out_pc = b.declare_var(types::I32);

        b.switch_to_block(entry);
        let cx = b.block_params(entry)[0];
        let caches = cells_at.map(|at| b.ins().iconst(ptr, at));
        let mut g = Gen {
            b,
            cx,
            regs,
            globals,
            base,
            fuel,
            out_pc,
            blocks,
            dispatch,
            exit_at,
            exit_with,
            ptr,
            helpers: tern_vm::jit::helpers(),
            step_sig,
            call_sig,
            ret_sig,
            fn_sig,
            access_sig,
            caches,
            cache_of,
        };
        g.reload();
        let zero32 = g.b.ins().iconst(types::I32, 0);
        g.b.def_var(out_pc, zero32);
        let pc0 = g.b.ins().load(types::I32, MEM, cx, ctx_layout::PC);
        // A call from compiled code: the registers beyond the arguments become nil.
        let fill = g.b.create_block();
        let is_call = g.b.ins().icmp_imm_s(IntCC::Equal, pc0, i64::from(CALL_ENTRY));
        g.b.ins().brif(is_call, fill, NONE, dispatch, &[BlockArg::Value(pc0)]);
        g.b.switch_to_block(fill);
        let regs_now = g.b.use_var(regs);
        let nil = g.b.ins().iconst(types::I8, i64::from(layout::TAG_NIL));
        for r in u16::from(f.arity)..f.nregs {
            g.b.ins().store(MEM, nil, regs_now, i32::from(r) * layout::SIZE + layout::TAG);
        }
        g.b.ins().jump(g.blocks[0], NONE);

        g.b.switch_to_block(dispatch);
        let at = g.b.block_params(dispatch)[0];
        let calls: Vec<_> = g.blocks.iter().map(|&bl| g.b.func.dfg.block_call(bl, NONE)).collect();
        let left = g.b.ins().iconst(types::I32, i64::from(LEFT));
        let default = g.b.func.dfg.block_call(exit_with, &[BlockArg::Value(left)]);
        let jt = g.b.create_jump_table(JumpTableData::new(default, &calls));
        g.b.ins().br_table(at, jt);

        for (pc, op) in code.iter().enumerate() {
            let block = g.blocks[pc];
            g.b.switch_to_block(block);
            op_code(&mut g, lm, pc, op);
        }

        g.b.switch_to_block(exit_at);
        let p = g.b.use_var(out_pc);
        g.b.ins().store(MEM, p, cx, ctx_layout::PC);
        g.save_fuel();
        let s = g.b.ins().iconst(types::I32, i64::from(LEFT_AT));
        g.b.ins().return_(&[s]);

        g.b.switch_to_block(exit_with);
        let s = g.b.block_params(exit_with)[0];
        g.b.ins().return_(&[s]);
        g.b.seal_all_blocks();
        g.b.finalize(tcfg);
    }
    // Compiled first, so its size is known before the generation it goes to is chosen.
    let code = ctx.compile(&**isa, &mut Default::default()).map_err(|e| e.inner.to_string())?;
    let size = u64::from(code.code_info().total_size);
    let (bytes, alignment) = (code.code_buffer().to_vec(), u64::from(code.buffer.alignment));
    let relocs: Vec<_> = code.buffer.relocs().to_vec();
    if !make_room(g, size) {
        g.current.module.clear_context(&mut g.ctx);
        return Ok(None);
    }
    let Inner { current, ctx, .. } = g;
    let module = &mut current.module;
    let id = module.declare_anonymous_function(&ctx.func.signature).map_err(|e| e.to_string())?;
    let relocs: Vec<_> = relocs.iter().map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, id)).collect();
    if std::env::var_os("TERN_JIT_DUMP").is_some() {
        eprintln!("; {} function {func}, {size} bytes\n{}", lm.module.name, ctx.func.display());
    }
    current.caches.extend(cells);
    module.clear_context(ctx);
    module.define_function_bytes(id, alignment, &bytes, &relocs).map_err(|e| e.to_string())?;
    module.finalize_definitions().map_err(|e| e.to_string())?;
    current.bytes += size;
    let code = module.get_finalized_function(id);
    // SAFETY: the function just compiled has the signature `JitFn` declares.
    Ok(Some((unsafe { std::mem::transmute::<*const u8, JitFn>(code) }, size)))
}

/// The code of instruction `pc`, in its block (which it ends).
fn op_code(g: &mut Gen, lm: &LinkedModule, pc: usize, op: &Op) {
    let next = pc + 1;
    let target_of = |off: i32| (next as i64 + i64::from(off)) as usize;
    let int_k = |k: u16| match lm.numbers.get(usize::from(k)) {
        Some(&Value::Int(v)) => Some(v),
        _ => None,
    };
    let float_k = |k: u16| match lm.numbers.get(usize::from(k)) {
        Some(&Value::Float(v)) => Some(v),
        _ => None,
    };
    match *op {
        Op::LoadNil { a } => {
            let z = g.b.ins().iconst(types::I64, 0);
            g.put(a, layout::TAG_NIL, z);
            g.goto(pc, next);
        }
        Op::LoadBool { a, v } => {
            let x = g.b.ins().iconst(types::I64, i64::from(v));
            g.put(a, layout::TAG_BOOL, x);
            g.goto(pc, next);
        }
        Op::LoadInt { a, v } => {
            let x = g.b.ins().iconst(types::I64, i64::from(v));
            g.put(a, layout::TAG_INT, x);
            g.goto(pc, next);
        }
        Op::LoadK { a, k } if matches!(lm.module.consts.get(k as usize), Some(Const::Int(_) | Const::Float(_))) => {
            match lm.module.consts[k as usize] {
                Const::Int(v) => {
                    let x = g.b.ins().iconst(types::I64, v);
                    g.put(a, layout::TAG_INT, x);
                }
                Const::Float(v) => {
                    let x = g.b.ins().f64const(v);
                    g.put(a, layout::TAG_FLOAT, x);
                }
                _ => unreachable!("checked above"),
            }
            g.goto(pc, next);
        }
        Op::LoadK { a, k } if matches!(lm.module.consts.get(k as usize), Some(Const::Native(_))) => {
            let id = lm.native_ids.get(k as usize).copied().unwrap_or(0);
            let x = g.b.ins().iconst(types::I64, i64::from(id));
            g.put(a, layout::TAG_NATIVE, x);
            g.goto(pc, next);
        }
        Op::LoadK { a, k } if matches!(lm.module.consts.get(k as usize), Some(Const::Str(_))) => {
            // The module's string for it, once made (else the runtime makes it).
            let s = g.module_str(k);
            let made = g.b.ins().icmp_imm_u(IntCC::NotEqual, s, 0);
            g.guard(made, pc);
            let s = g.b.ins().uextend(types::I64, s);
            g.put(a, layout::TAG_STR, s);
            g.goto(pc, next);
        }
        Op::IterNext { a, n, off: _ } => {
            let slow = g.b.create_block();
            iter_next(g, pc, a, n, slow);
            g.b.switch_to_block(slow);
            g.step(pc);
        }
        Op::Move { a, b: src } => {
            let regs = g.b.use_var(g.regs);
            g.copy(regs, Gen::at(src), regs, Gen::at(a));
            g.goto(pc, next);
        }
        Op::GetGlobal { a, g: gi } => {
            let regs = g.b.use_var(g.regs);
            let globals = g.b.use_var(g.globals);
            g.copy(globals, gi as i32 * layout::SIZE, regs, Gen::at(a));
            g.goto(pc, next);
        }
        Op::SetGlobal { g: gi, a } => {
            let regs = g.b.use_var(g.regs);
            let globals = g.b.use_var(g.globals);
            g.copy(regs, Gen::at(a), globals, gi as i32 * layout::SIZE);
            g.goto(pc, next);
        }
        Op::AddI { a, b: x, v } => {
            let is_int = g.is_tag(x, layout::TAG_INT);
            let floats = g.b.create_block();
            let not_int = g.b.create_block();
            let ints = g.b.create_block();
            g.b.ins().brif(is_int, ints, NONE, not_int, NONE);
            g.b.switch_to_block(not_int);
            let is_float = g.is_tag(x, layout::TAG_FLOAT);
            g.guard(is_float, pc);
            g.b.ins().jump(floats, NONE);
            g.b.switch_to_block(ints);
            let xv = g.int(x);
            let k = g.b.ins().iconst(types::I64, i64::from(v));
            let (sum, of) = g.b.ins().sadd_overflow(xv, k);
            let fine = g.b.ins().bxor_imm_s(of, 1);
            g.guard(fine, pc);
            g.put(a, layout::TAG_INT, sum);
            g.goto(pc, next);
            g.b.switch_to_block(floats);
            let xv = g.float(x);
            let k = g.b.ins().f64const(f64::from(v));
            let r = g.b.ins().fadd(xv, k);
            g.put(a, layout::TAG_FLOAT, r);
            g.goto(pc, next);
        }
        Op::AddK { a, b: x, k } | Op::SubK { a, b: x, k } | Op::MulK { a, b: x, k } if int_k(k).is_some() => {
            let kv = int_k(k).unwrap_or(0);
            let is_int = g.is_tag(x, layout::TAG_INT);
            g.guard(is_int, pc);
            let xv = g.int(x);
            let kc = g.b.ins().iconst(types::I64, kv);
            let (r, of) = match op {
                Op::AddK { .. } => g.b.ins().sadd_overflow(xv, kc),
                Op::SubK { .. } => g.b.ins().ssub_overflow(xv, kc),
                _ => g.b.ins().smul_overflow(xv, kc),
            };
            let fine = g.b.ins().bxor_imm_s(of, 1);
            g.guard(fine, pc);
            g.put(a, layout::TAG_INT, r);
            g.goto(pc, next);
        }
        Op::DivK { a, b: x, k } | Op::ModK { a, b: x, k } if int_k(k).is_some_and(|v| v != 0 && v != -1) => {
            // A constant divisor, neither 0 nor -1: no trap, no overflow.
            let kv = int_k(k).unwrap_or(1);
            let is_int = g.is_tag(x, layout::TAG_INT);
            g.guard(is_int, pc);
            let xv = g.int(x);
            let kc = g.b.ins().iconst(types::I64, kv);
            let r = if matches!(op, Op::DivK { .. }) { g.b.ins().sdiv(xv, kc) } else { g.b.ins().srem(xv, kc) };
            g.put(a, layout::TAG_INT, r);
            g.goto(pc, next);
        }
        Op::AddK { a, b: x, k } | Op::SubK { a, b: x, k } | Op::MulK { a, b: x, k } | Op::DivK { a, b: x, k } if float_k(k).is_some() => {
            let kv = float_k(k).unwrap_or(0.0);
            let is_float = g.is_tag(x, layout::TAG_FLOAT);
            g.guard(is_float, pc);
            let xv = g.float(x);
            let kc = g.b.ins().f64const(kv);
            let r = float_op(g, op, xv, kc);
            g.put(a, layout::TAG_FLOAT, r);
            g.goto(pc, next);
        }
        Op::Add { a, b: x, c: y } | Op::Sub { a, b: x, c: y } | Op::Mul { a, b: x, c: y } | Op::Div { a, b: x, c: y } => {
            let floats = g.int_or_float(x, y, pc);
            let xv = g.int(x);
            let yv = g.int(y);
            let r = match op {
                Op::Add { .. } | Op::Sub { .. } | Op::Mul { .. } => {
                    let (r, of) = match op {
                        Op::Add { .. } => g.b.ins().sadd_overflow(xv, yv),
                        Op::Sub { .. } => g.b.ins().ssub_overflow(xv, yv),
                        _ => g.b.ins().smul_overflow(xv, yv),
                    };
                    let fine = g.b.ins().bxor_imm_s(of, 1);
                    g.guard(fine, pc);
                    r
                }
                _ => {
                    // The runtime's path for a divisor of 0 (an error) or -1 (an
                    // overflow for the smallest int).
                    let plus1 = g.b.ins().iadd_imm_s(yv, 1);
                    let fine = g.b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, plus1, 1);
                    g.guard(fine, pc);
                    g.b.ins().sdiv(xv, yv)
                }
            };
            g.put(a, layout::TAG_INT, r);
            g.goto(pc, next);
            g.b.switch_to_block(floats);
            let xv = g.float(x);
            let yv = g.float(y);
            let r = float_op(g, op, xv, yv);
            g.put(a, layout::TAG_FLOAT, r);
            g.goto(pc, next);
        }
        Op::Mod { a, b: x, c: y } => {
            let c = g.both(x, y, layout::TAG_INT);
            g.guard(c, pc);
            let xv = g.int(x);
            let yv = g.int(y);
            let plus1 = g.b.ins().iadd_imm_s(yv, 1);
            let fine = g.b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, plus1, 1);
            g.guard(fine, pc);
            let r = g.b.ins().srem(xv, yv);
            g.put(a, layout::TAG_INT, r);
            g.goto(pc, next);
        }
        Op::Neg { a, b: x } => {
            let is_int = g.is_tag(x, layout::TAG_INT);
            g.guard(is_int, pc);
            let xv = g.int(x);
            let fine = g.b.ins().icmp_imm_s(IntCC::NotEqual, xv, i64::MIN);
            g.guard(fine, pc);
            let r = g.b.ins().ineg(xv);
            g.put(a, layout::TAG_INT, r);
            g.goto(pc, next);
        }
        Op::Not { a, b: x } => {
            let falsy = falsy(g, x);
            g.put_bool(a, falsy);
            g.goto(pc, next);
        }
        Op::BitAnd { a, b: x, c: y } | Op::BitOr { a, b: x, c: y } | Op::BitXor { a, b: x, c: y } => {
            let c = g.both(x, y, layout::TAG_INT);
            g.guard(c, pc);
            let xv = g.int(x);
            let yv = g.int(y);
            let r = match op {
                Op::BitAnd { .. } => g.b.ins().band(xv, yv),
                Op::BitOr { .. } => g.b.ins().bor(xv, yv),
                _ => g.b.ins().bxor(xv, yv),
            };
            g.put(a, layout::TAG_INT, r);
            g.goto(pc, next);
        }
        Op::Eq { a, b: x, c: y } | Op::Ne { a, b: x, c: y } | Op::Lt { a, b: x, c: y } | Op::Le { a, b: x, c: y } => {
            let (icc, fcc) = match op {
                Op::Eq { .. } => (IntCC::Equal, FloatCC::Equal),
                Op::Ne { .. } => (IntCC::NotEqual, FloatCC::NotEqual),
                Op::Lt { .. } => (IntCC::SignedLessThan, FloatCC::LessThan),
                _ => (IntCC::SignedLessThanOrEqual, FloatCC::LessThanOrEqual),
            };
            let floats = g.int_or_float(x, y, pc);
            let xv = g.int(x);
            let yv = g.int(y);
            let c = g.b.ins().icmp(icc, xv, yv);
            g.put_bool(a, c);
            g.goto(pc, next);
            g.b.switch_to_block(floats);
            let xv = g.float(x);
            let yv = g.float(y);
            let c = g.b.ins().fcmp(fcc, xv, yv);
            g.put_bool(a, c);
            g.goto(pc, next);
        }
        Op::Jmp { off } => g.goto(pc, target_of(off)),
        Op::JmpIf { a, off } | Op::JmpIfNot { a, off } => {
            let f = falsy(g, a);
            let (t, n) = if matches!(op, Op::JmpIf { .. }) { (next, target_of(off)) } else { (target_of(off), next) };
            g.branch(pc, f, t, n);
        }
        Op::JmpIfNil { a, off } | Op::JmpIfNotNil { a, off } => {
            let t = g.tag(a);
            let cc = if matches!(op, Op::JmpIfNil { .. }) { IntCC::Equal } else { IntCC::NotEqual };
            let c = g.b.ins().icmp_imm_s(cc, t, i64::from(layout::TAG_NIL));
            g.branch(pc, c, target_of(off), next);
        }
        Op::JmpIfLt { b: x, c: y, off }
        | Op::JmpIfLe { b: x, c: y, off }
        | Op::JmpIfEq { b: x, c: y, off }
        | Op::JmpIfNotLt { b: x, c: y, off }
        | Op::JmpIfNotLe { b: x, c: y, off }
        | Op::JmpIfNotEq { b: x, c: y, off } => {
            let (icc, fcc) = match op {
                Op::JmpIfLt { .. } | Op::JmpIfNotLt { .. } => (IntCC::SignedLessThan, FloatCC::LessThan),
                Op::JmpIfLe { .. } | Op::JmpIfNotLe { .. } => (IntCC::SignedLessThanOrEqual, FloatCC::LessThanOrEqual),
                _ => (IntCC::Equal, FloatCC::Equal),
            };
            // The `Not` forms jump when the comparison is false (NaN included).
            let (yes, no) = if matches!(op, Op::JmpIfLt { .. } | Op::JmpIfLe { .. } | Op::JmpIfEq { .. }) {
                (target_of(off), next)
            } else {
                (next, target_of(off))
            };
            let floats = g.int_or_float(x, y, pc);
            let xv = g.int(x);
            let yv = g.int(y);
            let c = g.b.ins().icmp(icc, xv, yv);
            g.branch(pc, c, yes, no);
            g.b.switch_to_block(floats);
            let xv = g.float(x);
            let yv = g.float(y);
            let c = g.b.ins().fcmp(fcc, xv, yv);
            g.branch(pc, c, yes, no);
        }
        Op::JmpIfLtI { b: x, v, off }
        | Op::JmpIfLeI { b: x, v, off }
        | Op::JmpIfGtI { b: x, v, off }
        | Op::JmpIfGeI { b: x, v, off }
        | Op::JmpIfEqI { b: x, v, off }
        | Op::JmpIfNotLtI { b: x, v, off }
        | Op::JmpIfNotLeI { b: x, v, off }
        | Op::JmpIfNotGtI { b: x, v, off }
        | Op::JmpIfNotGeI { b: x, v, off }
        | Op::JmpIfNotEqI { b: x, v, off } => {
            let is_int = g.is_tag(x, layout::TAG_INT);
            g.guard(is_int, pc);
            let xv = g.int(x);
            let cc = match op {
                Op::JmpIfLtI { .. } | Op::JmpIfNotGeI { .. } => IntCC::SignedLessThan,
                Op::JmpIfLeI { .. } | Op::JmpIfNotGtI { .. } => IntCC::SignedLessThanOrEqual,
                Op::JmpIfGtI { .. } | Op::JmpIfNotLeI { .. } => IntCC::SignedGreaterThan,
                Op::JmpIfGeI { .. } | Op::JmpIfNotLtI { .. } => IntCC::SignedGreaterThanOrEqual,
                Op::JmpIfEqI { .. } => IntCC::Equal,
                _ => IntCC::NotEqual,
            };
            let c = g.b.ins().icmp_imm_s(cc, xv, i64::from(v));
            g.branch(pc, c, target_of(off), next);
        }
        Op::ForPrep { a, off } => {
            let c = g.both(a, a + 1, layout::TAG_INT);
            g.guard(c, pc);
            let i = g.int(a);
            let e = g.int(a + 1);
            let enter = g.b.ins().icmp(IntCC::SignedLessThan, i, e);
            let body = g.b.create_block();
            let skip = g.b.create_block();
            g.b.ins().brif(enter, body, NONE, skip, NONE);
            g.b.switch_to_block(body);
            g.put(a + 2, layout::TAG_INT, i);
            g.goto(pc, next);
            g.b.switch_to_block(skip);
            g.goto(pc, target_of(off));
        }
        Op::ForLoop { a, off } => {
            let c = g.both(a, a + 1, layout::TAG_INT);
            g.guard(c, pc);
            let i = g.int(a);
            let e = g.int(a + 1);
            // `i < e` held when the body was entered: `i + 1` cannot overflow.
            let n = g.b.ins().iadd_imm_s(i, 1);
            g.put(a, layout::TAG_INT, n);
            let more = g.b.ins().icmp(IntCC::SignedLessThan, n, e);
            let body = g.b.create_block();
            let done = g.b.create_block();
            g.b.ins().brif(more, body, NONE, done, NONE);
            g.b.switch_to_block(body);
            g.put(a + 2, layout::TAG_INT, n);
            g.goto(pc, target_of(off));
            g.b.switch_to_block(done);
            g.goto(pc, next);
        }
        Op::Call { a, n } => {
            let done = g.b.create_block();
            let slow = g.b.create_block();
            inline_call(g, lm, pc, a, n, slow, done);
            // The runtime pushes the frame; a compiled callee is called from here.
            g.b.switch_to_block(slow);
            let r = g.helper(g.call_sig, g.helpers.call as usize, pc);
            let callee = g.b.create_block();
            let other = g.b.create_block();
            let big = g.b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, r, 1);
            g.b.ins().brif(big, callee, NONE, other, NONE);
            g.b.switch_to_block(other);
            let native_done = g.b.ins().icmp_imm_s(IntCC::Equal, r, 1);
            let left = g.b.ins().iconst(types::I32, i64::from(LEFT));
            g.b.ins().brif(native_done, done, NONE, g.exit_with, &[BlockArg::Value(left)]);
            g.b.switch_to_block(callee);
            let call = g.b.ins().call_indirect(g.fn_sig, r, &[g.cx]);
            let status = g.b.inst_results(call)[0];
            let returned = g.b.ins().icmp_imm_s(IntCC::Equal, status, i64::from(RETURNED));
            let back = g.b.create_block();
            g.b.ins().brif(returned, back, NONE, g.exit_with, &[BlockArg::Value(status)]);
            g.b.switch_to_block(back);
            g.reload();
            g.b.ins().jump(done, NONE);
            g.b.switch_to_block(done);
            g.goto(pc, next);
        }
        Op::Return { .. } | Op::ReturnNil {} => {
            let slow = g.b.create_block();
            inline_return(g, op, slow);
            g.b.switch_to_block(slow);
            let status = g.helper(g.ret_sig, g.helpers.ret as usize, pc);
            g.exit_with(status);
        }
        Op::GetIndex { a, b, c } => {
            let slow = g.b.create_block();
            element(g, pc, false, [a, b, c], slow);
            g.b.switch_to_block(slow);
            access(g, pc, ACCESS_GET_INDEX, [a.into(), b.into(), c.into()]);
        }
        Op::SetIndex { a, b, c } => {
            let slow = g.b.create_block();
            element(g, pc, true, [a, b, c], slow);
            g.b.switch_to_block(slow);
            access(g, pc, ACCESS_SET_INDEX, [a.into(), b.into(), c.into()]);
        }
        Op::GetField { a, b, k } => {
            let slow = g.b.create_block();
            field(g, pc, false, [b, a], k, slow);
            g.b.switch_to_block(slow);
            access(g, pc, ACCESS_GET_FIELD, [a.into(), b.into(), k]);
        }
        Op::SetField { a, k, c } => {
            let slow = g.b.create_block();
            field(g, pc, true, [a, c], k, slow);
            g.b.switch_to_block(slow);
            access(g, pc, ACCESS_SET_FIELD, [a.into(), k, c.into()]);
        }
        // Everything else: the runtime runs it, with the interpreter's code.
        _ => g.step(pc),
    }
}

/// A call of a compiled function of the same module (no captured variables, the right
/// number of arguments, room on the stacks), done here as the runtime would do it: the
/// frame pushed in place, the callee called directly. Anything else goes to `slow`.
fn inline_call(g: &mut Gen, lm: &LinkedModule, pc: usize, a: u8, n: u8, slow: Block, done: Block) {
    let ptr = g.ptr;
    let is_func = g.is_tag(a, layout::TAG_FUNC);
    let check = g.b.create_block();
    g.b.ins().brif(is_func, check, NONE, slow, NONE);
    g.b.switch_to_block(check);
    let regs = g.b.use_var(g.regs);
    let m = g.b.ins().load(types::I32, MEM, regs, Gen::at(a) + layout::PAYLOAD);
    let f = g.b.ins().load(types::I32, MEM, regs, Gen::at(a) + layout::PAYLOAD + 4);
    let frames = g.ctx_load(ptr, ctx_layout::FRAMES);
    let nframes = g.ctx_load(types::I32, ctx_layout::NFRAMES);
    let n64 = g.b.ins().uextend(types::I64, nframes);
    let off = g.b.ins().imul_imm_s(n64, i64::from(frame_layout::SIZE));
    let top = g.b.ins().iadd(frames, off);
    // `top` is one past the running frame.
    let cur = g.b.ins().load(types::I32, MEM, top, frame_layout::MODULE - frame_layout::SIZE);
    let same = g.b.ins().icmp(IntCC::Equal, m, cur);
    let known = g.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, f, lm.jit.len() as i64);
    let ok = g.and(same, known);
    let check2 = g.b.create_block();
    g.b.ins().brif(ok, check2, NONE, slow, NONE);
    g.b.switch_to_block(check2);
    let f64_ = g.b.ins().uextend(types::I64, f);
    let soff = g.b.ins().imul_imm_s(f64_, i64::from(slot_layout::SIZE));
    let slots = g.b.ins().iconst(ptr, lm.jit.as_ptr() as i64);
    let slot = g.b.ins().iadd(slots, soff);
    let code = g.b.ins().load(ptr, MEM, slot, slot_layout::CODE);
    let arity = g.b.ins().load(types::I8, MEM, slot, slot_layout::ARITY);
    let nregs = g.b.ins().load(types::I16, MEM, slot, slot_layout::NREGS);
    let compiled = g.b.ins().icmp_imm_u(IntCC::NotEqual, code, 0);
    let args = g.b.ins().icmp_imm_s(IntCC::Equal, arity, i64::from(n));
    let depth = g.ctx_load(types::I32, ctx_layout::DEPTH);
    let shallow = g.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, depth, i64::from(MAX_DEPTH));
    let frames_end = g.ctx_load(types::I32, ctx_layout::FRAMES_END);
    let room = g.b.ins().icmp(IntCC::UnsignedLessThan, nframes, frames_end);
    let fuel = g.b.use_var(g.fuel);
    let fuel_left = g.b.ins().icmp_imm_s(IntCC::SignedGreaterThan, fuel, 1);
    let base = g.b.use_var(g.base);
    let nb = g.b.ins().iadd_imm_s(base, i64::from(a) + 1);
    let nregs32 = g.b.ins().uextend(types::I32, nregs);
    let need = g.b.ins().iadd(nb, nregs32);
    let regs_len = g.ctx_load(types::I32, ctx_layout::REGS_LEN);
    let fits = g.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, need, regs_len);
    let mut ok = g.and(compiled, args);
    for c in [shallow, room, fuel_left, fits] {
        ok = g.and(ok, c);
    }
    let go = g.b.create_block();
    g.b.ins().brif(ok, go, NONE, slow, NONE);
    g.b.switch_to_block(go);
    // The caller goes on after the call; the callee's frame, as the runtime makes it.
    let ret_pc = g.b.ins().iconst(types::I32, pc as i64 + 1);
    g.b.ins().store(MEM, ret_pc, top, frame_layout::PC - frame_layout::SIZE);
    let zero = g.b.ins().iconst(types::I32, 0);
    let not_init = g.b.ins().iconst(types::I32, i64::from(NOT_INIT));
    let ret = g.b.ins().iadd_imm_s(base, i64::from(a));
    for (v, o) in [
        (m, frame_layout::MODULE),
        (f, frame_layout::FUNC),
        (zero, frame_layout::PC),
        (nb, frame_layout::BASE),
        (ret, frame_layout::RET),
        (zero, frame_layout::CLOSURE),
        (not_init, frame_layout::INIT_OF),
    ] {
        g.b.ins().store(MEM, v, top, o);
    }
    let n1 = g.b.ins().iadd_imm_s(nframes, 1);
    g.ctx_store(n1, ctx_layout::NFRAMES);
    let d1 = g.b.ins().iadd_imm_s(depth, 1);
    g.ctx_store(d1, ctx_layout::DEPTH);
    let fuel = g.b.ins().iadd_imm_s(fuel, -1);
    g.b.def_var(g.fuel, fuel);
    g.save_fuel();
    let callee_regs = g.b.ins().iadd_imm_s(regs, i64::from(Gen::at(a) + layout::SIZE));
    g.ctx_store(callee_regs, ctx_layout::REGS);
    g.ctx_store(nb, ctx_layout::BASE);
    let entry = g.b.ins().iconst(types::I32, i64::from(CALL_ENTRY));
    g.ctx_store(entry, ctx_layout::PC);
    let call = g.b.ins().call_indirect(g.fn_sig, code, &[g.cx]);
    let status = g.b.inst_results(call)[0];
    let returned = g.b.ins().icmp_imm_s(IntCC::Equal, status, i64::from(RETURNED));
    let back = g.b.create_block();
    g.b.ins().brif(returned, back, NONE, g.exit_with, &[BlockArg::Value(status)]);
    g.b.switch_to_block(back);
    g.reload();
    g.b.ins().jump(done, NONE);
}

/// A return to a caller of the same module, with no `try` of this frame to drop and no
/// module's top level ending, done here as the runtime would do it. Anything else goes
/// to `slow`.
fn inline_return(g: &mut Gen, op: &Op, slow: Block) {
    let ptr = g.ptr;
    let nframes = g.ctx_load(types::I32, ctx_layout::NFRAMES);
    let deep = g.b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, nframes, 1);
    let check = g.b.create_block();
    g.b.ins().brif(deep, check, NONE, slow, NONE);
    g.b.switch_to_block(check);
    let frames = g.ctx_load(ptr, ctx_layout::FRAMES);
    let n64 = g.b.ins().uextend(types::I64, nframes);
    let off = g.b.ins().imul_imm_s(n64, i64::from(frame_layout::SIZE));
    let end = g.b.ins().iadd(frames, off);
    let (top, caller) = (-frame_layout::SIZE, -2 * frame_layout::SIZE);
    let init_of = g.b.ins().load(types::I32, MEM, end, top + frame_layout::INIT_OF);
    let tm = g.b.ins().load(types::I32, MEM, end, top + frame_layout::MODULE);
    let cm = g.b.ins().load(types::I32, MEM, end, caller + frame_layout::MODULE);
    let handler_top = g.ctx_load(types::I32, ctx_layout::HANDLER_TOP);
    let this = g.b.ins().iadd_imm_s(nframes, -1);
    let no_try = g.b.ins().icmp(IntCC::SignedLessThan, handler_top, this);
    let plain = g.b.ins().icmp_imm_s(IntCC::Equal, init_of, i64::from(NOT_INIT));
    let same = g.b.ins().icmp(IntCC::Equal, tm, cm);
    let ok = g.and(no_try, plain);
    let ok = g.and(ok, same);
    let go = g.b.create_block();
    g.b.ins().brif(ok, go, NONE, slow, NONE);
    g.b.switch_to_block(go);
    let regs = g.b.use_var(g.regs);
    let base = g.b.use_var(g.base);
    let base64 = g.b.ins().uextend(types::I64, base);
    let boff = g.b.ins().imul_imm_s(base64, i64::from(layout::SIZE));
    let regs0 = g.b.ins().isub(regs, boff);
    let ret = g.b.ins().load(types::I32, MEM, end, top + frame_layout::RET);
    let ret64 = g.b.ins().uextend(types::I64, ret);
    let roff = g.b.ins().imul_imm_s(ret64, i64::from(layout::SIZE));
    let dst = g.b.ins().iadd(regs0, roff);
    match *op {
        Op::Return { a } => g.copy(regs, Gen::at(a), dst, 0),
        _ => {
            let nil = g.b.ins().iconst(types::I8, i64::from(layout::TAG_NIL));
            g.b.ins().store(MEM, nil, dst, layout::TAG);
        }
    }
    let cb = g.b.ins().load(types::I32, MEM, end, caller + frame_layout::BASE);
    let cb64 = g.b.ins().uextend(types::I64, cb);
    let coff = g.b.ins().imul_imm_s(cb64, i64::from(layout::SIZE));
    let caller_regs = g.b.ins().iadd(regs0, coff);
    g.ctx_store(caller_regs, ctx_layout::REGS);
    g.ctx_store(cb, ctx_layout::BASE);
    g.ctx_store(this, ctx_layout::NFRAMES);
    let depth = g.ctx_load(types::I32, ctx_layout::DEPTH);
    let d1 = g.b.ins().iadd_imm_s(depth, -1);
    g.ctx_store(d1, ctx_layout::DEPTH);
    g.save_fuel();
    let s = g.b.ins().iconst(types::I32, i64::from(RETURNED));
    g.b.ins().return_(&[s]);
}

/// An element of an array that is nil, a bool, an int, a float, a string, an array, a
/// map or a closure read (`R[a] := R[b][R[c]]`) or written (`R[a][R[b]] := R[c]`) in
/// place, as `object::array_get`/`array_set` do it: the index in range, every address
/// checked against the heap's length, the written pages marked dirty. Anything else
/// (another kind of value, an index out of range, a page absent) goes to `slow`.
fn element(g: &mut Gen, pc: usize, write: bool, [a, b, c]: [u8; 3], slow: Block) {
    if write {
        let t = g.tag(c);
        let plain = g.b.ins().icmp_imm_u(IntCC::UnsignedLessThanOrEqual, t, i64::from(layout::TAG_CLOSURE));
        let (cell, at) = element_cell(g, a, b, Some(plain), slow);
        // The heap's tags are the registers' (up to closures); the payload as
        // `Gen::heap_payload` makes it.
        let t = g.tag(c);
        let t = g.b.ins().uextend(types::I64, t);
        let p = g.heap_payload(c, t);
        g.b.ins().store(MEM, t, cell, 0);
        g.b.ins().store(MEM, p, cell, 8);
        g.mark_dirty(at);
    } else {
        let (cell, _) = element_cell(g, b, c, None, slow);
        read_cell(g, cell, a, slow);
    }
    g.goto(pc, pc + 1);
}

/// `IterNext` over an array (`R[a]`, its cursor an int in `R[a+1]`): the element at the
/// cursor (and, for two names, the index) into the loop's variables and the cursor one
/// on, in place. The loop's end (the cursor out of range), another kind of element,
/// anything else iterated, goes to `slow`.
fn iter_next(g: &mut Gen, pc: usize, a: u8, n: u8, slow: Block) {
    let (cell, _) = element_cell(g, a, a + 1, None, slow);
    let i = g.int(a + 1);
    read_cell(g, cell, if n == 1 { a + 2 } else { a + 3 }, slow);
    if n != 1 {
        g.put(a + 2, layout::TAG_INT, i);
    }
    let next = g.b.ins().iadd_imm_s(i, 1);
    g.put(a + 1, layout::TAG_INT, next);
    g.goto(pc, pc + 1);
}

/// The address of element `R[idx_r]` of array `R[arr_r]` and its heap word index, in a
/// block where `R[arr_r]` is an array, `R[idx_r]` an int in its range, `also` (when
/// given) holds, no page is absent, and every address is inside the heap; otherwise
/// the code goes to `slow`.
fn element_cell(g: &mut Gen, arr_r: u8, idx_r: u8, also: Option<Val>, slow: Block) -> (Val, Val) {
    let mut ok = {
        let x = g.is_tag(arr_r, layout::TAG_ARRAY);
        let y = g.is_tag(idx_r, layout::TAG_INT);
        g.and(x, y)
    };
    if let Some(c) = also {
        ok = g.and(ok, c);
    }
    let absent = g.ctx_load(types::I32, ctx_layout::ABSENT_PAGES);
    let present = g.b.ins().icmp_imm_s(IntCC::Equal, absent, 0);
    ok = g.and(ok, present);
    let header = g.b.create_block();
    g.b.ins().brif(ok, header, NONE, slow, NONE);
    g.b.switch_to_block(header);
    let words = g.ctx_load(g.ptr, ctx_layout::HEAP_WORDS);
    let hlen = g.ctx_load(types::I64, ctx_layout::HEAP_LEN);
    let regs = g.b.use_var(g.regs);
    let arr = g.b.ins().load(types::I32, MEM, regs, Gen::at(arr_r) + layout::PAYLOAD);
    let arr = g.b.ins().uextend(types::I64, arr);
    let end = g.b.ins().iadd_imm_s(arr, 3);
    let fits = g.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, end, hlen);
    let element = g.b.create_block();
    g.b.ins().brif(fits, element, NONE, slow, NONE);
    g.b.switch_to_block(element);
    let i = g.int(idx_r);
    // An array's words: header, length, data (its elements from data + 1, two words each).
    heap_item(g, [words, hlen], arr, [8, 16], i, [1, 2], slow)
}

/// The address and heap word index of item `i` of a heap table whose object, at heap
/// word `obj`, holds the table's item count at byte offset `count_at` and its base (items
/// from base + 1, `1 << shift` words apart, `width` words each) at `base_at`, in a block
/// where `i` is below the count and every word of the item is inside the heap (`words`
/// and its length `hlen`); otherwise the code goes to `slow`. The object's header words
/// must be inside the heap already.
fn heap_item(
    g: &mut Gen,
    [words, hlen]: [Val; 2],
    obj: Val,
    [count_at, base_at]: [i32; 2],
    i: Val,
    [shift, width]: [i64; 2],
    slow: Block,
) -> (Val, Val) {
    let ooff = g.b.ins().ishl_imm_u(obj, 3);
    let hdr = g.b.ins().iadd(words, ooff);
    let count = g.b.ins().load(types::I64, MEM, hdr, count_at);
    let base = g.b.ins().load(types::I64, MEM, hdr, base_at);
    // `i < count` (unsigned: a negative index is out of range) and `i < hlen`, `base <
    // hlen`: no overflow below, the heap being far smaller than 2^60 words.
    let in_range = g.b.ins().icmp(IntCC::UnsignedLessThan, i, count);
    let small = g.b.ins().icmp(IntCC::UnsignedLessThan, i, hlen);
    let base_in = g.b.ins().icmp(IntCC::UnsignedLessThan, base, hlen);
    let at = g.b.ins().ishl_imm_u(i, shift);
    let at = g.b.ins().iadd(at, base);
    let at = g.b.ins().iadd_imm_s(at, 1);
    let at_end = g.b.ins().iadd_imm_s(at, width);
    let inside = g.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, at_end, hlen);
    let ok = g.and(in_range, small);
    let ok = g.and(ok, base_in);
    let ok = g.and(ok, inside);
    let go = g.b.create_block();
    g.b.ins().brif(ok, go, NONE, slow, NONE);
    g.b.switch_to_block(go);
    let aoff = g.b.ins().ishl_imm_u(at, 3);
    (g.b.ins().iadd(words, aoff), at)
}

/// The value in the heap cell at `cell` (tag word, payload word) into register `r`,
/// when it is nil, a bool, an int, a float, a string, an array, a map or a closure
/// (whose tags and payloads are the registers'); else the code goes to `slow`.
fn read_cell(g: &mut Gen, cell: Val, r: u8, slow: Block) {
    let t = g.b.ins().load(types::I64, MEM, cell, 0);
    let plain = g.b.ins().icmp_imm_u(IntCC::UnsignedLessThanOrEqual, t, i64::from(layout::TAG_CLOSURE));
    let put = g.b.create_block();
    g.b.ins().brif(plain, put, NONE, slow, NONE);
    g.b.switch_to_block(put);
    let p = g.b.ins().load(types::I64, MEM, cell, 8);
    let t8 = g.b.ins().ireduce(types::I8, t);
    let regs = g.b.use_var(g.regs);
    g.b.ins().store(MEM, t8, regs, Gen::at(r) + layout::TAG);
    g.b.ins().store(MEM, p, regs, Gen::at(r) + layout::PAYLOAD);
}

/// An index or field access, through the runtime's `access` helper.
fn access(g: &mut Gen, pc: usize, kind: u32, operands: [u32; 3]) {
    g.save_fuel();
    let f = g.b.ins().iconst(g.ptr, g.helpers.access as usize as i64);
    let mut args = vec![g.cx];
    for v in [pc as u32, kind, operands[0], operands[1], operands[2]] {
        args.push(g.b.ins().iconst(types::I32, i64::from(v)));
    }
    let call = g.b.ins().call_indirect(g.access_sig, f, &args);
    let r = g.b.inst_results(call)[0];
    if let Some(cell) = g.cache(pc) {
        // Where the runtime found the field (or u32::MAX), for next time.
        let entry = g.ctx_load(types::I32, ctx_layout::ENTRY);
        g.b.ins().store(MEM, entry, cell, 0);
    }
    g.reload();
    g.go_to_pc(r, pc + 1);
}

/// A field of a map read (`R[a] := R[b].k`: `regs` is `[b, a]`) or written (`R[a].k :=
/// R[c]`: `[a, c]`) in place, at the map entry where this instruction last found its
/// field (its inline cache, kept by `access`), when that entry's key is the module's own
/// string for `k` (what `object::map_get_field`'s fast path looks for first). The value
/// read or written is nil, a bool, an int, a float, a string, an array, a map or a
/// closure; every address is checked against the heap's length and the written pages
/// marked dirty. Anything else (another entry, another kind of value, a page absent, the
/// name's string not made yet) goes to `slow`.
fn field(g: &mut Gen, pc: usize, write: bool, [map_r, val_r]: [u8; 2], k: u32, slow: Block) {
    let Some(cache) = g.cache(pc) else {
        g.b.ins().jump(slow, NONE);
        return;
    };
    let mut ok = g.is_tag(map_r, layout::TAG_MAP);
    if write {
        let t = g.tag(val_r);
        let small = g.b.ins().icmp_imm_u(IntCC::UnsignedLessThanOrEqual, t, i64::from(layout::TAG_CLOSURE));
        ok = g.and(ok, small);
    }
    let absent = g.ctx_load(types::I32, ctx_layout::ABSENT_PAGES);
    let present = g.b.ins().icmp_imm_s(IntCC::Equal, absent, 0);
    ok = g.and(ok, present);
    let header = g.b.create_block();
    g.b.ins().brif(ok, header, NONE, slow, NONE);

    g.b.switch_to_block(header);
    let key = g.module_str(k);
    let key = g.b.ins().uextend(types::I64, key);
    let words = g.ctx_load(g.ptr, ctx_layout::HEAP_WORDS);
    let hlen = g.ctx_load(types::I64, ctx_layout::HEAP_LEN);
    let regs = g.b.use_var(g.regs);
    let m = g.b.ins().load(types::I32, MEM, regs, Gen::at(map_r) + layout::PAYLOAD);
    let m = g.b.ins().uextend(types::I64, m);
    let i = g.b.ins().load(types::I32, MEM, cache, 0);
    let i = g.b.ins().uextend(types::I64, i);
    // The map's words: header, live, entries, used, index.
    let end = g.b.ins().iadd_imm_s(m, 5);
    let fits = g.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, end, hlen);
    let made = g.b.ins().icmp_imm_u(IntCC::NotEqual, key, 0);
    let ok = g.and(fits, made);
    let look = g.b.create_block();
    g.b.ins().brif(ok, look, NONE, slow, NONE);

    g.b.switch_to_block(look);
    // Entry `i` of its entries (from entries + 1, four words each: key, value).
    let (entry, e) = heap_item(g, [words, hlen], m, [24, 16], i, [2, 4], slow);
    let kt = g.b.ins().load(types::I64, MEM, entry, 0);
    let kp = g.b.ins().load(types::I64, MEM, entry, 8);
    let is_str = g.b.ins().icmp_imm_s(IntCC::Equal, kt, tern_vm::value::tag::STR as i64);
    let same = g.b.ins().icmp(IntCC::Equal, kp, key);
    let hit = g.and(is_str, same);
    let go = g.b.create_block();
    g.b.ins().brif(hit, go, NONE, slow, NONE);

    g.b.switch_to_block(go);
    if write {
        let t = g.tag(val_r);
        let t = g.b.ins().uextend(types::I64, t);
        let p = g.heap_payload(val_r, t);
        g.b.ins().store(MEM, t, entry, 16);
        g.b.ins().store(MEM, p, entry, 24);
        let v = g.b.ins().iadd_imm_s(e, 2);
        g.mark_dirty(v);
        g.goto(pc, pc + 1);
    } else {
        let value = g.b.ins().iadd_imm_s(entry, 16);
        read_cell(g, value, val_r, slow);
        g.goto(pc, pc + 1);
    }
}

/// `x + y`, `x - y`, `x * y` or `x / y` on floats, as `op` (register or constant form) says.
fn float_op(g: &mut Gen, op: &Op, x: Val, y: Val) -> Val {
    match op {
        Op::Add { .. } | Op::AddK { .. } => g.b.ins().fadd(x, y),
        Op::Sub { .. } | Op::SubK { .. } => g.b.ins().fsub(x, y),
        Op::Mul { .. } | Op::MulK { .. } => g.b.ins().fmul(x, y),
        _ => g.b.ins().fdiv(x, y),
    }
}

/// Whether register `r` is falsy (nil or false), as an i8 0/1.
fn falsy(g: &mut Gen, r: u8) -> Val {
    let t = g.tag(r);
    let is_nil = g.b.ins().icmp_imm_s(IntCC::Equal, t, i64::from(layout::TAG_NIL));
    let is_bool = g.b.ins().icmp_imm_s(IntCC::Equal, t, i64::from(layout::TAG_BOOL));
    let regs = g.b.use_var(g.regs);
    let byte = g.b.ins().load(types::I8, MEM, regs, Gen::at(r) + layout::PAYLOAD);
    let is_false = g.b.ins().icmp_imm_s(IntCC::Equal, byte, 0);
    let false_bool = g.b.ins().band(is_bool, is_false);
    g.b.ins().bor(is_nil, false_bool)
}
