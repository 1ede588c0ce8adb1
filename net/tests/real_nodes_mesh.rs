//! Mesh faults on real nodes (every node its own OS process, `tern node`): requests
//! about processes that are gone, and a second process claiming a node's identity.
//! Each test is a scenario that once broke a promise and is named after what must hold.

#[path = "common/nodes.rs"]
mod nodes;

use nodes::{signal, tern, wait_until, Guard, RealMesh};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long a request about a process that is gone may take.
const PROMPT: Duration = Duration::from_secs(8);

/// The OS threads of process `pid` (`Threads:` of /proc/PID/status).
fn threads(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

fn thread_counts(mesh: &RealMesh) -> Vec<(String, u64)> {
    mesh.nodes.iter().map(|n| (n.name.clone(), threads(mesh.os_pid(&n.name)))).collect()
}

/// A process started on `on`, moved to `to`, then killed there: its pid, once it is gone.
fn moved_and_killed(mesh: &RealMesh, on: &str, to: &str) -> String {
    let pid = mesh.spawn("idle.tern", "println(\"idle ready\");\nrecv();\n", on);
    assert!(wait_until(Duration::from_secs(20), || mesh.log(on).contains("idle ready")), "{}", mesh.all_logs());
    let out = mesh.migrate(None, &pid, to, "precopy");
    assert!(out.ok(), "migrate {pid} to {to} failed: {out:?}\n{}", mesh.all_logs());
    assert_eq!(out.json()["outcome"], "committed", "{out:?}");
    let out = mesh.ctl(&["kill", &pid]);
    assert!(out.ok(), "kill {pid} failed: {out:?}");
    let gone = wait_until(Duration::from_secs(20), || !mesh.ps(None).iter().any(|(p, _, s)| p == &pid && s != "exited"));
    assert!(gone, "{pid} did not end: {:?}\n{}", mesh.ps(None), mesh.all_logs());
    pid
}

/// `tern ctl [--node via] args...` must answer within [`PROMPT`]: what it said.
#[track_caller]
fn prompt(mesh: &RealMesh, via: Option<&str>, args: &[&str]) -> nodes::Out {
    let start = Instant::now();
    match mesh.try_ctl_on(via, args, PROMPT) {
        Ok(o) => {
            eprintln!("ctl {via:?} {args:?} answered in {:?}: {o:?}", start.elapsed());
            o
        }
        Err(o) => panic!(
            "tern ctl {args:?} (via {via:?}) did not answer within {PROMPT:?}: {o:?}\nthreads: {:?}\n{}",
            thread_counts(mesh),
            mesh.all_logs()
        ),
    }
}

/// `ctl migrate` of `pid` must fail at once with "there is no process PID", as for a
/// pid that never existed: an error (`error: ...`, exit 2).
#[track_caller]
fn no_such_process(mesh: &RealMesh, via: Option<&str>, pid: &str, to: &str) {
    let out = prompt(mesh, via, &["migrate", pid, to]);
    assert_eq!(out.code, Some(2), "migrate of a process that is gone must fail: {out:?}");
    assert_eq!(out.stderr.trim(), format!("error: there is no process {pid}"), "{out:?}");
}

/// No node started a thread per hop of a bounced request: each stays near what it had.
#[track_caller]
fn threads_stay_few(mesh: &RealMesh, before: &[(String, u64)]) {
    // Threads that ended (a migration's) may take a moment to be reaped.
    std::thread::sleep(Duration::from_millis(500));
    let after = thread_counts(mesh);
    eprintln!("threads before {before:?}, after {after:?}");
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        assert!(*a <= b + 8, "node {name} went from {b} to {a} threads\n{}", mesh.all_logs());
    }
    for n in ["a", "b", "c"] {
        assert!(alive(mesh, n), "node {n} died:\n{}", mesh.all_logs());
    }
}

/// CPU time (user + system, in ticks of 10 ms) each node uses over `d`.
fn cpu_over(mesh: &RealMesh, d: Duration) -> Vec<(String, u64)> {
    let ticks = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which ends with the last ')'): utime is the 12th.
        let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    let before: Vec<u64> = mesh.nodes.iter().map(|n| ticks(mesh.os_pid(&n.name))).collect();
    std::thread::sleep(d);
    mesh.nodes.iter().zip(before).map(|(n, b)| (n.name.clone(), ticks(mesh.os_pid(&n.name)).saturating_sub(b))).collect()
}

/// Whether node `name`'s OS process is still there (not ended, not a zombie).
fn alive(mesh: &RealMesh, name: &str) -> bool {
    let s = std::fs::read_to_string(format!("/proc/{}/status", mesh.os_pid(name))).unwrap_or_default();
    !s.is_empty() && !s.lines().any(|l| l.starts_with("State:") && l.contains('Z'))
}

