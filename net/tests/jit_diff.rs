//! The JIT against the interpreter on random programs (issue 16 §4): a generator of
//! well-formed Tern programs (an AST built by proptest strategies, printed to source),
//! each run by the interpreter alone (`JitMode::Off`), with every function compiled at
//! its first call (`Always`) and compiled in the background once hot (`On`, threshold 1).
//! Their output and their error (message and Tern backtrace with lines) must be the same;
//! on a difference proptest shrinks the program and the failure shows it with both runs.
//!
//! The programs are mostly int arithmetic in loops (what the JIT compiles: loops whose
//! every instruction it compiles are entered at their back edge), with values near the
//! int limits (overflow), `/` and `%` by 0 and -1, small constants at the edges of the
//! instructions' operands, `while` loops tested every way (`<`, `<=`, `not >=`, `!=`, ...)
//! against counters, floats and strings mixed in (the compiled code's guards), and around
//! them what makes the interpreter run: calls, recursion, closures capturing variables,
//! arrays and maps (indexes and keys out of range), strings, `try`/`error` caught and
//! uncaught, globals, loops of another module (`math.gcd`, `list.sum`). Each run is
//! `tern_vm::run` in slices of a generated budget, so compiled loops run out of fuel at
//! varied points. Every loop's iteration count is bounded when the program is printed (a
//! product over nested loops), `rec`'s depth is a literal (a few, or past the call-depth
//! limit), and the call graph has no other cycle, so every program ends quickly; the run
//! has a reduction cap all the same, and hitting it, like a compile error, fails the test
//! as a bug of the generator.
//!
//! `PROPTEST_CASES` sets the number of programs (default 200); run with `--nocapture` to
//! see how many ran, how long they took and what they did.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::{BoxedStrategy, Union};
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use std::cell::Cell;
use std::fmt::Write as _;
use std::time::Instant;
use tern_compiler::Compiled;
use tern_net::runner::{compile_text, load, new_vm, BufferHost};
use tern_vm::jit::JitMode;
use tern_vm::{run, Outcome, Process, RuntimeError, VmConfig};

// ---------------------------------------------------------------------------------------
// The programs' AST. Variables are indexes into the pools of names in scope where they are
// printed (modulo the pool's size), so any tree, and any tree shrinking makes of it,
// prints as a program the compiler accepts.

#[derive(Clone, Copy, Debug)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

