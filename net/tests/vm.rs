//! The VM seen through whole programs: page faults, call depth, determinism, and
//! bytecode that was tampered with.

use tern_net::runner::{compile_text, load, new_vm, run_program, BufferHost, RunOptions};
use tern_vm::bytecode::Module;
use tern_vm::interp::BlockReason;
use tern_vm::snapshot::{restore, snapshot};
use tern_vm::{run, Outcome, Process, Vm, VmConfig};

const PROGRAM: &str = r#"
let data = [];
for i in 0..3000 { push(data, "item ${i}"); }
let m = {};
for i in 0..500 { m["k${i}"] = i * i; }
let total = 0;
for round in 0..5 {
    for s in data { total += len(s); }
    for k, v in m { total += v % 7; }
    println("round ${round}: ${total}");
}
"#;

/// A second, table-driven statement of what the verifier guarantees the interpreter:
/// every register an instruction touches is below `nregs`, and every jump lands inside
/// the function.
fn registers_and_jumps_in_bounds(m: &Module) -> bool {
    use tern_vm::bytecode::Op;
    m.functions.iter().all(|f| {
        let nregs = i64::from(f.nregs);
        let len = f.code.len() as i64;
        f.code.iter().enumerate().all(|(pc, op)| {
            let ops = op.operands();
            let get = |n: &str| ops.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
            let regs_ok = ops.iter().filter(|(k, _)| matches!(*k, "a" | "b" | "c")).all(|(_, v)| *v < nregs);
            let jump_ok = get("off").is_none_or(|off| (0..len).contains(&(pc as i64 + 1 + off)));
            let top = match op {
                Op::Call { a, n } => i64::from(*a) + i64::from(*n),
                Op::NewArray { b, n, .. } | Op::Concat { b, n, .. } => i64::from(*b) + i64::from(*n) - 1,
                Op::NewMap { b, n, .. } => i64::from(*b) + 2 * i64::from(*n) - 1,
                Op::ForPrep { a, .. } | Op::ForLoop { a, .. } => i64::from(*a) + 2,
                Op::IterNext { a, n, .. } => i64::from(*a) + 1 + i64::from(*n),
                Op::Closure { f: target, .. } => m
                    .functions
                    .get(*target as usize)
                    .map_or(0, |g| g.upvals.iter().filter(|u| u.from_local).map(|u| i64::from(u.index)).max().unwrap_or(0)),
                _ => 0,
            };
            regs_ok && jump_ok && top < nregs
        })
    })
}

/// A small deterministic generator for the mutation tests.
fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// `src` compiled and loaded into a VM of the default configuration, and its main
/// process, not started.
fn started(file: &str, src: &str) -> (Vm, Process) {
    let program = compile_text(file, src).unwrap();
    let mut vm = new_vm(VmConfig::default());
    load(&mut vm, &program).unwrap();
    let proc = Process::new(1, program.main, &vm).unwrap();
    (vm, proc)
}

fn plain_output(src: &str) -> String {
    let program = compile_text("t.tern", src).unwrap();
    let mut host = BufferHost::new();
    let report = run_program(&program, &RunOptions::default(), &mut host).unwrap();
    assert!(report.result.is_ok(), "{:?}", report.result);
    host.out
}

/// A process restored with every heap page absent blocks on page faults, one page at a
/// time, and resumes exactly where it was once each page is supplied.
#[test]
fn absent_pages_fault_and_the_process_resumes_where_it_was() {
    let expected = plain_output(PROGRAM);
    let (vm, mut proc) = started("t.tern", PROGRAM);
    let mut host = BufferHost::new();
    // Run part of the way, then move the process, leaving every page behind.
    for _ in 0..5 {
        assert_eq!(run(&mut proc, &vm, &mut host, 500), Outcome::Yielded);
    }
    let source_heap = proc.heap.clone();
    let mut moved = restore(&snapshot(&proc), &vm).unwrap();
    drop(proc);
    for p in 0..moved.heap.page_count() as u32 {
        moved.heap.mark_absent(p);
    }
    let mut faults = Vec::new();
    loop {
        match run(&mut moved, &vm, &mut host, 1000) {
            Outcome::Yielded => {}
            Outcome::Blocked(BlockReason::PageFault(p)) => {
                assert!(!faults.contains(&p), "page {p} faulted twice");
                faults.push(p);
                moved.heap.supply_page(p, source_heap.page(p)).unwrap();
            }
            Outcome::Finished(_) => break,
            Outcome::Failed(e) => panic!("{e}"),
            Outcome::Sys => panic!("no system calls here"),
        }
    }
    assert_eq!(host.out, expected);
    assert!(faults.len() > 5, "only {} faults", faults.len());
}