/// spawn on a → migrate to b → kill → `migrate PID c`: the birth node's route says b, b
/// no longer knows the pid. The request once bounced between them without end, each hop
/// a new thread, until a node could start no more threads and panicked.
#[test]
fn migrating_a_pid_that_moved_and_ended_answers_no_process() {
    let mesh = RealMesh::start(3, "");
    let pid = moved_and_killed(&mesh, "a", "b");
    let before = thread_counts(&mesh);
    no_such_process(&mesh, None, &pid, "c");
    threads_stay_few(&mesh, &before);
    // The same answer as for pids that never existed, born here or elsewhere.
    no_such_process(&mesh, None, "1.999", "c");
    no_such_process(&mesh, None, "2.999", "c");
    // Asked of each node, to each node: one answer each, the same.
    for via in ["a", "b", "c"] {
        for to in ["a", "c"] {
            no_such_process(&mesh, Some(via), &pid, to);
        }
    }
    threads_stay_few(&mesh, &before);
}

/// Killed while on b, after moving there from a; asked of c, which never hosted it, and
/// then with every other request about a pid: each answers promptly and clearly.
#[test]
fn every_request_about_a_pid_that_moved_and_ended_answers_promptly() {
    let mesh = RealMesh::start(3, "");
    let pid = moved_and_killed(&mesh, "a", "b");
    let before = thread_counts(&mesh);
    no_such_process(&mesh, Some("c"), &pid, "a");
    no_such_process(&mesh, Some("b"), &pid, "c");
    for via in ["a", "b", "c"] {
        let out = prompt(&mesh, Some(via), &["kill", &pid]);
        assert!(out.code.is_some(), "{out:?}");
        let out = prompt(&mesh, Some(via), &["send", &pid, "1"]);
        assert!(out.code.is_some(), "{out:?}");
        let out = prompt(&mesh, Some(via), &["--json", "ps"]);
        assert!(out.ok(), "{out:?}");
        assert!(!out.stdout.contains(&format!("\"{pid}\"")), "ps lists a process that ended: {out:?}");
    }
    // Nothing keeps bouncing between the nodes afterwards either: a kill once went from
    // the birth node (its route says b) to b (no entry: to the birth node) and back for
    // good, each node busy with it.
    let busy = cpu_over(&mesh, Duration::from_secs(3));
    eprintln!("CPU time of each node over 3 s with nothing to do: {busy:?}");
    for (name, ticks) in &busy {
        assert!(*ticks < 60, "node {name} was busy ({ticks} ticks of 10 ms in 3 s) with nothing to do\n{}", mesh.all_logs());
    }
    threads_stay_few(&mesh, &before);
    let logs = mesh.all_logs();
    assert!(!logs.contains("panicked"), "{logs}");
}

/// A second `tern node` claiming to be `name`, with that node's genuine certificate (a
/// copy of the config with its own address, the same certificate directory): its guard
/// and its log file.
fn impostor(mesh: &RealMesh, name: &str) -> (Guard, std::path::PathBuf) {
    let text = std::fs::read_to_string(&mesh.config).unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let marker = format!("name = \"{name}\"\naddr = \"");
    let at = text.find(&marker).unwrap_or_else(|| panic!("no node {name} in\n{text}")) + marker.len();
    let end = at + text[at..].find('"').unwrap();
    let copy = format!("{}127.0.0.1:{port}{}", &text[..at], &text[end..]);
    let cfg = mesh.write("impostor.toml", &copy);
    let log = mesh.dir.path().join("impostor.log");
    let out = std::fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let g = Guard::spawn(
        "impostor",
        tern().args(["node", "--config", cfg.to_str().unwrap(), "--name", name]).stdin(Stdio::null()).stdout(out).stderr(err),
    );
    (g, log)
}

