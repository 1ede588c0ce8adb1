//! A real mesh in this OS process: three nodes (a, b, c) on loopback QUIC with mutual
//! TLS, started with `cmd::loopback_mesh` + `cmd::start_all`. Programs run on node a
//! with a console (`MeshNode::open_console`) and use every node: remote spawn, 100k
//! messages by pid and by channel, a receive end that travels while everyone sends,
//! monitors and links when a node goes away, malformed frames from a peer, files on
//! other nodes, consoles across nodes, module shipping counts and spawn_on errors.
//!
//! The scaffolding (a [`TestMesh`] that shuts its nodes down when dropped, deadlines on
//! every wait) is in `common/mod.rs`.

mod common;

use common::*;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tern_net::config::MeshConfig;
use tern_net::mesh::MeshNode;
use tern_net::proto::hello::Hello;
use tern_net::proto::session::{decode_packet, encode_packet, Packet};
use tern_net::runner::compile_text;
use tern_vm::message::{Message, Val};

fn counters(n: &MeshNode) -> (u64, u64, u64) {
    let s = n.stats();
    (s.modules_sent.load(Ordering::SeqCst), s.module_bytes_sent.load(Ordering::SeqCst), s.modules_received.load(Ordering::SeqCst))
}

/// The node id in a pid's text (`<pid 2.15>` → 2).
fn pid_node(text: &str) -> u16 {
    let t = text.trim().trim_start_matches("<pid").trim_end_matches('>').trim();
    t.split_once('.').and_then(|(n, _)| n.parse().ok()).unwrap_or_else(|| panic!("{text:?} is not a pid"))
}

// ---------------------------------------------------------------------------------
// 1. Remote spawn
// ---------------------------------------------------------------------------------

#[test]
fn spawn_on_puts_a_child_on_every_node_and_pids_work_from_everywhere() {
    let mesh = TestMesh::start(3);
    let out = mesh.run_ok("a", "remote_spawn.tern", include_str!("../../examples/mesh/remote_spawn.tern"));
    assert!(out.contains("nodes: a,b,c"), "{out}");
    // Each child runs where it was put, under a pid born there.
    let ids = [("a", 1u16), ("b", 2), ("c", 3)];
    for (name, id) in ids {
        let line = out
            .lines()
            .find(|l| l.starts_with("hello from ") && l.ends_with(&format!(" on node {name}")))
            .unwrap_or_else(|| panic!("no hello from node {name}:\n{out}"));
        let pid = line.trim_start_matches("hello from ").split(" on node").next().unwrap();
        assert_eq!(pid_node(pid), id, "{line}");
        // Every child was greeted by the two others: messages by pid between every pair of nodes.
        let others: Vec<&str> = ids.iter().map(|(n, _)| *n).filter(|n| *n != name).collect();
        let heard = format!("{pid} on node {name} was greeted from {}", others.join(","));
        assert!(out.contains(&heard), "no line {heard:?}:\n{out}");
    }
    assert!(out.ends_with("done\n"), "{out}");
}

// ---------------------------------------------------------------------------------
// 2. 100k messages to one receiver
// ---------------------------------------------------------------------------------

fn flood(via: &str) {
    let mesh = TestMesh::start(3);
    let src = include_str!("../../examples/mesh/flood.tern");
    assert!(src.contains("let VIA = \"pid\";"));
    let src = src.replace("let VIA = \"pid\";", &format!("let VIA = \"{via}\";"));
    let t0 = Instant::now();
    let out = mesh.run_ok("a", "flood.tern", &src);
    let wall = t0.elapsed();
    let line = out.lines().find(|l| l.contains(" messages from ")).unwrap_or_else(|| panic!("no summary:\n{out}"));
    let total: u64 = line.split(' ').next().and_then(|n| n.parse().ok()).expect("a count");
    let ms: u64 = line.rsplit(" in ").next().and_then(|t| t.trim_end_matches(" ms").parse().ok()).expect("a time");
    assert!(total >= 100_000, "{line}");
    assert!(line.contains("9 senders on 3 nodes to a receiver on node b"), "{line}");
    assert!(out.ends_with("ok\n"), "{out}");
    eprintln!("flood via {via}: {line}: {:.0} messages/s (whole run {:.1} s)", total as f64 / (ms as f64 / 1000.0), wall.as_secs_f64());
}