#[test]
fn unbounded_recursion_is_a_tern_error_at_the_configured_depth() {
    let src = "fn down(n) { 1 + down(n + 1) }\ndown(0);\n";
    let program = compile_text("deep.tern", src).unwrap();
    for max_frames in [100, 5000, 200_000] {
        let opts = RunOptions { config: VmConfig { max_frames, ..VmConfig::default() }, ..RunOptions::default() };
        let report = run_program(&program, &opts, &mut BufferHost::new()).unwrap();
        let err = report.result.unwrap_err();
        assert!(err.message.contains(&format!("stack overflow: more than {max_frames} nested calls")), "{err}");
        assert_eq!(err.trace.len(), max_frames as usize);
        assert_eq!(err.trace[0].line, 1);
        assert_eq!(err.trace.last().unwrap().line, 2);
    }
}

#[test]
fn compilation_is_deterministic() {
    let a = compile_text("t.tern", PROGRAM).unwrap();
    let b = compile_text("t.tern", PROGRAM).unwrap();
    assert_eq!(a.main, b.main);
    let bytes = |c: &tern_compiler::Compiled| c.modules.iter().map(Module::encode).collect::<Vec<_>>();
    assert_eq!(bytes(&a), bytes(&b));
}

/// Many small corruptions of valid modules: each is either refused by the decoder or
/// the verifier, or runs (to an end or an error) without a panic.
#[test]
fn mutated_modules_are_rejected_or_run_safely() {
    let sources = [
        PROGRAM,
        "fn f(a, b) { let c = fn(x) { x + a }; c(b) }\nlet t = try { f(1, 2) } catch e { e };\nfor k, v in ({a: 1}) { println(k, v, t); }\n",
        "let s = \"x\";\nlet i = 0;\nwhile i < 50 { s = \"${s}${i}\"; i += 1; if i % 7 == 0 { continue; } }\nprintln(len(s));\n",
    ];
    let mut rnd = xorshift(0x1234_5678_9abc_def0);
    let (mut refused, mut ran) = (0, 0);
    for src in sources {
        let program = compile_text("t.tern", src).unwrap();
        let main = program.modules.last().unwrap().encode();
        for _ in 0..1500 {
            let mut bytes = main.clone();
            for _ in 0..1 + rnd() % 3 {
                let i = 6 + (rnd() as usize % (bytes.len() - 6));
                bytes[i] = rnd() as u8;
            }
            let Ok(module) = Module::decode(&bytes) else {
                refused += 1;
                continue;
            };
            let heap = tern_vm::heap::HeapConfig { limit_bytes: 4 << 20, gc_min_bytes: 1 << 20, ..Default::default() };
            let vm = new_vm(VmConfig { max_frames: 200, heap, ..VmConfig::default() });
            for m in &program.modules[..program.modules.len() - 1] {
                vm.load(m.clone()).unwrap();
            }
            let oracle = registers_and_jumps_in_bounds(&module);
            let Ok(hash) = vm.load(module) else {
                refused += 1;
                continue;
            };
            // The interpreter indexes registers and code unchecked, trusting the verifier:
            // an independent check that everything it accepted really is in bounds.
            assert!(oracle, "the verifier accepted a module with an out-of-range operand");
            let Ok(mut proc) = Process::new(1, hash, &vm) else {
                refused += 1;
                continue;
            };
            let mut host = BufferHost::new();
            for _ in 0..50 {
                match run(&mut proc, &vm, &mut host, 1000) {
                    Outcome::Yielded => {}
                    _ => break,
                }
            }
            ran += 1;
        }
    }
    assert!(refused > 100 && ran > 100, "refused {refused}, ran {ran}");
}