#[derive(Clone, Copy, Debug)]
enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Clone, Debug)]
enum E {
    Int(i64),
    Float(f64),
    Str(&'static str),
    Bool(bool),
    Nil,
    /// An int variable (any value, mostly ints): a local, a parameter, a global.
    IVar(u8),
    AVar(u8),
    MVar(u8),
    /// The innermost `catch` variable (nil outside handlers).
    Caught,
    Arith(Arith, Box<E>, Box<E>),
    Neg(Box<E>),
    Cmp(Cmp, Box<E>, Box<E>),
    And(Box<E>, Box<E>),
    Or(Box<E>, Box<E>),
    Not(Box<E>),
    If(Box<E>, Box<E>, Box<E>),
    Array(Vec<E>),
    /// Keys `k0`..`k3` (a later duplicate is left out).
    Map(Vec<(u8, E)>),
    Index(Box<E>, Box<E>),
    /// `m.kN`.
    Field(Box<E>, u8),
    /// `get(m, "kN", default)`.
    Get(Box<E>, u8, Box<E>),
    Len(Box<E>),
    Pop(Box<E>),
    /// A call of one of the functions above this one (`rec` when there is none).
    Call(u8, Vec<E>),
    /// `rec(n, acc)`: recursion `n` deep.
    Rec(i64, Box<E>),
    CallClosure(u8, Box<E>),
    /// `"<${a}|${b}>"`.
    Interp(Box<E>, Box<E>),
    ToStr(Box<E>),
    Try(Box<E>, Box<E>),
    Raise(Box<E>),
    /// `math.gcd(a, b)` (a loop in another module, with its own globals).
    Gcd(Box<E>, Box<E>),
    /// `list.sum(array)`.
    Sum(Box<E>),
}

#[derive(Clone, Debug)]
enum Range {
    /// `lo..lo + n`.
    Lit(i64, u8),
    /// `v..v + n`.
    Var(u8, u8),
    /// `for x in array` (with the index too when true).
    Array(u8, bool),
}

#[derive(Clone, Debug)]
enum S {
    Let(E),
    Assign(u8, E),
    OpAssign(u8, Arith, E),
    Print(Vec<E>),
    If(E, Vec<S>, Vec<S>),
    /// A counted loop (`n` times at most; counting up or down, tested one of eight
    /// ways), with an extra condition.
    While(u8, u8, Option<E>, Vec<S>),
    For(Range, Vec<S>),
    Break(E),
    Continue(E),
    Return(E),
    Push(u8, E),
    SetIndex(u8, E, E),
    SetField(u8, u8, E),
    LetArray(Vec<E>),
    LetMap(Vec<(u8, E)>),
    /// `let c = fn(p) { [v = e;] body };`
    LetClosure(Option<(u8, E)>, E),
    /// `let u = e;` (a value computed for its effects).
    Eval(E),
    Try(Vec<S>, Vec<S>),
    Raise(E),
}

#[derive(Clone, Debug)]
struct Program {
    globals: Vec<E>,
    array: Vec<E>,
    map: Vec<(u8, E)>,
    rec_step: E,
    functions: Vec<(Vec<S>, E)>,
    /// The top level: parts, each in a `try` when true (so that an error ends it only).
    main: Vec<(bool, Vec<S>)>,
    /// The reductions each `run` is given (so compiled loops run out of fuel anywhere).
    budget: u32,
}

// ---------------------------------------------------------------------------------------
// Strategies.

/// Small ints (a `LoadInt`, or the constant of an `AddI` or a compare-and-jump), some at
/// the edges of those instructions' operands (i16, i32).
const SMALL: &[i64] = &[0, 1, -1, 2, -2, 3, 7, -7, 10, 100, 1000, 65536, 32767, -32768, 32768, 2_147_483_647, -2_147_483_648];
/// Ints near the limits and their square roots (constants of `AddK`, `MulK`...).
const BIG: &[i64] = &[
    1 << 31,
    1 << 32,
    3_037_000_499, // its square is just below i64::MAX
    3_037_000_500,
    -3_037_000_500,
    1 << 62,
    -(1 << 62),
    i64::MAX,
    i64::MAX - 1,
    i64::MAX - 7,
    i64::MIN,
    i64::MIN + 1,
];
const FLOATS: &[f64] = &[0.0, -0.0, 0.5, 1.5, -2.25, 3.0, 0.1, 1e-9, 1e300, -1e300, 2.5e15];
const STRS: &[&str] = &["", "a", "b", "ab", "hello", "Z", "10", "é", "x\\ny", "$a", "a b"];
/// Loop lengths (before the bound on nested loops).
const LENGTHS: &[u8] = &[0, 1, 2, 3, 5, 8, 13, 40, 100, 250];

fn bx(e: E) -> Box<E> {
    Box::new(e)
}

fn small() -> BoxedStrategy<i64> {
    prop_oneof![select(SMALL), -20i64..=20].boxed()
}

fn int_lit() -> BoxedStrategy<i64> {
    prop_oneof![4 => small(), 1 => select(BIG)].boxed()
}

fn arith() -> BoxedStrategy<Arith> {
    prop_oneof![4 => Just(Arith::Add), 3 => Just(Arith::Sub), 2 => Just(Arith::Mul), 1 => Just(Arith::Div), 1 => Just(Arith::Mod)].boxed()
}

fn cmp() -> BoxedStrategy<Cmp> {
    select(&[Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge, Cmp::Eq, Cmp::Ne][..]).boxed()
}

/// Leaves: in `pure` expressions, only what the JIT compiles (small ints, variables: a
/// big constant or a float is a `LoadK`, which makes the loop stay interpreted).
fn leaf(pure: bool) -> BoxedStrategy<E> {
    if pure {
        prop_oneof![4 => small().prop_map(E::Int), 6 => any::<u8>().prop_map(E::IVar)].boxed()
    } else {
        prop_oneof![
            4 => int_lit().prop_map(E::Int),
            6 => any::<u8>().prop_map(E::IVar),
            1 => select(FLOATS).prop_map(E::Float),
        ]
        .boxed()
    }
}

/// Conditions over expressions of `x`: comparisons (to constants too), `and`, `or`, `not`,
/// truthiness.
fn cond_of(x: BoxedStrategy<E>) -> BoxedStrategy<E> {
    let c = (cmp(), x.clone(), x.clone()).prop_map(|(o, a, b)| E::Cmp(o, bx(a), bx(b)));
    let k = (cmp(), any::<u8>(), -3i64..=12).prop_map(|(o, v, k)| E::Cmp(o, bx(E::IVar(v)), bx(E::Int(k))));
    prop_oneof![
        4 => c.clone(),
        4 => k.clone(),
        1 => (c.clone(), k.clone()).prop_map(|(a, b)| E::And(bx(a), bx(b))),
        1 => (k.clone(), c.clone()).prop_map(|(a, b)| E::Or(bx(a), bx(b))),
        1 => c.prop_map(|a| E::Not(bx(a))),
        1 => x,
        1 => any::<bool>().prop_map(E::Bool),
    ]
    .boxed()
}

/// Int-valued expressions (mostly): only what the JIT compiles when `pure`, and besides,
/// calls, collections, `try` and `error`.
fn int_e(pure: bool) -> BoxedStrategy<E> {
    leaf(pure)
        .prop_recursive(3, 16, 3, move |inner| {
            let small_index = prop_oneof![2 => (-1i64..4).prop_map(E::Int), 1 => inner.clone()];
            let mut v: Vec<(u32, BoxedStrategy<E>)> = vec![
                (8, (arith(), inner.clone(), inner.clone()).prop_map(|(o, a, b)| E::Arith(o, bx(a), bx(b))).boxed()),
                // A big constant on the right: `AddK`, `SubK`, `MulK`, `DivK`, `ModK`.
                // Dividing by 0 or -1 (the smallest int, in a variable, overflows).
                (
                    1,
                    (prop_oneof![Just(Arith::Div), Just(Arith::Mod)], inner.clone(), prop_oneof![Just(0i64), Just(-1i64)])
                        .prop_map(|(o, a, k)| E::Arith(o, bx(a), bx(E::Int(k))))
                        .boxed(),
                ),
                (1, (arith(), inner.clone(), select(BIG)).prop_map(|(o, a, k)| E::Arith(o, bx(a), bx(E::Int(k)))).boxed()),
                (2, (cond_of(inner.clone()), inner.clone(), inner.clone()).prop_map(|(c, a, b)| E::If(bx(c), bx(a), bx(b))).boxed()),
            ];
            if !pure {
                let args = prop_oneof![20 => vec(inner.clone(), 2), 1 => vec(inner.clone(), 1), 1 => vec(inner.clone(), 3)];
                let depth = prop_oneof![20 => 0i64..8, 1 => Just(20_000i64)];
                v.extend([
                    (1, inner.clone().prop_map(|a| E::Neg(bx(a))).boxed()),
                    (
                        1,
                        (prop_oneof![Just(Arith::Div), Just(Arith::Mod)], select(&[-1i64, 0][..]))
                            .prop_map(|(o, k)| E::Arith(o, bx(E::Int(i64::MIN)), bx(E::Int(k))))
                            .boxed(),
                    ),
                    (3, (any::<u8>(), args).prop_map(|(f, a)| E::Call(f, a)).boxed()),
                    (1, (depth, inner.clone()).prop_map(|(n, a)| E::Rec(n, bx(a))).boxed()),
                    (2, (any::<u8>(), small_index).prop_map(|(a, i)| E::Index(bx(E::AVar(a)), bx(i))).boxed()),
                    (1, any::<u8>().prop_map(|a| E::Len(bx(E::AVar(a)))).boxed()),
                    (2, (any::<u8>(), 0u8..4).prop_map(|(m, k)| E::Field(bx(E::MVar(m)), k)).boxed()),
                    (1, (any::<u8>(), 0u8..4, inner.clone()).prop_map(|(m, k, d)| E::Get(bx(E::MVar(m)), k, bx(d))).boxed()),
                    (2, (any::<u8>(), inner.clone()).prop_map(|(c, a)| E::CallClosure(c, bx(a))).boxed()),
                    (1, (inner.clone(), prop_oneof![inner.clone(), Just(E::Caught)]).prop_map(|(a, b)| E::Try(bx(a), bx(b))).boxed()),
                    (1, inner.clone().prop_map(|a| E::Raise(bx(a))).boxed()),
                    (1, (inner.clone(), inner.clone()).prop_map(|(a, b)| E::Gcd(bx(a), bx(b))).boxed()),
                    (1, any::<u8>().prop_map(|a| E::Sum(bx(E::AVar(a)))).boxed()),
                ]);
            }
            Union::new_weighted(v)
        })
        .boxed()
}

fn str_e() -> BoxedStrategy<E> {
    let lit = select(STRS).prop_map(E::Str);
    prop_oneof![
        3 => lit.clone(),
        2 => (lit.clone(), lit.clone()).prop_map(|(a, b)| E::Arith(Arith::Add, bx(a), bx(b))),
        1 => (int_e(true), int_e(true)).prop_map(|(a, b)| E::Interp(bx(a), bx(b))),
        1 => int_e(true).prop_map(|a| E::ToStr(bx(a))),
        1 => (lit, int_e(true)).prop_map(|(a, b)| E::Arith(Arith::Add, bx(a), bx(b))),
    ]
    .boxed()
}

fn map_e() -> BoxedStrategy<Vec<(u8, E)>> {
    vec((0u8..4, prop_oneof![3 => int_e(true), 1 => str_e()]), 0..4).boxed()
}

/// The globals' array and map: small values (an error there would end every program).
fn plain_map() -> BoxedStrategy<Vec<(u8, E)>> {
    vec((0u8..4, prop_oneof![3 => small().prop_map(E::Int), 1 => select(STRS).prop_map(E::Str)]), 0..4).boxed()
}

/// Values of every kind.
fn val_e() -> BoxedStrategy<E> {
    prop_oneof![
        10 => int_e(false),
        3 => str_e(),
        1 => (arith(), select(FLOATS).prop_map(E::Float), int_e(true)).prop_map(|(o, a, b)| E::Arith(o, bx(a), bx(b))),
        1 => vec(int_e(true), 0..4).prop_map(E::Array),
        1 => map_e().prop_map(E::Map),
        1 => any::<u8>().prop_map(E::AVar),
        1 => any::<u8>().prop_map(E::MVar),
        1 => any::<u8>().prop_map(|a| E::Pop(bx(E::AVar(a)))),
        1 => any::<u8>().prop_map(|m| E::Len(bx(E::MVar(m)))),
        1 => (cmp(), str_e(), str_e()).prop_map(|(o, a, b)| E::Cmp(o, bx(a), bx(b))),
        1 => (cmp(), select(FLOATS).prop_map(E::Float), int_e(true)).prop_map(|(o, a, b)| E::Cmp(o, bx(a), bx(b))),
        1 => cond_of(int_e(true)),
        1 => Just(E::Nil),
    ]
    .boxed()
}

fn length() -> BoxedStrategy<u8> {
    select(LENGTHS).boxed()
}

fn range() -> BoxedStrategy<Range> {
    prop_oneof![
        4 => (int_lit(), length()).prop_map(|(lo, n)| Range::Lit(lo, n)),
        2 => (any::<u8>(), length()).prop_map(|(v, n)| Range::Var(v, n)),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(a, i)| Range::Array(a, i)),
    ]
    .boxed()
}

