//! The interpreter: runs one process for a budget of reductions, then returns.
//!
//! It is stackless: a Tern call pushes a [`Frame`] onto the process's frame stack and
//! the same Rust loop goes on, so recursion depth is bounded by the configured frame
//! limit, not by the Rust stack. Every return from [`run`] is a safepoint: the process's
//! state is exactly its plain data, ready to be snapshotted, collected or moved.
//!
//! Reductions are counted at calls and backward jumps (BEAM's model), which bounds
//! the work between two safepoints.
//!
//! (One file of about 1,000 lines: the loop is one `match` over the opcode table, and an
//! instruction's case, its operand checks and the error it raises are read together.)

use crate::bytecode::{Const, ModuleHash, Op};
use crate::fmt::display;
use crate::heap::HeapError;
use crate::jit::{JitCtx, JitFn, JitMode};
use crate::object::{self, KeyError};
use crate::process::{Frame, Handler, ModuleState, Process, NOT_INIT};
use crate::runtime::{Exn, Host, LinkedModule, NativeCtx, Vm};
use crate::value::{FnRef, Value};

/// Why [`run`] returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The budget is used up; run it again later.
    Yielded,
    /// It cannot go on until something happens.
    Blocked(BlockReason),
    /// Its top level returned this value.
    Finished(Value),
    /// An uncaught error ended it.
    Failed(RuntimeError),
    /// It stopped at a call of a system-call native, which the node must carry out
    /// ([`sys_call`] describes it; [`sys_return`] completes it). Until then the process
    /// stays at the call, so running it again re-issues the call.
    Sys,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReason {
    /// It touched heap page N, which is not present; supply the page and run it again.
    PageFault(u32),
}

/// An uncaught error, with the Tern call stack where it happened (innermost first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeError {
    pub message: String,
    pub trace: Vec<TraceEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    pub function: String,
    pub file: String,
    pub line: u32,
}

impl std::fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.trace.first() {
            Some(t) => write!(f, "{}:{}: error: {}", t.file, t.line, self.message)?,
            None => write!(f, "error: {}", self.message)?,
        }
        for t in &self.trace {
            write!(f, "\n    at {} ({}:{})", t.function, t.file, t.line)?;
        }
        Ok(())
    }
}

enum Exit {
    Yield,
    Gc,
    Finished(Value),
    Exn(Exn),
    Import {
        a: u8,
        hash: ModuleHash,
    },
    /// Compiled code is worth entering at the top frame's pc (see [`jit_run`]).
    Jit(JitFn),
    /// One instruction done (`exec::<true>`, for compiled code's [`jit_step`]).
    Step,
}

/// Runs `proc` for at most `budget` reductions.
pub fn run(proc: &mut Process, vm: &Vm, host: &mut dyn Host, budget: u32) -> Outcome {
    // Compiled code may be evicted from the cache while it runs (`crate::jit`): the
    // compiler frees it only once every worker pinned when it evicted it has unpinned.
    // Pinned here, before any slot's code is read, for the whole slice (a pin costs a
    // fence: once per slice, not per entry).
    let _pin = if vm.jit.is_some() { Some(crossbeam_epoch::pin()) } else { None };
    run_pinned(proc, vm, host, budget)
}

/// [`run`] for a caller that holds a `crossbeam_epoch` pin for as long as this runs
/// whenever `vm` has a JIT (the scheduler pins once per time slice, which makes several
/// calls here: one per system call).
pub fn run_pinned(proc: &mut Process, vm: &Vm, host: &mut dyn Host, budget: u32) -> Outcome {
    let mut budget = i64::from(budget.max(1));
    // Where the last heap-limit collection happened: the same instruction failing again
    // with no progress in between means the heap really is full.
    let mut limit_retry: Option<(usize, u32, u64)> = None;
    loop {
        if proc.frames.is_empty() {
            return Outcome::Failed(RuntimeError { message: "the process has nothing left to run".into(), trace: vec![] });
        }
        let exit = match exec::<false>(proc, vm, host, &mut budget) {
            Exit::Jit(f) => match jit_run(proc, vm, host, &mut budget, f) {
                Some(exit) => exit,
                None => continue,
            },
            exit => exit,
        };
        let exn = match exit {
            Exit::Step | Exit::Jit(_) => continue,
            Exit::Yield => return Outcome::Yielded,
            Exit::Finished(v) => return Outcome::Finished(v),
            Exit::Gc => {
                match proc.collect_garbage() {
                    // Pages still elsewhere: the collection waits for them. No memory for
                    // the collector's tables: it runs again when the heap is full.
                    Ok(()) | Err(HeapError::Fault(_) | HeapError::OutOfMemory(_)) => {}
                    Err(_) => return Outcome::Failed(damaged(proc)),
                }
                if budget <= 0 {
                    return Outcome::Yielded;
                }
                continue;
            }
            Exit::Import { a, hash } => match import(proc, vm, a, hash) {
                Ok(()) => continue,
                Err(e) => e,
            },
            Exit::Exn(e) => e,
        };
        let exn = match exn {
            Exn::Heap(HeapError::Fault(p)) => return Outcome::Blocked(BlockReason::PageFault(p)),
            // The heap is full, or the machine refused it more memory: collect and retry
            // once, then it is an error of this process alone (catchable).
            Exn::Heap(full) if full.is_full() => {
                let here = (proc.frames.len(), proc.frames.last().map_or(0, |f| f.pc), proc.reductions);
                if limit_retry != Some(here) {
                    limit_retry = Some(here);
                    match proc.collect_garbage() {
                        Ok(()) => continue,
                        // Full, with pages elsewhere: wait for them, then collect.
                        Err(HeapError::Fault(p)) => {
                            return Outcome::Blocked(BlockReason::PageFault(p));
                        }
                        // Not even room to collect: the heap stays full.
                        Err(HeapError::OutOfMemory(_)) => {}
                        Err(_) => return Outcome::Failed(damaged(proc)),
                    }
                }
                Exn::Error(proc.heap.full_error(full))
            }
            Exn::Heap(HeapError::Corrupt) => return Outcome::Failed(damaged(proc)),
            Exn::Sys => return Outcome::Sys,
            other => other,
        };
        if let Err(e) = throw(proc, exn) {
            return Outcome::Failed(e);
        }
    }
}

fn damaged(proc: &Process) -> RuntimeError {
    RuntimeError { message: "internal error: damaged heap reference".into(), trace: backtrace(proc) }
}

/// A pending system call: the native, and where its arguments and result live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SysCall {
    pub native: u32,
    /// Absolute register of the first argument.
    pub args: usize,
    pub nargs: usize,
    /// Absolute register receiving the result.
    pub dst: usize,
}

/// The system call the process is stopped at (after [`Outcome::Sys`]).
pub fn sys_call(proc: &Process) -> Option<SysCall> {
    let f = proc.frames.last()?;
    let op = proc.linked.get(f.module as usize)?.module.functions.get(f.func as usize)?.code.get(f.pc as usize)?;
    let Op::Call { a, n } = *op else { return None };
    let dst = f.base as usize + usize::from(a);
    let Value::Native(native) = *proc.regs.get(dst)? else { return None };
    let nargs = usize::from(n);
    if dst + 1 + nargs > proc.regs.len() {
        return None;
    }
    Some(SysCall { native, args: dst + 1, nargs, dst })
}

/// Completes the system call the process is stopped at with result `v`.
pub fn sys_return(proc: &mut Process, call: SysCall, v: Value) {
    sys_return_to(proc, call.dst, v);
}

/// [`sys_return`] with only the call's result register known.
pub fn sys_return_to(proc: &mut Process, dst: usize, v: Value) {
    proc.regs[dst] = v;
    if let Some(f) = proc.frames.last_mut() {
        f.pc += 1;
    }
    proc.reductions += 1;
}

/// Completes the system call the process is stopped at by running module `hash`'s top
/// level (again, if it has run before) as a call whose value is the call's result: how a
/// REPL's shell process runs each line (`node/shell.rs`).
pub fn sys_enter_module(proc: &mut Process, vm: &Vm, call: SysCall, hash: ModuleHash) -> Result<(), Exn> {
    let slot = proc.link(hash, vm).map_err(|e| Exn::Error(e.to_string()))?;
    if proc.modules[slot as usize].state == ModuleState::Running {
        return Err(Exn::msg(format!("circular import of {}", proc.linked[slot as usize].module.name)));
    }
    if proc.frames.len() >= proc.max_frames as usize {
        return Err(Exn::msg(format!("stack overflow: more than {} nested calls", proc.max_frames)));
    }
    proc.modules[slot as usize].state = ModuleState::Running;
    if let Some(f) = proc.frames.last_mut() {
        f.pc += 1;
    }
    proc.reductions += 1;
    let nregs = usize::from(proc.linked[slot as usize].module.functions[0].nregs);
    let base = proc.regs_top();
    if proc.regs.len() < base + nregs {
        proc.regs.resize(base + nregs, Value::Nil);
    }
    proc.regs[base..base + nregs].fill(Value::Nil);
    proc.frames.push(Frame { module: slot, func: 0, pc: 0, base: base as u32, ret: call.dst as u32, closure: 0, init_of: slot });
    Ok(())
}