/// Example programs with lines dropped, duplicated or swapped: each either fails to
/// compile with diagnostics or compiles and runs (briefly) — never a panic.
#[test]
fn mangled_sources_compile_or_fail_cleanly() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut files: Vec<_> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "tern")).collect();
    files.sort();
    let mut rnd = xorshift(0x9e37_79b9_7f4a_7c15);
    let (mut compiled, mut rejected) = (0, 0);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for _ in 0..25 {
            let mut l = lines.clone();
            for _ in 0..1 + rnd() % 4 {
                if l.is_empty() {
                    break;
                }
                let i = rnd() as usize % l.len();
                match rnd() % 3 {
                    0 => {
                        l.remove(i);
                    }
                    1 => l.insert(i, lines[rnd() as usize % lines.len()]),
                    _ => {
                        let j = rnd() as usize % l.len();
                        l.swap(i, j);
                    }
                }
            }
            let src = l.join("\n");
            let Ok(program) =
                tern_compiler::compile_source("m.tern", &src, None, &tern_stdlib::natives().names(), &tern_stdlib::module_source)
            else {
                rejected += 1;
                continue;
            };
            compiled += 1;
            let heap = tern_vm::heap::HeapConfig { limit_bytes: 8 << 20, gc_min_bytes: 1 << 20, ..Default::default() };
            let mut vm = new_vm(VmConfig { max_frames: 500, heap, ..VmConfig::default() });
            load(&mut vm, &program).unwrap();
            let mut proc = Process::new(1, program.main, &vm).unwrap();
            let mut host = BufferHost::new();
            for _ in 0..20 {
                if run(&mut proc, &vm, &mut host, 2000) != Outcome::Yielded {
                    break;
                }
            }
        }
    }
    assert!(compiled > 50 && rejected > 50, "compiled {compiled}, rejected {rejected}");
}

/// Closures (with their captured variables, shared between two closures) and plain
/// functions travel by module hash: rebuilt in a process of another VM, and copied out
/// again, they give the same message.
#[test]
fn messages_carry_closures_and_functions() {
    use tern_vm::flatten::{flatten, rebuild};
    let src = "fn pair() { let n = 0; [fn() { n += 1; n }, fn() { n }] }\nlet p = pair();\nlet f = pair;\nlet data = {name: \"x\", fns: [p, f, println]};\n";
    let program = compile_text("c.tern", src).unwrap();
    let mut vm = new_vm(VmConfig::default());
    load(&mut vm, &program).unwrap();
    let mut a = Process::new(1, program.main, &vm).unwrap();
    let Outcome::Finished(exports) = run(&mut a, &vm, &mut BufferHost::new(), 100_000) else { panic!("did not finish") };
    let msg = flatten(&a, &vm, exports, 1 << 20).unwrap();
    assert!(msg.objs.iter().any(|o| matches!(o, tern_vm::message::Obj::Closure { boxes, .. } if boxes.len() == 1)));

    let mut other = new_vm(VmConfig::default());
    load(&mut other, &program).unwrap();
    let mut b = Process::new(2, program.main, &other).unwrap();
    let copy = rebuild(&msg, &mut b, &other).unwrap();
    assert_eq!(flatten(&b, &other, copy, 1 << 20).unwrap(), msg);

    // A receiver without the module is told which one is missing.
    let mut bare = new_vm(VmConfig::default());
    let lone = compile_text("lone.tern", "1;").unwrap();
    load(&mut bare, &lone).unwrap();
    let mut c = Process::new(3, lone.main, &bare).unwrap();
    assert!(matches!(rebuild(&msg, &mut c, &bare), Err(tern_vm::message::MessageError::MissingModule(_))));
}

#[test]
fn a_function_needing_too_many_registers_is_a_compile_error() {
    let body: String = (0..300).map(|i| format!("let v{i} = {i};\n")).collect();
    let src = format!("fn f() {{\n{body}println(\"${{v1}} ${{v2}}\", [v1, v2], {{a: v1}}, v1 + v2);\n}}\nf();\n");
    let err = compile_text("big.tern", &src).unwrap_err();
    assert!(err.rendered.starts_with("error: function `f` is too complex"), "{}", err.rendered);
    assert!(err.rendered.contains("\n --> big.tern:1:4\n"), "{}", err.rendered);
    assert_eq!(err.count, 1);
}

