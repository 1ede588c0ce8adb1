//! Code generation: AST to register bytecode for one module.
//!
//! Registers are allocated as a stack: locals and temporaries take the next free
//! register and give it back when their scope or expression ends. A call therefore
//! always sits above every live register of its function, which lets the callee's frame
//! begin at the call's first argument (see `tern_vm::process`).
//!
//! Variables captured by a nested function live in boxes (heap cells) from their
//! declaration on, so that assignments on either side are seen by both; the
//! [`crate::resolve`] pass finds which declarations those are before code is emitted.

use crate::ast::*;
use crate::diag::Diagnostic;
use crate::resolve::Captures;
use std::collections::{HashMap, HashSet};
use tern_vm::bytecode::{Const, Function, Module, ModuleHash, Op, UpvalDesc};

/// How `import name;` finds modules: returns the module's hash, or an error message.
pub trait ImportResolver {
    fn resolve(&mut self, name: &str) -> Result<ModuleHash, String>;
}

/// Longest array or map literal built by one instruction; longer ones are built in steps.
const LITERAL_CHUNK: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum ConstKey {
    Int(i64),
    Float(u64),
    Str(u32),
}

struct Local {
    name: String,
    reg: u8,
    boxed: bool,
}

/// How a loop goes round again.
enum LoopBack {
    /// Jump back to the condition at this position.
    Jump(usize),
    /// A counted loop: `ForLoop` over registers `a..a+3`, back to `body_start`.
    ForLoop { a: u8, body_start: usize },
}

struct LoopCtx {
    breaks: Vec<usize>,
    continues: Vec<usize>,
    try_depth: usize,
}

struct FnState {
    index: usize,
    name: String,
    arity: u8,
    code: Vec<Op>,
    lines: Vec<u32>,
    upvals: Vec<UpvalDesc>,
    scopes: Vec<Vec<Local>>,
    next_reg: usize,
    max_reg: usize,
    loops: Vec<LoopCtx>,
    try_depth: usize,
    /// Where the function is declared, for errors about it as a whole.
    span: Span,
    too_many_regs: bool,
}

#[derive(Clone, Copy)]
enum Loc {
    Local { reg: u8, boxed: bool },
    Upval(u8),
    Global(u32),
    Native(u32),
}

pub struct Codegen<'a> {
    module_name: String,
    line_starts: Vec<usize>,
    consts: Vec<Const>,
    const_map: HashMap<ConstKey, u32>,
    strings: HashMap<String, u32>,
    functions: Vec<Option<Function>>,
    globals: Vec<String>,
    global_map: HashMap<String, u32>,
    natives: &'a [&'a str],
    captures: Captures,
    fns: Vec<FnState>,
    line: u32,
    imports: &'a mut dyn ImportResolver,
    /// Named local functions already created at the start of their block.
    hoisted: HashSet<u32>,
    pub diags: Vec<Diagnostic>,
}

