//! Moving a running process between nodes in different meshes (as different machines
//! are), by the steps a migration protocol drives (`vm/src/node/transfer.rs`): freeze,
//! export, import under a temporary id, commit at the source, commit at the destination.
//! The nodes talk through an in-process `Remote` that keeps each pair's ops in order, as
//! the session protocol does. Groundwork for live migration: no QUIC, no protocol.

use parking_lot::{Mutex, RwLock};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tern_net::runner::{compile_text, new_vm};
use tern_vm::node::{Console, Mesh, NoFiles, Node, NodeConfig, Op, Pid, Remote};
use tern_vm::runtime::Vm;
use tern_vm::VmConfig;

#[derive(Default)]
struct Out(Mutex<String>);

impl Console for Out {
    fn write(&self, _: Pid, text: &str) {
        self.0.lock().push_str(text);
    }
    fn failed(&self, _: Pid, text: &str) {
        self.0.lock().push_str(&format!("FAILED: {text}\n"));
    }
}

/// Ops between in-process nodes: one queue and one thread per destination, so each
/// pair's ops arrive once and in order.
struct Net {
    nodes: RwLock<Vec<Weak<Node>>>,
    queues: Vec<crossbeam_channel::Sender<(u16, Op)>>,
}

struct Link {
    net: Arc<Net>,
    me: u16,
}

impl Remote for Link {
    fn send(&self, to: u16, op: Op) -> Result<(), String> {
        let q = self.net.queues.get(usize::from(to).wrapping_sub(1)).ok_or("no such node")?;
        q.send((self.me, op)).map_err(|_| "stopped".to_string())
    }
    fn node_id(&self, name: &str) -> Option<u16> {
        name.strip_prefix('n')?.parse().ok().filter(|&i: &u16| i >= 1 && usize::from(i) <= self.net.queues.len())
    }
    fn node_name(&self, id: u16) -> Option<String> {
        Some(format!("n{id}"))
    }
    fn live_nodes(&self) -> Vec<String> {
        (1..=self.net.queues.len()).map(|i| format!("n{i}")).collect()
    }
}

/// `n` nodes sharing one code store (so no module needs shipping).
fn nodes(n: usize, vm: Arc<Vm>, out: Arc<Out>) -> (Vec<Arc<Node>>, Arc<Net>) {
    let mut queues = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..n {
        let (tx, rx) = crossbeam_channel::unbounded::<(u16, Op)>();
        queues.push(tx);
        receivers.push(rx);
    }
    let net = Arc::new(Net { nodes: RwLock::new(Vec::new()), queues });
    let mut all = Vec::new();
    for i in 1..=n as u16 {
        let config = NodeConfig { name: format!("n{i}"), id: i, workers: 1, record_exits: true, ..NodeConfig::default() };
        let node = Arc::new(Node::start(vm.clone(), Mesh::new(), config, out.clone(), Arc::new(NoFiles)));
        node.set_remote(Arc::new(Link { net: net.clone(), me: i }));
        net.nodes.write().push(Arc::downgrade(&node));
        all.push(node);
    }
    for (i, rx) in receivers.into_iter().enumerate() {
        let net = net.clone();
        std::thread::spawn(move || {
            while let Ok((from, op)) = rx.recv() {
                let node = net.nodes.read()[i].upgrade();
                match node {
                    Some(n) => n.receive(from, op),
                    None => return,
                }
            }
        });
    }
    (all, net)
}

/// A worker that takes numbered messages from its channel and its inbox, from a sender
/// on node 3, and checks their order, while the test moves it from node 1 to node 2.
const PROGRAM: &str = r#"
let N = 3000;
fn worker(main) {
    let ch = channel();
    send(main, {worker: self(), tx: ch[0]});
    let bad = 0;
    for i in 0..N {
        if recv(ch[1]) != i { bad += 1; }
        if recv() != i { bad += 1; }
    }
    send(main, {bad: bad, node: node()});
}
fn sender(w, tx) {
    for i in 0..N {
        send(tx, i);
        send(w, i);
        if i % 50 == 0 { sleep(1); }
    }
}
let hello = spawn(worker, self());
let w = recv();
println("worker ${w.worker}");
spawn_on("n3", sender, w.worker, w.tx);
let r = recv();
println("bad ${r.bad} on ${r.node}");
"#;