/// Tiny pages (64 bytes) put almost every object across a page boundary; snapshots
/// at short intervals must still give the plain run's output.
#[test]
fn small_pages_and_frequent_snapshots_change_nothing() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    for name in ["collections.tern", "closures.tern", "strings.tern", "life.tern"] {
        let path = std::path::Path::new(dir).join(name);
        let program = tern_net::runner::compile(&path).unwrap();
        let mut plain = BufferHost::new();
        run_program(&program, &RunOptions::default(), &mut plain).unwrap().result.unwrap();
        let heap = tern_vm::heap::HeapConfig { page_size_bytes: 64, ..Default::default() };
        let opts =
            RunOptions { config: VmConfig { heap, ..VmConfig::default() }, migrate_every: Some(23), seed: 5, ..RunOptions::default() };
        let mut moved = BufferHost::new();
        let report = run_program(&program, &opts, &mut moved).unwrap();
        report.result.unwrap();
        assert!(report.migrations > 3, "{name}: {} migrations", report.migrations);
        assert_eq!(moved.out, plain.out, "{name}");
    }
}

/// Images of a process caught mid-run, damaged byte by byte: each is refused by
/// restore, or restores into something that runs (or fails) without a panic.
#[test]
fn damaged_images_of_a_running_program_never_panic() {
    let (vm, mut proc) = started("t.tern", PROGRAM);
    let mut host = BufferHost::new();
    for _ in 0..4 {
        assert_eq!(run(&mut proc, &vm, &mut host, 700), Outcome::Yielded);
    }
    let image = tern_vm::snapshot::snapshot(&proc);
    let mut rnd = xorshift(0xdead_beef);
    let (mut refused, mut ran) = (0, 0);
    for _ in 0..1500 {
        let mut bytes = image.clone();
        for _ in 0..1 + rnd() % 3 {
            let i = rnd() as usize % bytes.len();
            bytes[i] = rnd() as u8;
        }
        if rnd().is_multiple_of(8) {
            bytes.truncate(rnd() as usize % bytes.len());
        }
        match tern_vm::snapshot::restore(&bytes, &vm) {
            Err(_) => refused += 1,
            Ok(mut p) => {
                ran += 1;
                for _ in 0..20 {
                    if run(&mut p, &vm, &mut BufferHost::new(), 2000) != Outcome::Yielded {
                        break;
                    }
                }
            }
        }
    }
    assert!(refused > 100, "refused {refused}, ran {ran}");
}

/// Ints and floats compare as their exact values (Python's and Erlang's rule): exactly
/// one of `<`, `==`, `>` holds, `<=` and `>=` agree with them, and against NaN every
/// comparison is false but `!=`. (Before, ordering rounded the int to a float and
/// equality saturated the float to an int: 2^53 + 1 was `<=` 2^53 but neither `<` nor
/// `==`, and 2^63 - 1 was both `==` and `<` 2^63.)
#[test]
fn ints_and_floats_compare_exactly() {
    let src = r#"
fn row(a, b) { "${a < b} ${a <= b} ${a == b} ${a != b} ${a >= b} ${a > b}" }
println(row(9007199254740993, 9007199254740992.0));
println(row(9223372036854775807, 9223372036854775807.0));
println(row(-9223372036854775807 - 1, -9223372036854775808.0));
println(row(1, parse_float("nan")));
println(row(9223372036854775807, parse_float("inf")));
println(row(3, 3.0));
println(row(2.5, 2));
"#;
    assert_eq!(
        plain_output(src),
        "false false false true true true\n\
         true true false true false false\n\
         false true true false true false\n\
         false false false true false false\n\
         true true false true false false\n\
         false true true false true false\n\
         false false false true true true\n"
    );
}

/// An int literal for any i64 (`-9223372036854775808` does not lex: the literal would
/// be too large before the minus).
fn int_lit(v: i64) -> String {
    if v == i64::MIN {
        "(-9223372036854775807 - 1)".to_string()
    } else {
        format!("({v})")
    }
}

