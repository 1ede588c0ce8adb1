//! `tern-bench forwarding`: the seed's comparison of the four message-forwarding
//! mechanisms, measured on the node code that ships. N VM nodes in this OS process,
//! joined by an in-memory network (one delivery thread per node, every op delayed by a
//! fixed latency per hop) that counts what the nodes say to each other. A worker born on
//! node 1 with partners on `k` other nodes moves `m` times; the bench carries out each
//! move's steps as the mesh host does (export, import, commit, the link updates the
//! mechanism asks for, the source's drop of its route after the acknowledgements), then
//! measures, per mechanism and mesh size:
//!
//! - control messages per migration (link updates and their acks, birth-node notices);
//! - the first message after a move from a partner, and from a node that never sent to
//!   the worker: hops (messages on the network for it, refusals included), the control
//!   messages it needed (locates and their answers, path shortening), its latency;
//! - a later message from the same node: hops;
//! - state left on the nodes the worker left (routes kept, beside its birth node's);
//! - what a lost node does: the birth node, and the first node the worker left.
//!
//! Results in `bench/results/forwarding.md`.

use anyhow::{bail, Result};
use clap::Args;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tern_vm::message::{Message, Val};
use tern_vm::node::{Console, Forwarding, Mesh, NoFiles, Node, NodeConfig, Op, Pid, Remote};

#[derive(Args)]
pub struct ForwardingArgs {
    /// Mesh sizes.
    #[arg(long, value_delimiter = ',', default_values_t = vec![3, 10, 30, 100])]
    nodes: Vec<usize>,
    /// Nodes with a partner of the worker (that sent it a message before the moves).
    #[arg(long, default_value_t = 2)]
    partners: usize,
    /// Moves of the worker.
    #[arg(long, default_value_t = 4)]
    moves: usize,
    /// One-way latency of a hop, µs.
    #[arg(long, default_value_t = 200)]
    latency_us: u64,
    /// Do not write bench/results/forwarding.md.
    #[arg(long)]
    no_write: bool,
}

const WORKER: &str = r#"
fn worker(main) {
    send(main, self());
    while true {
        let m = recv();
        println("got ${m}");
    }
}
let w = spawn(worker, self());
println("worker ${recv()}");
recv();
"#;

/// What the processes print.
#[derive(Default)]
struct Out(Mutex<String>);

impl Console for Out {
    fn write(&self, _: Pid, text: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push_str(text);
    }
    fn failed(&self, _: Pid, text: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push_str(&format!("FAILED: {text}\n"));
    }
}

