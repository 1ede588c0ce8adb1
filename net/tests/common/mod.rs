//! Scaffolding for tests on a real loopback mesh in this OS process: nodes a, b, c, ...
//! started with `cmd::loopback_mesh` + `MeshNode::start`, programs run with a console.
//! Every wait has a deadline, and a [`TestMesh`] shuts its nodes down when dropped (also
//! when a test fails), so a broken mesh fails a test instead of hanging it.
#![allow(dead_code)]

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_compiler::Compiled;
use tern_net::cmd::loopback_mesh;
use tern_net::config::MeshConfig;
use tern_net::mesh::{LogSink, MeshNode, NodeOptions};
use tern_net::proto::wire::CtlReply;
use tern_net::runner::compile_text;
use tern_vm::node::ProcessExit;
use tern_vm::value::name_text;

pub mod specs;
use tokio::sync::mpsc;

/// How long a program may run before its test fails.
pub const LONG: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------
// Scaffolding
// ---------------------------------------------------------------------------------

/// Nodes of one loopback mesh, their logs, and their directory. Dropping it shuts every
/// node down (and removes the directory).
pub struct TestMesh {
    /// Dropped first: `None` once stopped.
    pub nodes: Vec<(String, Option<MeshNode>)>,
    /// Every log line of every node, as `NAME| line`.
    pub logs: Arc<Mutex<Vec<String>>>,
    pub cfg: MeshConfig,
    pub dir: tempfile::TempDir,
}

impl Drop for TestMesh {
    fn drop(&mut self) {
        for (_, n) in &mut self.nodes {
            if let Some(n) = n.take() {
                n.shutdown();
            }
        }
    }
}

pub fn sink(logs: &Arc<Mutex<Vec<String>>>, name: &str) -> LogSink {
    let logs = logs.clone();
    let name = name.to_string();
    Arc::new(move |line: &str| logs.lock().push(format!("{name}| {line}")))
}

impl TestMesh {
    /// A config for `n` nodes (certificates made), none started.
    pub fn config(n: usize, extra: &str) -> TestMesh {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let cfg = loopback_mesh(dir.path(), n, extra).expect("a loopback mesh config");
        TestMesh { nodes: Vec::new(), logs: Arc::default(), cfg, dir }
    }

    /// A mesh of `n` nodes, all started and connected to each other.
    pub fn start(n: usize) -> TestMesh {
        TestMesh::start_with(n, "")
    }

    /// A mesh of `n` nodes whose config has `extra` after its `[limits]` (more limits,
    /// or more tables), all started and connected.
    ///
    /// The config's ports were free when it was made, but another test may take one
    /// before its node binds it: then the mesh is made again with other ports.
    pub fn start_with(n: usize, extra: &str) -> TestMesh {
        for attempt in 1.. {
            let mut m = TestMesh::config(n, extra);
            let names: Vec<String> = m.cfg.nodes.iter().map(|n| n.name.clone()).collect();
            let mut taken = None;
            for name in &names {
                match MeshNode::start(&m.cfg, name, NodeOptions { log: sink(&m.logs, name), workers: None, operators: None }) {
                    Ok(node) => m.nodes.push((name.to_string(), Some(node))),
                    Err(e) if e.contains("Address already in use") && attempt < 5 => {
                        taken = Some(e);
                        break;
                    }
                    Err(e) => panic!("node {name} did not start: {e}"),
                }
            }
            if let Some(e) = taken {
                eprintln!("{e}: the mesh is made again with other ports");
                continue;
            }
            m.wait_connected(&names);
            return m;
        }
        unreachable!("the loop returns or panics")
    }

    /// Starts one node of the config.
    pub fn start_node(&mut self, name: &str) {
        let node = MeshNode::start(&self.cfg, name, NodeOptions { log: sink(&self.logs, name), workers: None, operators: None })
            .unwrap_or_else(|e| panic!("node {name} did not start: {e}"));
        self.nodes.push((name.to_string(), Some(node)));
    }

    /// Waits until each of `names` sees all the others up.
    pub fn wait_connected(&self, names: &[String]) {
        let ok = wait_until(Duration::from_secs(20), || names.iter().all(|a| names.iter().all(|b| a == b || self.node(a).peer_up(b))));
        assert!(ok, "the nodes {names:?} did not connect within 20 s; logs:\n{}", self.log_text());
    }