/// Ends the line a REPL's shell process runs (Ctrl-C at the REPL): its frames and their
/// `try`s are dropped and the shell loop's own `try` gets the error `message`, where the
/// line was. False (nothing done) when it is not a shell or runs no line.
pub fn interrupt_shell(proc: &mut Process, message: &str) -> bool {
    if !proc.sys.shell || proc.frames.len() <= 1 || !proc.handlers.iter().any(|h| h.depth == 0) {
        return false;
    }
    proc.handlers.retain(|h| h.depth == 0);
    proc.sys.deadline_us = None;
    proc.sys.io_result = None;
    throw(proc, Exn::Error(message.to_string())).is_ok()
}

/// Raises `exn` in the process at the system call it is stopped at: the innermost
/// `try` catches it, or the process fails with the returned error.
pub fn sys_raise(proc: &mut Process, exn: Exn) -> Result<(), RuntimeError> {
    throw(proc, exn)
}

/// Hands an error to the innermost `try` of the process, or describes it if none.
fn throw(proc: &mut Process, exn: Exn) -> Result<(), RuntimeError> {
    let message = |proc: &Process, exn: Exn| match exn {
        Exn::Error(m) => m,
        Exn::Raise(v) => display(&proc.heap, &proc.linked, v).unwrap_or_else(|_| "<unprintable value>".into()),
        Exn::Heap(e) => e.to_string(),
        Exn::Sys => "system call outside a node".into(),
    };
    let Some(h) = proc.handlers.pop() else {
        return Err(RuntimeError { message: message(proc, exn), trace: backtrace(proc) });
    };
    // A REPL shell's own `try` (around the line it runs) gets the error as the text a
    // process failing with it would print, where the line raised it (without the shell's
    // loop at the bottom of the backtrace).
    let exn = if proc.sys.shell && h.depth == 0 && proc.frames.len() > 1 && !matches!(exn, Exn::Heap(_)) {
        let mut trace = backtrace(proc);
        trace.pop();
        Exn::Error(RuntimeError { message: message(proc, exn), trace }.to_string())
    } else {
        exn
    };
    while proc.frames.len() > h.depth as usize + 1 {
        if let Some(f) = proc.frames.pop() {
            if f.init_of != NOT_INIT {
                proc.modules[f.init_of as usize].state = ModuleState::NotRun;
            }
        }
    }
    let value = match exn {
        Exn::Raise(v) => v,
        Exn::Error(m) => match object::alloc_str(&mut proc.heap, &m) {
            Ok(a) => Value::Str(a),
            Err(_) => return Err(RuntimeError { message: format!("{m} (and no memory left to handle it)"), trace: backtrace(proc) }),
        },
        Exn::Heap(e) => return Err(RuntimeError { message: e.to_string(), trace: backtrace(proc) }),
        Exn::Sys => return Err(RuntimeError { message: "system call outside a node".into(), trace: backtrace(proc) }),
    };
    proc.regs[h.reg as usize] = value;
    if let Some(f) = proc.frames.last_mut() {
        f.pc = h.pc;
    }
    Ok(())
}

/// The Tern call stack, innermost first.
pub fn backtrace(proc: &Process) -> Vec<TraceEntry> {
    let n = proc.frames.len();
    proc.frames
        .iter()
        .enumerate()
        .rev()
        .map(|(i, f)| {
            let lm = proc.linked.get(f.module as usize);
            let func = lm.and_then(|m| m.module.functions.get(f.func as usize));
            // Callers' pcs point after their call instruction.
            let pc = if i + 1 == n { f.pc as usize } else { (f.pc as usize).saturating_sub(1) };
            TraceEntry {
                function: func.map_or_else(|| "?".into(), |fu| if fu.name.is_empty() { "<top level>".into() } else { fu.name.clone() }),
                file: lm.map_or_else(|| "?".into(), |m| m.module.name.clone()),
                line: func.and_then(|fu| fu.lines.get(pc).copied()).unwrap_or(0),
            }
        })
        .collect()
}

fn import(proc: &mut Process, vm: &Vm, a: u8, hash: ModuleHash) -> Result<(), Exn> {
    let slot = proc.link(hash, vm).map_err(|e| Exn::Error(e.to_string()))?;
    let frame = *proc.frames.last().ok_or(Exn::Heap(HeapError::Corrupt))?;
    let dst = frame.base as usize + usize::from(a);
    match proc.modules[slot as usize].state {
        ModuleState::Ready(v) => {
            proc.regs[dst] = v;
            if let Some(f) = proc.frames.last_mut() {
                f.pc += 1;
            }
        }
        ModuleState::Running => return Err(Exn::msg(format!("circular import of {}", proc.linked[slot as usize].module.name))),
        ModuleState::NotRun => {
            if proc.frames.len() >= proc.max_frames as usize {
                return Err(Exn::msg(format!("stack overflow: more than {} nested calls", proc.max_frames)));
            }
            proc.modules[slot as usize].state = ModuleState::Running;
            if let Some(f) = proc.frames.last_mut() {
                f.pc += 1;
            }
            let nregs = usize::from(proc.linked[slot as usize].module.functions[0].nregs);
            let base = proc.regs_top();
            if proc.regs.len() < base + nregs {
                proc.regs.resize(base + nregs, Value::Nil);
            }
            proc.regs[base..base + nregs].fill(Value::Nil);
            proc.frames.push(Frame { module: slot, func: 0, pc: 0, base: base as u32, ret: dst as u32, closure: 0, init_of: slot });
        }
    }
    Ok(())
}

/// At a function's first instruction and at loop back edges: counts toward hotness, has
/// the function compiled once hot, and gives its compiled code when it is worth
/// entering at `pc` (see `crate::jit`). Out of line: the interpreter's loop stays small.
#[inline(never)]
fn jit_entry(compiler: &dyn crate::jit::Compiler, vm: &Vm, lm: &std::sync::Arc<LinkedModule>, func: u32, pc: usize) -> Option<JitFn> {
    let slot = &lm.jit[func as usize];
    if !slot.is_compiled() {
        let always = vm.config.jit == JitMode::Always;
        if slot.heat(if always { 1 } else { vm.config.jit_threshold }) {
            compiler.compile(lm, func, always);
        }
    }
    slot.entry(pc)
}

/// What the runtime's entry points for compiled code reach through `JitCtx::rt`.
struct JitRt<'a> {
    proc: *mut Process,
    vm: &'a Vm,
    host: *mut (dyn Host + 'a),
    /// Why the runtime took over, when the interpreter's loop must not simply go on.
    exit: Option<Exit>,
}

/// Runs compiled code `f` from the top frame's pc (`exec` found it worth entering
/// there). None: the interpreter goes on from the frames; else what `exec` would have
/// returned.
fn jit_run(proc: &mut Process, vm: &Vm, host: &mut dyn Host, budget: &mut i64, f: JitFn) -> Option<Exit> {
    let top = *proc.frames.last()?;
    let fuel = *budget;
    let mut ctx = JitCtx {
        regs: std::ptr::null_mut(),
        globals: std::ptr::null_mut(),
        pc: top.pc,
        depth: 1,
        fuel,
        rt: std::ptr::null_mut(),
        frames: std::ptr::null_mut(),
        nframes: 0,
        frames_end: 0,
        base: 0,
        regs_len: 0,
        handler_top: -1,
        entry: u32::MAX,
        heap_words: std::ptr::null_mut(),
        heap_len: 0,
        heap_dirty: std::ptr::null_mut(),
        page_shift: 0,
        absent_pages: 1,
        strs: std::ptr::null(),
    };
    jit_sync_out(&mut ctx, proc);
    let mut rt = JitRt { proc, vm, host, exit: None };
    ctx.rt = (&mut rt as *mut JitRt).cast();
    // SAFETY: code compiled for this frame's function by the node's compiler. It reads
    // and writes only the running frame's registers (verified operands, all present) and
    // its module's globals (verified indices), and reaches everything else through the
    // helpers below, which use the process only through `rt.proc` while it runs (nothing
    // else touches the process until it returns).
    let status = unsafe { f(&mut ctx) };
    let exit = rt.exit.take();
    jit_sync_in(&ctx, proc);
    *budget = ctx.fuel;
    proc.reductions += (fuel - ctx.fuel).max(0) as u64;
    proc.jit_rest.ran(fuel - ctx.fuel, proc.reductions);
    if status == crate::jit::LEFT_AT {
        proc.frames.last_mut()?.pc = ctx.pc;
    }
    match exit {
        Some(e) => Some(e),
        None if *budget <= 0 => Some(Exit::Yield),
        None if proc.heap.gc_wanted => Some(Exit::Gc),
        None => None,
    }
}