#[test]
fn a_hundred_thousand_messages_by_pid_arrive_once_and_in_order() {
    flood("pid");
}

#[test]
fn a_hundred_thousand_messages_through_a_channel_arrive_once_and_in_order() {
    flood("channel");
}

// ---------------------------------------------------------------------------------
// 3. A receive end that travels
// ---------------------------------------------------------------------------------

#[test]
fn a_receive_end_travels_a_b_c_a_while_every_node_sends() {
    let mesh = TestMesh::start(3);
    let out = mesh.run_ok("a", "travel.tern", include_str!("../../examples/mesh/travel.tern"));
    let route = out.lines().find(|l| l.starts_with("route: ")).unwrap_or_else(|| panic!("no route:\n{out}"));
    let hops: Vec<&str> = route.trim_start_matches("route: ").split(" -> ").map(|h| h.split(':').next().unwrap()).collect();
    assert_eq!(hops, ["a", "a", "b", "c", "a"], "{out}");
    assert!(out.contains("read 18000 of 18000, 0 out of order, extra: false"), "{out}");
}

// ---------------------------------------------------------------------------------
// 4. A node goes away: monitors and links
// ---------------------------------------------------------------------------------

const NODE_DOWN: &str = r#"
fn sleeper() { recv(); }

fn linked(main, trap) {
    trap_exits(trap);
    let p = spawn_on("c", sleeper);
    link(p);
    send(main, {event: "linked", trap: trap});
    let m = recv();
    send(main, {event: "got", trap: trap, msg: m});
}

let target = spawn_on("c", sleeper);
monitor(target);
let plain = spawn(linked, self(), false);
monitor(plain);
let trapping = spawn(linked, self(), true);
for i in 0..2 {
    let m = recv(10000);
    assert(not is_timeout(m) and m.event == "linked", "not linked: ${m}");
}
println("ready");
let t0 = mono_ms();
let need = 3;
while need > 0 {
    let m = recv(15000);
    assert(not is_timeout(m), "still waiting for ${need} events 15 s after ready");
    let ms = mono_ms() - t0;
    if m.event == "down" and m.pid == target {
        println("target down: ${m.reason} after ${ms} ms");
    } else if m.event == "down" and m.pid == plain {
        println("linked down: ${m.reason} after ${ms} ms");
    } else if m.event == "got" and m.trap {
        println("trapping got: ${m.msg.event} ${m.msg.reason} after ${ms} ms");
    } else {
        println("unexpected: ${m}");
    }
    need -= 1;
}
let more = recv(500);
if not is_timeout(more) {
    println("unexpected: ${more}");
}
"#;

#[test]
fn when_a_node_goes_down_monitors_and_links_fire_with_node_down() {
    let mut mesh = TestMesh::start(3);
    let mut run = mesh.run("a", "node_down.tern", NODE_DOWN);
    run.wait_line(&mesh, "ready", |l| l == "ready");
    let t0 = Instant::now();
    mesh.stop("c");
    let exit = run.finish(&mesh, Duration::from_secs(30));
    run.assert_normal(&mesh, &exit);
    let out = &run.text;
    eprintln!("node c stopped; {:?} later:\n{out}", t0.elapsed());
    assert!(!out.contains("unexpected"), "{out}");
    assert!(out.contains("target down: node_down after "), "{out}");
    let linked = out.lines().find(|l| l.starts_with("linked down: ")).unwrap_or_else(|| panic!("{out}"));
    assert!(linked.contains("node_down"), "{linked}");
    assert!(out.contains("trapping got: exit node_down after "), "{out}");
    // (How soon is not asserted: the program's own 15 s wait is the liveness bound.)
    assert!(!mesh.node("a").peer_up("c") && !mesh.node("b").peer_up("c"));
    assert!(mesh.log_of("a").iter().any(|l| l == "node c is down"), "{}", mesh.log_text());
}

