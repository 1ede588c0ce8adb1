//! Every bound on a message's way has a defined outcome the sender's program can see
//! (ARCHITECTURE.md, "Message delivery: bounds and outcomes"): a target that does not
//! settle after a move, a message forwarded too many times, a forward the link refuses,
//! a full mailbox at the far end, a numbering gap that never fills, the held-back bound.
//! Nodes in one OS process talk through the in-process `Remote` of `common/inproc.rs`,
//! whose links can refuse chosen ops (a full link), say they are congested, or hold a
//! sender after its op is queued.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_net::runner::{compile_text, new_vm};
use tern_vm::bytecode::ModuleHash;
use tern_vm::message::{Message, Val};
use tern_vm::node::{Deliver, Node, NodeConfig, Op, Origin, Pid, SentBy, Target, MAX_FORWARDS, MAX_HELD, MAX_HOPS};
use tern_vm::value::make_name;
use tern_vm::VmConfig;

#[path = "common/inproc.rs"]
mod inproc;
use inproc::{Net, Out};

struct Fixture {
    ns: Vec<Arc<Node>>,
    net: Arc<Net>,
    out: Arc<Out>,
    main: Pid,
}

impl Fixture {
    /// `n` nodes sharing one code store, each configured by `config` from the default
    /// one, with `src` loaded and its main process started on node 1.
    fn start(n: usize, src: &str, config: impl Fn(NodeConfig) -> NodeConfig) -> Fixture {
        Fixture::start_with(n, src, None, |_| {}, config)
    }

    /// As [`Fixture::start`], each pair's ops delayed by `latency` if given, and `setup`
    /// run on the links before main starts.
    fn start_with(
        n: usize,
        src: &str,
        latency: Option<inproc::Latency>,
        setup: impl FnOnce(&Net),
        config: impl Fn(NodeConfig) -> NodeConfig,
    ) -> Fixture {
        let vm = new_vm(VmConfig::default());
        let p = compile_text("delivery.tern", src).unwrap();
        for m in &p.modules {
            vm.load(m.clone()).unwrap();
        }
        let vm = Arc::new(vm);
        let out = Arc::new(Out::default());
        let (ns, net) = inproc::nodes(n, vm, out.clone(), latency, config);
        setup(&net);
        let main = start_main(&ns[0], p.main);
        Fixture { ns, net, out, main }
    }

    /// Waits for main to end normally; returns everything printed.
    fn finish(self) -> String {
        let Some(exit) = self.ns[0].wait_exit(self.main, Duration::from_secs(60)) else {
            let stats: Vec<_> = self.ns.iter().map(|n| n.delivery_stats()).collect();
            let ps: Vec<String> = self
                .ns
                .iter()
                .flat_map(|n| n.ps())
                .map(|p| {
                    format!("<pid {}> {} ({} reductions, {} queued)", tern_vm::value::name_text(p.pid), p.status, p.reductions, p.mailbox)
                })
                .collect();
            panic!("main did not end within 60 s; printed:\n{}\ndelivery: {stats:?}\nprocesses: {ps:#?}", self.out.text());
        };
        let text = self.out.text();
        assert!(exit.reason.is_normal(), "{:?}\n{text}", exit.reason);
        for n in &self.ns {
            n.stop();
        }
        text
    }
}

fn start_main(node: &Node, main: ModuleHash) -> Pid {
    node.spawn_main(main).unwrap()
}

/// The name in `<pid 1.5>` or `<sender 1.7>` after `prefix` in `line`.
fn name_after(line: &str, prefix: &str) -> u64 {
    let rest = &line[line.find(prefix).unwrap_or_else(|| panic!("{prefix:?} in {line:?}")) + prefix.len()..];
    let t = &rest[..rest.find('>').unwrap()];
    let (n, s) = t.split_once('.').unwrap();
    make_name(n.parse().unwrap(), s.parse().unwrap())
}

fn deliver(target: Target, origin: u16, seq: u64, hops: u8, v: i64) -> Op {
    Op::Deliver(Deliver {
        target,
        origin: Origin { node: origin, inc: 1 },
        seq,
        hops,
        from: SentBy::Host,
        msg: Message::scalar(Val::Int(v)),
        carried: Vec::new(),
    })
}

