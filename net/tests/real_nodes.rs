//! Faults on real nodes: every node its own OS process (`tern node`), faults injected
//! with real signals (`kill -9`, `SIGSTOP`/`SIGCONT`), everything asked with `tern ctl`.
//! Each test is a scenario that once broke a promise (one owner, nothing lost, no
//! residual dependency) and is named after what must hold.

#[path = "common/nodes.rs"]
mod nodes;

use nodes::{wait_until, RealMesh};
use std::time::{Duration, Instant};

/// A process that keeps writing to `cells` cells of its heap (two words each) spread
/// over every page, and prints every message it receives with the node it is on.
fn worker(cells: u64) -> String {
    format!(
        "let N = {cells};\n\
         let data = array(N, 1);\n\
         let i = 0;\n\
         let n = 0;\n\
         println(\"worker ready on ${{node()}}\");\n\
         while true {{\n\
           data[i] = data[i] + 1;\n\
           i = (i + 7919) % N;\n\
           n += 1;\n\
           if n % 2000 == 0 {{\n\
             let m = recv(0);\n\
             if not is_timeout(m) {{ println(\"worker got ${{m}} on ${{node()}}\"); }}\n\
           }}\n\
         }}\n"
    )
}

/// Sends `value` (a Tern expression) to `pid` from node `from` and waits until the
/// worker says it got it on node `on` (in the log of its console's node, `console`).
#[track_caller]
fn assert_reaches(mesh: &RealMesh, from: &str, pid: &str, value: &str, on: &str, console: &str, timeout: Duration) {
    let out = mesh.ctl_on(Some(from), &["send", pid, &format!("\"{value}\"")]);
    assert!(out.ok(), "send from {from} failed: {out:?}");
    let want = format!("worker got {value} on {on}");
    let ok = wait_until(timeout, || mesh.log(console).contains(&want));
    assert!(ok, "{value:?} sent from node {from} never reached {pid} on node {on} within {timeout:?}:\n{}", mesh.all_logs());
}

#[track_caller]
fn migrate_ok(mesh: &RealMesh, pid: &str, to: &str, mechanism: &str) -> serde_json::Value {
    let out = mesh.migrate(None, pid, to, mechanism);
    assert!(out.ok(), "migrate {pid} to {to} ({mechanism}) failed: {out:?}\n{}", mesh.all_logs());
    let r = out.json();
    assert_eq!(r["outcome"], "committed", "{out:?}");
    r
}

#[track_caller]
fn wait_ready(mesh: &RealMesh, node: &str, console: &str) {
    let ok = wait_until(Duration::from_secs(60), || mesh.log(console).contains(&format!("worker ready on {node}")));
    assert!(ok, "the worker did not start on {node}:\n{}", mesh.all_logs());
}