// ---------------------------------------------------------------------------------
// 5. Malformed frames from a peer
// ---------------------------------------------------------------------------------

/// Talks to node `to` as node `me` would, over a fresh connection, in `rt`.
struct FakePeer {
    rt: tokio::runtime::Runtime,
    ep: quinn::Endpoint,
    cc: quinn::ClientConfig,
}

impl FakePeer {
    fn new(cfg: &MeshConfig, me: &str) -> FakePeer {
        tern_net::tls::install_provider();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let cc = tern_net::tls::client_config(cfg, me, tern_net::tls::ALPN_MESH).expect("a client config");
        let ep = {
            let _g = rt.enter();
            quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap()
        };
        FakePeer { rt, ep, cc }
    }

    /// Connects to `addr` (node `name`), sends this version's hello and `bytes` on a uni
    /// stream and finishes it; then waits up to 5 s for the node to close the
    /// connection. Whether it did.
    fn send_and_wait_close(&self, addr: std::net::SocketAddr, name: &str, bytes: &[u8]) -> bool {
        let mut all = Hello::ours().encode().to_vec();
        all.extend_from_slice(bytes);
        self.send_raw_and_wait_close(addr, name, &all).is_some()
    }

    /// Connects to `addr` (node `name`), sends `bytes` (from the stream's first byte) on
    /// a uni stream and finishes it; then waits up to 5 s for the node to close the
    /// connection. Why it closed it, if it did.
    fn send_raw_and_wait_close(&self, addr: std::net::SocketAddr, name: &str, bytes: &[u8]) -> Option<quinn::ConnectionError> {
        self.rt.block_on(async {
            let conn = tokio::time::timeout(Duration::from_secs(5), self.ep.connect_with(self.cc.clone(), addr, name).unwrap())
                .await
                .expect("connected within 5 s")
                .expect("connected");
            let mut s = conn.open_uni().await.expect("a stream");
            s.write_all(bytes).await.expect("written");
            let _ = s.finish();
            let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.ok();
            conn.close(0u32.into(), b"done");
            closed
        })
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.ep.close(0u32.into(), b"bye");
    }
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

#[test]
fn malformed_frames_are_rejected_and_the_mesh_keeps_working() {
    let mut mesh = TestMesh::config(3, "");
    mesh.start_node("a");
    mesh.start_node("b");
    mesh.wait_connected(&["a".to_string(), "b".to_string()]);
    let addr = mesh.cfg.node("a").unwrap().addr;
    let max = mesh.cfg.limits.frame_bytes;
    let fake = FakePeer::new(&mesh.cfg, "c");

    let hello = encode_packet(&Packet::Hello { from: 3, epoch: 7, peer_epoch: None, next_expected: 0 });
    assert!(decode_packet(&hello, 1 << 20).is_ok());
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let random: Vec<u8> = (0..256)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let mut too_big = (max as u32 + 1).to_le_bytes().to_vec();
    too_big.extend_from_slice(&[1; 64]);
    let mut truncated = framed(&hello);
    truncated.truncate(4 + hello.len() / 2);
    let mut wrong_version = hello.clone();
    wrong_version[0] = 99;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("random bytes", random, "closing the connection with node c"),
        ("a length over frame_bytes", too_big, &format!("is over the limit of {max}")),
        ("a truncated frame", truncated, "truncated frame"),
        ("a wrong version byte", framed(&wrong_version), "version 99"),
    ];
    let a = mesh.node("a");
    for (what, bytes, says) in &cases {
        let before = a.stats().frames_rejected.load(Ordering::SeqCst);
        let log_before = mesh.log_of("a").len();
        let closed = fake.send_and_wait_close(addr, "a", bytes);
        let counted = wait_until(Duration::from_secs(20), || a.stats().frames_rejected.load(Ordering::SeqCst) > before);
        let logged = wait_until(Duration::from_secs(20), || {
            mesh.log_of("a")[log_before..].iter().any(|l| l.starts_with("closing the connection with node c") && l.contains(says))
        });
        assert!(closed, "{what}: node a did not close the connection; logs:\n{}", mesh.log_text());
        assert!(counted, "{what}: frames_rejected did not go up; logs:\n{}", mesh.log_text());
        assert!(logged, "{what}: nothing in a's log mentions {says:?}; logs:\n{}", mesh.log_text());
    }
    assert_eq!(a.stats().frames_rejected.load(Ordering::SeqCst), cases.len() as u64);
    assert!(!a.peer_up("c"), "a fake peer that never sent a valid packet is not up");

