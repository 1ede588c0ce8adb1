//! Memory running short on real nodes: each node its own OS process (`tern node`), here
//! started under an address-space limit (`ulimit -v`), so a heap that wants to grow past
//! it is refused by the machine for real. The process that wanted the memory ends with
//! a Tern error; the node, and every other process on it, go on. And the heap limit a
//! node is given must fit the machine it runs on.

#[path = "common/nodes.rs"]
mod nodes;

use nodes::{run_for, wait_until, RealMesh};
use std::time::Duration;
use tern_net::config::machine_memory;

const GIB: u64 = 1 << 30;

/// A process that answers every message it receives by printing it with its node.
const WORKER: &str = r#"
println("worker ready on ${node()}");
while true {
    let m = recv();
    println("worker got ${m} on ${node()}");
}
"#;

/// Wants one array of 80 million cells (1.28 GB of heap): first under `try`, then not.
const HOG: &str = r#"
println("hog starting on ${node()}");
let r = try { array(80000000, 1); "no error" } catch e { "caught ${e}" };
println("hog ${r}");
let big = array(80000000, 1);
println("hog got ${len(big)} cells");
"#;

/// Sends `value` to `pid` from node `from`; node `on`'s log must show the worker got it.
#[track_caller]
fn assert_reaches(mesh: &RealMesh, from: &str, pid: &str, value: &str, on: &str) {
    let out = mesh.ctl_on(Some(from), &["send", pid, &format!("\"{value}\"")]);
    assert!(out.ok(), "send from {from} failed: {out:?}\n{}", mesh.all_logs());
    let want = format!("worker got {value} on {on}");
    let ok = wait_until(Duration::from_secs(30), || mesh.log(on).contains(&want));
    assert!(ok, "{value:?} sent from node {from} never reached {pid} on node {on}:\n{}", mesh.all_logs());
}

/// Node a runs under a 1 GiB address-space limit with `heap_bytes` at 2 GiB (accepted:
/// below this machine's memory). A process there asks for a 1.28 GB heap: within its
/// heap limit, beyond what the OS process may map. It gets a Tern error (which `try`
/// catches), and uncaught, it ends that process alone: node a keeps running, and a
/// worker on it keeps answering messages sent from node b.
#[test]
fn a_process_out_of_memory_ends_alone_and_its_node_goes_on() {
    let heap_bytes = 2 * GIB;
    match machine_memory() {
        Some(m) if m >= heap_bytes => {}
        m => {
            eprintln!("skipped: this machine's memory ({m:?} bytes) is below the {heap_bytes}-byte heap limit the test needs");
            return;
        }
    }
    let mut mesh = RealMesh::start_with_address_limit(2, &format!("heap_bytes = {heap_bytes}\n"), GIB >> 10);
    let worker = mesh.spawn("worker.tern", WORKER, "a");
    assert!(wait_until(Duration::from_secs(30), || mesh.log("a").contains("worker ready on a")), "{}", mesh.all_logs());
    assert_reaches(&mesh, "b", &worker, "before", "a");

    mesh.spawn("hog.tern", HOG, "a");
    let oom = "out of memory: the heap could not grow to ";
    let ended = wait_until(Duration::from_secs(60), || {
        let log = mesh.log("a");
        log.contains("hog.tern:5: error: ") || log.contains("hog got") || !mesh.running("a")
    });
    assert!(mesh.running("a"), "node a is gone:\n{}", mesh.all_logs());
    assert!(ended, "the hog never ended:\n{}", mesh.all_logs());
    let log = mesh.log("a");
    assert!(log.contains(&format!("hog caught {oom}")), "the error was not catchable:\n{log}");
    assert!(log.contains(&format!("hog.tern:5: error: {oom}")), "the hog did not end with the error:\n{log}");
    assert!(!log.contains("hog got") && !log.contains("memory allocation of"), "{log}");

    // The node and the worker on it go on; the mesh still sees node a up.
    assert_reaches(&mesh, "b", &worker, "after", "a");
    assert_reaches(&mesh, "a", &worker, "after-again", "a");
    assert!(mesh.ps(Some("b")).iter().any(|(p, n, _)| p == &worker && n == "a"), "{:?}", mesh.ps(Some("b")));
    mesh.wait_all_up(Duration::from_secs(30));
    assert!(mesh.running("a") && mesh.running("b"));
}