/// Lazy and hybrid: the destination is paused (`SIGSTOP`) right after the process
/// resumed there, while most of its pages are still only at the source, for several
/// times the failure-detection timeout (and longer than the QUIC idle timeout, so the
/// connection and its streams die), then continued. A stall is not a crash: the
/// migration completes, the process goes on at the destination with every page, and it
/// is reachable.
fn a_paused_destination_keeps_its_process(mechanism: &'static str) {
    // 512 MiB of heap: the background push takes long enough to be stopped in the middle.
    let mut mesh = RealMesh::start(3, "heap_bytes = 1073741824\n");
    let pid = mesh.spawn_via("c", "worker.tern", &worker(32 << 20), "a");
    wait_ready(&mesh, "a", "c");
    // Time for its loop to turn hot and be compiled at a (milliseconds, unless the
    // machine is very busy: the compiler thread runs at a low priority).
    std::thread::sleep(Duration::from_millis(1500));
    let migrating = mesh.migrate_in_background("a", &pid, "b", mechanism, Duration::from_secs(120));
    let resumed = wait_until(Duration::from_secs(60), || mesh.ps(Some("b")).iter().any(|(p, n, _)| p == &pid && n == "b"));
    assert!(resumed, "the process never resumed on b:\n{}", mesh.all_logs());
    mesh.stop("b");
    let paused = Instant::now();
    std::thread::sleep(Duration::from_secs(7)); // node_down_ms is 1000, the QUIC idle timeout 5 s
    mesh.cont("b");
    eprintln!("b was paused for {:?}", paused.elapsed());
    let out = migrating.join().unwrap().unwrap_or_else(|o| panic!("ctl migrate never answered: {o:?}\n{}", mesh.all_logs()));
    assert!(out.ok(), "{out:?}\n{}", mesh.all_logs());
    let r = out.json();
    eprintln!("the report: {r}");
    // The worker's loop ran compiled at a (the nodes' JIT is on): machine code never
    // moved, b compiled it again, the pause notwithstanding.
    let (at_source, rebuilt) = if r["outcome"] == "committed" {
        (r["jit_functions_at_source"].as_u64().unwrap_or(0), r["jit_functions_rebuilt"].as_u64().unwrap_or(0))
    } else {
        // b stayed down past the bound with pages still at a: ctl was answered early
        // that the move committed, and a logs how it ended once b is back.
        let early = r["outcome"].as_str().unwrap_or("");
        assert!(early.starts_with("committed; node b has been down for"), "{out:?}");
        let ended = "reported with its destination away, ended: committed (";
        assert!(wait_until(Duration::from_secs(60), || mesh.log("a").contains(ended)), "{}", mesh.all_logs());
        let log = mesh.log("a");
        let line = log.lines().find(|l| l.contains(ended)).unwrap();
        // "… R of S compiled functions compiled again there …"
        let words: Vec<&str> = line[..line.find(" compiled functions").unwrap_or(0)].split_whitespace().rev().take(3).collect();
        let n = |w: Option<&&str>| w.and_then(|w| w.parse().ok()).unwrap_or(0);
        (n(words.first()), n(words.get(2)))
    };
    assert!(at_source >= 1, "the loop did not run compiled at a: {r}");
    assert_eq!(rebuilt, at_source, "{r}\n{}", mesh.log("a"));
    mesh.wait_all_up(Duration::from_secs(30));
    assert_reaches(&mesh, "c", &pid, &format!("after-pause-{mechanism}"), "b", "c", Duration::from_secs(30));
    // The process keeps running there, with all its pages (it is not waiting for one).
    let ok = wait_until(Duration::from_secs(30), || {
        mesh.ps(Some("b")).iter().any(|(p, n, s)| p == &pid && n == "b" && s != "io" && s != "exited")
    });
    assert!(ok, "the process is not running on b: {:?}\n{}", mesh.ps(Some("b")), mesh.all_logs());
    let logs = mesh.all_logs();
    assert!(!logs.contains("lost while"), "the process was ended though its source was only paused:\n{logs}");
    assert!(!logs.contains("forwarded too many times"), "a message looped:\n{logs}");
    assert!(mesh.running("a") && mesh.running("b") && mesh.running("c"));
}

#[test]
fn a_paused_destination_keeps_its_lazy_process() {
    a_paused_destination_keeps_its_process("lazy");
}

#[test]
fn a_paused_destination_keeps_its_hybrid_process() {
    a_paused_destination_keeps_its_process("hybrid");
}

