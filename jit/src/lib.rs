//! Tern's JIT: hot functions compiled by Cranelift into machine code that never enters a
//! process's state (the contract is `tern_vm::jit`).
//!
//! One Cranelift function per Tern function, `fn(*mut JitCtx)`. It starts with a jump
//! table on `ctx.pc` (so the interpreter can enter at the first instruction or at any
//! loop header), then one block per bytecode instruction. Each instruction reads and
//! writes the frame's registers in memory, laid out as the interpreter's
//! (`tern_vm::value::layout`): nothing lives only in a machine register across an
//! instruction, so wherever the code leaves, the frame is the whole state. Compiled
//! here: constants and moves, int arithmetic (`+ - *` with the overflow check, `AddI`),
//! int comparisons, every jump (the conditional ones on ints or on truthiness), and
//! `ForLoop`. Any other instruction, or an operand that is not an int, or an overflow,
//! leaves the code with `ctx.pc` at that instruction, and the interpreter runs it
//! (raising its error, with its message and position, when there is one). A back edge
//! takes one unit of fuel and leaves when the time slice is used up, so a compiled
//! infinite loop is still preempted, frozen, moved and killed.
//!
//! Compiling happens on a thread of its own (a function made hot keeps running in the
//! interpreter until its code is ready), or at once for `JitMode::Always`.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, AbiParam, BlockArg, InstBuilder, JumpTableData, MemFlagsData, UserFuncName};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::Module;
use parking_lot::Mutex;
use std::sync::Arc;
use tern_vm::bytecode::Op;
use tern_vm::jit::{Compiler, JitFn};
use tern_vm::runtime::LinkedModule;
use tern_vm::value::layout;

/// Offsets in `JitCtx`.
const CTX_REGS: i32 = 0;
const CTX_GLOBALS: i32 = 8;
const CTX_PC: i32 = 16;
const CTX_FUEL: i32 = 24;

/// A node's compiler: Cranelift, a module of code kept for as long as the node, and a
/// thread compiling what turns hot.
pub struct Jit {
    inner: Arc<Mutex<Inner>>,
    jobs: crossbeam_channel::Sender<(Arc<LinkedModule>, u32)>,
}

struct Inner {
    module: JITModule,
    ctx: cranelift_codegen::Context,
    fctx: FunctionBuilderContext,
    compiled: u64,
}