    pub fn node(&self, name: &str) -> &MeshNode {
        self.nodes.iter().find(|(n, _)| n == name).and_then(|(_, m)| m.as_ref()).unwrap_or_else(|| panic!("node {name} is not running"))
    }

    /// Shuts node `name` down.
    pub fn stop(&mut self, name: &str) {
        let slot = self.nodes.iter_mut().find(|(n, _)| n == name).expect("a node of the mesh");
        slot.1.take().expect("node running").shutdown();
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().join("\n")
    }

    /// Log lines of node `name` (without the prefix).
    pub fn log_of(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}| ");
        self.logs.lock().iter().filter_map(|l| l.strip_prefix(&prefix).map(str::to_string)).collect()
    }

    /// Waits until some log line of node `name` satisfies `f`.
    pub fn wait_log(&self, name: &str, timeout: Duration, f: impl Fn(&str) -> bool) -> bool {
        wait_until(timeout, || self.log_of(name).iter().any(|l| f(l)))
    }

    /// Compiles `src` and starts it on node `on` with a fresh console there.
    pub fn run(&self, on: &str, file: &str, src: &str) -> Run {
        let program = compile_text(file, src).unwrap_or_else(|e| panic!("{file} does not compile:\n{}", e.rendered));
        self.run_compiled(on, file, &program)
    }

    /// Starts a compiled program on node `on` with a fresh console there; its exit is
    /// watched (the watch moves with it: see [`TestMesh::exit_anywhere`]).
    pub fn run_compiled(&self, on: &str, file: &str, program: &Compiled) -> Run {
        let n = self.node(on);
        for m in &program.modules {
            n.node().vm().load(m.clone()).unwrap_or_else(|e| panic!("{file}: module rejected: {e}"));
        }
        let (console, rx) = n.open_console();
        let pid = n.node().spawn_main_on(program.main, console, true).unwrap_or_else(|e| panic!("{file} did not start: {e}"));
        Run { on: on.to_string(), pid, console, rx, text: String::new(), failures: Vec::new(), closed: false }
    }

    /// [`TestMesh::run`] with the console on node `console_on` (its output goes there,
    /// wherever the program runs).
    pub fn run_console_on(&self, on: &str, console_on: &str, file: &str, src: &str) -> Run {
        let program = compile_text(file, src).unwrap_or_else(|e| panic!("{file} does not compile:\n{}", e.rendered));
        let n = self.node(on);
        for m in &program.modules {
            n.node().vm().load(m.clone()).unwrap_or_else(|e| panic!("{file}: module rejected: {e}"));
        }
        let (console, rx) = self.node(console_on).open_console();
        let pid = n.node().spawn_main_on(program.main, console, true).unwrap_or_else(|e| panic!("{file} did not start: {e}"));
        Run { on: on.to_string(), pid, console, rx, text: String::new(), failures: Vec::new(), closed: false }
    }

    /// [`TestMesh::run_compiled`], but the program's main process starts frozen, before
    /// its first instruction (a move or `unfreeze` lets it run).
    pub fn run_compiled_frozen(&self, on: &str, file: &str, program: &Compiled) -> Run {
        let n = self.node(on);
        for m in &program.modules {
            n.node().vm().load(m.clone()).unwrap_or_else(|e| panic!("{file}: module rejected: {e}"));
        }
        let (console, rx) = n.open_console();
        let pid = n.node().spawn_main_frozen_on(program.main, console, true).unwrap_or_else(|e| panic!("{file} did not start: {e}"));
        Run { on: on.to_string(), pid, console, rx, text: String::new(), failures: Vec::new(), closed: false }
    }

    /// Runs `src` on node `on` to its end; it must end normally. Its console output.
    pub fn run_ok(&self, on: &str, file: &str, src: &str) -> String {
        let mut r = self.run(on, file, src);
        let exit = r.finish(self, LONG);
        r.assert_normal(self, &exit);
        r.text
    }
}