/// After a commit the source, which is also the process's birth node, is killed: a node
/// that never talked to the process (d) must still reach it, and monitors set up from a
/// third node (c, before and after the move) must not fire while the process lives.
/// Then the process is killed: the monitors fire with its real reason. The process's
/// console is on b, so its output outlives a.
fn losing_the_birth_node_after_commit(mechanism: &str) {
    let mut mesh = RealMesh::start(4, "");
    let pid = mesh.spawn_via("b", "worker.tern", &worker(1 << 14), "a");
    wait_ready(&mesh, "a", "b");
    let watch = |name: &str| {
        format!("let t = pid(\"{pid}\");\nmonitor(t);\nprintln(\"{name} watching\");\nlet m = recv();\nprintln(\"{name} saw ${{m}}\");\n")
    };
    mesh.spawn("before.tern", &watch("before"), "c");
    assert!(wait_until(Duration::from_secs(20), || mesh.log("c").contains("before watching")), "{}", mesh.all_logs());
    migrate_ok(&mesh, &pid, "b", mechanism);
    mesh.spawn("after.tern", &watch("after"), "c");
    assert!(wait_until(Duration::from_secs(20), || mesh.log("c").contains("after watching")), "{}", mesh.all_logs());
    mesh.kill9("a");
    // The others declare a down within node_down_ms (1 s); give them time to act on it.
    for n in ["c", "d"] {
        let down =
            wait_until(Duration::from_secs(20), || mesh.nodes_seen_by(n).is_some_and(|r| r.iter().any(|(n, s)| n == "a" && s == "down")));
        assert!(down, "node {n} never saw a down:\n{}", mesh.all_logs());
    }
    std::thread::sleep(Duration::from_secs(2));
    let c = mesh.log("c");
    assert!(!c.contains("before saw") && !c.contains("after saw"), "a monitor fired while the process lives on b:\n{}", mesh.all_logs());
    assert_reaches(&mesh, "d", &pid, "probe-from-d", "b", "b", Duration::from_secs(30));
    // Now it really ends: both monitors see it, with the real reason.
    let out = mesh.ctl_on(Some("d"), &["kill", &pid]);
    assert!(out.ok(), "kill from d failed: {out:?}\n{}", mesh.all_logs());
    let ok = wait_until(Duration::from_secs(30), || {
        let c = mesh.log("c");
        c.contains("before saw") && c.contains("after saw")
    });
    assert!(ok, "the monitors did not see the process end:\n{}", mesh.all_logs());
    let c = mesh.log("c");
    assert!(!c.contains("node_down"), "a monitor was told node_down for a process that was killed on a live node:\n{c}");
}

#[test]
fn losing_the_birth_node_after_a_precopy_commit_costs_nothing() {
    losing_the_birth_node_after_commit("precopy");
}

#[test]
fn losing_the_birth_node_after_a_freeze_commit_costs_nothing() {
    losing_the_birth_node_after_commit("freeze");
}

#[test]
fn losing_the_birth_node_after_a_lazy_migration_ended_costs_nothing() {
    losing_the_birth_node_after_commit("lazy");
}

/// The same loss of the birth node after a precopy commit, with no monitors: a node
/// that never talked to the process (d) reaches it at once, and so does a kill.
#[test]
fn a_node_that_never_talked_to_a_process_reaches_it_after_its_birth_node_is_lost() {
    let mut mesh = RealMesh::start(4, "");
    let pid = mesh.spawn_via("b", "worker.tern", &worker(1 << 14), "a");
    wait_ready(&mesh, "a", "b");
    migrate_ok(&mesh, &pid, "b", "precopy");
    mesh.kill9("a");
    let down =
        wait_until(Duration::from_secs(20), || mesh.nodes_seen_by("d").is_some_and(|r| r.iter().any(|(n, s)| n == "a" && s == "down")));
    assert!(down, "node d never saw a down:\n{}", mesh.all_logs());
    assert_reaches(&mesh, "d", &pid, "probe-from-d", "b", "b", Duration::from_secs(30));
    let out = mesh.ctl_on(Some("d"), &["kill", &pid]);
    assert!(out.ok(), "kill from d failed: {out:?}");
    let gone = wait_until(Duration::from_secs(30), || !mesh.ps(Some("b")).iter().any(|(p, _, _)| p == &pid));
    assert!(gone, "the kill from d never reached the process on b:\n{}", mesh.all_logs());
}

/// The destination is killed (`kill -9`) in the middle of the pre-copy of a 512 MiB
/// process (migration traffic capped at 200 MiB/s, so the rounds take seconds): the
/// migration aborts with a clear outcome, the process runs on at its source with all
/// its state, and it is reachable from the node that is left.
#[test]
fn killing_the_destination_during_a_512_mib_precopy_leaves_the_process_running_at_its_source() {
    let mut mesh = RealMesh::start(3, "[mesh]\ncompress = false\n\nheap_bytes = 1073741824\n[policy]\nbandwidth_mib_s = 200\n");
    let pid = mesh.spawn_via("c", "worker.tern", &worker(32 << 20), "a");
    wait_ready(&mesh, "a", "c");
    let migrating = mesh.migrate_in_background("a", &pid, "b", "precopy", Duration::from_secs(120));
    // Well into the first round (512 MiB at 200 MiB/s: 2.5 s).
    std::thread::sleep(Duration::from_millis(1200));
    mesh.kill9("b");
    let out = migrating.join().unwrap().unwrap_or_else(|o| panic!("ctl migrate never answered: {o:?}\n{}", mesh.all_logs()));
    let r = out.json();
    assert_ne!(r["outcome"], "committed", "the migration committed before b was killed: {out:?}");
    assert!(!r["ok"].as_bool().unwrap_or(true), "{out:?}");
    let outcome = r["outcome"].as_str().unwrap_or_default().to_string();
    assert!(outcome.contains("runs on at a"), "the outcome says where the process is: {outcome}");
    assert_reaches(&mesh, "c", &pid, "after-the-destination-died", "a", "c", Duration::from_secs(30));
    let ok = wait_until(Duration::from_secs(30), || mesh.ps(Some("a")).iter().any(|(p, n, s)| p == &pid && n == "a" && s != "exited"));
    assert!(ok, "the process is not running on a: {:?}\n{}", mesh.ps(Some("a")), mesh.all_logs());
    assert!(mesh.running("a") && mesh.running("c"));
}

