//! The resolver pass: finds which local variables are captured by nested functions.
//!
//! Those locals must live in boxes from their declaration on, which codegen needs to
//! know when it declares them — before it has seen the closures that capture them. The
//! walk here follows codegen's scoping exactly (block scopes, hoisted named functions,
//! top-level functions compiled before the rest of the top level, globals last).

use crate::ast::*;
use std::collections::HashSet;

/// Declarations (by the start offset of their name) that closures capture.
#[derive(Debug, Default, Clone)]
pub struct Captures(HashSet<u32>);

impl Captures {
    pub fn is_captured(&self, decl: Span) -> bool {
        self.0.contains(&decl.start)
    }
}

struct Decl {
    name: String,
    key: u32,
}

#[derive(Default)]
struct Walker {
    /// Per function: its scopes, innermost last.
    fns: Vec<Vec<Vec<Decl>>>,
    captured: HashSet<u32>,
    /// When set, names found in no scope are collected here.
    free: Option<HashSet<String>>,
}

pub fn captures(prog: &Program) -> Captures {
    let mut w = Walker::default();
    w.fns.push(vec![Vec::new()]);
    for s in &prog.stmts {
        if let Stmt::Fn(f) = s {
            w.function(f);
        }
    }
    for s in &prog.stmts {
        match s {
            Stmt::Fn(_) | Stmt::Import { .. } => {}
            // Top-level `let`s are globals: nothing to declare.
            Stmt::Let { init, .. } => {
                if let Some(e) = init {
                    w.expr(e);
                }
            }
            other => w.stmt(other),
        }
    }
    Captures(w.captured)
}

/// The names a function uses that it does not declare itself (its free variables).
pub fn free_names(f: &FnDecl) -> HashSet<String> {
    let mut w = Walker { free: Some(HashSet::new()), ..Walker::default() };
    w.function(f);
    w.free.unwrap_or_default()
}

impl Walker {
    fn declare(&mut self, id: &Ident) {
        if let Some(scope) = self.fns.last_mut().and_then(|f| f.last_mut()) {
            scope.push(Decl { name: id.name.clone(), key: id.span.start });
        }
    }

    fn use_name(&mut self, name: &str) {
        let depth = self.fns.len();
        for (i, f) in self.fns.iter().enumerate().rev() {
            for scope in f.iter().rev() {
                if let Some(d) = scope.iter().rev().find(|d| d.name == name) {
                    if i + 1 != depth {
                        self.captured.insert(d.key);
                    }
                    return;
                }
            }
        }
        if let Some(free) = &mut self.free {
            free.insert(name.to_string());
        }
    }

    fn function(&mut self, f: &FnDecl) {
        self.fns.push(vec![Vec::new()]);
        for p in &f.params {
            self.declare(p);
        }
        self.block(&f.body);
        self.fns.pop();
    }

    fn scoped(&mut self, body: impl FnOnce(&mut Walker)) {
        if let Some(f) = self.fns.last_mut() {
            f.push(Vec::new());
        }
        body(self);
        if let Some(f) = self.fns.last_mut() {
            f.pop();
        }
    }

    fn block(&mut self, b: &Block) {
        self.scoped(|w| {
            for s in &b.stmts {
                if let Stmt::Fn(FnDecl { name: Some(n), .. }) = s {
                    w.declare(n);
                }
            }
            for s in &b.stmts {
                w.stmt(s);
            }
            if let Some(t) = &b.tail {
                w.expr(t);
            }
        });
    }

    fn stmt(&mut self, s: &Stmt) {
        match s {
            Stmt::Let { name, init, .. } => match init {
                // As in codegen: a function literal sees the variable it initialises.
                Some(e @ Expr { kind: ExprKind::Fn(_), .. }) => {
                    self.declare(name);
                    self.expr(e);
                }
                Some(e) => {
                    self.expr(e);
                    self.declare(name);
                }
                None => self.declare(name),
            },
            Stmt::Fn(f) => self.function(f),
            Stmt::Import { .. } | Stmt::Break(_) | Stmt::Continue(_) => {}
            Stmt::Assign { target, value, .. } => {
                self.expr(target);
                self.expr(value);
            }
            Stmt::While { cond, body, .. } => {
                self.expr(cond);
                self.block(body);
            }
            Stmt::For { first, second, iter, body, .. } => {
                match iter {
                    ForIter::Range { start, end } => {
                        self.expr(start);
                        self.expr(end);
                    }
                    ForIter::Expr(e) => self.expr(e),
                }
                self.scoped(|w| {
                    w.declare(first);
                    if let Some(s) = second {
                        w.declare(s);
                    }
                    w.block(body);
                });
            }
            Stmt::Return { value, .. } => {
                if let Some(e) = value {
                    self.expr(e);
                }
            }
            Stmt::Expr(e) => self.expr(e),
        }
    }

    fn expr(&mut self, e: &Expr) {
        match &e.kind {
            ExprKind::Nil | ExprKind::Bool(_) | ExprKind::Int(_) | ExprKind::Float(_) | ExprKind::Str(_) | ExprKind::Error => {}
            ExprKind::Interp(parts) => {
                for p in parts {
                    if let StrPart::Expr(x) = p {
                        self.expr(x);
                    }
                }
            }
            ExprKind::Var(name) => self.use_name(name),
            ExprKind::Array(items) => items.iter().for_each(|x| self.expr(x)),
            ExprKind::Map(pairs) => {
                for (k, v) in pairs {
                    if let MapKey::Expr(k) = k {
                        self.expr(k);
                    }
                    self.expr(v);
                }
            }
            ExprKind::Unary(_, x) | ExprKind::Field(x, _) => self.expr(x),
            ExprKind::Binary(_, l, r) | ExprKind::Index(l, r) => {
                self.expr(l);
                self.expr(r);
            }
            ExprKind::Call(f, args) => {
                self.expr(f);
                args.iter().for_each(|x| self.expr(x));
            }
            ExprKind::If { cond, then, els } => {
                self.expr(cond);
                self.block(then);
                if let Some(x) = els {
                    self.expr(x);
                }
            }
            ExprKind::Block(b) => self.block(b),
            ExprKind::Fn(f) => self.function(f),
            ExprKind::Try { body, var, handler } => {
                self.block(body);
                self.scoped(|w| {
                    w.declare(var);
                    w.block(handler);
                });
            }
        }
    }
}