impl Out {
    fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The in-memory network: per node a queue its delivery thread takes ops from when due.
struct Net {
    nodes: Mutex<Vec<Weak<Node>>>,
    queues: Vec<crossbeam_channel::Sender<(Instant, u16, Op)>>,
    latency: Duration,
    counts: Mutex<HashMap<&'static str, u64>>,
    down: Mutex<Vec<u16>>,
    stop: AtomicBool,
}

impl Net {
    fn snapshot(&self) -> HashMap<&'static str, u64> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

struct Link {
    net: Arc<Net>,
    me: u16,
}

fn kind(op: &Op) -> &'static str {
    match op {
        Op::Deliver(_) => "Deliver",
        Op::Refused { .. } => "Refused",
        Op::Locate { .. } => "Locate",
        Op::Located { .. } => "Located",
        Op::PidMoved { .. } => "PidMoved",
        Op::PidEnded { .. } => "PidEnded",
        Op::Skip { .. } => "Skip",
        _ => "other",
    }
}

impl Remote for Link {
    fn send(&self, to: u16, op: Op) -> Result<(), String> {
        let q = self.net.queues.get(usize::from(to).wrapping_sub(1)).ok_or("no such node")?;
        *self.net.counts.lock().unwrap_or_else(|e| e.into_inner()).entry(kind(&op)).or_default() += 1;
        q.send((Instant::now() + self.net.latency, self.me, op)).map_err(|_| "stopped".to_string())
    }
    fn node_id(&self, name: &str) -> Option<u16> {
        name.strip_prefix('n')?.parse().ok()
    }
    fn node_name(&self, id: u16) -> Option<String> {
        Some(format!("n{id}"))
    }
    fn live_nodes(&self) -> Vec<String> {
        (1..=self.net.queues.len()).map(|i| format!("n{i}")).collect()
    }
    fn peers(&self) -> Vec<u16> {
        (1..=self.net.queues.len() as u16).filter(|&i| i != self.me).collect()
    }
    fn is_up(&self, to: u16) -> bool {
        !self.net.down.lock().unwrap_or_else(|e| e.into_inner()).contains(&to)
    }
}

struct Bench {
    nodes: Vec<Arc<Node>>,
    net: Arc<Net>,
    out: Arc<Out>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Bench {
    fn start(
        n: usize,
        fwd: Forwarding,
        latency: Duration,
        main: tern_vm::bytecode::ModuleHash,
        vm: Arc<tern_vm::runtime::Vm>,
    ) -> Result<(Bench, Pid)> {
        let out = Arc::new(Out::default());
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..n {
            let (tx, rx) = crossbeam_channel::unbounded();
            senders.push(tx);
            receivers.push(rx);
        }
        let net = Arc::new(Net {
            nodes: Mutex::new(Vec::new()),
            queues: senders,
            latency,
            counts: Mutex::new(HashMap::new()),
            down: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let mut nodes = Vec::new();
        for i in 1..=n as u16 {
            // (The mesh's default mechanism is the one compared: what a node that knows
            // nothing of the worker assumes.)
            let config = NodeConfig { name: format!("n{i}"), id: i, workers: 1, io_threads: 1, forwarding: fwd, ..NodeConfig::default() };
            let node = Arc::new(Node::start(vm.clone(), Mesh::new(), config, out.clone(), Arc::new(NoFiles)));
            node.set_remote(Arc::new(Link { net: net.clone(), me: i }));
            nodes.push(node);
        }
        *net.nodes.lock().unwrap_or_else(|e| e.into_inner()) = nodes.iter().map(Arc::downgrade).collect();
        let mut threads = Vec::new();
        for (i, rx) in receivers.into_iter().enumerate() {
            let net2 = net.clone();
            threads.push(std::thread::spawn(move || {
                while let Ok((due, from, op)) = rx.recv() {
                    if net2.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let node = net2.nodes.lock().unwrap_or_else(|e| e.into_inner())[i].upgrade();
                    if let Some(node) = node {
                        node.receive(from, op);
                    }
                }
            }));
        }
        nodes[0].spawn_main(main).map_err(|e| anyhow::anyhow!("{e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let worker = loop {
            if let Some(l) = out.text().lines().find(|l| l.starts_with("worker <pid ")) {
                let t = l.trim_start_matches("worker <pid ").trim_end_matches('>');
                let (a, b) = t.split_once('.').ok_or_else(|| anyhow::anyhow!("bad pid {t}"))?;
                break tern_vm::value::make_name(a.parse()?, b.parse()?);
            }
            if Instant::now() > deadline {
                bail!("no worker: {}", out.text());
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        Ok((Bench { nodes, net, out, threads }, worker))
    }

    fn node(&self, id: u16) -> &Arc<Node> {
        &self.nodes[usize::from(id) - 1]
    }

    /// Sends `v` to the worker from node `from` (outside any process) and waits for it to
    /// print it: the latency, or the error.
    fn send(&self, from: u16, worker: Pid, v: i64) -> Result<Duration, String> {
        let want = format!("got {v}\n");
        let t0 = Instant::now();
        self.node(from).send_to(worker, Message::scalar(Val::Int(v)))?;
        let deadline = t0 + Duration::from_secs(20);
        while !self.out.text().contains(&want) {
            if Instant::now() > deadline {
                return Err(format!(
                    "not delivered within 20 s: {}",
                    self.out.text().lines().filter(|l| l.starts_with("FAILED")).collect::<Vec<_>>().join("; ")
                ));
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        Ok(t0.elapsed())
    }

    /// Moves the worker from `from` to `to` by the transfer steps, as the mesh host does;
    /// the control messages of the link update (updates and acks), as the host sends them.
    fn move_worker(&self, worker: Pid, from: u16, to: u16, fwd: Forwarding) -> Result<u64> {
        let (src, dst) = (self.node(from), self.node(to));
        let told = if fwd.updates_partners() { src.partner_nodes(worker) } else { src.watch_nodes(worker) };
        src.freeze(worker, Duration::from_secs(10)).map_err(|e| anyhow::anyhow!("{e}"))?;
        let image = src.export_frozen(worker).map_err(|e| anyhow::anyhow!("{e}"))?;
        dst.import_image(&image).map_err(|e| anyhow::anyhow!("{e}"))?;
        let late = src.commit_export(worker, to, fwd).map_err(|e| anyhow::anyhow!("{e}"))?;
        let moves = late.moves;
        dst.commit_import(worker, late).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut control = 0;
        for n in told.into_iter().filter(|&n| n != from && n != to) {
            self.node(n).apply_link_update(worker, to, moves, &[], fwd);
            control += 2;
        }
        src.drop_forwarding(worker, &[], fwd);
        Ok(control)
    }

    fn stop(self) {
        self.net.stop.store(true, Ordering::SeqCst);
        for q in &self.net.queues {
            let _ = q.send((Instant::now(), 0, Op::PidEnded { pid: 0 }));
        }
        for n in &self.nodes {
            n.stop();
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// One mechanism on one mesh size.
#[derive(Default)]
struct Row {
    control_per_move: f64,
    partner_first_hops: f64,
    partner_first_control: f64,
    partner_first_us: f64,
    partner_later_hops: f64,
    fresh_first_hops: f64,
    fresh_first_control: f64,
    fresh_first_us: f64,
    fresh_later_hops: f64,
    left: usize,
    left_nodes: usize,
    partners: usize,
    birth_lost: String,
    first_left_lost: String,
}

fn hops(before: &HashMap<&'static str, u64>, after: &HashMap<&'static str, u64>) -> (u64, u64) {
    let d = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    (d("Deliver") + d("Refused"), d("Locate") + d("Located") + d("PidMoved"))
}

fn measure(
    n: usize,
    fwd: Forwarding,
    args: &ForwardingArgs,
    vm: &Arc<tern_vm::runtime::Vm>,
    main: tern_vm::bytecode::ModuleHash,
) -> Result<Row> {
    let (mesh, w) = Bench::start(n, fwd, Duration::from_micros(args.latency_us), main, vm.clone())?;
    let n16 = n as u16;
    let k = args.partners.min(n - 1);
    let partners: Vec<u16> = (2..2 + k as u16).collect();
    let mut v = 0;
    for &p in &partners {
        v += 1;
        mesh.send(p, w, v).map_err(|e| anyhow::anyhow!(e))?;
    }
    // The path: from node 1 to the far end of the mesh and back towards it (on the
    // partners' nodes only in a mesh too small to avoid them).
    let mut at = 1u16;
    let mut row = Row::default();
    let mut left_nodes: Vec<u16> = Vec::new();
    let mut fresh_samples = 0u32;
    let path: Vec<u16> = (0..args.moves).map(|j| n16 - (j % (n - 1)) as u16).collect();
    // Senders that never sent before: not partners, not on its path (a node it left
    // that sends would keep a route as a sender, not as a node it left).
    let mut fresh_nodes: Vec<u16> = (2..=n16).filter(|x| !partners.contains(x) && !path.contains(x)).collect();
    for (j, &to) in path.iter().enumerate() {
        if to == at {
            continue;
        }
        let before = mesh.net.snapshot();
        let control = mesh.move_worker(w, at, to, fwd)?;
        // (The birth node's notice, sent by the source.)
        let after = mesh.net.snapshot();
        row.control_per_move += (control + hops(&before, &after).1) as f64;
        if !left_nodes.contains(&at) {
            left_nodes.push(at);
        }
        left_nodes.retain(|&x| x != to);
        at = to;
        std::thread::sleep(Duration::from_millis(2));
        // A partner's first message after the move, and a later one.
        let p = partners[j % partners.len().max(1)];
        let s0 = mesh.net.snapshot();
        v += 1;
        let t = mesh.send(p, w, v).map_err(|e| anyhow::anyhow!(e))?;
        let s1 = mesh.net.snapshot();
        let (h, c) = hops(&s0, &s1);
        row.partner_first_hops += h as f64;
        row.partner_first_control += c as f64;
        row.partner_first_us += t.as_secs_f64() * 1e6;
        std::thread::sleep(Duration::from_millis(2));
        let s0 = mesh.net.snapshot();
        v += 1;
        mesh.send(p, w, v).map_err(|e| anyhow::anyhow!(e))?;
        row.partner_later_hops += hops(&s0, &mesh.net.snapshot()).0 as f64;
        // A node that never sent to it (other than where it is).
        let f = fresh_nodes.iter().copied().find(|&x| x != at).unwrap_or(at);
        fresh_nodes.retain(|&x| x != f);
        if f != at {
            fresh_samples += 1;
            std::thread::sleep(Duration::from_millis(2));
            let s0 = mesh.net.snapshot();
            v += 1;
            let t = mesh.send(f, w, v).map_err(|e| anyhow::anyhow!(e))?;
            let s1 = mesh.net.snapshot();
            let (h, c) = hops(&s0, &s1);
            row.fresh_first_hops += h as f64;
            row.fresh_first_control += c as f64;
            row.fresh_first_us += t.as_secs_f64() * 1e6;
            std::thread::sleep(Duration::from_millis(2));
            let s0 = mesh.net.snapshot();
            v += 1;
            mesh.send(f, w, v).map_err(|e| anyhow::anyhow!(e))?;
            row.fresh_later_hops += hops(&s0, &mesh.net.snapshot()).0 as f64;
        }
    }
    let m = args.moves as f64;
    for x in [
        &mut row.control_per_move,
        &mut row.partner_first_hops,
        &mut row.partner_first_control,
        &mut row.partner_first_us,
        &mut row.partner_later_hops,
    ] {
        *x /= m;
    }
    let f = f64::from(fresh_samples.max(1));
    for x in [&mut row.fresh_first_hops, &mut row.fresh_first_control, &mut row.fresh_first_us, &mut row.fresh_later_hops] {
        *x /= f;
    }
    // State left on the nodes it left (not its birth node, which keeps one entry per
    // process born there that lives elsewhere, under every mechanism).
    row.left = left_nodes.iter().filter(|&&x| x != 1 && mesh.node(x).route_kept(w) == Some(true)).count();
    row.left_nodes = left_nodes.iter().filter(|&&x| x != 1).count();
    row.partners = mesh.node(at).partner_nodes(w).len();
    // A lost node: the first node it left besides its birth node (a link of the chain),
    // then its birth node. A message from a node that has sent nothing yet (it knows
    // nothing), if there is one left.
    let first_left = left_nodes.iter().copied().find(|&x| x != 1);
    let asker = fresh_nodes
        .iter()
        .copied()
        .find(|&x| x != at && Some(x) != first_left)
        .or_else(|| (2..=n16).rev().find(|&x| x != at && Some(x) != first_left && !partners.contains(&x)));
    let outcome = |r: Result<Duration, String>| match r {
        Ok(_) => "delivered".to_string(),
        Err(e) => format!("error: {}", e.split(": ").last().unwrap_or(&e).chars().take(80).collect::<String>()),
    };
    if let Some(fl) = first_left.filter(|&x| x != 1 && x != at) {
        mesh.net.down.lock().unwrap_or_else(|e| e.into_inner()).push(fl);
        v += 1;
        row.first_left_lost = outcome(mesh.send(1, w, v));
        mesh.net.down.lock().unwrap_or_else(|e| e.into_inner()).clear();
    } else {
        row.first_left_lost = "-".into();
    }
    if let Some(a) = asker {
        mesh.net.down.lock().unwrap_or_else(|e| e.into_inner()).push(1);
        v += 1;
        row.birth_lost = outcome(mesh.send(a, w, v));
    } else {
        row.birth_lost = "-".into();
    }
    mesh.stop();
    Ok(row)
}

pub fn run(args: &ForwardingArgs) -> Result<bool> {
    let vm = tern_net::runner::new_vm(tern_vm::VmConfig::default());
    let p = tern_net::runner::compile_text("worker.tern", WORKER).map_err(|e| anyhow::anyhow!("{}", e.rendered))?;
    for m in &p.modules {
        vm.load(m.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let vm = Arc::new(vm);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Forwarding mechanisms compared\n\n`tern-bench forwarding` ({} partners, {} moves, {} µs per hop): N VM nodes in one OS process joined by an \
         in-memory network; the node code that ships. Per migration: control messages (link updates and acks, birth-node notices). \
         First message after a move, from a partner and from a node that never sent: hops (messages on the network for it, \
         refusals included) / control messages it needed / latency; then a later message's hops. Left: nodes the worker left \
         that keep a route (its birth node aside). Lost: a message after the first node it left is lost (from its birth node), \
         and after its birth node is lost (from a node that knows nothing).\n",
        args.partners, args.moves, args.latency_us
    );
    let _ = writeln!(
        md,
        "| N | mechanism | control/move | partner first (hops/ctl/µs) | partner later | fresh first (hops/ctl/µs) | fresh later | routes on nodes left | partners at the end | first node left lost | birth node lost |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for &n in &args.nodes {
        if n < 3 {
            bail!("meshes of 3 nodes or more");
        }
        for fwd in Forwarding::ALL {
            let r = measure(n, fwd, args, &vm, p.main)?;
            let line = format!(
                "| {n} | {fwd} | {:.1} | {:.1} / {:.1} / {:.0} | {:.1} | {:.1} / {:.1} / {:.0} | {:.1} | {} of {} | {} | {} | {} |",
                r.control_per_move,
                r.partner_first_hops,
                r.partner_first_control,
                r.partner_first_us,
                r.partner_later_hops,
                r.fresh_first_hops,
                r.fresh_first_control,
                r.fresh_first_us,
                r.fresh_later_hops,
                r.left,
                r.left_nodes,
                r.partners,
                r.first_left_lost,
                r.birth_lost
            );
            println!("{line}");
            let _ = writeln!(md, "{line}");
        }
    }
    if !args.no_write {
        let path = crate::bench_dir().join("results/forwarding.md");
        std::fs::write(&path, md)?;
        println!("wrote {}", path.display());
    }
    Ok(true)
}