/// The entry points compiled code calls ([`crate::jit::Helpers`]).
pub(crate) fn helpers() -> crate::jit::Helpers {
    crate::jit::Helpers { step: jit_step, call: jit_call, ret: jit_ret, access: jit_access }
}

/// Before the runtime uses the process: the frames compiled code pushed and popped.
fn jit_sync_in(ctx: &JitCtx, proc: &mut Process) {
    let n = ctx.nframes as usize;
    assert!(n <= proc.frames.capacity(), "compiled code pushed frames beyond the frame stack");
    // SAFETY: compiled code writes whole frames below `frames_end` (at most the
    // capacity) before counting them in `nframes`; frames are plain data.
    unsafe { proc.frames.set_len(n) };
}

/// The heap as compiled code sees it (after anything that may have grown it).
fn jit_heap_out(ctx: &mut JitCtx, heap: &mut crate::heap::Heap) {
    let v = heap.raw_view();
    ctx.heap_words = v.words;
    ctx.heap_len = v.len;
    ctx.heap_dirty = v.dirty;
    ctx.page_shift = v.page_shift;
    ctx.absent_pages = v.absent_pages;
}

/// After the runtime used the process, before compiled code goes on: the frame on top,
/// its registers and globals, the heap, and room on the frame stack for calls from
/// compiled code.
fn jit_sync_out(ctx: &mut JitCtx, proc: &mut Process) {
    jit_heap_out(ctx, &mut proc.heap);
    // Room that grows with the depth (a call from compiled code that finds none goes
    // through `jit_call`, which pushes the frame and makes room again, doubling it, up
    // to the depth limit). A fixed 64 frames reallocated the frame stack of every
    // process that ever ran compiled code: 1.8 KB each, away from the rest of it.
    let len = proc.frames.len();
    let more = len.max(4).min((proc.max_frames as usize).saturating_sub(len));
    if proc.frames.capacity() - len < 2 && more > 0 {
        proc.frames.reserve(more);
    }
    ctx.frames = proc.frames.as_mut_ptr();
    ctx.nframes = proc.frames.len() as u32;
    ctx.frames_end = (proc.frames.capacity() as u32).min(proc.max_frames);
    ctx.regs_len = proc.regs.len().min(u32::MAX as usize) as u32;
    ctx.handler_top = proc.handlers.last().map_or(-1, |h| h.depth as i32);
    if let Some(top) = proc.frames.last() {
        let m = &proc.modules[top.module as usize];
        let gbase = m.globals_base as usize;
        ctx.strs = m.strs.as_ptr();
        ctx.base = top.base;
        // SAFETY: a pushed frame's registers exist, and so do its module's globals.
        unsafe {
            ctx.regs = proc.regs.as_mut_ptr().add(top.base as usize);
            ctx.globals = proc.globals.as_mut_ptr().add(gbase);
        }
    }
}

/// `Helpers::step`: the interpreter runs instruction `pc` of the frame on top.
unsafe extern "C" fn jit_step(ctx: *mut JitCtx, pc: u32) -> u32 {
    // SAFETY: compiled code passes the context `jit_run` made, whose `rt` is a live
    // `JitRt` whose process nothing else uses meanwhile.
    let ctx = unsafe { &mut *ctx };
    // SAFETY: `jit_run`'s context: a live `JitRt`, its process and host used by nothing else.
    let rt = unsafe { &mut *ctx.rt.cast::<JitRt>() };
    // SAFETY: `jit_run`'s context: a live `JitRt`, its process and host used by nothing else.
    let proc = unsafe { &mut *rt.proc };
    // SAFETY: `jit_run`'s context: a live `JitRt`, its process and host used by nothing else.
    let host = unsafe { &mut *rt.host };
    jit_sync_in(ctx, proc);
    let depth = proc.frames.len();
    let Some(top) = proc.frames.last_mut() else { return u32::MAX };
    top.pc = pc;
    let exit = exec::<true>(proc, rt.vm, host, &mut ctx.fuel);
    jit_sync_out(ctx, proc);
    match exit {
        Exit::Step if proc.frames.len() == depth && !proc.heap.gc_wanted => proc.frames.last().map_or(u32::MAX, |f| f.pc),
        Exit::Step => u32::MAX,
        other => {
            rt.exit = Some(other);
            u32::MAX
        }
    }
}

/// `Helpers::call`: a call from compiled code. A Tern function's frame is pushed as the
/// interpreter pushes it; its compiled code, when it has some, is given back to be called
/// directly. Natives, and calls that raise an error, run through [`jit_step`].
unsafe extern "C" fn jit_call(ctx_ptr: *mut JitCtx, pc: u32) -> usize {
    // SAFETY: as in `jit_step`.
    let ctx = unsafe { &mut *ctx_ptr };
    // SAFETY: `jit_run`'s context: a live `JitRt`, its process and host used by nothing else.
    let rt = unsafe { &mut *ctx.rt.cast::<JitRt>() };
    // SAFETY: `jit_run`'s context: a live `JitRt`, its process and host used by nothing else.
    let proc = unsafe { &mut *rt.proc };
    let vm = rt.vm;
    jit_sync_in(ctx, proc);
    let step = |pc: u32| -> usize {
        // SAFETY: the same context, passed on.
        match unsafe { jit_step(ctx_ptr, pc) } {
            u32::MAX => 0,
            next if next == pc + 1 => 1,
            _ => 0,
        }
    };
    let Some(&top) = proc.frames.last() else { return 0 };
    let lm = &proc.linked[top.module as usize];
    let Some(&Op::Call { a, n }) = lm.module.functions[top.func as usize].code.get(pc as usize) else { return 0 };
    let dst = top.base as usize + usize::from(a);
    let (fref, clo) = match proc.regs[dst] {
        Value::Func(f) => (f, 0),
        Value::Closure(c) => match object::closure_fn(&proc.heap, c) {
            Ok(f) => (f, c),
            Err(_) => return step(pc),
        },
        Value::Native(id) => {
            // As the interpreter's `Call` runs a native.
            let Some(def) = vm.natives.get(id) else { return step(pc) };
            if n < def.min_args || n > def.max_args {
                return step(pc);
            }
            let args = &proc.regs[dst + 1..dst + 1 + usize::from(n)];
            // SAFETY: the host `jit_run` was given, used by nothing else meanwhile.
            let host = unsafe { &mut *rt.host };
            let mut nctx = NativeCtx { heap: &mut proc.heap, host, rng: &mut proc.rng, linked: &proc.linked[..] };
            let result = (def.f)(&mut nctx, args);
            let Some(top) = proc.frames.last_mut() else { return 0 };
            match result {
                Ok(v) => {
                    proc.regs[dst] = v;
                    jit_heap_out(ctx, &mut proc.heap);
                    ctx.fuel -= 1;
                    if ctx.fuel <= 0 || proc.heap.gc_wanted {
                        top.pc = pc + 1;
                        return 0;
                    }
                    return 1;
                }
                Err(e) => {
                    top.pc = pc;
                    rt.exit = Some(Exit::Exn(e));
                    return 0;
                }
            }
        }
        _ => return step(pc),
    };
    let Some(tlm) = proc.linked.get(fref.module as usize) else { return step(pc) };
    let Some(tf) = tlm.module.functions.get(fref.func as usize) else { return step(pc) };
    if n != tf.arity || proc.frames.len() >= proc.max_frames as usize {
        return step(pc);
    }
    let nb = dst + 1;
    let need = nb + usize::from(tf.nregs);
    if proc.regs.len() < need {
        proc.regs.resize(need.max(proc.regs.len() * 2), Value::Nil);
    }
    proc.regs[nb + usize::from(n)..need].fill(Value::Nil);
    if let Some(f) = proc.frames.last_mut() {
        f.pc = pc + 1;
    }
    proc.frames.push(Frame {
        module: fref.module,
        func: fref.func,
        pc: 0,
        base: nb as u32,
        ret: dst as u32,
        closure: clo,
        init_of: NOT_INIT,
    });
    ctx.fuel -= 1;
    jit_sync_out(ctx, proc);
    if ctx.fuel <= 0 || proc.heap.gc_wanted || ctx.depth >= crate::jit::MAX_DEPTH {
        return 0;
    }
    let tlm = proc.linked[fref.module as usize].clone();
    let code = match vm.jit.as_deref() {
        Some(compiler) if vm.config.jit != JitMode::Off && tlm.jit[fref.func as usize].visit(0) => {
            jit_entry(compiler, vm, &tlm, fref.func, 0)
        }
        _ => None,
    };
    match code {
        Some(f) => {
            ctx.depth += 1;
            ctx.pc = 0;
            f as usize
        }
        None => 0,
    }
}