/// The back-pressure program: main starts a receiver on node 2, says "ready", waits for
/// a go, sends it 0..4 (with a local process of its node ticking meanwhile) and says
/// "sent all".
const BACK_PRESSURE: &str = r#"
fn receiver() {
    while true { println("got ${recv()}"); }
}
fn ticker() {
    let n = 0;
    while true { sleep(20); n += 1; println("tick ${n}"); }
}
let r = spawn_on("n2", receiver);
spawn(ticker);
println("ready");
recv();
let i = 0;
while i < 5 { send(r, i); i += 1; }
println("sent all");
recv();
"#;

/// Back-pressure: while the link to the receiver's node is congested, a sender there
/// waits in its `send` (it does not fill the link, and is not refused), the node's other
/// processes run meanwhile, and once the link drains its messages go, all in order.
#[test]
fn a_sender_waits_while_the_link_to_its_target_is_congested() {
    let fx = Fixture::start(2, BACK_PRESSURE, |c| NodeConfig { workers: 2, ..c });
    fx.out.line("ready");
    fx.net.congested.store(true, std::sync::atomic::Ordering::SeqCst);
    fx.ns[0].send_to(fx.main, Message::scalar(Val::Nil)).unwrap();
    // The ticker goes on while main waits in its first send.
    fx.out.line("tick 10");
    let text = fx.out.text();
    assert!(
        !text.contains("got ") && !text.contains("sent all"),
        "a message went over a congested link:
{text}"
    );
    assert!(fx.ns[0].delivery_stats().backed_off > 0, "{text}");
    fx.net.congested.store(false, std::sync::atomic::Ordering::SeqCst);
    fx.out.line("sent all");
    fx.out.line("got 4");
    let got: Vec<String> = fx.out.text().lines().filter(|l| l.starts_with("got ")).map(str::to_string).collect();
    assert_eq!(got, ["got 0", "got 1", "got 2", "got 3", "got 4"]);
    fx.ns[0].send_to(fx.main, Message::scalar(Val::Nil)).unwrap();
    fx.finish();
}

/// Back-pressure is bounded: a link that stays congested holds a sender for the settle
/// timeout at most, then its message is offered anyway (and here taken).
#[test]
fn a_sender_waits_for_a_congested_link_at_most_the_settle_timeout() {
    let fx = Fixture::start(2, BACK_PRESSURE, |c| NodeConfig { settle_timeout: Duration::from_millis(100), ..c });
    fx.out.line("ready");
    fx.net.congested.store(true, std::sync::atomic::Ordering::SeqCst);
    fx.ns[0].send_to(fx.main, Message::scalar(Val::Nil)).unwrap();
    fx.out.line("sent all");
    fx.out.line("got 4");
    let got: Vec<String> = fx.out.text().lines().filter(|l| l.starts_with("got ")).map(str::to_string).collect();
    assert_eq!(got, ["got 0", "got 1", "got 2", "got 3", "got 4"]);
    assert!(fx.ns[0].delivery_stats().backed_off >= 5);
    fx.ns[0].send_to(fx.main, Message::scalar(Val::Nil)).unwrap();
    fx.finish();
}

/// A receive end that stays in the middle of a move: a send to it fails in the sender
/// with an error naming it (it used to be dropped without a word after a number of
/// looks), and once the end is settled sends go through again.
#[test]
fn a_send_to_a_receive_end_that_never_settles_fails_in_the_sender() {
    let fx = Fixture::start(
        1,
        r#"
let ch = channel();
println("chan ${ch[0]}");
recv();
println("first: ${try { send(ch[0], 1); "sent" } catch e { "error: ${e}" }}");
recv();
println("again: ${try { send(ch[0], 2); "sent" } catch e { "error: ${e}" }}");
println("got ${recv(ch[1], 5000)} then ${recv(ch[1], 200)}");
"#,
        |c| NodeConfig { settle_timeout: Duration::from_millis(300), ..c },
    );
    let c = name_after(&fx.out.line("chan "), "<sender ");
    fx.ns[0].debug_hold_arrival(c, None);
    fx.ns[0].send_to(fx.main, Message::scalar(Val::Nil)).unwrap();
    let first = fx.out.line("first: ");
    fx.ns[0].debug_hold_arrival(c, Some(fx.main));
    fx.ns[0].send_to(fx.main, Message::scalar(Val::Nil)).unwrap();
    let stats = fx.ns[0].delivery_stats();
    let text = fx.finish();
    eprintln!("{text}");
    assert!(first.starts_with("first: error: send: not sent: <sender 1.") && first.contains("did not settle within 0.3 s"), "{text}");
    assert!(text.contains("again: sent\ngot 2 then timeout"), "{text}");
    assert_eq!(stats.unsettled, 1);
}