/// What Tern's `<<` must give: the shifted value, or the error when the count is out of
/// range or bits are shifted out (the result would not be `x * 2^n`).
fn expected_shl(x: i64, n: i64) -> String {
    if !(0..64).contains(&n) {
        return format!("shift count {n} out of range 0..63");
    }
    match i64::try_from(i128::from(x) << n) {
        Ok(v) => v.to_string(),
        Err(_) => format!("integer overflow: cannot shift {x} left by {n}"),
    }
}

fn expected_shr(x: i64, n: i64) -> String {
    if !(0..64).contains(&n) {
        return format!("shift count {n} out of range 0..63");
    }
    (x >> n).to_string()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// `& | ^ ~ << >>` on ints agree with Rust's i64 operations; `<<` overflows exactly
    /// when the product `x * 2^n` does not fit, and shift counts outside 0..63 are errors.
    #[test]
    fn bitwise_operators_agree_with_rust_i64(
        x in proptest::prop_oneof![proptest::prelude::any::<i64>(), -300i64..300, proptest::prelude::Just(i64::MIN), proptest::prelude::Just(i64::MAX)],
        y in proptest::prelude::any::<i64>(),
        n in -3i64..70,
    ) {
        let (a, b, c) = (int_lit(x), int_lit(y), int_lit(n));
        let src = format!(
            "let x = {a}; let y = {b}; let n = {c};\n\
             println(x & y); println(x | y); println(x ^ y); println(~x);\n\
             println(try {{ x << n }} catch e {{ e }});\n\
             println(try {{ x >> n }} catch e {{ e }});\n\
             println(x & y | x ^ y == x | y);\n"
        );
        let expected = format!(
            "{}\n{}\n{}\n{}\n{}\n{}\ntrue\n",
            x & y, x | y, x ^ y, !x, expected_shl(x, n), expected_shr(x, n)
        );
        proptest::prop_assert_eq!(plain_output(&src), expected);
    }
}

/// The type errors of the bitwise operators are those of the other arithmetic
/// operators, raised at the operator's line; so are bad shift counts and `<<` overflow.
#[test]
fn bitwise_errors_are_runtime_errors_at_their_line() {
    let cases = [
        ("let f = 1.5;\nlet x = f | 1;\n", "cannot bitwise-or float and int", 2),
        ("let s = \"a\";\n\nlet x = 3 & s;\n", "cannot bitwise-and int and string", 3),
        ("let x = [1] ^ 2;\n", "cannot bitwise-xor array and int", 1),
        ("let x = {};\nx = ~x;\n", "cannot bitwise-not map", 2),
        ("let n = 64;\nlet x = 1 << n;\n", "shift count 64 out of range 0..63", 2),
        ("let n = -1;\nlet x = 1 >> n;\n", "shift count -1 out of range 0..63", 2),
        ("let x = 1;\nx <<= 63;\n", "integer overflow: cannot shift 1 left by 63", 2),
        ("let x = true;\nx >>= 1;\n", "cannot shift right bool and int", 2),
    ];
    for (src, message, line) in cases {
        let program = compile_text("bits.tern", src).unwrap();
        let report = run_program(&program, &RunOptions::default(), &mut BufferHost::new()).unwrap();
        let err = report.result.unwrap_err();
        assert_eq!(err.message, message, "{src}");
        assert_eq!(err.trace[0].line, line, "{src}");
        assert!(err.to_string().starts_with(&format!("bits.tern:{line}: error: {message}")), "{err}");
    }
}

/// `--migrate-every` hands a process's heap over between its two VM instances as it is
/// once it is 1 MiB or more (`IMAGE_WHOLE_BELOW`; a smaller one is imaged whole): what a
/// move images is then the process's state, however large its heap.
#[test]
fn moves_between_in_process_vms_hand_the_heap_over_not_a_copy() {
    let src =
        "let big = [];\nfor i in 0..300000 { push(big, i); }\nlet s = 0;\nfor k in 0..400000 { s += big[k % 300000]; }\nprintln(s);\n";
    let program = compile_text("big.tern", src).unwrap();
    let expected = plain_output(src);
    let opts = RunOptions { migrate_every: Some(20_000), seed: 3, ..RunOptions::default() };
    let mut host = BufferHost::new();
    let report = run_program(&program, &opts, &mut host).unwrap();
    report.result.unwrap();
    assert_eq!(host.out, expected);
    assert!(report.migrations > 10, "{} migrations", report.migrations);
    let whole = tern_vm::node::IMAGE_WHOLE_BELOW;
    assert!(report.heap_bytes > 8 * whole, "a heap of {} bytes", report.heap_bytes);
    assert!(
        report.image_bytes_max < whole + (16 << 10),
        "a move imaged {} bytes of a {}-byte heap",
        report.image_bytes_max,
        report.heap_bytes
    );
}