/// The worker's pid, once the program has printed it.
fn worker_pid(out: &Out) -> Pid {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = out.0.lock().clone();
        if let Some(line) = text.lines().find(|l| l.starts_with("worker ")) {
            let t = line.trim_start_matches("worker <pid ").trim_end_matches('>');
            let (n, s) = t.split_once('.').unwrap();
            return tern_vm::value::make_name(n.parse().unwrap(), s.parse().unwrap());
        }
        assert!(Instant::now() < deadline, "no worker: {text}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_running_process_moves_to_another_node_and_keeps_its_messages_in_order() {
    let mut config = VmConfig::default();
    config.heap.page_size_bytes = 1024;
    let vm = new_vm(config);
    let p = compile_text("transfer.tern", PROGRAM).unwrap();
    for m in &p.modules {
        vm.load(m.clone()).unwrap();
    }
    let out = Arc::new(Out::default());
    let (ns, _net) = nodes(3, Arc::new(vm), out.clone());
    let main = ns[0].spawn_main(p.main).unwrap();
    let worker = worker_pid(&out);
    std::thread::sleep(Duration::from_millis(15));
    // The move, step by step.
    let (src, dst) = (&ns[0], &ns[1]);
    src.freeze(worker, Duration::from_secs(10)).unwrap();
    let image = src.export_frozen(worker).unwrap();
    let imported = dst.import_image(&image).unwrap();
    assert_eq!(imported, worker);
    std::thread::sleep(Duration::from_millis(5)); // messages keep arriving at the source
    let late = src.commit_export(worker, dst.id()).unwrap();
    eprintln!(
        "image {} bytes; {} inbox and {} channel messages arrived after it",
        image.len(),
        late.inbox.len(),
        late.chans.iter().map(|c| c.queue.len()).sum::<usize>()
    );
    // Messages the source sends on now reach the destination before the commit does;
    // they must wait there for it, behind those that arrived at the source.
    std::thread::sleep(Duration::from_millis(5));
    dst.commit_import(worker, late).unwrap();
    assert!(src.ps().iter().all(|p| p.pid != worker), "the source still lists it");
    let exit = ns[0].wait_exit(main, Duration::from_secs(60)).expect("main ends");
    assert!(exit.reason.is_normal(), "{:?}\n{}", exit.reason, out.0.lock());
    let text = out.0.lock().clone();
    assert!(text.contains("bad 0 on n2"), "{text}");
    for n in ns {
        n.stop();
    }
}

#[test]
fn an_aborted_move_leaves_the_process_running_where_it_was() {
    let vm = new_vm(VmConfig::default());
    let p = compile_text("transfer.tern", PROGRAM).unwrap();
    for m in &p.modules {
        vm.load(m.clone()).unwrap();
    }
    let out = Arc::new(Out::default());
    let (ns, _net) = nodes(3, Arc::new(vm), out.clone());
    let main = ns[0].spawn_main(p.main).unwrap();
    let worker = worker_pid(&out);
    ns[0].freeze(worker, Duration::from_secs(10)).unwrap();
    let image = ns[0].export_frozen(worker).unwrap();
    let imported = ns[1].import_image(&image).unwrap();
    // The destination gives up (say it failed): the source lets it run on.
    ns[1].abort_import(imported);
    ns[0].abort_export(worker);
    let exit = ns[0].wait_exit(main, Duration::from_secs(60)).expect("main ends");
    assert!(exit.reason.is_normal(), "{:?}", exit.reason);
    assert!(out.0.lock().contains("bad 0 on n1"), "{}", out.0.lock());
    assert!(ns[1].ps().is_empty(), "nothing left at the destination");
    for n in ns {
        n.stop();
    }
}