/// A message that has been forwarded `MAX_FORWARDS` times is not dropped: it takes the
/// shortcut through its target's birth node, and the one numbered after it is not held
/// back for ever.
#[test]
fn a_message_forwarded_too_many_times_still_arrives_in_order() {
    let fx = Fixture::start(
        3,
        r#"
fn worker(main) {
    send(main, self());
    send(main, "got ${recv(5000)} ${recv(5000)}");
}
spawn(worker, self());
println("worker ${recv()}");
println(recv());
"#,
        // (Node 2's start is the one the injected messages name: it is their origin,
        // and a node that knows nothing of the worker gives them back to it.)
        |c| NodeConfig { incarnation: 1, ..c },
    );
    let w = name_after(&fx.out.line("worker "), "<pid ");
    // From node 2: its first message went a long way round and reaches node 3 (which
    // knows nothing of the worker, and gives it back to node 2, which finds the worker)
    // after MAX_FORWARDS hops; its second comes straight.
    fx.ns[2].receive(2, deliver(Target::Inbox(w), 2, 0, MAX_FORWARDS, 10));
    fx.ns[0].receive(2, deliver(Target::Inbox(w), 2, 1, 0, 11));
    let text = fx.finish();
    assert!(text.contains("got 10 11"), "{text}");
}

/// One forwarded `MAX_HOPS` times is given up (only a target that keeps moving faster
/// than messages travel, or a broken peer, gets there): logged and counted, its number
/// skipped by a notice that takes the shortcut, so the next one is not held back.
#[test]
fn a_message_forwarded_max_hops_times_is_lost_and_its_number_skipped() {
    let fx = Fixture::start(
        3,
        r#"
fn worker(main) {
    send(main, self());
    send(main, "got ${recv(5000)} ${recv(500)}");
}
spawn(worker, self());
println("worker ${recv()}");
println(recv());
"#,
        // (Node 2's start is the one the injected messages name: it is their origin,
        // and a node that knows nothing of the worker gives them back to it.)
        |c| NodeConfig { incarnation: 1, ..c },
    );
    let w = name_after(&fx.out.line("worker "), "<pid ");
    fx.ns[2].receive(2, deliver(Target::Inbox(w), 2, 0, MAX_HOPS, 10));
    fx.ns[0].receive(2, deliver(Target::Inbox(w), 2, 1, 0, 11));
    let stats = fx.ns[2].delivery_stats();
    let text = fx.finish();
    assert!(text.contains("got 11 timeout"), "{text}");
    assert!(text.contains(&format!("node n3: a message for <pid 1.2> was lost: it was forwarded {MAX_HOPS} times")), "{text}");
    assert_eq!(stats.lost_on_the_way, 1);
}

/// A numbering gap that nothing will ever fill (its message was lost with a node that
/// crashed, say) holds later messages back only until the gap timeout.
#[test]
fn a_gap_that_never_fills_is_given_up_after_the_gap_timeout() {
    let fx = Fixture::start(
        2,
        r#"
fn worker(main) {
    send(main, self());
    send(main, "got ${recv(10000)}");
    send(main, "then ${recv(1000)}");
}
spawn(worker, self());
println("worker ${recv()}");
println(recv());
println(recv());
"#,
        |c| NodeConfig { gap_timeout: Duration::from_millis(500), ..c },
    );
    let w = name_after(&fx.out.line("worker "), "<pid ");
    // Number 1 from node 2; number 0 never comes...
    let t0 = Instant::now();
    fx.ns[0].receive(2, deliver(Target::Inbox(w), 2, 1, 0, 11));
    fx.out.line("got ");
    assert!(t0.elapsed() >= Duration::from_millis(500), "not before the gap timeout");
    // ... or comes too late: dropped, and counted.
    fx.ns[0].receive(2, deliver(Target::Inbox(w), 2, 0, 0, 10));
    let stats = fx.ns[0].delivery_stats();
    let text = fx.finish();
    assert!(text.contains("got 11\n") && text.contains("then timeout\n"), "{text}");
    assert!(text.contains("node n1: a message for <pid 1.2> was lost: it reached node n1 after its number had been given up"), "{text}");
    assert!(text.contains("node n1: a message for <pid 1.2> was lost: gave up waiting for 1 missing message(s) after 0.5 s"), "{text}");
    assert_eq!((stats.given_up, stats.late), (1, 1), "{text}");
}