/// `Helpers::access`: an index or field read or write, as the interpreter does it when
/// it finds what it looks for; anything else (an error, a missing key, a page not here)
/// through [`jit_step`]. Frames and registers stay where they are.
unsafe extern "C" fn jit_access(ctx_ptr: *mut JitCtx, pc: u32, kind: u32, a: u32, b: u32, c: u32) -> u32 {
    use crate::jit::{ACCESS_GET_FIELD, ACCESS_GET_INDEX, ACCESS_SET_FIELD, ACCESS_SET_INDEX};
    // SAFETY: as in `jit_step`; `ctx.regs` is the running frame's register 0 and the
    // operands are its verified registers (`b` a constant's index for a field write).
    let ctx = unsafe { &mut *ctx_ptr };
    // SAFETY: `jit_run`'s context: a live `JitRt`, its process and host used by nothing else.
    let rt = unsafe { &mut *ctx.rt.cast::<JitRt>() };
    // SAFETY: `jit_run`'s context: a live `JitRt`, its process and host used by nothing else.
    let proc = unsafe { &mut *rt.proc };
    let regs = ctx.regs;
    // SAFETY: a verified register operand of the running frame (`ctx.regs` is its register 0).
    let r = |i: u32| unsafe { *regs.add(i as usize) };
    // SAFETY: a verified register operand of the running frame (`ctx.regs` is its register 0).
    let put = |i: u32, v: Value| unsafe { *regs.add(i as usize) = v };
    // A field's name: the heap string of constant `k` of the running frame's module.
    let field = |proc: &Process, k: u32| -> Option<crate::value::Addr> {
        // SAFETY: `frames[..nframes]` are the process's frames (see `jit_sync_in`).
        let top = unsafe { *ctx.frames.add(ctx.nframes as usize - 1) };
        proc.modules.get(top.module as usize)?.strs.get(k as usize).copied().filter(|&s| s != 0)
    };
    let heap = &mut proc.heap;
    // The entry a field was found in, for the compiled code's inline cache.
    let mut entry = u32::MAX;
    let done = match kind {
        ACCESS_GET_INDEX => match (r(b), r(c)) {
            (Value::Array(arr), Value::Int(i)) => object::array_get(heap, arr, i).ok().flatten().map(|v| put(a, v)).is_some(),
            (Value::Map(m), k) => object::map_get(heap, m, k).ok().flatten().map(|v| put(a, v)).is_some(),
            _ => false,
        },
        ACCESS_SET_INDEX => match (r(a), r(b)) {
            (Value::Array(arr), Value::Int(i)) => object::array_set(heap, arr, i, r(c)) == Ok(true),
            (Value::Map(m), k) => object::map_set(heap, m, k, r(c)).is_ok(),
            _ => false,
        },
        ACCESS_GET_FIELD => match (r(b), field(proc, c)) {
            (Value::Map(m), Some(key)) => match object::map_field_entry(&proc.heap, m, key) {
                Ok(Some(i)) => {
                    entry = i as u32;
                    object::map_entry_value(&proc.heap, m, i).map(|v| put(a, v)).is_ok()
                }
                _ => false,
            },
            _ => false,
        },
        ACCESS_SET_FIELD => match (r(a), field(proc, b)) {
            (Value::Map(m), Some(key)) => match object::map_field_entry(&proc.heap, m, key) {
                Ok(Some(i)) => {
                    entry = i as u32;
                    object::map_entry_set(&mut proc.heap, m, i, r(c)).is_ok()
                }
                Ok(None) => object::map_set_field(&mut proc.heap, m, key, r(c)).is_ok(),
                Err(_) => false,
            },
            _ => false,
        },
        _ => false,
    };
    ctx.entry = entry;
    if !done {
        // SAFETY: the same context, passed on.
        return unsafe { jit_step(ctx_ptr, pc) };
    }
    if proc.heap.gc_wanted {
        jit_sync_in(ctx, proc);
        if let Some(top) = proc.frames.last_mut() {
            top.pc = pc + 1;
        }
        return u32::MAX;
    }
    jit_heap_out(ctx, &mut proc.heap);
    pc + 1
}

/// `Helpers::ret`: a return from compiled code, as the interpreter's `ret!` does it. The
/// last frame's return (the process ends) runs through [`jit_step`].
unsafe extern "C" fn jit_ret(ctx_ptr: *mut JitCtx, pc: u32) -> u32 {
    // SAFETY: as in `jit_step`.
    let ctx = unsafe { &mut *ctx_ptr };
    // SAFETY: `jit_run`'s context: a live `JitRt`, its process and host used by nothing else.
    let rt = unsafe { &mut *ctx.rt.cast::<JitRt>() };
    // SAFETY: `jit_run`'s context: a live `JitRt`, its process and host used by nothing else.
    let proc = unsafe { &mut *rt.proc };
    jit_sync_in(ctx, proc);
    let Some(&top) = proc.frames.last() else { return crate::jit::LEFT };
    let v = match proc.linked[top.module as usize].module.functions[top.func as usize].code.get(pc as usize) {
        Some(&Op::Return { a }) => proc.regs[top.base as usize + usize::from(a)],
        Some(Op::ReturnNil {}) => Value::Nil,
        _ => return crate::jit::LEFT,
    };
    if proc.frames.len() == 1 {
        // SAFETY: the same context, passed on.
        unsafe { jit_step(ctx_ptr, pc) };
        return crate::jit::LEFT;
    }
    let Some(done) = proc.frames.pop() else { return crate::jit::LEFT };
    let depth = proc.frames.len() as u32;
    while proc.handlers.last().is_some_and(|h| h.depth >= depth) {
        proc.handlers.pop();
    }
    if done.init_of != NOT_INIT {
        proc.modules[done.init_of as usize].state = ModuleState::Ready(v);
    }
    proc.regs[done.ret as usize] = v;
    jit_sync_out(ctx, proc);
    ctx.depth -= 1;
    crate::jit::RETURNED
}

fn key_exn(e: KeyError) -> Exn {
    match e {
        KeyError::Heap(h) => Exn::Heap(h),
        KeyError::BadKey(t) => Exn::msg(format!("{t} cannot be a map key")),
    }
}

fn type_err(what: &str, x: Value, y: Value) -> Exn {
    Exn::msg(format!("cannot {what} {} and {}", x.type_name(), y.type_name()))
}

/// Arithmetic on anything but two ints (the fast path is inline in the loop).
fn arith(heap: &mut crate::heap::Heap, op: Op, x: Value, y: Value) -> Result<Value, Exn> {
    type IntOp = fn(i64, i64) -> Option<i64>;
    type FloatOp = fn(f64, f64) -> f64;
    let (name, iop, fop): (&str, IntOp, FloatOp) = match op {
        Op::Add { .. } => ("add", i64::checked_add, |a, b| a + b),
        Op::Sub { .. } => ("subtract", i64::checked_sub, |a, b| a - b),
        Op::Mul { .. } => ("multiply", i64::checked_mul, |a, b| a * b),
        Op::Div { .. } => ("divide", i64::checked_div, |a, b| a / b),
        _ => ("take the remainder of", i64::checked_rem, |a, b| a % b),
    };
    match (x, y) {
        (Value::Int(a), Value::Int(b)) => {
            if b == 0 && matches!(op, Op::Div { .. } | Op::Mod { .. }) {
                return Err(Exn::msg(if matches!(op, Op::Div { .. }) { "division by zero" } else { "remainder by zero" }));
            }
            iop(a, b).map(Value::Int).ok_or_else(|| Exn::msg(format!("integer overflow: cannot {name} {a} and {b}")))
        }
        (Value::Float(a), Value::Float(b)) => Ok(Value::Float(fop(a, b))),
        (Value::Int(a), Value::Float(b)) => Ok(Value::Float(fop(a as f64, b))),
        (Value::Float(a), Value::Int(b)) => Ok(Value::Float(fop(a, b as f64))),
        (Value::Str(a), Value::Str(b)) if matches!(op, Op::Add { .. }) => {
            let mut s = Vec::with_capacity(64);
            s.extend_from_slice(object::str_bytes(heap, a)?);
            s.extend_from_slice(object::str_bytes(heap, b)?);
            Ok(Value::Str(object::alloc_str_bytes(heap, &s)?))
        }
        _ => Err(type_err(name, x, y)),
    }
}

