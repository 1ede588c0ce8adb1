//! Processes on a mesh of two nodes: freezing a process in every state it can be in and
//! moving it to the other node, message order across many moves, heap consistency
//! across moves, receive-end ownership, links and monitors, bad system-call input,
//! many processes at once and bounded mailboxes.
//!
//! The test talks to its Tern processes through two side doors: the console (a process
//! announces itself with `println`, and the console hands us its pid with the text) and
//! the node's [`Files`] (a read of a file named `gate...` blocks until the test puts a
//! line into that gate; a write to a file named `slow...` blocks until the test lets it
//! through). Every wait is bounded, so a broken VM fails a test instead of hanging it.

use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_net::runner::{compile_text, load, new_vm, run_program, BufferHost, DirFiles, RunOptions};
use tern_vm::node::{Console, ExitReason, FileOp, Files, Mesh, Node, NodeConfig, Pid, ProcessExit};
use tern_vm::process::IoResult;
use tern_vm::value::name_text;
use tern_vm::{ModuleHash, VmConfig};

/// How long any single wait in these tests may take before the test fails.
const LONG: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------
// Scaffolding
// ---------------------------------------------------------------------------------

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!("tern-procs-{}-{tag}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Default)]
struct OutState {
    partial: HashMap<Pid, String>,
    lines: Vec<(Pid, String)>,
    failures: Vec<(Pid, String)>,
    /// A worker is blocked in `write` (a process printed `HOLD_WORKER`).
    held: bool,
    release: bool,
    closed: bool,
}

/// The console: every process's output, line by line, with the pid that printed it.
/// Printing `HOLD_WORKER` blocks the worker thread that runs the printing process until
/// [`Out::release_worker`] (or the end of the test).
#[derive(Default)]
struct Out {
    st: Mutex<OutState>,
    cv: Condvar,
}

impl Console for Out {
    fn write(&self, pid: Pid, text: &str) {
        let mut st = self.st.lock();
        if text.contains("HOLD_WORKER") {
            st.held = true;
            self.cv.notify_all();
            let deadline = Instant::now() + LONG;
            while !st.release && !st.closed {
                if self.cv.wait_until(&mut st, deadline).timed_out() {
                    break;
                }
            }
            st.held = false;
        }
        let buf = st.partial.entry(pid).or_default();
        buf.push_str(text);
        let mut done = Vec::new();
        while let Some(i) = buf.find('\n') {
            done.push(buf[..i].to_string());
            buf.drain(..=i);
        }
        st.lines.extend(done.into_iter().map(|l| (pid, l)));
        self.cv.notify_all();
    }
    fn failed(&self, pid: Pid, text: &str) {
        let mut st = self.st.lock();
        st.failures.push((pid, text.to_string()));
        self.cv.notify_all();
    }
}

impl Out {
    /// Waits for the first line for which `f` holds.
    #[track_caller]
    fn wait_line(&self, what: &str, f: impl Fn(&str) -> bool) -> (Pid, String) {
        let deadline = Instant::now() + LONG;
        let mut st = self.st.lock();
        loop {
            if let Some((p, l)) = st.lines.iter().find(|(_, l)| f(l)) {
                return (*p, l.clone());
            }
            if self.cv.wait_until(&mut st, deadline).timed_out() {
                panic!("no line {what} within {LONG:?}; output so far:\n{}\nfailures: {:?}", render(&st.lines), st.failures);
            }
        }
    }
    /// Waits for the first line starting with `prefix`.
    #[track_caller]
    fn wait_prefix(&self, prefix: &str) -> (Pid, String) {
        self.wait_line(&format!("starting with {prefix:?}"), |l| l.starts_with(prefix))
    }
    /// Waits until `n` lines start with `prefix`; returns them.
    #[track_caller]
    fn wait_count(&self, prefix: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + LONG;
        let mut st = self.st.lock();
        loop {
            let v: Vec<String> = st.lines.iter().filter(|(_, l)| l.starts_with(prefix)).map(|(_, l)| l.clone()).collect();
            if v.len() >= n {
                return v;
            }
            if self.cv.wait_until(&mut st, deadline).timed_out() {
                panic!("only {} of {n} lines starting with {prefix:?}; output so far:\n{}", v.len(), render(&st.lines));
            }
        }
    }
    fn has_prefix(&self, prefix: &str) -> bool {
        self.st.lock().lines.iter().any(|(_, l)| l.starts_with(prefix))
    }
    fn lines(&self) -> Vec<String> {
        self.st.lock().lines.iter().map(|(_, l)| l.clone()).collect()
    }
    fn failures(&self) -> Vec<(Pid, String)> {
        self.st.lock().failures.clone()
    }
    #[track_caller]
    fn wait_held(&self) {
        let deadline = Instant::now() + LONG;
        let mut st = self.st.lock();
        while !st.held {
            if self.cv.wait_until(&mut st, deadline).timed_out() {
                panic!("no worker was held");
            }
        }
    }
    fn release_worker(&self) {
        self.st.lock().release = true;
        self.cv.notify_all();
    }
    fn close(&self) {
        self.st.lock().closed = true;
        self.cv.notify_all();
    }
}

fn render(lines: &[(Pid, String)]) -> String {
    lines.iter().map(|(p, l)| format!("  <{}> {l}", name_text(*p))).collect::<Vec<_>>().join("\n")
}

/// A slow file operation that was carried out: `read` or `write`, on which node, at which
/// offset, with which data (read or written).
#[derive(Debug, Clone, PartialEq, Eq)]
struct OpRec {
    kind: &'static str,
    node: u16,
    name: String,
    offset: u64,
    data: String,
}

fn rec(kind: &'static str, node: u16, name: &str, offset: u64, data: &str) -> OpRec {
    OpRec { kind, node, name: name.into(), offset, data: data.into() }
}

#[derive(Default)]
struct GateState {
    queued: HashMap<String, VecDeque<String>>,
    /// Slow operations allowed through.
    tokens: usize,
    /// Slow operations waiting for a token now.
    blocked: usize,
    log: Vec<OpRec>,
    closed: bool,
}

/// The file side shared by the nodes of a test: a real directory, plus gates and slow
/// operations (reads and writes of files named `slow...` wait for a token from the test).
struct FilesShared {
    dir: DirFiles,
    st: Mutex<GateState>,
    cv: Condvar,
}

impl FilesShared {
    fn new(root: &Path) -> Arc<FilesShared> {
        Arc::new(FilesShared { dir: DirFiles { root: root.to_path_buf() }, st: Mutex::new(GateState::default()), cv: Condvar::new() })
    }
    /// The next `read` of gate `name` returns `line`.
    fn push(&self, name: &str, line: &str) {
        self.st.lock().queued.entry(name.to_string()).or_default().push_back(line.to_string());
        self.cv.notify_all();
    }
    /// Lets one slow operation through.
    fn allow(&self) {
        self.st.lock().tokens += 1;
        self.cv.notify_all();
    }
    /// Waits until `n` slow operations are blocked.
    #[track_caller]
    fn wait_blocked(&self, n: usize) {
        let deadline = Instant::now() + LONG;
        let mut st = self.st.lock();
        while st.blocked < n {
            if self.cv.wait_until(&mut st, deadline).timed_out() {
                panic!("no slow file operation blocked");
            }
        }
    }
    fn log(&self) -> Vec<OpRec> {
        self.st.lock().log.clone()
    }
    fn close(&self) {
        self.st.lock().closed = true;
        self.cv.notify_all();
    }
}

/// One node's view of [`FilesShared`].
struct TestFiles {
    node: u16,
    sh: Arc<FilesShared>,
}

impl Files for TestFiles {
    fn run(&self, op: &FileOp) -> IoResult {
        let sh = &self.sh;
        match op {
            FileOp::Open { name, .. } if name.starts_with("gate") => IoResult::Opened,
            FileOp::Read { name, offset, .. } if name.starts_with("gate") => {
                let deadline = Instant::now() + LONG;
                let mut st = sh.st.lock();
                loop {
                    if let Some(line) = st.queued.get_mut(name).and_then(VecDeque::pop_front) {
                        let data = line.into_bytes();
                        let offset = offset + data.len() as u64;
                        return IoResult::Read { data, offset };
                    }
                    if st.closed {
                        return IoResult::Failed("gate closed".into());
                    }
                    if sh.cv.wait_until(&mut st, deadline).timed_out() {
                        return IoResult::Failed("gate timed out".into());
                    }
                }
            }
            FileOp::Write { name, .. } | FileOp::Read { name, .. } if name.starts_with("slow") => {
                let deadline = Instant::now() + LONG;
                let mut st = sh.st.lock();
                st.blocked += 1;
                sh.cv.notify_all();
                while st.tokens == 0 && !st.closed {
                    if sh.cv.wait_until(&mut st, deadline).timed_out() {
                        break;
                    }
                }
                st.blocked -= 1;
                if st.tokens == 0 {
                    return IoResult::Failed("slow operation never allowed".into());
                }
                st.tokens -= 1;
                drop(st);
                let r = sh.dir.run(op);
                let rec = match (op, &r) {
                    (FileOp::Write { offset, data, .. }, _) => rec("write", self.node, name, *offset, &String::from_utf8_lossy(data)),
                    (FileOp::Read { offset, .. }, IoResult::Read { data, .. }) => {
                        rec("read", self.node, name, *offset, &String::from_utf8_lossy(data))
                    }
                    (FileOp::Read { offset, .. }, _) => rec("read", self.node, name, *offset, "<failed>"),
                    _ => unreachable!(),
                };
                sh.st.lock().log.push(rec);
                sh.cv.notify_all();
                r
            }
            _ => sh.dir.run(op),
        }
    }
}

fn node_config(id: u16, workers: usize) -> NodeConfig {
    NodeConfig { name: format!("n{id}"), id, workers, io_threads: 2, record_exits: true, ..NodeConfig::default() }
}

/// Nodes of one mesh, each with its own VM loaded with one program.
struct Fx {
    nodes: Vec<Node>,
    out: Arc<Out>,
    files: Arc<FilesShared>,
    main: ModuleHash,
    dir: TempDir,
}

impl Drop for Fx {
    fn drop(&mut self) {
        // Unblock every thread the test may have blocked, so that the nodes can stop.
        self.files.close();
        self.out.close();
    }
}

fn fixture(tag: &str, src: &str, configs: &[NodeConfig]) -> Fx {
    let program = compile_text(&format!("{tag}.tern"), src).unwrap_or_else(|e| panic!("does not compile:\n{e}\n{src}"));
    let dir = TempDir::new(tag);
    let out = Arc::new(Out::default());
    let files = FilesShared::new(dir.path());
    let mesh = Mesh::new();
    let nodes = configs
        .iter()
        .map(|c| {
            let mut vm = new_vm(VmConfig::default());
            load(&mut vm, &program).unwrap();
            Node::start(Arc::new(vm), mesh.clone(), c.clone(), out.clone(), Arc::new(TestFiles { node: c.id, sh: files.clone() }))
        })
        .collect();
    Fx { nodes, out, files, main: program.main, dir }
}

/// Two nodes, `n0` and `n1`, with two workers each.
fn fixture2(tag: &str, src: &str) -> Fx {
    fixture(tag, src, &[node_config(0, 2), node_config(1, 2)])
}

impl Fx {
    fn start(&self) -> Pid {
        self.nodes[0].spawn_main(self.main).unwrap()
    }
    /// The index of the node `pid` lives on now.
    fn where_is(&self, pid: Pid) -> Option<usize> {
        self.nodes.iter().position(|n| n.pids().contains(&pid))
    }
    /// Waits for `pid` to end, on whichever node.
    #[track_caller]
    fn exit(&self, pid: Pid) -> ProcessExit {
        let deadline = Instant::now() + LONG;
        loop {
            for n in &self.nodes {
                if let Some(e) = n.exits().into_iter().find(|e| e.pid == pid) {
                    return e;
                }
            }
            assert!(
                Instant::now() < deadline,
                "<pid {}> did not end within {LONG:?}; output:\n{}",
                name_text(pid),
                self.out.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    /// Waits for `pid` to end normally.
    #[track_caller]
    fn exit_normal(&self, pid: Pid) -> ProcessExit {
        let e = self.exit(pid);
        assert_eq!(e.reason, ExitReason::Normal, "<pid {}> ended badly; output:\n{}", name_text(pid), self.out.lines().join("\n"));
        e
    }
    /// Moves `pid` from node `from` to node `to`, checking it is gone from `from`.
    #[track_caller]
    fn move_to(&self, pid: Pid, from: usize, to: usize) {
        let r = self.nodes[from].relocate(pid, &self.nodes[to], LONG);
        assert!(r.is_ok(), "moving <pid {}> from n{from} to n{to}: {r:?}", name_text(pid));
        assert!(!self.nodes[from].pids().contains(&pid), "<pid {}> is still listed on n{from} after moving", name_text(pid));
    }
}

#[track_caller]
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs a program with `run_program` on a thread, failing (not hanging) after `LONG`.
fn run_bounded(src: &str, opts: RunOptions) -> (String, Result<(), String>) {
    let program = compile_text("test.tern", src).unwrap_or_else(|e| panic!("does not compile:\n{e}\n{src}"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut host = BufferHost::new();
        let r = run_program(&program, &opts, &mut host);
        let _ = tx.send((host.out, r.map(|rep| rep.result.map_err(|e| e.message)).map_err(|e| e.to_string())));
    });
    match rx.recv_timeout(LONG) {
        Ok((out, Ok(r))) => (out, r),
        Ok((out, Err(e))) => panic!("cannot run: {e}\noutput:\n{out}"),
        Err(_) => panic!("the program did not end within {LONG:?}:\n{src}"),
    }
}

/// Runs `src` on one node and while processes move between two; each run must end
/// without error and print `expected`.
#[track_caller]
fn check_both(src: &str, root: &Path, expected: &str) {
    for migrate_every in [None, Some(40), Some(300)] {
        let opts = RunOptions { migrate_every, seed: 7, file_root: Some(root.to_path_buf()), ..RunOptions::default() };
        let (out, r) = run_bounded(src, opts);
        assert_eq!(r, Ok(()), "migrate_every {migrate_every:?}; output:\n{out}");
        assert_eq!(out, expected, "migrate_every {migrate_every:?}");
    }
}

// ---------------------------------------------------------------------------------
// 1. Freezing a process in every state and moving it to the other node
// ---------------------------------------------------------------------------------

#[test]
fn freeze_running_process_and_move_it() {
    let fx = fixture2(
        "running",
        r#"
fn main() {
    let start = node();
    println("start", start);
    let i = 0;
    let s = 0;
    while node() == start { i += 1; s += i; }
    // Carry on computing with the state it brought along.
    let j = 0;
    while j < 100000 { j += 1; s += j; }
    println("moved", node(), i > 1000, s == i * (i + 1) / 2 + 100000 * 100001 / 2);
}
main();
"#,
    );
    let pid = fx.start();
    fx.out.wait_prefix("start n0");
    std::thread::sleep(Duration::from_millis(30));
    let n0 = &fx.nodes[0];
    assert!(n0.pids().contains(&pid) && !n0.waiting_pids().contains(&pid), "it should be running");
    n0.freeze(pid, LONG).unwrap();
    assert!(n0.is_frozen(pid));
    // A frozen process runs no more.
    let r = n0.reductions();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(n0.reductions(), r, "a frozen process kept running");
    assert!(!fx.out.has_prefix("moved"));
    fx.move_to(pid, 0, 1);
    assert_eq!(fx.where_is(pid), Some(1));
    fx.exit_normal(pid);
    assert_eq!(fx.out.wait_prefix("moved").1, "moved n1 true true");
    // The watch `spawn_main` set moved along with the process.
    assert_eq!(fx.nodes[1].wait_exit(pid, LONG).map(|e| e.reason), Some(ExitReason::Normal));
    assert_eq!(fx.nodes[0].exit_of(pid), None);
}

#[test]
fn freeze_runnable_process_and_move_it() {
    // One worker on n0: while it is held in the console, a process made runnable by its
    // file read finishing stays in the run queue.
    let fx = fixture(
        "runnable",
        r#"
fn target() {
    let g = open("gate_a", "r");
    println("A ready");
    let v = read(g);
    println("A got", v, node());
}
fn blocker() {
    let g = open("gate_b", "r");
    println("B ready");
    read(g);
    println("HOLD_WORKER");
    println("B done", node());
}
spawn(target);
spawn(blocker);
"#,
        &[node_config(0, 1), node_config(1, 2)],
    );
    fx.start();
    let (a, _) = fx.out.wait_prefix("A ready");
    fx.out.wait_prefix("B ready");
    let n0 = &fx.nodes[0];
    wait_until("A waits for its read", || n0.waiting_pids().contains(&a));
    fx.files.push("gate_b", "go");
    fx.out.wait_held();
    fx.files.push("gate_a", "x");
    wait_until("A is runnable", || !n0.waiting_pids().contains(&a) && n0.pids().contains(&a));
    assert!(!n0.is_frozen(a));
    std::thread::scope(|s| {
        let freezer = s.spawn(|| n0.freeze(a, LONG));
        std::thread::sleep(Duration::from_millis(50));
        fx.out.release_worker();
        assert_eq!(freezer.join().unwrap().map(|_| ()), Ok(()));
    });
    assert!(n0.is_frozen(a));
    assert!(!fx.out.has_prefix("A got"), "a process ran after it was frozen");
    fx.move_to(a, 0, 1);
    fx.exit_normal(a);
    assert_eq!(fx.out.wait_prefix("A got").1, "A got x n1");
    assert_eq!(fx.out.wait_prefix("B done").1, "B done n0");
}

#[test]
fn freeze_process_waiting_in_recv_and_move_it() {
    let fx = fixture2(
        "recv",
        r#"
fn target() {
    println("T ready");
    let m = recv();
    println("T got", m, node());
    let m2 = recv();
    println("T got", m2, node());
}
fn ctl(t) {
    let g = open("gate", "r");
    while true {
        let cmd = read(g);
        if cmd == "quit" { break; }
        send(t, cmd);
    }
}
let t = spawn(target);
spawn(ctl, t);
"#,
    );
    fx.start();
    let (t, _) = fx.out.wait_prefix("T ready");
    let n0 = &fx.nodes[0];
    wait_until("T waits in recv", || n0.waiting_pids().contains(&t));
    n0.freeze(t, LONG).unwrap();
    assert!(n0.is_frozen(t));
    fx.move_to(t, 0, 1);
    assert_eq!(fx.where_is(t), Some(1));
    // Back in its recv on n1.
    wait_until("T waits in recv on n1", || fx.nodes[1].waiting_pids().contains(&t));
    fx.files.push("gate", "one");
    assert_eq!(fx.out.wait_prefix("T got one").1, "T got one n1");
    fx.files.push("gate", "two");
    fx.files.push("gate", "quit");
    fx.exit_normal(t);
    assert_eq!(fx.out.lines().iter().filter(|l| l.starts_with("T got")).cloned().collect::<Vec<_>>(), ["T got one n1", "T got two n1"]);
}

#[test]
fn frozen_sleep_keeps_its_remaining_time_on_the_other_node() {
    let fx = fixture2(
        "sleep",
        r#"
let t0 = mono_ms();
println("S start");
sleep(2000);
let t1 = mono_ms();
println("S slept", t1 - t0, node());
"#,
    );
    let pid = fx.start();
    fx.out.wait_prefix("S start");
    let t0 = Instant::now();
    let n0 = &fx.nodes[0];
    wait_until("it sleeps", || n0.waiting_pids().contains(&pid));
    std::thread::sleep(Duration::from_millis(1000).saturating_sub(t0.elapsed()));
    n0.freeze(pid, LONG).unwrap();
    assert!(n0.is_frozen(pid));
    fx.move_to(pid, 0, 1);
    wait_until("it sleeps on n1", || fx.nodes[1].waiting_pids().contains(&pid));
    fx.exit_normal(pid);
    let line = fx.out.wait_prefix("S slept").1;
    let f: Vec<&str> = line.split(' ').collect();
    let ms: u64 = f[2].parse().unwrap();
    assert_eq!(f[3], "n1");
    // On its own clock (which goes on across the move without the time it was moving):
    // woken early would be ~1000 ms; restarting the full time 3000 ms or more (it had
    // slept 1000 ms when it was frozen); anything in between is lateness, however loaded
    // the machine.
    assert!((1995..3000).contains(&ms), "slept {ms} ms instead of ~2000 (line {line:?})");
}

#[test]
fn process_in_a_file_write_freezes_when_the_write_completes() {
    let fx = fixture2(
        "write",
        r#"
let f = open("slow.txt", "w");
println("W opened");
let n = write(f, "aaaa");
println("W wrote1", n, node());
let n2 = write(f, "bbbb");
println("W wrote2", n2, node());
close(f);
let r = open("slow.txt", "r");
println("W content", read(r), node());
"#,
    );
    let pid = fx.start();
    fx.out.wait_prefix("W opened");
    fx.files.wait_blocked(1);
    let n0 = &fx.nodes[0];
    assert!(n0.waiting_pids().contains(&pid), "in a file operation");
    let frozen = AtomicBool::new(false);
    std::thread::scope(|s| {
        let freezer = s.spawn(|| {
            let r = n0.freeze(pid, LONG);
            frozen.store(true, Ordering::SeqCst);
            r
        });
        // Delayed blocking: the write cannot be interrupted, so no freeze yet.
        std::thread::sleep(Duration::from_millis(200));
        assert!(!frozen.load(Ordering::SeqCst), "freeze returned while the write was still blocked");
        assert!(!n0.is_frozen(pid), "frozen in the middle of a file write");
        fx.files.allow();
        assert_eq!(freezer.join().unwrap().map(|_| ()), Ok(()));
    });
    assert!(n0.is_frozen(pid));
    assert!(!fx.out.has_prefix("W wrote1"), "it went on after the write although frozen");
    assert_eq!(fx.files.log(), [rec("write", 0, "slow.txt", 0, "aaaa")]);
    fx.move_to(pid, 0, 1);
    // The second write, and the read of the result.
    fx.files.allow();
    fx.files.allow();
    fx.exit_normal(pid);
    let lines = fx.out.lines();
    assert_eq!(lines, ["W opened", "W wrote1 4 n1", "W wrote2 4 n1", "W content aaaabbbb n1"]);
    // Each write happened exactly once, the second at the offset the first left.
    assert_eq!(
        fx.files.log(),
        [rec("write", 0, "slow.txt", 0, "aaaa"), rec("write", 1, "slow.txt", 4, "bbbb"), rec("read", 1, "slow.txt", 0, "aaaabbbb")]
    );
    assert_eq!(std::fs::read_to_string(fx.dir.path().join("slow.txt")).unwrap(), "aaaabbbb");
}

#[test]
fn messages_queued_while_frozen_arrive_in_order_after_the_move() {
    let fx = fixture2(
        "queued",
        r#"
fn target() {
    println("Q ready");
    let got = [];
    for i in 0..200 { push(got, recv()); }
    let ok = true;
    for i in 0..200 { if got[i] != i { ok = false; } }
    println("Q done", ok, node(), got[0], got[199]);
}
fn ctl(t) {
    let g = open("gate", "r");
    read(g);
    for i in 0..100 { send(t, i); }
    println("ctl sent 100");
    read(g);
    for i in 100..200 { send(t, i); }
}
let t = spawn(target);
spawn(ctl, t);
"#,
    );
    fx.start();
    let (t, _) = fx.out.wait_prefix("Q ready");
    let n0 = &fx.nodes[0];
    wait_until("T waits in recv", || n0.waiting_pids().contains(&t));
    n0.freeze(t, LONG).unwrap();
    fx.files.push("gate", "go");
    fx.out.wait_prefix("ctl sent 100");
    assert!(n0.is_frozen(t));
    assert_eq!(n0.mailbox_size(t).map(|m| m.0), Some(100), "a frozen process keeps its messages");
    fx.move_to(t, 0, 1);
    fx.files.push("gate", "go");
    fx.exit_normal(t);
    assert_eq!(fx.out.wait_prefix("Q done").1, "Q done true n1 0 199");
}

#[test]
fn channel_ends_of_both_kinds_move_with_their_holder() {
    let fx = fixture2(
        "chans",
        r#"
fn collector(parent) {
    let c = channel();
    send(parent, c[0]);
    let got = [];
    for i in 0..3 { push(got, recv(c[1], 20000)); }
    println("C got", got, node());
}
fn sender() {
    let m = recv();
    let t = m[0];
    let tx = m[1];
    let g = open("gate", "r");
    read(g);
    for i in 0..50 { send(tx, i); }
    println("S sent 50");
    read(g);
    for i in 50..100 { send(tx, i); }
    println("S sent 100");
    read(g);
    for i in 100..150 { send(tx, i); }
    send(tx, "end");
    send(t, "go");
}
fn target(ctx, s) {
    let c = channel();
    send(s, [self(), c[0]]);
    println("T ready");
    let go = recv();
    let ok = true;
    let n = 0;
    while true {
        let v = recv(c[1], 20000);
        if v == "end" { break; }
        if v != n { ok = false; }
        n += 1;
    }
    send(ctx, "from " + node());
    send(ctx, n);
    send(ctx, ok);
    println("T done", ok, n, node());
}
fn main() {
    let col = spawn(collector, self());
    let ctx = recv();
    let s = spawn(sender);
    spawn(target, ctx, s);
}
main();
"#,
    );
    fx.start();
    let (t, _) = fx.out.wait_prefix("T ready");
    let (n0, n1) = (&fx.nodes[0], &fx.nodes[1]);
    wait_until("T waits", || n0.waiting_pids().contains(&t));
    fx.files.push("gate", "go");
    fx.out.wait_prefix("S sent 50");
    assert_eq!(n0.mailbox_size(t).map(|m| m.0), Some(50));
    n0.freeze(t, LONG).unwrap();
    fx.move_to(t, 0, 1);
    wait_until("T waits on n1", || n1.waiting_pids().contains(&t));
    assert_eq!(n1.mailbox_size(t).map(|m| m.0), Some(50), "the receive end's queue moved with it");
    // Sent from n0 to the channel whose receive end is now on n1.
    fx.files.push("gate", "go");
    fx.out.wait_prefix("S sent 100");
    assert_eq!(n1.mailbox_size(t).map(|m| m.0), Some(100));
    // And back again.
    n1.freeze(t, LONG).unwrap();
    fx.move_to(t, 1, 0);
    wait_until("T waits on n0 again", || n0.waiting_pids().contains(&t));
    assert_eq!(n0.mailbox_size(t).map(|m| m.0), Some(100));
    n0.freeze(t, LONG).unwrap();
    fx.move_to(t, 0, 1);
    fx.files.push("gate", "go");
    fx.exit_normal(t);
    assert_eq!(fx.out.wait_prefix("T done").1, "T done true 150 n1");
    assert_eq!(fx.out.wait_prefix("C got").1, r#"C got ["from n1", 150, true] n0"#);
    assert!(fx.out.failures().is_empty(), "{:?}", fx.out.failures());
}

// ---------------------------------------------------------------------------------
// 2. Per-sender order while the receiver (and the senders) move back and forth
// ---------------------------------------------------------------------------------

#[test]
fn messages_keep_per_sender_order_across_200_moves() {
    const SENDERS: usize = 4;
    let fx = fixture2(
        "order",
        &format!(
            r#"
fn sender(r, id) {{
    println("S ready", id);
    let i = 0;
    while true {{
        send(r, [id, i]);
        i += 1;
        if i % 20 == 0 {{
            if not is_timeout(recv(1)) {{ break; }}
        }}
    }}
    send(r, [id, "end", i]);
}}
fn receiver(n) {{
    println("R ready");
    let next = array(n, 0);
    let ended = 0;
    let bad = 0;
    let count = 0;
    while ended < n {{
        let m = recv();
        let id = m[0];
        if m[1] == "end" {{
            if m[2] != next[id] {{ bad += 1; println("BAD end", id, next[id], m[2]); }}
            ended += 1;
        }} else {{
            if m[1] != next[id] {{ bad += 1; println("BAD seq", id, "expected", next[id], "got", m[1]); }}
            next[id] = m[1] + 1;
            count += 1;
        }}
    }}
    println("R done", bad, count, node());
}}
fn ctl(ss) {{
    let g = open("gate", "r");
    read(g);
    for s in ss {{ send(s, "stop"); }}
}}
fn main() {{
    let r = spawn(receiver, {SENDERS});
    let ss = [];
    for id in 0..{SENDERS} {{ push(ss, spawn(sender, r, id)); }}
    spawn(ctl, ss);
}}
main();
"#
        ),
    );
    fx.start();
    let (r, _) = fx.out.wait_prefix("R ready");
    fx.out.wait_count("S ready", SENDERS);
    let senders: Vec<Pid> = {
        let st = fx.out.st.lock();
        st.lines.iter().filter(|(_, l)| l.starts_with("S ready")).map(|(p, _)| *p).collect()
    };
    let mut loc: HashMap<Pid, usize> = senders.iter().map(|&p| (p, 0)).collect();
    loc.insert(r, 0);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut r_moves, mut s_moves) = (0, 0);
    for i in 0..200 {
        let from = loc[&r];
        fx.move_to(r, from, 1 - from);
        loc.insert(r, 1 - from);
        r_moves += 1;
        if i % 5 == 0 {
            let s = senders[(i / 5) % SENDERS];
            let from = loc[&s];
            fx.move_to(s, from, 1 - from);
            loc.insert(s, 1 - from);
            s_moves += 1;
        }
        std::thread::sleep(Duration::from_micros(next() % 3000));
    }
    assert_eq!(fx.where_is(r), Some(loc[&r]));
    fx.files.push("gate", "stop");
    fx.exit_normal(r);
    let done = fx.out.wait_prefix("R done").1;
    let f: Vec<&str> = done.split(' ').collect();
    let bad: Vec<String> = fx.out.lines().into_iter().filter(|l| l.starts_with("BAD")).take(20).collect();
    assert_eq!(f[2], "0", "{done}: {bad:?}");
    let count: u64 = f[3].parse().unwrap();
    assert!(count >= 1000, "only {count} messages arrived");
    assert_eq!(f[4], "n0", "after 200 moves it is back on n0");
    let moves: u64 = fx.nodes.iter().map(|n| n.moves_out().0).sum();
    assert_eq!(moves, r_moves + s_moves);
    assert!(fx.out.failures().is_empty(), "{:?}", fx.out.failures());
}

// ---------------------------------------------------------------------------------
// 3. The heap is the same after every move
// ---------------------------------------------------------------------------------

#[test]
fn generation_checker_sees_a_consistent_heap_after_every_move() {
    const MOVES: usize = 60;
    let fx = fixture2(
        "generations",
        &format!(
            r#"
fn main() {{
    let rows = 256;
    let cols = 64;
    let data = [];
    let strs = [];
    for i in 0..rows {{ push(data, array(cols, 0)); push(strs, "g0-" + to_string(i)); }}
    let gen = 0;
    let where = node();
    let checks = 0;
    println("G ready");
    while checks < {MOVES} {{
        let here = node();
        if here != where {{
            let bad = 0;
            for i in 0..rows {{
                let a = data[i];
                for j in 0..cols {{ if a[j] != gen {{ bad += 1; }} }}
                if strs[i] != "g" + to_string(gen) + "-" + to_string(i) {{ bad += 1; }}
            }}
            checks += 1;
            println("G check", checks, gen, here, bad);
            where = here;
        }}
        gen += 1;
        for i in 0..rows {{
            let a = data[i];
            for j in 0..cols {{ a[j] = gen; }}
            strs[i] = "g" + to_string(gen) + "-" + to_string(i);
        }}
    }}
    println("G end", gen);
}}
main();
"#
        ),
    );
    let pid = fx.start();
    fx.out.wait_prefix("G ready");
    let mut at = 0;
    for k in 1..=MOVES {
        // Let it get into a rewrite, then move it wherever it is.
        std::thread::sleep(Duration::from_millis(2 + (k as u64 * 7) % 11));
        fx.move_to(pid, at, 1 - at);
        at = 1 - at;
        let lines = fx.out.wait_count("G check", k);
        let f: Vec<&str> = lines[k - 1].split(' ').collect();
        assert_eq!(f[2], k.to_string(), "{lines:?}");
        assert_eq!(f[4], format!("n{at}"), "check {k} ran on the wrong node: {lines:?}");
        assert_eq!(f[5], "0", "inconsistent heap after move {k}: {}", lines[k - 1]);
    }
    let e = fx.exit_normal(pid);
    assert!(e.heap_bytes >= 50 * 4096, "the checker's heap is only {} bytes", e.heap_bytes);
    let gens: Vec<u64> =
        fx.out.lines().iter().filter(|l| l.starts_with("G check")).map(|l| l.split(' ').nth(3).unwrap().parse().unwrap()).collect();
    assert!(gens.windows(2).all(|w| w[0] <= w[1]), "generations went backwards: {gens:?}");
}

// ---------------------------------------------------------------------------------
// 4. Receive-end ownership
// ---------------------------------------------------------------------------------

#[test]
fn a_receive_end_sent_away_cannot_be_used_by_its_old_holder() {
    let dir = TempDir::new("owner");
    check_both(
        r#"
fn holder(parent) {
    let r = recv();
    send(parent, [recv(r), recv(r)]);
    send(parent, recv(r, 5000));
}
fn err(f) { try { f(); "no error" } catch e { e } }
let c = channel();
let tx = c[0];
let rx = c[1];
send(tx, 1);
send(tx, 2);
let h = spawn(holder, self());
send(h, rx);
let e = err(fn() { recv(rx, 10) });
println(contains(e, "recv: this process does not hold <receiver"), contains(e, "sent away"));
println(starts_with(err(fn() { recv(rx) }), "recv: this process does not hold"));
println(starts_with(err(fn() { select([rx], 10) }), "select: this process does not hold"));
println(starts_with(err(fn() { send(self(), rx) }), "send: this process does not hold"));
println(starts_with(err(fn() { spawn(holder, rx) }), "spawn: this process does not hold"));
println(recv());
send(tx, 3);
println(recv());
// Moving a receive end as a spawn argument moves its queue too.
let d = channel();
send(d[0], "a");
send(d[0], "b");
spawn(fn(r, parent) { send(parent, [recv(r), recv(r)]); }, d[1], self());
println(starts_with(err(fn() { recv(d[1], 0) }), "recv: this process does not hold"));
println(recv());
"#,
        dir.path(),
        "true true\ntrue\ntrue\ntrue\ntrue\n[1, 2]\n3\ntrue\n[\"a\", \"b\"]\n",
    );
}

#[test]
fn a_receive_end_moves_to_a_holder_on_the_other_node_with_its_queue() {
    let fx = fixture2(
        "owner2",
        r#"
fn holder() {
    println("H ready");
    let r = recv();
    let got = [];
    for i in 0..20 { push(got, recv(r, 5000)); }
    println("H got", got, node());
}
fn main() {
    let c = channel();
    let h = spawn(holder);
    let g = open("gate", "r");
    read(g);
    for i in 0..20 { send(c[0], i); }
    send(h, c[1]);
    let e = try { recv(c[1], 0); "no error" } catch e { e };
    println("M", starts_with(e, "recv: this process does not hold"));
}
main();
"#,
    );
    fx.start();
    let (h, _) = fx.out.wait_prefix("H ready");
    wait_until("H waits", || fx.nodes[0].waiting_pids().contains(&h));
    fx.move_to(h, 0, 1);
    fx.files.push("gate", "go");
    fx.exit_normal(h);
    assert_eq!(fx.out.wait_prefix("M").1, "M true");
    assert_eq!(fx.out.wait_prefix("H got").1, "H got [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19] n1");
}

// ---------------------------------------------------------------------------------
// 5. Links and monitors
// ---------------------------------------------------------------------------------

#[test]
fn monitors_report_every_kind_of_end() {
    let dir = TempDir::new("monitors");
    check_both(
        r#"
fn ok() { recv(); 1 }
fn bad() { recv(); let z = 0; 1 / z }
fn waiter() { recv(); }
fn byexit() { recv(); exit("bye"); }
fn down(p) {
    let d = recv(5000);
    if is_timeout(d) { return "timeout"; }
    [d.event, d.pid == p, d.reason]
}
// Each process waits for "go" until it is monitored: one that ended before
// monitor() was called would rightly be reported as noproc.
let p1 = spawn(ok); monitor(p1); send(p1, "go"); println(down(p1));
let p2 = spawn(bad); monitor(p2); send(p2, "go"); println(down(p2));
let p3 = spawn(waiter); monitor(p3); sleep(20); kill(p3); println(down(p3));
monitor(p1); println(down(p1));
let p4 = spawn(byexit); monitor(p4); send(p4, "go"); println(down(p4));
"#,
        dir.path(),
        "[\"down\", true, \"normal\"]\n[\"down\", true, \"division by zero\"]\n[\"down\", true, \"killed\"]\n\
         [\"down\", true, \"noproc\"]\n[\"down\", true, \"bye\"]\n",
    );
}

#[test]
fn links_propagate_failures_unless_exits_are_trapped() {
    let dir = TempDir::new("links");
    check_both(
        r#"
fn name(p) { let s = to_string(p); slice(s, 5, len(s) - 1) }
fn linker(parent) {
    let b = spawn(fn() { recv(); let z = 0; 1 / z });
    link(b);
    send(parent, b);
    recv();
    println("never");
}
let l = spawn(linker, self());
monitor(l);
let b = recv();
send(b, "go");
let d = recv(5000);
println(d.event, d.pid == l, d.reason == "linked process " + to_string(b) + " ended: division by zero");
fn trapper(parent) {
    println(trap_exits(true));
    let b = spawn(fn() { recv(); error("boom") });
    link(b);
    send(parent, b);
    let m = recv(5000);
    send(parent, [m.event, m.pid == b, m.reason]);
    let c = spawn(fn() { recv(); });
    link(c);
    send(c, 1);
    let m2 = recv(5000);
    send(parent, [m2.event, m2.pid == c, m2.reason]);
}
let t = spawn(trapper, self());
send(recv(), 1);
println(recv());
println(recv());
// A normal end does not kill a linked process that does not trap exits.
let q = spawn(fn(parent) { let c = spawn(fn() { recv(); }); link(c); send(c, 1); sleep(50); send(parent, "still alive"); }, self());
println(recv(5000));
// Linking to a process that has ended kills the linker with reason noproc.
let gone = spawn(fn() { 1 });
monitor(gone);
recv();
let lk = spawn(fn(p) { recv(); link(p); println("never"); }, gone);
monitor(lk);
send(lk, "go");
let d2 = recv(5000);
println(d2.reason == "linked process " + to_string(gone) + " ended: noproc");
"#,
        dir.path(),
        "down true true\nfalse\n[\"exit\", true, \"boom\"]\n[\"exit\", true, \"normal\"]\nstill alive\ntrue\n",
    );
}

#[test]
fn kill_ends_a_waiting_process_on_either_node() {
    let fx = fixture2(
        "kill",
        r#"
fn waiter() { println("W ready"); recv(); println("never"); }
fn main() {
    let w = spawn(waiter);
    monitor(w);
    let g = open("gate", "r");
    read(g);
    kill(w);
    let d = recv(5000);
    println("M", d.event, d.pid == w, d.reason);
}
main();
"#,
    );
    let m = fx.start();
    let (w, _) = fx.out.wait_prefix("W ready");
    wait_until("W waits", || fx.nodes[0].waiting_pids().contains(&w));
    fx.move_to(w, 0, 1);
    fx.files.push("gate", "go");
    let e = fx.exit(w);
    assert_eq!(e.reason, ExitReason::Killed("killed".into()));
    fx.exit_normal(m);
    assert_eq!(fx.out.wait_prefix("M").1, "M down true killed");
    assert!(!fx.out.has_prefix("never"));
}

// ---------------------------------------------------------------------------------
// 6. Bad input to system calls is a Tern error
// ---------------------------------------------------------------------------------

#[test]
fn bad_system_call_input_is_a_catchable_error() {
    let dir = TempDir::new("badinput");
    let cases: &[(&str, &str)] = &[
        ("send(1, 2)", "send: expected a pid or a send end, not an int"),
        ("send(\"x\", 2)", "send: expected a pid or a send end"),
        ("recv(42, \"x\")", "recv: expected a receive end, not an int"),
        ("recv(\"x\")", "recv:"),
        ("recv(-1)", "recv: the time must not be negative"),
        ("select(\"x\")", "select: expected an array of receive ends, not a string"),
        ("select([1], 10)", "select: expected receive ends"),
        ("select([])", "select: nothing to wait for"),
        ("spawn(1)", "spawn: expected a Tern function, not an int"),
        ("spawn(println)", "spawn: expected a Tern function"),
        ("spawn(fn(a, b) { a })", "spawn: <anonymous> expects 2 arguments, got 0"),
        ("spawn(fn(a, b) { a }, 1)", "spawn: <anonymous> expects 2 arguments, got 1"),
        ("spawn(two, 1, 2, 3)", "spawn: two expects 2 arguments, got 3"),
        ("sleep(\"x\")", "sleep: the time must be a number of milliseconds"),
        ("sleep(-5)", "sleep: the time must not be negative"),
        ("kill(3)", "kill: expected a pid, not an int"),
        ("link(nil)", "link: expected a pid"),
        ("monitor(\"x\")", "monitor: expected a pid, not a string"),
        ("open(\"a.txt\", \"q\")", "open: bad mode"),
        ("open(\"a.txt\", 5)", "open: the mode must be a string"),
        ("open(\"../x\")", "outside the node's file root"),
        ("open(\"a/../../x\", \"w\")", "outside the node's file root"),
        ("open(\"\")", "open: bad path"),
        ("open(5)", "open: expected a path string"),
        ("open(\"missing.txt\")", "missing.txt: no such file"),
        ("read(5)", "read: expected a file, not an int"),
        ("read(\"a.txt\")", "read: expected a file, not a string"),
        ("let f = open(\"a.txt\"); close(f); read(f)", "read: the file is closed"),
        ("let f = open(\"a.txt\"); close(f); read_line(f)", "read_line: the file is closed"),
        ("let f = open(\"a.txt\"); close(f); write(f, \"x\")", "write: the file is closed"),
        ("let f = open(\"a.txt\"); read(f, -1)", "read: expected a byte count"),
        ("let f = open(\"a.txt\", \"r\"); write(f, \"x\")", "write: a.txt is open for reading only"),
        ("let f = open(\"o.txt\", \"w\"); read(f)", "read: o.txt is not open for reading"),
        ("let f = open(\"a.txt\", \"r+\"); write(f, 5)", "write: expected a string"),
        ("let f = open(\"a.txt\"); seek(f, -1)", "seek: expected an offset of 0 or more, not -1"),
        ("let f = open(\"a.txt\"); seek(f, \"x\")", "seek: expected an offset"),
        ("seek(1, 0)", "seek: expected a file"),
        ("close(1)", "close: expected a file"),
        ("let f = open(\"a.txt\"); send(self(), f)", "send: an open file cannot be sent"),
        ("let f = open(\"a.txt\"); send(self(), [1, {a: f}])", "send: an open file cannot be sent"),
        ("let f = open(\"a.txt\"); spawn(fn(x) { x }, f)", "spawn: an open file cannot be sent"),
        ("let c = channel(); send(c[1], 1)", "send: cannot send on a receive end"),
        ("let c = channel(); send(c[0], c[1])", "send: cannot send a receive end into its own channel"),
    ];
    let mut src = String::from(
        "fn two(a, b) { a }\nlet setup = open(\"a.txt\", \"w\"); write(setup, \"hello\\n\"); close(setup);\n\
         fn show(f) { let r = try { f(); \"no error\" } catch e { if type_of(e) == \"string\" { e } else { \"not a string: \" + to_string(e) } }; println(r); }\n",
    );
    for (code, _) in cases {
        src.push_str(&format!("show(fn() {{ {code}; }});\n"));
    }
    src.push_str("println(\"alive\");\n");
    for migrate_every in [None, Some(50)] {
        let opts = RunOptions { migrate_every, seed: 11, file_root: Some(dir.path().to_path_buf()), ..RunOptions::default() };
        let (out, r) = run_bounded(&src, opts);
        assert_eq!(r, Ok(()), "output:\n{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), cases.len() + 1, "output:\n{out}");
        let mut wrong = Vec::new();
        for ((code, want), got) in cases.iter().zip(&lines) {
            if !got.contains(want) {
                wrong.push(format!("{code}: got {got:?}, want it to contain {want:?}"));
            }
        }
        assert!(wrong.is_empty(), "migrate_every {migrate_every:?}:\n{}", wrong.join("\n"));
        assert_eq!(lines[cases.len()], "alive");
    }
}

// ---------------------------------------------------------------------------------
// 7. Many processes at once
// ---------------------------------------------------------------------------------

#[test]
fn a_hundred_thousand_waiting_processes() {
    const N: usize = 100_000;
    let fx = fixture(
        "many",
        &format!(
            r#"
fn w() {{ let m = recv(); if m != 1 {{ error("bad message"); }} }}
fn main() {{
    let ps = [];
    for i in 0..{N} {{ push(ps, spawn(w)); }}
    println("spawned", len(ps));
    let g = open("gate", "r");
    read(g);
    for p in ps {{ send(p, 1); }}
    println("released");
}}
main();
"#
        ),
        &[NodeConfig { record_exits: false, ..node_config(0, 2) }],
    );
    let n0 = &fx.nodes[0];
    let t0 = Instant::now();
    let main = fx.start();
    fx.out.wait_prefix("spawned 100000");
    wait_until("all are waiting", || n0.live() == N + 1 && n0.waiting_pids().len() == N + 1);
    let spawn_time = t0.elapsed();
    let t1 = Instant::now();
    fx.files.push("gate", "go");
    let deadline = t1 + Duration::from_secs(60);
    while n0.live() > 0 {
        assert!(Instant::now() < deadline, "{} processes still live 60 s after the release", n0.live());
        std::thread::sleep(Duration::from_millis(5));
    }
    let release_time = t1.elapsed();
    assert_eq!(n0.exit_of(main).map(|e| e.reason), Some(ExitReason::Normal));
    assert!(fx.out.failures().is_empty(), "{} failures, first {:?}", fx.out.failures().len(), fx.out.failures().first());
    eprintln!("{N} processes: spawned and waiting in {spawn_time:?}, released and ended in {release_time:?}");
}

// ---------------------------------------------------------------------------------
// 8. Bounded mailboxes
// ---------------------------------------------------------------------------------

#[test]
fn flooding_a_mailbox_that_is_never_read_fails_in_the_sender() {
    const LIMIT: usize = 64 << 10;
    let fx = fixture(
        "mailbox",
        r#"
fn idle() { println("Z ready"); sleep(60000); }
fn main() {
    let z = spawn(idle);
    let msg = repeat("x", 100);
    let n = 0;
    let e = try { while n < 1000000 { send(z, msg); n += 1; } "no error" } catch e { e };
    println("flood", n, e);
    let again = try { send(z, msg); "sent" } catch e { "full" };
    println("again", again);
    let g = open("gate", "r");
    read(g);
    println("moved", try { send(z, msg); "sent" } catch e { "full" });
    read(g);
    kill(z);
    sleep(20);
    // Sending to an ended process is not an error.
    send(z, msg);
    println("after kill ok");
}
main();
"#,
        &[NodeConfig { mailbox_limit_bytes: LIMIT, ..node_config(0, 2) }, NodeConfig { mailbox_limit_bytes: LIMIT, ..node_config(1, 2) }],
    );
    let main = fx.start();
    let (z, _) = fx.out.wait_prefix("Z ready");
    let flood = fx.out.wait_prefix("flood").1;
    let f: Vec<&str> = flood.splitn(3, ' ').collect();
    let n: usize = f[1].parse().unwrap();
    assert!(f[2].contains(&format!("the mailbox of <pid {}> is full", name_text(z))), "{flood}");
    assert!(n > 10 && n * 100 <= LIMIT, "{n} messages of 100 bytes fitted in a {LIMIT}-byte mailbox");
    assert_eq!(fx.out.wait_prefix("again").1, "again full");
    let (count, bytes) = fx.nodes[0].mailbox_size(z).unwrap();
    assert_eq!(count, n);
    assert!(bytes <= LIMIT, "{bytes} bytes queued");
    // The full mailbox moves with its process, and is still full at the destination.
    wait_until("main waits", || fx.nodes[0].waiting_pids().contains(&main));
    wait_until("Z sleeps", || fx.nodes[0].waiting_pids().contains(&z));
    fx.move_to(z, 0, 1);
    assert_eq!(fx.nodes[1].mailbox_size(z), Some((count, bytes)));
    fx.files.push("gate", "go");
    assert_eq!(fx.out.wait_prefix("moved").1, "moved full");
    fx.files.push("gate", "go");
    fx.exit_normal(main);
    assert_eq!(fx.exit(z).reason, ExitReason::Killed("killed".into()));
    assert_eq!(fx.out.wait_prefix("after kill").1, "after kill ok");
}

// ---------------------------------------------------------------------------------
// More states and edges of freezing and moving
// ---------------------------------------------------------------------------------

#[test]
fn process_in_a_file_read_is_frozen_after_it_and_reads_on_at_the_same_offset() {
    let fx = fixture2(
        "read",
        r#"
let w = open("slow.txt", "w");
println("R opened");
let f = open("slow.txt", "r");
let a = read_line(f);
println("R line", a, node());
let b = read_line(f);
println("R line", b, node());
seek(f, 2);
println("R seek", read(f, 3), node());
println("R rest", read(f), read(f), node());
"#,
    );
    std::fs::write(fx.dir.path().join("slow.txt"), "").unwrap();
    let pid = fx.start();
    fx.out.wait_prefix("R opened");
    // Fill the file only now (the "w" open truncated it).
    std::fs::write(fx.dir.path().join("slow.txt"), "line1\nline2\nline3\n").unwrap();
    fx.files.wait_blocked(1);
    let n0 = &fx.nodes[0];
    let frozen = AtomicBool::new(false);
    std::thread::scope(|s| {
        let freezer = s.spawn(|| {
            let r = n0.freeze(pid, LONG);
            frozen.store(true, Ordering::SeqCst);
            r
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(!frozen.load(Ordering::SeqCst) && !n0.is_frozen(pid), "frozen in the middle of a file read");
        fx.files.allow();
        assert_eq!(freezer.join().unwrap().map(|_| ()), Ok(()));
    });
    assert!(!fx.out.has_prefix("R line"));
    fx.move_to(pid, 0, 1);
    for _ in 0..4 {
        fx.files.allow();
    }
    fx.exit_normal(pid);
    assert_eq!(fx.out.lines(), ["R opened", "R line line1 n1", "R line line2 n1", "R seek ne1 n1", "R rest ", "line2", "line3", " nil n1"]);
    let log = fx.files.log();
    assert_eq!(log[0], rec("read", 0, "slow.txt", 0, "line1\n"), "{log:?}");
    assert_eq!(log[1], rec("read", 1, "slow.txt", 6, "line2\n"), "{log:?}");
    assert_eq!(log[2], rec("read", 1, "slow.txt", 2, "ne1"), "{log:?}");
}

#[test]
fn freeze_and_unfreeze_in_place() {
    let fx = fixture2(
        "inplace",
        r#"
fn waiter() {
    println("P ready");
    let m = recv();
    println("P got", m, node());
}
fn sleeper() {
    let t0 = mono_ms();
    println("S ready");
    sleep(1000);
    println("S slept", mono_ms() - t0);
}
fn ctl(t) {
    let g = open("gate", "r");
    read(g);
    send(t, "x");
}
let p = spawn(waiter);
spawn(ctl, p);
spawn(sleeper);
"#,
    );
    fx.start();
    let n0 = &fx.nodes[0];
    let (p, _) = fx.out.wait_prefix("P ready");
    let (s, _) = fx.out.wait_prefix("S ready");
    let t0 = Instant::now();
    wait_until("both wait", || n0.waiting_pids().contains(&p) && n0.waiting_pids().contains(&s));
    n0.freeze(p, LONG).unwrap();
    n0.freeze(s, LONG).unwrap();
    // Freezing twice is fine.
    n0.freeze(p, LONG).unwrap();
    assert!(n0.is_frozen(p) && n0.is_frozen(s));
    assert!(!n0.waiting_pids().contains(&p), "a frozen process is not waiting");
    fx.files.push("gate", "go");
    wait_until("the message is queued", || n0.mailbox_size(p).map(|m| m.0) == Some(1));
    std::thread::sleep(Duration::from_millis(100));
    assert!(!fx.out.has_prefix("P got"), "a frozen process received");
    n0.unfreeze(p);
    assert_eq!(fx.out.wait_prefix("P got").1, "P got x n0");
    std::thread::sleep(Duration::from_millis(600).saturating_sub(t0.elapsed()));
    assert!(!fx.out.has_prefix("S slept"));
    n0.unfreeze(s);
    assert!(!n0.is_frozen(s));
    let line = fx.out.wait_prefix("S slept").1;
    let ms: u64 = line.split(' ').nth(2).unwrap().parse().unwrap();
    // Its sleep keeps its deadline: unfrozen after 600 ms, it ends at 1000; a sleep
    // restarted by the unfreeze would end at 1600 or later.
    assert!((995..1600).contains(&ms), "slept {ms} ms instead of 1000 after a freeze in place");
    fx.exit_normal(p);
    fx.exit_normal(s);
}

#[test]
fn recv_and_select_keep_their_timeouts_and_sources_across_a_move() {
    let fx = fixture2(
        "timeouts",
        r#"
fn timer() {
    let t0 = mono_ms();
    println("T ready");
    let v = recv(1500);
    println("T done", is_timeout(v), mono_ms() - t0, node());
}
fn selector(parent) {
    let a = channel();
    let b = channel();
    send(parent, [a[0], b[0]]);
    println("X ready");
    // Three messages, one on each source, come in some order.
    let got = {};
    for i in 0..3 {
        let r = select([a[1], b[1], self()], 20000);
        if is_timeout(r) { println("X timeout", got); return; }
        let from = if r[0] == a[1] { "a" } else if r[0] == b[1] { "b" } else if r[0] == self() { "inbox" } else { "?" };
        got[from] = r[1];
    }
    println("X got", got.a, got.b, got.inbox, node());
    let t0 = mono_ms();
    let r4 = select([a[1], b[1]], 300);
    println("X 4", is_timeout(r4), mono_ms() - t0 >= 300);
}
fn main() {
    spawn(timer);
    let x = spawn(selector, self());
    let ends = recv();
    let g = open("gate", "r");
    read(g);
    send(ends[1], "on b");
    send(x, "inbox");
    send(ends[0], "on a");
}
main();
"#,
    );
    fx.start();
    let (t, _) = fx.out.wait_prefix("T ready");
    let (x, _) = fx.out.wait_prefix("X ready");
    let t0 = Instant::now();
    let n0 = &fx.nodes[0];
    wait_until("both wait", || n0.waiting_pids().contains(&t) && n0.waiting_pids().contains(&x));
    std::thread::sleep(Duration::from_millis(1000).saturating_sub(t0.elapsed()));
    fx.move_to(t, 0, 1);
    fx.move_to(x, 0, 1);
    fx.files.push("gate", "go");
    fx.exit_normal(t);
    fx.exit_normal(x);
    let line = fx.out.wait_prefix("T done").1;
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!((f[2], f[4]), ("true", "n1"), "{line}");
    let ms: u64 = f[3].parse().unwrap();
    // Moved after 1000 ms: counted from before the move it ends at 1500, restarted at
    // 2500 or later.
    assert!((1495..2500).contains(&ms), "recv(1500) took {ms} ms across a move");
    assert_eq!(fx.out.wait_prefix("X got").1, "X got on a on b inbox n1");
    assert_eq!(fx.out.wait_prefix("X 4").1, "X 4 true true");
}

#[test]
fn a_process_killed_while_frozen_ends_when_it_runs_again_on_the_other_node() {
    let fx = fixture2(
        "killfrozen",
        r#"
fn victim() { println("V ready"); recv(); println("never"); }
fn main() {
    let v = spawn(victim);
    monitor(v);
    let g = open("gate", "r");
    read(g);
    kill(v);
    println("M killed");
    let d = recv(20000);
    println("M down:", d.event, d.pid == v, d.reason);
}
main();
"#,
    );
    let m = fx.start();
    let (v, _) = fx.out.wait_prefix("V ready");
    let n0 = &fx.nodes[0];
    wait_until("V waits", || n0.waiting_pids().contains(&v));
    n0.freeze(v, LONG).unwrap();
    fx.files.push("gate", "go");
    fx.out.wait_prefix("M killed");
    std::thread::sleep(Duration::from_millis(50));
    assert!(n0.pids().contains(&v) && n0.is_frozen(v), "a frozen process ended before it ran again");
    fx.move_to(v, 0, 1);
    let e = fx.exit(v);
    assert_eq!(e.reason, ExitReason::Killed("killed".into()));
    assert!(fx.nodes[1].exits().iter().any(|e| e.pid == v), "it should end on n1");
    fx.exit_normal(m);
    assert_eq!(fx.out.wait_prefix("M down:").1, "M down: down true killed");
    assert!(!fx.out.has_prefix("never"));
}

#[test]
fn links_monitors_and_trapped_exits_follow_moved_processes() {
    let fx = fixture2(
        "linksmove",
        r#"
fn name(p) { let s = to_string(p); slice(s, 5, len(s) - 1) }
fn failer() { recv(); error("boom"); }
fn linker(parent) {
    let b = spawn(failer);
    link(b);
    send(parent, b);
    println("A ready");
    recv();
    println("never");
}
fn trapper(parent) {
    trap_exits(true);
    let d = spawn(failer);
    link(d);
    send(parent, d);
    println("T ready");
    let m = recv(20000);
    println("T got", m.event, m.pid == d, m.reason, node());
}
fn quiet() { println("C ready"); recv(); }
fn ctl(ps) {
    let g = open("gate", "r");
    read(g);
    for p in ps { send(p, "go"); }
}
fn main() {
    let a = spawn(linker, self());
    let b = recv();
    let t = spawn(trapper, self());
    let d = recv();
    let c = spawn(quiet);
    monitor(a);
    monitor(c);
    spawn(ctl, [b, c, d]);
    println("M ready");
    let downs = {};
    for i in 0..2 { let m = recv(20000); downs[if m.pid == a { "a" } else { "c" }] = m.reason; }
    println("M a", downs.a == "linked process " + to_string(b) + " ended: boom", node());
    println("M c", downs.c, node());
}
main();
"#,
    );
    let m = fx.start();
    let (a, _) = fx.out.wait_prefix("A ready");
    let (t, _) = fx.out.wait_prefix("T ready");
    let (c, _) = fx.out.wait_prefix("C ready");
    fx.out.wait_prefix("M ready");
    let n0 = &fx.nodes[0];
    for p in [a, t, c, m] {
        wait_until("all wait", || n0.waiting_pids().contains(&p));
        fx.move_to(p, 0, 1);
    }
    fx.files.push("gate", "go");
    fx.exit_normal(m);
    fx.exit_normal(t);
    let ea = fx.exit(a);
    assert!(matches!(&ea.reason, ExitReason::Killed(r) if r.starts_with("linked process ") && r.ends_with(" ended: boom")), "{ea:?}");
    assert_eq!(fx.out.wait_prefix("M a").1, "M a true n1");
    assert_eq!(fx.out.wait_prefix("M c").1, "M c normal n1");
    assert_eq!(fx.out.wait_prefix("T got").1, "T got exit true boom n1");
    assert!(!fx.out.has_prefix("never"));
}

#[test]
fn messages_keep_order_while_moving_around_three_nodes() {
    let fx = fixture(
        "three",
        r#"
fn sender(r, id, n) {
    println("S ready", id);
    recv();
    for i in 0..n { send(r, [id, i]); if i % 50 == 0 { sleep(1); } }
}
fn receiver(k, n) {
    println("R ready");
    let next = array(k, 0);
    let bad = 0;
    let nodes = {};
    for i in 0..(k * n) {
        let m = recv(20000);
        if is_timeout(m) { println("R timeout", next); return; }
        if m[1] != next[m[0]] { bad += 1; }
        next[m[0]] = m[1] + 1;
        nodes[node()] = true;
    }
    println("R done", bad, len(keys(nodes)) >= 2);
}
fn main() {
    let r = spawn(receiver, 3, 3000);
    let ss = [];
    for id in 0..3 { push(ss, spawn(sender, r, id, 3000)); }
    let g = open("gate", "r");
    read(g);
    for s in ss { send(s, "go"); }
}
main();
"#,
        &[node_config(0, 1), node_config(1, 1), node_config(2, 1)],
    );
    fx.start();
    let (r, _) = fx.out.wait_prefix("R ready");
    fx.out.wait_count("S ready", 3);
    let senders: Vec<Pid> = fx.out.st.lock().lines.iter().filter(|(_, l)| l.starts_with("S ready")).map(|(p, _)| *p).collect();
    // Spread the senders out: one on each node.
    for (i, &s) in senders.iter().enumerate() {
        wait_until("the sender waits", || fx.nodes[0].waiting_pids().contains(&s));
        if i > 0 {
            fx.move_to(s, 0, i);
        }
    }
    fx.files.push("gate", "go");
    let mut at = 0;
    let mut moves = 0;
    while moves < 1000 {
        if fx.out.has_prefix("R done") || fx.out.has_prefix("R timeout") {
            break;
        }
        let to = (at + 1) % 3;
        match fx.nodes[at].relocate(r, &fx.nodes[to], LONG) {
            Ok(_) => {
                at = to;
                moves += 1;
            }
            Err(tern_vm::node::MoveError::NotHere(_)) => break,
            Err(e) => panic!("move {moves}: {e}"),
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    fx.exit_normal(r);
    let done = fx.out.wait_line("R done or R timeout", |l| l.starts_with("R done") || l.starts_with("R timeout")).1;
    assert_eq!(done, "R done 0 true", "after {moves} moves");
    assert!(moves >= 10, "only {moves} moves happened while messages flowed");
}

#[test]
fn a_refused_image_leaves_the_process_running_where_it_was() {
    // n1's VM lacks the program's module, so it cannot take the process.
    let src = r#"
fn target() {
    println("T ready");
    let got = [];
    for i in 0..3 { push(got, recv()); }
    println("T got", got, node());
}
fn ctl(t) {
    let g = open("gate", "r");
    read(g);
    send(t, 1);
    read(g);
    send(t, 2);
    send(t, 3);
}
let t = spawn(target);
spawn(ctl, t);
"#;
    let program = compile_text("refused.tern", src).unwrap();
    let dir = TempDir::new("refused");
    let out = Arc::new(Out::default());
    let files = FilesShared::new(dir.path());
    let mesh = Mesh::new();
    let mut vm0 = new_vm(VmConfig::default());
    load(&mut vm0, &program).unwrap();
    let vm1 = new_vm(VmConfig::default());
    let fx = Fx {
        nodes: vec![
            Node::start(Arc::new(vm0), mesh.clone(), node_config(0, 2), out.clone(), Arc::new(TestFiles { node: 0, sh: files.clone() })),
            Node::start(Arc::new(vm1), mesh, node_config(1, 2), out.clone(), Arc::new(TestFiles { node: 1, sh: files.clone() })),
        ],
        out,
        files,
        main: program.main,
        dir,
    };
    fx.start();
    let (t, _) = fx.out.wait_prefix("T ready");
    let n0 = &fx.nodes[0];
    wait_until("T waits", || n0.waiting_pids().contains(&t));
    n0.freeze(t, LONG).unwrap();
    fx.files.push("gate", "go");
    wait_until("a message is queued", || n0.mailbox_size(t).map(|m| m.0) == Some(1));
    let r = n0.relocate(t, &fx.nodes[1], LONG);
    assert!(matches!(r, Err(tern_vm::node::MoveError::Image(_))), "{r:?}");
    assert!(r.unwrap_err().to_string().starts_with("the destination refused the process"));
    assert_eq!(fx.where_is(t), Some(0));
    assert!(fx.nodes[1].pids().is_empty(), "the refused copy is left behind on n1: {:?}", fx.nodes[1].pids());
    assert_eq!(fx.nodes[1].live(), 0);
    // The move withdrew only its own freeze: the one asked for above still holds.
    assert!(n0.is_frozen(t));
    n0.unfreeze(t);
    fx.files.push("gate", "go");
    fx.exit_normal(t);
    assert_eq!(fx.out.wait_prefix("T got").1, "T got [1, 2, 3] n0");
}

#[test]
fn freeze_timeouts_and_processes_that_are_not_here() {
    let fx = fixture2(
        "notthere",
        r#"
let f = open("slow.txt", "w");
println("W opened");
write(f, "x");
println("W wrote", node());
let m = recv(300);
println("W got", m);
"#,
    );
    let pid = fx.start();
    fx.out.wait_prefix("W opened");
    fx.files.wait_blocked(1);
    let (n0, n1) = (&fx.nodes[0], &fx.nodes[1]);
    // The write never finishes in time: the move gives up and the process is left as it was.
    let r = n0.relocate(pid, n1, Duration::from_millis(200));
    assert_eq!(r, Err(tern_vm::node::MoveError::FreezeTimeout(pid)));
    assert!(!n0.is_frozen(pid));
    assert_eq!(n0.freeze(pid, Duration::from_millis(100)), Err(tern_vm::node::MoveError::FreezeTimeout(pid)));
    // Not on n1.
    assert_eq!(n1.freeze(pid, LONG), Err(tern_vm::node::MoveError::NotHere(pid)));
    assert_eq!(n1.relocate(pid, n0, LONG), Err(tern_vm::node::MoveError::NotHere(pid)));
    assert!(!n1.is_frozen(pid));
    assert_eq!(n1.mailbox_size(pid), None);
    fx.files.allow();
    assert_eq!(fx.out.wait_prefix("W wrote").1, "W wrote n0", "the process goes on where it was");
    assert!(!n0.is_frozen(pid));
    // Moving a process to its own node changes nothing.
    wait_until("W waits", || n0.waiting_pids().contains(&pid));
    assert!(n0.relocate(pid, n0, LONG).is_ok());
    assert_eq!(fx.where_is(pid), Some(0));
    fx.move_to(pid, 0, 1);
    assert_eq!(n0.freeze(pid, LONG), Err(tern_vm::node::MoveError::NotHere(pid)));
    assert_eq!(n0.mailbox_size(pid), None);
    // Unfreezing a process that is not frozen (or not here) does nothing.
    n0.unfreeze(pid);
    n1.unfreeze(pid);
    let line = fx.out.wait_prefix("W got").1;
    assert_eq!(line, "W got timeout");
    fx.exit_normal(pid);
    assert_eq!(n0.freeze(pid, LONG), Err(tern_vm::node::MoveError::NotHere(pid)));
    assert_eq!(n1.freeze(pid, LONG), Err(tern_vm::node::MoveError::NotHere(pid)));
    assert_eq!(n1.relocate(pid, n0, LONG), Err(tern_vm::node::MoveError::NotHere(pid)));
}

#[test]
fn two_racing_moves_of_one_process_move_it_once() {
    let fx = fixture2(
        "race",
        r#"
println("P ready");
let i = 0;
let s = 0;
while i < 3000000 { i += 1; s += i; }
println("P done", s == 3000000 * 3000001 / 2, node());
"#,
    );
    let pid = fx.start();
    fx.out.wait_prefix("P ready");
    let (n0, n1) = (&fx.nodes[0], &fx.nodes[1]);
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4).map(|_| s.spawn(|| n0.relocate(pid, n1, LONG))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| r.is_ok() || *r == Err(tern_vm::node::MoveError::NotHere(pid))), "{results:?}");
    assert_eq!(fx.where_is(pid), Some(1));
    fx.exit_normal(pid);
    assert_eq!(fx.out.wait_prefix("P done").1, "P done true n1");
}

#[test]
fn oversized_messages_and_full_channel_queues_are_errors_in_the_sender() {
    const LIMIT: usize = 64 << 10;
    let fx = fixture(
        "limits",
        r#"
fn idle(parent) { println("H ready"); send(parent, "up"); sleep(60000); }
fn err(f) { try { f(); "no error" } catch e { e } }
fn main() {
    println("big", err(fn() { send(self(), repeat("x", 5000)); }));
    println("big spawn", err(fn() { spawn(fn(x) { x }, repeat("x", 5000)); }));
    let c = channel();
    let h = spawn(idle, self());
    recv();
    // The receive end goes to h, which never reads it.
    send(h, c[1]);
    let n = 0;
    let e = err(fn() { while n < 100000 { send(c[0], repeat("y", 500)); n += 1; } });
    println("chan", n, e);
    let alive = err(fn() { send(self(), "small"); });
    println("small", alive, recv());
    kill(h);
}
main();
"#,
        &[NodeConfig { mailbox_limit_bytes: LIMIT, message_limit_bytes: 4096, ..node_config(0, 2) }],
    );
    let m = fx.start();
    fx.exit_normal(m);
    let big = fx.out.wait_prefix("big ").1;
    assert!(big.contains("send: message larger than the 4096-byte limit"), "{big}");
    let big = fx.out.wait_prefix("big spawn").1;
    assert!(big.contains("spawn: message larger than the 4096-byte limit"), "{big}");
    let (h, _) = fx.out.wait_prefix("H ready");
    let chan = fx.out.wait_prefix("chan").1;
    let n: usize = chan.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(chan.contains(&format!("the mailbox of <pid {}> is full", name_text(h))), "{chan}");
    assert!(n > 10 && n * 500 <= LIMIT, "{n} messages of 500 bytes fitted in {LIMIT} bytes");
    assert_eq!(fx.out.wait_prefix("small").1, "small no error small");
}

#[test]
fn a_receive_end_passed_back_and_forth_between_moving_processes_loses_nothing() {
    const N: usize = 3000;
    let fx = fixture2(
        "pingpong",
        &format!(
            r#"
fn sender(tx, n) {{
    println("S ready");
    for i in 0..n {{ send(tx, i); if i % 10 == 0 {{ sleep(1); }} }}
    send(tx, "end");
}}
fn player(checker) {{
    println("P ready");
    let other = recv();
    while true {{
        let m = recv(20000);
        if is_timeout(m) {{ println("P timeout"); return; }}
        if type_of(m) != "receiver" {{ return; }}
        let batch = [];
        let done = false;
        for k in 0..10 {{
            let v = recv(m, 2);
            if is_timeout(v) {{ break; }}
            if v == "end" {{ done = true; break; }}
            push(batch, v);
        }}
        send(checker, batch);
        if done {{ send(checker, "end"); send(other, "stop"); return; }}
        send(other, m);
    }}
}}
fn main(n) {{
    let c = channel();
    let a = spawn(player, self());
    let b = spawn(player, self());
    send(a, b);
    send(b, a);
    spawn(sender, c[0], n);
    send(a, c[1]);
    let next = 0;
    let bad = 0;
    let batches = 0;
    while true {{
        let m = recv(20000);
        if is_timeout(m) {{ println("C timeout", next); return; }}
        if m == "end" {{ break; }}
        batches += 1;
        for v in m {{ if v != next {{ bad += 1; }} next = v + 1; }}
    }}
    println("C done", bad, next, batches > 10);
}}
main({N});
"#
        ),
    );
    let main = fx.start();
    fx.out.wait_count("P ready", 2);
    fx.out.wait_prefix("S ready");
    let mut pids: Vec<Pid> =
        fx.out.st.lock().lines.iter().filter(|(_, l)| l.starts_with("P ready") || l.starts_with("S ready")).map(|(p, _)| *p).collect();
    pids.push(main);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut moves = 0;
    while !fx.out.has_prefix("C ") && moves < 2000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let p = pids[(rng % pids.len() as u64) as usize];
        let Some(from) = fx.where_is(p) else { continue };
        match fx.nodes[from].relocate(p, &fx.nodes[1 - from], LONG) {
            Ok(_) => moves += 1,
            Err(tern_vm::node::MoveError::NotHere(_)) => {}
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_micros(rng % 700));
    }
    fx.exit_normal(main);
    assert_eq!(fx.out.wait_line("C done or C timeout", |l| l.starts_with("C ")).1, format!("C done 0 {N} true"), "after {moves} moves");
    assert!(moves >= 20, "only {moves} moves");
    assert!(fx.out.failures().is_empty(), "{:?}", fx.out.failures());
}

#[test]
fn processes_born_on_the_other_node_can_be_found_monitored_and_moved_home() {
    let fx = fixture2(
        "born",
        r#"
fn child() { println("C ready", node()); let m = recv(20000); println("C got", m, node()); }
fn parent(main) {
    println("P ready");
    recv();
    let c = spawn(child);
    send(main, c);
    println("P spawned", node());
}
fn ctl(p, gate) { let g = open(gate, "r"); read(g); send(p, "go"); }
fn main() {
    let p = spawn(parent, self());
    spawn(ctl, p, "gate_p");
    println("M ready");
    let c = recv(20000);
    monitor(c);
    spawn(ctl, self(), "gate");
    println("M armed");
    recv(20000);
    send(c, "hello");
    let d = recv(20000);
    println("M down:", d.pid == c, d.reason, node());
}
main();
"#,
    );
    let m = fx.start();
    let (p, _) = fx.out.wait_prefix("P ready");
    wait_until("P waits", || fx.nodes[0].waiting_pids().contains(&p));
    fx.move_to(p, 0, 1);
    // Wake the parent: it spawns its child on n1.
    fx.files.push("gate_p", "go");
    let (c, line) = fx.out.wait_prefix("C ready");
    assert_eq!(line, "C ready n1");
    assert_eq!(tern_vm::value::name_node(c), 1, "a child spawned on n1 is born there");
    wait_until("C waits", || fx.nodes[1].waiting_pids().contains(&c));
    fx.move_to(c, 1, 0);
    fx.out.wait_prefix("M armed");
    wait_until("M waits", || fx.nodes[0].waiting_pids().contains(&m));
    fx.move_to(m, 0, 1);
    fx.files.push("gate", "go");
    fx.exit_normal(c);
    assert_eq!(fx.out.wait_prefix("C got").1, "C got hello n0");
    assert_eq!(fx.out.wait_prefix("M down:").1, "M down: true normal n1");
    assert_eq!(fx.where_is(c), None);
}

// ---------------------------------------------------------------------------------
// Idle detection
// ---------------------------------------------------------------------------------

/// A timed wait that was satisfied (by a message) or moved away must not keep its node
/// looking busy: `Node::quiescent` is what `tern run` uses to detect a deadlock.
#[test]
fn a_finished_timed_wait_does_not_keep_the_node_busy() {
    let fx = fixture2(
        "quiescent",
        r#"
fn mover() { println("V ready"); let m = recv(120000); println("V got", m); recv(); }
fn main() {
    let v = spawn(mover);
    spawn(fn(p) { send(p, 1); }, self());
    println("M got", recv(120000));
    let g = open("gate", "r");
    read(g);
    send(v, 2);
    recv();
}
main();
"#,
    );
    fx.start();
    let (v, _) = fx.out.wait_prefix("V ready");
    fx.out.wait_prefix("M got 1");
    wait_until("V waits", || fx.nodes[0].waiting_pids().contains(&v));
    fx.move_to(v, 0, 1);
    fx.files.push("gate", "go");
    fx.out.wait_prefix("V got 2");
    // Everyone now waits in a plain recv() that nothing will satisfy. (`LONG` is well
    // within the 120 s of the finished timed waits, whose timers must not count.)
    let t0 = Instant::now();
    while !fx.nodes.iter().all(Node::quiescent) && t0.elapsed() < LONG {
        std::thread::sleep(Duration::from_millis(5));
    }
    let busy: Vec<usize> = (0..2).filter(|&i| !fx.nodes[i].quiescent()).collect();
    assert!(
        busy.is_empty(),
        "nodes {busy:?} still not quiescent {:?} after every process went into an untimed recv \
         (the timers of finished or moved timed waits stay armed until they expire)",
        t0.elapsed()
    );
}

/// The same seen from `tern run`: a deadlock is reported promptly even if the program
/// used a long receive timeout before.
#[test]
fn deadlock_is_reported_promptly_after_a_satisfied_timed_recv() {
    // Its timed wait (120 s) is far longer than `LONG`: a deadlock found only once its
    // timer ran out would not be reported in time.
    let src = "spawn(fn(p) { send(p, 1); }, self());\nprintln(recv(120000));\nrecv();\n";
    let program = compile_text("deadlock.tern", src).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut host = BufferHost::new();
        let r = run_program(&program, &RunOptions::default(), &mut host).map(|_| ()).map_err(|e| e.to_string());
        let _ = tx.send((r, host.out));
    });
    let (r, out) = rx.recv_timeout(LONG).expect("run_program did not report the deadlock within LONG");
    assert_eq!(out, "1\n");
    assert!(r.as_ref().is_err_and(|e| e.starts_with("deadlock")), "{r:?}");
}

/// Two freeze requests at once: one that gives up (a move with a short timeout) must not
/// cancel the other, which is still waiting for the file operation to finish.
#[test]
fn a_timed_out_move_does_not_cancel_another_pending_freeze() {
    let fx = fixture2(
        "twofreezes",
        r#"
let f = open("slow.txt", "w");
println("W opened");
write(f, "x");
println("W wrote", node());
recv(2000);
println("W end", node());
"#,
    );
    let pid = fx.start();
    fx.out.wait_prefix("W opened");
    fx.files.wait_blocked(1);
    let (n0, n1) = (&fx.nodes[0], &fx.nodes[1]);
    std::thread::scope(|s| {
        let freezer = s.spawn(|| n0.freeze(pid, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(n0.relocate(pid, n1, Duration::from_millis(100)), Err(tern_vm::node::MoveError::FreezeTimeout(pid)));
        fx.files.allow();
        assert_eq!(freezer.join().unwrap().map(|_| ()), Ok(()), "the first freeze was cancelled by the second one giving up");
    });
    assert!(n0.is_frozen(pid));
    assert!(!fx.out.has_prefix("W wrote"));
    n0.unfreeze(pid);
    fx.exit_normal(pid);
}

/// The "mailbox is full" error must not understate what is queued: with a limit below
/// 1 MiB it should not say "0 MiB".
#[test]
fn the_mailbox_full_error_states_a_true_size() {
    let fx = fixture(
        "mailboxmsg",
        r#"
let z = spawn(fn() { sleep(60000); });
let e = try { while true { send(z, repeat("x", 1000)); } } catch e { e };
println("flood", e);
kill(z);
"#,
        &[NodeConfig { mailbox_limit_bytes: 100 << 10, ..node_config(0, 2) }],
    );
    let m = fx.start();
    fx.exit_normal(m);
    let line = fx.out.wait_prefix("flood").1;
    assert!(line.contains("is full"), "{line}");
    assert!(!line.contains("(0 MiB queued)"), "a mailbox holding ~100 KiB is reported as: {line}");
}

/// With one worker per node, a process that parks and is woken at once must not stall
/// a move of it: the move may only wait for a process that another thread can run.
#[test]
fn moves_never_stall_a_node_with_one_worker() {
    let programs = [
        "sleep(20);\nprintln(\"b\");\n",
        "fn echo() { while true { let m = recv(); send(m, 1); } }\nlet p = spawn(echo);\nfor i in 0..200 { send(p, self()); recv(); }\nprintln(\"done\");\n",
    ];
    for (i, src) in programs.iter().enumerate() {
        let program = compile_text("one_worker.tern", src).unwrap();
        for seed in 1..=8 {
            let opts = RunOptions { migrate_every: Some(1), seed, workers: 1, ..RunOptions::default() };
            // A stalled node never ends: the run has `LONG` (a liveness bound, not a speed).
            let (tx, rx) = std::sync::mpsc::channel();
            let program = program.clone();
            std::thread::spawn(move || {
                let mut host = BufferHost::new();
                let r = run_program(&program, &opts, &mut host).map(|r| r.result.map_err(|e| e.to_string())).map_err(|e| e.to_string());
                let _ = tx.send((r, host.out));
            });
            let (r, out) = rx.recv_timeout(LONG).unwrap_or_else(|_| panic!("program {i}, seed {seed}: stalled (no end within {LONG:?})"));
            r.expect("runs").expect("ends normally");
            assert!(out == "b\n" || out == "done\n", "{out}");
        }
    }
}

// ---------------------------------------------------------------------------------
// Limits at their edge: mailbox length, open files, processes per node
// ---------------------------------------------------------------------------------

#[test]
fn a_mailbox_holds_at_most_its_number_of_messages() {
    let fx = fixture(
        "mailbox_count",
        r#"
fn idle() { println("Z ready"); sleep(60000); }
fn main() {
    let z = spawn(idle);
    let n = 0;
    let e = try { while n < 1000 { send(z, n); n += 1; } "no error" } catch e { e };
    println("flood", n, e);
}
main();
"#,
        &[NodeConfig { mailbox_limit_messages: 10, ..node_config(0, 2) }],
    );
    let main = fx.start();
    let (z, _) = fx.out.wait_prefix("Z ready");
    let flood = fx.out.wait_prefix("flood").1;
    assert!(flood.starts_with("flood 10 "), "exactly ten tiny messages fit: {flood}");
    assert!(flood.contains(&format!("the mailbox of <pid {}> is full (its limits are 10 messages and", name_text(z))), "{flood}");
    assert!(flood.contains("[limits] mailbox_messages"), "{flood}");
    assert_eq!(fx.nodes[0].mailbox_size(z).map(|(count, _)| count), Some(10));
    assert_eq!(fx.exit(main).reason, ExitReason::Normal);
}

#[test]
fn a_process_has_at_most_its_number_of_open_files() {
    let fx = fixture(
        "files_limit",
        r#"
fn main() {
    let a = open("a", "w");
    let b = open("b", "w");
    println("third", try { open("c", "w"); "opened" } catch e { e });
    close(a);
    let c = open("c", "w");
    println("after a close", "opened");
}
main();
"#,
        &[NodeConfig { max_files: 2, ..node_config(0, 2) }],
    );
    let main = fx.start();
    let third = fx.out.wait_prefix("third").1;
    assert_eq!(third, "third open: this process has 2 files open, its limit ([limits] files = 2)");
    assert_eq!(fx.out.wait_prefix("after a close").1, "after a close opened");
    assert_eq!(fx.exit(main).reason, ExitReason::Normal);
}

#[test]
fn a_node_runs_at_most_its_number_of_processes() {
    let fx = fixture(
        "process_limit",
        r#"
fn idle() { let g = open("gate", "r"); read(g); }
fn main() {
    let n = 0;
    let e = try { while n < 100 { spawn(idle); n += 1; } "no error" } catch e { e };
    println("spawned", n, e);
    let g = open("gate", "r");
    read(g);
    sleep(50);
    println("again", try { spawn(idle); "spawned" } catch e { e });
}
main();
"#,
        &[NodeConfig { max_processes: 4, ..node_config(0, 2) }],
    );
    let main = fx.start();
    let spawned = fx.out.wait_prefix("spawned").1;
    // main and three children make four.
    assert_eq!(spawned, "spawned 3 spawn: node n0 runs 4 processes, its limit ([limits] processes = 4)");
    assert_eq!(fx.nodes[0].process_limit_reached().as_deref(), Some("node n0 runs 4 processes, its limit ([limits] processes = 4)"));
    for _ in 0..4 {
        fx.files.push("gate", "go");
    }
    assert_eq!(fx.out.wait_prefix("again").1, "again spawned");
    assert_eq!(fx.exit(main).reason, ExitReason::Normal);
}
