//! Absent heap pages (the ground transfer on reference stands on): a process whose
//! pages are elsewhere runs until it touches one, waits — only it — while the node's
//! page source fetches it, and goes on; its output is the same as if every page had
//! been there. Pages can also arrive while it runs (a background push), and a process
//! whose pages can no longer come ends with the reason.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_net::runner::{compile_text, new_vm};
use tern_vm::interp::{run, Outcome};
use tern_vm::node::{Console, Node, PageSource, Pid};
use tern_vm::process::Process;
use tern_vm::runtime::{Host, Vm};
use tern_vm::VmConfig;

/// Builds a few thousand strings on a small-paged heap, then reads them all back.
const PROGRAM: &str = r#"
let words = [];
for i in 0..3000 {
    push(words, "word number ${i} " + repeat("x", i % 37));
}
let total = 0;
for w in words {
    total += len(w);
}
println("built ${len(words)} words");
let m = {};
for i in 0..500 {
    m["k${i}"] = words[i * 5];
}
let again = 0;
for k in keys(m) {
    again += len(m[k]);
}
println("total ${total}, again ${again}");
"#;

#[derive(Default)]
struct Out(Mutex<String>);

impl Console for Out {
    fn write(&self, _: Pid, text: &str) {
        self.0.lock().push_str(text);
    }
    fn failed(&self, _: Pid, text: &str) {
        self.0.lock().push_str(&format!("FAILED: {text}\n"));
    }
}

struct Quiet(String);

impl Host for Quiet {
    fn console_write(&mut self, text: &str) {
        self.0.push_str(text);
    }
    fn mono_us(&self) -> u64 {
        0
    }
    fn wall_ms(&self) -> u64 {
        0
    }
}

/// Like [`PROGRAM`], with a stretch between building the words and reading them that
/// touches no heap page: a loop on integers, then a loop that polls the inbox (a system
/// call per turn, so it runs through many safepoints) until a message says go on.
const GATED: &str = r#"
let words = [];
for i in 0..3000 {
    push(words, "word number ${i} " + repeat("x", i % 37));
}
println("built ${len(words)} words");
let k = 0;
while k < 100000 {
    k += 1;
}
let polls = 0;
while is_timeout(recv(0)) {
    polls += 1;
}
let total = 0;
for w in words {
    total += len(w);
}
let m = {};
for i in 0..500 {
    m["k${i}"] = words[i * 5];
}
let again = 0;
for k in keys(m) {
    again += len(m[k]);
}
println("total ${total}, again ${again}");
"#;

fn vm() -> Arc<Vm> {
    let mut config = VmConfig::default();
    config.heap.page_size_bytes = 1024;
    let vm = new_vm(config);
    for src in [PROGRAM, GATED] {
        let p = compile_text("faults.tern", src).unwrap();
        for m in &p.modules {
            vm.load(m.clone()).unwrap();
        }
    }
    Arc::new(vm)
}

fn main_hash() -> tern_vm::bytecode::ModuleHash {
    compile_text("faults.tern", PROGRAM).unwrap().main
}

fn gated_hash() -> tern_vm::bytecode::ModuleHash {
    compile_text("faults.tern", GATED).unwrap().main
}

/// The program run to the end in one go: what its output must be.
fn reference(vm: &Vm) -> String {
    let mut p = Process::new(1, main_hash(), vm).unwrap();
    let mut host = Quiet(String::new());
    loop {
        match run(&mut p, vm, &mut host, 1_000_000) {
            Outcome::Yielded => continue,
            Outcome::Finished(_) => return host.0,
            other => panic!("{other:?}"),
        }
    }
}

/// A process that has run part of the way (its heap well filled), with the output so
/// far; and a copy with every non-zero page made absent.
fn half_run(vm: &Vm, pid: Pid) -> (Process, Process, String) {
    half_run_of(vm, pid, main_hash())
}