    // a and b still work together.
    let out = mesh.run_ok(
        "a",
        "after.tern",
        "fn f(m) { send(m, node()); }\nspawn_on(\"b\", f, self());\nlet r = recv(10000);\nprintln(\"from ${r}, nodes ${nodes()}\");\n",
    );
    assert_eq!(out, "from b, nodes [\"a\", \"b\"]\n");
}

/// A node of an incompatible version (here: a hello from a "future" one, whose packets
/// would be of wire version one more) is refused when the connection opens, and both
/// sides are told both versions.
#[test]
fn a_node_of_another_version_is_refused_naming_both_versions() {
    let mut mesh = TestMesh::config(3, "");
    mesh.start_node("a");
    let addr = mesh.cfg.node("a").unwrap().addr;
    let fake = FakePeer::new(&mesh.cfg, "c");
    let ours = Hello::ours();
    let future = Hello { wire: ours.wire + 1, frame: ours.frame + 1, features: ours.features | 1 << 50, ..ours };
    let mut bytes = future.encode().to_vec();
    // What it says next is in its own version: never read.
    bytes.extend_from_slice(&[0xff; 64]);
    let why = fake.send_raw_and_wait_close(addr, "a", &bytes).expect("node a closed the connection");
    let quinn::ConnectionError::ApplicationClosed(c) = &why else { panic!("{why}") };
    let reason = String::from_utf8_lossy(&c.reason).into_owned();
    let theirs = format!("node c speaks wire {}, frame {}, image {}", future.wire, future.frame, future.image);
    let mine = format!("node a speaks wire {}, frame {}, image {}", ours.wire, ours.frame, ours.image);
    assert!(reason.contains(&theirs) && reason.contains(&mine) && reason.contains("incompatible Tern versions"), "{reason}");
    assert!(
        mesh.wait_log("a", Duration::from_secs(10), |l| l.starts_with("refused the connection with node c: ")
            && l.contains(&theirs)
            && l.contains(&mine)),
        "{}",
        mesh.log_text()
    );
    assert_eq!(mesh.node("a").stats().frames_rejected.load(Ordering::SeqCst), 0, "nothing past the hello was read");
    // Something that is not a Tern node at all.
    let before = mesh.log_of("a").len();
    assert!(fake.send_raw_and_wait_close(addr, "a", b"GET / HTTP/1.1\r\n\r\n").is_some());
    assert!(
        mesh.wait_log("a", Duration::from_secs(10), |l| l.contains("did not open with a Tern hello")),
        "{}",
        mesh.log_of("a")[before..].join("\n")
    );
}

// ---------------------------------------------------------------------------------
// 6. Files across the mesh
// ---------------------------------------------------------------------------------

const FILES: &str = r#"
let f = open("/node/b/x.txt", "w");
write(f, "written on ${node()} into b");
close(f);
let g = open("/node/b/x.txt");
println("read back: ${read(g)}");
close(g);
let s = open("/shared/y.txt", "w");
write(s, "shared from ${node()}");
close(s);
let p = open("plain.txt", "w");
write(p, "plain from ${node()}");
close(p);

