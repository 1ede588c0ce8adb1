//! Moving a running process between nodes in different meshes (as different machines
//! are), by the steps a migration protocol drives (`vm/src/node/transfer.rs`): freeze,
//! export, import under a temporary id, commit at the source, commit at the destination.
//! The nodes talk through the in-process `Remote` of `common/inproc.rs`, which keeps
//! each pair's ops in order, as the session protocol does: the node's steps alone, with
//! no QUIC and no migration protocol around them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_net::runner::{compile_text, new_vm};
use tern_vm::message::{Message, Val};
use tern_vm::node::{Deliver, Forwarding, Node, NodeConfig, Op, Origin, Pid, SentBy, Target};
use tern_vm::runtime::Vm;
use tern_vm::value::name_node;
use tern_vm::VmConfig;

#[path = "common/inproc.rs"]
mod inproc;
use inproc::{Net, Out};

/// `n` nodes sharing one code store (so no module needs shipping).
fn nodes(n: usize, vm: Arc<Vm>, out: Arc<Out>) -> (Vec<Arc<Node>>, Arc<Net>) {
    nodes_with(n, vm, out, None)
}

/// Links with latencies: from 0 to 1.5 ms, different for each ordered pair.
fn latency(from: u16, to: u16) -> Duration {
    Duration::from_micros(u64::from((from * 7 + to * 3) % 4) * 500)
}

/// `n` nodes, each pair's ops delayed by `latency` if given.
fn nodes_with(n: usize, vm: Arc<Vm>, out: Arc<Out>, latency: Option<inproc::Latency>) -> (Vec<Arc<Node>>, Arc<Net>) {
    inproc::nodes(n, vm, out, latency, |c| c)
}

/// A VM with `config` and the program `source` loaded; the program's main module.
fn loaded(config: VmConfig, name: &str, source: &str) -> (Arc<Vm>, tern_vm::bytecode::ModuleHash) {
    let vm = new_vm(config);
    let p = compile_text(name, source).unwrap();
    for m in &p.modules {
        vm.load(m.clone()).unwrap();
    }
    (Arc::new(vm), p.main)
}

/// A worker that takes numbered messages from its channel and its inbox, from a sender
/// on node 3, and checks their order, while the test moves it from node 1 to node 2.
const PROGRAM: &str = r#"
let N = 3000;
fn worker(main) {
    let ch = channel();
    send(main, {worker: self(), tx: ch[0]});
    let bad = 0;
    for i in 0..N {
        if recv(ch[1]) != i { bad += 1; }
        if recv() != i { bad += 1; }
    }
    send(main, {bad: bad, node: node()});
}
fn sender(w, tx) {
    for i in 0..N {
        send(tx, i);
        send(w, i);
        if i % 50 == 0 { sleep(1); }
    }
}
let hello = spawn(worker, self());
let w = recv();
println("worker ${w.worker}");
spawn_on("n3", sender, w.worker, w.tx);
let r = recv();
println("bad ${r.bad} on ${r.node}");
"#;