/// A broken or hostile peer that sends past a gap until the held-back bound is reached:
/// the receiver gives up waiting for the missing number, logs it, and delivers what it
/// held, in order; nothing is dropped for the bound.
#[test]
fn a_peer_that_overruns_the_held_back_bound_has_its_gap_skipped() {
    const HELD: u64 = MAX_HELD as u64;
    let fx = Fixture::start(
        2,
        r#"
fn worker(main) {
    send(main, self());
    let n = 0;
    let bad = 0;
    let m = recv(20000);
    while not is_timeout(m) {
        n += 1;
        if m != n { bad += 1; }
        m = recv(1000);
    }
    send(main, "received ${n} bad ${bad}");
}
spawn(worker, self());
println("worker ${recv()}");
println(recv());
"#,
        // (The gap timeout would give it up too, much later.)
        |c| NodeConfig { gap_timeout: Duration::from_secs(600), ..c },
    );
    let w = name_after(&fx.out.line("worker "), "<pid ");
    for seq in 1..=HELD + 1 {
        fx.ns[0].receive(2, deliver(Target::Inbox(w), 2, seq, 0, seq as i64));
    }
    let stats = fx.ns[0].delivery_stats();
    let text = fx.finish();
    assert!(text.contains(&format!("received {} bad 0", HELD + 1)), "{text}");
    assert!(text.contains(&format!("gave up waiting for 1 missing message(s): more than {MAX_HELD} were held back")), "{text}");
    assert_eq!(stats.given_up, 1);
}

/// Messages held back behind a missing one count against the mailbox's byte limit: once
/// the held ones and the queued ones fill it, a further one is refused as for a full
/// mailbox (a skip notice takes its place and it is counted), and when the missing one
/// comes, what was held is delivered in order, past the refused numbers.
#[test]
fn messages_held_back_count_against_the_mailbox_limit() {
    let fx = Fixture::start(
        2,
        r#"
fn worker(main) {
    send(main, self());
    let got = [];
    let m = recv(20000);
    while not is_timeout(m) {
        push(got, m);
        m = recv(1000);
    }
    send(main, "received ${len(got)} first ${got[0]} last ${got[len(got) - 1]}");
}
spawn(worker, self());
println("worker ${recv()}");
println(recv());
"#,
        |c| NodeConfig { mailbox_limit_bytes: 4096, gap_timeout: Duration::from_secs(600), ..c },
    );
    let w = name_after(&fx.out.line("worker "), "<pid ");
    // Number 0 is missing; 1..=2000 are held back behind it until the limit refuses more.
    for seq in 1..=2000 {
        fx.ns[0].receive(2, deliver(Target::Inbox(w), 2, seq, 0, seq as i64));
    }
    let refused = fx.ns[0].delivery_stats().refused_full;
    fx.ns[0].receive(2, deliver(Target::Inbox(w), 2, 0, 0, 0));
    let text = fx.finish();
    assert!(refused > 0 && refused < 2000, "refused {refused}: {text}");
    let admitted = 2001 - refused;
    assert!(text.contains(&format!("received {admitted} first 0 last ")), "{text}");
    assert!(text.contains("was full"), "{text}");
}

