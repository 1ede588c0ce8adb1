//! Guarantees of migration and delivery shown on real nodes: every node its own OS
//! process (`tern node`), faults injected with real signals (`SIGSTOP`/`SIGCONT`,
//! `kill -9`), migrations held where they must be with the test hooks `tern node` reads
//! from its environment (`TERN_TEST_NO_PUSH`, `TERN_TEST_HOLD_LATE_MS`).
//!
//! - A lazy destination that gives up on a source paused too long ends the process,
//!   and the source, once it runs again, drops everything it held for that migration.
//! - Messages held back behind a gap count against the receiver's mailbox limit: a
//!   sender on another node that would go past it is refused (its program sees the
//!   error), and nothing accepted is lost or reordered.
//! - A destination that committed runs the process without its late messages once the
//!   source died before sending them and came back as a new incarnation; if it stays
//!   away (killed for good, or paused) for `source_down_ms`, the destination ends the
//!   process instead of keeping it frozen for ever, and a paused source, once it runs
//!   again, holds nothing for the migration.
//! - A coprocess group's move whose destination is paused, then killed, before it
//!   answers leaves all five members running at the source (all or none); restarted,
//!   the destination takes the whole group.

#[path = "common/nodes.rs"]
mod nodes;

use nodes::{run_for, wait_until, Out, RealMesh};
use serde_json::Value;
use std::thread::JoinHandle;
use std::time::Duration;

/// A process with `cells` cells of heap (two words each) that prints every message it
/// receives with the node it is on.
fn worker(cells: u64) -> String {
    format!(
        "let data = array({cells}, 1);\n\
         println(\"worker ready on ${{node()}}\");\n\
         while true {{\n\
           let m = recv();\n\
           println(\"worker got ${{m}} on ${{node()}}\");\n\
         }}\n"
    )
}

/// What node `node` logged after byte `mark` of its log.
fn since(mesh: &RealMesh, node: &str, mark: usize) -> String {
    mesh.log(node).get(mark..).unwrap_or_default().to_string()
}

/// Waits until node `node`'s log (after byte `mark`) contains `want`.
#[track_caller]
fn wait_log(mesh: &RealMesh, node: &str, mark: usize, want: &str, timeout: Duration) {
    let ok = wait_until(timeout, || since(mesh, node, mark).contains(want));
    assert!(ok, "node {node} never logged {want:?} within {timeout:?}:\n{}", mesh.all_logs());
}

/// Sends `value` (a string) to `pid` from node `from` and waits until the worker says
/// it got it on node `on` (in the log of its console's node, `console`).
#[track_caller]
fn assert_reaches(mesh: &RealMesh, from: &str, pid: &str, value: &str, on: &str, console: &str) {
    let out = mesh.ctl_on(Some(from), &["send", pid, &format!("\"{value}\"")]);
    assert!(out.ok(), "send from {from} failed: {out:?}\n{}", mesh.all_logs());
    let want = format!("worker got {value} on {on}");
    let ok = wait_until(Duration::from_secs(30), || mesh.log(console).contains(&want));
    assert!(ok, "{value:?} sent from node {from} never reached {pid} on node {on}:\n{}", mesh.all_logs());
}

/// Whether process `pid` is live on node `on`, as node `via` sees the mesh.
fn is_on(mesh: &RealMesh, via: &str, pid: &str, on: &str) -> bool {
    mesh.ps(Some(via)).iter().any(|(p, n, s)| p == pid && n == on && s != "exited")
}

/// Whether process `pid` is listed (not ended) by `ctl --json ps` asked of node `via`;
/// `None` if that did not answer.
fn listed(mesh: &RealMesh, via: &str, pid: &str) -> Option<bool> {
    let out = mesh.try_ctl_on(Some(via), &["--json", "ps"], Duration::from_secs(10)).ok().filter(Out::ok)?;
    let rows: Value = serde_json::from_str(out.stdout.trim()).ok()?;
    Some(rows.as_array()?.iter().any(|r| r["pid"] == pid && r["status"] != "exited"))
}

/// The migrations node `name` takes part in that have not ended, as it says itself
/// (`ctl --node NAME --json nodes`, its own row); `None` if it does not answer.
fn migrations_on(mesh: &RealMesh, name: &str) -> Option<u64> {
    let out = mesh.try_ctl_on(Some(name), &["--json", "nodes"], Duration::from_secs(10)).ok()?;
    if !out.ok() {
        return None;
    }
    let rows: Value = serde_json::from_str(out.stdout.trim()).ok()?;
    rows.as_array()?.iter().find(|r| r["name"] == name)?["migrations"].as_u64()
}