/// The worker's pid, once the program has printed it.
fn worker_pid(out: &Out) -> Pid {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = out.text();
        if let Some(line) = text.lines().find(|l| l.starts_with("worker ")) {
            let t = line.trim_start_matches("worker <pid ").trim_end_matches('>');
            let (n, s) = t.split_once('.').unwrap();
            return tern_vm::value::make_name(n.parse().unwrap(), s.parse().unwrap());
        }
        assert!(Instant::now() < deadline, "no worker: {text}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_running_process_moves_to_another_node_and_keeps_its_messages_in_order() {
    let mut config = VmConfig::default();
    config.heap.page_size_bytes = 1024;
    let (vm, main_module) = loaded(config, "transfer.tern", PROGRAM);
    let out = Arc::new(Out::default());
    let (ns, _net) = nodes(3, vm, out.clone());
    let main = ns[0].spawn_main(main_module).unwrap();
    let worker = worker_pid(&out);
    std::thread::sleep(Duration::from_millis(15));
    // The move, step by step.
    let (src, dst) = (&ns[0], &ns[1]);
    src.freeze(worker, Duration::from_secs(10)).unwrap();
    let image = src.export_frozen(worker).unwrap();
    let imported = dst.import_image(&image).unwrap();
    assert_eq!(imported, worker);
    std::thread::sleep(Duration::from_millis(5)); // messages keep arriving at the source
    let late = src.commit_export(worker, dst.id(), Forwarding::LinkUpdate).unwrap();
    eprintln!(
        "image {} bytes; {} inbox and {} channel messages arrived after it",
        image.len(),
        late.inbox.len(),
        late.chans.iter().map(|c| c.queue.len()).sum::<usize>()
    );
    // Messages the source sends on now reach the destination before the commit does;
    // they must wait there for it, behind those that arrived at the source.
    std::thread::sleep(Duration::from_millis(5));
    dst.commit_import(worker, late).unwrap();
    assert!(src.ps().iter().all(|p| p.pid != worker), "the source still lists it");
    let exit = ns[0].wait_exit(main, Duration::from_secs(60)).expect("main ends");
    assert!(exit.reason.is_normal(), "{:?}\n{}", exit.reason, out.text());
    let text = out.text();
    assert!(text.contains("bad 0 on n2"), "{text}");
    for n in ns {
        n.stop();
    }
}

#[test]
fn an_aborted_move_leaves_the_process_running_where_it_was() {
    let (vm, main_module) = loaded(VmConfig::default(), "transfer.tern", PROGRAM);
    let out = Arc::new(Out::default());
    let (ns, _net) = nodes(3, vm, out.clone());
    let main = ns[0].spawn_main(main_module).unwrap();
    let worker = worker_pid(&out);
    ns[0].freeze(worker, Duration::from_secs(10)).unwrap();
    let image = ns[0].export_frozen(worker).unwrap();
    let imported = ns[1].import_image(&image).unwrap();
    // The destination gives up (say it failed): the source lets it run on.
    ns[1].abort_import(imported);
    ns[0].abort_export(worker);
    let exit = ns[0].wait_exit(main, Duration::from_secs(60)).expect("main ends");
    assert!(exit.reason.is_normal(), "{:?}", exit.reason);
    assert!(out.text().contains("bad 0 on n1"), "{}", out.text());
    assert!(ns[1].ps().is_empty(), "nothing left at the destination");
    for n in ns {
        n.stop();
    }
}

/// A worker whose inbox and channel get numbered messages from three senders, on the
/// nodes named `@0`, `@1`, `@2`, each checking every sender's order; after them (with
/// `EXTRA`) one more message on each, which it passes to main.
const RING: &str = r#"
let N = 1500;
let EXTRA = @extra;
fn worker(main) {
    let ch = channel();
    send(main, {worker: self(), tx: ch[0]});
    let next = [0, 0, 0];
    let cnext = [0, 0, 0];
    let bad = 0;
    for k in 0..3 * N {
        let m = recv(ch[1]);
        if m.i != cnext[m.s] { bad += 1; }
        cnext[m.s] = m.i + 1;
        let m2 = recv();
        if m2.i != next[m2.s] { bad += 1; }
        next[m2.s] = m2.i + 1;
    }
    send(main, {bad: bad, node: node()});
    if EXTRA {
        let x = recv(10000);
        let y = recv(ch[1], 10000);
        send(main, {x: x, y: y});
    }
}
fn sender(w, tx, s) {
    for i in 0..N {
        send(tx, {s: s, i: i});
        send(w, {s: s, i: i});
        if i % 10 == 0 { sleep(1); }
    }
}
let hello = spawn(worker, self());
let w = recv();
println("worker ${w.worker}");
spawn_on("@0", sender, w.worker, w.tx, 0);
spawn_on("@1", sender, w.worker, w.tx, 1);
spawn_on("@2", sender, w.worker, w.tx, 2);
let r = recv();
println("bad ${r.bad} on ${r.node}");
if EXTRA {
    let e = recv();
    println("extra ${e.x} ${e.y}");
}
"#;

/// Nodes `n` with the ring program loaded, senders on `senders`, main on node 1.
fn start_ring(n: usize, senders: [&str; 3], extra: bool) -> (Vec<Arc<Node>>, Arc<Net>, Arc<Out>, Pid, Pid) {
    let mut src = RING.replace("@extra", if extra { "true" } else { "false" });
    for (i, s) in senders.iter().enumerate() {
        src = src.replace(&format!("@{i}"), s);
    }
    let (vm, main_module) = loaded(VmConfig::default(), "ring.tern", &src);
    let out = Arc::new(Out::default());
    let (ns, net) = nodes_with(n, vm, out.clone(), Some(latency));
    let main = ns[0].spawn_main(main_module).unwrap();
    let worker = worker_pid(&out);
    (ns, net, out, main, worker)
}

/// Moves `pid` from node `from` to node `to` (ids) by the transfer steps. With `update`,
/// the link update follows as a host would carry it out (every node it names told, each
/// acknowledging by returning), then the source drops its forwarding pointers. Returns
/// the receive ends it holds with their move counts, and its own.
fn move_process(ns: &[Arc<Node>], pid: Pid, from: u16, to: u16, update: bool) -> (Vec<(u64, u32)>, u32) {
    move_process_by(ns, pid, from, to, update, Forwarding::LinkUpdate)
}

/// [`move_process`] with forwarding mechanism `fwd`: the link update goes to the nodes
/// the mechanism tells (with none of links or monitors here: with `link-update` only).
fn move_process_by(ns: &[Arc<Node>], pid: Pid, from: u16, to: u16, update: bool, fwd: Forwarding) -> (Vec<(u64, u32)>, u32) {
    move_steps(ns, pid, from, to, update, fwd, false)
}

/// [`move_process_by`]; with `early`, the process resumes at the destination as soon as
/// it is imported (as a migration resumes it at its commit), before the source's late
/// messages come.
fn move_steps(ns: &[Arc<Node>], pid: Pid, from: u16, to: u16, update: bool, fwd: Forwarding, early: bool) -> (Vec<(u64, u32)>, u32) {
    let (src, dst) = (&ns[usize::from(from) - 1], &ns[usize::from(to) - 1]);
    src.freeze(pid, Duration::from_secs(10)).unwrap();
    let image = src.export_frozen(pid).unwrap();
    assert_eq!(dst.import_image(&image).unwrap(), pid);
    if early {
        dst.resume_import(pid).unwrap();
    }
    std::thread::sleep(Duration::from_millis(2)); // messages keep arriving at the source
    let late = src.commit_export(pid, to, fwd).unwrap();
    std::thread::sleep(Duration::from_millis(2)); // and at the destination, before its commit
    let chans: Vec<(u64, u32)> = late.chans.iter().map(|c| (c.chan, c.moves)).collect();
    let mut told: Vec<u16> = late.inbox_origins.clone();
    told.push(name_node(pid));
    for c in &late.chans {
        told.push(name_node(c.chan));
        told.extend(&c.partners);
    }
    let moves = late.moves;
    dst.commit_import(pid, late).unwrap();
    if update {
        let ids: Vec<u64> = chans.iter().map(|(c, _)| *c).collect();
        told.sort_unstable();
        told.dedup();
        told.retain(|&n| n != to && n != from && fwd.updates_partners());
        for n in told {
            ns[usize::from(n) - 1].apply_link_update(pid, to, moves, &chans, fwd);
        }
        src.drop_forwarding(pid, &ids, fwd);
    }
    (chans, moves)
}

/// Moves the worker n1 -> n2 -> n3 -> n1 -> n2 while senders on all three nodes send to
/// its inbox and its channel; every sender's messages arrive in order, none lost or twice.
/// With `early`, each destination resumes it before its late messages come.
fn ring(update: bool, early: bool) {
    let (ns, _net, out, main, worker) = start_ring(3, ["n1", "n2", "n3"], false);
    for (from, to) in [(1, 2), (2, 3), (3, 1), (1, 2)] {
        std::thread::sleep(Duration::from_millis(12));
        move_steps(&ns, worker, from, to, update, Forwarding::LinkUpdate, early);
    }
    let exit = ns[0].wait_exit(main, Duration::from_secs(60)).expect("main ends");
    assert!(exit.reason.is_normal(), "{:?}\n{}", exit.reason, out.text());
    let text = out.text();
    assert!(text.contains("bad 0 on n2"), "{text}");
    for n in ns {
        n.stop();
    }
}

/// A worker (in a coprocess group) that computes between two messages, and ends after
/// the second.
const COMPUTE: &str = r#"
fn worker(main) {
    send(main, self());
    let first = recv();
    let n = 0;
    for i in 0..@n { n += 1; }
    if first == 1 {
        let second = recv();
        send(main, {event: "got", first: first, second: second, n: n, node: node()});
    }
}
let w = spawn(worker, self(), {group: group()});
monitor(w);
println("worker ${recv()}");
let r = recv();
if r.event == "got" {
    println("got ${r.first} ${r.second} n ${r.n} on ${r.node}");
    r = recv();
}
println("${r.event} ${r.reason}");
"#;

/// Nodes with [`COMPUTE`] loaded (its loop `n` long), main on node 1 and the worker
/// frozen on node 1 in the middle of its loop and imported on node 2.
fn compute_moved(n: u64, first: i64) -> (Vec<Arc<Node>>, Arc<Net>, Arc<Out>, Pid, Pid) {
    let (vm, main_module) = loaded(VmConfig::default(), "compute.tern", &COMPUTE.replace("@n", &n.to_string()));
    let out = Arc::new(Out::default());
    let (ns, net) = nodes(2, vm, out.clone());
    let main = ns[0].spawn_main(main_module).unwrap();
    let w = worker_pid(&out);
    assert_eq!(ns[0].send_to(w, int(first)), Ok(true));
    let reductions = |n: &Node| n.ps().iter().find(|p| p.pid == w).map_or(0, |p| p.reductions);
    until("the worker computes", || reductions(&ns[0]) > 10_000);
    ns[0].freeze(w, Duration::from_secs(10)).unwrap();
    let image = ns[0].export_frozen(w).unwrap();
    assert_eq!(ns[1].import_image(&image).unwrap(), w);
    (ns, net, out, main, w)
}

/// Resumed at the commit, before its late messages: the process computes at the
/// destination, its next call (a receive) waits for them, and takes the one that
/// reached the source during the move.
#[test]
fn a_process_resumed_before_its_late_messages_computes_and_its_next_call_waits_for_them() {
    let (ns, _net, out, main, w) = compute_moved(3_000_000, 1);
    let info = |n: &Node| n.ps().into_iter().find(|p| p.pid == w);
    let at_import = info(&ns[1]).expect("imported").reductions;
    // It reaches the source during the move: it comes with the late messages.
    assert_eq!(ns[0].send_to(w, int(2)), Ok(true));
    ns[1].resume_import(w).unwrap();
    assert!(ns[1].resume_import(w).is_err(), "resumed once");
    // It runs its loop to the end here, then stands at its receive.
    until("the worker computes at the destination, then waits", || {
        info(&ns[1]).is_some_and(|p| p.status == "frozen" && p.reductions > at_import + 1_000_000)
    });
    std::thread::sleep(Duration::from_millis(20));
    assert!(!out.text().contains("got "), "nothing was received before the late messages: {}", out.text());
    let late = ns[0].commit_export(w, 2, Forwarding::LinkUpdate).unwrap();
    assert_eq!(late.inbox.len(), 1);
    ns[1].commit_import(w, late).unwrap();
    let exit = ns[0].wait_exit(main, Duration::from_secs(60)).expect("main ends");
    assert!(exit.reason.is_normal(), "{:?}\n{}", exit.reason, out.text());
    let text = out.text();
    assert!(text.contains("got 1 2 n 3000000 on n2"), "{text}");
    assert!(text.contains("down normal"), "{text}");
    for n in ns {
        n.stop();
    }
}

/// A process resumed before its late state, still computing when that state comes, is
/// a member of its group on the destination (the commit finds it running, not parked).
#[test]
fn a_process_resumed_before_its_late_state_is_in_its_group_at_the_destination() {
    let (ns, _net, out, main, w) = compute_moved(50_000_000, 1);
    let (g, _) = ns[0].group_members(w).expect("in a group at the source");
    ns[1].resume_import(w).unwrap();
    until("the worker computes at the destination", || ns[1].ps().iter().any(|p| p.pid == w && p.status == "running"));
    let late = ns[0].commit_export(w, 2, Forwarding::LinkUpdate).unwrap();
    ns[1].commit_import(w, late).unwrap();
    assert_eq!(ns[1].group_members(w), Some((g, vec![w])));
    assert_eq!(ns[0].group_members(w), None);
    ns[1].kill(w, "done");
    let exit = ns[0].wait_exit(main, Duration::from_secs(60)).expect("main ends");
    assert!(exit.reason.is_normal(), "{:?}\n{}", exit.reason, out.text());
    assert!(out.text().contains("down done"), "{}", out.text());
    for n in ns {
        n.stop();
    }
}

/// A process resumed before its late state that ends meanwhile ends only once that
/// state is here: the move completes, and its watcher is told then, once.
#[test]
fn a_process_that_ends_before_its_late_state_comes_ends_after_it() {
    let (ns, _net, out, main, w) = compute_moved(5_000_000, 0);
    ns[1].resume_import(w).unwrap();
    until("the worker ended its loop at the destination", || {
        ns[1].ps().iter().any(|p| p.pid == w && p.status == "frozen" && p.reductions > 0)
    });
    std::thread::sleep(Duration::from_millis(20));
    assert!(!out.text().contains("down"), "no end seen before the late state: {}", out.text());
    let late = ns[0].commit_export(w, 2, Forwarding::LinkUpdate).unwrap();
    ns[1].commit_import(w, late).expect("the move completes");
    let exit = ns[0].wait_exit(main, Duration::from_secs(60)).expect("main ends");
    assert!(exit.reason.is_normal(), "{:?}\n{}", exit.reason, out.text());
    assert_eq!(out.text().matches("down normal").count(), 1, "{}", out.text());
    assert!(ns[1].ps().iter().all(|p| p.pid != w), "it ended at the destination");
    for n in ns {
        n.stop();
    }
}

/// The ring's moves with the worker resumed at each destination before its late
/// messages come: it asks for its next message at once, and that call waits for them.
#[test]
fn messages_keep_every_senders_order_when_the_process_resumes_before_its_late_messages() {
    ring(true, true);
}

#[test]
fn inbox_and_channel_messages_keep_every_senders_order_over_many_moves_by_forwarding() {
    ring(false, false);
}

#[test]
fn inbox_and_channel_messages_keep_every_senders_order_over_many_moves_with_link_updates() {
    ring(true, false);
}

/// With link updates and dropped pointers, a node the process left (not its birth node,
/// sending nothing to it) keeps nothing about it; a message that reaches it anyway still
/// gets there, by the birth node.
#[test]
fn a_node_left_behind_keeps_nothing_and_still_passes_messages_on() {
    let (ns, net, out, main, worker) = start_ring(4, ["n1", "n2", "n4"], true);
    let mut chans = Vec::new();
    for (from, to) in [(1, 2), (2, 3), (3, 1), (1, 2)] {
        std::thread::sleep(Duration::from_millis(12));
        chans = move_process(&ns, worker, from, to, true).0.iter().map(|(c, _)| *c).collect();
    }
    assert_eq!(chans.len(), 1);
    assert_eq!(ns[2].forwarding_state(worker, &chans), (false, 0), "n3 keeps nothing");
    // Stale news that reaches it late (the first move's link update, held up) is not
    // taken: n3 took part in a later move than that one.
    ns[2].apply_link_update(worker, 2, 1, &[], Forwarding::LinkUpdate);
    assert_eq!(ns[2].forwarding_state(worker, &chans), (false, 0), "n3 took a stale route");
    assert_eq!(ns[0].forwarding_state(worker, &chans), (true, 1), "n1, where both were born, knows where they are");
    assert!(ns[1].forwarding_state(worker, &chans).0, "n2 has it");
    // Messages that reach n3 anyway (once the senders are done): one from outside any
    // process there, one forwarded to it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out.text().contains("bad ") {
        assert!(Instant::now() < deadline, "the worker did not finish: {}", out.text());
        std::thread::sleep(Duration::from_millis(2));
    }
    let before = net.delivers(3, 1);
    assert_eq!(ns[2].send_to(worker, Message::scalar(Val::Int(7))), Ok(true));
    // (Numbered as the first message from a node that has sent none to the channel.)
    let d = Deliver {
        target: Target::Chan(chans[0]),
        origin: Origin { node: 3, inc: 1 },
        seq: 0,
        hops: 1,
        from: SentBy::Host,
        msg: Message::scalar(Val::Int(8)),
        carried: Vec::new(),
    };
    ns[2].receive(4, Op::Deliver(d));
    assert_eq!(net.delivers(3, 1), before + 2, "both went by the birth node");
    let exit = ns[0].wait_exit(main, Duration::from_secs(60)).expect("main ends");
    assert!(exit.reason.is_normal(), "{:?}\n{}", exit.reason, out.text());
    let text = out.text();
    assert!(text.contains("bad 0 on n2\nextra 7 8"), "{text}");
    assert_eq!(ns[2].forwarding_state(worker, &chans), (false, 0), "n3 still keeps nothing");
    // The worker has ended on n2: n1, where it was born, forgets its route.
    let deadline = Instant::now() + Duration::from_secs(60);
    while ns[0].forwarding_state(worker, &[]).0 {
        assert!(Instant::now() < deadline, "n1 kept the route of a process that ended on n2");
        std::thread::sleep(Duration::from_millis(2));
    }
    for n in ns {
        n.stop();
    }
}

