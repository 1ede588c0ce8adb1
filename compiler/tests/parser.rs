//! Parser tests: each case is a source text and the S-expression its syntax tree prints
//! as (see `Sexpr` below), or the diagnostics it must produce.

use std::fmt::Write;

use tern_compiler::ast::*;
use tern_compiler::diag::{line_col, Diagnostic};
use tern_compiler::parser::{parse, MAX_DEPTH};

// ---- S-expression printer ----
//
// Statements print followed by `;`, so a block `{(let x 1); x}` has a tail `x`, while
// `{(let x 1); x;}` has none. Operators print as `(op lhs rhs)`, calls as `(call f args)`,
// indexing as `(idx a i)`, fields as `(. a name)`, strings with interpolation as
// `(str "lit" expr ...)`, maps as `(map (key value) ...)` with `[expr]` for expression keys.

fn program(p: &Program) -> String {
    let mut out = String::new();
    for (i, stmt) in p.stmts.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_stmt(&mut out, stmt);
        out.push(';');
    }
    out
}

fn write_stmt(out: &mut String, stmt: &Stmt) {
    match stmt {
        Stmt::Let { name, init: Some(init), .. } => {
            let _ = write!(out, "(let {} ", name.name);
            write_expr(out, init);
            out.push(')');
        }
        Stmt::Let { name, init: None, .. } => {
            let _ = write!(out, "(let {})", name.name);
        }
        Stmt::Fn(decl) => write_fn(out, decl),
        Stmt::Import { module, alias, .. } => {
            let _ = write!(out, "(import {}", module.name);
            if let Some(alias) = alias {
                let _ = write!(out, " as {}", alias.name);
            }
            out.push(')');
        }
        Stmt::Assign { target, op, value, .. } => {
            let _ = write!(out, "({}= ", op.map_or("", binop));
            write_expr(out, target);
            out.push(' ');
            write_expr(out, value);
            out.push(')');
        }
        Stmt::While { cond, body, .. } => {
            out.push_str("(while ");
            write_expr(out, cond);
            out.push(' ');
            write_block(out, body);
            out.push(')');
        }
        Stmt::For { first, second, iter, body, .. } => {
            let _ = write!(out, "(for {}", first.name);
            if let Some(second) = second {
                let _ = write!(out, " {}", second.name);
            }
            out.push_str(" in ");
            match iter {
                ForIter::Range { start, end } => {
                    out.push_str("(.. ");
                    write_expr(out, start);
                    out.push(' ');
                    write_expr(out, end);
                    out.push(')');
                }
                ForIter::Expr(e) => write_expr(out, e),
            }
            out.push(' ');
            write_block(out, body);
            out.push(')');
        }
        Stmt::Break(_) => out.push_str("break"),
        Stmt::Continue(_) => out.push_str("continue"),
        Stmt::Return { value: Some(v), .. } => {
            out.push_str("(return ");
            write_expr(out, v);
            out.push(')');
        }
        Stmt::Return { value: None, .. } => out.push_str("(return)"),
        Stmt::Expr(e) => write_expr(out, e),
    }
}

fn write_fn(out: &mut String, decl: &FnDecl) {
    out.push_str("(fn ");
    if let Some(name) = &decl.name {
        let _ = write!(out, "{} ", name.name);
    }
    let params: Vec<_> = decl.params.iter().map(|p| p.name.as_str()).collect();
    let _ = write!(out, "({}) ", params.join(" "));
    write_block(out, &decl.body);
    out.push(')');
}

fn write_block(out: &mut String, block: &Block) {
    out.push('{');
    for (i, stmt) in block.stmts.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_stmt(out, stmt);
        out.push(';');
    }
    if let Some(tail) = &block.tail {
        if !block.stmts.is_empty() {
            out.push(' ');
        }
        write_expr(out, tail);
    }
    out.push('}');
}

fn binop(op: BinOp) -> &'static str {
    match op {
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::Mod => "%",
        BinOp::BitAnd => "&",
        BinOp::BitOr => "|",
        BinOp::BitXor => "^",
        BinOp::Shl => "<<",
        BinOp::Shr => ">>",
        BinOp::Eq => "==",
        BinOp::Ne => "!=",
        BinOp::Lt => "<",
        BinOp::Le => "<=",
        BinOp::Gt => ">",
        BinOp::Ge => ">=",
        BinOp::And => "and",
        BinOp::Or => "or",
    }
}

fn write_list(out: &mut String, head: &str, items: &[Expr]) {
    out.push_str(head);
    for item in items {
        out.push(' ');
        write_expr(out, item);
    }
}

