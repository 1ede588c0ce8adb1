//! Live migration over QUIC between real nodes on loopback: each mechanism
//! moves a running process that keeps writing to its heap; `migrate(node)` and
//! `migrate(pid, node)` from programs; reports; failures before and after the commit
//! point; a process with partners on every node moved many times.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tern_net::migration::TestHooks;
use tern_net::proto::mechanism::{Forwarding, How, Mechanism};
use tern_net::proto::wire::MigReport;

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

fn check_report(r: &MigReport, mechanism: Mechanism) {
    assert!(r.ok, "{mechanism}: the migration failed: {r:?}");
    assert_eq!(r.mechanism, mechanism);
    assert!(r.heap_pages >= 256, "{r:?}");
    assert!(r.bytes_sent > 0 && r.total_time_us > 0 && r.freeze_time_us > 0, "{r:?}");
    assert!(r.freeze_time_us <= r.total_time_us, "{r:?}");
    // Measured across the two nodes' clocks, with the bound of its error (half the
    // Commit/Committed round trip, which the freeze contains).
    assert!(r.freeze_error_us > 0 && r.freeze_error_us <= r.freeze_time_us, "{r:?}");
    match mechanism {
        Mechanism::Freeze => assert!(r.rounds.is_empty() && r.final_pages >= 256, "{r:?}"),
        Mechanism::Precopy | Mechanism::Hybrid => assert!(!r.rounds.is_empty() && r.rounds[0] == r.heap_pages, "{r:?}"),
        _ => assert!(r.rounds.is_empty() && r.absent_pages_at_resume == r.heap_pages, "{r:?}"),
    }
    // The code the destination lacked went, and a lazy move's was loaded before the
    // source froze the process (it does at `Accept`, which waits for it).
    if mechanism == Mechanism::Lazy {
        assert_eq!(r.modules_loaded_after_accept, 0, "{r:?}");
    }
}

/// Moves a running writer a → b → a with `mechanism`; its output must be whole.
fn moves_a_running_writer(mechanism: Mechanism) {
    let m = TestMesh::start(2);
    let mut run = m.run("a", "writer.tern", WRITER);
    run.wait_line(&m, "round 2", |l| l.starts_with("round 2 "));
    let r = m.node("a").migrate(run.pid, "b", Some(mechanism.into())).unwrap_or_else(|e| panic!("{mechanism}: {e}\n{}", m.log_text()));
    assert!(r.ok, "{r:?}\n{}", m.log_text());
    check_report(&r, mechanism);
    assert!(r.modules_sent >= 1, "b lacked the program's code: {r:?}");
    run.wait_line(&m, "a round on b", |l| l.ends_with("on b"));
    let back = m.node("b").migrate(run.pid, "a", Some(mechanism.into())).unwrap_or_else(|e| panic!("{mechanism}: {e}\n{}", m.log_text()));
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
    moves_a_running_writer(Mechanism::Freeze);
}

#[test]
fn precopy_moves_a_running_process() {
    moves_a_running_writer(Mechanism::Precopy);
}

#[test]
fn lazy_moves_a_running_process() {
    moves_a_running_writer(Mechanism::Lazy);
}

#[test]
fn hybrid_moves_a_running_process() {
    moves_a_running_writer(Mechanism::Hybrid);
}