/// Node `name` is alive and serves the mesh: every node sees every other up, and a
/// process started there gets a message sent from node `from`.
#[track_caller]
fn serves(mesh: &mut RealMesh, name: &str, from: &str) {
    assert!(mesh.running(name), "node {name} is gone:\n{}", mesh.all_logs());
    mesh.wait_all_up(Duration::from_secs(30));
    let echo = mesh.spawn("echo.tern", &worker(16), name);
    wait_log(mesh, name, 0, &format!("worker ready on {name}"), Duration::from_secs(30));
    assert_reaches(mesh, from, &echo, &format!("hello-{name}"), name, name);
}

/// A lazily migrated process whose pages are still only at its source (node a pushes
/// none in the background): the source is paused (`SIGSTOP`) until the destination,
/// after `source_down_ms` (3 s here) without it, ends the process with a clear reason;
/// then it is continued. The destination tells it that it gave the pages up, so the
/// source, which held them (and its side of the migration) while the process ran on
/// b, drops everything for that migration; and it goes on serving the mesh.
#[test]
fn a_lazy_destination_that_gives_up_on_a_paused_source_releases_it() {
    let mut mesh = RealMesh::start_with_env(3, "source_down_ms = 3000\n", &[("a", "TERN_TEST_NO_PUSH", "1")]);
    // 4 MiB of heap: 1024 pages, almost all of which stay at a.
    let pid = mesh.spawn_via("c", "worker.tern", &worker(1 << 18), "a");
    wait_log(&mesh, "c", 0, "worker ready on a", Duration::from_secs(30));
    let migrating = mesh.migrate_in_background("b", &pid, "b", "lazy", Duration::from_secs(120));
    let resumed = wait_until(Duration::from_secs(60), || is_on(&mesh, "b", &pid, "b"));
    assert!(resumed, "the process never resumed on b:\n{}", mesh.all_logs());
    assert_reaches(&mesh, "c", &pid, "before", "b", "c");
    // Its pages are only at a: a's side of the migration goes on, serving them.
    let held = wait_until(Duration::from_secs(10), || migrations_on(&mesh, "a") == Some(1));
    assert!(held, "node a says it takes part in {:?} migrations, not 1:\n{}", migrations_on(&mesh, "a"), mesh.all_logs());

    let mark = mesh.log("b").len();
    mesh.stop("a");
    let why = format!("process {pid} ended: migrated from node a: source node 1 unreachable for 3 s while ");
    let ended = wait_until(Duration::from_secs(60), || since(&mesh, "b", mark).contains(&why));
    mesh.cont("a");
    assert!(ended, "b never ended the process while a was paused:\n{}", mesh.all_logs());
    let b_log = since(&mesh, "b", mark);
    assert!(b_log.contains("pages were only there: process ended"), "{b_log}");
    let gone = wait_until(Duration::from_secs(30), || listed(&mesh, "b", &pid) == Some(false));
    assert!(gone, "the process is still listed: {:?}\n{}", mesh.ps(Some("b")), mesh.all_logs());

    // Continued, a hears that b gave the pages up: it holds nothing for the migration.
    let released = wait_until(Duration::from_secs(30), || migrations_on(&mesh, "a") == Some(0));
    assert!(released, "node a still takes part in {:?} migrations:\n{}", migrations_on(&mesh, "a"), mesh.all_logs());
    assert_eq!(migrations_on(&mesh, "b"), Some(0), "{}", mesh.all_logs());
    serves(&mut mesh, "a", "b");
    let logs = mesh.all_logs();
    assert!(!logs.contains("panicked"), "{logs}");
    drop(mesh);
    let out = migrating.join().unwrap();
    eprintln!("ctl migrate said: {out:?}");
}

/// Receives, and prints with the node it is on, everything sent to it (integers from
/// the sender below); 4 MiB of heap, so a lazy migration leaves pages behind.
const RECEIVER: &str = r#"
let data = array(262144, 1);
println("R ready on ${node()}");
while true {
    let m = recv();
    println("R got ${m} on ${node()}");
}
"#;