/// A down notice reaches a watcher whose mailbox is full (notices are not subject to the
/// mailbox limit: a monitor must not miss the end it watches for).
#[test]
fn a_down_notice_reaches_a_full_mailbox() {
    let fx = Fixture::start(
        1,
        r#"
fn short() { recv(); }
let p = spawn(short);
monitor(p);
let big = repeat("x", 500);
let n = 0;
// Full to the brim: big messages, then the smallest, until even that does not fit.
while try { send(self(), big); true } catch e { false } { n += 1; }
while try { send(self(), big); true } catch e { try { send(self(), 0); true } catch e { false } } { n += 1; }
send(p, "go");
// Nothing is taken out before it has ended (and its notice come or gone).
sleep(300);
let found = false;
let m = recv(5000);
while not is_timeout(m) {
    if type_of(m) == "map" { found = true; }
    m = recv(500);
}
println("filled ${n} down ${found}");
"#,
        |c| NodeConfig { mailbox_limit_bytes: 8 << 10, ..c },
    );
    let text = fx.finish();
    assert!(text.contains("down true"), "{text}");
}

/// A forward that the link refuses (a full link to the node the process moved to): the
/// number is skipped where the process is, so later messages are not held back, and the
/// sender is told on its next send.
#[test]
fn a_forward_the_link_refuses_is_skipped_and_its_sender_told() {
    let fx = Fixture::start(
        3,
        r#"
let N = 100;
fn worker(main) {
    send(main, self());
    let n = 0;
    let bad = 0;
    let last = -1;
    let ended = false;
    let m = recv(5000);
    while not ended and not is_timeout(m) {
        if m == "end" { ended = true; } else {
            n += 1;
            if m <= last { bad += 1; }
            last = m;
            m = recv(5000);
        }
    }
    send(main, "received ${n} bad ${bad} ended ${ended}");
}
fn sender(w, main) {
    let ok = 0;
    let errors = 0;
    let last = "";
    for i in 0..N {
        let r = try { send(w, i); "" } catch e { e };
        if r == "" { ok += 1; } else { errors += 1; last = r; }
        sleep(2);
    }
    let sent = false;
    while not sent { sent = try { send(w, "end"); true } catch e { false }; }
    send(main, "sender ok ${ok} errors ${errors} last ${last}");
}
let w = spawn(worker, self());
println("worker ${recv()}");
recv();
spawn_on("n3", sender, w, self());
println(recv());
println(recv());
"#,
        |c| c,
    );
    let w = name_after(&fx.out.line("worker "), "<pid ");
    // The worker moves to node 2; node 3 goes on sending by node 1, its birth node.
    let (src, dst) = (&fx.ns[0], &fx.ns[1]);
    src.freeze(w, Duration::from_secs(10)).unwrap();
    let image = src.export_frozen(w).unwrap();
    dst.import_image(&image).unwrap();
    let late = src.commit_export(w, 2, tern_vm::node::Forwarding::LinkUpdate).unwrap();
    dst.commit_import(w, late).unwrap();
    // Node 1's link to node 2 refuses the first message it passes on.
    let mut refused = false;
    *fx.net.filter.lock() = Some(Box::new(move |from, to, op| {
        let hit = !refused && from == 1 && to == 2 && matches!(op, Op::Deliver(_));
        refused |= hit;
        hit
    }));
    fx.ns[0].send_to(fx.main, Message::scalar(Val::Nil)).unwrap();
    let ns = fx.ns.clone();
    let text = fx.finish();
    eprintln!("{text}");
    assert!(text.contains("received 98 bad 0 ended true"), "{text}");
    let sender = text.lines().find(|l| l.starts_with("sender ")).unwrap();
    assert!(
        sender.starts_with(
            "sender ok 99 errors 1 last send: not sent: an earlier message from this process was lost (to <pid 1.2>: it could not be passed on from node n1: the link cannot take more)"
        ),
        "{text}"
    );
    assert_eq!(ns[0].delivery_stats().lost_on_the_way, 1);
    assert_eq!(ns[2].delivery_stats().reported, 1);
}