fn half_run_of(vm: &Vm, pid: Pid, main: tern_vm::bytecode::ModuleHash) -> (Process, Process, String) {
    let mut p = Process::new(pid, main, vm).unwrap();
    let mut host = Quiet(String::new());
    // Up to the point where every word is built and the rest is still to run.
    while !host.0.contains("built") {
        match run(&mut p, vm, &mut host, 200) {
            Outcome::Yielded => {}
            other => panic!("the program should still be running: {other:?}"),
        }
    }
    let mut away = p.clone();
    let mut absent = 0;
    for i in 0..away.heap.page_count() as u32 {
        if away.heap.page(i).iter().any(|&w| w != 0) {
            away.heap.mark_absent(i);
            absent += 1;
        }
    }
    assert!(absent > 20, "the heap should span many pages, has {absent} non-zero");
    (p, away, host.0)
}

/// Serves page requests from a copy of the process (as the source node would).
struct Requests(crossbeam_channel::Sender<(Pid, u32, u32)>);

impl PageSource for Requests {
    fn request(&self, pid: Pid, first: u32, count: u32) {
        let _ = self.0.send((pid, first, count));
    }
}

fn pages_of(p: &Process, first: u32, count: u32) -> Vec<(u32, Vec<u64>)> {
    (first..first.saturating_add(count).min(p.heap.page_count() as u32)).map(|i| (i, p.heap.page(i).to_vec())).collect()
}

#[test]
fn a_process_with_absent_pages_faults_waits_and_gives_the_same_output() {
    let vm = vm();
    let expected = reference(&vm);
    let out = Arc::new(Out::default());
    let node = Node::local(vm.clone(), out.clone(), 2);
    let (tx, rx) = crossbeam_channel::unbounded();
    node.set_page_source(Arc::new(Requests(tx)), 2);
    let pid = node.new_pid();
    let (original, away, before) = half_run(&vm, pid);
    node.watch(pid);
    node.spawn(away);
    let mut served = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(e) = node.exit_of(pid) {
            break e;
        }
        assert!(Instant::now() < deadline, "it did not end within 60 s ({served} requests served):\n{}", out.0.lock());
        if let Ok((p, first, count)) = rx.recv_timeout(Duration::from_millis(20)) {
            assert_eq!(p, pid);
            assert_eq!(count, 3, "the page touched and 2 more (prefetch)");
            served += 1;
            // The answer takes a moment, as over a network.
            std::thread::sleep(Duration::from_micros(200));
            node.supply_pages(pid, pages_of(&original, first, count));
        }
        assert!(served < 100_000, "too many requests");
    };
    assert!(exit.reason.is_normal(), "{:?}\n{}", exit.reason, out.0.lock());
    assert_eq!(format!("{before}{}", out.0.lock()), expected);
    let (faults, waited) = node.page_faults();
    assert!(faults > 5 && faults == served, "faults {faults}, requests served {served}");
    eprintln!("{faults} page faults, {waited} µs waited in all");
    node.shutdown();
}

/// Every page is pushed while the process runs a stretch that touches none (it polls its
/// inbox, passing safepoints), before it reads any of them: they must be installed at
/// its safepoints, so that it then reads them all without a single fault or request.
/// (A fault would still fetch a page pushed and ignored, so the output alone proves
/// nothing: the faults and the present bits do.)
#[test]
fn pages_pushed_while_it_runs_are_installed_at_its_safepoints() {
    let vm = vm();
    // It prints what PROGRAM prints (its gate is a system call, which `reference` cannot run).
    let expected = reference(&vm);
    let out = Arc::new(Out::default());
    let node = Node::local(vm.clone(), out.clone(), 2);
    let (tx, rx) = crossbeam_channel::unbounded();
    node.set_page_source(Arc::new(Requests(tx)), 0);
    let pid = node.new_pid();
    let (original, away, before) = half_run_of(&vm, pid, gated_hash());
    let n = original.heap.page_count() as u32;
    let absent_at_start = (0..n).filter(|&i| !away.heap.is_present(i)).count();
    node.watch(pid);
    node.spawn(away);
    let absent = |node: &Node| {
        node.at_safepoint(pid, move |p| (0..n).filter(|&i| !p.heap.is_present(i)).count(), Duration::from_secs(10))
            .expect("it is here, running")
    };
    // It runs (through its safepoints) with every page away.
    assert_eq!(absent(&node), absent_at_start);
    // Push every page, a few at a time, while it runs.
    for first in (0..n).step_by(4) {
        node.supply_pages(pid, pages_of(&original, first, 4));
        std::thread::sleep(Duration::from_micros(100));
    }
    // At its next safepoint (and the job runs at one, after pages are installed) they
    // are all there, and it never had to ask for one.
    assert_eq!(absent(&node), 0, "pages pushed while it ran were not installed at its safepoints");
    assert!(rx.try_recv().is_err(), "a page was requested although every page had been pushed");
    assert!(node.exit_of(pid).is_none(), "it waits for the message that lets it read its pages");
    assert!(node.send_to(pid, tern_vm::message::Message::scalar(tern_vm::message::Val::Int(1))).expect("sent"));
    let exit = node.wait_exit(pid, Duration::from_secs(30)).unwrap_or_else(|| panic!("it did not end:\n{}", out.0.lock()));
    assert!(exit.reason.is_normal(), "{:?}\n{}", exit.reason, out.0.lock());
    assert_eq!(format!("{before}{}", out.0.lock()), expected);
    assert_eq!(node.page_faults().0, 0, "page faults after every page was pushed");
    assert!(rx.try_recv().is_err(), "a page was requested although every page had been pushed");
    node.shutdown();
}