/// Sends 1, 2, 3, ... to process `R` (10 ms apart), printing each one sent, as it is
/// told: a number `k`: the next `k` (then "S did k"); `"fill"`: until a send fails,
/// printing why (a retry of that number goes through).
fn sender(r: &str) -> String {
    format!(
        r#"
let r = pid("{r}");
let n = 1;
println("S ready");
while true {{
    let cmd = recv();
    if cmd == "fill" {{
        let failed = false;
        while not failed {{
            let e = try {{ send(r, n); "" }} catch e {{ "${{e}}" }};
            if e == "" {{
                println("S sent ${{n}}");
                n += 1;
                sleep(10);
            }} else {{
                println("S failed at ${{n}}: ${{e}}");
                failed = true;
            }}
        }}
    }} else {{
        let k = 0;
        while k < cmd {{
            send(r, n);
            println("S sent ${{n}}");
            n += 1;
            k += 1;
            sleep(10);
        }}
        println("S did ${{cmd}}");
    }}
}}
"#
    )
}

/// The numbers that lines of `log` containing `prefix` go on with, in order.
fn numbers_after(log: &str, prefix: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find(prefix)? + prefix.len()..];
            rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect()
}

/// Tells the sender `s` (on c) to go on with `cmd` (a Tern value).
#[track_caller]
fn tell(mesh: &RealMesh, s: &str, cmd: &str) {
    let out = mesh.ctl_on(Some("c"), &["send", s, cmd]);
    assert!(out.ok(), "send {cmd} to the sender failed: {out:?}\n{}", mesh.all_logs());
}

/// Process `pid`'s row of `ctl --json ps NODE`, asked of that node.
fn ps_row(mesh: &RealMesh, node: &str, pid: &str) -> Option<Value> {
    let out = mesh.try_ctl_on(Some(node), &["--json", "ps", node], Duration::from_secs(10)).ok()?;
    let rows: Value = serde_json::from_str(out.stdout.trim()).ok()?;
    rows.as_array()?.iter().find(|row| row["pid"] == pid).cloned()
}