/// Statements the JIT compiles whole: int assignments, `if`, loops, `break`, `continue`.
fn pure_block() -> BoxedStrategy<Vec<S>> {
    let e = int_e(true);
    let c = cond_of(e.clone());
    let leaf = prop_oneof![
        2 => e.clone().prop_map(S::Let),
        6 => (any::<u8>(), e.clone()).prop_map(|(v, e)| S::Assign(v, e)),
        3 => (any::<u8>(), arith(), e.clone()).prop_map(|(v, o, e)| S::OpAssign(v, o, e)),
        1 => c.clone().prop_map(S::Break),
        1 => c.clone().prop_map(S::Continue),
    ];
    let stmt = leaf.prop_recursive(2, 12, 3, move |inner| {
        let body = vec(inner.clone(), 1..4);
        prop_oneof![
            3 => (c.clone(), body.clone(), vec(inner, 0..3)).prop_map(|(c, a, b)| S::If(c, a, b)),
            1 => (length(), any::<u8>(), proptest::option::weighted(0.3, c.clone()), body.clone())
                .prop_map(|(n, d, c, b)| S::While(n, d, c, b)),
            1 => (range(), body).prop_map(|(r, b)| S::For(r, b)),
        ]
    });
    vec(stmt, 1..5).boxed()
}