/// A third node, neither source nor destination, is killed during a migration: the
/// migration commits, and the process is reachable at its destination.
#[test]
fn killing_a_third_node_during_a_migration_costs_nothing() {
    let mut mesh = RealMesh::start(3, "[mesh]\ncompress = false\n\nheap_bytes = 1073741824\n[policy]\nbandwidth_mib_s = 200\n");
    let pid = mesh.spawn_via("a", "worker.tern", &worker(8 << 20), "a");
    wait_ready(&mesh, "a", "a");
    let migrating = mesh.migrate_in_background("a", &pid, "b", "precopy", Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(300));
    mesh.kill9("c");
    let out = migrating.join().unwrap().unwrap_or_else(|o| panic!("ctl migrate never answered: {o:?}\n{}", mesh.all_logs()));
    let r = out.json();
    assert_eq!(r["outcome"], "committed", "{out:?}\n{}", mesh.all_logs());
    assert_reaches(&mesh, "a", &pid, "after-c-died", "b", "a", Duration::from_secs(30));
    assert!(mesh.running("a") && mesh.running("b"));
}

/// The node of a process's console is killed while the process prints on another node:
/// from the moment it is seen down, the process's output goes to its own node's log
/// (as documented), and the process runs on.
#[test]
fn output_of_a_process_whose_console_node_is_lost_goes_to_its_own_nodes_log() {
    let mut mesh = RealMesh::start(3, "");
    let printer = "let i = 0;\nwhile true {\n  println(\"tick ${i} on ${node()}\");\n  i += 1;\n  sleep(50);\n}\n";
    let pid = mesh.spawn_via("c", "printer.tern", printer, "a");
    assert!(wait_until(Duration::from_secs(30), || mesh.log("c").contains("tick 3 on a")), "{}", mesh.all_logs());
    assert!(!mesh.log("a").contains("tick"), "the output goes to the console on c while c is up");
    mesh.kill9("c");
    let logged = wait_until(Duration::from_secs(20), || mesh.log("a").matches("on a\n").count() >= 5);
    assert!(logged, "the output did not go to a's log:\n{}", mesh.all_logs());
    assert!(mesh.ps(Some("a")).iter().any(|(p, n, s)| p == &pid && n == "a" && s != "exited"), "the process runs on");
}