/// A page lost between the destination's migration and the process (a broken host, made
/// here by a test hook that loses every copy of page 1 until the loss is noticed) is
/// noticed, by the process faulting on it or when every page has come, and fetched again
/// from the source, which keeps its copy until the process has every page: the output is
/// whole, and nothing is left behind. (The program waits at its end, so that the loss is
/// noticed even if it never touches the page: a process that ends needs no page.)
#[test]
fn a_page_lost_on_its_way_to_the_process_is_fetched_again() {
    let m = TestMesh::start(2);
    m.node("b").set_migration_hooks(TestHooks { lose_page_install: Some(1), ..Default::default() });
    let mut run = m.run("a", "writer.tern", &format!("{WRITER}\nrecv();\n"));
    run.wait_line(&m, "round 2", |l| l.starts_with("round 2 "));
    let r = m.node("a").migrate(run.pid, "b", Some(Mechanism::Lazy.into())).unwrap_or_else(|e| panic!("{e}\n{}", m.log_text()));
    assert!(r.ok, "{r:?}\n{}", m.log_text());
    let last = run.wait_line(&m, "ok", |l| l.starts_with("ok on"));
    assert_eq!(last, "ok on b");
    let rounds: Vec<u32> = run.text.lines().filter_map(|l| l.strip_prefix("round ")?.split(' ').next()?.parse().ok()).collect();
    assert_eq!(rounds, (0..40).collect::<Vec<_>>(), "{}", run.text);
    let noticed = |log: &str| {
        log.contains("faulted on page 1, which had come; it is asked for again")
            || log.contains("the process lacks 1 of them (the first: 1)")
    };
    assert!(wait_until(Duration::from_secs(20), || noticed(&m.log_text())), "the lost page was not noticed:\n{}", m.log_text());
    assert!(m.log_text().contains("page 1 of") && m.log_text().contains("lost on its way to the process"), "{}", m.log_text());
    assert!(
        wait_until(Duration::from_secs(10), || !m.node("a").migration_holds(run.pid) && !m.node("b").migration_holds(run.pid)),
        "{}",
        m.log_text()
    );
    m.node("b").node().send_to(run.pid, text_message("end")).expect("sent");
    let exit = run.finish(&m, Duration::from_secs(20));
    run.assert_normal(&m, &exit);
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

/// The home node (Sprite's): a process started on a keeps a as its home wherever it goes,
/// and so do the children it spawns after it moved: relative file names resolve in a's
/// file root for all of them, each such call away from a counted (the report says how
/// many). When the home node is lost, a relative file name fails with an error naming
/// it; nothing else about the process is affected.
#[test]
fn relative_files_resolve_at_the_home_node_wherever_the_process_and_its_children_run() {
    let mut m = TestMesh::start(3);
    let src = r#"
let f = open("home.txt", "w");
write(f, "written on ${node()}\n");
close(f);
assert(migrate("b") == true);
fn child(main) {
    let f = open("home.txt");
    send(main, "${read_line(f)}, read by a child on ${node()}");
    close(f);
}
spawn(child, self());
println(recv(10000));
let g = open("home.txt", "a");
write(g, "appended on ${node()}\n");
close(g);
println("ready");
assert(recv(60000) == "go");
println(try { open("home.txt"); "opened" } catch e { "error: ${e}" });
println("still running on ${node()}");
"#;
    let mut run = m.run_console_on("a", "c", "home.tern", src);
    run.wait_line(&m, "ready", |l| l == "ready");
    assert!(run.text.starts_with("written on a, read by a child on b\nready\n"), "{}\n{}", run.text, m.log_text());
    let on_a = std::fs::read_to_string(m.cfg.node("a").expect("a").root.join("home.txt")).expect("the file is on a");
    assert_eq!(on_a, "written on a\nappended on b\n");
    assert!(!m.cfg.node("b").expect("b").root.join("home.txt").exists(), "nothing on b");
    // The report of a move says where its home is and what it cost.
    let r = m.node("b").migrate(run.pid, "c", Some(Mechanism::Freeze.into())).expect("a report");
    assert!(r.ok, "{r:?}");
    // (Its open and write on b, each a round trip to a; `close` does no I/O, and the
    // child's calls are the child's.)
    assert_eq!((r.home.as_str(), r.home_calls), ("a", 2), "{r:?}");
    // a is lost: a relative file name fails, naming it; the process runs on.
    m.stop("a");
    m.node("c").node().send_to(run.pid, text_message("go")).expect("sent");
    let last = run.wait_line(&m, "the end", |l| l.starts_with("still running"));
    assert_eq!(last, "still running on c");
    assert!(run.text.contains("error: the home node a of <pid") && run.text.contains("relative file names resolve there"), "{}", run.text);
}

/// `migrate(..., {forwarding: F, mechanism: M})`: a program picks both mechanisms of a
/// move; a bad option is an error it can catch; the report says what was used.
#[test]
fn a_program_picks_the_forwarding_and_the_mechanism_of_a_move() {
    let m = TestMesh::start(3);
    let src = r#"
fn worker(main) {
    while true {
        let m = recv();
        send(main, "worker on ${node()} got ${m}");
    }
}
let w = spawn(worker, self());
assert(migrate(w, "b", {forwarding: "link-traversal", mechanism: "freeze"}) == true);
send(w, 1);
println(recv(10000));
assert(migrate(w, "c", {forwarding: "resend"}) == true);
send(w, 2);
println(recv(10000));
assert(migrate("b", {forwarding: "origin-site"}) == true);
send(w, 3);
println(recv(10000));
for bad in [{forwarding: "teleport"}, {mechanism: "teleport"}, {speed: "fast"}, {forwarding: 3}] {
    println("error: ${try { migrate(w, "a", bad) } catch e { e }}");
}
println("done");
"#;
    let mut run = m.run("a", "options.tern", src);
    run.wait_line(&m, "done", |l| l == "done");
    let out = run.text.clone();
    assert_eq!(
        out,
        "worker on b got 1\nworker on c got 2\nworker on c got 3\n\
         error: migrate: unknown forwarding mechanism \"teleport\" (expected link-update, resend, origin-site or link-traversal)\n\
         error: migrate: unknown migration mechanism \"teleport\" (expected auto, freeze, precopy, lazy or hybrid)\n\
         error: migrate: unknown option \"speed\" (expected forwarding or mechanism)\n\
         error: migrate: forwarding expects a string, not an int\n\
         done\n",
        "{}",
        m.log_text()
    );
    let reports = m.node("a").reports();
    assert!(
        reports.iter().any(|r| r.to == "b" && r.forwarding == Forwarding::LinkTraversal && r.mechanism == Mechanism::Freeze),
        "{reports:?}"
    );
}

// ---------------------------------------------------------------------------------
// Failure semantics (ARCHITECTURE.md: "one owner, decided at the destination")
// ---------------------------------------------------------------------------------

/// Receives N numbered messages from a local sender, checking their order.
const COUNTED: &str = r#"
fn sender(tx, n) {
    for i in 0..n {
        send(tx, i);
        if i % 10 == 0 {
            sleep(1);
        }
    }
}
let N = 3000;
let ch = channel();
spawn(sender, ch[0], N);
for want in 0..N {
    let m = recv(ch[1], 20000);
    assert(m == want, "got ${m}, expected ${want}");
}
assert(recv(60000) == "finish");
println("all ${N} in order on ${node()}");
"#;

fn text_message(s: &str) -> tern_vm::message::Message {
    use tern_vm::message::{Message, Obj, Val};
    Message { root: Val::Obj(0), objs: vec![Obj::Str(s.into())] }
}

/// The pid in a line like `holder <pid 3.5>`.
fn pid_in(line: &str) -> u64 {
    let t = line.split("<pid ").nth(1).and_then(|t| t.split('>').next()).unwrap_or_else(|| panic!("no pid in {line:?}"));
    tern_net::cmd::parse_pid(t).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_destination_failing_before_commit_leaves_the_process_running_at_the_source() {
    let m = TestMesh::start(2);
    m.node("b").set_migration_hooks(TestHooks { stall_before_ready: true, ..Default::default() });
    let mut run = m.run("a", "counted.tern", COUNTED);
    std::thread::sleep(Duration::from_millis(50));
    let pid = run.pid;
    let report = std::thread::scope(|s| {
        let a = m.node("a");
        let h = s.spawn(move || a.migrate(pid, "b", Some(Mechanism::Freeze.into())));
        // The image is at b, which never answers `Ready`: b fails before the commit point.
        std::thread::sleep(Duration::from_millis(500));
        m.node("b").halt();
        h.join().expect("the migration thread")
    })
    .expect("a report");
    assert!(!report.ok, "{report:?}");
    assert!(report.outcome.contains("runs on at a"), "{}", report.outcome);
    m.node("a").node().send_to(pid, text_message("finish")).expect("sent");
    let last = run.wait_line(&m, "all in order", |l| l.starts_with("all "));
    assert_eq!(last, "all 3000 in order on a");
    assert!(!m.node("a").migration_holds(pid));
}

#[test]
fn a_lost_connection_before_commit_resumes_the_process_and_a_later_migration_works() {
    let m = TestMesh::start(2);
    m.node("b").set_migration_hooks(TestHooks { stall_before_ready: true, ..Default::default() });
    let mut run = m.run("a", "counted.tern", COUNTED);
    std::thread::sleep(Duration::from_millis(50));
    let pid = run.pid;
    let report = std::thread::scope(|s| {
        let a = m.node("a");
        let h = s.spawn(move || a.migrate(pid, "b", Some(Mechanism::Precopy.into())));
        std::thread::sleep(Duration::from_millis(500));
        m.node("a").drop_connections();
        h.join().expect("the migration thread")
    })
    .expect("a report");
    assert!(!report.ok && report.outcome.contains("runs on at a"), "{report:?}");
    // The connection comes back; b gave up its copy; a second try goes through.
    m.node("b").set_migration_hooks(TestHooks::default());
    assert!(wait_until(Duration::from_secs(20), || m.node("a").peer_up("b")));
    let again = m.node("a").migrate(pid, "b", Some(Mechanism::Precopy.into())).expect("a report");
    assert!(again.ok, "{again:?}\n{}", m.log_text());
    m.node("a").node().send_to(pid, text_message("finish")).expect("sent");
    let last = run.wait_line(&m, "all in order", |l| l.starts_with("all "));
    assert_eq!(last, "all 3000 in order on b");
}

/// After the commit point the source holds nothing the process needs.
fn source_switched_off_after_commit(mechanism: Mechanism) {
    let mut m = TestMesh::start(3);
    // Started from c's console, so that its output outlives node a.
    let mut run = m.run("c", "writer.tern", WRITER);
    run.wait_line(&m, "round 1", |l| l.starts_with("round 1 "));
    let r = m.node("c").migrate(run.pid, "a", Some(Mechanism::Freeze.into())).expect("a report");
    assert!(r.ok, "{r:?}");
    let r = m.node("a").migrate(run.pid, "b", Some(mechanism.into())).expect("a report");
    assert!(r.ok, "{r:?}\n{}", m.log_text());
    assert!(!m.node("a").migration_holds(run.pid));
    m.stop("a");
    let last = run.wait_line(&m, "ok", |l| l.starts_with("ok on"));
    assert_eq!(last, "ok on b");
    let rounds: Vec<u32> = run.text.lines().filter_map(|l| l.strip_prefix("round ")?.split(' ').next()?.parse().ok()).collect();
    assert_eq!(rounds, (0..40).collect::<Vec<_>>(), "{}", run.text);
}

#[test]
fn after_commit_the_source_can_be_switched_off_freeze() {
    source_switched_off_after_commit(Mechanism::Freeze);
}

#[test]
fn after_commit_the_source_can_be_switched_off_precopy() {
    source_switched_off_after_commit(Mechanism::Precopy);
}

#[test]
fn after_the_background_push_a_lazy_process_no_longer_needs_its_source() {
    source_switched_off_after_commit(Mechanism::Lazy);
}

#[test]
fn losing_the_source_while_lazy_pages_are_there_ends_the_process_with_the_cause() {
    let m = TestMesh::start(3);
    let src = r#"
fn holder(main) {
    let data = array(64 * 1024, 1);
    send(main, "ready");
    assert(recv() == "touch");
    data[0] = 2;
    send(main, "touched on ${node()}");
    recv();
    let s = 0;
    for k in 0..len(data) {
        s += data[k];
    }
    send(main, "sum ${s}");
}
let w = spawn(holder, self());
monitor(w);
println("holder ${w}");
assert(recv() == "ready");
println("ready");
println(recv());
let d = recv(60000);
println("down: ${d.reason}");
"#;
    let mut run = m.run("c", "holder.tern", src);
    let w = pid_in(&run.wait_line(&m, "holder", |l| l.starts_with("holder ")));
    run.wait_line(&m, "ready", |l| l == "ready");
    assert!(m.node("c").migrate(w, "a", Some(Mechanism::Freeze.into())).expect("a report").ok);
    m.node("a").set_migration_hooks(TestHooks { no_push: true, ..Default::default() });
    std::thread::scope(|s| {
        let a = m.node("a");
        // Without the background push this migration lasts until every page is fetched
        // (or the process ends).
        let h = s.spawn(move || a.migrate(w, "b", Some(Mechanism::Lazy.into())));
        assert!(wait_until(Duration::from_secs(20), || m.node("b").node().is_local(w)), "{}", m.log_text());
        m.node("c").node().send_to(w, text_message("touch")).expect("sent");
        run.wait_line(&m, "touched", |l| l.starts_with("touched"));
        m.node("a").halt();
        let r = h.join().expect("the migration thread").expect("a report");
        assert!(!r.ok, "{r:?}");
    });
    let down = run.wait_line(&m, "down", |l| l.starts_with("down: "));
    assert!(down.contains("source node") && down.contains("pages were only there"), "{down}");
    assert!(run.text.contains("touched on b"), "{}", run.text);
}

/// A process moved lazily, with the background push off, ends at the destination soon
/// after it resumes there, most of its pages still at the source: the destination
/// releases them, and the migration ends at both ends (the source reports it committed
/// and keeps nothing; the destination's run is gone). Without that, the source would
/// keep its pages, and the migration would last, until the source was gone.
#[test]
fn a_lazy_process_that_ends_at_the_destination_releases_its_source() {
    let m = TestMesh::start(2);
    let src = r#"
fn holder(main) {
    let data = array(64 * 1024, 1);
    send(main, "ready");
    assert(recv() == "go");
    send(main, "ends on ${node()}");
}
let w = spawn(holder, self());
monitor(w);
println("holder ${w}");
assert(recv() == "ready");
println("ready");
println(recv(20000));
let d = recv(20000);
println("down: ${d.reason}");
"#;
    let mut run = m.run("a", "lazy_end.tern", src);
    let w = pid_in(&run.wait_line(&m, "holder", |l| l.starts_with("holder ")));
    run.wait_line(&m, "ready", |l| l == "ready");
    m.node("a").set_migration_hooks(TestHooks { no_push: true, ..Default::default() });
    let report = std::thread::scope(|s| {
        let a = m.node("a");
        let (tx, rx) = std::sync::mpsc::channel();
        s.spawn(move || {
            let _ = tx.send(a.migrate(w, "b", Some(Mechanism::Lazy.into())));
        });
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert!(wait_until(Duration::from_secs(20), || m.node("b").node().is_local(w)), "{}", m.log_text());
            m.node("a").node().send_to(w, text_message("go")).expect("sent");
            run.wait_line(&m, "down", |l| l.starts_with("down: "));
            rx.recv_timeout(Duration::from_secs(30))
        }));
        match got {
            Ok(Ok(r)) => r,
            other => {
                // The migration still holds on: end it with its source.
                m.node("a").halt();
                match other {
                    Err(p) => std::panic::resume_unwind(p),
                    _ => panic!("the migration did not end within 30 s of the process's end\n{}\n{}", run.text, m.log_text()),
                }
            }
        }
    });
    let r = report.expect("a report");
    assert!(r.ok, "{r:?}\n{}", m.log_text());
    assert_eq!(r.pages_pushed, 0, "{r:?}");
    assert!(r.absent_pages_at_resume == r.heap_pages && r.heap_pages >= 128, "{r:?}");
    assert!(r.page_faults < u64::from(r.heap_pages) / 2, "most pages were never fetched: {r:?}");
    assert!(!m.node("a").migration_holds(w));
    assert!(wait_until(Duration::from_secs(5), || !m.node("b").migration_holds(w)), "{}", m.log_text());
    assert!(run.text.contains("ends on b") && run.text.contains("down: normal"), "{}", run.text);
}

