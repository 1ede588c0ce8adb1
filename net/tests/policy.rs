//! The load policy on a loopback mesh in this OS process (the simulator is
//! `policy_sim.rs`): busy nodes shed work until the mesh is balanced, and nothing moves
//! with the policy off.

mod common;

use common::{wait_until, TestMesh};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tern_vm::message::{Message, Val};

/// A policy quick enough for a test: short windows and residence times.
const QUICK: &str =
    "[policy]\nmode = \"balance\"\nhysteresis_ms = 200\nresidence_ms = 400\ninterval_ms = 100\ngossip_ms = 50\nwindow_ms = 300\n";

/// `n` CPU-bound workers started on the main process's node; each computes in chunks
/// until main tells it to stop (main waits for a message from the test first), then
/// reports its chunks and their total, which main checks (progress lost or done twice
/// in a move would show).
fn workers(n: u32) -> String {
    format!(
        "let CHUNK = 332833500;\n\
         fn work(parent) {{\n\
           let chunks = 0;\n\
           let total = 0;\n\
           while true {{\n\
             let s = 0;\n\
             for i in 0..1000 {{ s += i * i; }}\n\
             total += s;\n\
             chunks += 1;\n\
             let m = recv(0);\n\
             if m == \"stop\" {{ break; }}\n\
           }}\n\
           send(parent, {{chunks: chunks, total: total, node: node()}});\n\
         }}\n\
         let ws = [];\n\
         for k in 0..{n} {{ push(ws, spawn(work, self())); }}\n\
         println(\"started ${{len(ws)}}\");\n\
         recv();\n\
         for w in ws {{ send(w, \"stop\"); }}\n\
         let right = 0;\n\
         for k in 0..{n} {{\n\
           let r = recv();\n\
           if r.chunks > 0 and r.total == r.chunks * CHUNK {{ right += 1; }}\n\
         }}\n\
         println(\"right ${{right}} of {n}\");\n"
    )
}

/// How many processes each node runs, the main process not counted.
fn spread(mesh: &TestMesh, main: u64) -> Vec<(String, usize)> {
    mesh.names().into_iter().map(|n| (n.clone(), mesh.node(&n).node().ps().iter().filter(|p| p.pid != main).count())).collect()
}

/// Migrations each process made, from every node's reports.
fn moves(mesh: &TestMesh) -> HashMap<u64, usize> {
    let mut m = HashMap::new();
    for n in mesh.names() {
        for r in mesh.node(&n).reports() {
            if r.ok {
                *m.entry(r.pid).or_default() += 1;
            }
        }
    }
    m
}

#[test]
fn twelve_cpu_bound_workers_on_one_node_spread_over_three() {
    let mesh = TestMesh::start_with(3, QUICK);
    let mut run = mesh.run("a", "spread.tern", &workers(12));
    run.wait_line(&mesh, "started", |l| l == "started 12");
    let t0 = Instant::now();
    let balanced = wait_until(Duration::from_secs(30), || spread(&mesh, run.pid).iter().all(|(_, k)| (3..=5).contains(k)));
    let took = t0.elapsed();
    let at = spread(&mesh, run.pid);
    assert!(balanced, "not spread within 30 s: {at:?}\nlogs:\n{}", mesh.log_text());
    // Settled: it stays so for a while.
    std::thread::sleep(Duration::from_secs(2));
    let later = spread(&mesh, run.pid);
    assert!(later.iter().all(|(_, k)| (3..=5).contains(k)), "spread {at:?}, then {later:?}");
    mesh.node("a").node().send_to(run.pid, Message::scalar(Val::Nil)).unwrap();
    run.wait_line(&mesh, "results", |l| l.starts_with("right "));
    assert!(run.text.contains("right 12 of 12"), "{}", run.text);
    let m = moves(&mesh);
    assert!(m.values().all(|&k| k <= 2), "a worker moved more than twice: {m:?}");
    assert!(m.values().sum::<usize>() >= 7, "at least 7 of 12 left node a: {m:?}");
    let policy_lines = mesh.log_of("a").into_iter().filter(|l| l.starts_with("policy: moving")).count();
    assert!(policy_lines >= 7, "every move is logged with its reason:\n{}", mesh.log_text());
    eprintln!("balanced in {took:?}: {at:?}, moves {m:?}");
}

#[test]
fn with_the_policy_off_nothing_moves() {
    let mesh = TestMesh::start_with(3, &QUICK.replace("\"balance\"", "\"off\""));
    let mut run = mesh.run("a", "stay.tern", &workers(6));
    run.wait_line(&mesh, "started", |l| l == "started 6");
    std::thread::sleep(Duration::from_secs(3));
    let at = spread(&mesh, run.pid);
    assert_eq!(at, vec![("a".to_string(), 6), ("b".to_string(), 0), ("c".to_string(), 0)]);
    mesh.node("a").node().send_to(run.pid, Message::scalar(Val::Nil)).unwrap();
    run.wait_line(&mesh, "results", |l| l.starts_with("right "));
    assert!(run.text.contains("right 6 of 6"), "{}", run.text);
    assert!(moves(&mesh).is_empty());
}

