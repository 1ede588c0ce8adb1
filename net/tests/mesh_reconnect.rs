//! The mesh across broken connections and a node that leaves and comes back: messages
//! are delivered exactly once and in order per sender while every connection keeps
//! being dropped; a node that stops is reported down (monitors fire with `node_down`)
//! and is usable again when it returns.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_net::cmd::{loopback_mesh, start_all};
use tern_net::mesh::{LogSink, MeshNode, NodeOptions};
use tern_net::proto::wire::CtlReply;
use tern_net::runner::compile_text;

fn quiet(_: &str) -> LogSink {
    Arc::new(|_: &str| {})
}

/// Runs `source` on `node` with a console; returns its output (or panics after `limit`).
fn run_on(node: &MeshNode, source: &str, limit: Duration) -> String {
    let p = compile_text("test.tern", source).unwrap_or_else(|e| panic!("{}", e.rendered));
    for m in &p.modules {
        node.node().vm().load(m.clone()).unwrap();
    }
    let (console, mut rx) = node.open_console();
    let pid = node.node().spawn_main_on(p.main, console, true).unwrap();
    let exit = node.node().wait_exit(pid, limit);
    std::thread::sleep(Duration::from_millis(100));
    node.close_console(console);
    let mut out = String::new();
    while let Ok(r) = rx.try_recv() {
        if let CtlReply::Output { text, failed, .. } = r {
            if failed {
                out.push_str("FAILED: ");
            }
            out.push_str(&text);
        }
    }
    let exit = exit.unwrap_or_else(|| panic!("the program did not end within {limit:?}; output so far:\n{out}"));
    assert!(exit.reason.is_normal(), "the program ended: {}\n{out}", exit.reason.text());
    out
}

const EXACTLY_ONCE: &str = r#"
let N = 15000;
fn receiver(main, total) {
    let next = {};
    let bad = 0;
    let lost = false;
    for i in 0..total {
        let m = recv(20000);
        if is_timeout(m) {
            lost = true;
            break;
        }
        let want = get(next, m.from, 0);
        if m.i != want {
            bad += 1;
        }
        next[m.from] = m.i + 1;
    }
    send(main, {bad: bad, lost: lost, counts: values(next)});
}
fn sender(r, n) {
    for i in 0..n {
        send(r, {from: self(), i: i});
    }
}
let r = spawn_on("b", receiver, self(), 2 * N);
spawn_on("a", sender, r, N);
spawn_on("c", sender, r, N);
let res = recv();
println("bad=${res.bad} lost=${res.lost} counts=${res.counts}");
"#;

#[test]
fn exactly_once_and_in_order_while_connections_keep_breaking() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = loopback_mesh(dir.path(), 3, "").unwrap();
    let nodes = start_all(&cfg, quiet).unwrap();
    let made_before: u64 = nodes.iter().map(|n| n.connections_made()).sum();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let out = std::thread::scope(|s| {
        let breaker = s.spawn(|| {
            let mut drops = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(40));
                nodes[drops % 3].drop_connections();
                drops += 1;
            }
            drops
        });
        let out = run_on(&nodes[0], EXACTLY_ONCE, Duration::from_secs(90));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let drops = breaker.join().unwrap();
        eprintln!("{drops} times every connection of a node was dropped");
        out
    });
    let made_after: u64 = nodes.iter().map(|n| n.connections_made()).sum();
    assert_eq!(out.trim(), "bad=0 lost=false counts=[15000, 15000]", "{out}");
    assert!(made_after > made_before + 3, "connections were not remade: {made_before} -> {made_after}");
    for n in nodes {
        n.shutdown();
    }
}

#[test]
fn a_node_that_stops_is_down_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = loopback_mesh(dir.path(), 3, "").unwrap();
    let mut nodes = start_all(&cfg, quiet).unwrap();
    // A process on a watches one on c.
    let watch = r#"
fn idle() { recv(); }
let p = spawn_on("c", idle);
monitor(p);
println("watching");
let m = recv(15000);
if is_timeout(m) { println("no down message"); } else { println("${m.event} ${m.reason}"); }
"#;
    let a = nodes.remove(0);
    let c = nodes.remove(1);
    let b = nodes.remove(0);
    let t = std::thread::spawn(move || {
        let out = run_on(&a, watch, Duration::from_secs(30));
        (a, out)
    });
    std::thread::sleep(Duration::from_millis(500));
    c.shutdown();
    let (a, out) = t.join().unwrap();
    assert_eq!(out, "watching\ndown node_down\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.peer_up("c") {
        assert!(Instant::now() < deadline, "a still sees c up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = run_on(&a, "println(nodes());", Duration::from_secs(10));
    assert_eq!(out, "[\"a\", \"b\"]\n");
    // c comes back (a new incarnation): it is up again and usable.
    let c = MeshNode::start(&cfg, "c", NodeOptions { log: quiet("c"), workers: None, operators: None }).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(a.peer_up("c") && b.peer_up("c") && c.peer_up("a")) {
        assert!(Instant::now() < deadline, "c did not come back");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out =
        run_on(&a, r#"fn f(m) { send(m, node()); } spawn_on("c", f, self()); println(recv(10000), nodes());"#, Duration::from_secs(20));
    assert_eq!(out, "c [\"a\", \"b\", \"c\"]\n");
    for n in [a, b, c] {
        n.shutdown();
    }
}

const TRAVEL: &str = r#"
fn holder(main) {
    let rx = recv();
    send(main, "got it");
    send(main, recv(rx));
    recv();
}
fn sender(tx) {
    recv();
    send(tx, "hello from ${node()}");
}
let ch = channel();
let h = spawn_on("b", holder, self());
let s = spawn_on("c", sender, ch[0]);
send(h, ch[1]);
println(recv());
println(ch[0]);
send(s, "go");
println(recv());
"#;

/// The location tracking live migration builds on: the node hosting a receive end
/// knows which nodes hold send ends of it; the others know where it went.
#[test]
fn nodes_track_receive_ends_and_their_partners() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = loopback_mesh(dir.path(), 3, "").unwrap();
    let nodes = start_all(&cfg, quiet).unwrap();
    let out = run_on(&nodes[0], TRAVEL, Duration::from_secs(20));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], "got it");
    assert_eq!(lines[2], "hello from c");
    let name = lines[1].trim_start_matches("<sender ").trim_end_matches('>');
    let (n, serial) = name.split_once('.').unwrap();
    let chan = tern_vm::value::make_name(n.parse().unwrap(), serial.parse().unwrap());
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // The receive end went from a (where it was made) to b; c holds a send end.
    let at_b = b.node().channel_info(chan);
    assert!(at_b.held_here, "{at_b:?}");
    assert!(at_b.partners.contains(&3) && at_b.partners.contains(&1), "partners at b: {at_b:?}");
    let at_a = a.node().channel_info(chan);
    assert!(!at_a.held_here);
    assert_eq!(at_a.last_known, Some(2));
    // c was told where the receive end went (it may take a moment).
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.node().channel_info(chan).last_known != Some(2) {
        assert!(Instant::now() < deadline, "c does not know where the receive end is: {:?}", c.node().channel_info(chan));
        std::thread::sleep(Duration::from_millis(10));
    }
    for n in nodes {
        n.shutdown();
    }
}