/// After a lazy move, every call that copies a value out of the heap waits for the
/// pages the value is on (they are still at the source) instead of failing: a send, a
/// spawn's arguments, a file's path and mode, `exit`'s reason. Without the background
/// push, each of those pages is first touched by the call itself.
#[test]
fn calls_that_copy_values_wait_for_lazy_pages() {
    let m = TestMesh::start(2);
    let src = r#"
fn child(main, s) {
    send(main, "child got ${len(s)} chars");
}
fn holder(main) {
    // Each value on pages of its own (arrays of 8 KiB between them).
    let s = "quick reply ${node()}";
    let p1 = array(1024, 1);
    let t = "spawned ${node()}";
    let p2 = array(1024, 1);
    let path = "lazy-${1}.txt";
    let p3 = array(1024, 1);
    let mode = "w${""}";
    let p4 = array(1024, 1);
    let reason = "done ${2}";
    let p5 = array(1024, 1);
    send(main, "ready");
    assert(recv() == "go");
    send(main, s);
    spawn(child, main, t);
    let f = open(path, mode);
    send(main, "wrote ${write(f, s)} bytes on ${node()}");
    close(f);
    exit(reason);
}
let w = spawn(holder, self());
monitor(w);
println("holder ${w}");
assert(recv() == "ready");
println("ready");
for i in 0..3 {
    println(recv(20000));
}
let d = recv(20000);
println("down: ${d.reason}");
"#;
    let mut run = m.run("a", "lazy_copies.tern", src);
    let w = pid_in(&run.wait_line(&m, "holder", |l| l.starts_with("holder ")));
    run.wait_line(&m, "ready", |l| l == "ready");
    m.node("a").set_migration_hooks(TestHooks { no_push: true, ..Default::default() });
    std::thread::scope(|s| {
        let a = m.node("a");
        let h = s.spawn(move || a.migrate(w, "b", Some(Mechanism::Lazy.into())));
        let went = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert!(wait_until(Duration::from_secs(20), || m.node("b").node().is_local(w)), "{}", m.log_text());
            m.node("a").node().send_to(w, text_message("go")).expect("sent");
            run.wait_line(&m, "down", |l| l.starts_with("down: "));
        }));
        // Without the push, the migration lasts until every page is fetched, the
        // holder ends, or its source is gone: if the test failed before the holder's
        // end, only halting the source ends it.
        m.node("a").halt();
        let _ = h.join();
        if let Err(p) = went {
            std::panic::resume_unwind(p);
        }
    });
    let mut lines: Vec<&str> = run.text.lines().skip(2).collect();
    // The child's message and the holder's may come in either order.
    lines[..3].sort_unstable();
    assert_eq!(lines, ["child got 9 chars", "quick reply a", "wrote 13 bytes on b", "down: done 2"], "{}\n{}", run.text, m.log_text());
}

