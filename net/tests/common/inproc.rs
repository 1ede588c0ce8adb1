//! Nodes in one OS process joined by an in-process [`Remote`]: one queue and one thread
//! per destination, so each pair's ops arrive once and in order, as the session protocol
//! delivers them between machines. No QUIC and no migration protocol around them: the
//! node's own steps alone (`delivery.rs`, `transfer.rs`).
//!
//! A test can make the links misbehave the ways a real one does: refuse chosen ops (a
//! full link), say they are congested, hold the sending thread after an op is queued (a
//! thread preempted right after its send), or delay each pair's ops by a latency of its
//! own (so a message can overtake one sent before it on a longer path).
#![allow(dead_code)]

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tern_vm::node::{Console, Mesh, NoFiles, Node, NodeConfig, Op, Pid, Remote};
use tern_vm::runtime::Vm;

/// What the processes print, kept for the test to read.
#[derive(Default)]
pub struct Out(Mutex<String>);

impl Console for Out {
    fn write(&self, _: Pid, text: &str) {
        self.0.lock().push_str(text);
    }
    fn failed(&self, _: Pid, text: &str) {
        self.0.lock().push_str(&format!("FAILED: {text}\n"));
    }
}

impl Out {
    pub fn text(&self) -> String {
        self.0.lock().clone()
    }