fn on_c(main) {
    let f = open("plain.txt", "w");
    write(f, "plain from ${node()}");
    close(f);
    let g = open("plain.txt");
    let back = read(g);
    close(g);
    let h = open("/node/a/plain.txt");
    let there = read(h);
    close(h);
    send(main, [back, there]);
}
spawn_on("c", on_c, self());
let r = recv(10000);
println("c read back: ${r[0]}; a's: ${r[1]}");
let e = try { open("/node/zz/x.txt", "w"); "no error" } catch e { e };
println("unknown node: ${e}");
let e2 = try { open("/node/b/missing.txt"); "no error" } catch e { e };
println("missing: ${e2}");
let e3 = try { open("/node/b/../../../escape.txt", "w"); "no error" } catch e { e };
println("escape: ${e3}");
let e4 = try { open("/node/b/../../up.txt", "w"); "no error" } catch e { e };
println("up: ${e4}");
"#;

#[test]
fn files_on_other_nodes_the_shared_replica_and_the_home_node_root() {
    let mesh = TestMesh::start(3);
    let out = mesh.run_ok("a", "files.tern", FILES);
    let node = |n: &str| mesh.cfg.node(n).unwrap().clone();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}\noutput:\n{out}", p.display()));
    assert!(out.contains("read back: written on a into b\n"), "{out}");
    assert_eq!(read(&node("b").root.join("x.txt")), "written on a into b");
    assert!(!node("a").root.join("x.txt").exists(), "x.txt was written on a too");
    assert_eq!(read(&node("a").shared.join("y.txt")), "shared from a");
    // The child on c has its parent's home, a: its plain.txt is a's.
    assert_eq!(read(&node("a").root.join("plain.txt")), "plain from c");
    assert!(!node("c").root.join("plain.txt").exists(), "plain.txt was written on c");
    assert!(out.contains("c read back: plain from c; a's: plain from c\n"), "{out}");
    let line = |p: &str| out.lines().find(|l| l.starts_with(p)).unwrap_or_else(|| panic!("no {p}:\n{out}")).to_string();
    let unknown = line("unknown node: ");
    assert!(unknown.contains("zz") && !unknown.contains("no error"), "{unknown}");
    let missing = line("missing: ");
    assert!(missing.contains("no such file"), "{missing}");
    let escape = line("escape: ");
    assert!(escape.contains("outside the node's file root"), "a path with .. out of the namespace was accepted: {escape}");
    // `..` is resolved in the mesh's namespace before anything else: out of /node/b/ and
    // back to a plain path (here: the root of a, where the process was spawned). Never
    // above a node's root.
    let up = line("up: ");
    for dir in [mesh.dir.path().to_path_buf(), mesh.dir.path().join("files")] {
        for f in ["escape.txt", "up.txt"] {
            assert!(!dir.join(f).exists(), "{escape} / {up}: {f} was written in {}", dir.display());
        }
    }
    assert!(up == "up: no error" && node("a").root.join("up.txt").exists(), "{up}");
}

// ---------------------------------------------------------------------------------
// 7. Consoles across nodes
// ---------------------------------------------------------------------------------

const CONSOLE: &str = r#"
fn chatty(main) {
    println("from ${node()}: hello");
    send(main, "printed");
    let go = recv(20000);
    println("from ${node()} after close: ${go}");
    send(main, "again");
}
let c = spawn_on("c", chatty, self());
assert(recv(10000) == "printed", "no word from c");
println("main saw it");
let go = recv(20000);
assert(not is_timeout(go), "no gate");
send(c, go);
assert(recv(10000) == "again", "no second word from c");
println("main after close");
"#;