/// After a lazy move, a `read_line` whose text goes on a page still at the source waits
/// for it and returns that line: the file's offset moves on only with the text in the
/// heap (it moved on first, and the call that ran again once the page came read the
/// next line: a line was lost).
#[test]
fn a_read_that_waits_for_a_lazy_page_loses_no_line() {
    let m = TestMesh::start(2);
    let src = r#"
fn holder(main) {
    let f = open("lines.txt", "w");
    write(f, "one\ntwo\nthree\n");
    close(f);
    f = open("lines.txt");
    let pad = array(4096, 1);
    send(main, "ready");
    // An int: nothing is put in the heap before the first read's text.
    assert(recv() == 1);
    let a = read_line(f);
    let b = read_line(f);
    send(main, "read ${a}, ${b} on ${node()}");
}
let w = spawn(holder, self());
println("holder ${w}");
assert(recv() == "ready");
println("ready");
println(recv(20000));
"#;
    let mut run = m.run("a", "lazy_read.tern", src);
    let w = pid_in(&run.wait_line(&m, "holder", |l| l.starts_with("holder ")));
    run.wait_line(&m, "ready", |l| l == "ready");
    m.node("a").set_migration_hooks(TestHooks { no_push: true, ..Default::default() });
    std::thread::scope(|s| {
        let a = m.node("a");
        let h = s.spawn(move || a.migrate(w, "b", Some(Mechanism::Lazy.into())));
        let went = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert!(wait_until(Duration::from_secs(20), || m.node("b").node().is_local(w)), "{}", m.log_text());
            let one = tern_vm::message::Message { root: tern_vm::message::Val::Int(1), objs: Vec::new() };
            m.node("a").node().send_to(w, one).expect("sent");
            run.wait_line(&m, "read", |l| l.starts_with("read "));
        }));
        m.node("a").halt();
        let _ = h.join();
        if let Err(p) = went {
            std::panic::resume_unwind(p);
        }
    });
    assert!(run.text.ends_with("read one, two on b\n"), "{}\n{}", run.text, m.log_text());
    assert!(m.node("b").node().page_faults().0 > 0, "the read waited for a page");
}

/// A third node, home of the process's partner, fails in the middle of a migration:
/// after the offer, while the destination holds before `Ready` (a test hook), so before
/// the commit point, and both ends of the migration see it down before it goes on. The
/// migration still commits (the process goes on at b); the process's output is whole;
/// and every one of its 300 receives is accounted for: each either took the partner's
/// next number (in order, none skipped or repeated — what c sent before it failed, some
/// of it held at the source and forwarded) or timed out, and once c was gone they all
/// timed out.
#[test]
fn a_third_node_failing_during_a_migration_does_not_affect_it() {
    third_node_fails_during_a_migration(false);
}

/// The same, and the migration also ends at the source, which then holds nothing.
///
/// Ignored until the source machine tells a partner that went down before the commit
/// from one that restarted: now a partner down before the commit (and not back) is sent
/// a `LinkUpdate` at the commit and waited for for ever (`Source::peer_restarted` does
/// nothing before `After`), so the migration never ends and the source keeps its state.
#[test]
#[ignore = "a partner node down before the commit point blocks the source for ever (see the comment)"]
fn a_partner_node_failing_during_a_migration_does_not_hold_the_source() {
    third_node_fails_during_a_migration(true);
}