#[test]
fn a_process_whose_pages_cannot_come_ends_with_the_reason() {
    let vm = vm();
    let out = Arc::new(Out::default());
    let node = Node::local(vm.clone(), out.clone(), 1);
    let (tx, rx) = crossbeam_channel::unbounded();
    node.set_page_source(Arc::new(Requests(tx)), 1);
    let pid = node.new_pid();
    let (_, away, _) = half_run(&vm, pid);
    node.watch(pid);
    node.spawn(away);
    let (p, _, _) = rx.recv_timeout(Duration::from_secs(10)).expect("a page request");
    assert_eq!(p, pid);
    node.pages_lost(pid, "its pages were on node b, which went down");
    let exit = node.wait_exit(pid, Duration::from_secs(10)).expect("it ends");
    assert_eq!(exit.reason.text(), "its pages were on node b, which went down");
    node.shutdown();
}

#[test]
fn without_a_page_source_an_absent_page_is_a_clear_error() {
    let vm = vm();
    let out = Arc::new(Out::default());
    let node = Node::local(vm.clone(), out.clone(), 1);
    let pid = node.new_pid();
    let (_, away, _) = half_run(&vm, pid);
    node.watch(pid);
    node.spawn(away);
    let exit = node.wait_exit(pid, Duration::from_secs(10)).expect("it ends");
    assert!(exit.reason.text().contains("is absent and this node has no source for it"), "{:?}", exit.reason);
    node.shutdown();
}

#[test]
fn a_fault_blocks_only_the_process_that_took_it() {
    let vm = vm();
    let counter = compile_text("counter.tern", "let s = 0;\nfor i in 0..200000 { s += i; }\nprintln(\"counted ${s}\");\n").unwrap();
    for m in &counter.modules {
        vm.load(m.clone()).unwrap();
    }
    let out = Arc::new(Out::default());
    let node = Node::local(vm.clone(), out.clone(), 1);
    let (tx, rx) = crossbeam_channel::unbounded();
    node.set_page_source(Arc::new(Requests(tx)), 1);
    let pid = node.new_pid();
    let (original, away, _) = half_run(&vm, pid);
    node.watch(pid);
    node.spawn(away);
    // Its first request stays unanswered while another process runs to its end on the
    // node's only worker.
    let (_, first, count) = rx.recv_timeout(Duration::from_secs(10)).expect("a page request");
    let other = node.spawn_main(counter.main).unwrap();
    let done = node.wait_exit(other, Duration::from_secs(20)).expect("the other process ends");
    assert!(done.reason.is_normal());
    assert!(node.exit_of(pid).is_none(), "the faulting process cannot have ended without its page");
    node.supply_pages(pid, pages_of(&original, first, count));
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(e) = node.exit_of(pid) {
            break e;
        }
        assert!(Instant::now() < deadline, "it did not end within 60 s:\n{}", out.0.lock());
        if let Ok((_, first, count)) = rx.recv_timeout(Duration::from_millis(20)) {
            node.supply_pages(pid, pages_of(&original, first, count));
        }
    };
    assert!(exit.reason.is_normal(), "{:?}", exit.reason);
    assert!(out.0.lock().contains("counted 19999900000"), "{}", out.0.lock());
    node.shutdown();
}
