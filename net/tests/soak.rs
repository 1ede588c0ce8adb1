//! Soak: many processes spawned across a 3-node mesh (real QUIC, in this OS process),
//! messaged from other nodes, some migrated, all ended; afterwards every table of every
//! node is back to its size before (the bounded ones within their bounds), and the
//! memory of this OS process is back within a bound.
//!
//! The suite runs 3,000 processes. `TERN_SOAK=100000 cargo test --profile tests -p
//! tern-net --test soak -- --nocapture` runs the long one (it prints its numbers).

mod common;

use common::*;
use std::time::{Duration, Instant};
use tern_vm::node::TableSizes;

fn text_message(s: &str) -> tern_vm::message::Message {
    use tern_vm::message::{Message, Obj, Val};
    Message { root: Val::Obj(0), objs: vec![Obj::Str(s.into())] }
}

/// Resident memory of this OS process, bytes (`/proc/self/statm`).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

const WORKERS: &str = r#"
fn worker(main) {
    send(main, recv() + 1);
    send(main, recv() + 1);
}
let nodes = ["a", "b", "c"];
let ws = [];
for i in 0..N { push(ws, spawn_on(nodes[i % 3], worker, self())); }
for i in 0..N { send(ws[i], i); }
let sum = 0;
for i in 0..N { sum += recv(); }
println("first ${sum}");
recv();
for i in 0..N { send(ws[i], i); }
for i in 0..N { sum += recv(); }
println("done ${sum}");
"#;

#[test]
fn every_table_shrinks_back_after_many_processes_lived_moved_and_ended() {
    let n: usize = std::env::var("TERN_SOAK").ok().and_then(|v| v.parse().ok()).unwrap_or(3_000);
    let mesh = TestMesh::start_with(3, "spawns_per_peer_s = 10000000\n");
    let names = mesh.names();
    let before: Vec<(TableSizes, _)> = names.iter().map(|m| mesh.node(m).table_sizes()).collect();
    let rss_before = rss();
    let t0 = Instant::now();

    let src = format!("let N = {n};\n{WORKERS}");
    let mut run = mesh.run("a", "soak.tern", &src);
    let first = run.wait_line(&mesh, "first", |l| l.starts_with("first"));
    assert_eq!(first, format!("first {}", n * (n + 1) / 2));
    let spawned = t0.elapsed();
    // Every 10th worker moves on to the next node (they all wait in `recv`).
    let t1 = Instant::now();
    let mut moved = 0;
    let procs = mesh.all_procs();
    for (i, (at, pid)) in procs.iter().enumerate().filter(|(_, (_, p))| *p != run.pid) {
        if i % 10 != 0 {
            continue;
        }
        let to = &names[(names.iter().position(|m| m == at).unwrap() + 1) % names.len()];
        let r = mesh.node(at).migrate(*pid, to, None).unwrap_or_else(|e| panic!("{e}"));
        assert!(r.ok, "{r:?}");
        moved += 1;
    }
    let migrated = t1.elapsed();
    mesh.node("a").node().send_to(run.pid, text_message("go")).unwrap();
    let done = run.wait_line(&mesh, "done", |l| l.starts_with("done"));
    assert_eq!(done, format!("done {}", n * (n + 1)));
    let exit = run.finish(&mesh, LONG);
    run.assert_normal(&mesh, &exit);

    // Every table back to its size before; the bounded ones within their bounds.
    let settle = Instant::now() + Duration::from_secs(30);
    let back = |before: &TableSizes, now: &TableSizes| {
        TableSizes { forgotten: before.forgotten, watched: before.watched, ..*now } == *before
            && now.forgotten <= 65_536
            && now.watched <= before.watched + 1
    };
    loop {
        let now: Vec<_> = names.iter().map(|m| mesh.node(m).table_sizes()).collect();
        let all_back = now.iter().zip(&before).all(|((vm, mig), (vm0, mig0))| {
            back(vm0, vm) && (mig.runs, mig.moving, mig.by_pid, mig.fault_waits) == (mig0.runs, mig0.moving, mig0.by_pid, mig0.fault_waits)
        });
        if all_back {
            break;
        }
        assert!(Instant::now() < settle, "tables not back after 30 s:\nbefore {before:#?}\nnow {now:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let grown = rss().saturating_sub(rss_before);
    eprintln!(
        "{n} processes: spawned and messaged in {spawned:?}, {moved} migrated in {migrated:?}, all ended in {:?}; memory grew {} KiB ({} bytes per process)",
        t0.elapsed(),
        grown >> 10,
        grown / n as u64
    );
    // What the allocator keeps of the peak, and the bounded tables (`forgotten`, a
    // few KiB per ended process at most on a single node): within 64 MiB, and 2 KiB a
    // process beyond that.
    assert!(grown <= (64 << 20) + 2048 * n as u64, "memory grew by {grown} bytes for {n} processes");
}

/// Channels whose receive ends lived on other nodes than their birth node and than their
/// senders: once the processes holding them ended, every node forgets where the ends
/// were and its numbering of messages to them (`Op::ChanEnded`); before, those entries
/// stayed for good.
#[test]
fn a_channel_whose_receive_end_ended_is_forgotten_by_every_node() {
    const CHANNELS: &str = r#"
fn holder(rx, main) {
    let got = 0;
    for i in 0..3 { got += recv(rx); }
    send(main, got);
}
fn sender(tx) {
    for i in 0..3 { send(tx, i); }
}
let total = 0;
for k in 0..20 {
    let ch = channel();
    spawn_on("b", holder, ch[1], self());
    spawn_on("c", sender, ch[0]);
    total += recv();
}
println("channels ${total}");
recv();
"#;
    let mesh = TestMesh::start(3);
    let names = mesh.names();
    let before: Vec<TableSizes> = names.iter().map(|m| mesh.node(m).table_sizes().0).collect();
    let mut run = mesh.run("a", "channels.tern", CHANNELS);
    let line = run.wait_line(&mesh, "channels", |l| l.starts_with("channels "));
    assert_eq!(line, "channels 60");
    let key = |t: &TableSizes| (t.seqs, t.rx_places, t.holders, t.chan_meta, t.owed_notices);
    let settle = Instant::now() + Duration::from_secs(20);
    loop {
        let now: Vec<TableSizes> = names.iter().map(|m| mesh.node(m).table_sizes().0).collect();
        // (The main process, still waiting, holds nothing of the channels.)
        if now.iter().zip(&before).all(|(n, b)| key(n) == key(b)) {
            break;
        }
        assert!(
            Instant::now() < settle,
            "channel tables not back after 20 s:\nbefore {:?}\nnow {:?}",
            before.iter().map(key).collect::<Vec<_>>(),
            now.iter().map(key).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    mesh.node("a").node().send_to(run.pid, text_message("go")).unwrap();
    let exit = run.finish(&mesh, LONG);
    run.assert_normal(&mesh, &exit);
}
