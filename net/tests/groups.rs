//! Coprocess groups (V-System's logical host) over QUIC: a group's members move
//! together in one migration under every mechanism — frozen together, all or none, one
//! link update naming every member — and talk among themselves without the network
//! afterwards; a member cannot be moved apart from its group; `group()`, `spawn(...,
//! {group})`, `my_group()` and `migrate_group` (by group or by a member's pid) from
//! programs, and their errors.

mod common;

use common::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tern_net::migration::TestHooks;
use tern_net::proto::mechanism::{How, Mechanism};

/// Five members pass a token round a ring as fast as they can, each checking that it
/// gets the number it expects (none lost, none twice, in order); member 0 says every
/// 500 rounds where it is. The main process (not a member) waits for "go".
const RING: &str = r#"
fn member(i, main) {
    let next = recv();
    send(main, "member ${i} ${self()} in ${my_group()} on ${node()}");
    let expect = i;
    while true {
        let t = recv();
        if t != expect {
            println("member ${i}: expected ${expect}, got ${t}");
            exit("out of order");
        }
        expect = t + 5;
        if i == 0 and t % 2500 == 0 {
            println("token ${t} on ${node()}");
        }
        send(next, t + 1);
    }
}
let g = group();
let ms = [];
for i in 0..5 {
    push(ms, spawn(member, i, self(), {group: g}));
}
for i in 0..5 {
    send(ms[i], ms[(i + 1) % 5]);
}
for i in 0..5 {
    println(recv(10000));
}
send(ms[0], 0);
println("ready");
recv();
"#;

/// The pid in a line like `member 0 <pid 1.5> ...`.
fn pid_in(line: &str) -> u64 {
    let t = line.split("<pid ").nth(1).and_then(|t| t.split('>').next()).unwrap_or_else(|| panic!("no pid in {line:?}"));
    tern_net::cmd::parse_pid(t).unwrap_or_else(|e| panic!("{e}"))
}

/// The members' pids, from their first lines.
fn members(run: &Run) -> Vec<u64> {
    run.text.lines().filter(|l| l.starts_with("member ") && l.contains(" in <group ")).map(pid_in).collect()
}

/// The highest token member 0 has reported so far.
fn last_token(run: &Run) -> u64 {
    run.text.lines().filter_map(|l| l.strip_prefix("token ")?.split(' ').next()?.parse().ok()).max().unwrap_or(0)
}