#[test]
fn output_of_a_process_on_c_reaches_the_console_on_a_and_the_log_once_closed() {
    let mesh = TestMesh::start(3);
    let mut run = mesh.run("a", "console.tern", CONSOLE);
    let line = run.wait_line(&mesh, "from c", |l| l.starts_with("from c"));
    assert_eq!(line, "from c: hello");
    run.wait_line(&mesh, "main saw it", |l| l == "main saw it");
    let a = mesh.node("a");
    a.close_console(run.console);
    let sent = a.node().send_to(run.pid, Message::scalar(Val::Int(7))).expect("sent");
    assert!(sent, "main ended early");
    let exit = run.finish(&mesh, LONG);
    run.assert_normal(&mesh, &exit);
    assert!(run.closed, "the console stayed open");
    assert_eq!(run.text, "from c: hello\nmain saw it\n", "output after close_console reached the console");
    for l in ["from c after close: 7", "main after close"] {
        assert!(mesh.wait_log("a", Duration::from_secs(20), |x| x == l), "{l:?} is not in a's log:\n{}", mesh.log_text());
        assert!(!mesh.log_of("c").iter().any(|x| x == l), "{l:?} went to c's log");
    }
}

// ---------------------------------------------------------------------------------
// 8. Module shipping
// ---------------------------------------------------------------------------------

const SHIP_1: &str = "fn echo(m) { send(m, node()); }\nspawn_on(\"b\", echo, self());\nassert(recv(10000) == \"b\", \"no echo\");\n";
const SHIP_2: &str =
    "fn echo2(m) { send(m, node() + \"!\"); }\nspawn_on(\"b\", echo2, self());\nassert(recv(10000) == \"b!\", \"no echo\");\n";
const SHIP_3: &str = "import list;\nfn sq(m) { send(m, list.map([1, 2, 3], fn(x) { x * x })); }\nspawn_on(\"b\", sq, self());\nlet r = recv(10000);\nassert(r[2] == 9, \"got ${r}\");\n";

#[test]
fn modules_are_shipped_once_and_only_the_new_ones() {
    let mesh = TestMesh::start(3);
    let (a, b) = (mesh.node("a"), mesh.node("b"));
    // A module's hash covers its file name: compile with the name `run_ok` uses.
    let hashes = |src: &str| -> Vec<(tern_vm::ModuleHash, usize)> {
        compile_text("ship.tern", src).unwrap().modules.iter().map(|m| (m.hash(), m.encode().len())).collect()
    };
    let mut shipped: HashSet<tern_vm::ModuleHash> = HashSet::new();
    let mut expect = |src: &str| -> (u64, u64) {
        let new: Vec<(tern_vm::ModuleHash, usize)> = hashes(src).into_iter().filter(|(h, _)| shipped.insert(*h)).collect();
        (new.len() as u64, new.iter().map(|(_, n)| *n as u64).sum())
    };
    let c0 = counters(a);
    let r0 = counters(b);
    let step = |name: &str, src: &str, (want_n, want_bytes): (u64, u64)| {
        let before = (counters(a), counters(b));
        mesh.run_ok("a", "ship.tern", src);
        let after = (counters(a), counters(b));
        let sent = (after.0 .0 - before.0 .0, after.0 .1 - before.0 .1);
        let received = after.1 .2 - before.1 .2;
        eprintln!("{name}: a sent {} modules ({} bytes), b received {received}", sent.0, sent.1);
        assert_eq!(sent, (want_n, want_bytes), "{name}: modules (and bytes) a sent to b");
        assert_eq!(received, want_n, "{name}: modules b received");
    };
    let first = expect(SHIP_1);
    assert!(first.0 >= 1);
    step("first run", SHIP_1, first);
    step("second run of the same program", SHIP_1, (0, 0));
    let other = expect(SHIP_2);
    assert_eq!(other.0, 1, "a one-module program");
    step("another program", SHIP_2, other);
    let with_import = expect(SHIP_3);
    assert!(with_import.0 >= 2, "the program and the list module");
    step("a program importing list", SHIP_3, with_import);
    step("that program again", SHIP_3, (0, 0));
    // Nothing went to c, nothing came back to a.
    assert_eq!(counters(mesh.node("c")).2, 0);
    assert_eq!(counters(a).2, c0.2);
    assert_eq!(counters(b).0, r0.0);
}

// ---------------------------------------------------------------------------------
// 9. spawn_on errors
// ---------------------------------------------------------------------------------