/// A sender on another node whose messages find the mailbox full is told (its next send
/// fails), and every message it sent either arrived, in order, or was reported lost.
#[test]
fn a_remote_sender_is_told_when_the_mailbox_was_full() {
    let fx = Fixture::start(
        2,
        r#"
let N = 300;
fn worker(main) {
    send(main, self());
    sleep(300);
    let n = 0;
    let bad = 0;
    let last = -1;
    let ended = false;
    while not ended {
        let m = recv(5000);
        if is_timeout(m) or m == "end" { ended = true; } else {
            n += 1;
            if m.i <= last { bad += 1; }
            last = m.i;
        }
    }
    send(main, "received ${n} bad ${bad}");
}
fn sender(w, main) {
    let ok = 0;
    let errors = 0;
    let last = "";
    let pad = repeat("x", 200);
    for i in 0..N {
        let r = try { send(w, {i: i, pad: pad}); "" } catch e { e };
        if r == "" { ok += 1; } else { errors += 1; last = r; }
        sleep(2);
    }
    let sent = false;
    while not sent { sent = try { send(w, "end"); true } catch e { false }; }
    send(main, "sender ok ${ok} errors ${errors} last ${last}");
}
let w = spawn(worker, self());
println("worker ${recv()}");
spawn_on("n2", sender, w, self());
println(recv());
println(recv());
"#,
        |c| NodeConfig { mailbox_limit_bytes: 8 << 10, ..c },
    );
    let ns = fx.ns.clone();
    let text = fx.finish();
    eprintln!("{text}");
    let (refused, reported) = (ns[0].delivery_stats().refused_full, ns[1].delivery_stats().reported);
    let nums = |prefix: &str| -> Vec<u64> {
        let l = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}: {text}"));
        l.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect()
    };
    let (received, sender) = (nums("received "), nums("sender ok "));
    assert_eq!(received[1], 0, "in order: {text}");
    assert!(sender[1] >= 1, "the sender was told: {text}");
    assert!(refused > 0 && received[0] < sender[0], "some were refused: {text}");
    assert_eq!(received[0] + refused, sender[0], "every message sent arrived or was refused: {text}");
    assert_eq!(reported, refused, "the sender's node was told of each: {text}");
    assert!(text.contains("last send: not sent: an earlier message from this process was lost (to <pid 1.2>: the mailbox of <pid 1.2> was full (its limits are 1048576 messages and 8 KiB of queued messages"), "{text}");
}

/// A send the link refuses takes nothing away: the receive end it carried stays with
/// the sender, which can still receive on it.
#[test]
fn a_refused_send_leaves_the_receive_end_it_carried_with_the_sender() {
    let fx = Fixture::start(
        2,
        r#"
fn worker() { recv(5000); }
let w = spawn_on("n2", worker);
let ch = channel();
recv();
println("send: ${try { send(w, ch[1]); "sent" } catch e { "error: ${e}" }}");
println("again: ${try { send(ch[0], "still mine"); "sent" } catch e { "error: ${e}" }}");
println("recv: ${try { recv(ch[1], 1000) } catch e { "error: ${e}" }}");
"#,
        |c| c,
    );
    *fx.net.filter.lock() = Some(Box::new(|from, to, op| from == 1 && to == 2 && matches!(op, Op::Deliver(_))));
    fx.ns[0].send_to(fx.main, Message::scalar(Val::Nil)).unwrap();
    let text = fx.finish();
    assert!(text.contains("send: error: send: the link cannot take more\n"), "{text}");
    assert!(text.contains("again: sent\nrecv: still mine\n"), "{text}");
}

/// A receive end that comes back to its node before the thread that sent it away has
/// finished letting it go (that thread preempted right after handing the message to the
/// link) keeps its new state there: its holder, its order, no pointer away. (It used to
/// be let go a second time: its holder forgotten and a pointer set to the node it had
/// left, so every later message for it went back and forth between the two nodes until
/// it was given up.)
#[test]
fn a_receive_end_back_before_its_sender_let_go_of_it_stays_held() {
    let fx = Fixture::start(
        2,
        r#"
fn bouncer() {
    let m = recv();
    send(m[0], m[1]);
}
let b = spawn_on("n2", bouncer);
let ch = channel();
recv();
send(b, [self(), ch[1]]);
let rx = recv(5000);
send(ch[0], "after the round trip");
println("got: ${recv(rx, 3000)}");
"#,
        |c| NodeConfig { workers: 2, ..c },
    );
    // The message carrying the end stalls its sender for 300 ms once it is on the link:
    // long enough for the bouncer on n2 to send the end back.
    *fx.net.stall.lock() = Some(Box::new(|from, to, op| match op {
        Op::Deliver(d) if from == 1 && to == 2 && !d.carried.is_empty() => Some(Duration::from_millis(300)),
        _ => None,
    }));
    fx.ns[0].send_to(fx.main, Message::scalar(Val::Nil)).unwrap();
    let text = fx.finish();
    assert!(text.contains("got: after the round trip\n"), "{text}");
}