/// Messages from one node held back behind a gap count against the receiver's mailbox
/// limit (`mailbox_bytes` = 512 here: 16 integer messages), across OS processes.
///
/// The gap is made for real. R (on a, born there) gets numbered messages from S (on c).
/// c is paused while R moves lazily to b (node a pushes no pages, so pages stay
/// behind), so c misses a's link update; then a is paused, and b, which sees its
/// source down with pages still there, tells R's partner c where R is itself; b is
/// paused before c can hear it. c is continued and S sends three messages: they go to
/// a, where c believes R is (burst 1, stuck while a is paused). b is continued: c
/// learns that R is at b, and S's next messages go there directly, overtaking burst 1,
/// so b holds them back (R's mailbox stays empty). Once the held ones fill the limit, b
/// refuses the next, and S's next send fails saying why. Then a is continued: burst 1
/// is forwarded to b, and R gets everything b accepted, in order, burst 1 included (the
/// messages a gap waits for are never refused for what is held behind it); what S
/// sends after its failure gets there too.
#[test]
fn messages_held_back_count_against_the_mailbox_limit_across_nodes() {
    let extra = "mailbox_bytes = 512\nmessage_bytes = 256\nsource_down_ms = 120000\n";
    let mesh = RealMesh::start_with_env(3, extra, &[("a", "TERN_TEST_NO_PUSH", "1")]);
    let r = mesh.spawn_via("c", "receiver.tern", RECEIVER, "a");
    wait_log(&mesh, "c", 0, "R ready on a", Duration::from_secs(30));
    let s = mesh.spawn_via("c", "sender.tern", &sender(&r), "c");
    wait_log(&mesh, "c", 0, "S ready", Duration::from_secs(30));
    tell(&mesh, &s, "5");
    wait_log(&mesh, "c", 0, "R got 5 on a", Duration::from_secs(30));

    // c paused until a's and b's connections to it are gone (QUIC's idle timeout), so
    // nothing a or b say reaches it before the test lets it.
    let (mark_a, mark_b) = (mesh.log("a").len(), mesh.log("b").len());
    mesh.stop("c");
    let cut = |log: &str| log.contains("connection with node c") || log.contains("connection to node c lost");
    let ok = wait_until(Duration::from_secs(30), || cut(&since(&mesh, "a", mark_a)) && cut(&since(&mesh, "b", mark_b)));
    assert!(ok, "a and b kept their connections to the paused c:\n{}", mesh.all_logs());

    let migrating = mesh.migrate_in_background("b", &r, "b", "lazy", Duration::from_secs(120));
    let resumed = wait_until(Duration::from_secs(60), || is_on(&mesh, "b", &r, "b"));
    assert!(resumed, "R never resumed on b:\n{}", mesh.all_logs());

    let mark_b = mesh.log("b").len();
    mesh.stop("a");
    wait_log(&mesh, "b", mark_b, "node a is down", Duration::from_secs(30));
    mesh.stop("b");
    let mark_c = mesh.log("c").len();
    mesh.cont("c");
    // Burst 1: sent while c knows only a as R's place, and a is paused.
    tell(&mesh, &s, "3");
    let sent = wait_until(Duration::from_secs(30), || since(&mesh, "c", mark_c).contains("S did 3"));
    let burst1 = numbers_after(&since(&mesh, "c", mark_c), "S sent ");
    let mark_b = mesh.log("b").len();
    mesh.cont("b");
    assert!(sent && burst1.len() == 3, "S did not send burst 1 ({burst1:?}):\n{}", mesh.all_logs());

    // Once b hears from c again (c's own view of b is stale for a while after its
    // pause), b's word on where R is reaches c right behind: S sends until refused.
    wait_log(&mesh, "b", mark_b, "node c is up", Duration::from_secs(60));
    tell(&mesh, &s, "\"fill\"");
    let filled = wait_until(Duration::from_secs(60), || since(&mesh, "c", mark_c).contains("S failed at "));
    // R's mailbox is empty: what filled the limit is held back behind burst 1.
    let row = ps_row(&mesh, "b", &r);
    mesh.cont("a");
    assert!(filled, "no send of S failed:\n{}", mesh.all_logs());
    assert_eq!(row.as_ref().map(|row| row["mailbox"].clone()), Some(Value::from(0)), "R's row on b: {row:?}");
    let c_log = since(&mesh, "c", mark_c);
    let failed_at = numbers_after(&c_log, "S failed at ")[0];
    let want = format!(
        "S failed at {failed_at}: send: not sent: an earlier message from this process was lost (to <pid {r}>: the mailbox of <pid {r}> was full"
    );
    assert!(c_log.contains(&want), "S was not told why:\n{c_log}");

    // Burst 1 comes through a and the gap fills; once R has taken everything, S's retry
    // of the refused number and the next ones go through.
    let through_a = *burst1.last().unwrap();
    let drained = wait_until(Duration::from_secs(60), || {
        numbers_after(&mesh.log("c"), "R got ").contains(&through_a) && ps_row(&mesh, "b", &r).is_some_and(|row| row["mailbox"] == 0)
    });
    assert!(drained, "R never got burst 1 and what was held behind it:\n{}", mesh.all_logs());
    tell(&mesh, &s, "5");
    let last = failed_at + 4;
    wait_log(&mesh, "c", mark_c, "S did 5", Duration::from_secs(60));
    wait_log(&mesh, "c", 0, &format!("R got {last} on b"), Duration::from_secs(60));

    let log = mesh.log("c");
    let sent = numbers_after(&log, "S sent ");
    let got = numbers_after(&log, "R got ");
    let missing: Vec<u64> = sent.iter().copied().filter(|n| !got.contains(n)).collect();
    eprintln!("burst 1 (through a): {burst1:?}; S failed at {failed_at}; refused: {missing:?}");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "R got messages out of order or twice: {got:?}");
    assert!(got.iter().all(|n| sent.contains(n)), "R got what S did not send: {got:?}, sent {sent:?}");
    assert!(burst1.iter().all(|n| got.contains(n)), "messages a gap waited for were lost: {burst1:?}, got {got:?}");
    assert!(!missing.is_empty(), "nothing was refused, yet S was told so: {got:?}");
    assert!(
        missing.iter().all(|&n| n > through_a && n < failed_at),
        "refused {missing:?}: only messages held behind burst 1 ({burst1:?}) may be, before S's failure at {failed_at}"
    );
    assert!(got.iter().any(|&n| n > through_a && n < failed_at), "none of the messages held back arrived: {got:?}");
    assert!((failed_at..=last).all(|n| got.contains(&n)), "what S sent after its failure did not all arrive: {got:?}");
    let logs = mesh.all_logs();
    assert!(!logs.contains("panicked"), "{logs}");
    drop(mesh);
    let _ = migrating.join().unwrap();
}