/// `&`, `|`, `^`, `<<` and `>>`: on ints only. A shift count outside `0..=63` is an
/// error, and so is a `<<` that shifts out bits (the result would not be `x * 2^n`),
/// as integer overflow is for `*`; `>>` is arithmetic (rounds toward minus infinity).
fn bitwise(op: Op, x: Value, y: Value) -> Result<Value, Exn> {
    let (Value::Int(a), Value::Int(b)) = (x, y) else {
        let name = match op {
            Op::BitAnd { .. } => "bitwise-and",
            Op::BitOr { .. } => "bitwise-or",
            Op::BitXor { .. } => "bitwise-xor",
            Op::Shl { .. } => "shift left",
            _ => "shift right",
        };
        return Err(type_err(name, x, y));
    };
    Ok(Value::Int(match op {
        Op::BitAnd { .. } => a & b,
        Op::BitOr { .. } => a | b,
        Op::BitXor { .. } => a ^ b,
        _ => {
            if !(0..64).contains(&b) {
                return Err(Exn::msg(format!("shift count {b} out of range 0..63")));
            }
            if matches!(op, Op::Shr { .. }) {
                a >> b
            } else {
                let r = a << b;
                if r >> b != a {
                    return Err(Exn::msg(format!("integer overflow: cannot shift {a} left by {b}")));
                }
                r
            }
        }
    }))
}

/// `x < y` (or `<=` when `or_equal`) for anything but two ints.
fn less(heap: &crate::heap::Heap, x: Value, y: Value, or_equal: bool) -> Result<bool, Exn> {
    let ord = match (x, y) {
        (Value::Int(a), Value::Int(b)) => a.partial_cmp(&b),
        (Value::Float(a), Value::Float(b)) => a.partial_cmp(&b),
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => crate::value::num_cmp(x, y),
        (Value::Str(a), Value::Str(b)) => object::str_bytes(heap, a)?.partial_cmp(object::str_bytes(heap, b)?),
        _ => return Err(type_err("compare", x, y)),
    };
    Ok(match ord {
        Some(std::cmp::Ordering::Less) => true,
        Some(std::cmp::Ordering::Equal) => or_equal,
        _ => false,
    })
}

#[inline(always)]
fn equal(heap: &crate::heap::Heap, x: Value, y: Value) -> Result<bool, Exn> {
    match (x, y) {
        (Value::Int(a), Value::Int(b)) => Ok(a == b),
        (Value::Nil, Value::Nil) => Ok(true),
        (Value::Nil, _) | (_, Value::Nil) => Ok(false),
        _ => Ok(object::values_equal(heap, x, y)?),
    }
}

/// A comparison, as the compare and compare-and-jump instructions name it.
#[derive(Clone, Copy)]
enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// `x op y`: two ints inline, anything else through `less` and `equal`.
#[inline(always)]
fn compare(heap: &crate::heap::Heap, x: &Value, y: &Value, op: Cmp) -> Result<bool, Exn> {
    if let (&Value::Int(a), &Value::Int(b)) = (x, y) {
        return Ok(match op {
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
        });
    }
    match op {
        Cmp::Lt => less(heap, *x, *y, false),
        Cmp::Le => less(heap, *x, *y, true),
        Cmp::Gt => less(heap, *y, *x, false),
        Cmp::Ge => less(heap, *y, *x, true),
        Cmp::Eq => equal(heap, *x, *y),
        Cmp::Ne => equal(heap, *x, *y).map(|e| !e),
    }
}

fn index_text(heap: &crate::heap::Heap, linked: &[std::sync::Arc<LinkedModule>], k: Value) -> String {
    crate::fmt::repr(heap, linked, k).unwrap_or_else(|_| "?".into())
}