const SPAWN_ERRORS: &str = r#"
fn f() { 1 }
let e1 = try { spawn_on("zz", f); "no error" } catch e { e };
println("unknown: ${e1}");
let e2 = try { spawn_on("c", f); "no error" } catch e { e };
println("down: ${e2}");
let e3 = try { spawn_on(42, f); "no error" } catch e { e };
println("not a name: ${e3}");
let e4 = try { spawn_on("b", 42); "no error" } catch e { e };
println("not a function: ${e4}");
fn g(m) { send(m, "started"); }
let e5 = try { spawn_on(["b", "zz"], g, self()); "no error" } catch e { e };
println("list, unknown: ${e5}");
let e6 = try { spawn_on(["a", "b", "c"], g, self()); "no error" } catch e { e };
println("list, down: ${e6}");
let started = recv(300);
println("started: ${if is_timeout(started) { "none" } else { started }}");
let e7 = try { spawn_on(["b", 42], g, self()); "no error" } catch e { e };
println("list, not a name: ${e7}");
let ends = channel();
fn h(rx) { recv(rx) }
let e8 = try { spawn_on(["b"], h, ends[1]); "no error" } catch e { e };
println("list, receive end: ${e8}");
println("nodes: ${nodes()}");
"#;

#[test]
fn spawn_on_an_unknown_or_down_node_is_an_error_the_program_catches() {
    let mut mesh = TestMesh::start(3);
    mesh.stop("c");
    assert!(
        wait_until(Duration::from_secs(10), || !mesh.node("a").peer_up("c")),
        "a did not see c go down within 10 s; logs:\n{}",
        mesh.log_text()
    );
    let out = mesh.run_ok("a", "spawn_errors.tern", SPAWN_ERRORS);
    let line = |p: &str| out.lines().find(|l| l.starts_with(p)).unwrap_or_else(|| panic!("no {p}:\n{out}")).to_string();
    assert_eq!(line("unknown: "), "unknown: spawn_on: there is no node \"zz\" in the mesh");
    let down = line("down: ");
    assert!(down.contains("down") && down.contains('c') && !down.contains("no error"), "{down}");
    assert!(line("not a name: ").contains("expected a node name"), "{out}");
    assert!(line("not a function: ").contains("expected a Tern function"), "{out}");
    // A list: every name is checked before anything starts.
    assert_eq!(line("list, unknown: "), "list, unknown: spawn_on: there is no node \"zz\" in the mesh");
    assert!(line("list, down: ").contains("node c is down"), "{out}");
    assert_eq!(line("started: "), "started: none", "a list with a bad name started children:\n{out}");
    assert!(line("list, not a name: ").contains("expected a list of node names"), "{out}");
    assert!(line("list, receive end: ").contains("cannot be given to every node of a list"), "{out}");
    assert_eq!(line("nodes: "), "nodes: [\"a\", \"b\"]");
}

/// A receive end bouncing off its birth node while senders there keep sending, over
/// QUIC (`delivery.rs` runs the same program between in-process nodes, many more round
/// trips a second): nothing lost, duplicated or reordered. (A sender on the birth node
/// that looked for the end while it arrived there could find it nowhere and drop its
/// message without a word; an end back before its sender had let go of it was let go
/// again.)
#[test]
fn a_receive_end_bouncing_off_its_birth_node_loses_nothing() {
    let mesh = TestMesh::start(2);
    let out = mesh.run_ok("a", "bounce.tern", include_str!("../../examples/mesh/bounce.tern"));
    eprintln!("{out}");
    assert!(out.contains(", 0 out of order, extra: false"), "{out}");
}

// ---------------------------------------------------------------------------------
// Shutting down a busy node
// ---------------------------------------------------------------------------------

/// Panics of the nodes' own threads (`tern-...`) in this test binary.
static NODE_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record_node_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("").to_string();
            if thread.starts_with("tern-") {
                NODE_PANICS.lock().push(format!("thread {thread}: {info}"));
            }
            previous(info);
        }));
    });
}

