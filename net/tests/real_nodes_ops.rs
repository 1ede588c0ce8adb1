//! The operator's commands on real nodes (every node its own OS process, everything
//! asked with `tern ctl`): `drain` empties a node but for its pinned processes, which it
//! lists, and the node then takes no new processes until `undrain`; `spawn --on any`
//! goes to the least loaded node that takes them; `policy` shows and changes the policy
//! on every node; `top` shows the nodes' load and the busy processes.

#[path = "common/nodes.rs"]
mod nodes;

use nodes::{path, run_for, wait_until, RealMesh};
use serde_json::Value;
use std::time::Duration;

/// Main starts `n` workers and one that pins itself, each computing in chunks until
/// told to stop (main waits for a message first); then main checks every worker's
/// chunks against their total (a chunk lost or done twice in a move would show) and
/// says where the pinned one ran.
fn workers(n: u32) -> String {
    format!(
        "let CHUNK = 332833500;\n\
         fn work(parent, pinned) {{\n\
           if pinned {{ pin(); }}\n\
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
           send(parent, {{chunks: chunks, total: total, node: node(), pinned: pinned}});\n\
         }}\n\
         let ws = [];\n\
         for k in 0..{n} {{ push(ws, spawn(work, self(), false)); }}\n\
         push(ws, spawn(work, self(), true));\n\
         println(\"started ${{len(ws)}}\");\n\
         recv();\n\
         for w in ws {{ send(w, \"stop\"); }}\n\
         let right = 0;\n\
         for k in 0..len(ws) {{\n\
           let r = recv();\n\
           if r.chunks > 0 and r.total == r.chunks * CHUNK {{ right += 1; }}\n\
           if r.pinned {{ println(\"pinned one ran on ${{r.node}}\"); }}\n\
         }}\n\
         println(\"right ${{right}} of ${{len(ws)}}\");\n"
    )
}

/// A policy quick enough for a test: short windows and residence times.
const QUICK: &str =
    "[policy]\nmode = \"balance\"\nhysteresis_ms = 200\nresidence_ms = 400\ninterval_ms = 100\ngossip_ms = 50\nwindow_ms = 300\n";

#[track_caller]
fn json_of(mesh: &RealMesh, node: Option<&str>, args: &[&str]) -> Value {
    let out = mesh.ctl_on(node, args);
    assert!(out.ok(), "tern ctl {args:?} failed: {out:?}\n{}", mesh.all_logs());
    out.json()
}

