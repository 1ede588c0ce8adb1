//! Mesh faults on real nodes (every node its own OS process, `tern node`): requests
//! about processes that are gone.
//! Each test is a scenario that once broke a promise and is named after what must hold.

#[path = "common/nodes.rs"]
mod nodes;

use nodes::{wait_until, RealMesh};
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
/// pid that never existed: an error (`tern: ...`, exit 2).
#[track_caller]
fn no_such_process(mesh: &RealMesh, via: Option<&str>, pid: &str, to: &str) {
    let out = prompt(mesh, via, &["migrate", pid, to]);
    assert_eq!(out.code, Some(2), "migrate of a process that is gone must fail: {out:?}");
    assert_eq!(out.stderr.trim(), format!("tern: there is no process {pid}"), "{out:?}");
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