/// A heap handed over with an image the destination refuses comes back whole, so the
/// process can go on where it was.
#[test]
fn a_refused_handover_gives_the_heap_back() {
    use tern_vm::snapshot::{restore_with_heap, snapshot_state, SlotImage};
    let (vm, mut proc) = started("h.tern", PROGRAM);
    for _ in 0..5 {
        assert_eq!(run(&mut proc, &vm, &mut BufferHost::new(), 500), Outcome::Yielded);
    }
    let state = snapshot_state(&proc, &SlotImage::default());
    let before = proc.heap.clone();
    // A VM without the program's module refuses the image.
    let mut bare = new_vm(VmConfig::default());
    load(&mut bare, &compile_text("lone.tern", "1;").unwrap()).unwrap();
    let mut heap = Some(std::mem::replace(&mut proc.heap, tern_vm::heap::Heap::new(before.config())));
    assert!(restore_with_heap(&state, &bare, &mut heap).is_err());
    proc.heap = heap.expect("the heap comes back");
    assert_eq!(proc.heap.page_count(), before.page_count());
    assert!((0..before.page_count() as u32).all(|p| proc.heap.page(p) == before.page(p)));
    // Accepted, it is taken, and the process runs on to the plain run's output.
    let mut heap = Some(std::mem::replace(&mut proc.heap, tern_vm::heap::Heap::new(before.config())));
    let (mut moved, _) = restore_with_heap(&state, &vm, &mut heap).unwrap();
    assert!(heap.is_none());
    let mut host = BufferHost::new();
    let rest = loop {
        match run(&mut moved, &vm, &mut host, 10_000) {
            Outcome::Yielded => {}
            o => break o,
        }
    };
    assert!(matches!(rest, Outcome::Finished(_)), "{rest:?}");
}

/// A receive end passed along a chain of holders, each of which reads one message, hands
/// the end to the next and ends at once, while senders keep sending to the channel: no
/// message is lost. (A sender that found the holder just as it ended, after it had
/// passed the end on, dropped its message as if the channel had ended with it.)
#[test]
fn a_receive_end_handed_on_by_a_holder_that_ends_loses_nothing() {
    let src = r#"
let SENDERS = 2;
let COUNT = 3000;
fn send_all(tx, id) {
    for i in 0..COUNT { send(tx, [id, i]); }
}
fn holder(main) {
    let st = recv();
    let m = recv(st.rx, 10000);
    if is_timeout(m) {
        send(main, st);
        return nil;
    }
    if m[1] != st.next[m[0]] { st.bad += 1; }
    st.next[m[0]] = m[1] + 1;
    st.got += 1;
    if st.got == SENDERS * COUNT {
        send(main, st);
    } else {
        send(spawn(holder, main), st);
    }
}
let ch = channel();
for id in 0..SENDERS { spawn(send_all, ch[0], id); }
send(spawn(holder, self()), {rx: ch[1], next: array(SENDERS, 0), got: 0, bad: 0});
let st = recv(60000);
assert(not is_timeout(st), "the receive end did not come back");
println("read ${st.got} of ${SENDERS * COUNT}, ${st.bad} out of order");
"#;
    let program = compile_text("handoff.tern", src).unwrap();
    let mut host = BufferHost::new();
    let opts = RunOptions { workers: 2, ..RunOptions::default() };
    let report = run_program(&program, &opts, &mut host).unwrap();
    assert!(report.result.is_ok(), "{:?}", report.result);
    assert_eq!(host.out, "read 6000 of 6000, 0 out of order\n");
}