const BUSY: &str = r#"
fn chatter(main) {
    while true {
        send(main, node());
    }
}
for k in 0..4 {
    spawn_on("b", chatter, self());
}
let n = 0;
while n < 20000 {
    recv(10000);
    n += 1;
}
println("busy");
while true {
    if is_timeout(recv(3000)) {
        break;
    }
}
"#;

#[test]
fn shutting_down_a_node_whose_processes_are_sending_does_not_panic() {
    record_node_panics();
    for round in 0..3 {
        let mut mesh = TestMesh::start(2);
        let mut run = mesh.run("a", "busy.tern", BUSY);
        run.wait_line(&mesh, "busy", |l| l == "busy");
        let t0 = Instant::now();
        mesh.stop("b");
        assert!(t0.elapsed() < Duration::from_secs(10), "stopping b took {:?}", t0.elapsed());
        let exit = run.finish(&mesh, Duration::from_secs(20));
        run.assert_normal(&mesh, &exit);
        // Give a panicking thread time to report.
        std::thread::sleep(Duration::from_millis(200));
        let panics: Vec<String> = NODE_PANICS.lock().iter().filter(|p| p.contains("tern-2-")).cloned().collect();
        assert!(panics.is_empty(), "round {round}: threads of node b panicked when it was stopped:\n{}", panics.join("\n"));
    }
}

// ---------------------------------------------------------------------------------
// Limits of a node: spawns per peer per second, processes (spawned or migrated there)
// ---------------------------------------------------------------------------------

#[test]
fn a_node_refuses_spawns_from_a_peer_past_its_rate_with_a_clear_error() {
    let mesh = TestMesh::start_with(2, "spawns_per_peer_s = 5\n");
    let out = mesh.run_ok(
        "a",
        "spawn_rate.tern",
        r#"
fn idle() { sleep(10); }
let ok = 0;
let refused = 0;
let why = "";
let i = 0;
while i < 40 {
    try { spawn_on("b", idle); ok += 1; } catch e { refused += 1; why = e; }
    i += 1;
}
println("ok", ok, "refused", refused);
println("why", why);
"#,
    );
    let counts: Vec<u64> = out.lines().next().unwrap().split(' ').filter_map(|w| w.parse().ok()).collect();
    // A second's worth at once, and what the bucket refills while the 40 go by.
    assert!((5..=10).contains(&counts[0]) && counts[0] + counts[1] == 40, "{out}");
    assert!(out.contains("why node b refused the spawn: node a asked for more than 5 a second ([limits] spawns_per_peer_s)"), "{out}");
    assert!(mesh.node("b").stats().spawns_refused.load(Ordering::SeqCst) >= 30);
}

#[test]
fn a_node_at_its_process_limit_refuses_spawns_and_migrations_to_it() {
    let mesh = TestMesh::start_with(2, "processes = 2\n");
    let mut run = mesh.run(
        "a",
        "process_limit.tern",
        r#"
fn idle() { recv(); }
let b1 = spawn_on("b", idle);
let b2 = spawn_on("b", idle);
println("third on b:", try { spawn_on("b", idle); "spawned" } catch e { e });
let x = spawn(idle);
println("x", x);
recv();
"#,
    );
    let third = run.wait_line(&mesh, "third", |l| l.starts_with("third on b:"));
    assert!(third.ends_with("node b runs 2 processes, its limit ([limits] processes = 2)"), "{third}");
    let x = run.wait_line(&mesh, "x", |l| l.starts_with("x <pid"));
    let x = mesh.all_procs().into_iter().map(|(_, p)| p).find(|p| x.contains(&tern_vm::value::name_text(*p))).expect("x runs");
    let report = mesh.node("a").migrate(x, "b", None).unwrap();
    assert!(!report.ok, "{report:?}");
    assert!(report.outcome.contains("destination refused: OverLimits (the process does not fit its limits"), "{report:?}");
    assert!(mesh.wait_log("b", LONG, |l| l.contains("refused a migration from node a: node b runs 2 processes")), "{}", mesh.log_text());
    assert_eq!(mesh.where_is(x).as_deref(), Some("a"), "x stays where it ran");
}
