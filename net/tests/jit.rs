//! The JIT (`tern_jit`, contract in `tern_vm::jit`): compiled code gives the
//! interpreter's results and errors, a process image taken while a compiled loop runs is
//! plain bytecode state (it finishes in a VM without a JIT), and a compiled endless loop
//! is still preempted and ends with its program.

use std::time::{Duration, Instant};
use tern_net::runner::{compile_text, load, new_vm, run_program, BufferHost, RunOptions, RunReport};
use tern_vm::jit::{JitMode, JitStats};
use tern_vm::snapshot::{restore, snapshot};
use tern_vm::{run, Outcome, Process, VmConfig};

/// Loops of every kind the JIT compiles: while with int compares, for ranges, globals,
/// constants, truthiness, nil checks; and calls between them.
const LOOPS: &str = r#"
let total = 0;
fn weigh(n) {
    let s = 0;
    let i = 0;
    while i < n {
        if i % 3 == 0 { s = s + i * 7; } else { s = s - 2; }
        i = i + 1;
    }
    s
}
fn count(n) {
    let c = 0;
    for k in 0..n {
        let flag = k > 10 and k <= 1000;
        if flag { c += 1; }
        let x = nil;
        if k == 5 { x = k; }
        if x != nil { c += 100; }
        total = total + k;
    }
    c
}
println(weigh(100000), count(5000), total);
"#;

fn run_with(src: &str, config: VmConfig) -> (String, RunReport) {
    let program = compile_text("t.tern", src).unwrap();
    let mut host = BufferHost::new();
    let report = run_program(&program, &RunOptions { config, workers: 1, ..RunOptions::default() }, &mut host).unwrap();
    (host.out, report)
}

fn mode(jit: JitMode) -> VmConfig {
    VmConfig { jit, jit_threshold: 50, ..VmConfig::default() }
}

#[test]
fn compiled_code_gives_the_interpreters_results() {
    let (plain, r) = run_with(LOOPS, mode(JitMode::Off));
    assert!(r.result.is_ok(), "{:?}", r.result);
    assert_eq!(r.jit.compiled, 0);
    assert_eq!(plain, "11666649999 1090 12497500\n");
    let (out, r) = run_with(LOOPS, mode(JitMode::Always));
    assert!(r.result.is_ok(), "{:?}", r.result);
    assert_eq!(out, plain);
    assert!(r.jit.compiled >= 2, "only {} functions compiled", r.jit.compiled);
    // Compiled in the background once hot: a loop long enough to see its code arrive
    // and be entered at a back edge, while it runs.
    let long = LOOPS.replace("weigh(100000)", "weigh(3000000)");
    let (plain, _) = run_with(&long, mode(JitMode::Off));
    let (out, r) = run_with(&long, mode(JitMode::On));
    assert!(r.result.is_ok(), "{:?}", r.result);
    assert_eq!(out, plain);
    assert!(r.jit.compiled >= 1, "nothing compiled in the background");
}

/// An overflow, a type error and an int meeting a float inside compiled loops: the
/// interpreter's errors, messages and positions.
#[test]
fn errors_in_compiled_code_are_the_interpreters() {
    for src in [
        "let x = 1;\nfor i in 0..100 {\n    x = x * 3;\n}\n",
        "let s = 0;\nfor i in 0..100 {\n    if i == 60 { s = s + \"a\"; } else { s = s + i; }\n}\n",
        "let i = 0;\nwhile i < 9223372036854775800 {\n    i = i + 1000000000000000000;\n}\n",
        "let s = 0;\nfor i in 0..100 {\n    if i == 70 { s = s + 0.5; } else { s = s + i; }\n}\nprintln(s);\nlet t = [1][5];\n",
    ] {
        let (out_i, ri) = run_with(src, mode(JitMode::Off));
        let (out_c, rc) = run_with(src, mode(JitMode::Always));
        assert!(ri.result.is_err(), "{src}");
        assert_eq!(out_c, out_i, "{src}");
        assert_eq!(rc.result, ri.result, "{src}");
        assert!(rc.jit.compiled >= 1, "{src}");
    }
}

