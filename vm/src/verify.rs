//! The bytecode verifier. Every module passes it before it runs, whoever produced it,
//! so the interpreter may rely on what it checks: every register, constant, global,
//! captured-variable, function and jump index is in range, constants have the kind
//! their instruction needs, and no function can run off the end of its code.

use crate::bytecode::{Const, Module, Op};

/// Why a module was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    pub function: usize,
    pub pc: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pc {
            Some(pc) => write!(f, "invalid bytecode in function #{} at pc {}: {}", self.function, pc, self.message),
            None => write!(f, "invalid bytecode in function #{}: {}", self.function, self.message),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Largest number of registers of one function (register operands are bytes).
pub const MAX_REGS: u16 = 256;
/// Largest number of instructions in one function.
pub const MAX_CODE: usize = 1 << 24;

pub fn verify(m: &Module) -> Result<(), VerifyError> {
    if m.functions.is_empty() {
        return Err(VerifyError { function: 0, pc: None, message: "module has no functions".into() });
    }
    if m.functions.len() > u32::MAX as usize / 2 || m.globals.len() > u32::MAX as usize / 2 {
        return Err(VerifyError { function: 0, pc: None, message: "too many functions or globals".into() });
    }
    for (fi, f) in m.functions.iter().enumerate() {
        let fail = |pc: Option<usize>, message: String| VerifyError { function: fi, pc, message };
        if f.code.is_empty() || f.code.len() > MAX_CODE {
            return Err(fail(None, format!("code length {} out of range", f.code.len())));
        }
        if f.lines.len() != f.code.len() {
            return Err(fail(None, "line table length differs from code length".into()));
        }
        if f.nregs > MAX_REGS || u16::from(f.arity) > f.nregs {
            return Err(fail(None, format!("{} registers for arity {} (max {MAX_REGS})", f.nregs, f.arity)));
        }
        if fi == 0 && (f.arity != 0 || !f.upvals.is_empty()) {
            return Err(fail(None, "the module's top-level function must take no arguments and capture nothing".into()));
        }
        let nregs = usize::from(f.nregs);
        let len = f.code.len();
        for (pc, op) in f.code.iter().enumerate() {
            let at = |msg: String| fail(Some(pc), msg);
            let reg = |r: u8| -> Result<(), VerifyError> {
                if usize::from(r) < nregs {
                    Ok(())
                } else {
                    Err(at(format!("register R{r} out of range ({nregs} registers)")))
                }
            };
            let regs = |first: u8, count: usize| -> Result<(), VerifyError> {
                if usize::from(first) + count <= nregs {
                    Ok(())
                } else {
                    Err(at(format!("registers R{first}..R{} out of range ({nregs} registers)", usize::from(first) + count)))
                }
            };
            let konst = |k: u32| -> Result<&Const, VerifyError> {
                m.consts.get(k as usize).ok_or_else(|| at(format!("constant K{k} out of range")))
            };
            let jump = |off: i32| -> Result<(), VerifyError> {
                let t = pc as i64 + 1 + i64::from(off);
                if t >= 0 && (t as usize) < len {
                    Ok(())
                } else {
                    Err(at(format!("jump target {t} outside the function")))
                }
            };
            let global = |g: u32| -> Result<(), VerifyError> {
                if (g as usize) < m.globals.len() {
                    Ok(())
                } else {
                    Err(at(format!("global G{g} out of range")))
                }
            };
            let upval = |u: u8| -> Result<(), VerifyError> {
                if usize::from(u) < f.upvals.len() {
                    Ok(())
                } else {
                    Err(at(format!("captured variable U{u} out of range")))
                }
            };
            match *op {
                Op::LoadNil { a } | Op::LoadBool { a, .. } | Op::LoadInt { a, .. } | Op::MakeBox { a } => reg(a)?,
                Op::LoadK { a, k } => {
                    reg(a)?;
                    if let Const::Module(_) = konst(k)? {
                        return Err(at("a module constant cannot be loaded as a value".into()));
                    }
                }
                Op::Move { a, b }
                | Op::GetBox { a, b }
                | Op::SetBox { a, b }
                | Op::Neg { a, b }
                | Op::Not { a, b }
                | Op::BitNot { a, b }
                | Op::AddI { a, b, .. } => {
                    reg(a)?;
                    reg(b)?;
                }
                Op::AddK { a, b, k } | Op::SubK { a, b, k } | Op::MulK { a, b, k } | Op::DivK { a, b, k } | Op::ModK { a, b, k } => {
                    reg(a)?;
                    reg(b)?;
                    if !matches!(konst(u32::from(k))?, Const::Int(_) | Const::Float(_)) {
                        return Err(at(format!("arithmetic constant K{k} is not a number")));
                    }
                }
                Op::GetGlobal { a, g } | Op::SetGlobal { g, a } => {
                    reg(a)?;
                    global(g)?;
                }
                Op::GetUpval { a, u } | Op::SetUpval { u, a } => {
                    reg(a)?;
                    upval(u)?;
                }
                Op::Closure { a, f: target } => {
                    reg(a)?;
                    let Some(g) = m.functions.get(target as usize).filter(|_| target != 0) else {
                        return Err(at(format!("closure of function #{target}, which is not a nested function")));
                    };
                    for d in &g.upvals {
                        if d.from_local {
                            reg(d.index)?;
                        } else {
                            upval(d.index)?;
                        }
                    }
                }
                Op::Add { a, b, c }
                | Op::Sub { a, b, c }
                | Op::Mul { a, b, c }
                | Op::Div { a, b, c }
                | Op::Mod { a, b, c }
                | Op::BitAnd { a, b, c }
                | Op::BitOr { a, b, c }
                | Op::BitXor { a, b, c }
                | Op::Shl { a, b, c }
                | Op::Shr { a, b, c }
                | Op::Eq { a, b, c }
                | Op::Ne { a, b, c }
                | Op::Lt { a, b, c }
                | Op::Le { a, b, c }
                | Op::GetIndex { a, b, c }
                | Op::SetIndex { a, b, c } => {
                    reg(a)?;
                    reg(b)?;
                    reg(c)?;
                }
                Op::Jmp { off } => jump(off)?,
                Op::JmpIf { a, off } | Op::JmpIfNot { a, off } | Op::JmpIfNil { a, off } | Op::JmpIfNotNil { a, off } => {
                    reg(a)?;
                    jump(off)?;
                }
                Op::JmpIfNotLt { b, c, off }
                | Op::JmpIfNotLe { b, c, off }
                | Op::JmpIfNotEq { b, c, off }
                | Op::JmpIfEq { b, c, off }
                | Op::JmpIfLt { b, c, off }
                | Op::JmpIfLe { b, c, off } => {
                    reg(b)?;
                    reg(c)?;
                    jump(off)?;
                }
                Op::Call { a, n } => regs(a, usize::from(n) + 1)?,
                Op::Return { a } => reg(a)?,
                Op::ReturnNil {} | Op::EndTry {} => {}
                Op::NewArray { a, b, n } | Op::Concat { a, b, n } => {
                    reg(a)?;
                    regs(b, usize::from(n))?;
                }
                Op::NewMap { a, b, n } => {
                    reg(a)?;
                    regs(b, 2 * usize::from(n))?;
                }
                Op::GetField { a, b, k } => {
                    reg(a)?;
                    reg(b)?;
                    if !matches!(konst(k)?, Const::Str(_)) {
                        return Err(at(format!("field name K{k} is not a string")));
                    }
                }
                Op::SetField { a, k, c } => {
                    reg(a)?;
                    reg(c)?;
                    if !matches!(konst(k)?, Const::Str(_)) {
                        return Err(at(format!("field name K{k} is not a string")));
                    }
                }
                Op::ForPrep { a, off } | Op::ForLoop { a, off } => {
                    regs(a, 3)?;
                    jump(off)?;
                }
                Op::JmpIfLtI { b, off, .. }
                | Op::JmpIfLeI { b, off, .. }
                | Op::JmpIfGtI { b, off, .. }
                | Op::JmpIfGeI { b, off, .. }
                | Op::JmpIfNotLtI { b, off, .. }
                | Op::JmpIfNotLeI { b, off, .. }
                | Op::JmpIfNotGtI { b, off, .. }
                | Op::JmpIfNotGeI { b, off, .. }
                | Op::JmpIfNotEqI { b, off, .. }
                | Op::JmpIfEqI { b, off, .. } => {
                    reg(b)?;
                    jump(off)?;
                }
                Op::IterNext { a, n, off } => {
                    if !(1..=2).contains(&n) {
                        return Err(at(format!("iteration over {n} variables")));
                    }
                    regs(a, 2 + usize::from(n))?;
                    jump(off)?;
                }
                Op::Import { a, k } => {
                    reg(a)?;
                    if !matches!(konst(k)?, Const::Module(_)) {
                        return Err(at(format!("import of K{k}, which is not a module")));
                    }
                }
                Op::Try { a, off } => {
                    reg(a)?;
                    jump(off)?;
                }
            }
            let falls_through = !matches!(op, Op::Jmp { .. } | Op::Return { .. } | Op::ReturnNil {});
            if falls_through && pc + 1 >= len {
                return Err(at("execution can run off the end of the function".into()));
            }
        }
    }
    Ok(())
}
