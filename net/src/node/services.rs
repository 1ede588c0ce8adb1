//! What the VM node gets from its host: [`Remote`] (the other nodes, through the
//! sessions), [`Console`] (output to the console a program was started from, on
//! whichever node; the log when there is none), [`Files`] (the mesh's file namespace)
//! and [`PageSource`] (the pages of a lazily migrated process, from the migration that
//! brings them); and the threads that carry out other nodes' file operations here.

use super::migration;
use super::{Host, ASK_TIMEOUT};
use crate::proto::mechanism::How;
use crate::proto::wire::{self, Answer, Frame, Query};
use crate::runner::DirFiles;
use std::sync::{Arc, Weak};
use tern_vm::node::{Console, FileOp, Files, MigrateOpts, Node, NodeConfig, Op, PageSource, Remote};
use tern_vm::process::IoResult;
use tern_vm::value::{name_node, name_text};

/// Threads carrying out other nodes' file operations.
const FILE_THREADS: usize = 2;

/// A file operation a peer asked for: (peer, question id, operation).
pub(super) type FileJob = (u16, u64, FileOp);

/// Starts the VM node of `sh` with the host's services.
pub(super) fn start_vm(sh: &Arc<Host>, workers: Option<usize>) -> Node {
    let (cfg, me) = (&sh.cfg, &sh.me);
    let vm = crate::runner::new_vm(super::vm_config(cfg));
    let files =
        MeshFiles { sh: Arc::downgrade(sh), root: DirFiles { root: me.root.clone() }, shared: DirFiles { root: me.shared.clone() } };
    let ncfg = NodeConfig {
        name: me.name.clone(),
        id: me.id,
        workers: workers.unwrap_or(me.workers).max(1),
        mailbox_limit_bytes: cfg.limits.mailbox_bytes as usize,
        message_limit_bytes: cfg.limits.message_bytes as usize,
        mailbox_limit_messages: usize::try_from(cfg.limits.mailbox_messages).unwrap_or(usize::MAX),
        max_processes: usize::try_from(cfg.limits.processes).unwrap_or(usize::MAX),
        max_files: usize::try_from(cfg.limits.files).unwrap_or(usize::MAX),
        held_limit_bytes: usize::try_from(cfg.limits.held_bytes).unwrap_or(usize::MAX),
        forwarding: cfg.forwarding,
        ..NodeConfig::default()
    };
    let node = Node::start(Arc::new(vm), tern_vm::node::Mesh::new(), ncfg, Arc::new(MeshConsole(Arc::downgrade(sh))), Arc::new(files));
    node.set_remote(Arc::new(MeshRemote(Arc::downgrade(sh))));
    // Prefetching is the migration machine's (`mesh.prefetch`), not the VM's.
    node.set_page_source(Arc::new(MeshPages(Arc::downgrade(sh))), 0);
    node
}