fn write_expr(out: &mut String, e: &Expr) {
    match &e.kind {
        ExprKind::Nil => out.push_str("nil"),
        ExprKind::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        ExprKind::Int(v) => {
            let _ = write!(out, "{v}");
        }
        ExprKind::Float(v) => {
            let _ = write!(out, "{v:?}");
        }
        ExprKind::Str(s) => {
            let _ = write!(out, "{s:?}");
        }
        ExprKind::Interp(parts) => {
            out.push_str("(str");
            for part in parts {
                out.push(' ');
                match part {
                    StrPart::Lit(s) => {
                        let _ = write!(out, "{s:?}");
                    }
                    StrPart::Expr(e) => write_expr(out, e),
                }
            }
            out.push(')');
        }
        ExprKind::Var(name) => out.push_str(name),
        ExprKind::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_expr(out, item);
            }
            out.push(']');
        }
        ExprKind::Map(entries) => {
            out.push_str("(map");
            for (key, value) in entries {
                out.push_str(" (");
                match key {
                    MapKey::Str(s) => {
                        let _ = write!(out, "{s:?}");
                    }
                    MapKey::Expr(k) => {
                        out.push('[');
                        write_expr(out, k);
                        out.push(']');
                    }
                }
                out.push(' ');
                write_expr(out, value);
                out.push(')');
            }
            out.push(')');
        }
        ExprKind::Unary(op, operand) => {
            out.push_str(match op {
                UnOp::Neg => "(- ",
                UnOp::Not => "(not ",
                UnOp::BitNot => "(~ ",
            });
            write_expr(out, operand);
            out.push(')');
        }
        ExprKind::Binary(op, l, r) => {
            let _ = write!(out, "({} ", binop(*op));
            write_expr(out, l);
            out.push(' ');
            write_expr(out, r);
            out.push(')');
        }
        ExprKind::Call(f, args) => {
            out.push_str("(call ");
            write_expr(out, f);
            write_list(out, "", args);
            out.push(')');
        }
        ExprKind::Index(a, i) => {
            out.push_str("(idx ");
            write_expr(out, a);
            out.push(' ');
            write_expr(out, i);
            out.push(')');
        }
        ExprKind::Field(obj, name) => {
            out.push_str("(. ");
            write_expr(out, obj);
            let _ = write!(out, " {name})");
        }
        ExprKind::If { cond, then, els } => {
            out.push_str("(if ");
            write_expr(out, cond);
            out.push(' ');
            write_block(out, then);
            if let Some(els) = els {
                out.push(' ');
                write_expr(out, els);
            }
            out.push(')');
        }
        ExprKind::Block(block) => write_block(out, block),
        ExprKind::Fn(decl) => write_fn(out, decl),
        ExprKind::Try { body, var, handler } => {
            out.push_str("(try ");
            write_block(out, body);
            let _ = write!(out, " {} ", var.name);
            write_block(out, handler);
            out.push(')');
        }
        ExprKind::Error => out.push_str("<error>"),
    }
}

// ---- Helpers ----

/// Asserts that `src` parses without diagnostics to the tree printed as `expected`.
#[track_caller]
fn check(src: &str, expected: &str) {
    let (prog, diags) = parse(src);
    assert!(diags.is_empty(), "unexpected diagnostics for {}:\n{}", short(src), messages(src, &diags));
    assert_eq!(program(&prog), expected, "source: {}", short(src));
}

/// Asserts that `src` produces exactly these diagnostics, each given as
/// `"line:col: message"`.
#[track_caller]
fn check_errors(src: &str, expected: &[&str]) {
    let (_, diags) = parse(src);
    let got = messages(src, &diags);
    assert_eq!(got, expected.join("\n"), "source: {}", short(src));
}

/// The source for an assertion message, cut short: some tests parse huge inputs.
fn short(src: &str) -> String {
    let cut: String = src.chars().take(80).collect();
    if cut.len() < src.len() {
        format!("{cut:?}...")
    } else {
        format!("{src:?}")
    }
}

fn messages(src: &str, diags: &[Diagnostic]) -> String {
    let lines: Vec<_> = diags
        .iter()
        .map(|d| {
            let (line, col) = line_col(src, d.span.start as usize);
            format!("{line}:{col}: {}", d.message)
        })
        .collect();
    lines.join("\n")
}

/// The source text an expression statement's span covers.
fn span_text(src: &str, span: Span) -> &str {
    &src[span.start as usize..span.end as usize]
}

// ---- Expressions ----