    /// The first line starting with `prefix`, waiting up to 60 s for it.
    pub fn line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(l) = self.text().lines().find(|l| l.starts_with(prefix)) {
                return l.to_string();
            }
            assert!(Instant::now() < deadline, "no line {prefix:?} in:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Refuses an op from one node to another (true), as a full link does.
pub type Filter = Box<dyn FnMut(u16, u16, &Op) -> bool + Send>;

/// How long to hold the sender of an op from one node to another after it is queued.
pub type Stall = Box<dyn FnMut(u16, u16, &Op) -> Option<Duration> + Send>;

/// A pair's delay: from node, to node.
pub type Latency = fn(u16, u16) -> Duration;

/// The links between the nodes.
pub struct Net {
    nodes: RwLock<Vec<Weak<Node>>>,
    queues: Vec<crossbeam_channel::Sender<(u16, Op)>>,
    /// With latencies: per (from - 1) * n + (to - 1), the pair's delay line.
    pairs: Vec<crossbeam_channel::Sender<(Instant, u16, Op)>>,
    /// Messages (`Op::Deliver`) offered so far, per (from, to), refused ones included.
    delivers: Mutex<HashMap<(u16, u16), u64>>,
    pub filter: Mutex<Option<Filter>>,
    /// Every link says it is congested (see `Remote::congested`).
    pub congested: AtomicBool,
    /// How long the sending thread stalls after it has queued an op (`None`: not at all).
    pub stall: Mutex<Option<Stall>>,
    /// Nodes every other one sees as down (`Remote::is_up`; their ops still go through).
    pub down: Mutex<Vec<u16>>,
    /// Every op offered so far, per (from, to, kind): the op's variant name.
    ops: Mutex<HashMap<(u16, u16, &'static str), u64>>,
}

impl Net {
    /// Messages node `from` has offered node `to`.
    pub fn delivers(&self, from: u16, to: u16) -> u64 {
        self.delivers.lock().get(&(from, to)).copied().unwrap_or(0)
    }

    /// Ops of kind `kind` (`"Locate"`, `"Refused"`, `"PidMoved"`, ...) node `from` has
    /// offered node `to` (`None`: every node).
    pub fn ops(&self, from: Option<u16>, to: Option<u16>, kind: &str) -> u64 {
        self.ops
            .lock()
            .iter()
            .filter(|((f, t, k), _)| from.is_none_or(|x| x == *f) && to.is_none_or(|x| x == *t) && *k == kind)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn set_congested(&self, on: bool) {
        self.congested.store(on, Ordering::SeqCst);
    }
}

struct Link {
    net: Arc<Net>,
    me: u16,
}

impl Remote for Link {
    fn send(&self, to: u16, op: Op) -> Result<(), String> {
        let q = self.net.queues.get(usize::from(to).wrapping_sub(1)).ok_or("no such node")?;
        if matches!(op, Op::Deliver(_)) {
            *self.net.delivers.lock().entry((self.me, to)).or_default() += 1;
        }
        *self.net.ops.lock().entry((self.me, to, op_kind(&op))).or_default() += 1;
        if let Some(f) = self.net.filter.lock().as_mut() {
            if f(self.me, to, &op) {
                return Err("the link cannot take more".into());
            }
        }
        let pause = self.net.stall.lock().as_mut().and_then(|f| f(self.me, to, &op));
        if self.net.pairs.is_empty() {
            q.send((self.me, op)).map_err(|_| "stopped".to_string())?;
        } else {
            let pair = usize::from(self.me - 1) * self.net.queues.len() + usize::from(to - 1);
            self.net.pairs[pair].send((Instant::now(), self.me, op)).map_err(|_| "stopped".to_string())?;
        }
        if let Some(d) = pause {
            std::thread::sleep(d);
        }
        Ok(())
    }
    fn congested(&self, _to: u16) -> bool {
        self.net.congested.load(Ordering::SeqCst)
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
    fn peers(&self) -> Vec<u16> {
        (1..=self.net.queues.len() as u16).filter(|&i| i != self.me).collect()
    }
    fn is_up(&self, to: u16) -> bool {
        !self.net.down.lock().contains(&to)
    }
}

/// An op's variant name.
fn op_kind(op: &Op) -> &'static str {
    match op {
        Op::Deliver(_) => "Deliver",
        Op::Spawn { .. } => "Spawn",
        Op::Spawned { .. } => "Spawned",
        Op::Kill { .. } => "Kill",
        Op::Link { .. } => "Link",
        Op::Monitor { .. } => "Monitor",
        Op::Exit { .. } => "Exit",
        Op::Down { .. } => "Down",
        Op::RxMoved { .. } => "RxMoved",
        Op::Partner { .. } => "Partner",
        Op::PidMoved { .. } => "PidMoved",
        Op::PidEnded { .. } => "PidEnded",
        Op::ChanEnded { .. } => "ChanEnded",
        Op::Skip { .. } => "Skip",
        Op::Lost { .. } => "Lost",
        Op::Refused { .. } => "Refused",
        Op::Locate { .. } => "Locate",
        Op::Located { .. } => "Located",
    }
}

/// `n` nodes named `n1`, `n2`, ... sharing one code store (so no module needs shipping),
/// each configured by `config` from a default one (one worker, exits recorded), each
/// pair's ops delayed by `latency` if given.
pub fn nodes(
    n: usize,
    vm: Arc<Vm>,
    out: Arc<Out>,
    latency: Option<Latency>,
    config: impl Fn(NodeConfig) -> NodeConfig,
) -> (Vec<Arc<Node>>, Arc<Net>) {
    let mut queues = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..n {
        let (tx, rx) = crossbeam_channel::unbounded::<(u16, Op)>();
        queues.push(tx);
        receivers.push(rx);
    }
    let mut pairs = Vec::new();
    if let Some(latency) = latency {
        for from in 1..=n as u16 {
            for to in 1..=n as u16 {
                let (tx, rx) = crossbeam_channel::unbounded::<(Instant, u16, Op)>();
                let q = queues[usize::from(to) - 1].clone();
                let delay = latency(from, to);
                std::thread::spawn(move || {
                    while let Ok((sent, from, op)) = rx.recv() {
                        let due = sent + delay;
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        if q.send((from, op)).is_err() {
                            return;
                        }
                    }
                });
                pairs.push(tx);
            }
        }
    }
    let net = Arc::new(Net {
        nodes: RwLock::new(Vec::new()),
        queues,
        pairs,
        delivers: Mutex::new(HashMap::new()),
        filter: Mutex::new(None),
        congested: AtomicBool::new(false),
        stall: Mutex::new(None),
        down: Mutex::new(Vec::new()),
        ops: Mutex::new(HashMap::new()),
    });
    let mut all = Vec::new();
    for i in 1..=n as u16 {
        let config = config(NodeConfig { name: format!("n{i}"), id: i, workers: 1, record_exits: true, ..NodeConfig::default() });
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