/// Any statement (`in_fn`: of a function body, whose loops are pure, so that calls are
/// never made in a loop but from the top level).
fn block(in_fn: bool, len: std::ops::Range<usize>) -> BoxedStrategy<Vec<S>> {
    let e = int_e(false);
    let c = cond_of(e.clone());
    let mut leaves: Vec<(u32, BoxedStrategy<S>)> = vec![
        (3, val_e().prop_map(S::Let).boxed()),
        (4, (any::<u8>(), e.clone()).prop_map(|(v, e)| S::Assign(v, e)).boxed()),
        (1, (any::<u8>(), val_e()).prop_map(|(v, e)| S::Assign(v, e)).boxed()),
        (2, (any::<u8>(), arith(), e.clone()).prop_map(|(v, o, e)| S::OpAssign(v, o, e)).boxed()),
        (4, vec(val_e(), 1..4).prop_map(S::Print).boxed()),
        (2, (any::<u8>(), val_e()).prop_map(|(a, e)| S::Push(a, e)).boxed()),
        (
            1,
            (any::<u8>(), prop_oneof![3 => (-1i64..4).prop_map(E::Int), 1 => e.clone()], val_e())
                .prop_map(|(a, i, e)| S::SetIndex(a, i, e))
                .boxed(),
        ),
        (1, (any::<u8>(), 0u8..4, val_e()).prop_map(|(m, k, e)| S::SetField(m, k, e)).boxed()),
        (1, vec(val_e(), 0..4).prop_map(S::LetArray).boxed()),
        (1, map_e().prop_map(S::LetMap).boxed()),
        (2, (proptest::option::weighted(0.5, (any::<u8>(), int_e(true))), int_e(true)).prop_map(|(a, b)| S::LetClosure(a, b)).boxed()),
        (2, e.clone().prop_map(S::Eval).boxed()),
        (1, val_e().prop_map(S::Raise).boxed()),
        (1, c.clone().prop_map(S::Break).boxed()),
        (1, c.clone().prop_map(S::Continue).boxed()),
    ];
    if in_fn {
        leaves.push((2, e.clone().prop_map(S::Return).boxed()));
    }
    let stmt = Union::new_weighted(leaves).prop_recursive(2, 16, 3, move |inner| {
        let body = vec(inner.clone(), 1..4);
        let loop_body = if in_fn { pure_block() } else { prop_oneof![2 => pure_block(), 1 => body.clone()].boxed() };
        prop_oneof![
            3 => (c.clone(), body.clone(), vec(inner.clone(), 0..3)).prop_map(|(c, a, b)| S::If(c, a, b)),
            3 => (length(), any::<u8>(), proptest::option::weighted(0.3, c.clone()), loop_body.clone())
                .prop_map(|(n, d, c, b)| S::While(n, d, c, b)),
            3 => (range(), loop_body).prop_map(|(r, b)| S::For(r, b)),
            3 => (body.clone(), vec(inner, 0..3)).prop_map(|(b, h)| S::Try(b, h)),
        ]
    });
    vec(stmt, len).boxed()
}