impl<'a> Codegen<'a> {
    pub fn new(
        module_name: &str,
        source: &str,
        natives: &'a [&'a str],
        captures: Captures,
        imports: &'a mut dyn ImportResolver,
    ) -> Codegen<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        Codegen {
            module_name: module_name.to_string(),
            line_starts,
            consts: Vec::new(),
            const_map: HashMap::new(),
            strings: HashMap::new(),
            functions: Vec::new(),
            globals: Vec::new(),
            global_map: HashMap::new(),
            natives,
            captures,
            fns: Vec::new(),
            line: 1,
            imports,
            hoisted: HashSet::new(),
            diags: Vec::new(),
        }
    }

    /// Compiles a whole program into a module (function 0 is its top level).
    pub fn module(mut self, prog: &Program) -> Result<Module, Vec<Diagnostic>> {
        // Top-level `let`, `fn` and `import` names are the module's globals.
        for s in &prog.stmts {
            let name = match s {
                Stmt::Let { name, .. } => Some(&name.name),
                Stmt::Fn(f) => f.name.as_ref().map(|n| &n.name),
                Stmt::Import { module, alias, .. } => Some(&alias.as_ref().unwrap_or(module).name),
                _ => None,
            };
            if let Some(n) = name {
                if !self.global_map.contains_key(n) {
                    self.global_map.insert(n.clone(), self.globals.len() as u32);
                    self.globals.push(n.clone());
                }
            }
        }
        self.begin_fn(String::new(), &[], Span::default());
        // Imports and top-level functions are set up before any other statement runs, so
        // code may call functions defined further down the file.
        for s in &prog.stmts {
            if let Stmt::Import { module, alias, span } = s {
                self.set_line(*span);
                let g = self.global_map[&alias.as_ref().unwrap_or(module).name];
                match self.imports.resolve(&module.name) {
                    Ok(hash) => {
                        let k = self.add_const(Const::Module(hash));
                        let r = self.alloc_reg();
                        self.emit(Op::Import { a: r, k });
                        self.emit(Op::SetGlobal { g, a: r });
                        self.free_to(r);
                    }
                    Err(e) => self.error(e, module.span),
                }
            }
        }
        for s in &prog.stmts {
            if let Stmt::Fn(f) = s {
                if let Some(name) = &f.name {
                    let g = self.global_map[&name.name];
                    self.set_line(f.span);
                    let r = self.alloc_reg();
                    self.function(f, r);
                    self.emit(Op::SetGlobal { g, a: r });
                    self.free_to(r);
                }
            }
        }
        for s in &prog.stmts {
            match s {
                Stmt::Import { .. } | Stmt::Fn(_) => {}
                Stmt::Let { name, init, span } => {
                    self.set_line(*span);
                    let g = self.global_map[&name.name];
                    let r = self.alloc_reg();
                    match init {
                        Some(e) => self.expr_to(e, r),
                        None => {
                            self.emit(Op::LoadNil { a: r });
                        }
                    }
                    self.emit(Op::SetGlobal { g, a: r });
                    self.free_to(r);
                }
                other => self.stmt(other),
            }
        }
        // The module's value: a map of its globals.
        let m = self.alloc_reg();
        self.emit(Op::NewMap { a: m, b: m, n: 0 });
        let t = self.alloc_reg();
        for (g, name) in self.globals.clone().iter().enumerate() {
            let k = self.str_const(name);
            self.emit(Op::GetGlobal { a: t, g: g as u32 });
            self.emit(Op::SetField { a: m, k, c: t });
        }
        self.emit(Op::Return { a: m });
        self.end_fn();
        if !self.diags.is_empty() {
            return Err(self.diags);
        }
        let functions = self.functions.into_iter().map(|f| f.unwrap_or_else(empty_function)).collect();
        Ok(Module { name: self.module_name, consts: self.consts, functions, globals: self.globals })
    }

    // ---- functions ----

    fn begin_fn(&mut self, name: String, params: &[Ident], span: Span) {
        let index = self.functions.len();
        self.functions.push(None);
        self.fns.push(FnState {
            index,
            name,
            arity: params.len().min(255) as u8,
            code: Vec::new(),
            lines: Vec::new(),
            upvals: Vec::new(),
            scopes: vec![Vec::new()],
            next_reg: 0,
            max_reg: 0,
            loops: Vec::new(),
            try_depth: 0,
            span,
            too_many_regs: false,
        });
        if params.len() > 200 {
            self.error("a function can have at most 200 parameters", params[200].span);
        }
        for p in params {
            let r = self.alloc_reg();
            self.declare(p, r);
        }
    }

    fn end_fn(&mut self) -> usize {
        let Some(f) = self.fns.pop() else { return 0 };
        let func =
            Function { name: f.name, arity: f.arity, nregs: f.max_reg.max(1) as u16, upvals: f.upvals, code: f.code, lines: f.lines };
        self.functions[f.index] = Some(func);
        f.index
    }

    /// Compiles a function declaration or literal; leaves the function value in `dst`.
    fn function(&mut self, f: &FnDecl, dst: u8) {
        let name = f.name.as_ref().map_or_else(|| "<anonymous>".to_string(), |n| n.name.clone());
        self.begin_fn(name, &f.params, f.name.as_ref().map_or(f.span, |n| n.span));
        let r = self.alloc_reg();
        self.block_to(&f.body, r);
        self.emit(Op::Return { a: r });
        let index = self.end_fn();
        self.set_line(f.span);
        self.emit(Op::Closure { a: dst, f: index as u32 });
    }

    fn cur(&mut self) -> &mut FnState {
        self.fns.last_mut().expect("codegen always runs inside a function")
    }

    // ---- emission helpers ----

    fn set_line(&mut self, span: Span) {
        let off = span.start as usize;
        self.line = match self.line_starts.binary_search(&off) {
            Ok(i) => i + 1,
            Err(i) => i,
        } as u32;
    }

    fn emit(&mut self, op: Op) -> usize {
        let line = self.line;
        let f = self.cur();
        f.code.push(op);
        f.lines.push(line);
        f.code.len() - 1
    }

    fn here(&mut self) -> usize {
        self.cur().code.len()
    }

    /// Points the jump at `at` to `target`.
    fn patch(&mut self, at: usize, target: usize) {
        let off = target as i32 - at as i32 - 1;
        let f = self.cur();
        f.code[at] = match f.code[at] {
            Op::Jmp { .. } => Op::Jmp { off },
            Op::JmpIf { a, .. } => Op::JmpIf { a, off },
            Op::JmpIfNot { a, .. } => Op::JmpIfNot { a, off },
            Op::JmpIfNotLt { b, c, .. } => Op::JmpIfNotLt { b, c, off },
            Op::JmpIfNotLe { b, c, .. } => Op::JmpIfNotLe { b, c, off },
            Op::JmpIfNotEq { b, c, .. } => Op::JmpIfNotEq { b, c, off },
            Op::JmpIfEq { b, c, .. } => Op::JmpIfEq { b, c, off },
            Op::ForPrep { a, .. } => Op::ForPrep { a, off },
            Op::ForLoop { a, .. } => Op::ForLoop { a, off },
            Op::JmpIfLt { b, c, .. } => Op::JmpIfLt { b, c, off },
            Op::JmpIfLe { b, c, .. } => Op::JmpIfLe { b, c, off },
            Op::JmpIfLtI { b, v, .. } => Op::JmpIfLtI { b, v, off },
            Op::JmpIfLeI { b, v, .. } => Op::JmpIfLeI { b, v, off },
            Op::JmpIfGtI { b, v, .. } => Op::JmpIfGtI { b, v, off },
            Op::JmpIfGeI { b, v, .. } => Op::JmpIfGeI { b, v, off },
            Op::JmpIfNil { a, .. } => Op::JmpIfNil { a, off },
            Op::JmpIfNotNil { a, .. } => Op::JmpIfNotNil { a, off },
            Op::JmpIfNotLtI { b, v, .. } => Op::JmpIfNotLtI { b, v, off },
            Op::JmpIfNotLeI { b, v, .. } => Op::JmpIfNotLeI { b, v, off },
            Op::JmpIfNotGtI { b, v, .. } => Op::JmpIfNotGtI { b, v, off },
            Op::JmpIfNotGeI { b, v, .. } => Op::JmpIfNotGeI { b, v, off },
            Op::JmpIfNotEqI { b, v, .. } => Op::JmpIfNotEqI { b, v, off },
            Op::JmpIfEqI { b, v, .. } => Op::JmpIfEqI { b, v, off },
            Op::IterNext { a, n, .. } => Op::IterNext { a, n, off },
            Op::Try { a, .. } => Op::Try { a, off },
            other => other,
        };
    }

    fn patch_here(&mut self, jumps: Vec<usize>) {
        let h = self.here();
        for j in jumps {
            self.patch(j, h);
        }
    }

    fn jump_back(&mut self, target: usize) {
        let at = self.here();
        self.emit(Op::Jmp { off: target as i32 - at as i32 - 1 });
    }

    fn error(&mut self, msg: impl Into<String>, span: Span) {
        self.diags.push(Diagnostic::new(msg, span));
    }

    fn alloc_reg(&mut self) -> u8 {
        let f = self.cur();
        let r = f.next_reg;
        f.next_reg += 1;
        f.max_reg = f.max_reg.max(f.next_reg);
        if r > 255 {
            if !f.too_many_regs {
                f.too_many_regs = true;
                let (name, span) = (f.name.clone(), f.span);
                let what = if name.is_empty() { "the top level".to_string() } else { format!("function `{name}`") };
                self.error(format!("{what} is too complex: it needs more than 256 registers (split it into smaller functions)"), span);
            }
            return 255;
        }
        r as u8
    }

    fn alloc_regs(&mut self, n: usize) -> u8 {
        let first = self.alloc_reg();
        for _ in 1..n {
            self.alloc_reg();
        }
        first
    }

    fn free_to(&mut self, r: u8) {
        let f = self.cur();
        let keep = f.scopes.iter().flatten().map(|l| usize::from(l.reg) + 1).max().unwrap_or(0);
        f.next_reg = usize::from(r).max(keep);
    }

    fn add_const(&mut self, c: Const) -> u32 {
        let key = match &c {
            Const::Int(i) => Some(ConstKey::Int(*i)),
            Const::Float(f) => Some(ConstKey::Float(f.to_bits())),
            _ => None,
        };
        if let Some(k) = key {
            if let Some(&i) = self.const_map.get(&k) {
                return i;
            }
            self.const_map.insert(k, self.consts.len() as u32);
        }
        if let Const::Module(h) = &c {
            if let Some(i) = self.consts.iter().position(|x| matches!(x, Const::Module(y) if y == h)) {
                return i as u32;
            }
        }
        self.consts.push(c);
        self.consts.len() as u32 - 1
    }

    fn str_const(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.consts.len() as u32;
        self.consts.push(Const::Str(s.to_string()));
        self.strings.insert(s.to_string(), i);
        self.const_map.insert(ConstKey::Str(i), i);
        i
    }

    /// The constant index of a number literal, when it fits a `...K` instruction.
    fn number_const(&mut self, e: &Expr) -> Option<u16> {
        let c = match e.kind {
            ExprKind::Int(i) => Const::Int(i),
            ExprKind::Float(f) => Const::Float(f),
            _ => return None,
        };
        u16::try_from(self.add_const(c)).ok()
    }

    fn native_const(&mut self, name: &str) -> u32 {
        if let Some(i) = self.consts.iter().position(|c| matches!(c, Const::Native(n) if n == name)) {
            return i as u32;
        }
        self.consts.push(Const::Native(name.to_string()));
        self.consts.len() as u32 - 1
    }

    // ---- scopes and names ----

    fn declare(&mut self, name: &Ident, reg: u8) {
        let boxed = self.captures.is_captured(name.span);
        if boxed {
            self.emit(Op::MakeBox { a: reg });
        }
        let f = self.cur();
        f.scopes.last_mut().expect("a function has a scope").push(Local { name: name.name.clone(), reg, boxed });
    }

    fn push_scope(&mut self) {
        self.cur().scopes.push(Vec::new());
    }

    fn pop_scope(&mut self) {
        let f = self.cur();
        let scope = f.scopes.pop().unwrap_or_default();
        if let Some(low) = scope.iter().map(|l| l.reg).min() {
            self.free_to(low);
        }
    }

    fn resolve(&mut self, name: &str, span: Span) -> Option<Loc> {
        let depth = self.fns.len() - 1;
        if let Some(l) = self.resolve_in(depth, name) {
            return Some(l);
        }
        if let Some(&g) = self.global_map.get(name) {
            return Some(Loc::Global(g));
        }
        if self.natives.contains(&name) {
            return Some(Loc::Native(self.native_const(name)));
        }
        self.error(format!("undefined variable `{name}`"), span);
        None
    }

    /// Looks `name` up in function `depth` and, through captured variables, in the
    /// functions enclosing it.
    fn resolve_in(&mut self, depth: usize, name: &str) -> Option<Loc> {
        let f = &self.fns[depth];
        for scope in f.scopes.iter().rev() {
            if let Some(l) = scope.iter().rev().find(|l| l.name == name) {
                return Some(Loc::Local { reg: l.reg, boxed: l.boxed });
            }
        }
        if depth == 0 {
            return None;
        }
        let desc = match self.resolve_in(depth - 1, name)? {
            Loc::Local { reg, boxed: true } => UpvalDesc { from_local: true, index: reg },
            Loc::Upval(u) => UpvalDesc { from_local: false, index: u },
            // Unboxed locals of an enclosing function are never captured (the resolve
            // pass boxes every captured one); globals and natives need no capture.
            _ => return None,
        };
        let f = &mut self.fns[depth];
        let u = match f.upvals.iter().position(|d| *d == desc) {
            Some(u) => u,
            None => {
                f.upvals.push(desc);
                f.upvals.len() - 1
            }
        };
        Some(Loc::Upval(u.min(255) as u8))
    }

    // ---- statements ----

    fn block_to(&mut self, b: &Block, dst: u8) {
        self.push_scope();
        self.hoist_fns(&b.stmts);
        for s in &b.stmts {
            self.stmt(s);
        }
        match &b.tail {
            Some(e) => self.expr_to(e, dst),
            None => {
                self.set_line(b.span);
                self.emit(Op::LoadNil { a: dst });
            }
        }
        self.pop_scope();
    }

    /// Named functions of a block are declared at its start, so that they can call each
    /// other whatever their order.
    ///
    /// A function that uses none of the block's `let` variables is also created there,
    /// so it can be called before its declaration; one that does is created where it
    /// is declared (the variables it captures must exist first).
    fn hoist_fns(&mut self, stmts: &[Stmt]) {
        let mut fns = Vec::new();
        for s in stmts {
            if let Stmt::Fn(f @ FnDecl { name: Some(name), .. }) = s {
                let r = self.alloc_reg();
                self.emit(Op::LoadNil { a: r });
                self.declare(name, r);
                fns.push(f);
            }
        }
        if fns.is_empty() {
            return;
        }
        let lets: HashSet<&str> = stmts
            .iter()
            .filter_map(|s| match s {
                Stmt::Let { name, .. } => Some(name.name.as_str()),
                _ => None,
            })
            .collect();
        for f in fns {
            if crate::resolve::free_names(f).iter().all(|n| !lets.contains(n.as_str())) {
                self.create_named_fn(f);
                self.hoisted.insert(f.span.start);
            }
        }
    }

    /// Makes the closure of a named local function and stores it in its variable.
    fn create_named_fn(&mut self, f: &FnDecl) {
        let Some(name) = &f.name else { return };
        match self.resolve(&name.name, name.span) {
            Some(Loc::Local { reg, boxed: false }) => self.function(f, reg),
            Some(Loc::Local { reg, boxed: true }) => {
                let t = self.alloc_reg();
                self.function(f, t);
                self.emit(Op::SetBox { a: reg, b: t });
                self.free_to(t);
            }
            _ => {}
        }
    }

    fn stmt(&mut self, s: &Stmt) {
        match s {
            Stmt::Let { name, init, span } => {
                self.set_line(*span);
                let r = self.alloc_reg();
                match init {
                    // `let f = fn ...` declares `f` first, so the function can call itself.
                    Some(e @ Expr { kind: ExprKind::Fn(_), .. }) => {
                        self.emit(Op::LoadNil { a: r });
                        self.declare(name, r);
                        if self.captures.is_captured(name.span) {
                            let t = self.alloc_reg();
                            self.expr_to(e, t);
                            self.emit(Op::SetBox { a: r, b: t });
                            self.free_to(t);
                        } else {
                            self.expr_to(e, r);
                        }
                    }
                    Some(e) => {
                        self.expr_to(e, r);
                        self.declare(name, r);
                    }
                    None => {
                        self.emit(Op::LoadNil { a: r });
                        self.declare(name, r);
                    }
                }
            }
            Stmt::Fn(f) => {
                if !self.hoisted.contains(&f.span.start) {
                    self.create_named_fn(f);
                }
            }
            Stmt::Import { span, .. } => self.error("`import` is only allowed at the top level of a file", *span),
            Stmt::Assign { target, op, value, span } => {
                self.set_line(*span);
                self.assign(target, *op, value);
            }
            Stmt::While { cond, body, span } => {
                // The condition sits after the body, so each round costs one jump.
                self.set_line(*span);
                let to_cond = self.emit(Op::Jmp { off: 0 });
                let body_start = self.here();
                let try_depth = self.cur().try_depth;
                self.cur().loops.push(LoopCtx { breaks: Vec::new(), continues: Vec::new(), try_depth });
                self.block_discard(body);
                let lp = self.cur().loops.pop().expect("pushed above");
                let cond_at = self.here();
                self.patch(to_cond, cond_at);
                for c in lp.continues {
                    self.patch(c, cond_at);
                }
                self.set_line(*span);
                for j in self.jump_if_true(cond) {
                    self.patch(j, body_start);
                }
                self.patch_here(lp.breaks);
            }
            Stmt::For { first, second, iter, body, span } => {
                self.set_line(*span);
                self.for_loop(first, second.as_ref(), iter, body, *span);
            }
            Stmt::Break(span) | Stmt::Continue(span) => {
                self.set_line(*span);
                let is_break = matches!(s, Stmt::Break(_));
                let Some(lp) = self.cur().loops.last() else {
                    let what = if is_break { "break" } else { "continue" };
                    self.error(format!("`{what}` outside of a loop"), *span);
                    return;
                };
                for _ in lp.try_depth..self.cur().try_depth {
                    self.emit(Op::EndTry {});
                }
                let j = self.emit(Op::Jmp { off: 0 });
                let lp = self.cur().loops.last_mut().expect("checked above");
                if is_break {
                    lp.breaks.push(j);
                } else {
                    lp.continues.push(j);
                }
            }
            Stmt::Return { value, span } => {
                self.set_line(*span);
                if self.fns.len() == 1 {
                    self.error("`return` outside of a function", *span);
                    return;
                }
                match value {
                    Some(Expr { kind: ExprKind::Nil, .. }) | None => {
                        self.emit(Op::ReturnNil {});
                    }
                    Some(e) => {
                        let r = self.expr_any(e);
                        self.emit(Op::Return { a: r });
                    }
                }
                let t = self.cur().next_reg;
                self.free_to(t.min(255) as u8);
            }
            Stmt::Expr(e) => self.expr_discard(e),
        }
    }

    /// Body of a loop, then the jump back (`back`); `exits` jump out of the loop.
    fn loop_body(&mut self, body: &Block, back: LoopBack, exits: Vec<usize>) {
        let try_depth = self.cur().try_depth;
        self.cur().loops.push(LoopCtx { breaks: Vec::new(), continues: Vec::new(), try_depth });
        self.block_discard(body);
        let continue_at = match back {
            LoopBack::Jump(top) => {
                self.jump_back(top);
                top
            }
            LoopBack::ForLoop { a, body_start } => {
                let at = self.here();
                self.emit(Op::ForLoop { a, off: body_start as i32 - at as i32 - 1 });
                at
            }
        };
        let lp = self.cur().loops.pop().expect("pushed above");
        for c in lp.continues {
            self.patch(c, continue_at);
        }
        self.patch_here(exits);
        self.patch_here(lp.breaks);
    }

    /// A block whose value is not needed.
    fn block_discard(&mut self, b: &Block) {
        self.push_scope();
        self.hoist_fns(&b.stmts);
        for s in &b.stmts {
            self.stmt(s);
        }
        if let Some(e) = &b.tail {
            self.expr_discard(e);
        }
        self.pop_scope();
    }

    /// An expression evaluated for its effects only.
    fn expr_discard(&mut self, e: &Expr) {
        self.set_line(e.span);
        match &e.kind {
            ExprKind::If { cond, then, els } => {
                let f = self.jump_if_false(cond);
                self.block_discard(then);
                match els {
                    Some(x) => {
                        let j = self.emit(Op::Jmp { off: 0 });
                        self.patch_here(f);
                        self.expr_discard(x);
                        self.patch_here(vec![j]);
                    }
                    None => self.patch_here(f),
                }
            }
            ExprKind::Block(b) => self.block_discard(b),
            _ => {
                let r = self.alloc_reg();
                self.expr_to(e, r);
                self.free_to(r);
            }
        }
    }

    fn for_loop(&mut self, first: &Ident, second: Option<&Ident>, iter: &ForIter, body: &Block, span: Span) {
        let mark = self.cur().next_reg as u8;
        self.push_scope();
        match iter {
            ForIter::Range { start, end } => {
                if let Some(s) = second {
                    self.error("a range loop has one variable", s.span);
                }
                let a = self.alloc_regs(3);
                self.expr_to(start, a);
                self.expr_to(end, off(a, 1));
                self.set_line(span);
                let prep = self.emit(Op::ForPrep { a, off: 0 });
                let body_start = self.here();
                self.push_scope();
                self.declare(first, off(a, 2));
                self.loop_body(body, LoopBack::ForLoop { a, body_start }, vec![prep]);
                self.pop_scope();
            }
            ForIter::Expr(e) => {
                let a = self.alloc_regs(4);
                self.expr_to(e, a);
                self.emit(Op::LoadInt { a: off(a, 1), v: 0 });
                self.set_line(span);
                let n = if second.is_some() { 2 } else { 1 };
                let top = self.emit(Op::IterNext { a, n, off: 0 });
                self.push_scope();
                self.declare(first, off(a, 2));
                if let Some(s) = second {
                    self.declare(s, off(a, 3));
                }
                self.loop_body(body, LoopBack::Jump(top), vec![top]);
                self.pop_scope();
            }
        }
        self.pop_scope();
        self.free_to(mark);
    }

    fn assign(&mut self, target: &Expr, op: Option<BinOp>, value: &Expr) {
        let mark = self.cur().next_reg.min(255) as u8;
        match &target.kind {
            ExprKind::Var(name) => {
                let Some(loc) = self.resolve(name, target.span) else { return };
                // The new value is computed in a temporary unless writing the variable
                // early cannot be observed.
                let compute = |cg: &mut Self, dst: u8| match op {
                    Some(op @ (BinOp::Add | BinOp::Sub)) if small_int(value).is_some() => {
                        let v = small_int(value).unwrap_or(0);
                        cg.load_loc(loc, dst);
                        cg.emit(Op::AddI { a: dst, b: dst, v: if op == BinOp::Sub { -v } else { v } });
                    }
                    Some(op) => {
                        let cur = cg.alloc_reg();
                        cg.load_loc(loc, cur);
                        let v = cg.expr_any(value);
                        cg.arith(op, dst, cur, v);
                    }
                    None => cg.expr_to(value, dst),
                };
                match loc {
                    Loc::Local { reg, boxed: false } => {
                        if op.is_none() && is_simple(value) {
                            self.expr_to(value, reg);
                        } else if let (Some(op), Some(v)) = (op, small_int(value)) {
                            if matches!(op, BinOp::Add | BinOp::Sub) {
                                let v = if op == BinOp::Sub { -v } else { v };
                                self.emit(Op::AddI { a: reg, b: reg, v });
                            } else {
                                let t = self.alloc_reg();
                                compute(self, t);
                                self.emit(Op::Move { a: reg, b: t });
                            }
                        } else if let Some(op) = op {
                            // An unboxed local is captured by nothing, so evaluating the
                            // operand cannot change it: update it in place.
                            let v = self.expr_any(value);
                            self.arith(op, reg, reg, v);
                        } else {
                            let t = self.alloc_reg();
                            compute(self, t);
                            self.emit(Op::Move { a: reg, b: t });
                        }
                    }
                    Loc::Local { reg, boxed: true } => {
                        let t = self.alloc_reg();
                        compute(self, t);
                        self.emit(Op::SetBox { a: reg, b: t });
                    }
                    Loc::Upval(u) => {
                        let t = self.alloc_reg();
                        compute(self, t);
                        self.emit(Op::SetUpval { u, a: t });
                    }
                    Loc::Global(g) => {
                        let t = self.alloc_reg();
                        compute(self, t);
                        self.emit(Op::SetGlobal { g, a: t });
                    }
                    Loc::Native(_) => self.error(format!("cannot assign to built-in function `{name}`"), target.span),
                }
            }
            ExprKind::Index(obj, idx) => {
                let o = self.expr_any(obj);
                let i = self.expr_any(idx);
                let v = match op {
                    Some(op) => {
                        let cur = self.alloc_reg();
                        self.emit(Op::GetIndex { a: cur, b: o, c: i });
                        let v = self.expr_any(value);
                        self.arith(op, cur, cur, v);
                        cur
                    }
                    None => self.expr_any(value),
                };
                self.emit(Op::SetIndex { a: o, b: i, c: v });
            }
            ExprKind::Field(obj, name) => {
                let o = self.expr_any(obj);
                let k = self.str_const(name);
                let v = match op {
                    Some(op) => {
                        let cur = self.alloc_reg();
                        self.emit(Op::GetField { a: cur, b: o, k });
                        let v = self.expr_any(value);
                        self.arith(op, cur, cur, v);
                        cur
                    }
                    None => self.expr_any(value),
                };
                self.emit(Op::SetField { a: o, k, c: v });
            }
            _ => self.error("cannot assign to this expression", target.span),
        }
        self.free_to(mark);
    }

    fn arith(&mut self, op: BinOp, a: u8, b: u8, c: u8) {
        self.emit(match op {
            BinOp::Add => Op::Add { a, b, c },
            BinOp::Sub => Op::Sub { a, b, c },
            BinOp::Mul => Op::Mul { a, b, c },
            BinOp::Div => Op::Div { a, b, c },
            BinOp::Mod => Op::Mod { a, b, c },
            BinOp::BitAnd => Op::BitAnd { a, b, c },
            BinOp::BitOr => Op::BitOr { a, b, c },
            BinOp::BitXor => Op::BitXor { a, b, c },
            BinOp::Shl => Op::Shl { a, b, c },
            BinOp::Shr => Op::Shr { a, b, c },
            BinOp::Eq => Op::Eq { a, b, c },
            BinOp::Ne => Op::Ne { a, b, c },
            BinOp::Lt => Op::Lt { a, b, c },
            BinOp::Le => Op::Le { a, b, c },
            BinOp::Gt => Op::Lt { a, b: c, c: b },
            BinOp::Ge => Op::Le { a, b: c, c: b },
            BinOp::And | BinOp::Or => Op::Move { a, b },
        });
    }

    fn load_loc(&mut self, loc: Loc, dst: u8) {
        match loc {
            Loc::Local { reg, boxed: false } => {
                if reg != dst {
                    self.emit(Op::Move { a: dst, b: reg });
                }
            }
            Loc::Local { reg, boxed: true } => {
                self.emit(Op::GetBox { a: dst, b: reg });
            }
            Loc::Upval(u) => {
                self.emit(Op::GetUpval { a: dst, u });
            }
            Loc::Global(g) => {
                self.emit(Op::GetGlobal { a: dst, g });
            }
            Loc::Native(k) => {
                self.emit(Op::LoadK { a: dst, k });
            }
        }
    }

    // ---- conditions ----

    /// Emits code that jumps when `e` is falsy; returns the jumps to patch.
    fn jump_if_false(&mut self, e: &Expr) -> Vec<usize> {
        let mark = self.cur().next_reg.min(255) as u8;
        let jumps = match &e.kind {
            ExprKind::Binary(BinOp::And, l, r) => {
                let mut j = self.jump_if_false(l);
                j.extend(self.jump_if_false(r));
                j
            }
            ExprKind::Binary(BinOp::Or, l, r) => {
                let t = self.jump_if_true(l);
                let f = self.jump_if_false(r);
                self.patch_here(t);
                f
            }
            ExprKind::Unary(UnOp::Not, x) => self.jump_if_true(x),
            ExprKind::Binary(op @ (BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne), l, r) => {
                vec![self.compare_jump(e.span, *op, l, r, false)]
            }
            ExprKind::Bool(true) => vec![],
            _ => {
                let r = self.expr_any(e);
                vec![self.emit(Op::JmpIfNot { a: r, off: 0 })]
            }
        };
        self.free_to(mark);
        jumps
    }

    /// Emits code that jumps when `e` is truthy; returns the jumps to patch.
    fn jump_if_true(&mut self, e: &Expr) -> Vec<usize> {
        let mark = self.cur().next_reg.min(255) as u8;
        let jumps = match &e.kind {
            ExprKind::Binary(BinOp::Or, l, r) => {
                let mut j = self.jump_if_true(l);
                j.extend(self.jump_if_true(r));
                j
            }
            ExprKind::Binary(BinOp::And, l, r) => {
                let f = self.jump_if_false(l);
                let t = self.jump_if_true(r);
                self.patch_here(f);
                t
            }
            ExprKind::Unary(UnOp::Not, x) => self.jump_if_false(x),
            ExprKind::Bool(true) => vec![self.emit(Op::Jmp { off: 0 })],
            ExprKind::Binary(op @ (BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne), l, r) => {
                vec![self.compare_jump(e.span, *op, l, r, true)]
            }
            _ => {
                let r = self.expr_any(e);
                vec![self.emit(Op::JmpIf { a: r, off: 0 })]
            }
        };
        self.free_to(mark);
        jumps
    }

    /// Emits one instruction that compares `l op r` and jumps when the result is
    /// `when`; returns it for patching. Comparisons with `nil` and with small ints use
    /// their own instructions, and `>`/`>=` swap their operands (evaluated in order).
    fn compare_jump(&mut self, span: Span, op: BinOp, l: &Expr, r: &Expr, when: bool) -> usize {
        let off = 0;
        if matches!(r.kind, ExprKind::Nil) && matches!(op, BinOp::Eq | BinOp::Ne) {
            let a = self.expr_any(l);
            self.set_line(span);
            let on_nil = (op == BinOp::Eq) == when;
            return self.emit(if on_nil { Op::JmpIfNil { a, off } } else { Op::JmpIfNotNil { a, off } });
        }
        if let Some(v) = small_int(r) {
            let b = self.expr_any(l);
            self.set_line(span);
            return self.emit(match (op, when) {
                (BinOp::Lt, true) => Op::JmpIfLtI { b, v, off },
                (BinOp::Lt, false) => Op::JmpIfNotLtI { b, v, off },
                (BinOp::Le, true) => Op::JmpIfLeI { b, v, off },
                (BinOp::Le, false) => Op::JmpIfNotLeI { b, v, off },
                (BinOp::Gt, true) => Op::JmpIfGtI { b, v, off },
                (BinOp::Gt, false) => Op::JmpIfNotGtI { b, v, off },
                (BinOp::Ge, true) => Op::JmpIfGeI { b, v, off },
                (BinOp::Ge, false) => Op::JmpIfNotGeI { b, v, off },
                (BinOp::Eq, true) | (BinOp::Ne, false) => Op::JmpIfEqI { b, v, off },
                _ => Op::JmpIfNotEqI { b, v, off },
            });
        }
        let a = self.expr_any(l);
        let b = self.expr_any(r);
        self.set_line(span);
        let (x, y, op) = match op {
            BinOp::Gt => (b, a, BinOp::Lt),
            BinOp::Ge => (b, a, BinOp::Le),
            _ => (a, b, op),
        };
        self.emit(match (op, when) {
            (BinOp::Lt, true) => Op::JmpIfLt { b: x, c: y, off },
            (BinOp::Lt, false) => Op::JmpIfNotLt { b: x, c: y, off },
            (BinOp::Le, true) => Op::JmpIfLe { b: x, c: y, off },
            (BinOp::Le, false) => Op::JmpIfNotLe { b: x, c: y, off },
            (BinOp::Eq, true) | (BinOp::Ne, false) => Op::JmpIfEq { b: x, c: y, off },
            _ => Op::JmpIfNotEq { b: x, c: y, off },
        })
    }

    // ---- expressions ----

    /// Compiles `e` into some register and returns it: a local's own register when `e`
    /// is an unboxed local, else a new temporary (left allocated).
    fn expr_any(&mut self, e: &Expr) -> u8 {
        if let ExprKind::Var(name) = &e.kind {
            if let Some(Loc::Local { reg, boxed: false }) = self.resolve_in(self.fns.len() - 1, name) {
                return reg;
            }
        }
        let r = self.alloc_reg();
        self.expr_to(e, r);
        r
    }

    /// Compiles `e` so that its value ends up in `dst`. Temporaries above `dst` are
    /// freed afterwards.
    fn expr_to(&mut self, e: &Expr, dst: u8) {
        let mark = self.cur().next_reg.min(255) as u8;
        self.set_line(e.span);
        match &e.kind {
            ExprKind::Nil => {
                self.emit(Op::LoadNil { a: dst });
            }
            ExprKind::Bool(b) => {
                self.emit(Op::LoadBool { a: dst, v: *b });
            }
            ExprKind::Int(i) => {
                match i32::try_from(*i) {
                    Ok(v) => self.emit(Op::LoadInt { a: dst, v }),
                    Err(_) => {
                        let k = self.add_const(Const::Int(*i));
                        self.emit(Op::LoadK { a: dst, k })
                    }
                };
            }
            ExprKind::Float(f) => {
                let k = self.add_const(Const::Float(*f));
                self.emit(Op::LoadK { a: dst, k });
            }
            ExprKind::Str(s) => {
                let k = self.str_const(s);
                self.emit(Op::LoadK { a: dst, k });
            }
            ExprKind::Interp(parts) => {
                if parts.len() > 200 {
                    self.error("too many interpolated parts in one string (at most 200)", e.span);
                    return;
                }
                let b = self.alloc_regs(parts.len().max(1));
                for (i, p) in parts.iter().enumerate() {
                    let r = off(b, i);
                    match p {
                        StrPart::Lit(s) => {
                            let k = self.str_const(s);
                            self.emit(Op::LoadK { a: r, k });
                        }
                        StrPart::Expr(x) => self.expr_to(x, r),
                    }
                }
                self.set_line(e.span);
                self.emit(Op::Concat { a: dst, b, n: parts.len() as u8 });
            }
            ExprKind::Var(name) => {
                if let Some(loc) = self.resolve(name, e.span) {
                    self.load_loc(loc, dst);
                }
            }
            ExprKind::Array(items) => {
                let first = items.len().min(LITERAL_CHUNK);
                let b = self.alloc_regs(first.max(1));
                for (i, x) in items[..first].iter().enumerate() {
                    self.expr_to(x, off(b, i));
                }
                self.set_line(e.span);
                self.emit(Op::NewArray { a: dst, b, n: first as u8 });
                if items.len() > first {
                    // Long literals: append the rest with `push`.
                    let k = self.native_const("push");
                    for x in &items[first..] {
                        self.free_to(b);
                        let c = self.alloc_regs(3);
                        self.emit(Op::LoadK { a: c, k });
                        self.emit(Op::Move { a: off(c, 1), b: dst });
                        self.expr_to(x, off(c, 2));
                        self.emit(Op::Call { a: c, n: 2 });
                    }
                }
            }
            ExprKind::Map(pairs) => {
                let first = pairs.len().min(LITERAL_CHUNK);
                let b = self.alloc_regs((2 * first).max(1));
                for (i, (k, v)) in pairs[..first].iter().enumerate() {
                    self.map_key(k, off(b, 2 * i));
                    self.expr_to(v, off(b, 2 * i + 1));
                }
                self.set_line(e.span);
                self.emit(Op::NewMap { a: dst, b, n: first as u8 });
                for (k, v) in &pairs[first..] {
                    self.free_to(b);
                    let kr = self.alloc_reg();
                    self.map_key(k, kr);
                    let vr = self.alloc_reg();
                    self.expr_to(v, vr);
                    self.emit(Op::SetIndex { a: dst, b: kr, c: vr });
                }
            }
            // A negative number literal is a constant, not a negation at run time.
            ExprKind::Unary(UnOp::Neg, x) if matches!(x.kind, ExprKind::Int(i) if i != i64::MIN) => {
                let ExprKind::Int(i) = x.kind else { return };
                self.expr_to(&Expr { kind: ExprKind::Int(-i), span: e.span }, dst);
            }
            ExprKind::Unary(UnOp::Neg, x) if matches!(x.kind, ExprKind::Float(_)) => {
                let ExprKind::Float(f) = x.kind else { return };
                self.expr_to(&Expr { kind: ExprKind::Float(-f), span: e.span }, dst);
            }
            ExprKind::Unary(op, x) => {
                let r = self.expr_any(x);
                self.set_line(e.span);
                match op {
                    UnOp::Neg => self.emit(Op::Neg { a: dst, b: r }),
                    UnOp::Not => self.emit(Op::Not { a: dst, b: r }),
                    UnOp::BitNot => self.emit(Op::BitNot { a: dst, b: r }),
                };
            }
            ExprKind::Binary(BinOp::And, l, r) => {
                self.expr_to(l, dst);
                let j = self.emit(Op::JmpIfNot { a: dst, off: 0 });
                self.expr_to(r, dst);
                self.patch_here(vec![j]);
            }
            ExprKind::Binary(BinOp::Or, l, r) => {
                self.expr_to(l, dst);
                let j = self.emit(Op::JmpIf { a: dst, off: 0 });
                self.expr_to(r, dst);
                self.patch_here(vec![j]);
            }
            ExprKind::Binary(op, l, r) => {
                if let (BinOp::Add | BinOp::Sub, Some(v)) = (op, small_int(r)) {
                    let a = self.expr_any(l);
                    self.set_line(e.span);
                    let v = if *op == BinOp::Sub { -v } else { v };
                    self.emit(Op::AddI { a: dst, b: a, v });
                } else if let (BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod, Some(k)) = (op, self.number_const(r)) {
                    let a = self.expr_any(l);
                    self.set_line(e.span);
                    self.emit(match op {
                        BinOp::Add => Op::AddK { a: dst, b: a, k },
                        BinOp::Sub => Op::SubK { a: dst, b: a, k },
                        BinOp::Mul => Op::MulK { a: dst, b: a, k },
                        BinOp::Div => Op::DivK { a: dst, b: a, k },
                        _ => Op::ModK { a: dst, b: a, k },
                    });
                } else {
                    let a = self.expr_any(l);
                    let b = self.expr_any(r);
                    self.set_line(e.span);
                    self.arith(*op, dst, a, b);
                }
            }
            ExprKind::Call(f, args) => {
                if args.len() > 200 {
                    self.error("too many arguments (at most 200)", e.span);
                    return;
                }
                // When `dst` is the topmost register, the call can use it as its base and
                // the result needs no move.
                let base = if usize::from(dst) + 1 == self.cur().next_reg { dst } else { self.alloc_reg() };
                self.expr_to(f, base);
                for x in args {
                    let r = self.alloc_reg();
                    self.expr_to(x, r);
                }
                self.set_line(e.span);
                self.emit(Op::Call { a: base, n: args.len() as u8 });
                if base != dst {
                    self.emit(Op::Move { a: dst, b: base });
                }
            }
            ExprKind::Index(o, i) => {
                let a = self.expr_any(o);
                let b = self.expr_any(i);
                self.set_line(e.span);
                self.emit(Op::GetIndex { a: dst, b: a, c: b });
            }
            ExprKind::Field(o, name) => {
                let a = self.expr_any(o);
                let k = self.str_const(name);
                self.set_line(e.span);
                self.emit(Op::GetField { a: dst, b: a, k });
            }
            ExprKind::If { cond, then, els } => {
                let f = self.jump_if_false(cond);
                self.block_to(then, dst);
                match els {
                    Some(x) => {
                        let j = self.emit(Op::Jmp { off: 0 });
                        self.patch_here(f);
                        self.expr_to(x, dst);
                        self.patch_here(vec![j]);
                    }
                    None => {
                        let j = self.emit(Op::Jmp { off: 0 });
                        self.patch_here(f);
                        self.emit(Op::LoadNil { a: dst });
                        self.patch_here(vec![j]);
                    }
                }
            }
            ExprKind::Block(b) => self.block_to(b, dst),
            ExprKind::Fn(f) => self.function(f, dst),
            ExprKind::Try { body, var, handler } => {
                let t = self.alloc_reg();
                let at = self.emit(Op::Try { a: t, off: 0 });
                self.cur().try_depth += 1;
                self.block_to(body, dst);
                self.cur().try_depth -= 1;
                self.emit(Op::EndTry {});
                let j = self.emit(Op::Jmp { off: 0 });
                self.patch_here(vec![at]);
                self.push_scope();
                self.declare(var, t);
                self.block_to(handler, dst);
                self.pop_scope();
                self.patch_here(vec![j]);
            }
            ExprKind::Error => {}
        }
        self.free_to(mark);
    }

    fn map_key(&mut self, k: &MapKey, dst: u8) {
        match k {
            MapKey::Str(s) => {
                let c = self.str_const(s);
                self.emit(Op::LoadK { a: dst, k: c });
            }
            MapKey::Expr(e) => self.expr_to(e, dst),
        }
    }
}

/// Expressions that write their destination only as their last step, so they may
/// target the very variable they read.
fn is_simple(e: &Expr) -> bool {
    matches!(
        e.kind,
        ExprKind::Nil
            | ExprKind::Bool(_)
            | ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Str(_)
            | ExprKind::Var(_)
            | ExprKind::Unary(..)
            | ExprKind::Index(..)
            | ExprKind::Field(..)
    ) || matches!(&e.kind, ExprKind::Binary(op, ..) if !matches!(op, BinOp::And | BinOp::Or))
}

/// Register `base + n`. Past 255 it saturates: the function has then already been
/// reported as needing too many registers, and its code is never used.
fn off(base: u8, n: usize) -> u8 {
    (usize::from(base) + n).min(255) as u8
}

fn small_int(e: &Expr) -> Option<i16> {
    match &e.kind {
        ExprKind::Int(i) if (-32767..=32767).contains(i) => Some(*i as i16),
        ExprKind::Unary(UnOp::Neg, x) => small_int(x).map(|v| -v),
        _ => None,
    }
}

fn empty_function() -> Function {
    Function { name: String::new(), arity: 0, nregs: 1, upvals: vec![], code: vec![Op::ReturnNil {}], lines: vec![0] }
}