/// The source or the destination is stopped (`SIGSTOP`) in the middle of a migration
/// of a 256 MiB process (pre-copy's or hybrid's rounds, a freeze's transfer, a lazy
/// move's push) (migration traffic capped at 100 MiB/s and pages not compressed, so it
/// takes seconds), for longer than `node_down_ms` and the QUIC idle timeout, then
/// continued. Whatever the outcome, the process has exactly one owner: it runs on one
/// node, is listed by that node only, and is reachable from the third.
fn a_node_paused_mid_migration_then_continued(mechanism: &str, paused: &str) {
    let mut mesh = RealMesh::start(3, "[mesh]\ncompress = false\n\nheap_bytes = 1073741824\n[policy]\nbandwidth_mib_s = 100\n");
    let pid = mesh.spawn_via("c", "worker.tern", &worker(16 << 20), "a");
    wait_ready(&mesh, "a", "c");
    let migrating = mesh.migrate_in_background("a", &pid, "b", mechanism, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(800));
    mesh.stop(paused);
    std::thread::sleep(Duration::from_secs(7)); // node_down_ms is 1000, the QUIC idle timeout 5 s
    mesh.cont(paused);
    let out = migrating.join().unwrap().unwrap_or_else(|o| panic!("ctl migrate never answered: {o:?}\n{}", mesh.all_logs()));
    let r = out.json();
    eprintln!("{mechanism}, {paused} paused: {}", r["outcome"]);
    // (A move reported early, its destination away after the commit, says so after a
    // `;`: it is committed all the same.)
    let on = if r["outcome"].as_str().is_some_and(|o| o.starts_with("committed")) { "b" } else { "a" };
    mesh.wait_all_up(Duration::from_secs(30));
    let owners = |mesh: &RealMesh| owners_among(mesh, &pid, &["a", "b"]);
    let one = wait_until(Duration::from_secs(30), || owners(&mesh) == vec![on.to_string()]);
    eprintln!("ps on {on}: {:?}", mesh.ps(Some(on)).iter().filter(|(p, _, _)| p == &pid).collect::<Vec<_>>());
    assert!(one, "the process should run on {on} alone, it runs on {:?}: {out:?}\n{}", owners(&mesh), mesh.all_logs());
    assert_reaches(&mesh, "c", &pid, &format!("after-{paused}-paused"), on, "c", Duration::from_secs(30));
    assert!(mesh.running("a") && mesh.running("b") && mesh.running("c"));
}

#[test]
fn a_source_paused_mid_precopy_then_continued_leaves_one_owner() {
    a_node_paused_mid_migration_then_continued("precopy", "a");
}

#[test]
fn a_destination_paused_mid_precopy_then_continued_leaves_one_owner() {
    a_node_paused_mid_migration_then_continued("precopy", "b");
}

#[test]
fn a_source_paused_mid_freeze_then_continued_leaves_one_owner() {
    a_node_paused_mid_migration_then_continued("freeze", "a");
}

#[test]
fn a_destination_paused_mid_freeze_then_continued_leaves_one_owner() {
    a_node_paused_mid_migration_then_continued("freeze", "b");
}

#[test]
fn a_source_paused_mid_hybrid_rounds_then_continued_leaves_one_owner() {
    a_node_paused_mid_migration_then_continued("hybrid", "a");
}

#[test]
fn a_destination_paused_mid_hybrid_rounds_then_continued_leaves_one_owner() {
    a_node_paused_mid_migration_then_continued("hybrid", "b");
}

/// A lazy move's source stopped while its process runs at the destination with pages
/// still to come: the pages come once it is continued.
#[test]
fn a_source_paused_mid_lazy_push_then_continued_leaves_one_owner() {
    a_node_paused_mid_migration_then_continued("lazy", "a");
}

/// The source or the destination is stopped (`SIGSTOP`) at the commit exchange — the
/// source has sent `Commit`, the destination holds its answer (test hook) — for longer
/// than `node_down_ms` and the QUIC idle timeout, then continued. The commit rule holds:
/// the source never resumes its frozen copy, the destination commits once it runs
/// again, and the process ends up running at b alone, reachable from c. With the
/// destination stopped, `tern ctl migrate` answers "in doubt" after three
/// `node_down_ms` instead of waiting for it.
fn a_node_paused_at_the_commit_exchange_then_continued(mechanism: &str, paused: &str) {
    let mut mesh = RealMesh::start_with_env(3, "", &[("b", "TERN_TEST_HOLD_COMMIT_MS", "1500")]);
    let pid = mesh.spawn_via("c", "worker.tern", &worker(1 << 20), "a");
    wait_ready(&mesh, "a", "c");
    let migrating = mesh.migrate_in_background("a", &pid, "b", mechanism, Duration::from_secs(120));
    assert!(wait_until(Duration::from_secs(30), || mesh.log("b").contains("holds Commit")), "{}", mesh.all_logs());
    mesh.stop(paused);
    std::thread::sleep(Duration::from_secs(7)); // node_down_ms is 1000, the QUIC idle timeout 5 s
    mesh.cont(paused);
    let out = migrating.join().unwrap().unwrap_or_else(|o| panic!("ctl migrate never answered: {o:?}\n{}", mesh.all_logs()));
    eprintln!("{mechanism}, {paused} paused at the commit exchange: {out:?}");
    if paused == "b" {
        assert!(!out.ok(), "{out:?}");
        let said = format!("{}{}", out.stdout, out.stderr);
        assert!(said.contains("in doubt: node b went down after it was asked to commit"), "{out:?}");
    } else {
        assert!(out.ok(), "{out:?}\n{}", mesh.all_logs());
        assert_eq!(out.json()["outcome"], "committed", "{out:?}");
    }
    mesh.wait_all_up(Duration::from_secs(30));
    let owners = |mesh: &RealMesh| owners_among(mesh, &pid, &["a", "b"]);
    let one = wait_until(Duration::from_secs(30), || owners(&mesh) == vec!["b".to_string()]);
    assert!(one, "the process should run on b alone, it runs on {:?}\n{}", owners(&mesh), mesh.all_logs());
    if paused == "b" {
        // The source's run went on after its early answer and saw the commit through.
        let line = format!("migration of {pid} to b, reported in doubt, ended: committed");
        assert!(wait_until(Duration::from_secs(30), || mesh.log("a").contains(&line)), "{}", mesh.all_logs());
    }
    assert_reaches(&mesh, "c", &pid, &format!("after-commit-{paused}-paused"), "b", "c", Duration::from_secs(30));
    assert!(mesh.running("a") && mesh.running("b") && mesh.running("c"));
}