fn program() -> BoxedStrategy<Program> {
    let global = prop_oneof![6 => int_lit().prop_map(E::Int), 1 => select(FLOATS).prop_map(E::Float)];
    (
        vec(global, 1..4),
        vec(prop_oneof![3 => small().prop_map(E::Int), 1 => select(FLOATS).prop_map(E::Float)], 0..4),
        plain_map(),
        int_e(true),
        vec((block(true, 1..5), int_e(false)), 0..3),
        vec((proptest::bool::weighted(0.85), block(false, 1..4)), 1..8),
        select(&[5u32, 37, 200, 1000, 4000][..]),
    )
        .prop_map(|(globals, array, map, rec_step, functions, main, budget)| Program {
            globals,
            array,
            map,
            rec_step,
            functions,
            main,
            budget,
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------
// Printing.

/// Iterations allowed to a nest of loops (their counts' product), in a function body or
/// in the top level. Functions call only those above them, and never from a loop.
const LOOP_LIMIT: u64 = 1000;

#[derive(Default)]
struct Printer {
    src: String,
    indent: usize,
    /// Name, and whether the program may assign it (loop counters and `rec`'s depth not).
    ints: Vec<(String, bool)>,
    arrays: Vec<String>,
    maps: Vec<String>,
    closures: Vec<String>,
    caught: Vec<String>,
    /// Functions callable from here: f0.. f{functions - 1}.
    functions: usize,
    loops: usize,
    in_fn: bool,
    /// Product of the enclosing loops' iteration counts.
    mult: u64,
    fresh: usize,
}

type Scope = (usize, usize, usize, usize, usize);

impl Printer {
    fn name(&mut self, prefix: &str) -> String {
        self.fresh += 1;
        format!("{prefix}{}", self.fresh)
    }

    fn line(&mut self, s: &str) {
        for _ in 0..self.indent {
            self.src.push_str("    ");
        }
        self.src.push_str(s);
        self.src.push('\n');
    }

    fn scope(&self) -> Scope {
        (self.ints.len(), self.arrays.len(), self.maps.len(), self.closures.len(), self.caught.len())
    }

    fn restore(&mut self, s: Scope) {
        self.ints.truncate(s.0);
        self.arrays.truncate(s.1);
        self.maps.truncate(s.2);
        self.closures.truncate(s.3);
        self.caught.truncate(s.4);
    }

    fn pick(v: &[String], i: u8) -> Option<String> {
        (!v.is_empty()).then(|| v[usize::from(i) % v.len()].clone())
    }

    /// Mostly one of the last few declared (the innermost loops' counters), so that
    /// comparisons with small constants meet their edge cases.
    fn int_var(&self, i: u8) -> Option<String> {
        let n = self.ints.len();
        let i = usize::from(i);
        (n > 0).then(|| if i < 160 { self.ints[n - 1 - i % n.min(4)].0.clone() } else { self.ints[i % n].0.clone() })
    }

    fn assignable(&self, i: u8) -> Option<String> {
        let v: Vec<String> = self.ints.iter().filter(|(_, w)| *w).map(|(n, _)| n.clone()).collect();
        Self::pick(&v, i)
    }

    fn int(v: i64) -> String {
        if v == i64::MIN {
            "(-9223372036854775807 - 1)".into()
        } else if v < 0 {
            format!("({v})")
        } else {
            v.to_string()
        }
    }

    fn float(v: f64) -> String {
        if v.is_sign_negative() {
            format!("(-{:?})", -v)
        } else {
            format!("{v:?}")
        }
    }

    fn map_literal(&mut self, kvs: &[(u8, E)]) -> String {
        let mut seen = [false; 4];
        let mut parts = Vec::new();
        for (k, e) in kvs {
            let k = usize::from(*k % 4);
            if !seen[k] {
                seen[k] = true;
                let v = self.e(e);
                parts.push(format!("k{k}: {v}"));
            }
        }
        format!("({{{}}})", parts.join(", "))
    }

    fn e(&mut self, e: &E) -> String {
        match e {
            E::Int(v) => Self::int(*v),
            E::Float(v) => Self::float(*v),
            E::Str(s) => format!("\"{s}\""),
            E::Bool(b) => b.to_string(),
            E::Nil => "nil".into(),
            E::IVar(i) => self.int_var(*i).unwrap_or_else(|| "0".into()),
            E::AVar(i) => Self::pick(&self.arrays, *i).unwrap_or_else(|| "[]".into()),
            E::MVar(i) => Self::pick(&self.maps, *i).unwrap_or_else(|| "({})".into()),
            E::Caught => self.caught.last().cloned().unwrap_or_else(|| "nil".into()),
            E::Arith(o, a, b) => {
                let op = match o {
                    Arith::Add => "+",
                    Arith::Sub => "-",
                    Arith::Mul => "*",
                    Arith::Div => "/",
                    Arith::Mod => "%",
                };
                format!("({} {op} {})", self.e(a), self.e(b))
            }
            E::Neg(a) => format!("(-{})", self.e(a)),
            E::Cmp(o, a, b) => {
                let op = match o {
                    Cmp::Lt => "<",
                    Cmp::Le => "<=",
                    Cmp::Gt => ">",
                    Cmp::Ge => ">=",
                    Cmp::Eq => "==",
                    Cmp::Ne => "!=",
                };
                format!("({} {op} {})", self.e(a), self.e(b))
            }
            E::And(a, b) => format!("({} and {})", self.e(a), self.e(b)),
            E::Or(a, b) => format!("({} or {})", self.e(a), self.e(b)),
            E::Not(a) => format!("(not {})", self.e(a)),
            E::If(c, a, b) => format!("(if {} {{ {} }} else {{ {} }})", self.e(c), self.e(a), self.e(b)),
            E::Array(v) => {
                let parts: Vec<String> = v.iter().map(|x| self.e(x)).collect();
                format!("[{}]", parts.join(", "))
            }
            E::Map(kvs) => self.map_literal(kvs),
            E::Index(a, i) => format!("{}[{}]", self.e(a), self.e(i)),
            E::Field(m, k) => format!("{}.k{}", self.e(m), k % 4),
            E::Get(m, k, d) => format!("get({}, \"k{}\", {})", self.e(m), k % 4, self.e(d)),
            E::Len(a) => format!("len({})", self.e(a)),
            E::Pop(a) => format!("pop({})", self.e(a)),
            E::Call(f, args) => {
                let args: Vec<String> = args.iter().map(|x| self.e(x)).collect();
                if self.functions == 0 {
                    format!("rec(2, {})", args[0])
                } else {
                    format!("f{}({})", usize::from(*f) % self.functions, args.join(", "))
                }
            }
            E::Rec(n, a) => format!("rec({n}, {})", self.e(a)),
            E::CallClosure(c, a) => {
                let a = self.e(a);
                match Self::pick(&self.closures, *c) {
                    Some(c) => format!("{c}({a})"),
                    None => a,
                }
            }
            E::Interp(a, b) => format!("\"<${{{}}}|${{{}}}>\"", self.e(a), self.e(b)),
            E::ToStr(a) => format!("to_string({})", self.e(a)),
            E::Try(a, b) => {
                let body = self.e(a);
                let v = self.name("e");
                self.caught.push(v.clone());
                let handler = self.e(b);
                self.caught.pop();
                format!("(try {{ {body} }} catch {v} {{ {handler} }})")
            }
            E::Raise(a) => format!("error({})", self.e(a)),
            E::Gcd(a, b) => format!("math.gcd({}, {})", self.e(a), self.e(b)),
            E::Sum(a) => format!("list.sum({})", self.e(a)),
        }
    }

    /// Prints the int variables in scope (the last few), so that what a loop or a `try`
    /// left in them shows.
    fn snapshot(&mut self, tag: &str) {
        let names: Vec<String> = self.ints.iter().rev().take(6).map(|(n, _)| n.clone()).collect();
        let tag = self.name(tag);
        self.line(&format!("println(\"{tag}\", {});", names.join(", ")));
    }

    fn block(&mut self, stmts: &[S]) {
        let scope = self.scope();
        self.indent += 1;
        for s in stmts {
            self.s(s);
        }
        self.indent -= 1;
        self.restore(scope);
    }

    /// A loop body `n` times (at most): the count allowed here.
    fn count(&self, n: u8) -> u64 {
        u64::from(n).min((LOOP_LIMIT / self.mult).max(1))
    }

    fn loop_body(&mut self, n: u64, body: &[S], head: &[String]) {
        let mult = self.mult;
        self.mult = mult * n.max(1);
        self.loops += 1;
        let scope = self.scope();
        self.indent += 1;
        for l in head {
            self.line(l);
        }
        for s in body {
            self.s(s);
        }
        self.indent -= 1;
        self.restore(scope);
        self.loops -= 1;
        self.mult = mult;
    }

    fn s(&mut self, s: &S) {
        match s {
            S::Let(e) => {
                let e = self.e(e);
                let v = self.name("v");
                self.line(&format!("let {v} = {e};"));
                self.ints.push((v, true));
            }
            S::Assign(i, e) => {
                if let Some(v) = self.assignable(*i) {
                    let e = self.e(e);
                    self.line(&format!("{v} = {e};"));
                }
            }
            S::OpAssign(i, o, e) => {
                if let Some(v) = self.assignable(*i) {
                    let e = self.e(e);
                    let op = match o {
                        Arith::Add => "+=",
                        Arith::Sub => "-=",
                        Arith::Mul => "*=",
                        Arith::Div => "/=",
                        Arith::Mod => "%=",
                    };
                    self.line(&format!("{v} {op} {e};"));
                }
            }
            S::Print(es) => {
                let parts: Vec<String> = es.iter().map(|x| self.e(x)).collect();
                let tag = self.name("p");
                self.line(&format!("println(\"{tag}\", {});", parts.join(", ")));
            }
            S::If(c, a, b) => {
                let c = self.e(c);
                self.line(&format!("if {c} {{"));
                self.block(a);
                if b.is_empty() {
                    self.line("}");
                } else {
                    self.line("} else {");
                    self.block(b);
                    self.line("}");
                }
            }
            S::While(n, form, extra, body) => {
                let n = self.count(*n);
                let w = self.name("w");
                let extra = extra.as_ref().map(|c| self.e(c));
                // Every form of compare-and-jump at the back edge; the body never
                // assigns the counter, so each ends after `n` rounds.
                let (init, test, step) = match form % 8 {
                    0 => ("0".into(), format!("{w} < {n}"), format!("{w} = {w} + 1;")),
                    1 => ("0".into(), format!("{w} <= {}", n as i64 - 1), format!("{w} += 1;")),
                    2 => ("0".into(), format!("not ({w} >= {n})"), format!("{w} = {w} + 1;")),
                    3 => ("0".into(), format!("{w} != {n}"), format!("{w} = 1 + {w};")),
                    4 => (n.to_string(), format!("{w} > 0"), format!("{w} -= 1;")),
                    5 => (n.to_string(), format!("{w} >= 1"), format!("{w} = {w} - 1;")),
                    6 => (n.to_string(), format!("not ({w} <= 0)"), format!("{w} -= 1;")),
                    _ => (n.to_string(), format!("{w} != 0"), format!("{w} = {w} + (-1);")),
                };
                self.line(&format!("let {w} = {init};"));
                match extra {
                    Some(c) => self.line(&format!("while ({test}) and {c} {{")),
                    None => self.line(&format!("while {test} {{")),
                }
                self.ints.push((w.clone(), false));
                self.loop_body(n, body, &[step]);
                self.line("}");
                self.snapshot("w");
            }
            S::For(r, body) => {
                let (head, n, vars) = match r {
                    Range::Lit(lo, n) => {
                        let n = self.count(*n);
                        let hi = lo.saturating_add(n as i64);
                        let i = self.name("i");
                        (format!("for {i} in {}..{} {{", Self::int(*lo), Self::int(hi)), n, vec![i])
                    }
                    Range::Var(v, n) => {
                        let n = self.count(*n);
                        let v = self.int_var(*v).unwrap_or_else(|| "0".into());
                        let i = self.name("i");
                        (format!("for {i} in {v}..({v} + {n}) {{"), n, vec![i])
                    }
                    Range::Array(a, indexed) => {
                        // A copy of (at most 20 of) its elements: the body may push to it.
                        let a = Self::pick(&self.arrays, *a).unwrap_or_else(|| "[]".into());
                        let a = format!("slice({a}, 0, min(len({a}), 20))");
                        let x = self.name("x");
                        if *indexed {
                            let j = self.name("j");
                            (format!("for {j}, {x} in {a} {{"), 20, vec![j, x])
                        } else {
                            (format!("for {x} in {a} {{"), 20, vec![x])
                        }
                    }
                };
                self.line(&head);
                let scope = self.scope();
                self.ints.extend(vars.into_iter().map(|v| (v, true)));
                self.loop_body(n, body, &[]);
                self.restore(scope);
                self.line("}");
                self.snapshot("f");
            }
            S::Break(c) | S::Continue(c) => {
                if self.loops > 0 {
                    let c = self.e(c);
                    let word = if matches!(s, S::Break(_)) { "break" } else { "continue" };
                    self.line(&format!("if {c} {{ {word}; }}"));
                }
            }
            S::Return(e) => {
                if self.in_fn {
                    let e = self.e(e);
                    self.line(&format!("return {e};"));
                }
            }
            S::Push(a, e) => {
                let e = self.e(e);
                let a = Self::pick(&self.arrays, *a).unwrap_or_else(|| "[]".into());
                self.line(&format!("push({a}, {e});"));
            }
            S::SetIndex(a, i, e) => {
                let (i, e) = (self.e(i), self.e(e));
                if let Some(a) = Self::pick(&self.arrays, *a) {
                    self.line(&format!("{a}[{i}] = {e};"));
                }
            }
            S::SetField(m, k, e) => {
                let e = self.e(e);
                if let Some(m) = Self::pick(&self.maps, *m) {
                    self.line(&format!("{m}.k{} = {e};", k % 4));
                }
            }
            S::LetArray(es) => {
                let e = self.e(&E::Array(es.clone()));
                let a = self.name("a");
                self.line(&format!("let {a} = {e};"));
                self.arrays.push(a);
            }
            S::LetMap(kvs) => {
                let e = self.map_literal(kvs);
                let m = self.name("m");
                self.line(&format!("let {m} = {e};"));
                self.maps.push(m);
            }
            S::LetClosure(assign, body) => {
                let c = self.name("c");
                let p = self.name("q");
                // The body sees what is in scope (captured) and its parameter; it has no
                // loop of its own to break from and calls nothing (pure).
                let saved = (self.loops, self.in_fn, self.functions);
                self.loops = 0;
                self.in_fn = true;
                self.functions = 0;
                let scope = self.scope();
                self.ints.push((p.clone(), true));
                let mut text = format!("let {c} = fn({p}) {{ ");
                if let Some((v, e)) = assign {
                    if let Some(v) = self.assignable(*v) {
                        let e = self.e(e);
                        let _ = write!(text, "{v} = {e}; ");
                    }
                }
                let b = self.e(body);
                let _ = write!(text, "{b} }};");
                self.restore(scope);
                (self.loops, self.in_fn, self.functions) = saved;
                self.line(&text);
                self.closures.push(c);
            }
            S::Eval(e) => {
                let e = self.e(e);
                let u = self.name("u");
                self.line(&format!("let {u} = {e};"));
            }
            S::Try(body, handler) => {
                self.line("try {");
                self.block(body);
                let v = self.name("e");
                self.line(&format!("}} catch {v} {{"));
                self.caught.push(v.clone());
                self.indent += 1;
                let tag = self.name("c");
                self.line(&format!("println(\"{tag}\", {v});"));
                self.indent -= 1;
                self.block(handler);
                self.caught.pop();
                self.line("}");
                self.snapshot("t");
            }
            S::Raise(e) => {
                let e = self.e(e);
                self.line(&format!("error({e});"));
            }
        }
    }
}

fn source(p: &Program) -> String {
    let mut pr = Printer { mult: 1, ..Printer::default() };
    pr.line("import math;");
    pr.line("import list;");
    for (i, g) in p.globals.iter().enumerate() {
        let e = pr.e(g);
        pr.line(&format!("let g{i} = {e};"));
        pr.ints.push((format!("g{i}"), true));
    }
    let a = pr.e(&E::Array(p.array.clone()));
    pr.line(&format!("let ga = {a};"));
    let m = pr.map_literal(&p.map);
    pr.line(&format!("let gm = {m};"));
    pr.arrays.push("ga".into());
    pr.maps.push("gm".into());
    let top = pr.scope();

    // fn rec(n, acc): n calls deep.
    pr.ints.extend([("n".to_string(), false), ("acc".to_string(), true)]);
    let step = pr.e(&p.rec_step);
    pr.line(&format!("fn rec(n, acc) {{\n    if n <= 0 {{ return acc; }}\n    rec(n - 1, {step})\n}}"));
    pr.restore(top);

    pr.in_fn = true;
    for (k, (body, result)) in p.functions.iter().enumerate() {
        pr.functions = k;
        pr.ints.extend([(format!("a{k}"), true), (format!("b{k}"), true)]);
        pr.line(&format!("fn f{k}(a{k}, b{k}) {{"));
        pr.indent += 1;
        for s in body {
            pr.s(s);
        }
        let r = pr.e(result);
        pr.line(&r);
        pr.indent -= 1;
        pr.line("}");
        pr.restore(top);
    }
    pr.in_fn = false;
    pr.functions = p.functions.len();

    for (wrap, part) in &p.main {
        if *wrap {
            pr.s(&S::Try(part.clone(), Vec::new()));
        } else {
            for s in part {
                pr.s(s);
            }
        }
    }
    let names: Vec<String> = pr.ints.iter().map(|(n, _)| n.clone()).collect();
    pr.line(&format!("println(\"end\", {}, ga, gm);", names.join(", ")));
    pr.src
}

// ---------------------------------------------------------------------------------------
// Running.

/// Reductions a program may take (the generator keeps them far below).
const MAX_REDUCTIONS: u64 = 50_000_000;

#[derive(Debug, PartialEq)]
struct Ran {
    out: String,
    result: Result<(), RuntimeError>,
}

fn execute(program: &Compiled, jit: JitMode, budget: u32) -> Result<(Ran, u64), String> {
    let mut vm = new_vm(VmConfig { jit, jit_threshold: 1, ..VmConfig::default() });
    load(&mut vm, program).map_err(|e| format!("load: {e:?}"))?;
    let mut proc = Process::new(1, program.main, &vm).map_err(|e| format!("link: {e}"))?;
    let mut host = BufferHost::new();
    let mut spent = 0u64;
    let result = loop {
        match run(&mut proc, &vm, &mut host, budget) {
            Outcome::Yielded => {
                spent += u64::from(budget);
                if spent > MAX_REDUCTIONS {
                    return Err(format!("no end after {spent} reductions ({jit:?})"));
                }
            }
            Outcome::Finished(_) => break Ok(()),
            Outcome::Failed(e) => break Err(e),
            other => return Err(format!("unexpected {other:?} ({jit:?})")),
        }
    };
    let compiled = vm.jit.as_ref().map_or(0, |j| j.stats().compiled);
    Ok((Ran { out: host.out, result }, compiled))
}

fn show(r: &Ran) -> String {
    let end = match &r.result {
        Ok(()) => "finished".to_string(),
        Err(e) => format!("{e:?}"),
    };
    format!("--- output ---\n{}--- end: {end}", r.out)
}

#[derive(Default)]
struct Stats {
    programs: Cell<u64>,
    failed: Cell<u64>,
    compiled_some: Cell<u64>,
    functions_compiled: Cell<u64>,
    lines: Cell<u64>,
}

/// Compiles and runs one program every way; `Err` describes a difference (or a generator
/// bug: the compiler rejects the program, or it does not end).
fn check(src: &str, budget: u32, stats: &Stats) -> Result<(), String> {
    let program = compile_text("t.tern", src).map_err(|e| format!("generator bug: the compiler rejects the program: {e}"))?;
    let (plain, _) = execute(&program, JitMode::Off, budget).map_err(|e| format!("generator bug: {e}"))?;
    stats.programs.set(stats.programs.get() + 1);
    stats.failed.set(stats.failed.get() + u64::from(plain.result.is_err()));
    stats.lines.set(stats.lines.get() + src.lines().count() as u64);
    for mode in [JitMode::Always, JitMode::On] {
        let (jit, compiled) = execute(&program, mode, budget)?;
        if mode == JitMode::Always {
            stats.compiled_some.set(stats.compiled_some.get() + u64::from(compiled > 0));
            stats.functions_compiled.set(stats.functions_compiled.get() + compiled);
        }
        if jit != plain {
            return Err(format!(
                "JitMode::{mode:?} differs from the interpreter (budget {budget})\ninterpreter:\n{}\n{mode:?}:\n{}",
                show(&plain),
                show(&jit)
            ));
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(200)
}

#[test]
fn the_jit_and_the_interpreter_agree_on_random_programs() {
    let start = Instant::now();
    let stats = Stats::default();
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    let result = runner.run(&program(), |p| {
        let src = source(&p);
        check(&src, p.budget, &stats).map_err(|e| TestCaseError::fail(format!("{e}\n--- program ---\n{src}")))
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, p)) => {
            panic!("{why}\n(shrunk program above; budget {}; printed again:)\n{}", p.budget, source(&p))
        }
        Err(e) => panic!("{e}"),
    }
    let n = stats.programs.get().max(1);
    eprintln!(
        "{} programs (with shrinking runs) in {:.1?}: {} lines on average, {}% end in an uncaught error, \
         {}% had a function compiled (JitMode::Always), {:.1} functions compiled on average",
        stats.programs.get(),
        start.elapsed(),
        stats.lines.get() / n,
        stats.failed.get() * 100 / n,
        stats.compiled_some.get() * 100 / n,
        stats.functions_compiled.get() as f64 / n as f64,
    );
}

/// The printer's output for a fixed program: the shapes the generator prints compile
/// (checked here on a hand-made tree that uses every construct).
#[test]
fn every_construct_prints_as_a_program_the_compiler_accepts() {
    let int = |v| E::Int(v);
    let iv = E::IVar;
    let every_e = vec![
        E::Arith(Arith::Mul, bx(iv(0)), bx(int(i64::MIN))),
        E::Neg(bx(E::Float(-0.0))),
        E::If(bx(E::And(bx(E::Cmp(Cmp::Lt, bx(iv(1)), bx(int(3)))), bx(E::Not(bx(E::Bool(true)))))), bx(E::Str("x\\ny")), bx(E::Nil)),
        E::Or(bx(E::Caught), bx(E::Array(vec![int(1), E::Float(1e300)]))),
        E::Map(vec![(0, int(1)), (0, int(2)), (3, E::Str("a"))]),
        E::Index(bx(E::AVar(0)), bx(int(5))),
        E::Field(bx(E::MVar(0)), 2),
        E::Get(bx(E::MVar(1)), 1, bx(int(0))),
        E::Len(bx(E::AVar(1))),
        E::Pop(bx(E::AVar(2))),
        E::Call(1, vec![int(1), int(2)]),
        E::Rec(3, bx(iv(2))),
        E::CallClosure(0, bx(int(4))),
        E::Interp(bx(iv(0)), bx(int(-3))),
        E::ToStr(bx(E::Float(0.5))),
        E::Try(bx(E::Raise(bx(int(1)))), bx(E::Caught)),
        E::Gcd(bx(int(12)), bx(iv(0))),
        E::Sum(bx(E::AVar(0))),
    ];
    let stmts = vec![
        S::LetClosure(Some((0, E::Arith(Arith::Add, bx(iv(0)), bx(iv(1))))), iv(1)),
        S::LetArray(vec![int(1)]),
        S::LetMap(vec![(1, int(1))]),
        S::Let(int(1)),
        S::Print(every_e.clone()),
        S::Try(
            vec![
                S::While(5, 1, Some(E::Bool(true)), vec![S::OpAssign(0, Arith::Mod, int(0)), S::Break(E::Bool(false))]),
                S::While(5, 6, None, vec![S::Continue(E::Bool(false))]),
                S::While(2, 7, None, vec![]),
                S::For(Range::Lit(i64::MAX - 2, 40), vec![S::Assign(1, iv(0))]),
                S::For(Range::Var(0, 3), vec![]),
                S::For(Range::Array(0, true), vec![]),
                S::For(Range::Array(0, false), vec![]),
            ],
            vec![S::Push(0, E::Caught), S::SetIndex(0, int(0), int(1)), S::SetField(0, 1, int(2)), S::Eval(int(1))],
        ),
        S::If(E::Bool(true), vec![S::Return(int(1))], vec![S::Raise(E::Str("boom"))]),
    ];
    let p = Program {
        globals: vec![int(1), E::Float(2.5)],
        array: vec![int(1)],
        map: vec![(0, int(1))],
        rec_step: E::Arith(Arith::Add, bx(iv(0)), bx(int(1))),
        functions: vec![(stmts.clone(), iv(0)), (stmts.clone(), E::Call(0, vec![int(1), int(2)]))],
        main: vec![(false, stmts.clone()), (true, stmts)],
        budget: 100,
    };
    let src = source(&p);
    let stats = Stats::default();
    check(&src, p.budget, &stats).unwrap_or_else(|e| panic!("{e}\n--- program ---\n{src}"));
}