impl Jit {
    /// A compiler for this machine's CPU (`None` if Cranelift does not support it).
    pub fn new() -> Result<Jit, String> {
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").map_err(|e| e.to_string())?;
        flags.set("use_colocated_libcalls", "false").map_err(|e| e.to_string())?;
        flags.set("is_pic", "false").map_err(|e| e.to_string())?;
        let isa = cranelift_native::builder()
            .map_err(|e| format!("no code generator for this CPU: {e}"))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| e.to_string())?;
        let module = JITModule::new(JITBuilder::with_isa(isa, cranelift_module::default_libcall_names()));
        let ctx = module.make_context();
        let inner = Arc::new(Mutex::new(Inner { module, ctx, fctx: FunctionBuilderContext::new(), compiled: 0 }));
        let (jobs, rx) = crossbeam_channel::unbounded::<(Arc<LinkedModule>, u32)>();
        let worker = inner.clone();
        std::thread::Builder::new()
            .name("tern-jit".into())
            .spawn(move || {
                for (lm, func) in rx {
                    compile_into(&worker, &lm, func);
                }
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

    fn compiled(&self) -> u64 {
        self.inner.lock().compiled
    }
}

fn compile_into(inner: &Mutex<Inner>, lm: &Arc<LinkedModule>, func: u32) {
    let Some(slot) = lm.jit.get(func as usize) else { return };
    if slot.is_compiled() {
        return;
    }
    let Some(f) = lm.module.functions.get(func as usize) else { return };
    let entries = entries(lm, &f.code);
    if !entries.iter().any(|&e| e) {
        tracing::debug!(module = %lm.module.name, func, "stays interpreted: no loop or start it would run");
        slot.set_failed();
        return;
    }
    let mut g = inner.lock();
    match compile(&mut g, lm, func) {
        Ok(f) => {
            g.compiled += 1;
            slot.set_code(f, &entries);
        }
        Err(e) => {
            tracing::debug!(module = %lm.module.name, func, "stays interpreted: {e}");
            slot.set_failed();
        }
    }
}

/// Whether the compiled code runs `op` (else it leaves for the interpreter there).
fn compiled(lm: &LinkedModule, op: &Op) -> bool {
    let int_k = |k: u16| matches!(lm.numbers.get(usize::from(k)), Some(tern_vm::value::Value::Int(_)));
    let divisor_k = |k: u16| matches!(lm.numbers.get(usize::from(k)), Some(&tern_vm::value::Value::Int(v)) if v != 0 && v != -1);
    match *op {
        Op::AddK { k, .. } | Op::SubK { k, .. } | Op::MulK { k, .. } => int_k(k),
        Op::DivK { k, .. } | Op::ModK { k, .. } => divisor_k(k),
        Op::LoadNil { .. }
        | Op::LoadBool { .. }
        | Op::LoadInt { .. }
        | Op::Move { .. }
        | Op::GetGlobal { .. }
        | Op::SetGlobal { .. }
        | Op::AddI { .. }
        | Op::Add { .. }
        | Op::Sub { .. }
        | Op::Mul { .. }
        | Op::Div { .. }
        | Op::Mod { .. }
        | Op::Eq { .. }
        | Op::Ne { .. }
        | Op::Lt { .. }
        | Op::Le { .. }
        | Op::Jmp { .. }
        | Op::JmpIf { .. }
        | Op::JmpIfNot { .. }
        | Op::JmpIfNil { .. }
        | Op::JmpIfNotNil { .. }
        | Op::JmpIfLt { .. }
        | Op::JmpIfLe { .. }
        | Op::JmpIfEq { .. }
        | Op::JmpIfNotLt { .. }
        | Op::JmpIfNotLe { .. }
        | Op::JmpIfNotEq { .. }
        | Op::JmpIfLtI { .. }
        | Op::JmpIfLeI { .. }
        | Op::JmpIfGtI { .. }
        | Op::JmpIfGeI { .. }
        | Op::JmpIfEqI { .. }
        | Op::JmpIfNotLtI { .. }
        | Op::JmpIfNotLeI { .. }
        | Op::JmpIfNotGtI { .. }
        | Op::JmpIfNotGeI { .. }
        | Op::JmpIfNotEqI { .. }
        | Op::ForLoop { .. } => true,
        _ => false,
    }
}

/// Where the interpreter should enter the compiled code: the start of a loop whose every
/// instruction is compiled (entered at its back edge, it runs the loop through), and the
/// first instruction when the code up to the first loop or instruction it leaves at is
/// compiled.
fn entries(lm: &LinkedModule, code: &[Op]) -> Vec<bool> {
    let mut out = vec![false; code.len()];
    for (j, op) in code.iter().enumerate() {
        let off = match *op {
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
            | Op::ForLoop { off, .. } => off,
            _ => continue,
        };
        if off >= 0 {
            continue;
        }
        let t = (j as i64 + 1 + i64::from(off)) as usize;
        if t < code.len() && code[t..=j].iter().all(|op| compiled(lm, op)) {
            out[t] = true;
        }
    }
    // The start: worth it when it runs a few instructions before leaving (or reaches
    // a loop it can run).
    let run = code.iter().take_while(|op| compiled(lm, op)).count();
    if run >= 4 || out.iter().take(run + 1).any(|&e| e) {
        out[0] = true;
    }
    out
}

fn compile(g: &mut Inner, lm: &LinkedModule, func: u32) -> Result<JitFn, String> {
    let f = lm.module.functions.get(func as usize).ok_or("no such function")?;
    let code = &f.code;
    let Inner { module, ctx, fctx, .. } = g;
    module.clear_context(ctx);
    let tcfg = module.target_config();
    let ptr = tcfg.pointer_type();
    ctx.func.signature.params.push(AbiParam::new(ptr));
    ctx.func.name = UserFuncName::user(0, 0);
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        let exit = b.create_block();
        let blocks: Vec<_> = code.iter().map(|_| b.create_block()).collect();
        let fuel = b.declare_var(types::I64);
        let out_pc = b.declare_var(types::I32);
        let mem = MemFlagsData::trusted();

        b.switch_to_block(entry);
        let cx = b.block_params(entry)[0];
        let regs = b.ins().load(ptr, mem, cx, CTX_REGS);
        let globals = b.ins().load(ptr, mem, cx, CTX_GLOBALS);
        let f0 = b.ins().load(types::I64, mem, cx, CTX_FUEL);
        b.def_var(fuel, f0);
        let zero32 = b.ins().iconst(types::I32, 0);
        b.def_var(out_pc, zero32);
        let pc0 = b.ins().load(types::I32, mem, cx, CTX_PC);
        let none: &[BlockArg] = &[];
        let calls: Vec<_> = blocks.iter().map(|&bl| b.func.dfg.block_call(bl, none)).collect();
        let default = b.func.dfg.block_call(exit, none);
        let jt = b.create_jump_table(JumpTableData::new(default, &calls));
        b.ins().br_table(pc0, jt);

        // Helpers over the frame's registers.
        let tag_at = |b: &mut FunctionBuilder, r: u8| b.ins().load(types::I8, mem, regs, i32::from(r) * layout::SIZE + layout::TAG);
        let int_at = |b: &mut FunctionBuilder, r: u8| b.ins().load(types::I64, mem, regs, i32::from(r) * layout::SIZE + layout::PAYLOAD);
        let put = |b: &mut FunctionBuilder, r: u8, tag: u8, payload: cranelift_codegen::ir::Value| {
            let t = b.ins().iconst(types::I8, i64::from(tag));
            b.ins().store(mem, t, regs, i32::from(r) * layout::SIZE + layout::TAG);
            b.ins().store(mem, payload, regs, i32::from(r) * layout::SIZE + layout::PAYLOAD);
        };

        for (pc, op) in code.iter().enumerate() {
            b.switch_to_block(blocks[pc]);
            let next = pc + 1;
            // Leaves for the interpreter to run instruction `at`.
            let leave = |b: &mut FunctionBuilder, at: usize| {
                let v = b.ins().iconst(types::I32, at as i64);
                b.def_var(out_pc, v);
                b.ins().jump(exit, none);
            };
            // Leaves for the interpreter to run this instruction when `cond` holds (an
            // overflow, a risky divisor); goes on otherwise.
            let leave_if = |b: &mut FunctionBuilder, cond: cranelift_codegen::ir::Value| {
                let ok = b.create_block();
                let bad = b.create_block();
                b.ins().brif(cond, bad, none, ok, none);
                b.switch_to_block(bad);
                leave(b, pc);
                b.switch_to_block(ok);
            };
            // Continues at `target` (a back edge takes fuel, and leaves when it is out).
            let goto = |b: &mut FunctionBuilder, target: usize| {
                if target > pc {
                    b.ins().jump(blocks[target], none);
                    return;
                }
                let f = b.use_var(fuel);
                let f = b.ins().iadd_imm_s(f, -1);
                b.def_var(fuel, f);
                let out = b.ins().icmp_imm_s(IntCC::SignedLessThanOrEqual, f, 0);
                let stop = b.create_block();
                b.ins().brif(out, stop, none, blocks[target], none);
                b.switch_to_block(stop);
                let v = b.ins().iconst(types::I32, target as i64);
                b.def_var(out_pc, v);
                b.ins().jump(exit, none);
            };
            // Goes on only when register `r` holds an int (else the interpreter runs `pc`).
            let want_int = |b: &mut FunctionBuilder, r: u8| {
                let t = tag_at(b, r);
                let ok = b.ins().icmp_imm_s(IntCC::Equal, t, i64::from(layout::TAG_INT));
                let go = b.create_block();
                let back = b.create_block();
                b.ins().brif(ok, go, none, back, none);
                b.switch_to_block(back);
                let v = b.ins().iconst(types::I32, pc as i64);
                b.def_var(out_pc, v);
                b.ins().jump(exit, none);
                b.switch_to_block(go);
            };
            let target_of = |off: i32| (next as i64 + i64::from(off)) as usize;
            match *op {
                Op::LoadNil { a } => {
                    let z = b.ins().iconst(types::I64, 0);
                    put(&mut b, a, layout::TAG_NIL, z);
                    goto(&mut b, next);
                }
                Op::LoadBool { a, v } => {
                    let x = b.ins().iconst(types::I64, i64::from(v));
                    put(&mut b, a, layout::TAG_BOOL, x);
                    goto(&mut b, next);
                }
                Op::LoadInt { a, v } => {
                    let x = b.ins().iconst(types::I64, i64::from(v));
                    put(&mut b, a, layout::TAG_INT, x);
                    goto(&mut b, next);
                }
                Op::Move { a, b: src } => {
                    let lo = b.ins().load(types::I64, mem, regs, i32::from(src) * layout::SIZE);
                    let hi = b.ins().load(types::I64, mem, regs, i32::from(src) * layout::SIZE + 8);
                    b.ins().store(mem, lo, regs, i32::from(a) * layout::SIZE);
                    b.ins().store(mem, hi, regs, i32::from(a) * layout::SIZE + 8);
                    goto(&mut b, next);
                }
                Op::GetGlobal { a, g } | Op::SetGlobal { g, a } => {
                    let (from, fo, to, to_off) = if matches!(op, Op::GetGlobal { .. }) {
                        (globals, g as i32 * layout::SIZE, regs, i32::from(a) * layout::SIZE)
                    } else {
                        (regs, i32::from(a) * layout::SIZE, globals, g as i32 * layout::SIZE)
                    };
                    let lo = b.ins().load(types::I64, mem, from, fo);
                    let hi = b.ins().load(types::I64, mem, from, fo + 8);
                    b.ins().store(mem, lo, to, to_off);
                    b.ins().store(mem, hi, to, to_off + 8);
                    goto(&mut b, next);
                }
                Op::AddK { a, b: x, k } | Op::SubK { a, b: x, k } | Op::MulK { a, b: x, k }
                    if matches!(lm.numbers.get(usize::from(k)), Some(tern_vm::value::Value::Int(_))) =>
                {
                    let Some(&tern_vm::value::Value::Int(kv)) = lm.numbers.get(usize::from(k)) else { unreachable!() };
                    want_int(&mut b, x);
                    let xv = int_at(&mut b, x);
                    let kc = b.ins().iconst(types::I64, kv);
                    let (r, of) = match op {
                        Op::AddK { .. } => b.ins().sadd_overflow(xv, kc),
                        Op::SubK { .. } => b.ins().ssub_overflow(xv, kc),
                        _ => b.ins().smul_overflow(xv, kc),
                    };
                    leave_if(&mut b, of);
                    put(&mut b, a, layout::TAG_INT, r);
                    goto(&mut b, next);
                }
                Op::DivK { a, b: x, k } | Op::ModK { a, b: x, k } if compiled(lm, op) => {
                    // A constant divisor, neither 0 nor -1: no trap, no overflow.
                    let Some(&tern_vm::value::Value::Int(kv)) = lm.numbers.get(usize::from(k)) else { unreachable!() };
                    want_int(&mut b, x);
                    let xv = int_at(&mut b, x);
                    let kc = b.ins().iconst(types::I64, kv);
                    let r = if matches!(op, Op::DivK { .. }) { b.ins().sdiv(xv, kc) } else { b.ins().srem(xv, kc) };
                    put(&mut b, a, layout::TAG_INT, r);
                    goto(&mut b, next);
                }
                Op::Div { a, b: x, c: y } | Op::Mod { a, b: x, c: y } => {
                    // The interpreter's path for a divisor of 0 (an error) or -1 (an
                    // overflow for the smallest int).
                    want_int(&mut b, x);
                    want_int(&mut b, y);
                    let xv = int_at(&mut b, x);
                    let yv = int_at(&mut b, y);
                    let plus1 = b.ins().iadd_imm_s(yv, 1);
                    let risky = b.ins().icmp_imm_u(IntCC::UnsignedLessThanOrEqual, plus1, 1);
                    leave_if(&mut b, risky);
                    let r = if matches!(op, Op::Div { .. }) { b.ins().sdiv(xv, yv) } else { b.ins().srem(xv, yv) };
                    put(&mut b, a, layout::TAG_INT, r);
                    goto(&mut b, next);
                }
                Op::AddI { a, b: x, v } => {
                    want_int(&mut b, x);
                    let xv = int_at(&mut b, x);
                    let k = b.ins().iconst(types::I64, i64::from(v));
                    let (sum, of) = b.ins().sadd_overflow(xv, k);
                    leave_if(&mut b, of);
                    put(&mut b, a, layout::TAG_INT, sum);
                    goto(&mut b, next);
                }
                Op::Add { a, b: x, c: y } | Op::Sub { a, b: x, c: y } | Op::Mul { a, b: x, c: y } => {
                    want_int(&mut b, x);
                    want_int(&mut b, y);
                    let xv = int_at(&mut b, x);
                    let yv = int_at(&mut b, y);
                    let (r, of) = match op {
                        Op::Add { .. } => b.ins().sadd_overflow(xv, yv),
                        Op::Sub { .. } => b.ins().ssub_overflow(xv, yv),
                        _ => b.ins().smul_overflow(xv, yv),
                    };
                    leave_if(&mut b, of);
                    put(&mut b, a, layout::TAG_INT, r);
                    goto(&mut b, next);
                }
                Op::Eq { a, b: x, c: y } | Op::Ne { a, b: x, c: y } | Op::Lt { a, b: x, c: y } | Op::Le { a, b: x, c: y } => {
                    want_int(&mut b, x);
                    want_int(&mut b, y);
                    let xv = int_at(&mut b, x);
                    let yv = int_at(&mut b, y);
                    let cc = match op {
                        Op::Eq { .. } => IntCC::Equal,
                        Op::Ne { .. } => IntCC::NotEqual,
                        Op::Lt { .. } => IntCC::SignedLessThan,
                        _ => IntCC::SignedLessThanOrEqual,
                    };
                    let c = b.ins().icmp(cc, xv, yv);
                    let w = b.ins().uextend(types::I64, c);
                    put(&mut b, a, layout::TAG_BOOL, w);
                    goto(&mut b, next);
                }
                Op::Jmp { off } => goto(&mut b, target_of(off)),
                Op::JmpIf { a, off } | Op::JmpIfNot { a, off } => {
                    // Falsy: nil, or the bool false.
                    let t = tag_at(&mut b, a);
                    let is_nil = b.ins().icmp_imm_s(IntCC::Equal, t, i64::from(layout::TAG_NIL));
                    let is_bool = b.ins().icmp_imm_s(IntCC::Equal, t, i64::from(layout::TAG_BOOL));
                    let byte = b.ins().load(types::I8, mem, regs, i32::from(a) * layout::SIZE + layout::PAYLOAD);
                    let is_false = b.ins().icmp_imm_s(IntCC::Equal, byte, 0);
                    let false_bool = b.ins().band(is_bool, is_false);
                    let falsy = b.ins().bor(is_nil, false_bool);
                    let jump = if matches!(op, Op::JmpIf { .. }) { b.ins().bxor_imm_s(falsy, 1) } else { falsy };
                    branch(&mut b, jump, target_of(off), next, &goto);
                }
                Op::JmpIfNil { a, off } | Op::JmpIfNotNil { a, off } => {
                    let t = tag_at(&mut b, a);
                    let cc = if matches!(op, Op::JmpIfNil { .. }) { IntCC::Equal } else { IntCC::NotEqual };
                    let c = b.ins().icmp_imm_s(cc, t, i64::from(layout::TAG_NIL));
                    branch(&mut b, c, target_of(off), next, &goto);
                }
                Op::JmpIfLt { b: x, c: y, off }
                | Op::JmpIfLe { b: x, c: y, off }
                | Op::JmpIfEq { b: x, c: y, off }
                | Op::JmpIfNotLt { b: x, c: y, off }
                | Op::JmpIfNotLe { b: x, c: y, off }
                | Op::JmpIfNotEq { b: x, c: y, off } => {
                    want_int(&mut b, x);
                    want_int(&mut b, y);
                    let xv = int_at(&mut b, x);
                    let yv = int_at(&mut b, y);
                    let cc = match op {
                        Op::JmpIfLt { .. } => IntCC::SignedLessThan,
                        Op::JmpIfLe { .. } => IntCC::SignedLessThanOrEqual,
                        Op::JmpIfEq { .. } => IntCC::Equal,
                        Op::JmpIfNotLt { .. } => IntCC::SignedGreaterThanOrEqual,
                        Op::JmpIfNotLe { .. } => IntCC::SignedGreaterThan,
                        _ => IntCC::NotEqual,
                    };
                    let c = b.ins().icmp(cc, xv, yv);
                    branch(&mut b, c, target_of(off), next, &goto);
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
                    want_int(&mut b, x);
                    let xv = int_at(&mut b, x);
                    let cc = match op {
                        Op::JmpIfLtI { .. } | Op::JmpIfNotGeI { .. } => IntCC::SignedLessThan,
                        Op::JmpIfLeI { .. } | Op::JmpIfNotGtI { .. } => IntCC::SignedLessThanOrEqual,
                        Op::JmpIfGtI { .. } | Op::JmpIfNotLeI { .. } => IntCC::SignedGreaterThan,
                        Op::JmpIfGeI { .. } | Op::JmpIfNotLtI { .. } => IntCC::SignedGreaterThanOrEqual,
                        Op::JmpIfEqI { .. } => IntCC::Equal,
                        _ => IntCC::NotEqual,
                    };
                    let c = b.ins().icmp_imm_s(cc, xv, i64::from(v));
                    branch(&mut b, c, target_of(off), next, &goto);
                }
                Op::ForLoop { a, off } => {
                    want_int(&mut b, a);
                    want_int(&mut b, a + 1);
                    let i = int_at(&mut b, a);
                    let e = int_at(&mut b, a + 1);
                    // `i < e` held when the body was entered: `i + 1` cannot overflow.
                    let n = b.ins().iadd_imm_s(i, 1);
                    put(&mut b, a, layout::TAG_INT, n);
                    let more = b.ins().icmp(IntCC::SignedLessThan, n, e);
                    let body = b.create_block();
                    let done = b.create_block();
                    b.ins().brif(more, body, none, done, none);
                    b.switch_to_block(body);
                    put(&mut b, a + 2, layout::TAG_INT, n);
                    goto(&mut b, target_of(off));
                    b.switch_to_block(done);
                    goto(&mut b, next);
                }
                // Everything else: the interpreter runs it.
                _ => leave(&mut b, pc),
            }
        }

        b.switch_to_block(exit);
        let p = b.use_var(out_pc);
        b.ins().store(mem, p, cx, CTX_PC);
        let f = b.use_var(fuel);
        b.ins().store(mem, f, cx, CTX_FUEL);
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(tcfg);
    }
    let id = module.declare_anonymous_function(&ctx.func.signature).map_err(|e| e.to_string())?;
    module.define_function(id, ctx).map_err(|e| e.to_string())?;
    module.clear_context(ctx);
    module.finalize_definitions().map_err(|e| e.to_string())?;
    let code = module.get_finalized_function(id);
    // SAFETY: the function just compiled has the signature `JitFn` declares.
    Ok(unsafe { std::mem::transmute::<*const u8, JitFn>(code) })
}

/// Branches on `cond` to `target` (taken) or `next`.
fn branch(
    b: &mut FunctionBuilder,
    cond: cranelift_codegen::ir::Value,
    target: usize,
    next: usize,
    goto: &dyn Fn(&mut FunctionBuilder, usize),
) {
    let taken = b.create_block();
    let not = b.create_block();
    let none: &[BlockArg] = &[];
    b.ins().brif(cond, taken, none, not, none);
    b.switch_to_block(taken);
    goto(b, target);
    b.switch_to_block(not);
    goto(b, next);
}