#[test]
fn a_source_paused_at_the_commit_exchange_then_continued_leaves_the_process_at_its_destination() {
    a_node_paused_at_the_commit_exchange_then_continued("precopy", "a");
}

#[test]
fn a_destination_paused_at_the_commit_exchange_is_reported_in_doubt_and_keeps_the_process() {
    a_node_paused_at_the_commit_exchange_then_continued("precopy", "b");
}

/// Lazy: the destination stopped before it resumes the process (it holds `Commit`),
/// with every page still at the source.
#[test]
fn a_lazy_destination_paused_before_it_resumes_is_reported_in_doubt_and_keeps_the_process() {
    a_node_paused_at_the_commit_exchange_then_continued("lazy", "b");
}

#[test]
fn a_hybrid_source_paused_at_the_commit_exchange_then_continued_leaves_the_process_at_its_destination() {
    a_node_paused_at_the_commit_exchange_then_continued("hybrid", "a");
}

/// The nodes of `among` that list process `pid` as theirs and not ended (each asked
/// itself): one owner means exactly one name.
fn owners_among(mesh: &RealMesh, pid: &str, among: &[&str]) -> Vec<String> {
    among
        .iter()
        .filter(|n| mesh.ps(Some(n)).iter().any(|(p, at, s)| p == pid && at == *n && s != "exited"))
        .map(|n| n.to_string())
        .collect()
}

/// A page lost between the destination's migration and the process, on real nodes (a
/// test hook in b's environment loses every copy of page 1 of the heap until the loss is
/// noticed): the loss is noticed and the page fetched again from a, which keeps its copy
/// until the process has every page; `ctl migrate` answers committed only then, and the
/// process sums its whole heap right at b.
#[test]
fn a_page_lost_on_its_way_to_the_process_on_real_nodes_is_fetched_again() {
    let mesh = RealMesh::start_with_env(2, "", &[("b", "TERN_TEST_LOSE_PAGE", "1")]);
    let program = "let big = array(16, nil);\nfor i in 0..16 { big[i] = array(4096, 1); }\nprintln(\"big up\");\nrecv();\n\
                   let s = 0;\nfor i in 0..16 { let a = big[i]; for k in 0..len(a) { s += a[k]; } }\nprintln(\"sum ${s} on ${node()}\");\nrecv();\n";
    let pid = mesh.spawn("big.tern", program, "a");
    assert!(wait_until(Duration::from_secs(30), || mesh.log("a").contains("big up")), "{}", mesh.all_logs());
    let r = migrate_ok(&mesh, &pid, "b", "lazy");
    assert_eq!(r["outcome"], "committed", "{r}");
    let noticed = |log: &str| {
        log.contains("faulted on page 1, which had come; it is asked for again")
            || log.contains("the process lacks 1 of them (the first: 1)")
    };
    assert!(noticed(&mesh.log("b")), "the lost page was not noticed before the move ended:\n{}", mesh.all_logs());
    let out = mesh.ctl_on(Some("a"), &["send", &pid, "\"go\""]);
    assert!(out.ok(), "{out:?}");
    assert!(wait_until(Duration::from_secs(30), || mesh.log("a").contains("sum 65536 on b")), "{}", mesh.all_logs());
}