#[test]
fn pinned_processes_stay_and_bad_pin_calls_are_errors() {
    let mesh = TestMesh::start_with(3, QUICK);
    // The workers pin themselves, except one started pinned by its parent.
    let src = workers(6).replace("fn work(parent) {\n", "fn work(parent) {\npin();\n").replace(
        "println(\"started",
        "fn idle() { recv(); }\n\
             let p = spawn(idle, {pin: true});\n\
             println(\"pin was ${pin(false)}, then ${pin()}\");\n\
             try { pin(\"yes\"); } catch e { println(\"error: ${e}\"); }\n\
             try { spawn(idle, {pin: 1}); } catch e { println(\"error: ${e}\"); }\n\
             kill(p);\n\
             println(\"started",
    );
    let mut run = mesh.run("a", "pinned.tern", &src);
    run.wait_line(&mesh, "started", |l| l == "started 6");
    assert!(run.text.contains("pin was false, then false"), "{}", run.text);
    assert!(run.text.contains("error: pin: expected true or false, not a string"), "{}", run.text);
    assert!(run.text.contains("error: spawn: the pin option is true or false, not an int"), "{}", run.text);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(spread(&mesh, run.pid)[0], ("a".to_string(), 6), "pinned workers moved");
    mesh.node("a").node().send_to(run.pid, Message::scalar(Val::Nil)).unwrap();
    run.wait_line(&mesh, "results", |l| l.starts_with("right "));
    assert!(moves(&mesh).is_empty());
    let log = mesh.log_of("a").join("\n");
    assert!(!log.contains("policy: moving"), "{log}");
}

/// A talker on node a that exchanges messages with a pinned echo process on node c; each
/// reply is checked (its number and its padding), and the talker reports how many came
/// in order and the node it ended on.
const TALKER: &str = include_str!("common/talker.tern");

#[test]
fn a_process_talking_to_a_partner_on_node_c_moves_to_c() {
    let mesh = TestMesh::start_with(3, &QUICK.replace("\"balance\"", "\"affinity\""));
    let mut run = mesh.run("a", "talk.tern", TALKER);
    run.wait_line(&mesh, "started", |l| l == "started");
    let t0 = Instant::now();
    let moved = wait_until(Duration::from_secs(30), || spread(&mesh, run.pid) == [("a".into(), 0), ("b".into(), 0), ("c".into(), 2)]);
    assert!(moved, "the talker did not join its partner on c within 30 s: {:?}\nlogs:\n{}", spread(&mesh, run.pid), mesh.log_text());
    eprintln!("the talker moved to c after {:?}", t0.elapsed());
    // Settled: nothing moves any more.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(spread(&mesh, run.pid), [("a".into(), 0), ("b".into(), 0), ("c".into(), 2)]);
    mesh.node("a").node().send_to(run.pid, Message::scalar(Val::Nil)).unwrap();
    let last = run.wait_line(&mesh, "the talker's count", |l| l.starts_with("talker: "));
    let (right, of) = last
        .strip_prefix("talker: ")
        .and_then(|l| l.split_once(" replies right"))
        .and_then(|(counts, _)| counts.split_once(" of "))
        .map(|(a, b)| (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()))
        .unwrap_or_else(|| panic!("{last}"));
    assert!(right > 0 && right == of, "{last}");
    assert!(last.ends_with("ended on c"), "{last}");
    let m = moves(&mesh);
    assert_eq!(m.len(), 1, "only the talker moves (its partner is pinned): {m:?}");
    assert!(m.values().all(|&k| k == 1), "it moved once: {m:?}");
    let log = mesh.log_of("a").join("\n");
    assert!(log.contains("policy: moving") && log.contains("B/s with node c"), "the move's reason is logged:\n{log}");
}

#[test]
fn with_the_policy_off_a_talker_stays_split_from_its_partner() {
    let mesh = TestMesh::start_with(3, &QUICK.replace("\"balance\"", "\"off\""));
    let mut run = mesh.run("a", "talk.tern", TALKER);
    run.wait_line(&mesh, "started", |l| l == "started");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(spread(&mesh, run.pid), [("a".into(), 1), ("b".into(), 0), ("c".into(), 1)]);
    mesh.node("a").node().send_to(run.pid, Message::scalar(Val::Nil)).unwrap();
    let last = run.wait_line(&mesh, "the talker's count", |l| l.starts_with("talker: "));
    assert!(last.ends_with("ended on a"), "{last}");
    assert!(moves(&mesh).is_empty());
}