/// After the impostor is gone: every node sees every other up within 20 s, and a message
/// sent from c reaches a process on b.
#[track_caller]
fn mesh_is_whole_again(mesh: &RealMesh, impostor_log: &std::path::Path) {
    let ok = wait_until(Duration::from_secs(20), || ["a", "b", "c"].iter().all(|n| mesh.sees_all_up(n)));
    let seen: Vec<_> = ["a", "b", "c"].iter().map(|n| (n, mesh.nodes_seen_by(n))).collect();
    assert!(
        ok,
        "the mesh stayed partitioned after the impostor was killed: {seen:?}\n{}\n--- impostor ---\n{}",
        mesh.all_logs(),
        std::fs::read_to_string(impostor_log).unwrap_or_default()
    );
    // Started through b itself, so that what it prints goes to b's log.
    let file = mesh.write("echo.tern", "println(\"echo ready\");\nwhile true { let m = recv(); println(\"echo got ${m}\"); }\n");
    let out = mesh.ctl_on(Some("b"), &["--json", "spawn", file.to_str().unwrap(), "--on", "b"]);
    assert!(out.ok(), "spawn on b failed: {out:?}\n{}", mesh.all_logs());
    let pid = out.json()["pid"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(20), || mesh.log("b").contains("echo ready")), "{}", mesh.all_logs());
    let out = mesh.ctl_on(Some("c"), &["send", &pid, "\"from-c\""]);
    assert!(out.ok(), "send from c failed: {out:?}");
    let ok = wait_until(Duration::from_secs(20), || mesh.log("b").contains("echo got from-c"));
    assert!(ok, "a message from c never reached b:\n{}", mesh.all_logs());
    eprintln!("{}\n--- impostor ---\n{}", mesh.all_logs(), std::fs::read_to_string(impostor_log).unwrap_or_default());
}

/// A second process with b's genuine certificate dials c (b has the lower id) while the
/// real b is connected. It may disturb the mesh while it runs; once it is killed, no
/// partition may remain (c once took it for a restart of b, then ignored the real b for
/// good: its epoch was older).
#[test]
fn an_impostor_with_a_genuine_certificate_leaves_no_partition() {
    let mesh = RealMesh::start(3, "");
    let (mut g, log) = impostor(&mesh, "b");
    std::thread::sleep(Duration::from_secs(4));
    eprintln!("while the impostor ran: {:?}", ["a", "b", "c"].map(|n| mesh.nodes_seen_by(n)));
    signal(g.os_pid().unwrap(), "KILL");
    assert!(g.wait(Duration::from_secs(10)).is_some(), "the impostor survived kill -9");
    mesh_is_whole_again(&mesh, &log);
}

/// The impostor gets in while the real b is paused (c sees b down, so nothing speaks
/// against it): c takes it for b. b is continued, then the impostor killed: c must go
/// back to the real b (an older incarnation, heard again after the newer one went down),
/// and b back to c.
#[test]
fn an_impostor_that_got_in_while_the_node_was_paused_leaves_no_partition() {
    let mesh = RealMesh::start(3, "");
    mesh.stop("b");
    assert!(
        wait_until(Duration::from_secs(20), || mesh.nodes_seen_by("c").is_some_and(|r| r.iter().any(|(n, s)| n == "b" && s == "down"))),
        "c did not see the paused b down:\n{}",
        mesh.all_logs()
    );
    let (mut g, log) = impostor(&mesh, "b");
    let ok = wait_until(Duration::from_secs(20), || mesh.log("c").contains("node b restarted"));
    assert!(ok, "c never took the impostor for b:\n{}", mesh.all_logs());
    mesh.cont("b");
    std::thread::sleep(Duration::from_secs(3));
    eprintln!("while the impostor ran: {:?}", ["a", "b", "c"].map(|n| mesh.nodes_seen_by(n)));
    signal(g.os_pid().unwrap(), "KILL");
    assert!(g.wait(Duration::from_secs(10)).is_some(), "the impostor survived kill -9");
    mesh_is_whole_again(&mesh, &log);
}

/// The other side of refusing a second connection while the current one is alive: a
/// node killed and started again at once (its old link at c still looks alive) is let
/// in once that link goes quiet, seen restarted, and usable.
#[test]
fn a_node_restarted_at_once_is_let_back_in() {
    let mut mesh = RealMesh::start(3, "");
    mesh.kill9("b");
    mesh.restart("b");
    let start = Instant::now();
    mesh.wait_all_up(Duration::from_secs(20));
    eprintln!("all up again {:?} after the restart", start.elapsed());
    assert!(wait_until(Duration::from_secs(10), || mesh.log("c").contains("node b restarted")), "{}", mesh.all_logs());
    let file = mesh.write("echo.tern", "println(\"echo ready\");\nwhile true { let m = recv(); println(\"echo got ${m}\"); }\n");
    let out = mesh.ctl_on(Some("b"), &["--json", "spawn", file.to_str().unwrap(), "--on", "b"]);
    assert!(out.ok(), "spawn on b failed: {out:?}\n{}", mesh.all_logs());
    let pid = out.json()["pid"].as_str().unwrap().to_string();
    let out = mesh.ctl_on(Some("c"), &["send", &pid, "\"from-c\""]);
    assert!(out.ok(), "send from c failed: {out:?}");
    assert!(wait_until(Duration::from_secs(20), || mesh.log("b").contains("echo got from-c")), "{}", mesh.all_logs());
    eprintln!("{}", mesh.all_logs());
}
