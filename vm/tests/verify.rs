//! The verifier: each kind of malformed module is refused with a message saying why.

use tern_vm::bytecode::{Const, Function, Module, ModuleHash, Op, UpvalDesc};
use tern_vm::verify::verify;

fn func(name: &str, arity: u8, nregs: u16, code: Vec<Op>) -> Function {
    let lines = vec![1; code.len()];
    Function { name: name.into(), arity, nregs, upvals: vec![], code, lines }
}

fn module(functions: Vec<Function>) -> Module {
    Module {
        name: "t".into(),
        consts: vec![Const::Int(1), Const::Str("k".into()), Const::Module(ModuleHash([0; 32]))],
        functions,
        globals: vec!["g".into()],
    }
}

fn check(code: Vec<Op>, nregs: u16, expect: &str) {
    let m = module(vec![func("", 0, nregs, code)]);
    match verify(&m) {
        Ok(()) => panic!("accepted, expected an error containing {expect:?}"),
        Err(e) => assert!(e.to_string().contains(expect), "{e} (expected {expect:?})"),
    }
}

#[test]
fn a_well_formed_module_passes() {
    let m = module(vec![
        func("", 0, 3, vec![Op::LoadK { a: 0, k: 0 }, Op::Closure { a: 1, f: 1 }, Op::Call { a: 1, n: 0 }, Op::Return { a: 0 }]),
        func("f", 0, 1, vec![Op::GetGlobal { a: 0, g: 0 }, Op::Return { a: 0 }]),
    ]);
    verify(&m).unwrap();
}

#[test]
fn malformed_modules_are_refused() {
    check(vec![Op::Move { a: 0, b: 5 }, Op::ReturnNil {}], 2, "register R5 out of range");
    check(vec![Op::LoadK { a: 0, k: 9 }, Op::ReturnNil {}], 1, "constant K9 out of range");
    check(vec![Op::LoadK { a: 0, k: 2 }, Op::ReturnNil {}], 1, "module constant cannot be loaded");
    check(vec![Op::GetField { a: 0, b: 0, k: 0 }, Op::ReturnNil {}], 1, "field name K0 is not a string");
    check(vec![Op::Import { a: 0, k: 1 }, Op::ReturnNil {}], 1, "not a module");
    check(vec![Op::GetGlobal { a: 0, g: 3 }, Op::ReturnNil {}], 1, "global G3 out of range");
    check(vec![Op::GetUpval { a: 0, u: 0 }, Op::ReturnNil {}], 1, "captured variable U0 out of range");
    check(vec![Op::Jmp { off: 5 }, Op::ReturnNil {}], 1, "jump target 6 outside the function");
    check(vec![Op::Jmp { off: -2 }, Op::ReturnNil {}], 1, "jump target -1 outside the function");
    check(vec![Op::LoadNil { a: 0 }], 1, "run off the end");
    check(vec![Op::JmpIf { a: 0, off: -1 }], 1, "run off the end");
    check(vec![Op::Call { a: 0, n: 3 }, Op::ReturnNil {}], 2, "registers R0..R4 out of range");
    check(vec![Op::NewMap { a: 0, b: 0, n: 2 }, Op::ReturnNil {}], 3, "out of range");
    check(vec![Op::ForPrep { a: 0, off: 0 }, Op::ReturnNil {}], 2, "out of range");
    check(vec![Op::IterNext { a: 0, n: 3, off: 0 }, Op::ReturnNil {}], 8, "iteration over 3 variables");
    check(vec![Op::AddK { a: 0, b: 0, k: 1 }, Op::ReturnNil {}], 1, "not a number");
    check(vec![Op::Shl { a: 0, b: 0, c: 2 }, Op::ReturnNil {}], 2, "register R2 out of range");
    check(vec![Op::BitXor { a: 3, b: 0, c: 1 }, Op::ReturnNil {}], 2, "register R3 out of range");
    check(vec![Op::BitNot { a: 0, b: 4 }, Op::ReturnNil {}], 2, "register R4 out of range");
    check(vec![Op::Closure { a: 0, f: 0 }, Op::ReturnNil {}], 1, "not a nested function");
    check(vec![Op::Closure { a: 0, f: 7 }, Op::ReturnNil {}], 1, "not a nested function");
    check(vec![], 1, "code length 0");
    check(vec![Op::ReturnNil {}], 300, "300 registers");
}

#[test]
fn structural_problems_are_refused() {
    let mut m = module(vec![func("", 0, 1, vec![Op::ReturnNil {}])]);
    m.functions[0].lines.pop();
    assert!(verify(&m).unwrap_err().to_string().contains("line table"));

    let m = module(vec![func("", 1, 1, vec![Op::ReturnNil {}])]);
    assert!(verify(&m).unwrap_err().to_string().contains("top-level function"));

    let m = module(vec![func("f", 3, 2, vec![Op::ReturnNil {}])]);
    assert!(verify(&m).is_err(), "arity above the register count");

    // A closure capturing a register the enclosing function does not have.
    let mut inner = func("f", 0, 1, vec![Op::ReturnNil {}]);
    inner.upvals = vec![UpvalDesc { from_local: true, index: 4 }];
    let m = module(vec![func("", 0, 2, vec![Op::Closure { a: 0, f: 1 }, Op::ReturnNil {}]), inner]);
    assert!(verify(&m).unwrap_err().to_string().contains("register R4 out of range"));

    assert!(verify(&module(vec![])).is_err());
}