/// A link update makes a sender's node send straight to the new place, where before it
/// sent by the node the process left; a stale update changes nothing.
#[test]
fn a_link_update_makes_a_partner_send_straight_to_the_new_node() {
    let (ns, net, out, main, worker) = start_ring(3, ["n3", "n3", "n3"], false);
    std::thread::sleep(Duration::from_millis(15));
    let (with_moves, moves) = move_process(&ns, worker, 1, 2, false);
    let chans: Vec<u64> = with_moves.iter().map(|(c, _)| *c).collect();
    // n3 goes on sending by n1 (to the inbox: it is told where the channel went).
    let at_move = net.delivers(3, 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while net.delivers(3, 1) < at_move + 10 {
        assert!(Instant::now() < deadline, "n3 sent nothing more by n1");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(ns[0].forwarding_state(worker, &chans), (true, 1));
    let direct = net.delivers(3, 2);
    ns[2].apply_link_update(worker, 2, moves, &with_moves, Forwarding::LinkUpdate);
    // Stale news (an older move, or the same one again) changes nothing.
    ns[2].apply_link_update(worker, 1, 0, &[], Forwarding::LinkUpdate);
    ns[2].apply_link_update(worker, 1, moves, &[], Forwarding::LinkUpdate);
    std::thread::sleep(Duration::from_millis(5)); // sends already under way
    let via_old = net.delivers(3, 1);
    let exit = ns[0].wait_exit(main, Duration::from_secs(60)).expect("main ends");
    assert!(exit.reason.is_normal(), "{:?}\n{}", exit.reason, out.text());
    let text = out.text();
    assert!(text.contains("bad 0 on n2"), "{text}");
    assert_eq!(net.delivers(3, 1), via_old, "nothing more from n3 by n1");
    assert!(net.delivers(3, 2) > direct + 100, "n3 sends straight to n2");
    for n in ns {
        n.stop();
    }
}

/// A sender whose link refuses some of its messages (as a full one does): those sends
/// fail, and the rest still arrive, in order — a refused message uses no number, so none
/// waits for it.
#[test]
fn a_message_the_link_refuses_holds_back_none_after_it() {
    const PROGRAM: &str = r#"
let N = 300;
fn worker(main) {
    let ch = channel();
    send(main, {worker: self(), tx: ch[0]});
    let last = -1;
    let bad = 0;
    let got = 0;
    let fin = nil;
    while fin == nil {
        let m = recv(10000);
        if m.i < 0 { fin = m; } else {
            if m.i <= last { bad += 1; }
            last = m.i;
            got += 1;
        }
    }
    let clast = -1;
    for k in 0..fin.cok {
        let v = recv(ch[1], 10000);
        if v <= clast { bad += 1; }
        clast = v;
    }
    send(main, "bad ${bad} got ${got} of ${fin.ok}, ${fin.cok} on the channel");
}
fn sender(w, tx) {
    let ok = 0;
    let cok = 0;
    for i in 0..N {
        if try { send(w, {i: i}); true } catch e { false } { ok += 1; }
        if try { send(tx, i); true } catch e { false } { cok += 1; }
    }
    let sent = false;
    while not sent { sent = try { send(w, {i: -1, ok: ok, cok: cok}); true } catch e { false }; }
}
let hello = spawn(worker, self());
let w = recv();
println("worker ${w.worker}");
spawn_on("n2", sender, w.worker, w.tx);
println(recv());
"#;
    let (vm, main_module) = loaded(VmConfig::default(), "refused.tern", PROGRAM);
    let out = Arc::new(Out::default());
    let (ns, net) = nodes(2, vm, out.clone());
    // Every 7th message n2 offers a node is refused, as a full link does.
    let mut offered: HashMap<u16, u64> = HashMap::new();
    *net.filter.lock() = Some(Box::new(move |from, to, op| {
        if from != 2 || !matches!(op, Op::Deliver(_)) {
            return false;
        }
        let n = offered.entry(to).or_default();
        *n += 1;
        (*n).is_multiple_of(7)
    }));
    let main = ns[0].spawn_main(main_module).unwrap();
    let exit = ns[0].wait_exit(main, Duration::from_secs(60)).expect("main ends");
    assert!(exit.reason.is_normal(), "{:?}\n{}", exit.reason, out.text());
    let text = out.text();
    let line = text.lines().find(|l| l.starts_with("bad ")).unwrap_or_else(|| panic!("{text}"));
    let n: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    assert_eq!(n[0], 0, "{text}");
    assert_eq!(n[1], n[2], "every message sent arrived: {text}");
    assert!(n[2] < 300 && n[3] < 300, "some were refused: {text}");
    for n in ns {
        n.stop();
    }
}

/// Messages that reach a destination while the process is being imported there wait for
/// it; if the import is aborted they go on to where the process still is, in order.
#[test]
fn an_aborted_import_sends_on_what_reached_it() {
    let (ns, net, out, main, worker) = start_ring(3, ["n3", "n3", "n3"], false);
    std::thread::sleep(Duration::from_millis(10));
    // n3 learns the worker is on n2, then it goes back to n1 without telling n3: n3
    // keeps sending to n2.
    move_process(&ns, worker, 1, 2, true);
    std::thread::sleep(Duration::from_millis(5));
    move_process(&ns, worker, 2, 1, false);
    std::thread::sleep(Duration::from_millis(5));
    ns[0].freeze(worker, Duration::from_secs(10)).unwrap();
    let image = ns[0].export_frozen(worker).unwrap();
    assert_eq!(ns[1].import_image(&image).unwrap(), worker);
    let (to_n2, n2_to_n1) = (net.delivers(3, 2), net.delivers(2, 1));
    let deadline = Instant::now() + Duration::from_secs(20);
    while net.delivers(3, 2) < to_n2 + 10 {
        assert!(Instant::now() < deadline, "n3 sent nothing to n2");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(3)); // and they have arrived
    ns[1].abort_import(worker);
    ns[0].abort_export(worker);
    assert!(net.delivers(2, 1) >= n2_to_n1 + 10, "what waited at n2 went on to n1");
    let exit = ns[0].wait_exit(main, Duration::from_secs(60)).expect("main ends");
    assert!(exit.reason.is_normal(), "{:?}\n{}", exit.reason, out.text());
    let text = out.text();
    assert!(text.contains("bad 0 on n1"), "{text}");
    assert!(ns[1].ps().is_empty(), "nothing left at n2");
    for n in ns {
        n.stop();
    }
}

/// The ring above with each forwarding mechanism: senders on all three nodes, the worker
/// moving n1 -> n2 -> n3 -> n1 -> n2, every sender's messages in order, none lost or
/// twice, whether the old node forwards (`link-traversal`), refuses and the senders'
/// nodes locate the worker (`resend`), or everything goes by n1, where the worker was
/// born (`origin-site`).
fn ring_by(fwd: Forwarding) {
    let (ns, _net, out, main, worker) = start_ring(3, ["n1", "n2", "n3"], false);
    for (from, to) in [(1, 2), (2, 3), (3, 1), (1, 2)] {
        std::thread::sleep(Duration::from_millis(12));
        move_process_by(&ns, worker, from, to, true, fwd);
    }
    let exit = ns[0].wait_exit(main, Duration::from_secs(60)).expect("main ends");
    assert!(exit.reason.is_normal(), "{fwd}: {:?}\n{}", exit.reason, out.text());
    let text = out.text();
    assert!(text.contains("bad 0 on n2"), "{fwd}: {text}");
    assert!(!text.contains("FAILED"), "{fwd}: {text}");
    for n in ns {
        n.stop();
    }
}

#[test]
fn resend_keeps_every_senders_order_over_many_moves() {
    ring_by(Forwarding::Resend);
}

#[test]
fn origin_site_keeps_every_senders_order_over_many_moves() {
    ring_by(Forwarding::OriginSite);
}

#[test]
fn link_traversal_keeps_every_senders_order_over_many_moves() {
    ring_by(Forwarding::LinkTraversal);
}

/// A worker on n1 that prints every message it gets, and where.
const ECHO: &str = r#"
fn worker(main) {
    send(main, self());
    while true {
        let m = recv();
        println("got ${m} on ${node()}");
    }
}
let w = spawn(worker, self());
println("worker ${recv()}");
recv();
"#;

fn start_echo(n: usize) -> (Vec<Arc<Node>>, Arc<Net>, Arc<Out>, Pid) {
    let (vm, main_module) = loaded(VmConfig::default(), "echo.tern", ECHO);
    let out = Arc::new(Out::default());
    let (ns, net) = nodes(n, vm, out.clone());
    ns[0].spawn_main(main_module).unwrap();
    let worker = worker_pid(&out);
    (ns, net, out, worker)
}

fn int(i: i64) -> Message {
    Message::scalar(Val::Int(i))
}

/// Waits until `cond` holds (20 s at most).
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// DEMOS/MP: every node the worker left keeps a link; the first message from n5 follows
/// the chain n1 (its birth node) -> n2 -> n3 -> n4, and n4 tells n5 where it is, so the
/// second goes straight there.
#[test]
fn link_traversal_shortens_a_chain_to_a_direct_link_after_one_message() {
    let (ns, net, out, w) = start_echo(5);
    for (from, to) in [(1, 2), (2, 3), (3, 4)] {
        move_process_by(&ns, w, from, to, true, Forwarding::LinkTraversal);
    }
    for n in [0, 1, 2] {
        assert_eq!(ns[n].route_kept(w), Some(true), "n{} keeps a link", n + 1);
    }
    let hops = || [net.delivers(5, 1), net.delivers(1, 2), net.delivers(2, 3), net.delivers(3, 4), net.delivers(5, 4)];
    assert_eq!(hops(), [0, 0, 0, 0, 0]);
    assert_eq!(ns[4].send_to(w, int(1)), Ok(true));
    out.line("got 1 on n4");
    assert_eq!(hops(), [1, 1, 1, 1, 0], "the first message follows the chain");
    until("n4 tells n5 where the worker is", || ns[4].located(w) == Some(4));
    assert_eq!(ns[4].send_to(w, int(2)), Ok(true));
    out.line("got 2 on n4");
    assert_eq!(hops(), [1, 1, 1, 1, 1], "the second goes straight to n4");
    assert_eq!(ns[3].forwarding_stats().shortened, 1);
    assert_eq!(ns[0].forwarding_stats().forwarded + ns[1].forwarding_stats().forwarded + ns[2].forwarding_stats().forwarded, 3);
    // When the worker ends, the links go.
    ns[3].kill(w, "done");
    until("every link is dropped", || (0..3).all(|n| ns[n].route_kept(w).is_none()));
    for n in ns {
        n.stop();
    }
}

/// V-System: the node the worker left keeps nothing and forwards nothing; a message that
/// reaches it is given back to its origin node, which asks every node where the worker
/// is, caches the answer and sends it again.
#[test]
fn resend_leaves_nothing_at_the_old_node_and_the_sender_locates_the_process() {
    let (ns, net, out, w) = start_echo(4);
    move_process_by(&ns, w, 1, 2, true, Forwarding::Resend);
    assert_eq!(ns[0].route_kept(w), Some(false), "its birth node knows only that it lives");
    // n3 knows nothing: by the birth node, which refuses; then located.
    assert_eq!(ns[2].send_to(w, int(1)), Ok(true));
    out.line("got 1 on n2");
    assert_eq!(ns[0].forwarding_stats().refused, 1);
    assert_eq!(ns[2].forwarding_stats().locate_queries, 3, "one question to each other node");
    assert_eq!(ns[2].located(w), Some(2), "the answer is cached");
    move_process_by(&ns, w, 2, 4, true, Forwarding::Resend);
    assert_eq!(ns[1].route_kept(w), None, "n2 keeps nothing");
    assert_eq!(ns[1].forwarding_state(w, &[]), (false, 0));
    // By the cached place, n2, which refuses; located again.
    assert_eq!(ns[2].send_to(w, int(2)), Ok(true));
    out.line("got 2 on n4");
    assert_eq!(ns[1].forwarding_stats().refused, 1);
    assert_eq!(ns[2].forwarding_stats().locate_queries, 6);
    // Now straight there.
    let before = net.delivers(3, 4);
    assert_eq!(ns[2].send_to(w, int(3)), Ok(true));
    out.line("got 3 on n4");
    assert_eq!(net.delivers(3, 4), before + 1);
    let forwarded: u64 = ns.iter().map(|n| n.forwarding_stats().forwarded).sum();
    assert_eq!(forwarded, 0, "no node forwarded anything");
    assert!(!out.text().contains("FAILED"), "{}", out.text());
    for n in ns {
        n.stop();
    }
}

/// Sprite: every message goes through n1, where the worker was born, which always knows
/// where it is; the nodes it left keep nothing. When n1 is down, a message to the worker
/// fails with an error naming n1, while the worker itself runs on.
#[test]
fn origin_site_goes_through_the_birth_node_and_fails_clearly_without_it() {
    let (ns, net, out, w) = start_echo(4);
    move_process_by(&ns, w, 1, 2, true, Forwarding::OriginSite);
    move_process_by(&ns, w, 2, 3, true, Forwarding::OriginSite);
    assert_eq!(ns[1].route_kept(w), None, "n2 keeps nothing");
    assert_eq!(ns[0].route_kept(w), Some(true), "n1 knows where it is");
    for i in 1..=3 {
        assert_eq!(ns[3].send_to(w, int(i)), Ok(true));
        out.line(&format!("got {i} on n3"));
    }
    assert_eq!((net.delivers(4, 1), net.delivers(1, 3), net.delivers(4, 3)), (3, 3, 0), "every message by n1");
    net.down.lock().push(1);
    let e = ns[3].send_to(w, int(4)).unwrap_err();
    assert!(e.contains("n1") && e.contains("origin-site") && e.contains("down"), "{e}");
    // The worker is not affected: a message from n3 itself (its own node) gets there.
    assert_eq!(ns[2].send_to(w, int(5)), Ok(true));
    out.line("got 5 on n3");
    for n in ns {
        n.stop();
    }
}

/// `[limits] held_bytes`: the messages a node holds while it locates their process are
/// bounded in bytes; past it a message is lost (its sender told: here, from outside any
/// process, counted and logged), and the bytes are given back once the process is found.
#[test]
fn a_node_holds_at_most_its_bytes_of_messages_waiting_for_a_located_process() {
    let (vm, main_module) = loaded(VmConfig::default(), "echo.tern", ECHO);
    let out = Arc::new(Out::default());
    let (ns, net) = inproc::nodes(4, vm, out.clone(), None, |c| NodeConfig { held_limit_bytes: 8 << 10, ..c });
    ns[0].spawn_main(main_module).unwrap();
    let w = worker_pid(&out);
    move_process_by(&ns, w, 1, 2, true, Forwarding::Resend);
    // No answer reaches n3 while it locates the worker.
    *net.filter.lock() = Some(Box::new(|_, to, op| to == 3 && matches!(op, Op::Located { .. })));
    let text = |i: usize| Message { root: Val::Obj(0), objs: vec![tern_vm::message::Obj::Str(format!("{i:04}{}", "x".repeat(1000)))] };
    for i in 0..20 {
        assert_eq!(ns[2].send_to(w, text(i)), Ok(true));
    }
    until("n3 holds what fits", || ns[2].forwarding_stats().unlocated > 0);
    let held = ns[2].held_for_locating();
    assert!(held > 4 << 10 && held <= 8 << 10, "{held} bytes held");
    let lost = ns[2].forwarding_stats().unlocated;
    assert!((10..=16).contains(&lost), "{lost} of 20 lost");
    // Answers come again: what was held goes on, and the bytes are given back.
    *net.filter.lock() = None;
    until("located", || ns[2].held_for_locating() == 0);
    out.line("got 0000");
    assert_eq!(ns[2].forwarding_stats().unlocated, lost, "nothing more lost");
    for n in ns {
        n.stop();
    }
}

/// A process that ended tells the nodes that keep something for it (its birth node's
/// route here) to forget it; a notice the link refused (full: that node slow or away) is
/// offered again until it is taken, so that the route does not stay for good.
#[test]
fn a_refused_notice_that_a_process_ended_is_sent_again() {
    let (ns, net, _out, w) = start_echo(2);
    move_process(&ns, w, 1, 2, true);
    assert!(ns[0].route_kept(w).is_some(), "its birth node keeps where it went");
    // The first two notices n2 offers n1 are refused, as a full link does.
    let refused = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let r = refused.clone();
    *net.filter.lock() = Some(Box::new(move |from, to, op| {
        from == 2 && to == 1 && matches!(op, Op::PidEnded { .. }) && r.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2
    }));
    ns[1].kill(w, "done");
    until("n2 owes n1 the notice", || refused.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    until("n1 forgets the process once the notice gets through", || ns[0].route_kept(w).is_none());
    assert!(net.ops(Some(2), Some(1), "PidEnded") >= 3, "offered again after each refusal");
    assert_eq!(ns[1].table_sizes().owed_notices, 0, "n2 owes nothing more");
    for n in ns {
        n.stop();
    }
}