/// Waits until member 0 reports a token past `after` on node `on`.
fn token_moves_on(m: &TestMesh, run: &mut Run, after: u64, on: &str) -> u64 {
    let want = format!(" on {on}");
    let t0 = Instant::now();
    loop {
        run.pump();
        let past: Vec<u64> = run
            .text
            .lines()
            .filter(|l| l.starts_with("token ") && l.ends_with(&want))
            .filter_map(|l| l.strip_prefix("token ")?.split(' ').next()?.parse().ok())
            .filter(|&t| t > after)
            .collect();
        if let Some(&t) = past.iter().max() {
            return t;
        }
        assert!(!run.text.contains("expected"), "a member saw the ring out of order:\n{}", run.text);
        assert!(t0.elapsed() < Duration::from_secs(60), "the token did not move on at {on} past {after}:\n{}\n{}", run.text, m.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ops_received(m: &TestMesh) -> u64 {
    m.names().iter().map(|n| m.node(n).stats().vm_ops_received.load(Ordering::Relaxed)).sum()
}

#[test]
fn a_group_of_five_moves_as_one_under_every_mechanism() {
    let m = TestMesh::start(3);
    let mut run = m.run("a", "ring.tern", RING);
    run.wait_line(&m, "ready", |l| l == "ready");
    let pids = members(&run);
    assert_eq!(pids.len(), 5, "{}", run.text);
    let mut at = "a".to_string();
    let mut token = token_moves_on(&m, &mut run, 0, "a");

    // A member cannot move apart from its group.
    let e = m.node("a").migrate(pids[2], "b", None).expect_err("a member alone");
    assert!(e.contains("a group moves together"), "{e}");

    for (k, mech) in Mechanism::ALL.iter().enumerate() {
        let to = ["b", "c", "a", "b"][k];
        let leader = pids[k % 5];
        let hold = k == 0;
        if hold {
            // The first move is held before the destination is ready: every member is
            // frozen at the source by then, and none runs (its reductions stay put).
            m.node(to).set_migration_hooks(TestHooks { hold_before_ready: true, ..TestHooks::default() });
        }
        let how = How { mechanism: Some((*mech).into()), group: true, ..How::default() };
        let r = std::thread::scope(|s| {
            let mover = s.spawn(|| m.node(&at).migrate_how(leader, to, how));
            if hold {
                assert!(m.wait_log(to, Duration::from_secs(30), |l| l.contains("held before Ready")), "{}", m.log_text());
                let node = m.node(&at).node();
                let reductions = |p: u64| node.at_safepoint(p, |p| p.reductions, Duration::from_secs(5)).expect("a member here");
                let before: Vec<u64> = pids.iter().map(|&p| reductions(p)).collect();
                assert!(pids.iter().all(|&p| node.is_frozen(p)), "every member is frozen");
                std::thread::sleep(Duration::from_millis(300));
                let after: Vec<u64> = pids.iter().map(|&p| reductions(p)).collect();
                assert_eq!(before, after, "no member ran while the group was frozen");
                m.node(to).set_migration_hooks(TestHooks::default());
            }
            mover.join().expect("the mover")
        })
        .expect("a report");
        assert!(r.ok, "{mech}: {r:?}\n{}", m.log_text());
        // One migration moved them all: the report lists them, the leader first.
        assert_eq!(r.members.len(), 5, "{r:?}");
        assert_eq!(r.members[0], leader);
        let mut listed = r.members.clone();
        listed.sort_unstable();
        let mut want = pids.clone();
        want.sort_unstable();
        assert_eq!(listed, want);
        // One link update per partner node, naming every member (not one per member).
        assert!(r.link_updates <= 2, "{mech}: {} link updates for a group on 3 nodes: {r:?}", r.link_updates);
        for &p in &pids {
            assert_eq!(m.where_is(p).as_deref(), Some(to), "{mech}: member {p:x} is not on {to}");
        }
        at = to.to_string();
        token = token_moves_on(&m, &mut run, token, to);
        // Among themselves, the members no longer use the network: the token goes round
        // thousands of times and no node receives a message.
        let ops = ops_received(&m);
        let t = token;
        token = token_moves_on(&m, &mut run, t + 5000, to);
        assert_eq!(ops_received(&m), ops, "{mech}: messages crossed the network between tokens {t} and {token}\n{}", m.log_text());
    }
    assert!(!run.text.contains("expected"), "{}", run.text);
    assert!(last_token(&run) >= token);
}

#[test]
fn a_group_move_that_fails_leaves_every_member_running_where_it_was() {
    let mut m = TestMesh::start(3);
    let mut run = m.run("a", "ring.tern", RING);
    run.wait_line(&m, "ready", |l| l == "ready");
    let pids = members(&run);
    let token = token_moves_on(&m, &mut run, 0, "a");
    m.node("c").set_migration_hooks(TestHooks { hold_before_ready: true, ..TestHooks::default() });
    let how = How { mechanism: Some(Mechanism::Precopy.into()), group: true, ..How::default() };
    let r = std::thread::scope(|s| {
        let mover = s.spawn(|| m.node("a").migrate_how(pids[0], "c", how));
        assert!(m.wait_log("c", Duration::from_secs(30), |l| l.contains("held before Ready")), "{}", m.log_text());
        // The destination is lost before the commit point: all stay, none moves.
        m.node("c").halt();
        mover.join().expect("the mover")
    });
    let r = r.expect("a report");
    assert!(!r.ok, "{r:?}");
    m.stop("c");
    for &p in &pids {
        assert_eq!(m.where_is(p).as_deref(), Some("a"), "member {p:x}");
    }
    token_moves_on(&m, &mut run, token, "a");
    assert!(!run.text.contains("expected"), "{}", run.text);
}

#[test]
fn programs_make_groups_spawn_into_them_and_move_them() {
    let m = TestMesh::start(3);
    let src = r#"
fn kid(boss) {
    send(boss, "kid in ${my_group()} on ${node()}");
    while true {
        let m = recv();
        send(boss, "kid on ${node()} got ${m}");
    }
}
fn boss(main) {
    let k1 = spawn(kid, self(), {group: "parent"});
    let k2 = spawn(kid, self(), {group: "parent"});
    let said = [recv(), recv()];
    send(main, [k1, k2, said[0], said[1]]);
    assert(recv() == "go");
    assert(migrate_group(my_group(), "b") == true);
    send(k1, "hello");
    send(main, "boss on ${node()}, ${recv()}");
    while true {
        send(main, "boss relays ${recv()}");
    }
}
let g = group();
println("main is in ${my_group()}");
let b = spawn(boss, self(), {group: g});
let info = recv(10000);
let kids = [info[0], info[1]];
println(info[2]);
println(info[3]);
for bad in [{group: "parent"}, {group: 5}, {colour: 1}] {
    println("error: ${try { spawn(kid, self(), bad) } catch e { e }}");
}
println("error: ${try { spawn_on("c", kid, self(), {group: g}) } catch e { e }}");
println("error: ${try { migrate(kids[0], "c") } catch e { e }}");
println("error: ${try { migrate_group(group(), "c") } catch e { e }}");
// A map that is one of the function's arguments is not an option.
fn takes_map(main, m) {
    send(main, "got ${m.x} in ${my_group()}");
}
spawn(takes_map, self(), {x: 1});
println(recv(10000));
send(b, "go");
println(recv(10000));
// The group is on b now: it is named by one of its members.
assert(migrate_group(kids[0], "c") == true);
send(kids[1], "again");
println(recv(10000));
println("error: ${try { spawn(kid, self(), {group: g}) } catch e { e }}");
println("done");
"#;
    let mut run = m.run("a", "groups.tern", src);
    run.wait_line(&m, "done", |l| l == "done");
    let lines: Vec<&str> = run.text.lines().collect();
    let want = [
        "main is in nil",
        "kid in <group 1.",
        "kid in <group 1.",
        "error: spawn: {group: \"parent\"}: this process is in no group",
        "error: spawn: the group option is a group (from group()) or \"parent\", not an int",
        "error: spawn: unknown option \"colour\" (expected group or pin)",
        "error: spawn_on: a group lives on one node",
        "error: migrate: process ",
        "error: migrate_group: <group 1.",
        "got 1 in nil",
        "boss on b, kid on b got hello",
        "boss relays kid on c got again",
        "error: spawn: <group 1.",
        "done",
    ];
    assert_eq!(lines.len(), want.len(), "{}\n{}", run.text, m.log_text());
    for (l, w) in lines.iter().zip(want) {
        assert!(l.starts_with(w), "{l:?} does not start with {w:?}\n{}", run.text);
    }
    assert!(lines[7].contains("a group moves together"), "{}", lines[7]);
    assert!(lines[8].contains("has no members on node a"), "{}", lines[8]);
    assert!(lines[12].contains("moved away from this node"), "{}", lines[12]);
    // The report of the operator-free moves lists the members.
    let r = m.node("b").reports().into_iter().last().expect("a report of the move from b");
    assert_eq!(r.members.len(), 3, "{r:?}");
}
