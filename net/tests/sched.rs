//! The M:N scheduler with independent processes: preemption, stealing, many processes.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tern_net::runner::{compile_text, load, new_vm};
use tern_vm::node::{Console, ExitReason, Node, Pid};
use tern_vm::{Process, VmConfig};

#[derive(Default)]
struct Collect(Mutex<HashMap<Pid, String>>);

impl Console for Collect {
    fn write(&self, pid: Pid, text: &str) {
        self.0.lock().entry(pid).or_default().push_str(text);
    }
}

fn vm_with(sources: &[(&str, &str)]) -> (Arc<tern_vm::Vm>, Vec<tern_vm::ModuleHash>) {
    let mut vm = new_vm(VmConfig::default());
    let mut mains = Vec::new();
    for (name, src) in sources {
        let p = compile_text(name, src).unwrap();
        load(&mut vm, &p).unwrap();
        mains.push(p.main);
    }
    (Arc::new(vm), mains)
}

#[test]
fn a_process_that_never_blocks_cannot_starve_the_others() {
    let (vm, mains) = vm_with(&[
        ("spin.tern", "let i = 0;\nwhile true { i += 1; }\n"),
        ("sum.tern", "let s = 0;\nfor i in 0..20000 { s += i; }\nprintln(s);\n"),
    ]);
    for workers in [1, 2] {
        let console = Arc::new(Collect::default());
        let sched = Node::local(vm.clone(), console.clone(), workers);
        for w in 0..workers as u64 {
            sched.spawn(Process::new(1000 + w, mains[0], &vm).unwrap());
        }
        for pid in 1..=20 {
            sched.spawn(Process::new(pid, mains[1], &vm).unwrap());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while sched.exits().len() < 20 {
            assert!(std::time::Instant::now() < deadline, "only {} of 20 finished beside {workers} spinning", sched.exits().len());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sched.live(), workers, "the spinning processes are still running");
        sched.shutdown();
        let out = console.0.lock();
        for pid in 1..=20 {
            assert_eq!(out.get(&pid).map(String::as_str), Some("199990000\n"));
        }
    }
}

#[test]
fn many_processes_all_finish_with_their_own_output() {
    let (vm, mains) = vm_with(&[(
        "m.tern",
        "let xs = [];\nfor i in 0..50 { push(xs, i * i); }\nlet t = 0;\nfor x in xs { t += x; }\nprintln(\"done\", t);\n",
    )]);
    let console = Arc::new(Collect::default());
    let sched = Node::local(vm.clone(), console.clone(), 2);
    let n = 10_000u64;
    for pid in 1..=n {
        sched.spawn(Process::new(pid, mains[0], &vm).unwrap());
    }
    assert!(sched.wait_all(Duration::from_secs(60)), "{} still live", sched.live());
    let exits = sched.exits();
    assert_eq!(exits.len() as u64, n);
    assert!(exits.iter().all(|e| e.reason == ExitReason::Normal));
    let out = console.0.lock();
    assert_eq!(out.len() as u64, n);
    assert!(out.values().all(|s| s == "done 40425\n"));
}

#[test]
fn a_failing_process_is_reported_and_the_others_go_on() {
    let (vm, mains) = vm_with(&[("bad.tern", "let x = 1 / 0;\n"), ("ok.tern", "println(\"ok\");\n")]);
    let console = Arc::new(Collect::default());
    let sched = Node::local(vm.clone(), console.clone(), 2);
    sched.spawn(Process::new(1, mains[0], &vm).unwrap());
    sched.spawn(Process::new(2, mains[1], &vm).unwrap());
    assert!(sched.wait_all(Duration::from_secs(20)));
    let exits = sched.exits();
    let bad = exits.iter().find(|e| e.pid == 1).unwrap();
    assert!(matches!(&bad.reason, ExitReason::Failed(e) if e.message == "division by zero"));
    assert_eq!(exits.iter().find(|e| e.pid == 2).unwrap().reason, ExitReason::Normal);
}

#[test]
fn sleeping_workers_wake_for_new_work() {
    let (vm, mains) = vm_with(&[("w.tern", "println(\"awake\");\n")]);
    let console = Arc::new(Collect::default());
    let sched = Node::local(vm.clone(), console.clone(), 2);
    for round in 0..20u64 {
        // Let every worker fall asleep, then hand them one process.
        std::thread::sleep(Duration::from_millis(if round == 0 { 100 } else { 5 }));
        sched.spawn(Process::new(round + 1, mains[0], &vm).unwrap());
        assert!(sched.wait_all(Duration::from_secs(10)), "round {round}: a new process was never run");
    }
    assert_eq!(console.0.lock().len(), 20);
}

#[test]
fn two_processes_messaging_each_other_cannot_starve_what_others_woke() {
    // A pair that messages back and forth forever keeps a worker's own queue from
    // emptying (each wakes the other there); processes queued from outside (spawned
    // here, woken by the network) must still run.
    let (vm, mains) = vm_with(&[
        (
            "pair.tern",
            "fn pong() { while true { let m = recv(); send(m, 0); } }\n\
             let p = spawn(pong);\n\
             while true { send(p, self()); recv(); }\n",
        ),
        ("sum.tern", "let s = 0;\nfor i in 0..20000 { s += i; }\nprintln(s);\n"),
    ]);
    for workers in [1, 2] {
        let console = Arc::new(Collect::default());
        let sched = Node::local(vm.clone(), console.clone(), workers);
        for w in 0..workers as u64 {
            sched.spawn(Process::new(1000 + w, mains[0], &vm).unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
        for pid in 5001..=5020 {
            sched.spawn(Process::new(pid, mains[1], &vm).unwrap());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while (5001..=5020).any(|p| !console.0.lock().contains_key(&p)) {
            assert!(std::time::Instant::now() < deadline, "only {} of 20 finished beside {workers} talking pairs", console.0.lock().len());
            std::thread::sleep(Duration::from_millis(5));
        }
        sched.shutdown();
        let out = console.0.lock();
        for pid in 5001..=5020 {
            assert_eq!(out.get(&pid).map(String::as_str), Some("199990000\n"));
        }
    }
}

/// A message for a process waiting in `recv` may complete the call where it is
/// delivered (a plain value into a plain `recv`): every kind of value arrives as sent,
/// in order, whether or not it could; a `recv` with a timeout that got its message
/// this way times out fully the next time (its old timer wakes nothing); a `select`
/// still gets its pair; and a message to a process waiting on another source waits.
#[test]
fn a_waiting_recv_gets_each_kind_of_value_as_sent() {
    let src = r#"
fn echo(parent) {
    while true {
        let v = recv();
        send(parent, v);
        if v == "end" { break; }
    }
}

fn timed(parent) {
    let a = recv(5000);
    let t0 = mono_ms();
    let b = recv(150);
    let waited = mono_ms() - t0;
    send(parent, [a, is_timeout(b), waited >= 140]);
}

fn chan_waiter(parent, rx) {
    send(parent, "ready");
    let v = recv(rx);
    let w = recv();
    send(parent, [v, w]);
}

fn selector(parent, rx) {
    send(parent, "ready");
    let r = select([rx]);
    send(parent, r[1]);
}

let me = self();
let e = spawn(echo, me);
let g = group();
let values = [nil, true, false, 7, -3, 2.5, me, g, "text", [1, [2, 3]], {"k": 9}];
for v in values {
    send(e, v);
    let back = recv();
    if "${back}" != "${v}" { println("echo: sent ${v}, got ${back}"); }
}
// Sent ahead of the receiver's `recv`: queued, then taken in order.
for i in 0..100 { send(e, i); }
for i in 0..100 {
    let back = recv();
    if back != i { println("queued: sent ${i}, got ${back}"); }
}
send(e, "end");
recv();

let t = spawn(timed, me);
sleep(20);
send(t, 42);
println("timed ${recv()}");

let ch = channel();
let c = spawn(chan_waiter, me, ch[1]);
recv();
sleep(20);
send(c, "inbox first");
sleep(20);
send(ch[0], "on the channel");
println("chan ${recv()}");

let ch2 = channel();
let s = spawn(selector, me, ch2[1]);
recv();
sleep(20);
send(ch2[0], 5);
println("select ${recv()}");
"#;
    const MAIN: Pid = 1 << 40;
    let (vm, mains) = vm_with(&[("direct.tern", src)]);
    for workers in [1, 2] {
        let console = Arc::new(Collect::default());
        let sched = Node::local(vm.clone(), console.clone(), workers);
        // (A pid no child of it is given: children are named by the node's serial.)
        sched.spawn(Process::new(MAIN, mains[0], &vm).unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while sched.exits().iter().all(|e| e.pid != MAIN) {
            assert!(
                std::time::Instant::now() < deadline,
                "the program did not finish; its output: {:?}; ended: {:?}",
                console.0.lock(),
                sched.exits().iter().map(|e| (e.pid, format!("{:?}", e.reason))).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let exits = sched.exits();
        let main = exits.iter().find(|e| e.pid == MAIN).unwrap();
        assert!(matches!(main.reason, ExitReason::Normal), "{:?}", main.reason);
        sched.shutdown();
        let out = console.0.lock();
        assert_eq!(
            out.get(&MAIN).map(String::as_str),
            Some("timed [42, true, true]\nchan [\"on the channel\", \"inbox first\"]\nselect 5\n"),
            "with {workers} workers"
        );
    }
}