/// A config whose `heap_bytes` is above this machine's memory: `tern node` refuses to
/// start, naming the key and the machine's memory. (On a machine with more memory than
/// the largest heap a process can have, 32 GiB, there is no such config.)
#[test]
fn a_node_refuses_a_heap_limit_above_the_machines_memory() {
    let Some(memory) = machine_memory() else {
        eprintln!("skipped: this machine's memory is unknown");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The largest heap a process can have is refused by the file alone, anywhere.
    let cfg = dir.path().join("mesh.toml");
    let node = "[[node]]\nname = \"a\"\naddr = \"127.0.0.1:7401\"\n";
    for huge in [1u64 << 40, i64::MAX as u64] {
        std::fs::write(&cfg, format!("[limits]\nheap_bytes = {huge}\n{node}")).unwrap();
        let out = run_for(&["node", "--config", cfg.to_str().unwrap(), "--name", "a"], Duration::from_secs(30)).expect("tern node ends");
        assert_eq!(out.code, Some(2), "{out:?}");
        let want = format!("limits.heap_bytes: {huge} is more than the largest heap a process can have (34359738368, 32 GiB)");
        assert!(out.stderr.contains(&want), "{out:?}");
    }
    let over = (memory / 4096 + 1) * 4096;
    if over > 32 * GIB {
        eprintln!("skipped the rest: this machine's memory ({memory} bytes) is above the largest heap limit");
        return;
    }
    let mesh_dir = dir.path().join("mesh");
    std::fs::create_dir(&mesh_dir).unwrap();
    let cfg = tern_net::cmd::loopback_mesh(&mesh_dir, 1, &format!("heap_bytes = {over}\n")).expect("the file itself is valid");
    let path = mesh_dir.join("mesh.toml");
    let out = run_for(&["node", "--config", path.to_str().unwrap(), "--name", "a"], Duration::from_secs(30))
        .unwrap_or_else(|o| panic!("tern node started with a heap limit above the machine's memory: {o:?}"));
    assert_eq!(out.code, Some(2), "{out:?}");
    let want = format!("{}: limits.heap_bytes: {over} (", path.display());
    assert!(out.stderr.contains(&want), "{out:?}");
    assert!(out.stderr.contains(&format!("is more than this machine's memory ({memory} bytes, ")), "{out:?}");
    let out = run_for(&["mesh", "up", "--config", path.to_str().unwrap()], Duration::from_secs(30))
        .unwrap_or_else(|o| panic!("tern mesh up started with a heap limit above the machine's memory: {o:?}"));
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("limits.heap_bytes: ") && out.stderr.contains("this machine's memory"), "{out:?}");
    drop(cfg);

    // `tern run --max-heap` gets the same check (in MiB).
    let mib = over.div_ceil(1 << 20);
    let prog = dir.path().join("hello.tern");
    std::fs::write(&prog, "println(\"hello\");\n").unwrap();
    let out = run_for(&["run", prog.to_str().unwrap(), "--max-heap", &mib.to_string()], Duration::from_secs(30)).expect("tern run ends");
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains(&format!("--max-heap {mib}: ")) && out.stderr.contains("this machine's memory"), "{out:?}");
    let out = run_for(&["run", prog.to_str().unwrap(), "--max-heap", "64"], Duration::from_secs(30)).expect("tern run ends");
    assert!(out.ok() && out.stdout == "hello\n", "{out:?}");
}

/// A node whose disk is full: a process writes to a file on it until a write fails (a
/// Tern error it catches, naming the file and why), migrates to that node and writes
/// to the file again there (reopened by name): the same clear error, the process runs
/// on, and the file holds exactly what the writes that succeeded wrote (a failed write
/// leaves nothing of itself).
#[test]
fn a_full_disk_fails_writes_clearly_before_and_after_a_migration_and_loses_nothing() {
    if std::process::Command::new("unshare").args(["-rm", "true"]).status().map_or(true, |s| !s.success()) {
        eprintln!("SKIPPED: this machine cannot make a user and mount namespace (unshare -rm): no small filesystem to fill");
        return;
    }
    let mesh = RealMesh::start_with_small_root(2, "", "b", 64);
    let program = r#"
let f = open("/node/b/log.txt", "a");
let line = repeat("x", 999) + "\n";
let n = 0;
let e = try { while n < 1000 { write(f, line); n += 1; } "no error" } catch e { e };
println("wrote ${n}: ${e}");
migrate(self(), "b");
println("now on ${node()}");
let e2 = try { write(f, line); "wrote" } catch e { e };
println("after the move: ${e2}");
let g = open("/node/b/log.txt", "r");
println("the file has ${len(read(g))} bytes, ${n * 1000} written");
"#;
    mesh.spawn_via("a", "fill.tern", program, "a");
    let done = wait_until(Duration::from_secs(60), || mesh.log("a").contains("the file has"));
    assert!(done, "{}", mesh.all_logs());
    let log = mesh.log("a");
    let wrote = log.lines().find(|l| l.starts_with("wrote ")).unwrap().to_string();
    assert!(wrote.contains("cannot use file log.txt: No space left on device"), "{wrote}");
    let n: usize = wrote["wrote ".len()..].split(':').next().unwrap().parse().unwrap();
    assert!(n > 10 && n < 66, "{wrote}");
    assert!(log.contains("now on b"), "{log}");
    let after = log.lines().find(|l| l.starts_with("after the move: ")).unwrap();
    assert!(after.contains("No space left on device"), "{after}");
    // 1,000-byte lines on a 64 KiB disk: the write that fails wrote part of itself
    // before the disk was full, and that part was cut off again.
    assert!(log.contains(&format!("the file has {} bytes, {} written", n * 1000, n * 1000)), "{log}");
}