impl TestMesh {
    /// The names of the running nodes.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().filter(|(_, n)| n.is_some()).map(|(name, _)| name.clone()).collect()
    }

    /// Every process of every running node, as (node, pid).
    pub fn all_procs(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for name in self.names() {
            out.extend(self.node(&name).node().ps().into_iter().map(|p| (name.clone(), p.pid)));
        }
        out
    }

    /// The node that lists process `pid` in `ps`. While nothing moves it, `None` means
    /// it has ended.
    pub fn where_is(&self, pid: u64) -> Option<String> {
        self.names().into_iter().find(|name| self.node(name).node().ps().iter().any(|p| p.pid == pid))
    }

    /// `ps`'s status of process `pid`, wherever it is.
    pub fn status_of(&self, pid: u64) -> Option<&'static str> {
        self.names().into_iter().find_map(|name| self.node(&name).node().ps().into_iter().find(|p| p.pid == pid).map(|p| p.status))
    }

    /// The exit record of a watched process, on whichever node it ended.
    pub fn exit_anywhere(&self, pid: u64) -> Option<ProcessExit> {
        self.names().into_iter().find_map(|name| self.node(&name).node().exit_of(pid))
    }
}

/// Polls `f` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A program started on a node, and what its console received.
pub struct Run {
    pub on: String,
    pub pid: u64,
    pub console: u64,
    pub rx: mpsc::UnboundedReceiver<CtlReply>,
    pub text: String,
    pub failures: Vec<String>,
    /// The console's sending side is gone.
    pub closed: bool,
}

impl Run {
    /// Takes whatever output has arrived; whether there was any.
    pub fn pump(&mut self) -> bool {
        let mut any = false;
        loop {
            match self.rx.try_recv() {
                Ok(CtlReply::Output { pid, text, failed }) => {
                    any = true;
                    if failed {
                        self.failures.push(format!("<pid {}> {}", name_text(pid), text.trim_end()));
                    } else {
                        self.text.push_str(&text);
                    }
                }
                Ok(other) => panic!("unexpected console reply {other:?}"),
                Err(mpsc::error::TryRecvError::Empty) => return any,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.closed = true;
                    return any;
                }
            }
        }
    }

    /// Waits for a complete output line satisfying `f`.
    #[track_caller]
    pub fn wait_line(&mut self, mesh: &TestMesh, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LONG;
        loop {
            self.pump();
            let complete = self.text.rsplit_once('\n').map_or("", |(done, _)| done);
            if let Some(l) = complete.lines().find(|l| f(l)) {
                return l.to_string();
            }
            if Instant::now() > deadline || !self.failures.is_empty() {
                panic!("no line {what} within {LONG:?}; output:\n{}\nfailures: {:?}\nlogs:\n{}", self.text, self.failures, mesh.log_text());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the program's main process to end, then lets output still on its way
    /// arrive (until 200 ms pass without any).
    pub fn finish(&mut self, mesh: &TestMesh, timeout: Duration) -> ProcessExit {
        let exit = mesh.node(&self.on).node().wait_exit(self.pid, timeout);
        self.drain();
        exit.unwrap_or_else(|| {
            panic!(
                "the program did not end within {timeout:?}; output:\n{}\nfailures: {:?}\nlogs:\n{}",
                self.text,
                self.failures,
                mesh.log_text()
            )
        })
    }

    /// [`Run::finish`] for a program that may have moved: waits for its exit on
    /// whichever node it ends, then for the output still on its way.
    pub fn finish_anywhere(&mut self, mesh: &TestMesh, timeout: Duration) -> ProcessExit {
        let deadline = Instant::now() + timeout;
        let exit = loop {
            self.pump();
            if let Some(e) = mesh.exit_anywhere(self.pid) {
                break Some(e);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        self.drain();
        exit.unwrap_or_else(|| {
            panic!(
                "the program did not end within {timeout:?}; output:\n{}\nfailures: {:?}\nlogs:\n{}",
                self.text,
                self.failures,
                mesh.log_text()
            )
        })
    }

    /// Takes output until 200 ms pass without any (at most 2 s).
    pub fn drain(&mut self) {
        let mut quiet = Instant::now();
        let stop = Instant::now() + Duration::from_secs(2);
        while quiet.elapsed() < Duration::from_millis(200) && Instant::now() < stop {
            if self.pump() {
                quiet = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[track_caller]
    pub fn assert_normal(&self, mesh: &TestMesh, exit: &ProcessExit) {
        assert!(
            exit.reason.is_normal() && self.failures.is_empty(),
            "the program ended: {}\noutput:\n{}\nfailures: {:?}\nlogs:\n{}",
            exit.reason.text(),
            self.text,
            self.failures,
            mesh.log_text()
        );
    }
}