fn third_node_fails_during_a_migration(wait_for_the_source: bool) {
    let m = TestMesh::start(3);
    let src = r#"
fn sender(tx, n) {
    for i in 0..n {
        send(tx, i);
        sleep(1);
    }
}
let ch = channel();
spawn_on("c", sender, ch[0], 100000);
let next = 0;
let timeouts = 0;
for round in 0..30 {
    for k in 0..10 {
        let v = recv(ch[1], 20);
        if is_timeout(v) {
            timeouts += 1;
        } else {
            assert(v == next, "got ${v} when ${next} was due");
            next += 1;
        }
    }
    println("round ${round} on ${node()}: ${next} received, ${timeouts} timed out");
}
println("done on ${node()}: ${next} received, ${timeouts} timed out");
"#;
    let mut run = m.run("a", "third.tern", src);
    run.wait_line(&m, "round 1", |l| l.starts_with("round 1 "));
    let pid = run.pid;
    m.node("b").set_migration_hooks(TestHooks { hold_before_ready: true, ..Default::default() });
    let (tx, rx) = std::sync::mpsc::channel();
    // (Every check inside the scope only records: a panic there would wait for ever for
    // a migration thread that does not end. Halting a and b ends it.)
    let (report, problem) = std::thread::scope(|s| {
        let a = m.node("a");
        s.spawn(move || {
            // (A failed send only means the receiver gave up.)
            let _ = tx.send(a.migrate(pid, "b", Some(Mechanism::Precopy.into())));
        });
        let mut problem = None;
        // The offer was taken and everything sent: b holds before Ready.
        if !m.wait_log("b", Duration::from_secs(30), |l| l.contains("held before Ready")) {
            problem = Some("b never held the migration before Ready".to_string());
        } else {
            m.node("c").halt();
            if !wait_until(Duration::from_secs(30), || !m.node("a").peer_up("c") && !m.node("b").peer_up("c")) {
                problem = Some("a and b still see c up".into());
            } else if let Ok(r) = rx.try_recv() {
                problem = Some(format!("the migration ended while b held it, when c failed: {r:?}"));
            } else if m.node("b").node().is_local(pid) {
                problem = Some("the process is at b before the commit point".into());
            }
        }
        // c failed during the migration: now it goes on.
        m.node("b").set_migration_hooks(TestHooks::default());
        if problem.is_none() && !wait_until(LONG, || m.node("b").node().is_local(pid) || m.exit_anywhere(pid).is_some()) {
            problem = Some("the process never went to b".into());
        }
        if problem.is_none()
            && !wait_until(LONG, || {
                run.pump();
                run.text.contains("\ndone on ")
            })
        {
            problem = Some(format!("the program did not end; output:\n{}", run.text));
        }
        let report = if wait_for_the_source { rx.recv_timeout(LONG).ok() } else { rx.try_recv().ok() };
        if wait_for_the_source && report.is_none() {
            problem.get_or_insert(format!("the migration did not end at a within {LONG:?} after c failed"));
        }
        if problem.is_some() || report.is_none() {
            problem = problem.map(|p| format!("{p}:\n{}", m.log_text()));
            m.node("a").halt();
            m.node("b").halt();
        }
        (report, problem)
    });
    assert!(problem.is_none(), "{}", problem.unwrap_or_default());
    run.drain();
    // The output is whole: every round, then the end, on b from some round on.
    let lines: Vec<&str> = run.text.lines().collect();
    assert_eq!(lines.len(), 31, "{}", run.text);
    for (i, l) in lines[..30].iter().enumerate() {
        assert!(l.starts_with(&format!("round {i} on ")), "line {i}: {l}\n{}", run.text);
    }
    let last = lines[30];
    assert!(last.starts_with("done on b: "), "{}", run.text);
    assert!(run.failures.is_empty(), "{:?}", run.failures);
    // Every receive took a number or timed out.
    let counts = |l: &str| -> (u64, u64) {
        let w: Vec<&str> = l.rsplit(": ").next().unwrap_or_default().split(' ').collect();
        (w[0].parse().expect("received"), w[2].parse().expect("timed out"))
    };
    let (received, timed_out) = counts(last);
    assert_eq!(received + timed_out, 300, "{last}");
    assert!(received > 0 && timed_out > 0, "{}", run.text);
    // Once c was gone (and what it had sent had come), nothing more came: the last rounds
    // only timed out.
    assert!(lines[25..30].iter().all(|l| counts(l).0 == received), "numbers came in the last rounds, after c had failed:\n{}", run.text);
    if let Some(r) = &report {
        assert!(r.as_ref().is_ok_and(|r| r.ok), "{r:?}");
    }
    if wait_for_the_source {
        // The source holds nothing of it once every partner is done with (c is gone).
        assert!(
            wait_until(Duration::from_secs(30), || !m.node("a").migration_holds(pid)),
            "a still holds migration state of the process:\n{}",
            m.log_text()
        );
    }
}

// ---------------------------------------------------------------------------------
// Many moves: partners on every node, numbered messages, an open file
// ---------------------------------------------------------------------------------

/// Receives numbered messages from senders on every node (by channel, and some by pid),
/// checks each sender's order, computes, writes to a file on node a it keeps open, and
/// ends when told to ("finish").
const PARTNERS: &str = r#"
fn sender(tx, main, id, n) {
    for i in 0..n {
        send(tx, [id, i]);
        if i % 10 == 0 {
            send(main, [id, i / 10]);
            sleep(2);
        }
    }
}
let N = 1500;
let ch = channel();
let me = self();
let ids = [];
for nd in ["a", "b", "c"] {
    for k in 0..2 {
        let id = "${nd}${k}";
        spawn_on(nd, sender, ch[0], me, id, N);
        push(ids, id);
    }
}
let f = open("/node/a/partners.txt", "w");
let next = {};
let inext = {};
for id in ids {
    next[id] = 0;
    inext[id] = 0;
}
let total = 0;
let itotal = 0;
let check = 0;
let finished = false;
while total < 6 * N or itotal < 6 * (N / 10) or not finished {
    let wait = 30000;
    if total < 6 * N {
        let m = recv(ch[1], 30000);
        assert(not is_timeout(m), "the channel stalled after ${total} messages");
        assert(m[1] == next[m[0]], "channel: sender ${m[0]} sent ${m[1]} where ${next[m[0]]} was due");
        next[m[0]] = m[1] + 1;
        total += 1;
        check = (check + m[1] * m[1] + 7) % 1000003;
        if total % 1000 == 0 {
            write(f, "${total}\n");
        }
        wait = 0;
    }
    let x = recv(wait);
    if not is_timeout(x) {
        if x == "finish" {
            finished = true;
        } else {
            assert(x[1] == inext[x[0]], "inbox: sender ${x[0]} sent ${x[1]} where ${inext[x[0]]} was due");
            inext[x[0]] = x[1] + 1;
            itotal += 1;
        }
    }
}
write(f, "check ${check}\n");
close(f);
println("channel: ${total} in order; inbox: ${itotal} in order; check ${check}");
"#;

/// Runs PARTNERS on a fresh 3-node mesh, moving it `moves` times (random mechanism,
/// random node) before telling it to finish; its output and its file.
fn partners_run(moves: usize, seed: u64) -> (String, String, Vec<String>) {
    partners_run_by(moves, seed, None)
}

/// [`partners_run`] with forwarding mechanism `fwd` for every move (`None`: the mesh's).
fn partners_run_by(moves: usize, seed: u64, fwd: Option<Forwarding>) -> (String, String, Vec<String>) {
    let m = TestMesh::start(3);
    let mut run = m.run("a", "partners.tern", PARTNERS);
    let mechs = Mechanism::ALL;
    let names = ["a", "b", "c"];
    let mut rng = seed;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut at = "a";
    let mut done = Vec::new();
    for k in 0..moves {
        let to = names.iter().copied().filter(|&n| n != at).nth((next() % 2) as usize).unwrap_or("b");
        let mech = mechs[(next() % 4) as usize];
        let how = How { mechanism: Some(mech.into()), forwarding: fwd, ..How::default() };
        let r = m.node(at).migrate_how(run.pid, to, how).unwrap_or_else(|e| panic!("move {k} ({mech} {at} → {to}): {e}\n{}", m.log_text()));
        assert!(r.ok, "move {k} ({mech} {at} → {to}): {r:?}\n{}", m.log_text());
        done.push(format!("{mech} {at}→{to}"));
        at = to;
        std::thread::sleep(Duration::from_millis(next() % 40));
    }
    m.node("a").node().send_to(run.pid, text_message("finish")).expect("sent");
    let last = run.wait_line(&m, "the summary", |l| l.starts_with("channel: "));
    assert!(run.failures.is_empty(), "{:?}", run.failures);
    let file = std::fs::read_to_string(m.cfg.node("a").expect("node a").root.join("partners.txt")).expect("the file");
    // Nothing left behind: the nodes it left hold nothing for it.
    for n in names.iter().filter(|&&n| n != at) {
        assert!(!m.node(n).migration_holds(run.pid), "node {n} still holds migration state");
    }
    (last, file, done)
}