#[test]
fn precedence() {
    check("1 + 2 * 3;", "(+ 1 (* 2 3));");
    check("1 * 2 + 3;", "(+ (* 1 2) 3);");
    check("a - b - c;", "(- (- a b) c);");
    check("a / b % c * d;", "(* (% (/ a b) c) d);");
    check("(1 + 2) * 3;", "(* (+ 1 2) 3);");
    check("-a * b;", "(* (- a) b);");
    check("- -a;", "(- (- a));");
    check("-a.b(c)[d];", "(- (idx (call (. a b) c) d));");
    check("a + b < c * d;", "(< (+ a b) (* c d));");
    check("a == b and c != d or e;", "(or (and (== a b) (!= c d)) e);");
    check("a or b and c;", "(or a (and b c));");
    check("a and b or c and d;", "(or (and a b) (and c d));");
    check("not a == b;", "(not (== a b));");
    check("not a and b;", "(and (not a) b);");
    check("a and not b or c;", "(or (and a (not b)) c);");
    check("not not a;", "(not (not a));");
    check("not -a + b;", "(not (+ (- a) b));");
    check("a <= b; a > b; a >= b;", "(<= a b); (> a b); (>= a b);");
    check("(a < b) < c;", "(< (< a b) c);");
}

#[test]
fn bitwise_precedence() {
    // Rust's order: unary `~` with unary `-`; `* / %`; `+ -`; `<< >>`; `&`; `^`; `|`;
    // then comparisons, `not`, `and`, `or`.
    check("~a * b;", "(* (~ a) b);");
    check("~-a; -~a; ~~a;", "(~ (- a)); (- (~ a)); (~ (~ a));");
    check("~a.b[c];", "(~ (idx (. a b) c));");
    check("a << b + c;", "(<< a (+ b c));");
    check("a + b << c * d;", "(<< (+ a b) (* c d));");
    check("a << b >> c << d;", "(<< (>> (<< a b) c) d);");
    check("a & b << c;", "(& a (<< b c));");
    check("a >> b & c;", "(& (>> a b) c);");
    check("a ^ b & c;", "(^ a (& b c));");
    check("a & b ^ c;", "(^ (& a b) c);");
    check("a | b ^ c;", "(| a (^ b c));");
    check("a ^ b | c;", "(| (^ a b) c);");
    check("a | b & c ^ d << e + f * g;", "(| a (^ (& b c) (<< d (+ e (* f g)))));");
    check("a & b | c & d;", "(| (& a b) (& c d));");
    check("a - b & c;", "(& (- a b) c);");
    check("a & b - c;", "(& a (- b c));");
    check("a & mask == 0;", "(== (& a mask) 0);");
    check("a | b < c ^ d;", "(< (| a b) (^ c d));");
    check("not a & b == c and d | e;", "(and (not (== (& a b) c)) (| d e));");
    check("a or b | c;", "(or a (| b c));");
    check("(a | b) & c;", "(& (| a b) c);");
    check("a & b & c; a | b | c; a ^ b ^ c;", "(& (& a b) c); (| (| a b) c); (^ (^ a b) c);");
    check("x &= 1; x |= 2; x ^= 3; x <<= 4; x >>= 5;", "(&= x 1); (|= x 2); (^= x 3); (<<= x 4); (>>= x 5);");
    check("a[i] ^= b >> 1;", "(^= (idx a i) (>> b 1));");
    check("a < b >> c; a >> b > c;", "(< a (>> b c)); (> (>> a b) c);");
}