/// Prints a tick every 300 ms, and every message it receives, with the node it is on.
const TICKER: &str = r#"
println("ticker ready on ${node()}");
let n = 0;
while true {
    let m = recv(300);
    n += 1;
    if is_timeout(m) { println("tick ${n} on ${node()}"); } else { println("worker got ${m} on ${node()}"); }
}
"#;

/// The ticker, spawned on c and moved to a (so c, its birth node, is told where it goes
/// next): its pid, once it runs on a.
fn ticker_moved_to_a(mesh: &RealMesh) -> String {
    let pid = mesh.spawn_via("c", "ticker.tern", TICKER, "c");
    wait_log(mesh, "c", 0, "ticker ready on c", Duration::from_secs(30));
    let out = mesh.migrate(Some("c"), &pid, "a", "precopy");
    assert!(out.ok() && out.json()["outcome"] == "committed", "{out:?}\n{}", mesh.all_logs());
    let mark_c = mesh.log("c").len();
    wait_log(mesh, "c", mark_c, " on a", Duration::from_secs(30));
    pid
}

/// Starts migrating `pid` from a to b (asked of b) and waits until a, past `Committed`,
/// holds back its late messages (the test hook `TERN_TEST_HOLD_LATE_MS`).
fn migrate_to_b_with_late_held(mesh: &RealMesh, pid: &str, mechanism: &str) -> JoinHandle<Result<Out, Out>> {
    let mark_a = mesh.log("a").len();
    let migrating = mesh.migrate_in_background("b", pid, "b", mechanism, Duration::from_secs(120));
    wait_log(mesh, "a", mark_a, &format!("test hook: late messages of {pid} held"), Duration::from_secs(60));
    migrating
}

/// The source (a) is killed after `Committed` while it holds back the process's late
/// messages (the test hook `TERN_TEST_HOLD_LATE_MS`), and started again: the
/// destination (b), which committed, learns that the source lost them and runs the
/// process without them. It prints progress on b and answers a message from c. (The
/// process is born on c, so c knows where it went: a told its birth node at the
/// commit, before holding.)
fn a_committed_destination_runs_without_the_late_messages(mechanism: &str) {
    let mut mesh = RealMesh::start_with_env(3, "", &[("a", "TERN_TEST_HOLD_LATE_MS", "600000")]);
    let pid = ticker_moved_to_a(&mesh);
    let migrating = migrate_to_b_with_late_held(&mesh, &pid, mechanism);
    mesh.kill9("a");
    let out = migrating.join().unwrap();
    assert!(out.is_ok(), "ctl migrate did not end once its source was gone: {out:?}");
    let mark_b = mesh.log("b").len();
    let mark_c = mesh.log("c").len();
    mesh.restart("a");

    let ticks_on_b = |log: &str| log.lines().any(|l| l.contains("tick ") && l.ends_with(" on b"));
    let runs = wait_until(Duration::from_secs(60), || ticks_on_b(&since(&mesh, "c", mark_c)));
    assert!(runs, "the process never ran on b after its source was lost:\n{}", mesh.all_logs());
    let want = format!("migration of {pid}: the source restarted before its late messages came; it runs without them");
    assert!(since(&mesh, "b", mark_b).contains(&want), "{}", mesh.all_logs());
    assert_reaches(&mesh, "c", &pid, "after-the-source-was-lost", "b", "c");
    assert!(is_on(&mesh, "c", &pid, "b"), "{:?}", mesh.ps(Some("c")));
    mesh.wait_all_up(Duration::from_secs(30));
    let logs = mesh.all_logs();
    assert!(!logs.contains("panicked"), "{logs}");
    eprintln!("{logs}");
}

#[test]
fn a_committed_destination_runs_without_the_late_messages_of_a_lost_precopy_source() {
    a_committed_destination_runs_without_the_late_messages("precopy");
}

#[test]
fn a_committed_destination_runs_without_the_late_messages_of_a_lost_freeze_source() {
    a_committed_destination_runs_without_the_late_messages("freeze");
}

/// How the source is kept away while it holds the late messages.
#[derive(Clone, Copy, PartialEq)]
enum Away {
    /// `kill -9`, never started again.
    Killed,
    /// `SIGSTOP`, continued only once the destination gave up on it.
    Paused,
}