#[test]
fn drain_empties_a_node_but_its_pinned_processes_and_it_takes_no_new_ones_until_undrained() {
    let mesh = RealMesh::start(3, "");
    let main = mesh.spawn("drain.tern", &workers(4), "a");
    assert!(wait_until(Duration::from_secs(30), || mesh.log("a").contains("started 5")), "{}", mesh.all_logs());
    let on_a = |mesh: &RealMesh| mesh.ps(None).into_iter().filter(|(_, n, s)| n == "a" && s != "exited").count();
    assert_eq!(on_a(&mesh), 6, "main and its 5 workers on a: {:?}", mesh.ps(None));

    let r = json_of(&mesh, None, &["--json", "drain", "a"]);
    let moved = r["moved"].as_array().unwrap();
    let stayed = r["stayed"].as_array().unwrap();
    assert_eq!(r["failed"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(moved.len(), 5, "main and 4 workers move: {r}");
    assert!(moved.iter().all(|m| m["to"] == "b" || m["to"] == "c"), "{r}");
    assert!(moved.iter().any(|m| m["to"] == "b") && moved.iter().any(|m| m["to"] == "c"), "spread over b and c: {r}");
    assert_eq!(stayed.len(), 1, "{r}");
    assert_eq!(stayed[0]["why"], "pinned", "{r}");
    assert!(moved.iter().any(|m| m["pid"] == main.as_str()), "{r}");
    let ps = mesh.ps(None);
    let left: Vec<_> = ps.iter().filter(|(_, n, s)| n == "a" && s != "exited").collect();
    assert_eq!(left.len(), 1, "only the pinned one is left on a: {ps:?}");
    assert_eq!(left[0].0, stayed[0]["pid"].as_str().unwrap(), "{ps:?}");

    // Drained: a says so, takes no new process, and `any` is never a.
    let top = json_of(&mesh, Some("b"), &["--json", "top", "--once"]);
    let a = top.as_array().unwrap().iter().find(|n| n["node"] == "a").expect("a in top");
    assert_eq!(a["load"]["accepting"], false, "{top}");
    let file = mesh.write("hello.tern", "println(\"hello from ${node()}\");\n");
    let out = mesh.ctl_on(Some("b"), &["spawn", path(&file), "--on", "a"]);
    assert!(!out.ok() && out.stderr.contains("drained"), "a drained node refuses a spawn: {out:?}");
    for _ in 0..4 {
        let out = json_of(&mesh, Some("a"), &["--json", "spawn", path(&file), "--on", "any"]);
        assert_ne!(out["node"], "a", "--on any never picks a drained node: {out}");
    }

    // A program's spawn_on("any", ...) passes a by too.
    mesh.spawn("any.tern", "fn hello() { println(\"any child on ${node()}\"); }\nfor k in 0..6 { spawn_on(\"any\", hello); }\n", "b");
    assert!(wait_until(Duration::from_secs(20), || mesh.log("b").matches("any child on").count() == 6), "{}", mesh.all_logs());
    assert!(!mesh.log("b").contains("any child on a"), "{}", mesh.all_logs());

    // The program's results are right wherever its processes went.
    let out = mesh.ctl_on(Some("b"), &["send", &main, "\"go\""]);
    assert!(out.ok(), "{out:?}");
    assert!(wait_until(Duration::from_secs(30), || mesh.log("a").contains("right 5 of 5")), "{}", mesh.all_logs());
    assert!(mesh.log("a").contains("pinned one ran on a"), "{}", mesh.all_logs());

    // Undrained: it takes new processes again.
    let out = mesh.ctl(&["undrain", "a"]);
    assert!(out.ok() && out.stdout.contains("takes new processes again"), "{out:?}");
    let out = json_of(&mesh, Some("b"), &["--json", "spawn", path(&file), "--on", "a"]);
    assert_eq!(out["node"], "a", "{out}");
}

#[test]
fn policy_is_shown_and_changed_on_every_node_and_top_shows_the_busy_processes() {
    let mesh = RealMesh::start(3, "[policy]\nwindow_ms = 400\ngossip_ms = 100\n");
    let modes = |v: &Value| -> Vec<String> {
        v["nodes"].as_array().unwrap().iter().map(|n| n["conf"]["mode"].as_str().unwrap().to_string()).collect()
    };
    let v = json_of(&mesh, None, &["--json", "policy"]);
    assert_eq!(modes(&v), ["off", "off", "off"], "{v}");
    assert_eq!(v["nodes"][0]["conf"]["window_ms"], 400, "{v}");

    let v = json_of(&mesh, Some("c"), &["--json", "policy", "set", "residence_ms", "5000"]);
    assert!(v["nodes"].as_array().unwrap().iter().all(|n| n["conf"]["residence_ms"] == 5000), "{v}");
    assert_eq!(v["errors"].as_array().unwrap().len(), 0, "{v}");
    let v = json_of(&mesh, Some("b"), &["--json", "policy", "on"]);
    assert_eq!(modes(&v), ["balance", "balance", "balance"], "{v}");
    // Asked of another node: every node has it, and the log says so.
    let v = json_of(&mesh, Some("a"), &["--json", "policy", "show"]);
    assert_eq!(modes(&v), ["balance", "balance", "balance"], "{v}");
    assert!(mesh.log("c").contains("policy: mode balance"), "{}", mesh.all_logs());
    let v = json_of(&mesh, None, &["--json", "policy", "set", "mode", "affinity"]);
    assert_eq!(modes(&v), ["affinity", "affinity", "affinity"], "{v}");
    let v = json_of(&mesh, None, &["--json", "policy", "off"]);
    assert_eq!(modes(&v), ["off", "off", "off"], "{v}");
    let v = json_of(&mesh, None, &["--json", "policy", "on"]);
    assert_eq!(modes(&v), ["affinity", "affinity", "affinity"], "on goes back to the mode last on: {v}");
    json_of(&mesh, None, &["--json", "policy", "off"]);

    // A bad change is refused before any node has it.
    let out = mesh.ctl(&["policy", "set", "high", "2"]);
    assert!(!out.ok() && out.stderr.contains("policy.high") && out.stderr.contains("fraction"), "{out:?}");
    let out = mesh.ctl(&["policy", "set", "nonsense", "1"]);
    assert!(!out.ok() && out.stderr.contains("unknown policy key"), "{out:?}");
    let out = mesh.ctl(&["policy", "frobnicate"]);
    assert!(!out.ok() && out.stderr.contains("usage"), "{out:?}");
    let v = json_of(&mesh, None, &["--json", "policy"]);
    assert!(v["nodes"].as_array().unwrap().iter().all(|n| n["conf"]["high"] == 0.8), "{v}");

    // top: a busy process on b shows, with the CPU it uses.
    let busy = mesh.spawn("busy.tern", "let s = 0;\nwhile true { s = (s + 1) % 1000; }\n", "b");
    let mut seen = Value::Null;
    let found = wait_until(Duration::from_secs(20), || {
        seen = json_of(&mesh, Some("a"), &["--json", "top", "--once"]);
        seen.as_array().unwrap().iter().any(|n| {
            n["node"] == "b"
                && n["procs"].as_array().unwrap().iter().any(|p| p["pid"] == busy.as_str() && p["cpu_pm"].as_u64().unwrap() > 500)
        })
    });
    assert!(found, "top shows {busy} on b using most of a worker: {seen}");
    let nodes: Vec<_> = seen.as_array().unwrap().iter().map(|n| n["node"].as_str().unwrap().to_string()).collect();
    assert_eq!(nodes.len(), 3, "{seen}");
    let out = mesh.ctl(&["top", "--once"]);
    assert!(out.ok() && out.stdout.contains("REDUCTIONS/S") && out.stdout.contains(&busy), "{out:?}");
}

#[test]
fn the_policy_spreads_work_over_real_nodes_and_a_node_stalled_meanwhile_loses_nothing() {
    let quick = QUICK;
    let mesh = RealMesh::start(3, quick);
    let main = mesh.spawn("spread.tern", &workers(6), "a");
    assert!(wait_until(Duration::from_secs(30), || mesh.log("a").contains("started 7")), "{}", mesh.all_logs());
    let count =
        |mesh: &RealMesh, node: &str| mesh.ps(None).into_iter().filter(|(p, n, s)| n == node && s != "exited" && *p != main).count();
    let spread = wait_until(Duration::from_secs(40), || count(&mesh, "b") >= 2 && count(&mesh, "c") >= 2);
    assert!(spread, "the policy did not spread the work: {:?}\n{}", mesh.ps(None), mesh.all_logs());

    // b stalls for a while (SIGSTOP), with work on it and moves perhaps under way.
    mesh.stop("b");
    std::thread::sleep(Duration::from_millis(1500));
    mesh.cont("b");

    // Every process still there, every result right, the pinned one never moved.
    let out = mesh.ctl_on(Some("a"), &["send", &main, "\"go\""]);
    assert!(out.ok(), "{out:?}");
    let done = wait_until(Duration::from_secs(60), || mesh.log("a").contains("right 7 of 7"));
    assert!(done, "{}", mesh.all_logs());
    assert!(mesh.log("a").contains("pinned one ran on a"), "{}", mesh.all_logs());

    // The decisions are explained, and no process moved more than twice.
    let v = json_of(&mesh, None, &["--json", "policy", "--decisions", "256"]);
    let mut moves = std::collections::HashMap::new();
    for n in v["nodes"].as_array().unwrap() {
        for d in n["decisions"].as_array().unwrap() {
            assert!(!d["why"].as_str().unwrap().is_empty(), "{d}");
            if let Some(m) = d["moved"].as_object() {
                *moves.entry(m["pid"].as_str().unwrap().to_string()).or_insert(0) += 1;
            }
        }
    }
    assert!(moves.len() >= 4, "moves: {moves:?}\n{v}");
    assert!(moves.values().all(|&k| k <= 2), "a process moved more than twice: {moves:?}\n{v}");
}

/// A talker on node a exchanging messages with a pinned echo process on node c (main
/// waits for a message, then stops both and prints the talker's count).
const TALKER: &str = include_str!("common/talker.tern");

#[test]
fn with_affinity_on_real_nodes_a_talker_joins_its_partner_and_says_why() {
    let quick = &QUICK.replace("\"balance\"", "\"affinity\"");
    let mesh = RealMesh::start(3, quick);
    let main = mesh.spawn("talk.tern", TALKER, "a");
    assert!(wait_until(Duration::from_secs(30), || mesh.log("a").contains("started")), "{}", mesh.all_logs());
    let on = |mesh: &RealMesh, node: &str| mesh.ps(None).into_iter().filter(|(p, n, s)| n == node && s != "exited" && *p != main).count();
    let joined = wait_until(Duration::from_secs(40), || on(&mesh, "c") == 2 && on(&mesh, "a") == 0);
    assert!(joined, "the talker did not join its partner on c: {:?}\n{}", mesh.ps(None), mesh.all_logs());
    let out = mesh.ctl_on(Some("a"), &["send", &main, "\"go\""]);
    assert!(out.ok(), "{out:?}");
    assert!(wait_until(Duration::from_secs(30), || mesh.log("a").contains("talker: ")), "{}", mesh.all_logs());
    let log = mesh.log("a");
    let last = log.lines().find(|l| l.contains("talker: ")).unwrap_or_default();
    let counts: Vec<&str> = last.split("talker: ").nth(1).unwrap_or_default().split(' ').collect();
    assert!(counts.len() > 2 && counts[0] == counts[2] && counts[0] != "0", "a reply was wrong: {last}");
    assert!(last.ends_with("ended on c"), "{}", mesh.all_logs());
    // One move, the talker's, with its reason naming the partner's node.
    let v = json_of(&mesh, None, &["--json", "policy", "--decisions", "256"]);
    let moved: Vec<&Value> =
        v["nodes"].as_array().unwrap().iter().flat_map(|n| n["decisions"].as_array().unwrap()).filter(|d| d["moved"].is_object()).collect();
    assert_eq!(moved.len(), 1, "{v}");
    assert_eq!(moved[0]["rule"], "affinity", "{v}");
    assert!(moved[0]["why"].as_str().unwrap().contains("B/s with node c"), "{v}");
}

/// Main (pinned to a) starts 6 workers with 16 MiB of heap each and monitors them; on
/// "go" it stops them and counts the results that are right, wrong, and the workers
/// lost (their monitors fired with another reason than a normal end).
const HEAVY_WORKERS: &str = r#"
pin();
let CHUNK = 332833500;
fn work(parent) {
    let data = array(2000000, 1);
    let chunks = 0;
    let total = 0;
    while true {
        let s = 0;
        for i in 0..1000 { s += i * i; }
        total += s;
        chunks += 1;
        data[chunks % 2000000] = chunks;
        let m = recv(0);
        if m == "stop" { break; }
    }
    send(parent, {event: "result", chunks: chunks, total: total, node: node()});
}
let ws = [];
for k in 0..6 {
    let w = spawn(work, self());
    monitor(w);
    push(ws, w);
}
println("started 6");
let lost = 0;
let go = false;
while not go {
    let m = recv();
    if m == "go" { go = true; } else if m.event == "down" and m.reason != "normal" { lost += 1; }
}
for w in ws { send(w, "stop"); }
let right = 0;
let wrong = 0;
let silent = 0;
while right + wrong + lost + silent < 6 {
    let m = recv(15000);
    if is_timeout(m) {
        // A worker whose move is in doubt stays frozen: it neither answers nor ends.
        silent = 6 - right - wrong - lost;
    } else if m.event == "down" {
        if m.reason != "normal" { lost += 1; }
    } else if m.chunks > 0 and m.total == m.chunks * CHUNK {
        right += 1;
    } else {
        wrong += 1;
    }
}
println("right ${right}, wrong ${wrong}, lost ${lost}, silent ${silent}");
"#;

#[test]
fn a_drain_with_a_destination_killed_midway_loses_only_what_that_node_held() {
    let mut mesh = RealMesh::start(3, "");
    let main = mesh.spawn("heavy.tern", HEAVY_WORKERS, "a");
    assert!(wait_until(Duration::from_secs(30), || mesh.log("a").contains("started 6")), "{}", mesh.all_logs());
    // The drain runs while node c dies (kill -9) with moves to it under way or done.
    let cfg = mesh.cfg().to_string();
    let drain =
        std::thread::spawn(move || run_for(&["ctl", "--config", &cfg, "--node", "a", "--json", "drain", "a"], Duration::from_secs(180)));
    std::thread::sleep(Duration::from_millis(250));
    mesh.kill9("c");
    let out = drain.join().unwrap().unwrap_or_else(|o| panic!("the drain did not end: {o:?}"));
    let r = out.json();
    let moved = r["moved"].as_array().unwrap();
    let to_c = moved.iter().filter(|m| m["to"] == "c").count();
    let failed = r["failed"].as_array().unwrap().len();
    // A drain that could not move everything says so in its exit status too.
    assert_eq!(out.ok(), failed == 0, "{out:?}");
    assert_eq!(moved.len() + failed, 6, "every worker moved or failed to: {r}");
    assert_eq!(r["stayed"].as_array().unwrap().len(), 1, "main, pinned: {r}");
    // No worker is anywhere but a (a move that failed) or b (c is gone).
    let live: Vec<(String, String, String)> = mesh.ps(Some("a")).into_iter().filter(|(p, _, s)| *p != main && s != "exited").collect();
    assert!(live.iter().all(|(_, n, _)| n == "a" || n == "b"), "{live:?}");
    let out = mesh.ctl_on(Some("a"), &["send", &main, "\"go\""]);
    assert!(out.ok(), "{out:?}");
    assert!(wait_until(Duration::from_secs(60), || mesh.log("a").contains("right ")), "{}", mesh.all_logs());
    let line = mesh.log("a").lines().find(|l| l.contains("right ")).unwrap().to_string();
    let n = |key: &str| -> usize {
        let at = line.find(key).map_or("", |i| &line[i + key.len()..]);
        at.split(|c: char| !c.is_ascii_digit()).next().and_then(|v| v.parse().ok()).unwrap_or(usize::MAX)
    };
    let (right, wrong, lost, silent) = (n("right "), n("wrong "), n("lost "), n("silent "));
    // A move whose destination died after it was asked to commit is in doubt: its
    // process stays frozen at a (it may have run at c), and the drain says so.
    let in_doubt: Vec<&Value> =
        r["failed"].as_array().unwrap().iter().filter(|f| f["why"].as_str().unwrap_or("").starts_with("in doubt")).collect();
    let frozen = live.iter().filter(|(_, n, s)| n == "a" && s == "frozen").count();
    assert_eq!(wrong, 0, "{line}");
    assert_eq!(right + lost + silent, 6, "{line}");
    assert_eq!(silent, in_doubt.len(), "the workers that never answered are the moves in doubt: {line}; {r}");
    assert_eq!(frozen, in_doubt.len(), "{live:?}; {r}");
    assert_eq!(right + frozen, live.len(), "every worker alive and not in doubt gave a right result: {line}; {live:?}");
    assert!(lost <= to_c, "only workers that were on c when it died are lost: {line}; {r}");
    eprintln!("drain with c killed: {} moved ({to_c} to c), {failed} failed; {line}", moved.len());
}

#[test]
fn two_real_nodes_at_equal_load_trade_no_processes() {
    let quick = QUICK;
    let mesh = RealMesh::start(2, quick);
    // Two CPU-bound workers and a pinned one on each node: equal load.
    let on_a = mesh.spawn("a.tern", &workers(2), "a");
    let on_b = mesh.spawn("b.tern", &workers(2), "b");
    assert!(wait_until(Duration::from_secs(30), || mesh.log("a").contains("started 3") && mesh.log("b").contains("started 3")));
    std::thread::sleep(Duration::from_secs(8));
    let v = json_of(&mesh, None, &["--json", "policy", "--decisions", "256"]);
    let moves: Vec<&Value> =
        v["nodes"].as_array().unwrap().iter().flat_map(|n| n["decisions"].as_array().unwrap()).filter(|d| d["moved"].is_object()).collect();
    assert!(moves.is_empty(), "a balanced mesh made moves: {moves:?}");
    for (main, node) in [(&on_a, "a"), (&on_b, "b")] {
        let out = mesh.ctl_on(Some(node), &["send", main, "\"go\""]);
        assert!(out.ok(), "{out:?}");
        assert!(wait_until(Duration::from_secs(30), || mesh.log(node).contains("right 3 of 3")), "{}", mesh.all_logs());
    }
}

/// A program on node `on` that monitors process `pid` and prints what it sees.
fn watcher(pid: &str, name: &str) -> String {
    format!("let t = pid(\"{pid}\");\nmonitor(t);\nprintln(\"{name} watching\");\nlet m = recv();\nprintln(\"{name} saw ${{m}}\");\n")
}

/// A process that waits for messages and says where each reached it (pinned with `pin`).
fn listener(pinned: bool) -> String {
    format!(
        "{}println(\"listener up on ${{node()}}\");\nwhile true {{\n  let m = recv();\n  println(\"listener on ${{node()}} got ${{m}}\");\n}}\n",
        if pinned { "pin();\n" } else { "" }
    )
}

/// A node stopped by a supervisor (SIGTERM) without `--drain-on-stop` ends its
/// processes with the reason `shutdown`: a monitor on another node sees that reason (not
/// `node_down`), and the node exits 0 once it has.
#[test]
fn sigterm_ends_a_nodes_processes_with_the_reason_shutdown_which_monitors_elsewhere_see() {
    let mut mesh = RealMesh::start(3, "");
    let pid = mesh.spawn_via("a", "listener.tern", &listener(false), "b");
    assert!(wait_until(Duration::from_secs(20), || mesh.log("a").contains("listener up on b")), "{}", mesh.all_logs());
    mesh.spawn("watch.tern", &watcher(&pid, "c"), "c");
    assert!(wait_until(Duration::from_secs(20), || mesh.log("c").contains("c watching")), "{}", mesh.all_logs());

    let status = mesh.terminate("b", Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "b did not exit 0 on SIGTERM: {status:?}\n{}", mesh.all_logs());
    assert!(mesh.log("b").contains("ending 1 process(es) with the reason \"shutdown\""), "{}", mesh.all_logs());
    assert!(mesh.log("b").contains("node b stopped"), "{}", mesh.all_logs());
    assert!(wait_until(Duration::from_secs(10), || mesh.log("c").contains("c saw")), "{}", mesh.all_logs());
    let c = mesh.log("c");
    assert!(c.contains("\"reason\": \"shutdown\""), "the monitor saw another reason:\n{c}");
    assert!(!c.contains("node_down"), "{c}");
    // b told the others it left: they see it down at once, not after node_down_ms.
    for n in ["a", "c"] {
        assert!(wait_until(Duration::from_secs(10), || mesh.log(n).contains("node b left (it is stopping)")), "{}", mesh.all_logs());
    }
    // Nothing of b is left: the mesh has one process fewer, and b is down.
    assert!(!mesh.ps(Some("a")).iter().any(|(p, _, s)| *p == pid && s != "exited"), "{:?}", mesh.ps(Some("a")));
}

/// A node stopped by SIGTERM tells the others it leaves as it closes its connections:
/// each sees it down at once, without waiting `node_down_ms` for its silence, and its
/// next incarnation (a restart) is seen up as any restart is.
#[test]
fn a_node_stopped_by_sigterm_is_seen_to_leave_and_its_restart_is_seen_up() {
    let mut mesh = RealMesh::start(3, "");
    let status = mesh.terminate("a", Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "a did not exit 0 on SIGTERM: {status:?}\n{}", mesh.all_logs());
    for n in ["b", "c"] {
        assert!(
            wait_until(Duration::from_secs(10), || {
                let log = mesh.log(n);
                log.contains("node a left (it is stopping)") && log.contains("node a is down")
            }),
            "{n} did not see a leave:\n{}",
            mesh.all_logs()
        );
        let seen = mesh.nodes_seen_by(n).unwrap_or_default();
        assert!(seen.iter().any(|(name, state)| name == "a" && state == "down"), "{n} sees {seen:?}");
    }
    mesh.restart("a");
    assert!(wait_until(Duration::from_secs(30), || mesh.sees_all_up("b") && mesh.sees_all_up("c")), "{}", mesh.all_logs());
    let main = mesh.spawn_via("b", "after.tern", "println(\"ran on ${node()}\");\n", "a");
    assert!(!main.is_empty());
    assert!(wait_until(Duration::from_secs(20), || mesh.log("b").contains("ran on a")), "{}", mesh.all_logs());
}

/// With `--drain-on-stop`, SIGTERM moves a node's processes to the others first: the
/// movable one lives on (a monitor elsewhere does not fire, and a message sent after
/// reaches it on its new node), and only the pinned one ends, with the reason
/// `shutdown`.
#[test]
fn sigterm_with_drain_on_stop_moves_the_processes_away_first() {
    let mut mesh = RealMesh::start_with_args(3, "", &[("b", "--drain-on-stop")]);
    let free = mesh.spawn_via("a", "free.tern", &listener(false), "b");
    let pinned = mesh.spawn_via("a", "pinned.tern", &listener(true), "b");
    assert!(wait_until(Duration::from_secs(20), || mesh.log("a").matches("listener up on b").count() == 2), "{}", mesh.all_logs());
    mesh.spawn("watch_free.tern", &watcher(&free, "free"), "c");
    mesh.spawn("watch_pinned.tern", &watcher(&pinned, "pinned"), "c");
    assert!(
        wait_until(Duration::from_secs(20), || mesh.log("c").contains("free watching") && mesh.log("c").contains("pinned watching")),
        "{}",
        mesh.all_logs()
    );

    let status = mesh.terminate("b", Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.success()), "b did not exit 0 on SIGTERM: {status:?}\n{}", mesh.all_logs());
    let b = mesh.log("b");
    assert!(b.contains("drain: done: 1 moved, 1 stayed, 0 failed"), "{}", mesh.all_logs());
    assert!(wait_until(Duration::from_secs(10), || mesh.log("c").contains("pinned saw")), "{}", mesh.all_logs());
    assert!(mesh.log("c").contains("shutdown"), "{}", mesh.all_logs());
    // (`ps` answers once the others have declared b down.)
    let mut ps = Vec::new();
    wait_until(Duration::from_secs(20), || {
        ps = mesh.ps(Some("a"));
        !ps.is_empty()
    });
    let row = ps.iter().find(|(p, _, _)| *p == free).unwrap_or_else(|| panic!("{free} is gone: {ps:?}\n{}", mesh.all_logs()));
    assert!(row.1 == "a" || row.1 == "c", "{ps:?}");
    let out = mesh.ctl_on(Some("a"), &["send", &free, "\"after the stop\""]);
    assert!(out.ok(), "{out:?}");
    let line = format!("listener on {} got after the stop", row.1);
    assert!(wait_until(Duration::from_secs(20), || mesh.log("a").contains(&line)), "{}", mesh.all_logs());
    assert!(!mesh.log("c").contains("free saw"), "the moved process's monitor fired:\n{}", mesh.all_logs());
}

/// A drain's move whose destination dies after it was asked to commit (it holds
/// `Commit` for a while: `TERN_TEST_HOLD_COMMIT_MS`) cannot end: by the commit rule
/// the source never resumes the process on its own (the destination may have resumed
/// it). The drain does not wait for it for ever: it reports the move failed, with why,
/// once that node has been down for a while, and ends.
#[test]
fn a_drain_does_not_wait_for_ever_on_a_move_whose_destination_died_after_commit() {
    let (mut mesh, pid) = one_idle_process_and_only_c_to_move_it_to();
    let cfg = mesh.cfg().to_string();
    let drain =
        std::thread::spawn(move || run_for(&["ctl", "--config", &cfg, "--node", "a", "--json", "drain", "a"], Duration::from_secs(60)));
    assert!(wait_until(Duration::from_secs(30), || mesh.log("c").contains("holds Commit")), "{}", mesh.all_logs());
    mesh.kill9("c");
    let out = drain.join().unwrap().unwrap_or_else(|o| panic!("the drain did not end: {o:?}\n{}", mesh.all_logs()));
    let r = out.json();
    assert!(!out.ok(), "a drain that could not move everything fails: {out:?}");
    let failed = r["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{r}");
    assert_eq!(failed[0]["pid"], pid.as_str(), "{r}");
    assert!(failed[0]["why"].as_str().unwrap_or("").contains("in doubt: node c went down after it was asked to commit"), "{r}");
    // The process was not resumed at a: it may be running at c (which died with it).
    assert!(!mesh.ps(Some("a")).iter().any(|(p, n, s)| *p == pid && n == "a" && s == "running"), "{:?}", mesh.ps(Some("a")));
}

/// Node a with an idle process, b killed, and c holding back its answer to `Commit`.
fn one_idle_process_and_only_c_to_move_it_to() -> (RealMesh, String) {
    let mut mesh = RealMesh::start_with_env(3, "", &[("c", "TERN_TEST_HOLD_COMMIT_MS", "60000")]);
    let pid = mesh.spawn("idle.tern", "println(\"idle up\");\nwhile true { recv(100); }\n", "a");
    assert!(wait_until(Duration::from_secs(20), || mesh.log("a").contains("idle up")), "{}", mesh.all_logs());
    // Only c is left to move it to.
    mesh.kill9("b");
    assert!(
        wait_until(Duration::from_secs(20), || mesh.nodes_seen_by("a").is_some_and(|r| r.iter().any(|(n, s)| n == "b" && s == "down"))),
        "{}",
        mesh.all_logs()
    );
    (mesh, pid)
}

/// An operator's `migrate` whose destination died after it was asked to commit answers
/// "in doubt" after a bound (the process stays frozen at its source), not never.
#[test]
fn an_operators_migrate_to_a_node_that_died_after_commit_answers_in_doubt() {
    let (mut mesh, pid) = one_idle_process_and_only_c_to_move_it_to();
    let cfg = mesh.cfg().to_string();
    let p2 = pid.clone();
    let mig = std::thread::spawn(move || {
        run_for(&["ctl", "--config", &cfg, "--node", "a", "migrate", &p2, "c", "--mechanism", "freeze"], Duration::from_secs(60))
    });
    assert!(wait_until(Duration::from_secs(30), || mesh.log("c").contains("holds Commit")), "{}", mesh.all_logs());
    mesh.kill9("c");
    let out = mig.join().unwrap().unwrap_or_else(|o| panic!("the migrate did not end: {o:?}\n{}", mesh.all_logs()));
    assert!(!out.ok(), "{out:?}");
    assert!(format!("{}{}", out.stdout, out.stderr).contains("in doubt: node c went down after it was asked to commit"), "{out:?}");
    assert!(mesh.log("a").contains("stays frozen here until that node answers"), "{}", mesh.all_logs());
    assert!(mesh.ps(Some("a")).iter().any(|(p, n, s)| *p == pid && n == "a" && s == "frozen"), "{:?}", mesh.ps(Some("a")));
}

/// A lazy move that committed, whose destination then dies (kill -9, never to come
/// back) while pages of the process are still at its source (the push held back by a
/// test hook, the process idle): the operator's `migrate` answers that it committed and
/// that its destination is down, once that node has been down past the bound — not
/// never (it waited for the pages for ever); the source keeps the pages and says why.
#[test]
fn a_lazy_move_whose_destination_died_with_pages_at_the_source_is_answered_committed() {
    let mut mesh = RealMesh::start_with_env(2, "", &[("a", "TERN_TEST_NO_PUSH", "1")]);
    let program =
        "let big = array(64, nil);\nfor i in 0..64 { big[i] = array(65536, 1); }\nprintln(\"big up\");\nwhile true { recv(100); }\n";
    let pid = mesh.spawn("big.tern", program, "a");
    assert!(wait_until(Duration::from_secs(30), || mesh.log("a").contains("big up")), "{}", mesh.all_logs());
    // A monitor on a, set while the process is there.
    mesh.spawn("watcher.tern", &watcher(&pid, "w"), "a");
    assert!(wait_until(Duration::from_secs(20), || mesh.log("a").contains("w watching")), "{}", mesh.all_logs());
    let mig = mesh.migrate_in_background("a", &pid, "b", "lazy", Duration::from_secs(60));
    assert!(
        wait_until(Duration::from_secs(30), || mesh.ps(Some("b")).iter().any(|(p, n, s)| *p == pid && n == "b" && s != "exited")),
        "{}",
        mesh.all_logs()
    );
    mesh.kill9("b");
    let out = mig.join().unwrap().unwrap_or_else(|o| panic!("the migrate did not end: {o:?}\n{}", mesh.all_logs()));
    assert!(out.ok(), "it committed: {out:?}");
    let r = out.json();
    assert!(r["outcome"].as_str().unwrap_or("").starts_with("committed; node b has been down for"), "{r}");
    assert!(mesh.log("a").contains("pages of the process are still here: they are kept for it"), "{}", mesh.all_logs());
    // Never resumed at a: it ran at b, and is gone with it; the monitor on a sees it
    // down with b (it saw nothing: a monitor on the source was never made remote).
    assert!(!mesh.ps(Some("a")).iter().any(|(p, n, s)| *p == pid && n == "a" && s == "running"), "{:?}", mesh.ps(Some("a")));
    assert!(wait_until(Duration::from_secs(20), || mesh.log("a").contains("w saw")), "{}", mesh.all_logs());
    let log = mesh.log("a");
    assert!(log.lines().any(|l| l.contains("w saw") && l.contains("node_down")), "{log}");
}

/// A move in doubt for good: node a's idle process (watched by another process on a)
/// asked c to commit, and c was killed and started again (a new incarnation) before it
/// answered. The process stays frozen at a and no other move takes it; a's log says how
/// an operator decides. Returns the mesh, the process and its watcher's name.
fn a_move_in_doubt_for_good() -> (RealMesh, String) {
    let (mut mesh, pid) = one_idle_process_and_only_c_to_move_it_to();
    mesh.spawn("watcher.tern", &watcher(&pid, "w"), "a");
    assert!(wait_until(Duration::from_secs(20), || mesh.log("a").contains("w watching")), "{}", mesh.all_logs());
    let mig = mesh.migrate_in_background("a", &pid, "c", "freeze", Duration::from_secs(60));
    assert!(wait_until(Duration::from_secs(30), || mesh.log("c").contains("holds Commit")), "{}", mesh.all_logs());
    mesh.kill9("c");
    mesh.restart("c");
    let out = mig.join().unwrap().unwrap_or_else(|o| panic!("the migrate did not end: {o:?}\n{}", mesh.all_logs()));
    assert!(!out.ok() && out.stdout.contains("in doubt"), "{out:?}");
    let p = pid.as_str();
    let told = format!("`tern ctl --node a resolve {p} end` ends it");
    assert!(wait_until(Duration::from_secs(30), || mesh.log("a").contains(&told)), "{}", mesh.all_logs());
    assert!(mesh.ps(Some("a")).iter().any(|(q, n, s)| q == p && n == "a" && s == "frozen"), "{:?}", mesh.ps(Some("a")));
    // No other move takes it, and the refusal says why.
    let c_up = || mesh.nodes_seen_by("a").is_some_and(|r| r.iter().any(|(n, s)| n == "c" && s == "up"));
    assert!(wait_until(Duration::from_secs(30), c_up), "{}", mesh.all_logs());
    let again = mesh.migrate(Some("a"), p, "c", "freeze");
    assert!(!again.ok() && format!("{}{}", again.stdout, again.stderr).contains(&format!("process {p} is in doubt")), "{again:?}");
    // Only the node it is frozen on resolves it.
    let elsewhere = mesh.ctl_on(Some("c"), &["resolve", p, "end"]);
    assert!(!elsewhere.ok() && elsewhere.stderr.contains(&format!("no move of {p} is in doubt on node c")), "{elsewhere:?}");
    (mesh, pid)
}

/// `resolve PID end`: the frozen copy ends as lost, before it runs again; its monitor
/// sees why.
#[test]
fn a_move_in_doubt_for_good_ended_by_an_operator_is_seen_lost_by_its_monitors() {
    let (mesh, pid) = a_move_in_doubt_for_good();
    let out = mesh.ctl_on(Some("a"), &["resolve", &pid, "end"]);
    assert!(out.ok() && out.stdout.contains(&format!("{pid} ended: lost: its move to node c was in doubt")), "{out:?}");
    let seen = "w saw";
    assert!(wait_until(Duration::from_secs(20), || mesh.log("a").contains(seen)), "{}", mesh.all_logs());
    let log = mesh.log("a");
    let line = log.lines().find(|l| l.contains(seen)).unwrap();
    assert!(line.contains("lost: its move to node c was in doubt when that node restarted"), "{line}");
    assert!(!mesh.ps(Some("a")).iter().any(|(q, _, s)| *q == pid && s != "exited"), "{:?}", mesh.ps(Some("a")));
    let twice = mesh.ctl_on(Some("a"), &["resolve", &pid, "end"]);
    assert!(!twice.ok() && twice.stderr.contains("no move of"), "{twice:?}");
}

/// `resolve PID resume`: the process runs at its source again, and its monitor sees
/// nothing.
#[test]
fn a_move_in_doubt_for_good_resumed_by_an_operator_runs_again_unseen_by_its_monitors() {
    let (mesh, pid) = a_move_in_doubt_for_good();
    let out = mesh.ctl_on(Some("a"), &["resolve", &pid, "resume"]);
    assert!(out.ok() && out.stdout.contains(&format!("{pid} runs again on node a")), "{out:?}");
    assert!(
        wait_until(Duration::from_secs(20), || mesh
            .ps(Some("a"))
            .iter()
            .any(|(q, n, s)| *q == pid && n == "a" && s != "frozen" && s != "exited")),
        "{:?}",
        mesh.ps(Some("a"))
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(!mesh.log("a").contains("w saw"), "{}", mesh.log("a"));
    let twice = mesh.ctl_on(Some("a"), &["resolve", &pid, "resume"]);
    assert!(!twice.ok() && twice.stderr.contains("no move of"), "{twice:?}");
}