/// A hybrid move, between two `tern node`s, of a process that writes over its whole
/// heap faster than round 0 can send it (the migration bench's heavy writer,
/// `bench/programs/migrate_heap.tern`): the rounds stop `NotShrinking`, the whole heap is
/// left absent at the resume (it comes by faults and the push), and no write is lost:
/// at the destination the heap sums to its cells plus every write the process made.
#[test]
fn a_hybrid_move_of_a_heap_written_over_whole_loses_no_write() {
    let mesh = RealMesh::start(2, "");
    let (pid, r) = move_heap_program(&mesh, "heavy", 64, "hybrid");
    assert_eq!(r["stop_reason"], "NotShrinking", "the writer did not outrun round 0: {r}");
    assert_eq!(r["absent_pages_at_resume"], r["heap_pages"], "the whole heap is left absent: {r}");
    eprintln!("hybrid, heavy writer: {r}");
    let (sum, want, node, line) = heap_sum(&mesh, &pid);
    assert_eq!(node, "b", "{line}");
    assert_eq!(sum, want, "a write was lost or doubled in the move: {line}\n{r}");
}

/// Starts the migration bench's program (`migrate_heap.tern`: 16 MiB of cells, every
/// one 1, and the writer `mode` touching `batch` pages at a time) on node a and moves it
/// to b with `mechanism`: its pid and the committed move's report.
fn move_heap_program(mesh: &RealMesh, mode: &str, batch: u32, mechanism: &str) -> (String, serde_json::Value) {
    let program = format!(
        "let MIB = 16;\nlet MODE = \"{mode}\";\nlet BATCH = {batch};\nlet FILL = \"ones\";\n{}",
        include_str!("../../bench/programs/migrate_heap.tern")
    );
    let pid = mesh.spawn(&format!("{mode}.tern"), &program, "a");
    assert!(wait_until(Duration::from_secs(30), || mesh.log("a").contains("ready")), "{}", mesh.all_logs());
    let r = migrate_ok(mesh, &pid, "b", mechanism);
    (pid, r)
}

/// Asks the migration bench's program (`migrate_heap.tern`) for its heap's sum and
/// waits for it: (the sum, what it should be, the node it ran on, the line).
fn heap_sum(mesh: &RealMesh, pid: &str) -> (String, String, String, String) {
    let sent = mesh.ctl_on(Some("a"), &["send", pid, "1"]);
    assert!(sent.ok(), "{sent:?}");
    let mut line = String::new();
    let said = wait_until(Duration::from_secs(60), || {
        line = mesh.log("a").lines().find(|l| l.contains("sum ")).unwrap_or_default().to_string();
        !line.is_empty()
    });
    assert!(said, "no sum came:\n{}", mesh.all_logs());
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "sum").expect("a sum line");
    (words[at + 1].to_string(), words[at + 3].to_string(), words[at + 5].to_string(), line.clone())
}

/// A freeze move, between two `tern node`s, of a heap of one repeated value (16 MiB of
/// the migration bench's cells, every one 1): its frames of pages go as lz4 blocks
/// (`[mesh] compress`, on by default, where it pays), so far fewer bytes cross than the
/// heap holds, and the heap arrives whole (it sums to its cells at the destination).
#[test]
fn a_heap_of_one_value_moves_compressed_and_arrives_whole() {
    let mesh = RealMesh::start(2, "");
    let (pid, r) = move_heap_program(&mesh, "none", 4, "freeze");
    let heap_bytes = r["heap_pages"].as_u64().expect("heap pages") * 4096;
    let (raw, sent) = (r["lz4_raw_bytes"].as_u64().unwrap_or(0), r["bytes_sent"].as_u64().unwrap_or(u64::MAX));
    assert!(raw * 10 > heap_bytes * 9, "most of the heap's bytes went compressed: {r}");
    assert!(sent * 10 < heap_bytes, "{sent} bytes sent for a heap of {heap_bytes}: {r}");
    let (sum, want, node, line) = heap_sum(&mesh, &pid);
    assert_eq!((sum, node.as_str()), (want, "b"), "{line}");
}