/// Fields and elements read and written in place by compiled code (an inline cache per
/// field instruction): one instruction meeting maps of different layouts, a field
/// removed and added again, a map growing, a key made at run time, values of every kind,
/// a missing field's error. The interpreter's output and error, whenever it compiles.
#[test]
fn fields_read_and_written_in_place_are_the_interpreters() {
    const FIELDS: &str = r#"
fn area(s) { s.w * s.h }
fn grow(s, k) { s.w = s.w + k; s.h = s.h * 2; s.tag = "grown"; }
fn show(s) { "${s.w} ${s.h} ${s.tag}" }
let shapes = [
    {w: 1, h: 2, tag: "a"},
    {tag: "b", h: 3, w: 4},
    {h: 5.5, extra: nil, w: 2, tag: true},
];
let total = 0;
for r in 0..400 {
    for i in 0..len(shapes) {
        let s = shapes[i];
        total = total + area(s) % 1000;
        if r % 50 == 0 { grow(s, r); }
    }
    if r == 100 { remove(shapes[0], "w"); shapes[0].w = 9; }
    if r == 150 {
        let big = {w: 1, h: 1, tag: "big"};
        for k in 0..40 { big["f" + "${k}"] = k; }
        shapes[1] = big;
    }
    if r == 200 { shapes[2]["w" + ""] = 3; }
    if r == 250 {
        let m = shapes[2];
        m.tag = [1, 2];
        m.tag = {x: 1};
        m.tag = fn(x) { x };
        m.tag = nil;
        m.tag = 2.5;
        m.tag = "back";
    }
}
println(total);
for i in 0..len(shapes) { println(show(shapes[i])); }
let grid = [[1, 2], {k: "v"}, "s", nil, 1.5, true];
for r in 0..200 {
    let j = r % len(grid);
    let x = grid[j];
    grid[j] = x;
    if r == 120 { grid[0] = {k: "w"}; }
}
println(grid[0].k, grid[1].k, grid[2], grid[3], grid[4], grid[5]);
let last = {a: 1};
for r in 0..100 { last.a = last.a + 1; }
println(last.a, last.b);
"#;
    let (plain, r) = run_with(FIELDS, mode(JitMode::Off));
    assert!(r.result.is_err(), "{:?}", r.result);
    for jit in [JitMode::Always, JitMode::On] {
        let (out, rc) = run_with(FIELDS, mode(jit));
        assert_eq!(out, plain, "{jit:?}");
        assert_eq!(rc.result, r.result, "{jit:?}");
        if jit == JitMode::Always {
            assert!(rc.jit.compiled >= 3, "only {} functions compiled", rc.jit.compiled);
        }
    }
}