#[test]
fn thirty_random_moves_with_partners_on_every_node_change_nothing() {
    let (plain, plain_file, _) = partners_run(0, 1);
    assert!(plain.starts_with("channel: 9000 in order; inbox: 900 in order"), "{plain}");
    let seed = std::env::var("TERN_MIG_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_1234_u64);
    eprintln!("seed {seed} (TERN_MIG_SEED)");
    let (moved, moved_file, done) = partners_run(30, seed);
    assert_eq!(moved, plain, "seed {seed}; moves: {done:?}");
    assert_eq!(moved_file, plain_file, "seed {seed}; moves: {done:?}");
    assert_eq!(done.len(), 30);
}

/// The same thirty moves with each of the other forwarding mechanisms: the same output
/// and the same file.
fn thirty_random_moves_by(fwd: Forwarding) {
    let (plain, plain_file, _) = partners_run(0, 1);
    let seed = std::env::var("TERN_MIG_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_1234_u64);
    eprintln!("seed {seed} (TERN_MIG_SEED), forwarding {fwd}");
    let (moved, moved_file, done) = partners_run_by(30, seed, Some(fwd));
    assert_eq!(moved, plain, "{fwd}, seed {seed}; moves: {done:?}");
    assert_eq!(moved_file, plain_file, "{fwd}, seed {seed}; moves: {done:?}");
}

#[test]
fn thirty_random_moves_change_nothing_with_resend() {
    thirty_random_moves_by(Forwarding::Resend);
}

#[test]
fn thirty_random_moves_change_nothing_with_origin_site() {
    thirty_random_moves_by(Forwarding::OriginSite);
}

#[test]
fn thirty_random_moves_change_nothing_with_link_traversal() {
    thirty_random_moves_by(Forwarding::LinkTraversal);
}

#[test]
fn the_node_a_process_left_holds_nothing_for_it() {
    let m = TestMesh::start(3);
    let mut run = m.run("a", "counted.tern", COUNTED);
    std::thread::sleep(Duration::from_millis(20));
    let pid = run.pid;
    for (from, to, mech) in [("a", "b", Mechanism::Precopy), ("b", "c", Mechanism::Lazy)] {
        let r = m.node(from).migrate(pid, to, Some(mech.into())).expect("a report");
        assert!(r.ok, "{r:?}\n{}", m.log_text());
    }
    // b (neither its birth node nor a sender's) keeps no process, route or migration
    // state for it once the link updates were acknowledged and the pages all moved (the
    // report may come a moment before the source's last step: looked at for up to 5 s).
    let t0 = std::time::Instant::now();
    while m.node("b").node().forwarding_state(pid, &[]) != (false, 0) {
        assert!(t0.elapsed() < Duration::from_secs(5), "b keeps {:?}", m.node("b").node().route_kept(pid));
        std::thread::sleep(Duration::from_millis(1));
    }
    if t0.elapsed() > Duration::from_millis(1) {
        eprintln!("b dropped its route {:?} after the report", t0.elapsed());
    }
    assert!(!m.node("b").migration_holds(pid));
    assert!(!m.node("b").node().is_local(pid) && m.node("c").node().is_local(pid));
    // Messages still reach it: through its birth node, which knows where it is.
    m.node("b").node().send_to(pid, text_message("finish")).expect("sent");
    let last = run.wait_line(&m, "all in order", |l| l.starts_with("all "));
    assert_eq!(last, "all 3000 in order on c");
}

/// A process whose hot loop runs compiled (the nodes' JIT is on by default) moves with
/// every mechanism in turn, in the middle of that loop: machine code never moves, each
/// destination compiles again what ran compiled at the source (the hotness profile sent
/// with the offer), and the process finishes with the right answer.
#[test]
fn a_compiled_loop_moves_with_every_mechanism_and_is_compiled_again_there() {
    const HOT: &str = r#"
fn stir(data, r) {
    let n = len(data);
    let k = 0;
    while k < n {
        data[k] = (data[k] * 31 + r + k) % 1000003;
        k = k + 1;
    }
}
let data = array(32 * 1024, 1);
for r in 0..60 {
    stir(data, r);
    let s = 0;
    for k in 0..len(data) { s = (s + data[k]) % 1000003; }
    println("round ${r} on ${node()} sum ${s}");
    sleep(5);
}
println("done on ${node()}");
"#;
    // The same program without moving, for the expected sums.
    let m = TestMesh::start(3);
    let expected = m.run_ok("c", "hot.tern", HOT);
    let mut run = m.run("a", "hot.tern", HOT);
    let mut at = "a";
    for (k, (to, mechanism)) in
        [("b", Mechanism::Freeze), ("c", Mechanism::Precopy), ("a", Mechanism::Lazy), ("b", Mechanism::Hybrid)].into_iter().enumerate()
    {
        run.wait_line(&m, "a round here", |l| l.starts_with(&format!("round {} ", 5 + 10 * k)));
        let r = m.node(at).migrate(run.pid, to, Some(mechanism.into())).unwrap_or_else(|e| panic!("{mechanism}: {e}\n{}", m.log_text()));
        assert!(r.ok, "{mechanism}: {r:?}\n{}", m.log_text());
        assert!(r.jit_functions_at_source >= 1, "{mechanism}: nothing ran compiled at {at}: {r:?}");
        assert_eq!(r.jit_functions_rebuilt, r.jit_functions_at_source, "{mechanism}: not all compiled again at {to}: {r:?}");
        eprintln!(
            "{mechanism} {at} -> {to}: {} functions compiled at the source, {} rebuilt, compiled speed {} µs after the resume (freeze {} µs)",
            r.jit_functions_at_source, r.jit_functions_rebuilt, r.time_to_compiled_us, r.freeze_time_us
        );
        at = to;
    }
    let last = run.wait_line(&m, "done", |l| l.starts_with("done on"));
    assert_eq!(last, "done on b");
    let sums = |t: &str| t.lines().filter_map(|l| l.split(" sum ").nth(1).map(str::to_string)).collect::<Vec<_>>();
    assert_eq!(sums(&run.text), sums(&expected), "{}", run.text);
    assert_eq!(sums(&run.text).len(), 60);
}

/// The hotness profile is acted on only when the mesh says so (`[jit] profile`): with it
/// (the default) the destination compiles what ran compiled at the source as soon as the
/// process resumes, even a function it never calls again there; without it,
/// only what turns hot there again is compiled, and the report says none was rebuilt.
#[test]
fn the_destination_compiles_the_hotness_profile_only_when_the_mesh_asks_for_it() {
    const PROG: &str = r#"
fn warm(n) {
    let s = 0;
    let k = 0;
    while k < n { s = s + k % 7; k = k + 1; }
    s
}
println("warm ${warm(20000)}");
let m = recv();
println("got ${m} on ${node()}");
"#;
    for profile in [true, false] {
        let m = TestMesh::start_with(2, &format!("\n[jit]\nthreshold = 50\nprofile = {profile}\n"));
        let mut run = m.run("a", "warm.tern", PROG);
        run.wait_line(&m, "the warm-up", |l| l.starts_with("warm "));
        let compiler = m.node("a").node().vm().jit.clone().expect("the JIT is on");
        assert!(wait_until(Duration::from_secs(10), || compiler.stats().compiled >= 1), "warm was not compiled at a");
        let r = m.node("a").migrate(run.pid, "b", Some(Mechanism::Freeze.into())).unwrap_or_else(|e| panic!("{e}\n{}", m.log_text()));
        assert!(r.ok, "{r:?}");
        assert!(r.jit_functions_at_source >= 1, "{r:?}");
        if profile {
            assert_eq!(r.jit_functions_rebuilt, r.jit_functions_at_source, "profile on: {r:?}");
        } else {
            assert_eq!(r.jit_functions_rebuilt, 0, "profile off: compiled at b although never hot there: {r:?}");
            assert_eq!(m.node("b").node().vm().jit.as_ref().expect("the JIT is on").stats().compiled, 0);
        }
        m.node("b").node().send_to(run.pid, text_message("bye")).expect("sent");
        assert_eq!(run.wait_line(&m, "the message", |l| l.starts_with("got ")), "got bye on b");
    }
}

/// A writer that rewrites a 1 MiB array until told to stop (after `go`, if `wait`),
/// then checks every cell.
fn auto_writer(wait: bool) -> String {
    format!(
        "let data = array(64 * 1024, 0);\n\
         println(\"ready\");\n\
         {}\n\
         let r = 0;\n\
         while true {{\n\
           for k in 0..len(data) {{ data[k] = data[k] + 1; }}\n\
           r += 1;\n\
           if r == 20 {{ println(\"writing\"); }}\n\
           if recv(0) == \"stop\" {{ break; }}\n\
         }}\n\
         let ok = true;\n\
         for k in 0..len(data) {{ if data[k] != r {{ ok = false; }} }}\n\
         println(\"ok ${{ok}} on ${{node()}}\");\n",
        // (Waiting: it starts writing a moment after "go", once the move has begun.)
        if wait { "recv();\nsleep(100);" } else { "" }
    )
}

#[test]
fn auto_picks_freeze_for_a_small_heap_and_precopy_for_an_idle_large_one() {
    let m = TestMesh::start(2);
    let mut small = m.run("a", "small.tern", "println(\"ready\");\nrecv();\nprintln(\"done on ${node()}\");\n");
    small.wait_line(&m, "ready", |l| l == "ready");
    let r = m.node("a").migrate(small.pid, "b", None).unwrap_or_else(|e| panic!("{e}\n{}", m.log_text()));
    assert!(r.ok, "{r:?}");
    assert_eq!(r.mechanism, Mechanism::Freeze, "{r:?}");
    assert!(r.auto.contains("small heap") && r.auto.contains("assumed"), "{}", r.auto);
    m.node("b").node().send_to(small.pid, tern_vm::message::Message::scalar(tern_vm::message::Val::Nil)).unwrap();
    assert_eq!(small.wait_line(&m, "done", |l| l.starts_with("done")), "done on b");

    let big =
        "let data = array(1024 * 1024, 1);\nprintln(\"ready\");\nrecv();\nprintln(\"sum ${data[0] + data[1048575]} on ${node()}\");\n";
    let mut big = m.run("a", "big.tern", big);
    big.wait_line(&m, "ready", |l| l == "ready");
    std::thread::sleep(Duration::from_millis(300));
    let r = m.node("a").migrate(big.pid, "b", None).unwrap_or_else(|e| panic!("{e}\n{}", m.log_text()));
    assert!(r.ok, "{r:?}");
    assert_eq!((r.mechanism, r.fell_back, r.absent_pages_at_resume), (Mechanism::Precopy, false, 0), "{r:?}");
    assert!(r.auto.contains("pre-copy") && r.stop_reason == "Converged", "{r:?}");
    assert!(r.heap_pages >= 2048 && r.rounds[0] == r.heap_pages, "{r:?}");
    m.node("b").node().send_to(big.pid, tern_vm::message::Message::scalar(tern_vm::message::Val::Nil)).unwrap();
    assert_eq!(big.wait_line(&m, "sum", |l| l.starts_with("sum")), "sum 2 on b");
    // Named, the mechanism is what was asked.
    let mut again = m.run("a", "small.tern", "println(\"ready\");\nrecv();\n");
    again.wait_line(&m, "ready", |l| l == "ready");
    let r = m.node("a").migrate(again.pid, "b", Some(Mechanism::Lazy.into())).expect("a report");
    assert!(r.ok && r.mechanism == Mechanism::Lazy && r.auto.is_empty(), "{r:?}");
}

#[test]
fn auto_sends_a_heavy_writer_hybrid_and_a_precopy_that_stops_converging_falls_back_to_postcopy() {
    // Migration traffic capped at 30 MiB/s: the writers rewrite their 1 MiB heap in a
    // few ms, so the dirty bits, counted every 20 ms, show 35-50 MiB/s of pages: faster
    // than pre-copy can follow, but not twice the link (which is lazy's case).
    let m = TestMesh::start_with(2, "[policy]\nbandwidth_mib_s = 30\n");
    let mut heavy = m.run("a", "heavy.tern", &auto_writer(false));
    heavy.wait_line(&m, "writing", |l| l == "writing");
    std::thread::sleep(Duration::from_millis(500));
    let r = m.node("a").migrate(heavy.pid, "b", None).unwrap_or_else(|e| panic!("{e}\n{}", m.log_text()));
    assert!(r.ok, "{r:?}");
    assert_eq!(r.mechanism, Mechanism::Hybrid, "{r:?}");
    assert!(r.auto.contains("would not converge") && r.auto.contains("capped"), "{}", r.auto);
    m.node("b").node().send_to(heavy.pid, text_message("stop")).unwrap();
    assert_eq!(heavy.wait_line(&m, "ok", |l| l.starts_with("ok")), "ok true on b");

    // Idle when the move starts (nothing written: pre-copy is picked), then writing
    // every page each round, with migration traffic capped at 8 MiB/s (a round takes
    // 125 ms) and the process slowed at most to 1/16 (`[limits] precopy_throttle = 4`; at the
    // default 1/256 this writer converges): the rounds stop shrinking and what is left
    // follows the process instead of going with it frozen.
    drop(m);
    // (Frames of pages uncompressed: this heap would cross the cap in one go as lz4.)
    let m = TestMesh::start_with(2, "[mesh]\ncompress = false\n\nprecopy_throttle = 4\n\n[policy]\nbandwidth_mib_s = 8\n");
    let mut late = m.run("a", "late.tern", &auto_writer(true));
    late.wait_line(&m, "ready", |l| l == "ready");
    std::thread::sleep(Duration::from_millis(800));
    m.node("a").node().send_to(late.pid, text_message("go")).unwrap();
    let r = m.node("a").migrate(late.pid, "b", None).unwrap_or_else(|e| panic!("{e}\n{}", m.log_text()));
    assert!(r.ok, "{r:?}");
    assert_eq!(r.mechanism, Mechanism::Precopy, "{r:?}");
    assert!(r.fell_back && r.absent_pages_at_resume > 0, "{r:?}");
    assert!(matches!(r.stop_reason.as_str(), "NotShrinking" | "RoundLimit"), "{r:?}");
    assert!(r.final_pages == 0, "nothing sent frozen: {r:?}");
    let table = tern_net::ops::report::report_table(&r);
    assert!(table.contains("picked by auto") && table.contains("post-copy"), "{table}");
    m.node("b").node().send_to(late.pid, text_message("stop")).unwrap();
    assert_eq!(late.wait_line(&m, "ok", |l| l.starts_with("ok")), "ok true on b");
    assert!(wait_until(Duration::from_secs(10), || !m.node("a").migration_holds(late.pid)), "the source let go once its pages moved");
}

#[test]
fn under_a_bandwidth_cap_the_background_push_does_not_hold_a_lazy_processs_faults_back() {
    // 1 MiB/s of migration traffic (pages not compressed: this heap would shrink to
    // almost nothing) and a 4 MiB heap: the background push alone would
    // take about 4 s, in turns of a few pages. The process, summing its heap as soon as
    // it is on b, faults its pages in meanwhile (a page and the next per fault). Its
    // faults must not wait for the push's turns (they did when the push slept for its
    // pace on the thread that serves them: then it got a fault in between turns and
    // the rest of its heap from the push), so most of its heap comes by its faults.
    let m = TestMesh::start_with(2, "[mesh]\ncompress = false\n\n[policy]\nbandwidth_mib_s = 1\n");
    let src = "let data = array(512 * 1024, 1);\nprintln(\"ready\");\nrecv();\n\
               let s = 0;\nfor k in 0..len(data) { s += data[k]; }\nprintln(\"sum ${s} on ${node()}\");\nrecv();\n";
    let mut p = m.run("a", "sum.tern", src);
    p.wait_line(&m, "ready", |l| l == "ready");
    let pid = p.pid;
    let report = std::thread::scope(|s| {
        let mover = s.spawn(|| m.node("a").migrate(pid, "b", Some(Mechanism::Lazy.into())));
        assert!(wait_until(Duration::from_secs(20), || m.node("b").node().is_local(pid)), "on b\n{}", m.log_text());
        m.node("b").node().send_to(pid, text_message("go")).unwrap();
        assert_eq!(p.wait_line(&m, "sum", |l| l.starts_with("sum")), "sum 524288 on b");
        mover.join().expect("the mover").unwrap_or_else(|e| panic!("{e}\n{}", m.log_text()))
    });
    assert!(report.ok && report.heap_pages >= 1024, "{report:?}");
    assert!(report.page_faults * 2 >= u64::from(report.heap_pages) / 2, "half the pages or more came by faults: {report:?}");
    // What the process waited at its faults is reported, beside the fetches' latency.
    assert!(report.fault_wait_p50_us > 0 && report.fault_wait_p99_us >= report.fault_wait_p50_us, "{report:?}");
    assert!(report.fault_latency_p50_us > 0, "{report:?}");
    m.node("b").node().send_to(pid, text_message("stop")).unwrap();
}

/// A destination's run may end a while after its migration is done (its report waits
/// for the JIT, up to a second). If the process has meanwhile moved on and come back by
/// a lazy move, the pages it faults on are that newer migration's to serve: the late
/// end of the older run must not take the newer one's place away (it did: the process
/// then ended, "a heap page is absent and no migration serves it").
#[test]
fn a_destination_run_that_ends_late_leaves_a_newer_lazy_move_of_its_process_alone() {
    let m = TestMesh::start(2);
    m.node("b").set_migration_hooks(TestHooks { hold_dest_end_ms: 3000, ..Default::default() });
    m.node("a").set_migration_hooks(TestHooks { no_push: true, ..Default::default() });
    let src = "let data = array(64 * 1024, 1);\nprintln(\"ready\");\nrecv();\n\
               let s = 0;\nfor k in 0..len(data) { s += data[k]; }\nprintln(\"sum ${s} on ${node()}\");\nrecv();\n";
    let mut p = m.run("a", "back.tern", src);
    p.wait_line(&m, "ready", |l| l == "ready");
    let pid = p.pid;
    // To b and back (b's run of the first move still going: it ends 3 s late), then to
    // b again, lazily: its pages come only when it faults on them.
    for (to, mech) in [("b", Mechanism::Precopy), ("a", Mechanism::Freeze)] {
        let r = m.node(if to == "b" { "a" } else { "b" }).migrate(pid, to, Some(mech.into()));
        assert!(r.as_ref().is_ok_and(|r| r.ok), "{r:?}\n{}", m.log_text());
    }
    std::thread::scope(|s| {
        let mover = s.spawn(|| m.node("a").migrate(pid, "b", Some(Mechanism::Lazy.into())));
        assert!(wait_until(Duration::from_secs(20), || m.node("b").node().is_local(pid)), "on b\n{}", m.log_text());
        // Past the first run's late end.
        std::thread::sleep(Duration::from_millis(3500));
        m.node("b").node().send_to(pid, text_message("go")).unwrap();
        assert_eq!(p.wait_line(&m, "sum", |l| l.starts_with("sum")), "sum 65536 on b", "{}", m.log_text());
        let r = mover.join().expect("the mover").unwrap_or_else(|e| panic!("{e}\n{}", m.log_text()));
        assert!(r.ok && r.page_faults > 0, "{r:?}");
    });
    m.node("b").node().send_to(pid, text_message("stop")).unwrap();
}

/// `[limits] migrations_out`: a node at its limit of migrations out refuses another
/// at once, with the limit's name, and takes it again once one has ended.
#[test]
fn a_node_runs_at_most_its_number_of_migrations_out_at_once() {
    // 1 MiB/s of migration traffic, pages not compressed, and a 4 MiB heap: a lazy
    // move's push takes ~4 s.
    let m = TestMesh::start_with(2, "[mesh]\ncompress = false\n\nmigrations_out = 1\n[policy]\nbandwidth_mib_s = 1\n");
    let src = "let data = array(512 * 1024, 1);\nprintln(\"ready\");\nrecv();\n";
    let mut big = m.run("a", "big.tern", src);
    big.wait_line(&m, "ready", |l| l == "ready");
    let mut small = m.run("a", "small.tern", "println(\"ready\");\nrecv();\n");
    small.wait_line(&m, "ready", |l| l == "ready");
    let (big_pid, small_pid) = (big.pid, small.pid);
    std::thread::scope(|s| {
        let mover = s.spawn(|| m.node("a").migrate(big_pid, "b", Some(Mechanism::Lazy.into())));
        assert!(wait_until(Duration::from_secs(20), || m.node("b").node().is_local(big_pid)), "on b\n{}", m.log_text());
        assert!(m.node("a").migration_holds(big_pid), "the first migration is still pushing pages");
        let e = m.node("a").migrate(small_pid, "b", None).unwrap_err();
        assert_eq!(e, "too many migrations out of this node at once: at most 1 ([limits] migrations_out)");
        let r = mover.join().expect("the mover").unwrap_or_else(|e| panic!("{e}\n{}", m.log_text()));
        assert!(r.ok, "{r:?}");
    });
    // The first's source goes on pushing pages after its report (a lazy move): once it
    // has ended, the next goes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        match m.node("a").migrate(small_pid, "b", None) {
            Ok(r) => break r,
            Err(e) if e.contains("[limits] migrations_out") && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("{e}"),
        }
    };
    assert!(r.ok, "once the first has ended, the next goes: {r:?}");
    for pid in [big_pid, small_pid] {
        m.node("b").node().send_to(pid, text_message("stop")).unwrap();
    }
}