/// Starts the threads that carry out peers' file operations on this node's file root,
/// in order; they end when the returned sender (the dispatcher's) is dropped.
pub(super) fn start_file_threads(sh: &Arc<Host>) -> Result<crossbeam_channel::Sender<FileJob>, String> {
    let (files_tx, files_rx) = crossbeam_channel::unbounded::<FileJob>();
    for i in 0..FILE_THREADS {
        let name = format!("tern-files-{}-{i}", sh.me.name);
        let root = DirFiles { root: sh.me.root.clone() };
        let sh = Arc::downgrade(sh);
        let rx = files_rx.clone();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                // Ends when the dispatcher (the only sender) is gone.
                while let Ok((from, id, op)) = rx.recv() {
                    let r = root.run(&op);
                    let Some(sh) = sh.upgrade() else { return };
                    let _ = sh.send_frame(from, &Frame::Answer { id, answer: Answer::File(r) });
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
    }
    Ok(files_tx)
}

impl Host {
    /// Output of a process with no console reachable: the node's log.
    pub(super) fn log_output(&self, pid: u64, text: &str, failed: bool) {
        if failed {
            self.log(&format!("<pid {}> failed: {}", name_text(pid), text.trim_end()));
        } else {
            for line in text.strip_suffix('\n').unwrap_or(text).split('\n') {
                self.log(line);
            }
        }
    }

    /// Output of process `pid` for `console` (0: none), wherever that console is.
    pub(super) fn console_out(&self, console: u64, pid: u64, text: &str, failed: bool) {
        if console == 0 {
            return self.log_output(pid, text, failed);
        }
        let owner = name_node(console);
        if owner == self.me.id {
            let tx = self.console(console);
            let sent = tx.is_some_and(|c| c.send(wire::CtlReply::Output { pid, text: text.to_string(), failed }));
            if !sent {
                self.close_console(console);
                self.log_output(pid, text, failed);
            }
            return;
        }
        // The console's node is down: its consoles are gone with it (a restart of it
        // has new ones), so the output goes to this node's log, not into a queue for it.
        if !self.is_up(owner) {
            return self.log_output(pid, text, failed);
        }
        let frame = Frame::Console { console, pid, text: text.to_string(), failed };
        if self.send_frame(owner, &frame).is_err() {
            self.log_output(pid, text, failed);
        }
    }
}

/// The VM's view of the other nodes.
struct MeshRemote(Weak<Host>);

impl Remote for MeshRemote {
    fn send(&self, to: u16, op: Op) -> Result<(), String> {
        let sh = self.0.upgrade().ok_or("the node is shutting down")?;
        sh.send_frame(to, &Frame::Vm(op))
    }
    fn congested(&self, to: u16) -> bool {
        self.0.upgrade().is_some_and(|sh| sh.congested(to))
    }
    fn node_id(&self, name: &str) -> Option<u16> {
        let sh = self.0.upgrade()?;
        sh.cfg.node(name).map(|n| n.id)
    }
    fn node_name(&self, id: u16) -> Option<String> {
        let sh = self.0.upgrade()?;
        sh.cfg.node_by_id(id).map(|n| n.name.clone())
    }
    fn peers(&self) -> Vec<u16> {
        let Some(sh) = self.0.upgrade() else { return Vec::new() };
        sh.peers.keys().copied().collect()
    }
    fn is_up(&self, to: u16) -> bool {
        self.0.upgrade().is_some_and(|sh| sh.is_up(to))
    }
    fn least_loaded(&self) -> Option<u16> {
        self.0.upgrade()?.place_new()
    }
    fn migrate(&self, pid: u64, to: u16, caller: Option<u64>, opts: &MigrateOpts) -> Result<(), String> {
        let sh = self.0.upgrade().ok_or("the node is shutting down")?;
        let name = sh.peers.get(&to).map(|p| p.conf.name.clone()).ok_or_else(|| format!("there is no node {to}"))?;
        let how = How {
            mechanism: opts.mechanism.as_deref().map(str::parse).transpose()?,
            forwarding: opts.forwarding,
            group: opts.group,
            admit: None,
        };
        match caller {
            None => migration::start(&sh, pid, &name, how, migration::Caller::Itself(pid)).map(|_| ()),
            // A member of the group that moves: it moves too, and learns only of a failure.
            Some(c) if how.group && sh.node().group_members(pid).is_some_and(|(_, m)| m.contains(&c)) => {
                migration::start(&sh, pid, &name, how, migration::Caller::Itself(c)).map(|_| ())
            }
            Some(c) => {
                // Waits for the outcome: on a thread of its own, one of a bounded number.
                let slot = sh.mig_slots.waiter()?;
                std::thread::Builder::new()
                    .name("tern-mig-wait".into())
                    .spawn(move || {
                        let _slot = slot;
                        let r = migration::migrate_and_wait(&sh, pid, &name, how);
                        let result = match r {
                            Ok(rep) if rep.ok => IoResult::Migrated(rep.to),
                            Ok(rep) => IoResult::Failed(rep.outcome),
                            Err(e) => IoResult::Failed(e),
                        };
                        sh.node().answer_migrate(c, result);
                    })
                    .map(|_| ())
                    .map_err(|e| format!("cannot start a thread: {e}"))
            }
        }
    }

    fn live_nodes(&self) -> Vec<String> {
        let Some(sh) = self.0.upgrade() else { return Vec::new() };
        sh.cfg.nodes.iter().filter(|n| sh.is_up(n.id)).map(|n| n.name.clone()).collect()
    }
}

struct MeshConsole(Weak<Host>);

impl Console for MeshConsole {
    fn write(&self, pid: u64, text: &str) {
        self.write_to(0, pid, text);
    }
    fn failed(&self, pid: u64, text: &str) {
        self.failed_to(0, pid, text);
    }
    fn exited(&self, console: u64, exit: &tern_vm::node::ProcessExit) {
        let Some(sh) = self.0.upgrade() else { return };
        let owner = name_node(console);
        if console != 0 && owner != sh.me.id {
            let _ = sh.send_frame(owner, &Frame::Exited(wire::ExitNote::of(exit)));
        }
    }
    fn request_line(&self, console: u64, pid: u64, k: u64) -> Option<Option<String>> {
        let sh = self.0.upgrade()?;
        if console == 0 {
            // Started from no console (a node's own log): no input.
            return Some(None);
        }
        let owner = name_node(console);
        if owner == sh.me.id {
            return sh.request_line(console, pid, k, owner).map(|a| a.line);
        }
        match sh.send_frame(owner, &Frame::ConsoleRead { console, pid, k }) {
            Ok(()) => None,
            // Its console's node is gone: so is its input.
            Err(_) => Some(None),
        }
    }
    fn write_to(&self, console: u64, pid: u64, text: &str) {
        if let Some(sh) = self.0.upgrade() {
            sh.console_out(console, pid, text, false);
        }
    }
    fn failed_to(&self, console: u64, pid: u64, text: &str) {
        if let Some(sh) = self.0.upgrade() {
            if pid == 0 {
                sh.log(text);
            } else {
                sh.console_out(console, pid, text, true);
            }
        }
    }
}

/// The mesh's file namespace: `node/NAME/...` (a file on node NAME), `shared/...` (this
/// node's replica of the shared namespace), anything else the file root of the process's
/// home node (where it was started, or its parent's home).
struct MeshFiles {
    sh: Weak<Host>,
    root: DirFiles,
    shared: DirFiles,
}

fn with_name(op: &FileOp, name: String) -> FileOp {
    match op.clone() {
        FileOp::Open { mode, .. } => FileOp::Open { name, mode },
        FileOp::Read { offset, max, line, .. } => FileOp::Read { name, offset, max, line },
        FileOp::Write { offset, append, data, .. } => FileOp::Write { name, offset, append, data },
    }
}

fn op_name(op: &FileOp) -> &str {
    match op {
        FileOp::Open { name, .. } | FileOp::Read { name, .. } | FileOp::Write { name, .. } => name,
    }
}

impl MeshFiles {
    fn remote(&self, sh: &Host, to: u16, op: FileOp) -> IoResult {
        match sh.ask(to, Query::File(op), ASK_TIMEOUT) {
            Ok(Answer::File(r)) => r,
            Ok(_) => IoResult::Failed("a file operation got an unexpected answer".into()),
            Err(e) => IoResult::Failed(format!("cannot use a file on node {}: {e}", sh.node_name(to))),
        }
    }
}

impl Files for MeshFiles {
    fn run(&self, op: &FileOp) -> IoResult {
        self.root.run(op)
    }

    fn run_for(&self, pid: u64, home: u16, op: &FileOp) -> IoResult {
        let Some(sh) = self.sh.upgrade() else { return IoResult::Failed("the node is shutting down".into()) };
        let name = op_name(op).to_string();
        if let Some(rest) = name.strip_prefix("node/") {
            let (node, path) = rest.split_once('/').unwrap_or((rest, ""));
            if path.is_empty() {
                return IoResult::Failed(format!("cannot use file /{name}: no path after the node name"));
            }
            if node == sh.me.name {
                return self.root.run(&with_name(op, path.to_string()));
            }
            let Some(n) = sh.cfg.node(node) else {
                return IoResult::Failed(format!("cannot use file /{name}: there is no node {node:?} in the mesh"));
            };
            return self.remote(&sh, n.id, with_name(op, path.to_string()));
        }
        if let Some(path) = name.strip_prefix("shared/") {
            return self.shared.run(&with_name(op, path.to_string()));
        }
        // A relative name: in the root of the process's home node, wherever it runs.
        if home == sh.me.id || sh.cfg.node_by_id(home).is_none() {
            return self.root.run(op);
        }
        match self.remote(&sh, home, op.clone()) {
            IoResult::Failed(e) if !sh.is_up(home) => IoResult::Failed(format!(
                "the home node {} of <pid {}> is down (relative file names resolve there): {e}",
                sh.node_name(home),
                name_text(pid)
            )),
            r => r,
        }
    }
}

/// The page source of a node: faults of processes whose pages are on another node go
/// to the migration that brings them.
struct MeshPages(Weak<Host>);

impl PageSource for MeshPages {
    fn request(&self, pid: u64, first: u32, _count: u32) {
        if let Some(sh) = self.0.upgrade() {
            if !sh.mig.fault(pid, first) {
                sh.log(&format!(
                    "{}: page {first} of its heap is absent and no migration serves it: {}",
                    name_text(pid),
                    sh.mig.why_unserved(pid)
                ));
                sh.node().pages_lost(pid, "a heap page is absent and no migration serves it");
            }
        }
    }

    fn waited(&self, pid: u64, _page: u32, wait_us: u64) {
        if let Some(sh) = self.0.upgrade() {
            sh.mig.fault_waited(pid, wait_us);
        }
    }
}