/// An image taken while compiled code runs holds a bytecode state: restored into a VM
/// with no JIT it finishes with the same output.
#[test]
fn an_image_taken_in_a_compiled_loop_finishes_without_the_jit() {
    let program = compile_text("t.tern", LOOPS).unwrap();
    let mut fast = new_vm(VmConfig { jit: JitMode::Always, ..VmConfig::default() });
    load(&mut fast, &program).unwrap();
    let mut proc = Process::new(1, program.main, &fast).unwrap();
    let mut host = BufferHost::new();
    for _ in 0..20 {
        assert_eq!(run(&mut proc, &fast, &mut host, 4000), Outcome::Yielded);
    }
    assert!(fast.jit.as_ref().unwrap().stats().compiled >= 1, "nothing was compiled");
    let image = snapshot(&proc);
    let mut slow = new_vm(VmConfig { jit: JitMode::Off, ..VmConfig::default() });
    load(&mut slow, &program).unwrap();
    assert!(slow.jit.is_none());
    let mut moved = restore(&image, &slow).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match run(&mut moved, &slow, &mut host, 100_000) {
            Outcome::Yielded => assert!(Instant::now() < deadline, "did not finish"),
            Outcome::Finished(_) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(host.out, "11666649999 1090 12497500\n");
}

/// Compiled code's room on the frame stack grows with the calls it makes: a process that
/// ran a compiled loop at the top level keeps a frame stack of a few frames, not one
/// that every process entering compiled code would carry.
#[test]
fn compiled_code_leaves_a_shallow_frame_stack_small() {
    let program = compile_text("t.tern", "let s = 0;\nfor i in 0..200000 { s = s + i % 7; }\nprintln(s);\n").unwrap();
    let mut vm = new_vm(VmConfig { jit: JitMode::Always, ..VmConfig::default() });
    load(&mut vm, &program).unwrap();
    let mut proc = Process::new(1, program.main, &vm).unwrap();
    let mut host = BufferHost::new();
    assert_eq!(run(&mut proc, &vm, &mut host, 4000), Outcome::Yielded);
    assert!(vm.jit.as_ref().unwrap().stats().compiled >= 1, "nothing was compiled");
    assert_eq!(proc.frames.len(), 1);
    assert!(proc.frames.capacity() <= 8, "a frame stack of {} frames for one", proc.frames.capacity());
}

/// A compiled endless loop takes fuel at its back edge: with one worker, the main
/// process still runs, finishes, and the program ends (the loop's process is stopped).
#[test]
fn a_compiled_endless_loop_is_preempted() {
    let src = "spawn(fn() { let i = 0; while true { i = i + 1; } });\nsleep(100);\nprintln(\"main ran\");\n";
    let t = Instant::now();
    let (out, r) = run_with(src, mode(JitMode::Always));
    assert!(r.result.is_ok(), "{:?}", r.result);
    assert_eq!(out, "main ran\n");
    assert!(r.jit.compiled >= 1);
    assert!(t.elapsed() < Duration::from_secs(20));
}

/// `n` functions of different code, each a loop, the later ones calling the one before
/// (a direct call between compiled functions, through the callee's slot).
fn many_functions(n: usize) -> String {
    let mut src = String::new();
    for i in 0..n {
        let call = if i % 3 == 2 { format!(" + f{}(k % 7)", i - 1) } else { String::new() };
        src += &format!(
            "fn f{i}(k) {{\n    let s = {i};\n    for j in 0..k {{\n        if j % {m} == 0 {{ s = s + j * {a}; }} else {{ s = s - {i}; }}\n    }}\n    s{call}\n}}\n",
            m = i % 4 + 2,
            a = i + 1,
        );
    }
    src
}

fn total_functions(src: &str) -> usize {
    compile_text("t.tern", src).unwrap().modules.iter().map(|m| m.functions.len()).sum()
}

/// A code cache far too small for the program: generations are evicted over and over,
/// the evicted functions run interpreted and are compiled again, and the results are the
/// interpreter's.
#[test]
fn a_small_code_cache_evicts_and_compiles_again() {
    let n = 16;
    let mut src = many_functions(n);
    src += "let total = 0;\nfor round in 0..30 {\n";
    for i in 0..n {
        src += &format!("    total = total + f{i}(round + {i});\n");
    }
    src += "}\nprintln(total);\n";
    let limit = 24 << 10;
    let (plain, r) = run_with(&src, mode(JitMode::Off));
    assert!(r.result.is_ok(), "{:?}", r.result);
    // Compiled at the first call, before it runs: the same compilations and evictions
    // every time (`JitMode::On`, in the background, in the test after next).
    let (out, r) = run_with(&src, VmConfig { jit_cache_bytes: limit, ..mode(JitMode::Always) });
    assert!(r.result.is_ok(), "{:?}", r.result);
    assert_eq!(out, plain);
    let s = &r.jit;
    eprintln!("{:?}", JitStats { compile_us: vec![], ..s.clone() });
    assert!(s.flushes > 0 && s.evicted > 0, "nothing evicted: {s:?}");
    assert!(s.code_bytes <= limit, "{} bytes of code live, over the limit {limit}", s.code_bytes);
    assert!(s.compiled > total_functions(&src) as u64, "no function compiled again: {s:?}");
}

/// A function whose code alone is more than half the cache stays interpreted (once, not
/// compiled again and again), and the program's results do not change.
#[test]
fn a_function_too_large_for_the_cache_stays_interpreted() {
    let src = format!("{}let t = 0;\nfor r in 0..50 {{ t = t + f2(r); }}\nprintln(t);\n", many_functions(3));
    let (plain, _) = run_with(&src, mode(JitMode::Off));
    let config = VmConfig { jit_cache_bytes: 512, ..mode(JitMode::Always) };
    let (out, r) = run_with(&src, config);
    assert!(r.result.is_ok(), "{:?}", r.result);
    assert_eq!(out, plain);
    // Each function that ran (the top level runs once, uncalled) given up on once.
    assert_eq!((r.jit.compiled, r.jit.failed, r.jit.flushes), (0, 3, 0), "{:?}", r.jit);
}

/// Evictions all the time (a cache of a few functions) while processes on several
/// workers run compiled code and call between compiled functions: every process's result
/// is the interpreter's, nothing crashes, and evicted code is freed.
#[test]
fn evictions_while_compiled_code_runs_on_other_workers() {
    let n = 24;
    let procs = 8;
    let program = |rounds: usize| {
        let mut src = many_functions(n);
        src += "fn work(id, rounds, parent) {\n    let s = 0;\n    for r in 0..rounds {\n";
        for i in 0..n {
            src += &format!("        s = s + f{i}((r + id * {i}) % 40);\n");
        }
        src += "    }\n    send(parent, [id, s]);\n}\n";
        src += &format!(
            "for id in 0..{procs} {{ spawn(work, id, {rounds} + id, self()); }}\nlet got = {{}};\nfor k in 0..{procs} {{ let m = recv(); got[m[0]] = m[1]; }}\nfor id in 0..{procs} {{ println(got[id]); }}\n"
        );
        compile_text("t.tern", &src).unwrap()
    };
    let run = |rounds: usize, config: VmConfig| {
        let mut host = BufferHost::new();
        let report = run_program(&program(rounds), &RunOptions { config, workers: 4, ..RunOptions::default() }, &mut host).unwrap();
        assert!(report.result.is_ok(), "{:?}", report.result);
        (host.out, report)
    };
    let limit = 10 << 10;
    let mut freed = 0;
    // In the background (the compiler thread evicts while the workers run), and at every
    // call (the workers evict, one another's code too; a few rounds: with a cache this
    // small, nearly every call compiles).
    for (jit, threshold, rounds) in [(JitMode::On, 2, 6000), (JitMode::On, 20, 6000), (JitMode::Always, 1, 4)] {
        let (plain, _) = run(rounds, mode(JitMode::Off));
        assert_eq!(plain.lines().count(), procs);
        let (out, r) = run(rounds, VmConfig { jit_cache_bytes: limit, jit_threshold: threshold, ..mode(jit) });
        let s = &r.jit;
        eprintln!("{jit:?} {threshold}: {:?}", JitStats { compile_us: vec![], ..s.clone() });
        assert_eq!(out, plain, "{jit:?} {threshold}");
        assert!(s.flushes >= 3, "{jit:?} {threshold}: too few evictions: {s:?}");
        assert!(s.code_bytes <= limit, "{jit:?} {threshold}: {s:?}");
        freed += s.freed;
    }
    // Freed once every worker that could be running it has unpinned: some, by now.
    assert!(freed >= 1, "no evicted generation was ever freed");
}