/// The bounce of `examples/mesh/bounce.tern` between two in-process nodes (no network,
/// so many more round trips a second), five times: a receive end travels from its
/// birth node to another and back, in a message, while four senders on its birth node
/// keep sending; every message arrives exactly once, in each sender's order. (A sender
/// on the birth node that looked for the end while it arrived there could find it
/// nowhere, neither held, nor arriving, nor pointed to, and its message was dropped
/// without a word: in about one run in four of this program, before the fix.)
#[test]
fn a_receive_end_bouncing_off_its_birth_node_loses_nothing() {
    let src = include_str!("../../examples/mesh/bounce.tern")
        .replace("spawn_on(\"b\"", "spawn_on(\"n2\"")
        .replace("let ROUNDS = 100;", "let ROUNDS = 3000;")
        .replace("let SHARE = 50;", "let SHARE = 10;")
        .replace("let MAX_MS = 5000;", "let MAX_MS = 3000;");
    for run in 0..5 {
        let fx = Fixture::start(2, &src, |c| NodeConfig { workers: 2, ..c });
        let text = fx.finish();
        assert!(text.contains(", 0 out of order, extra: false"), "run {run}: {text}");
    }
}

/// `spawn_on` with a list of nodes: every request goes out before any answer comes back
/// (a fan-out costs one round trip, not one per node), the pids come back in the list's
/// order (a node named twice gets two children, this node's own place is started here),
/// and a request the link refuses leaves `nil` in its place while the others run.
#[test]
fn spawn_on_a_list_sends_every_request_before_any_answer() {
    let src = r#"
fn f(main) { send(main, [self(), node()]); }
let names = ["n2", "n1", "n3", "n2", "n4"];
let pids = spawn_on(names, f, self());
let started = 0;
for p in pids {
    if p != nil { started += 1; }
}
let at = {};
for i in 0..started {
    let m = recv(10000);
    assert(not is_timeout(m), "only ${i} children answered");
    at["${m[0]}"] = m[1];
}
for i in 0..len(names) {
    if pids[i] == nil { println("${i}: nil"); } else { println("${i}: ${names[i]} ran on ${at["${pids[i]}"]}"); }
}
println("distinct: ${pids[0] != pids[3]}");
"#;
    type Seen = Vec<(u16, u16, &'static str)>;
    let order: Arc<parking_lot::Mutex<Seen>> = Arc::default();
    let seen = order.clone();
    let fx = Fixture::start_with(
        4,
        src,
        Some(|_, _| Duration::from_millis(20)),
        move |net| {
            *net.filter.lock() = Some(Box::new(move |from, to, op| {
                match op {
                    Op::Spawn { .. } => seen.lock().push((from, to, "Spawn")),
                    Op::Spawned { .. } => seen.lock().push((from, to, "Spawned")),
                    _ => {}
                }
                // The link to n4 refuses the request.
                matches!(op, Op::Spawn { .. }) && to == 4
            }));
        },
        |c| c,
    );
    let text = fx.finish();
    for line in ["0: n2 ran on n2", "1: n1 ran on n1", "2: n3 ran on n3", "3: n2 ran on n2", "4: nil", "distinct: true"] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
    }
    let order = order.lock().clone();
    let last_request = order.iter().rposition(|o| o.2 == "Spawn").expect("requests");
    let first_answer = order.iter().position(|o| o.2 == "Spawned").expect("answers");
    assert!(last_request < first_answer, "an answer came back before every request went out: {order:?}");
    assert_eq!(order.iter().filter(|o| o.2 == "Spawn").count(), 4, "one request per remote place: {order:?}");
}