/// The interpreter loop proper. Returns when the process must leave it: budget spent,
/// a collection due, an error, an import, or the end.
///
/// `ONE`: for compiled code ([`jit_step`]), it returns after one instruction (`Exit::Step`,
/// the frame's pc saved), never enters compiled code itself, and leaves the counting of
/// reductions to [`jit_run`].
fn exec<const ONE: bool>(proc: &mut Process, vm: &Vm, host: &mut dyn Host, budget_left: &mut i64) -> Exit {
    let Process { frames, regs, heap, globals, modules, handlers, linked, rng, reductions, max_frames, jit_rest, .. } = proc;
    let max_frames = *max_frames as usize;
    let Some(&top) = frames.last() else {
        return Exit::Exn(Exn::Heap(HeapError::Corrupt));
    };
    let mut lm: &LinkedModule = &linked[top.module as usize];
    let mut code: &[Op] = &lm.module.functions[top.func as usize].code;
    let mut pc = top.pc as usize;
    let mut base = top.base as usize;
    let mut module = top.module;
    let mut closure = top.closure;
    let mut func = top.func;
    let mut gbase = modules[module as usize].globals_base as usize;
    // (A process resting from compiled code is interpreted for the whole call.)
    let jit = match vm.config.jit {
        JitMode::Off => None,
        JitMode::On if !jit_rest.entering(*reductions) => None,
        _ => vm.jit.as_deref(),
    };
    // The budget lives in a local while the loop runs; `spent!` writes it back.
    let start_budget = *budget_left;
    let mut fuel = start_budget;
    macro_rules! spent {
        () => {{
            *budget_left = fuel;
            if !ONE {
                *reductions += (start_budget - fuel).max(0) as u64;
            }
        }};
    }

    // Leaves the loop with the current instruction as the frame's pc, so the error
    // names its line and a restart (page fault, collection) re-executes it.
    macro_rules! throw {
        ($e:expr) => {{
            let e: Exn = $e.into();
            if let Some(f) = frames.last_mut() {
                f.pc = (pc - 1) as u32;
            }
            spent!();
            return Exit::Exn(e);
        }};
    }
    macro_rules! tri {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => throw!(e),
            }
        };
    }
    // Register access through a raw pointer to register 0 of the running frame, reset
    // whenever the frame changes or the register stack is reallocated.
    //
    // SAFETY (for every use of `r!` and `rm!`): the verifier proved each register operand
    // is below its function's `nregs`, and the register stack always holds at least
    // `base + nregs` values for the running frame (ensured when a frame is pushed, and
    // checked when an image is restored). `rb` is re-derived after every reallocation.
    // SAFETY: `base` is within the register stack (see above).
    let mut rb: *mut Value = unsafe { regs.as_mut_ptr().add(base) };
    macro_rules! r {
        ($i:expr) => {
            // SAFETY: a verified register operand of the running frame (see `rb`).
            unsafe { *rb.add($i as usize) }
        };
    }
    macro_rules! rr {
        ($i:expr) => {
            // SAFETY: a verified register operand of the running frame (see `rb`).
            unsafe { &*rb.add($i as usize) }
        };
    }
    macro_rules! rm {
        ($i:expr) => {
            // SAFETY: a verified register operand of the running frame (see `rb`).
            unsafe { &mut *rb.add($i as usize) }
        };
    }
    macro_rules! safepoint {
        () => {{
            fuel -= 1;
            if fuel <= 0 || heap.gc_wanted {
                if let Some(f) = frames.last_mut() {
                    f.pc = pc as u32;
                }
                spent!();
                return if heap.gc_wanted { Exit::Gc } else { Exit::Yield };
            }
        }};
    }
    // At a function's first instruction and at loop back edges: counts toward hotness,
    // has the function compiled once hot, and runs its compiled code from `pc` when
    // there is some (see `crate::jit`).
    macro_rules! jit_at {
        () => {{
            if let Some(compiler) = jit.filter(|_| !ONE && lm.jit[func as usize].visit(pc)) {
                if let Some(f) = jit_entry(compiler, vm, &linked[module as usize], func, pc) {
                    if let Some(fr) = frames.last_mut() {
                        fr.pc = pc as u32;
                    }
                    spent!();
                    return Exit::Jit(f);
                }
            }
        }};
    }
    macro_rules! jump {
        ($off:expr) => {{
            let off = $off;
            pc = (pc as i64 + off as i64) as usize;
            if off < 0 {
                safepoint!();
                jit_at!();
            }
        }};
    }
    macro_rules! jump_if {
        ($cond:expr, $off:expr) => {{
            if $cond {
                jump!($off)
            }
        }};
    }
    macro_rules! enter {
        ($f:expr) => {{
            let f: Frame = $f;
            lm = &linked[f.module as usize];
            code = &lm.module.functions[f.func as usize].code;
            pc = f.pc as usize;
            base = f.base as usize;
            // SAFETY: the frame's registers were ensured to exist when it was pushed.
            rb = unsafe { regs.as_mut_ptr().add(base) };
            module = f.module;
            closure = f.closure;
            func = f.func;
            gbase = modules[module as usize].globals_base as usize;
        }};
    }

    // The heap string of string constant `k` of the running module, made on first use.
    macro_rules! const_str {
        ($k:expr) => {{
            let k = $k as usize;
            match modules[module as usize].strs[k] {
                0 => {
                    let Const::Str(text) = &lm.module.consts[k] else { throw!(HeapError::Corrupt) };
                    let addr = tri!(object::alloc_str(heap, text));
                    modules[module as usize].strs[k] = addr;
                    addr
                }
                addr => addr,
            }
        }};
    }
    macro_rules! ret {
        ($v:expr) => {{
            let v: Value = $v;
            let Some(done) = frames.pop() else { throw!(HeapError::Corrupt) };
            let depth = frames.len() as u32;
            while handlers.last().is_some_and(|h| h.depth >= depth) {
                handlers.pop();
            }
            if done.init_of != NOT_INIT {
                modules[done.init_of as usize].state = ModuleState::Ready(v);
            }
            match frames.last() {
                None => {
                    spent!();
                    return Exit::Finished(v);
                }
                Some(&f) => {
                    regs[done.ret as usize] = v;
                    if f.module == module {
                        code = &lm.module.functions[f.func as usize].code;
                        pc = f.pc as usize;
                        base = f.base as usize;
                        // SAFETY: the caller's registers exist (ensured when it was pushed).
                        rb = unsafe { regs.as_mut_ptr().add(base) };
                        closure = f.closure;
                        func = f.func;
                    } else {
                        enter!(f);
                    }
                }
            }
        }};
    }

    let mut stepped = false;
    loop {
        if ONE {
            if stepped {
                if let Some(f) = frames.last_mut() {
                    f.pc = pc as u32;
                }
                spent!();
                return Exit::Step;
            }
            stepped = true;
        }
        debug_assert!(
            pc < code.len()
                && base + usize::from(lm.module.functions.get(frames.last().map_or(0, |f| f.func as usize)).map_or(0, |f| f.nregs))
                    <= regs.len()
        );
        // SAFETY: the verifier proved every jump target is inside the function and that no
        // instruction falls off its end; a restored frame's pc is checked against its code.
        let op = unsafe { *code.get_unchecked(pc) };
        pc += 1;
        match op {
            Op::LoadNil { a } => *rm!(a) = Value::Nil,
            Op::LoadBool { a, v } => *rm!(a) = Value::Bool(v),
            Op::LoadInt { a, v } => *rm!(a) = Value::Int(i64::from(v)),
            Op::LoadK { a, k } => {
                let k = k as usize;
                *rm!(a) = match &lm.module.consts[k] {
                    Const::Int(i) => Value::Int(*i),
                    Const::Float(f) => Value::Float(*f),
                    Const::Native(_) => Value::Native(lm.native_ids[k]),
                    Const::Str(_) => Value::Str(const_str!(k)),
                    Const::Module(_) => throw!(HeapError::Corrupt),
                };
            }
            Op::Move { a, b } => *rm!(a) = r!(b),
            Op::GetGlobal { a, g } => *rm!(a) = globals[gbase + g as usize],
            Op::SetGlobal { g, a } => globals[gbase + g as usize] = r!(a),
            Op::GetUpval { a, u } => {
                let b = tri!(object::closure_box(heap, closure, usize::from(u)));
                *rm!(a) = tri!(object::box_get(heap, b));
            }
            Op::SetUpval { u, a } => {
                let b = tri!(object::closure_box(heap, closure, usize::from(u)));
                tri!(object::box_set(heap, b, r!(a)));
            }
            Op::MakeBox { a } => {
                let b = tri!(object::new_box(heap, r!(a)));
                *rm!(a) = Value::Box(b);
            }
            Op::GetBox { a, b } => match r!(b) {
                Value::Box(x) => *rm!(a) = tri!(object::box_get(heap, x)),
                _ => throw!(HeapError::Corrupt),
            },
            Op::SetBox { a, b } => match r!(a) {
                Value::Box(x) => tri!(object::box_set(heap, x, r!(b))),
                _ => throw!(HeapError::Corrupt),
            },
            Op::Closure { a, f } => {
                let target = &lm.module.functions[f as usize];
                let fref = FnRef { module, func: f };
                if target.upvals.is_empty() {
                    *rm!(a) = Value::Func(fref);
                } else {
                    let mut boxes = Vec::with_capacity(target.upvals.len());
                    for d in &target.upvals {
                        if d.from_local {
                            match r!(d.index) {
                                Value::Box(x) => boxes.push(x),
                                _ => throw!(HeapError::Corrupt),
                            }
                        } else {
                            boxes.push(tri!(object::closure_box(heap, closure, usize::from(d.index))));
                        }
                    }
                    *rm!(a) = Value::Closure(tri!(object::new_closure(heap, fref, &boxes)));
                }
            }
            Op::Add { a, b, c } => {
                *rm!(a) = match (rr!(b), rr!(c)) {
                    (&Value::Int(x), &Value::Int(y)) => match x.checked_add(y) {
                        Some(v) => Value::Int(v),
                        None => throw!(Exn::msg(format!("integer overflow: cannot add {x} and {y}"))),
                    },
                    (&Value::Float(x), &Value::Float(y)) => Value::Float(x + y),
                    (&x, &y) => {
                        let v = tri!(arith(heap, op, x, y));
                        if let Value::Str(joined) = v {
                            fuel -= (tri!(heap.load(joined as usize + 1)) / 256) as i64;
                        }
                        v
                    }
                }
            }
            Op::Sub { a, b, c } => {
                *rm!(a) = match (rr!(b), rr!(c)) {
                    (&Value::Int(x), &Value::Int(y)) => match x.checked_sub(y) {
                        Some(v) => Value::Int(v),
                        None => throw!(Exn::msg(format!("integer overflow: cannot subtract {x} and {y}"))),
                    },
                    (&Value::Float(x), &Value::Float(y)) => Value::Float(x - y),
                    (&x, &y) => tri!(arith(heap, op, x, y)),
                }
            }
            Op::Mul { a, b, c } => {
                *rm!(a) = match (rr!(b), rr!(c)) {
                    (&Value::Int(x), &Value::Int(y)) => match x.checked_mul(y) {
                        Some(v) => Value::Int(v),
                        None => throw!(Exn::msg(format!("integer overflow: cannot multiply {x} and {y}"))),
                    },
                    (&Value::Float(x), &Value::Float(y)) => Value::Float(x * y),
                    (&x, &y) => tri!(arith(heap, op, x, y)),
                }
            }
            Op::Div { a, b, c } => {
                *rm!(a) = match (rr!(b), rr!(c)) {
                    (&Value::Int(x), &Value::Int(y)) if y != 0 && y != -1 => Value::Int(x / y),
                    (&Value::Float(x), &Value::Float(y)) => Value::Float(x / y),
                    (&x, &y) => tri!(arith(heap, op, x, y)),
                }
            }
            Op::Mod { a, b, c } => {
                *rm!(a) = match (rr!(b), rr!(c)) {
                    (&Value::Int(x), &Value::Int(y)) if y != 0 && y != -1 => Value::Int(x % y),
                    (&x, &y) => tri!(arith(heap, op, x, y)),
                }
            }
            Op::AddI { a, b, v } => {
                *rm!(a) = match *rr!(b) {
                    Value::Int(x) => match x.checked_add(i64::from(v)) {
                        Some(s) => Value::Int(s),
                        // `x - k` compiles to `x + -k`: name the operation as written.
                        None if v < 0 => throw!(Exn::msg(format!("integer overflow: cannot subtract {x} and {}", -i64::from(v)))),
                        None => throw!(Exn::msg(format!("integer overflow: cannot add {x} and {v}"))),
                    },
                    Value::Float(x) => Value::Float(x + f64::from(v)),
                    x => throw!(type_err("add", x, Value::Int(i64::from(v)))),
                }
            }
            Op::AddK { a, b, k } | Op::SubK { a, b, k } | Op::MulK { a, b, k } | Op::DivK { a, b, k } | Op::ModK { a, b, k } => {
                let y = lm.numbers[usize::from(k)];
                *rm!(a) = match (rr!(b), &y) {
                    (&Value::Float(x), &Value::Float(y)) => match op {
                        Op::AddK { .. } => Value::Float(x + y),
                        Op::SubK { .. } => Value::Float(x - y),
                        Op::MulK { .. } => Value::Float(x * y),
                        Op::DivK { .. } => Value::Float(x / y),
                        _ => Value::Float(x % y),
                    },
                    (&Value::Int(x), &Value::Int(y)) => {
                        let r = match op {
                            Op::AddK { .. } => x.checked_add(y),
                            Op::SubK { .. } => x.checked_sub(y),
                            Op::MulK { .. } => x.checked_mul(y),
                            Op::DivK { .. } if y != 0 && y != -1 => Some(x / y),
                            Op::ModK { .. } if y != 0 && y != -1 => Some(x % y),
                            _ => None,
                        };
                        match r {
                            Some(v) => Value::Int(v),
                            // Overflow and division by zero: the general path says which.
                            None => tri!(arith(heap, general_op(op), Value::Int(x), Value::Int(y))),
                        }
                    }
                    (&x, &y) => tri!(arith(heap, general_op(op), x, y)),
                }
            }
            Op::Neg { a, b } => {
                *rm!(a) = match *rr!(b) {
                    Value::Int(x) => match x.checked_neg() {
                        Some(v) => Value::Int(v),
                        None => throw!(Exn::msg(format!("integer overflow: cannot negate {x}"))),
                    },
                    Value::Float(x) => Value::Float(-x),
                    x => throw!(Exn::msg(format!("cannot negate {}", x.type_name()))),
                }
            }
            Op::Not { a, b } => *rm!(a) = Value::Bool(matches!(rr!(b), Value::Nil | Value::Bool(false))),
            Op::BitAnd { a, b, c } | Op::BitOr { a, b, c } | Op::BitXor { a, b, c } | Op::Shl { a, b, c } | Op::Shr { a, b, c } => {
                *rm!(a) = tri!(bitwise(op, r!(b), r!(c)));
            }
            Op::BitNot { a, b } => {
                *rm!(a) = match *rr!(b) {
                    Value::Int(x) => Value::Int(!x),
                    x => throw!(Exn::msg(format!("cannot bitwise-not {}", x.type_name()))),
                }
            }
            Op::Eq { a, b, c } => *rm!(a) = Value::Bool(tri!(compare(heap, rr!(b), rr!(c), Cmp::Eq))),
            Op::Ne { a, b, c } => *rm!(a) = Value::Bool(tri!(compare(heap, rr!(b), rr!(c), Cmp::Ne))),
            Op::Lt { a, b, c } => *rm!(a) = Value::Bool(tri!(compare(heap, rr!(b), rr!(c), Cmp::Lt))),
            Op::Le { a, b, c } => *rm!(a) = Value::Bool(tri!(compare(heap, rr!(b), rr!(c), Cmp::Le))),
            Op::Jmp { off } => jump!(off),
            Op::JmpIf { a, off } => {
                if !matches!(rr!(a), Value::Nil | Value::Bool(false)) {
                    jump!(off)
                }
            }
            Op::JmpIfNot { a, off } => {
                if matches!(rr!(a), Value::Nil | Value::Bool(false)) {
                    jump!(off)
                }
            }
            Op::JmpIfLt { b, c, off } => jump_if!(tri!(compare(heap, rr!(b), rr!(c), Cmp::Lt)), off),
            Op::JmpIfLe { b, c, off } => jump_if!(tri!(compare(heap, rr!(b), rr!(c), Cmp::Le)), off),
            Op::JmpIfEq { b, c, off } => jump_if!(tri!(compare(heap, rr!(b), rr!(c), Cmp::Eq)), off),
            Op::JmpIfNotLt { b, c, off } => jump_if!(!tri!(compare(heap, rr!(b), rr!(c), Cmp::Lt)), off),
            Op::JmpIfNotLe { b, c, off } => jump_if!(!tri!(compare(heap, rr!(b), rr!(c), Cmp::Le)), off),
            Op::JmpIfNotEq { b, c, off } => jump_if!(!tri!(compare(heap, rr!(b), rr!(c), Cmp::Eq)), off),
            Op::JmpIfLtI { b, v, off } => jump_if!(tri!(compare(heap, rr!(b), &Value::Int(i64::from(v)), Cmp::Lt)), off),
            Op::JmpIfLeI { b, v, off } => jump_if!(tri!(compare(heap, rr!(b), &Value::Int(i64::from(v)), Cmp::Le)), off),
            Op::JmpIfGtI { b, v, off } => jump_if!(tri!(compare(heap, rr!(b), &Value::Int(i64::from(v)), Cmp::Gt)), off),
            Op::JmpIfGeI { b, v, off } => jump_if!(tri!(compare(heap, rr!(b), &Value::Int(i64::from(v)), Cmp::Ge)), off),
            Op::JmpIfEqI { b, v, off } => jump_if!(tri!(compare(heap, rr!(b), &Value::Int(i64::from(v)), Cmp::Eq)), off),
            Op::JmpIfNotLtI { b, v, off } => jump_if!(!tri!(compare(heap, rr!(b), &Value::Int(i64::from(v)), Cmp::Lt)), off),
            Op::JmpIfNotLeI { b, v, off } => jump_if!(!tri!(compare(heap, rr!(b), &Value::Int(i64::from(v)), Cmp::Le)), off),
            Op::JmpIfNotGtI { b, v, off } => jump_if!(!tri!(compare(heap, rr!(b), &Value::Int(i64::from(v)), Cmp::Gt)), off),
            Op::JmpIfNotGeI { b, v, off } => jump_if!(!tri!(compare(heap, rr!(b), &Value::Int(i64::from(v)), Cmp::Ge)), off),
            Op::JmpIfNotEqI { b, v, off } => jump_if!(!tri!(compare(heap, rr!(b), &Value::Int(i64::from(v)), Cmp::Eq)), off),
            Op::JmpIfNil { a, off } => {
                if matches!(rr!(a), Value::Nil) {
                    jump!(off)
                }
            }
            Op::JmpIfNotNil { a, off } => {
                if !matches!(rr!(a), Value::Nil) {
                    jump!(off)
                }
            }
            Op::Call { a, n } => {
                let (fref, clo) = match *rr!(a) {
                    Value::Func(f) => (f, 0),
                    Value::Closure(c) => (tri!(object::closure_fn(heap, c)), c),
                    Value::Native(id) => {
                        let Some(def) = vm.natives.get(id) else { throw!(HeapError::Corrupt) };
                        if n < def.min_args || n > def.max_args {
                            throw!(Exn::msg(arity_message(def.name, def.min_args, def.max_args, n)));
                        }
                        let args_at = base + usize::from(a) + 1;
                        let args = &regs[args_at..args_at + usize::from(n)];
                        let mut ctx = NativeCtx { heap: &mut *heap, host: &mut *host, rng: &mut *rng, linked: &linked[..] };
                        let v = tri!((def.f)(&mut ctx, args));
                        *rm!(a) = v;
                        safepoint!();
                        continue;
                    }
                    other => throw!(Exn::msg(format!("cannot call {}", other.a_type()))),
                };
                let tlm = if fref.module == module {
                    lm
                } else {
                    match linked.get(fref.module as usize) {
                        Some(m) => &**m,
                        None => throw!(HeapError::Corrupt),
                    }
                };
                let Some(tf) = tlm.module.functions.get(fref.func as usize) else { throw!(HeapError::Corrupt) };
                if n != tf.arity {
                    throw!(Exn::msg(format!(
                        "{} expects {} argument{}, got {n}",
                        if tf.name.is_empty() { "function" } else { &tf.name },
                        tf.arity,
                        if tf.arity == 1 { "" } else { "s" }
                    )));
                }
                if frames.len() >= max_frames {
                    throw!(Exn::msg(format!("stack overflow: more than {max_frames} nested calls")));
                }
                let nb = base + usize::from(a) + 1;
                let need = nb + usize::from(tf.nregs);
                if regs.len() < need {
                    regs.resize(need.max(regs.len() * 2), Value::Nil);
                }
                regs[nb + usize::from(n)..need].fill(Value::Nil);
                if let Some(f) = frames.last_mut() {
                    f.pc = pc as u32;
                }
                let f = Frame {
                    module: fref.module,
                    func: fref.func,
                    pc: 0,
                    base: nb as u32,
                    ret: (base + usize::from(a)) as u32,
                    closure: clo,
                    init_of: NOT_INIT,
                };
                frames.push(f);
                if fref.module == module {
                    code = &tf.code;
                    pc = 0;
                    base = nb;
                    // SAFETY: `regs` was just resized to hold the callee's registers.
                    rb = unsafe { regs.as_mut_ptr().add(base) };
                    closure = clo;
                    func = fref.func;
                } else {
                    enter!(f);
                }
                safepoint!();
                jit_at!();
            }
            Op::Return { a } => {
                let v = r!(a);
                ret!(v);
            }
            Op::ReturnNil {} => {
                ret!(Value::Nil);
            }
            Op::NewArray { a, b, n } => {
                let s = base + usize::from(b);
                let arr = tri!(object::array_from(heap, &regs[s..s + usize::from(n)]));
                *rm!(a) = Value::Array(arr);
            }
            Op::NewMap { a, b, n } => {
                let m = tri!(object::new_map(heap, usize::from(n)));
                for i in 0..usize::from(n) {
                    let k = r!(usize::from(b) + 2 * i);
                    let v = r!(usize::from(b) + 2 * i + 1);
                    tri!(object::map_set(heap, m, k, v).map_err(key_exn));
                }
                *rm!(a) = Value::Map(m);
            }
            Op::GetIndex { a, b, c } => {
                *rm!(a) = match (rr!(b), rr!(c)) {
                    (&Value::Array(arr), &Value::Int(i)) => match tri!(object::array_get(heap, arr, i)) {
                        Some(v) => v,
                        None => throw!(Exn::msg(format!("index {i} out of range (length {})", tri!(object::array_len(heap, arr))))),
                    },
                    (&Value::Map(m), &k) => match tri!(object::map_get(heap, m, k).map_err(key_exn)) {
                        Some(v) => v,
                        None => throw!(Exn::msg(format!("key not found: {}", index_text(heap, linked, k)))),
                    },
                    (&Value::Array(_), &k) => throw!(Exn::msg(format!("array index must be an int, not {}", k.type_name()))),
                    (&x, _) => throw!(Exn::msg(format!("cannot index {}", x.a_type()))),
                }
            }
            Op::SetIndex { a, b, c } => match (rr!(a), rr!(b)) {
                (&Value::Array(arr), &Value::Int(i)) => {
                    if !tri!(object::array_set(heap, arr, i, r!(c))) {
                        throw!(Exn::msg(format!("index {i} out of range (length {})", tri!(object::array_len(heap, arr)))));
                    }
                }
                (&Value::Map(m), &k) => tri!(object::map_set(heap, m, k, r!(c)).map_err(key_exn)),
                (&Value::Array(_), &k) => throw!(Exn::msg(format!("array index must be an int, not {}", k.type_name()))),
                (&x, _) => throw!(Exn::msg(format!("cannot store into {}", x.a_type()))),
            },
            Op::GetField { a, b, k } => {
                let &Value::Map(m) = rr!(b) else {
                    let Const::Str(name) = &lm.module.consts[k as usize] else { throw!(HeapError::Corrupt) };
                    throw!(Exn::msg(format!("cannot read field `{name}` of {}", r!(b).a_type())));
                };
                let key = const_str!(k);
                *rm!(a) = match tri!(object::map_get_field(heap, m, key)) {
                    Some(v) => v,
                    None => {
                        let Const::Str(name) = &lm.module.consts[k as usize] else { throw!(HeapError::Corrupt) };
                        throw!(Exn::msg(format!("key not found: {name:?}")))
                    }
                }
            }
            Op::SetField { a, k, c } => {
                let &Value::Map(m) = rr!(a) else {
                    let Const::Str(name) = &lm.module.consts[k as usize] else { throw!(HeapError::Corrupt) };
                    throw!(Exn::msg(format!("cannot set field `{name}` of {}", r!(a).a_type())));
                };
                let key = const_str!(k);
                tri!(object::map_set_field(heap, m, key, r!(c)).map_err(key_exn));
            }
            Op::Concat { a, b, n } => {
                let mut s = String::new();
                for i in 0..usize::from(n) {
                    let v = r!(usize::from(b) + i);
                    match v {
                        Value::Str(x) => s.push_str(tri!(object::str_ref(heap, x))),
                        _ => s.push_str(&tri!(display(heap, linked, v))),
                    }
                }
                *rm!(a) = Value::Str(tri!(object::alloc_str(heap, &s)));
                // Long strings cost in proportion to their length, so that a time slice
                // stays short whatever the program builds.
                fuel -= (s.len() / 256) as i64;
            }
            Op::ForPrep { a, off } => match (rr!(a), rr!(a + 1)) {
                (&Value::Int(i), &Value::Int(e)) => {
                    if i < e {
                        *rm!(a + 2) = Value::Int(i);
                    } else {
                        jump!(off);
                    }
                }
                (&x, &y) => throw!(Exn::msg(format!("range bounds must be ints, not {} and {}", x.type_name(), y.type_name()))),
            },
            Op::ForLoop { a, off } => {
                if let (&Value::Int(i), &Value::Int(e)) = (rr!(a), rr!(a + 1)) {
                    // `i < e` held when the body was entered, so `i + 1` cannot overflow.
                    let next = i + 1;
                    *rm!(a) = Value::Int(next);
                    if next < e {
                        *rm!(a + 2) = Value::Int(next);
                        jump!(off);
                    }
                } else {
                    throw!(HeapError::Corrupt);
                }
            }
            Op::IterNext { a, n, off } => {
                let Value::Int(cursor) = r!(a + 1) else { throw!(HeapError::Corrupt) };
                let cursor = cursor as usize;
                // (index or key, element or value), and the next cursor.
                let step = match r!(a) {
                    Value::Array(arr) => {
                        tri!(object::array_get(heap, arr, cursor as i64)).map(|v| (Value::Int(cursor as i64), v, cursor + 1))
                    }
                    Value::Map(m) => tri!(object::map_next(heap, m, cursor)).map(|(next, k, v)| (k, v, next)),
                    Value::Str(s) => {
                        let text = tri!(object::str_ref(heap, s));
                        match text.get(cursor..).and_then(|t| t.chars().next()) {
                            Some(ch) => {
                                let mut buf = [0u8; 4];
                                let cs = ch.encode_utf8(&mut buf);
                                let len = cs.len();
                                let cs = tri!(object::alloc_str(heap, cs));
                                Some((Value::Int(cursor as i64), Value::Str(cs), cursor + len))
                            }
                            None => None,
                        }
                    }
                    x => throw!(Exn::msg(format!("cannot iterate over {}", x.a_type()))),
                };
                match step {
                    Some((key, val, next)) => {
                        let is_map = matches!(r!(a), Value::Map(_));
                        if n == 1 {
                            *rm!(a + 2) = if is_map { key } else { val };
                        } else {
                            *rm!(a + 2) = key;
                            *rm!(a + 3) = val;
                        }
                        *rm!(a + 1) = Value::Int(next as i64);
                    }
                    None => jump!(off),
                }
            }
            Op::Import { a, k } => {
                let Const::Module(hash) = lm.module.consts[k as usize] else { throw!(HeapError::Corrupt) };
                if let Some(f) = frames.last_mut() {
                    f.pc = (pc - 1) as u32;
                }
                spent!();
                return Exit::Import { a, hash };
            }
            Op::Try { a, off } => {
                handlers.push(Handler {
                    depth: frames.len() as u32 - 1,
                    pc: (pc as i64 + i64::from(off)) as u32,
                    reg: (base + usize::from(a)) as u32,
                });
            }
            Op::EndTry {} => {
                handlers.pop();
            }
        }
    }
}

/// The register-register form of a register-constant arithmetic instruction.
fn general_op(op: Op) -> Op {
    match op {
        Op::AddK { a, b, .. } => Op::Add { a, b, c: 0 },
        Op::SubK { a, b, .. } => Op::Sub { a, b, c: 0 },
        Op::MulK { a, b, .. } => Op::Mul { a, b, c: 0 },
        Op::DivK { a, b, .. } => Op::Div { a, b, c: 0 },
        Op::ModK { a, b, .. } => Op::Mod { a, b, c: 0 },
        other => other,
    }
}

fn arity_message(name: &str, min: u8, max: u8, n: u8) -> String {
    let expected = if min == max {
        format!("{min} argument{}", if min == 1 { "" } else { "s" })
    } else if max == u8::MAX {
        format!("at least {min} arguments")
    } else {
        format!("{min} to {max} arguments")
    };
    format!("{name} expects {expected}, got {n}")
}
