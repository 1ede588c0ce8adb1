//! Live migration over QUIC between real nodes on loopback (issue 5): each mechanism
//! moves a running process that keeps writing to its heap; `migrate(node)` and
//! `migrate(pid, node)` from programs; reports; failures before and after the commit
//! point; a process with partners on every node moved many times.

mod common;

use common::*;
use tern_net::wire::MigReport;

/// A process that keeps rewriting a 1 MiB array (every page dirtied every round), says
/// where it is each round, and checks its data at the end.
const WRITER: &str = r#"
let CELLS = 64 * 1024;
let ROUNDS = 40;
let data = array(CELLS, 0);
for r in 0..ROUNDS {
    for k in 0..CELLS {
        data[k] = data[k] + r;
    }
    println("round ${r} on ${node()}");
    sleep(10);
}
let want = ROUNDS * (ROUNDS - 1) / 2;
for k in 0..CELLS {
    assert(data[k] == want, "cell ${k} is ${data[k]}, not ${want}");
}
println("ok on ${node()}");
"#;

fn check_report(r: &MigReport, mechanism: &str) {
    assert!(r.ok, "{mechanism}: the migration failed: {r:?}");
    assert_eq!(r.mechanism, mechanism);
    assert!(r.heap_pages >= 256, "{r:?}");
    assert!(r.bytes_sent > 0 && r.total_time_us > 0 && r.freeze_time_us > 0, "{r:?}");
    assert!(r.freeze_time_us <= r.total_time_us, "{r:?}");
    match mechanism {
        "freeze" => assert!(r.rounds.is_empty() && r.final_pages >= 256, "{r:?}"),
        "precopy" | "hybrid" => assert!(!r.rounds.is_empty() && r.rounds[0] == r.heap_pages, "{r:?}"),
        _ => assert!(r.rounds.is_empty() && r.absent_pages_at_resume == r.heap_pages, "{r:?}"),
    }
}

/// Moves a running writer a → b → a with `mechanism`; its output must be whole.
fn moves_a_running_writer(mechanism: &str) {
    let m = TestMesh::start(2);
    let mut run = m.run("a", "writer.tern", WRITER);
    run.wait_line(&m, "round 2", |l| l.starts_with("round 2 "));
    let r = m.node("a").migrate(run.pid, "b", Some(mechanism)).unwrap_or_else(|e| panic!("{mechanism}: {e}\n{}", m.log_text()));
    assert!(r.ok, "{r:?}\n{}", m.log_text());
    check_report(&r, mechanism);
    run.wait_line(&m, "a round on b", |l| l.ends_with("on b"));
    let back = m.node("b").migrate(run.pid, "a", Some(mechanism)).unwrap_or_else(|e| panic!("{mechanism}: {e}\n{}", m.log_text()));
    check_report(&back, mechanism);
    let last = run.wait_line(&m, "ok", |l| l.starts_with("ok on"));
    assert_eq!(last, "ok on a");
    // Every round printed once, in order, wherever it ran.
    let rounds: Vec<u32> = run.text.lines().filter_map(|l| l.strip_prefix("round ")?.split(' ').next()?.parse().ok()).collect();
    assert_eq!(rounds, (0..40).collect::<Vec<_>>(), "{}", run.text);
    assert!(!m.node("a").migration_holds(run.pid) && !m.node("b").migration_holds(run.pid));
}

#[test]
fn freeze_moves_a_running_process() {
    moves_a_running_writer("freeze");
}

#[test]
fn precopy_moves_a_running_process() {
    moves_a_running_writer("precopy");
}

#[test]
fn lazy_moves_a_running_process() {
    moves_a_running_writer("lazy");
}

#[test]
fn hybrid_moves_a_running_process() {
    moves_a_running_writer("hybrid");
}

#[test]
fn a_program_moves_itself_and_others() {
    let m = TestMesh::start(3);
    let src = r#"
fn worker(main) {
    let m = recv();
    send(main, "worker on ${node()} got ${m}");
}
let w = spawn(worker, self());
println("main on ${node()}");
assert(migrate("b") == true);
println("main on ${node()}");
assert(migrate(w, "c") == true);
send(w, "hello");
println(recv(10000));
let err = try { migrate("nowhere") } catch e { e };
println("error: ${err}");
println("main on ${node()}");
println("done");
"#;
    let mut run = m.run("a", "self.tern", src);
    run.wait_line(&m, "done", |l| l == "done");
    let out = run.text.clone();
    assert_eq!(
        out,
        "main on a\nmain on b\nworker on c got hello\nerror: migrate: there is no node \"nowhere\" in the mesh\nmain on b\ndone\n",
        "{}",
        m.log_text()
    );
}