#[test]
fn literals() {
    check("nil; true; false;", "nil; true; false;");
    check("42; 0xff; 1_000;", "42; 255; 1000;");
    check("1.5; 2.0; 1e-9; 6.02e23;", "1.5; 2.0; 1e-9; 6.02e23;");
    check(r#""hi\n";"#, r#""hi\n";"#);
    check("[]; [1]; [1, 2,]; [[1], [2, 3]];", "[]; [1]; [1 2]; [[1] [2 3]];");
    check("x = {};", "(= x (map));");
}

#[test]
fn postfix() {
    check("f();", "(call f);");
    check("f(1, 2,);", "(call f 1 2);");
    check("f(a)(b);", "(call (call f a) b);");
    check("a[i][j];", "(idx (idx a i) j);");
    check("m.k.j;", "(. (. m k) j);");
    check("list.map([1, 2], fn(x) { x * x });", "(call (. list map) [1 2] (fn (x) {(* x x)}));");
}

#[test]
fn interpolation() {
    check(r#""a ${x} b";"#, r#"(str "a " x " b");"#);
    check(r#""${x}";"#, "(str x);");
    check(r#""${a + b * 2}${c}";"#, "(str (+ a (* b 2)) c);");
    check(r#""${ {k: 1}["k"] }";"#, r#"(str (idx (map ("k" 1)) "k"));"#);
    check(r#""x${ "y${z}" }";"#, r#"(str "x" (str "y" z));"#);
    check(r#""cost: $5, \${x}";"#, r#""cost: $5, ${x}";"#);
    check(r#"println("${name} is ${ages[name]}");"#, r#"(call println (str name " is " (idx ages name)));"#);
}

#[test]
fn maps() {
    check(r#"x = {a: 1, "b c": 2, 3: "x", 1.5: y, [k]: v,};"#, r#"(= x (map ("a" 1) ("b c" 2) ([3] "x") ([1.5] y) ([k] v)));"#);
    check("f({a: {b: 1}});", r#"(call f (map ("a" (map ("b" 1)))));"#);
    check(r#"x = {"k${i}": 1};"#, r#"(= x (map ([(str "k" i)] 1)));"#);
}

#[test]
fn map_literal_versus_block() {
    // At the start of a statement `{` is a block; in expression position, a map.
    check("{ f(); }", "{(call f);};");
    check("{ x }", "{x};");
    check("let m = {x: 1};", r#"(let m (map ("x" 1)));"#);
    check("let m = {};", "(let m (map));");
    // In a condition or iterable `{` starts the body, unless inside brackets.
    check("if x {}", "(if x {});");
    check("while a.b {}", "(while (. a b) {});");
    check("for k in m {}", "(for k in m {});");
    check("if f({a: 1}) {}", r#"(if (call f (map ("a" 1))) {});"#);
    check("if x == ({a: 1}) { 1 }", r#"(if (== x (map ("a" 1))) {1});"#);
    check("if [{}] {}", "(if [(map)] {});");
    check("if fn() { 1 }() {}", "(if (call (fn () {1})) {});");
}

#[test]
fn if_expressions() {
    check("let m = if a > b { a } else { b };", "(let m (if (> a b) {a} {b}));");
    check("if a { 1 } else if b { 2 } else if c { 3 } else { 4 }", "(if a {1} (if b {2} (if c {3} {4})));");
    check("if a { 1 } else if b { 2 }", "(if a {1} (if b {2}));");
    check("x = if a { 1 } + 2;", "(= x (+ (if a {1}) 2));");
    check("if if a { b } else { c } { d }", "(if (if a {b} {c}) {d});");
}

#[test]
fn functions() {
    check("fn f() {}", "(fn f () {});");
    check("fn add(a, b,) { a + b }", "(fn add (a b) {(+ a b)});");
    check("let f = fn(x) { x };", "(let f (fn (x) {x}));");
    check("fn(x) { x }(5);", "(call (fn (x) {x}) 5);");
    check(
        "fn fib(n) { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } }",
        "(fn fib (n) {(if (< n 2) {n} {(+ (call fib (- n 1)) (call fib (- n 2)))})});",
    );
    check("fn f() { return; } fn g() { return 1 + 2; }", "(fn f () {(return);}); (fn g () {(return (+ 1 2));});");
}

// ---- Statements ----

#[test]
fn statements() {
    check("let x = 1; let y;", "(let x 1); (let y);");
    check("x = x + 1;", "(= x (+ x 1));");
    check("x += 1; x -= 2; x *= 3; x /= 4; x %= 5;", "(+= x 1); (-= x 2); (*= x 3); (/= x 4); (%= x 5);");
    check("a[i] = v; m.k = v; a[0].b[1] += 2;", "(= (idx a i) v); (= (. m k) v); (+= (idx (. (idx a 0) b) 1) 2);");
    check("import list; import math as m;", "(import list); (import math as m);");
    check("while x < 10 { x += 1; }", "(while (< x 10) {(+= x 1);});");
    check("for i in 0..n + 1 {}", "(for i in (.. 0 (+ n 1)) {});");
    check("for x in xs { f(x); }", "(for x in xs {(call f x);});");
    check("for k, v in m { break; continue; }", "(for k v in m {break; continue;});");
    check("try { f() } catch e { g(e) }", "(try {(call f)} e {(call g e)});");
    check("let r = try { 1 } catch e { 2 };", "(let r (try {1} e {2}));");
    check("f(1);;; g();", "(call f 1); (call g);");
    check("while c {}; for x in y {};", "(while c {}); (for x in y {});");
}

#[test]
fn block_tails() {
    check("{ 1; 2 }", "{1; 2};");
    check("{ 1; 2; }", "{1; 2;};");
    check("fn f() { let x = 1; x }", "(fn f () {(let x 1); x});");
    // A block-like expression is the tail only when it is last.
    check("fn f() { if a { 1 } }", "(fn f () {(if a {1})});");
    check("fn f() { if a { 1 } g() }", "(fn f () {(if a {1}); (call g)});");
    check("fn f() { if a { 1 }; }", "(fn f () {(if a {1});});");
    check("fn f() { { 1 } }", "(fn f () {{1}});");
    check("fn f() { { 1 } { 2 } }", "(fn f () {{1}; {2}});");
    check("fn f() { try { 1 } catch e { 2 } }", "(fn f () {(try {1} e {2})});");
    // Loops and declarations are statements, never the tail.
    check("fn f() { while c {} }", "(fn f () {(while c {});});");
    check("fn f() { fn g() {} }", "(fn f () {(fn g () {});});");
    // A block-like statement ends at its `}`: what follows is a new statement.
    check("fn f() { if a { 1 } -x }", "(fn f () {(if a {1}); (- x)});");
    check("fn f() { if a { b } [1] }", "(fn f () {(if a {b}); [1]});");
    // At the top level there is no tail.
    check("if a { 1 }", "(if a {1});");
}

#[test]
fn semicolon_may_be_left_out_before_closing_brace() {
    check("fn f(x) { if x { return 1 } else { break } }", "(fn f (x) {(if x {(return 1);} {break;})});");
    check("while c { continue }", "(while c {continue;});");
    check("if c { x = 1 } else { let y = 2 }", "(if c {(= x 1);} {(let y 2);});");
    check("fn f() { return }", "(fn f () {(return);});");
}

#[test]
fn language_md_example() {
    let src = r#"
// Comments run to the end of the line.
import list;                       // a standard library module

fn fib(n) {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

let names = ["ada", "grace", "barbara"];
let ages = {ada: 36, grace: 85};   // identifier keys are strings
ages["barbara"] = 78;

for name in names {
    println("${name} is ${ages[name]}");
}
println(list.map([1, 2, 3], fn(x) { x * x }));   // [1, 4, 9]
println(fib(20));                                // 6765
"#;
    check(
        src,
        concat!(
            "(import list); ",
            "(fn fib (n) {(if (< n 2) {n} {(+ (call fib (- n 1)) (call fib (- n 2)))})}); ",
            r#"(let names ["ada" "grace" "barbara"]); "#,
            r#"(let ages (map ("ada" 36) ("grace" 85))); "#,
            r#"(= (idx ages "barbara") 78); "#,
            r#"(for name in names {(call println (str name " is " (idx ages name)));}); "#,
            "(call println (call (. list map) [1 2 3] (fn (x) {(* x x)}))); ",
            "(call println (call fib 20));",
        ),
    );
}

#[test]
fn spans() {
    let src = "let x = foo(1, [2]);\nif a { b } else { c }\nm.k += 3;";
    let (prog, diags) = parse(src);
    assert!(diags.is_empty());
    let Stmt::Let { init: Some(init), name, span } = &prog.stmts[0] else { panic!() };
    assert_eq!(span_text(src, *span), "let x = foo(1, [2]);");
    assert_eq!(span_text(src, name.span), "x");
    assert_eq!(span_text(src, init.span), "foo(1, [2])");
    let ExprKind::Call(_, args) = &init.kind else { panic!() };
    assert_eq!(span_text(src, args[1].span), "[2]");
    let Stmt::Expr(if_expr) = &prog.stmts[1] else { panic!() };
    assert_eq!(span_text(src, if_expr.span), "if a { b } else { c }");
    let Stmt::Assign { target, span, .. } = &prog.stmts[2] else { panic!() };
    assert_eq!(span_text(src, *span), "m.k += 3;");
    assert_eq!(span_text(src, target.span), "m.k");

    let src = r#"fn f() { return "a${b + c}" }"#;
    let (prog, diags) = parse(src);
    assert!(diags.is_empty());
    let Stmt::Fn(f) = &prog.stmts[0] else { panic!() };
    let Stmt::Return { span, .. } = &f.body.stmts[0] else { panic!() };
    assert_eq!(span_text(src, *span), r#"return "a${b + c}""#);

    let src = r#"x = "a${b + c}";"#;
    let (prog, _) = parse(src);
    let Stmt::Assign { value, .. } = &prog.stmts[0] else { panic!() };
    let ExprKind::Interp(parts) = &value.kind else { panic!() };
    let StrPart::Expr(e) = &parts[1] else { panic!() };
    assert_eq!(span_text(src, e.span), "b + c");
}

// ---- Errors ----

#[test]
fn syntax_errors() {
    check_errors("let x = ;", &["1:9: expected expression, found `;`"]);
    check_errors("f(1\nlet y = 2;", &["1:4: expected `,` or `)`, found `let`"]);
    check_errors("let x = 1\nlet y = 2;", &["1:10: expected `;` after `let` statement, found `let`"]);
    check_errors("foo()\nbar();", &["1:6: expected `;` after expression, found `bar`"]);
    check_errors("x = 1 2;", &["1:6: expected `;` after assignment, found `2`"]);
    check_errors("f(1 2);", &["1:5: expected `,` or `)`, found `2`"]);
    check_errors("[1, 2;", &["1:6: expected `,` or `]`, found `;`"]);
    check_errors("x = {a 1};", &["1:8: expected `:` after the map key, found `1`"]);
    check_errors("x = {-1: 2};", &["1:6: expected a map key, found `-`"]);
    check_errors("a.1;", &["1:3: expected a field name after `.`, found `1`"]);
    check_errors("let if = 1;", &["1:5: expected a variable name after `let`, found `if`"]);
    check_errors("let\nwhile x {}", &["1:4: expected a variable name after `let`, found `while`"]);
    check_errors("fn f(a, 1) {}", &["1:9: expected a parameter name, found `1`"]);
    check_errors("while x y { f(); }", &["1:9: expected `{` after the `while` condition, found `y`"]);
    check_errors("if x = 1 { }", &["1:6: expected `{` after the `if` condition, found `=`"]);
    check_errors("for x of xs {}", &["1:7: expected `in` after the loop variables, found `of`"]);
    check_errors("try { }", &["1:8: expected `catch` after the `try` block, found end of file"]);
    check_errors("x = (1 + 2;", &["1:11: expected `)`, found `;`"]);
    check_errors("fn f() { x = 1", &["1:8: unclosed `{`"]);
    check_errors("fn f() {\n  if a {\n    while b { g(); }\n", &["2:8: unclosed `{`"]);
    check_errors("x = [1, (2", &["1:11: expected `)`, found end of file"]);
    check_errors("f(1); }", &["1:7: unexpected `}`"]);
    check_errors("foo() }", &["1:7: unexpected `}`"]);
    check_errors("1..2;", &["1:2: expected `;` after expression, found `..`"]);
    check_errors("if a {} else x", &["1:14: expected `{` or `if` after `else`, found `x`"]);
}

#[test]
fn semantic_syntax_errors() {
    check_errors("f() = 1;", &["1:1: cannot assign to this expression"]);
    check_errors("a + b += 1;", &["1:1: cannot assign to this expression"]);
    check_errors("1 = 2; 3 = 4;", &["1:1: cannot assign to this expression", "1:8: cannot assign to this expression"]);
    check_errors("a < b < c;", &["1:7: comparison operators cannot be chained"]);
    check_errors("a == b != c;", &["1:8: comparison operators cannot be chained"]);
    check_errors("a & b < c & d < e;", &["1:15: comparison operators cannot be chained"]);
    check_errors("x = a & not b;", &["1:9: `not` must be parenthesized here"]);
    check_errors("x = a & ;", &["1:9: expected expression, found `;`"]);
    check_errors("x = ~;", &["1:6: expected expression, found `;`"]);
    check_errors("x << 1 = 2;", &["1:1: cannot assign to this expression"]);
    check_errors("x = a == not b;", &["1:10: `not` must be parenthesized here"]);
    check_errors("let f = fn g() {};", &["1:12: a named function cannot be used as an expression"]);
    check_errors("fn f() { import x; }", &["1:10: `import` is only allowed at the top level of a file"]);
    check_errors("if c { import x as y }", &["1:8: `import` is only allowed at the top level of a file"]);
}

#[test]
fn interpolation_errors() {
    check_errors(r#"x = "${}";"#, &["1:6: empty interpolation `${}`"]);
    check_errors(r#"x = "${a b}";"#, &["1:10: expected `}` to end the interpolation, found `b`"]);
    check_errors(r#"x = "${a +}";"#, &["1:11: expected expression, found `}`"]);
    check_errors(r#"x = "${a"#, &["1:6: unterminated interpolation"]);
    check_errors("x = \"abc;\ny = 2;", &["1:5: unterminated string"]);
}

#[test]
fn lexer_errors_are_not_repeated_by_the_parser() {
    check_errors("let x = 5 @ 3;", &["1:11: unexpected character `@`"]);
    check_errors("let x = @;", &["1:9: unexpected character `@`"]);
    check_errors("if a && b { }", &["1:6: unexpected characters `&&`"]);
    check_errors("if a || b { }", &["1:6: unexpected characters `||`"]);
    check_errors("let x = 99999999999999999999;", &["1:9: integer literal is too large"]);
    check_errors("let s = \"\\q\";", &["1:10: unknown escape `\\q`"]);
}

#[test]
fn reports_every_independent_error() {
    let src = "\
let a = ;
let b = 1 +;
foo(;
fn ok() { return 1; }
let c = [1 2];
fn f() {
    let = 3;
    g(1, 2
}
x = 1
y = 2;
";
    check_errors(
        src,
        &[
            "1:9: expected expression, found `;`",
            "2:12: expected expression, found `;`",
            "3:5: expected expression, found `;`",
            "5:12: expected `,` or `]`, found `2`",
            "7:9: expected a variable name after `let`, found `=`",
            "8:11: expected `,` or `)`, found `}`",
            "10:6: expected `;` after assignment, found `y`",
        ],
    );
}

#[test]
fn three_mistakes_three_diagnostics() {
    let src = "let x = 1\nprint(x +);\nfn f( { }\nprint(\"done\");\n";
    let (prog, diags) = parse(src);
    assert_eq!(diags.len(), 3, "{}", messages(src, &diags));
    // The statement after the mistakes still parses.
    let last = prog.stmts.last().map(|s| {
        let mut out = String::new();
        write_stmt(&mut out, s);
        out
    });
    assert_eq!(last.as_deref(), Some(r#"(call print "done")"#));
}

#[test]
fn nesting_limit() {
    let too_deep = |src: &str| {
        let (_, diags) = parse(src);
        diags.len() == 1 && diags[0].message == "nesting too deep"
    };
    let nest = |open: &str, close: &str, n: usize| format!("x = {}1{};", open.repeat(n), close.repeat(n));
    // The brief's example: 200 levels are too many for every construct. The value
    // expression itself is one level, each bracket, operator or block one more.
    for (open, close) in [("(", ")"), ("[", "]"), ("f(", ")"), ("a[", "]"), ("{a: ", "}"), ("-", ""), ("not ", "")] {
        // A nested call or index costs two levels: the call and its argument.
        let src = nest(open, close, MAX_DEPTH / 2 - 2);
        let (_, diags) = parse(&src);
        assert!(diags.is_empty(), "{open}: {}", messages(&src, &diags));
        assert!(too_deep(&nest(open, close, 200)), "{open}");
        assert!(too_deep(&nest(open, close, 100_000)), "{open}");
    }
    // The diagnostic points at the first token past the limit.
    check_errors(&nest("(", ")", MAX_DEPTH), &[&format!("1:{}: nesting too deep", 5 + MAX_DEPTH)]);
    assert!(parse(&nest("(", ")", MAX_DEPTH - 1)).1.is_empty());

    let blocks = |n: usize| format!("{}{}", "if a { ".repeat(n), "} ".repeat(n));
    assert!(parse(&blocks(MAX_DEPTH)).1.is_empty());
    assert!(too_deep(&blocks(MAX_DEPTH + 1)));
    assert!(too_deep(&blocks(200)));
    let fns = |n: usize| format!("{}{}", "fn f() { ".repeat(n), "} ".repeat(n));
    assert!(parse(&fns(MAX_DEPTH)).1.is_empty());
    assert!(too_deep(&fns(MAX_DEPTH + 1)));
    let closures = |n: usize| format!("{}{}", "fn() { ".repeat(n), "}".repeat(n));
    assert!(too_deep(&closures(200)));
    let interps = |n: usize| format!("x = {}1{};", "\"${".repeat(n), "}\"".repeat(n));
    assert!(parse(&interps(40)).1.is_empty());
    assert!(too_deep(&interps(200)));
}

#[test]
fn long_chains_count_as_nesting() {
    // Left-associative chains deepen the tree like nesting does, so they share the limit
    // (otherwise dropping or walking a 100,000-link chain would overflow the stack).
    let sum = |n: usize| format!("x = {}1;", "1 + ".repeat(n));
    assert!(parse(&sum(MAX_DEPTH - 2)).1.is_empty());
    // Reported at the operator that would go past the limit.
    check_errors(&sum(100_000), &[&format!("1:{}: nesting too deep", 7 + 4 * (MAX_DEPTH - 1))]);
    let fields = |n: usize| format!("x = a{};", ".b".repeat(n));
    assert!(parse(&fields(MAX_DEPTH - 2)).1.is_empty());
    assert_eq!(parse(&fields(100_000)).1.len(), 1);
    let calls = |n: usize| format!("x = a{};", "(1)[2]".repeat(n));
    assert!(parse(&calls(MAX_DEPTH / 2 - 2)).1.is_empty());
    assert_eq!(parse(&calls(100_000)).1.len(), 1);
    let else_ifs = |n: usize| format!("if a {{}} {}", "else if b { } ".repeat(n));
    assert!(parse(&else_ifs(MAX_DEPTH - 2)).1.is_empty());
    assert_eq!(parse(&else_ifs(100_000)).1.len(), 1);
    // Long flat lists are not nesting.
    let list = format!("x = [{}];", "1, ".repeat(100_000));
    assert!(parse(&list).1.is_empty());
    let stmts = "x = 1;\n".repeat(100_000);
    assert!(parse(&stmts).1.is_empty());
}

// ---- Robustness ----

/// Checks that parsing `src` terminates without panicking, that diagnostics point
/// inside the source, and that a tree with error placeholders always comes with a
/// diagnostic.
fn survives(src: &str) {
    let (prog, diags) = parse(src);
    for d in &diags {
        assert!(d.span.start <= d.span.end && d.span.end as usize <= src.len(), "bad span {d:?} for {src:?}");
    }
    if diags.is_empty() {
        assert!(!program(&prog).contains("<error>"), "error node without a diagnostic for {src:?}");
    }
}

#[test]
fn no_panic_on_garbage() {
    let nasty = [
        "",
        " ",
        "\"",
        "\"\"\"",
        "\"${",
        "\"${\"",
        "\"${}\"",
        "\"${\"${\"${",
        "}}}}",
        "))))",
        "]]]]",
        "{{{{",
        "((((",
        "[[[[",
        "${",
        "$",
        "\\",
        "fn",
        "fn(",
        "fn f(",
        "fn f(a,",
        "let",
        "let x",
        "let x =",
        "if",
        "if {",
        "if x",
        "if x {",
        "if x {} else",
        "else",
        "for",
        "for x",
        "for x in",
        "for x in 0..",
        "for , in {",
        "while",
        "try",
        "try {} catch",
        "try {} catch e",
        "import",
        "import x as",
        "return return return",
        "break continue",
        "= = =",
        "+= -=",
        "a.",
        "a..b",
        "{a:",
        "x = {a:",
        "x = {[",
        "x = {[1",
        "x = {[1]",
        "x = {\"a\"",
        "x = -",
        "not",
        "and or",
        "0x",
        "1e",
        "\u{0}",
        "\u{FEFF}",
        "é",
        "\"\\u{",
        "\"\\u{zz}\"",
        "\"\\",
        "({[)]}",
        "f(})",
        "{ ) }",
        "x = [}",
        "x = (]",
        "let x = if;",
        "x = fn g",
        "// only a comment",
        "a < b < c < d < e",
        "not not not",
        "- - - -",
        ";;;;",
        ",,,,",
        "....",
        "let x = \"${ \"${ }\" }\";",
    ];
    for src in nasty {
        survives(src);
    }
    let deep = [
        "(".repeat(100_000),
        "[".repeat(100_000),
        "{".repeat(100_000),
        "x = {".repeat(100_000),
        "-".repeat(100_000),
        "not ".repeat(100_000),
        "f(".repeat(100_000),
        "fn(){".repeat(100_000),
        "if a {".repeat(100_000),
        "\"${".repeat(100_000),
        "}".repeat(100_000),
        ")".repeat(100_000),
        "a.".repeat(100_000),
        "a.b".repeat(100_000),
        "a+".repeat(100_000),
        "a(1)".repeat(100_000),
        "if a {} else ".repeat(100_000),
    ];
    for src in &deep {
        survives(src);
    }
}

#[test]
fn no_panic_on_every_prefix_of_a_program() {
    let src = r#"import list as l;
fn fib(n) { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } }
let m = {a: [1, 2.5e3, 0xff], "b": "s ${m.a[0] + 1} \u{1F600} \$", [k]: fn(x, y,) { x % y }};
for i, v in m { while not (i >= 10 or v == nil) { i += 1; if i { break } else { continue; } } }
let r = try { error("x"); } catch e { -e.len };
for i in 0..len(m) { m[i] -= 1; }
"#;
    let (_, diags) = parse(src);
    assert!(diags.is_empty(), "{}", messages(src, &diags));
    for end in (0..=src.len()).filter(|&i| src.is_char_boundary(i)) {
        survives(&src[..end]);
        // And with a single character dropped.
        if let Some(c) = src[end..].chars().next() {
            survives(&format!("{}{}", &src[..end], &src[end + c.len_utf8()..]));
        }
    }
}

#[test]
fn no_panic_on_random_token_soup() {
    const WORDS: &[&str] = &[
        "let",
        "fn",
        "if",
        "else",
        "while",
        "for",
        "in",
        "break",
        "continue",
        "return",
        "import",
        "as",
        "try",
        "catch",
        "nil",
        "true",
        "false",
        "and",
        "or",
        "not",
        "x",
        "y",
        "1",
        "2.5",
        "\"s\"",
        "\"a${x}b\"",
        "\"${",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        ";",
        ":",
        ".",
        "..",
        "=",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "+",
        "-",
        "*",
        "/",
        "%",
        "+=",
        "-=",
        "@",
        "\n",
    ];
    // A fixed xorshift generator keeps the test deterministic.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let len = (next() % 40) as usize;
        let src: Vec<&str> = (0..len).map(|_| WORDS[(next() % WORDS.len() as u64) as usize]).collect();
        survives(&src.join(" "));
    }
}