/// The source (a) holds back the process's late messages after `Committed` (the test
/// hook `TERN_TEST_HOLD_LATE_MS`, 4 s) and is then killed for good or paused: the
/// destination (b), which committed and waits for them, ends the process once a has
/// been unreachable for `source_down_ms` (3 s here), saying why, instead of keeping it
/// frozen for ever. A paused source, continued after that (its hold over), sends the
/// late messages, which b drops with a log line, and holds nothing for the migration;
/// the mesh goes on serving.
fn a_committed_destination_ends_the_process_when_its_source_stays_away(mechanism: &str, away: Away) {
    let mut mesh = RealMesh::start_with_env(3, "source_down_ms = 3000\n", &[("a", "TERN_TEST_HOLD_LATE_MS", "4000")]);
    let pid = ticker_moved_to_a(&mesh);
    let mark_b = mesh.log("b").len();
    let migrating = migrate_to_b_with_late_held(&mesh, &pid, mechanism);
    match away {
        Away::Killed => mesh.kill9("a"),
        Away::Paused => mesh.stop("a"),
    }
    let mark_c = mesh.log("c").len();
    let why = format!("process {pid} ended: migrated from node a: source node ");
    let ended = wait_until(Duration::from_secs(60), || {
        since(&mesh, "b", mark_b)
            .lines()
            .any(|l| l.contains(&why) && l.contains("unreachable for 3 s before the process's late messages came"))
    });
    if away == Away::Paused {
        mesh.cont("a");
    }
    assert!(ended, "b never ended the process while a was away:\n{}", mesh.all_logs());
    let gone = wait_until(Duration::from_secs(30), || listed(&mesh, "b", &pid) == Some(false));
    assert!(gone, "the process is still listed on b: {:?}\n{}", mesh.ps(Some("b")), mesh.all_logs());
    let ticks_on_b = since(&mesh, "c", mark_c).lines().any(|l| l.contains("tick ") && l.ends_with(" on b"));
    assert!(!ticks_on_b, "the process ran on b without its late messages:\n{}", mesh.all_logs());
    assert_eq!(migrations_on(&mesh, "b"), Some(0), "{}", mesh.all_logs());

    match away {
        Away::Killed => {
            // b goes on serving without a (`ctl migrate`, which b passed on to a, is
            // left to its own timeout).
            drop(migrating);
            let echo = mesh.spawn_via("c", "echo.tern", &worker(16), "b");
            wait_log(&mesh, "c", mark_c, "worker ready on b", Duration::from_secs(30));
            assert_reaches(&mesh, "c", &echo, "hello-b", "b", "c");
        }
        Away::Paused => {
            // Continued, a sends the late messages (b has no process for them) and ends
            // its side of the migration: it holds nothing for it.
            wait_log(&mesh, "b", mark_b, "came after its process was ended; dropped", Duration::from_secs(60));
            let released = wait_until(Duration::from_secs(30), || migrations_on(&mesh, "a") == Some(0));
            assert!(released, "node a still takes part in {:?} migrations:\n{}", migrations_on(&mesh, "a"), mesh.all_logs());
            serves(&mut mesh, "a", "b");
            let out = migrating.join().unwrap();
            eprintln!("ctl migrate said: {out:?}");
        }
    }
    let logs = mesh.all_logs();
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn a_committed_destination_ends_the_process_when_its_freeze_source_is_killed_for_good_with_the_late_messages() {
    a_committed_destination_ends_the_process_when_its_source_stays_away("freeze", Away::Killed);
}

#[test]
fn a_committed_destination_ends_the_process_when_its_precopy_source_stays_paused_with_the_late_messages() {
    a_committed_destination_ends_the_process_when_its_source_stays_away("precopy", Away::Paused);
}

/// A watcher on c starts the ticker on a (born there) and monitors it.
fn watcher() -> String {
    format!(
        "fn ticker() {{\n{TICKER}}}\n\
         let w = spawn_on(\"a\", ticker);\n\
         monitor(w);\n\
         println(\"watching ${{w}}\");\n\
         let m = recv();\n\
         println(\"watcher saw ${{m}}\");\n"
    )
}

/// The source (a, the process's birth node) is killed after `Committed`, before it told
/// anyone else where the process went (it holds its late messages and link updates, the
/// test hook `TERN_TEST_HOLD_LATE_MS`), and started again. A monitor set up on c before
/// the move must not fire while the process lives on b: c seeing a down says nothing of
/// a process that has left it.
#[test]
fn a_monitor_on_a_third_node_does_not_fire_when_the_source_is_lost_after_the_commit() {
    let mut mesh = RealMesh::start_with_env(3, "", &[("a", "TERN_TEST_HOLD_LATE_MS", "600000")]);
    mesh.spawn_via("c", "watcher.tern", &watcher(), "c");
    wait_log(&mesh, "c", 0, "ticker ready on a", Duration::from_secs(30));
    let log = mesh.log("c");
    let pid = log.split("watching <pid ").nth(1).and_then(|r| r.split('>').next()).expect("the watcher names the ticker").to_string();
    let migrating = migrate_to_b_with_late_held(&mesh, &pid, "precopy");
    let mark_c = mesh.log("c").len();
    mesh.kill9("a");
    let out = migrating.join().unwrap();
    assert!(out.is_ok(), "ctl migrate did not end once its source was gone: {out:?}");
    wait_log(&mesh, "c", mark_c, "node a is down", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    mesh.restart("a");
    let ticks_on_b = |log: &str| log.lines().any(|l| l.contains("tick ") && l.ends_with(" on b"));
    let runs = wait_until(Duration::from_secs(60), || ticks_on_b(&since(&mesh, "c", mark_c)));
    assert!(runs, "the process never ran on b after its source was lost:\n{}", mesh.all_logs());
    let c = since(&mesh, "c", mark_c);
    assert!(!c.contains("watcher saw"), "c's monitor fired while the process lives on b:\n{}", mesh.all_logs());
}

/// Five members of a coprocess group pass a token round a ring; member 0 prints every
/// 2,000th token with its node. Main (not a member) prints the members' pids, then waits.
const GROUP_RING: &str = r#"
fn member(i) {
    let next = recv();
    let expect = i;
    while true {
        let t = recv();
        if t != expect {
            println("member ${i}: expected ${expect}, got ${t}");
            exit("out of order");
        }
        expect = t + 5;
        if i == 0 and t % 2000 == 0 {
            println("token ${t} on ${node()}");
        }
        send(next, t + 1);
    }
}
let g = group();
let ms = [];
for i in 0..5 {
    push(ms, spawn(member, i, {group: g}));
}
for i in 0..5 {
    send(ms[i], ms[(i + 1) % 5]);
}
let line = "members";
for p in ms {
    line = "${line} ${p}";
}
println(line);
send(ms[0], 0);
recv();
"#;

/// The highest token the ring reported on node `on` in `console`'s log.
fn last_token_on(mesh: &RealMesh, console: &str, on: &str) -> u64 {
    let want = format!(" on {on}");
    mesh.log(console)
        .lines()
        .filter(|l| l.ends_with(&want))
        .filter_map(|l| l.split("token ").nth(1)?.split(' ').next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// A coprocess group's move is all or none on real nodes (each `tern node` its own OS
/// process): the destination is paused (`SIGSTOP`) so that it never answers the offer,
/// then killed (`kill -9`) while the source waits; the move fails, and all five members
/// run on at the source, still passing their token in order. Restarted, the destination
/// takes the whole group in a second move, and the token goes on there.
#[test]
fn a_group_move_whose_destination_is_killed_leaves_every_member_at_the_source() {
    let mut mesh = RealMesh::start(3, "");
    mesh.spawn_via("c", "ring.tern", GROUP_RING, "a");
    wait_log(&mesh, "c", 0, "token 2000 on a", Duration::from_secs(30));
    let line = mesh.log("c").lines().find(|l| l.contains("members ")).unwrap_or_default().to_string();
    let members: Vec<String> = line.split("<pid ").skip(1).filter_map(|t| Some(t.split('>').next()?.to_string())).collect();
    assert_eq!(members.len(), 5, "{line:?}\n{}", mesh.all_logs());

    mesh.stop("b");
    let args: Vec<String> =
        ["ctl", "--config", mesh.cfg(), "--node", "a", "--json", "migrate", &members[2], "b", "--group", "--mechanism", "precopy"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let moving = std::thread::spawn(move || run_for(&args.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_secs(120)));
    std::thread::sleep(Duration::from_millis(500));
    mesh.kill9("b");
    let (Ok(out) | Err(out)) = moving.join().unwrap();
    let report = out.json();
    assert_eq!(report["ok"], false, "the move to a killed node succeeded: {out:?}");
    assert!(report["outcome"].as_str().unwrap_or_default().contains("runs on at a"), "{out:?}");
    assert_eq!(report["members"].as_array().map(Vec::len), Some(5), "{out:?}");
    for m in &members {
        assert!(is_on(&mesh, "a", m, "a"), "member {m} is not running on a: {:?}\n{}", mesh.ps(Some("a")), mesh.all_logs());
    }
    let before = last_token_on(&mesh, "c", "a");
    let on = wait_until(Duration::from_secs(30), || last_token_on(&mesh, "c", "a") > before);
    assert!(on, "the ring stopped at token {before} on a:\n{}", mesh.all_logs());

    mesh.restart("b");
    mesh.wait_all_up(Duration::from_secs(30));
    let out = mesh.ctl_on(Some("a"), &["--json", "migrate", &members[0], "b", "--group", "--mechanism", "precopy"]);
    assert!(out.ok() && out.json()["ok"] == true, "the second move failed: {out:?}\n{}", mesh.all_logs());
    for m in &members {
        assert!(is_on(&mesh, "a", m, "b"), "member {m} is not on b: {:?}\n{}", mesh.ps(Some("a")), mesh.all_logs());
    }
    wait_log(&mesh, "c", 0, " on b", Duration::from_secs(30));
    let logs = mesh.all_logs();
    assert!(!logs.contains("out of order") && !logs.contains("panicked"), "{logs}");
}

/// The source is killed (`kill -9`) in the middle of a lazy migration, while most of
/// the process's pages are only there: the destination ends the process (its pages are
/// gone with the source) within `source_down_ms`, saying why in its log and to the
/// process's monitor, and holds nothing for the migration afterwards. The nodes left
/// work on.
#[test]
fn a_lazy_destination_whose_source_is_killed_ends_the_process_and_says_why() {
    let mut mesh = RealMesh::start_with_env(3, "source_down_ms = 3000\n", &[("a", "TERN_TEST_NO_PUSH", "1")]);
    let pid = mesh.spawn_via("c", "worker.tern", &worker(1 << 18), "a");
    wait_log(&mesh, "c", 0, "worker ready on a", Duration::from_secs(30));
    let watch = format!("let t = pid(\"{pid}\");\nmonitor(t);\nprintln(\"watching\");\nlet m = recv();\nprintln(\"saw ${{m}}\");\n");
    mesh.spawn("watch.tern", &watch, "c");
    wait_log(&mesh, "c", 0, "watching", Duration::from_secs(30));
    let migrating = mesh.migrate_in_background("b", &pid, "b", "lazy", Duration::from_secs(120));
    let resumed = wait_until(Duration::from_secs(60), || is_on(&mesh, "b", &pid, "b"));
    assert!(resumed, "the process never resumed on b:\n{}", mesh.all_logs());
    let held = wait_until(Duration::from_secs(10), || migrations_on(&mesh, "a") == Some(1));
    assert!(held, "node a says it takes part in {:?} migrations, not 1:\n{}", migrations_on(&mesh, "a"), mesh.all_logs());

    let mark = mesh.log("b").len();
    mesh.kill9("a");
    let ended = wait_until(Duration::from_secs(60), || {
        let b = since(&mesh, "b", mark);
        b.contains(&format!("process {pid} ended: migrated from node a: source node 1 "))
            && b.contains("pages were only there: process ended")
    });
    assert!(ended, "b never ended the process whose source was killed:\n{}", mesh.all_logs());
    let gone = wait_until(Duration::from_secs(30), || listed(&mesh, "b", &pid) == Some(false));
    assert!(gone, "the process is still listed: {:?}\n{}", mesh.ps(Some("b")), mesh.all_logs());
    let seen = wait_until(Duration::from_secs(30), || mesh.log("c").contains("saw "));
    assert!(seen, "the monitor on c was not told:\n{}", mesh.all_logs());
    let c = mesh.log("c");
    assert!(c.contains("pages were only there"), "the monitor is told why: {c}");
    assert_eq!(migrations_on(&mesh, "b"), Some(0), "{}", mesh.all_logs());
    // b and c work on without a.
    let echo = mesh.spawn("echo.tern", &worker(16), "b");
    wait_log(&mesh, "b", 0, "worker ready on b", Duration::from_secs(30));
    assert_reaches(&mesh, "c", &echo, "hello-b", "b", "b");
    drop(mesh);
    let out = migrating.join().unwrap();
    eprintln!("ctl migrate said: {out:?}");
}
