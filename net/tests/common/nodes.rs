//! Scaffolding for tests on real nodes: every node of a loopback mesh is its own OS
//! process (`tern node --config C --name N`), driven with `tern ctl` and hurt with real
//! signals (`kill -9`, `SIGSTOP`/`SIGCONT`). Every command has a deadline, and every
//! child process is killed and reaped when its guard is dropped, also when a test fails.
//!
//! Programs report what they see by printing: a process started by `tern ctl spawn`
//! without `--wait` prints into the log of the node the spawn was asked of (its
//! console), wherever it runs or moves; a test reads [`RealMesh::log`] of that node.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tern_net::cmd::loopback_mesh;

/// A child process, killed (and reaped) when dropped.
pub struct Guard {
    pub child: Option<Child>,
    what: String,
}

impl Guard {
    pub fn spawn(what: &str, cmd: &mut Command) -> Guard {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
        Guard { child: Some(child), what: what.to_string() }
    }

    /// The OS pid, while it runs.
    pub fn os_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits up to `timeout` for the process to end.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            match child.try_wait() {
                Ok(Some(s)) => {
                    self.child = None;
                    return Some(s);
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => return None,
                Err(e) => panic!("{}: {e}", self.what),
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A stopped process must be continued to die of anything but SIGKILL; SIGKILL
            // works on it anyway, but continue it so nothing is left stopped.
            let _ = c.kill();
            signal(c.id(), "CONT");
            let _ = c.wait();
        }
    }
}

/// Sends signal `sig` (a name: KILL, STOP, CONT, INT) to OS process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).stderr(Stdio::null()).status();
}

/// What a finished command said.
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout:\n{}--- stderr:\n{}", self.code, self.stdout, self.stderr)
    }
}

impl Out {
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

pub fn tern() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tern"))
}

/// Runs `tern args...`, killing it after `timeout`: `None` if it had to be killed.
pub fn run_for(args: &[&str], timeout: Duration) -> Result<Out, Out> {
    let what = format!("tern {}", args.join(" "));
    let mut g = Guard::spawn(&what, tern().args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()));
    let child = g.child.as_mut().unwrap();
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(b"");
    drop(input);
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let r1 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let r2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let status = g.wait(timeout);
    if status.is_none() {
        drop(g); // kills it, so the readers finish
        return Err(Out { code: None, stdout: r1.join().unwrap(), stderr: r2.join().unwrap() });
    }
    Ok(Out { code: status.and_then(|s| s.code()), stdout: r1.join().unwrap(), stderr: r2.join().unwrap() })
}

/// How long one `tern ctl` may take before its test fails.
pub const CTL: Duration = Duration::from_secs(30);

/// One node: its OS process and its log file.
pub struct NodeProc {
    pub name: String,
    pub proc: Option<Guard>,
    pub log: PathBuf,
    /// How many times it was started.
    pub starts: u32,
    /// Environment variables it is started with (each start).
    pub env: Vec<(String, String)>,
    /// Arguments after `tern node --config C --name N` (each start).
    pub args: Vec<String>,
    /// Its file root.
    pub root: PathBuf,
}

/// In the `env` lists of `RealMesh::start_with`: not a variable but an argument.
const ARG: &str = "(argument)";

/// A loopback mesh whose nodes are separate OS processes. Dropping it kills them all.
pub struct RealMesh {
    pub nodes: Vec<NodeProc>,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
    /// The address-space limit (`ulimit -v`, KiB) every node is started under, if any.
    pub address_limit_kib: Option<u64>,
    /// A node whose file root is a filesystem of its own of this many KiB (a tmpfs
    /// mounted in a user and mount namespace of its own: `unshare -rm`), to fill up.
    pub small_root: Option<(String, u64)>,
}

impl Drop for RealMesh {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.proc.take();
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!("--- log of node {} ---\n{}", n.name, std::fs::read_to_string(&n.log).unwrap_or_default());
            }
        }
    }
}

impl RealMesh {
    /// `n` nodes (a, b, c, ...) with `extra` config text (e.g. a `[mesh]` table's
    /// settings go in a `[limits]`-free string appended to the config), each started
    /// as `tern node` and all seeing each other up.
    pub fn start(n: usize, extra: &str) -> RealMesh {
        Self::start_with(n, extra, None, &[], None)
    }

    /// As [`RealMesh::start`], with more arguments for some nodes' `tern node`: `(node,
    /// argument)` (e.g. `--drain-on-stop`), kept for restarts.
    pub fn start_with_args(n: usize, extra: &str, args: &[(&str, &str)]) -> RealMesh {
        let env: Vec<(&str, &str, &str)> = args.iter().map(|(n, a)| (*n, ARG, *a)).collect();
        Self::start_with(n, extra, None, &env, None)
    }

    /// As [`RealMesh::start`], with node `node`'s file root a filesystem of `kib` KiB of
    /// its own (see [`RealMesh::small_root`]).
    pub fn start_with_small_root(n: usize, extra: &str, node: &str, kib: u64) -> RealMesh {
        Self::start_with(n, extra, None, &[], Some((node.to_string(), kib)))
    }

    /// As [`RealMesh::start`], with environment variables for some nodes: `(node, key,
    /// value)` (e.g. the test hooks `tern node` reads, `TERN_TEST_NO_PUSH`), kept for
    /// restarts.
    pub fn start_with_env(n: usize, extra: &str, env: &[(&str, &str, &str)]) -> RealMesh {
        Self::start_with(n, extra, None, env, None)
    }

    /// As [`RealMesh::start`], with every node started under an address-space limit of
    /// `kib` KiB (`sh -c 'ulimit -v KIB; exec tern node ...'`): memory runs short there.
    pub fn start_with_address_limit(n: usize, extra: &str, kib: u64) -> RealMesh {
        Self::start_with(n, extra, Some(kib), &[], None)
    }

    /// The config's ports were free when it was made, but another test may take one
    /// before its node binds it: then the mesh is made again with other ports.
    fn start_with(
        n: usize,
        extra: &str,
        address_limit_kib: Option<u64>,
        env: &[(&str, &str, &str)],
        small_root: Option<(String, u64)>,
    ) -> RealMesh {
        for _ in 1..5 {
            let mut m = Self::launch_all(n, extra, address_limit_kib, env, small_root.clone());
            let names: Vec<String> = m.nodes.iter().map(|n| n.name.clone()).collect();
            let mut taken = false;
            let up = wait_until(Duration::from_secs(30), || {
                taken = names.iter().any(|n| !m.running(n)) && m.all_logs().contains("Address already in use");
                taken || names.iter().all(|n| m.sees_all_up(n))
            });
            if taken {
                eprintln!("a port of the mesh was taken: it is made again with other ports");
                continue;
            }
            if up {
                return m;
            }
            m.wait_all_up(Duration::ZERO);
            return m;
        }
        let mut m = Self::launch_all(n, extra, address_limit_kib, env, small_root.clone());
        m.wait_all_up(Duration::from_secs(30));
        m
    }

    /// A config for `n` nodes and every node launched.
    fn launch_all(
        n: usize,
        extra: &str,
        address_limit_kib: Option<u64>,
        env: &[(&str, &str, &str)],
        small_root: Option<(String, u64)>,
    ) -> RealMesh {
        let dir = tempfile::tempdir().unwrap();
        let cfg = loopback_mesh(dir.path(), n, extra).expect("a loopback config with certificates");
        let config = dir.path().join("mesh.toml");
        let nodes = cfg
            .nodes
            .iter()
            .map(|c| NodeProc {
                name: c.name.clone(),
                proc: None,
                log: dir.path().join(format!("{}.log", c.name)),
                root: c.root.clone(),
                starts: 0,
                env: env.iter().filter(|(n, k, _)| *n == c.name && *k != ARG).map(|(_, k, v)| (k.to_string(), v.to_string())).collect(),
                args: env.iter().filter(|(n, k, _)| *n == c.name && *k == ARG).map(|(_, _, v)| v.to_string()).collect(),
            })
            .collect();
        let mut m = RealMesh { nodes, config, dir, address_limit_kib, small_root };
        for i in 0..n {
            m.launch(i);
        }
        m
    }

    fn idx(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    fn launch(&mut self, i: usize) {
        let config = self.config.clone();
        let n = &mut self.nodes[i];
        n.starts += 1;
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&n.log).unwrap();
        let err = out.try_clone().unwrap();
        let what = format!("tern node {}", n.name);
        let small = self.small_root.as_ref().filter(|(name, _)| *name == n.name).map(|(_, kib)| *kib);
        let mut cmd = match self.address_limit_kib {
            None if small.is_some() => {
                // Its root a tmpfs of its own, in a user and mount namespace of its own
                // (no privilege needed); `exec` keeps the guarded pid the node's.
                std::fs::create_dir_all(&n.root).unwrap();
                let mut c = Command::new("unshare");
                c.args([
                    "-rm",
                    "sh",
                    "-c",
                    &format!("mount -t tmpfs -o size={}k tmpfs \"$1\" && shift && exec \"$@\"", small.unwrap_or(64)),
                    "sh",
                    n.root.to_str().unwrap(),
                    env!("CARGO_BIN_EXE_tern"),
                ]);
                c
            }
            None => tern(),
            // `exec`, so the guarded pid is the node's own. Few malloc arenas (each
            // reserves 64 MiB of address space), so the limit leaves the same room
            // however many cores the machine has.
            Some(kib) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -v {kib} && exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_tern")]);
                c.env("MALLOC_ARENA_MAX", "2");
                c
            }
        };
        cmd.envs(n.env.iter().map(|(k, v)| (k, v)));
        n.proc = Some(Guard::spawn(
            &what,
            cmd.args(["node", "--config", config.to_str().unwrap(), "--name", &n.name])
                .args(&n.args)
                .env("RUST_BACKTRACE", "1")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err),
        ));
    }

    /// Starts node `name` again (after `kill9`): a new incarnation.
    pub fn restart(&mut self, name: &str) {
        let i = self.idx(name);
        assert!(self.nodes[i].proc.is_none(), "node {name} is still running");
        self.launch(i);
    }

    pub fn cfg(&self) -> &str {
        self.config.to_str().unwrap()
    }

    /// The OS pid of node `name`.
    pub fn os_pid(&self, name: &str) -> u32 {
        self.nodes[self.idx(name)].proc.as_ref().and_then(Guard::os_pid).unwrap_or_else(|| panic!("node {name} is not running"))
    }

    /// `kill -9` node `name`.
    pub fn kill9(&mut self, name: &str) {
        let i = self.idx(name);
        let mut g = self.nodes[i].proc.take().unwrap_or_else(|| panic!("node {name} is not running"));
        signal(g.os_pid().unwrap(), "KILL");
        assert!(g.wait(Duration::from_secs(10)).is_some(), "node {name} survived kill -9");
    }

    /// `SIGTERM` node `name`, as a supervisor stops it, and wait up to `timeout` for it
    /// to exit: its exit status, or `None` if it still runs.
    pub fn terminate(&mut self, name: &str, timeout: Duration) -> Option<ExitStatus> {
        let i = self.idx(name);
        let pid = self.os_pid(name);
        signal(pid, "TERM");
        let g = self.nodes[i].proc.as_mut().unwrap();
        let status = g.wait(timeout);
        if status.is_some() {
            self.nodes[i].proc = None;
        }
        status
    }

    /// `SIGSTOP` node `name` (it is paused, not gone).
    pub fn stop(&self, name: &str) {
        signal(self.os_pid(name), "STOP");
    }

    /// `SIGCONT` node `name`.
    pub fn cont(&self, name: &str) {
        signal(self.os_pid(name), "CONT");
    }

    /// Whether node `name`'s OS process is still running (it did not exit or abort).
    pub fn running(&mut self, name: &str) -> bool {
        let i = self.idx(name);
        match self.nodes[i].proc.as_mut() {
            // A guard whose child was reaped (by an earlier look) holds no process.
            Some(g) => g.child.is_some() && g.wait(Duration::ZERO).is_none(),
            None => false,
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(&self.nodes[self.idx(name)].log).unwrap_or_default()
    }

    /// Every node's log, each line prefixed with `NAME| `.
    pub fn all_logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            for l in std::fs::read_to_string(&n.log).unwrap_or_default().lines() {
                s.push_str(&n.name);
                s.push_str("| ");
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// `tern ctl --config C [--node NODE] args...`, which must finish within [`CTL`].
    #[track_caller]
    pub fn ctl_on(&self, node: Option<&str>, args: &[&str]) -> Out {
        match self.try_ctl_on(node, args, CTL) {
            Ok(o) => o,
            Err(o) => panic!("tern ctl {args:?} did not finish within {CTL:?}: {o:?}\n{}", self.all_logs()),
        }
    }

    /// As [`RealMesh::ctl_on`], but a ctl that had to be killed after `timeout` is an `Err`.
    pub fn try_ctl_on(&self, node: Option<&str>, args: &[&str], timeout: Duration) -> Result<Out, Out> {
        let mut all = vec!["ctl", "--config", self.cfg()];
        if let Some(n) = node {
            all.extend_from_slice(&["--node", n]);
        }
        all.extend_from_slice(args);
        run_for(&all, timeout)
    }

    #[track_caller]
    pub fn ctl(&self, args: &[&str]) -> Out {
        self.ctl_on(None, args)
    }

    /// `ctl --json nodes` as seen from node `from`: (name, status) pairs.
    pub fn nodes_seen_by(&self, from: &str) -> Option<Vec<(String, String)>> {
        let out = self.try_ctl_on(Some(from), &["--json", "nodes"], Duration::from_secs(10)).ok()?;
        if !out.ok() {
            return None;
        }
        let rows: Value = serde_json::from_str(out.stdout.trim()).ok()?;
        Some(
            rows.as_array()?
                .iter()
                .map(|r| (r["name"].as_str().unwrap_or("").to_string(), r["status"].as_str().unwrap_or("").to_string()))
                .collect(),
        )
    }

    /// Whether node `from` sees every node of the mesh up.
    pub fn sees_all_up(&self, from: &str) -> bool {
        self.nodes_seen_by(from).is_some_and(|rows| rows.len() == self.nodes.len() && rows.iter().all(|(_, s)| s == "up"))
    }

    /// Waits until every running node sees every node up.
    #[track_caller]
    pub fn wait_all_up(&mut self, timeout: Duration) {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        let ok = wait_until(timeout, || {
            for n in &names {
                assert!(self.running(n), "node {n} exited:\n{}", self.all_logs());
            }
            names.iter().all(|n| self.sees_all_up(n))
        });
        assert!(ok, "the nodes did not all see each other up within {timeout:?}:\n{}", self.all_logs());
    }

    /// Writes `text` to `name` in the mesh's directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Starts program `source` on node `on`, asked of `on` itself (so its output, which
    /// goes to the console it was started from, is in `on`'s log); its pid as printed
    /// (`1.2`).
    #[track_caller]
    pub fn spawn(&self, file: &str, source: &str, on: &str) -> String {
        self.spawn_via(on, file, source, on)
    }

    /// Starts program `source` on node `on`, asked of node `via`: its output goes to
    /// `via`'s log wherever the process runs or moves.
    #[track_caller]
    pub fn spawn_via(&self, via: &str, file: &str, source: &str, on: &str) -> String {
        let p = self.write(file, source);
        let out = self.ctl_on(Some(via), &["--json", "spawn", path(&p), "--on", on]);
        assert!(out.ok(), "spawn failed: {out:?}");
        out.json()["pid"].as_str().unwrap_or_else(|| panic!("spawn printed no pid: {out:?}")).to_string()
    }

    /// `ctl --json migrate PID NODE --mechanism M`, asked of node `via`.
    #[track_caller]
    pub fn migrate(&self, via: Option<&str>, pid: &str, to: &str, mechanism: &str) -> Out {
        self.ctl_on(via, &["--json", "migrate", pid, to, "--mechanism", mechanism])
    }

    /// Rows of `ctl --json ps` asked of `via`: (pid, node, status).
    /// `tern ctl --node VIA --json migrate PID TO --mechanism M` on a thread of its own
    /// (it answers only once the migration ends, which the test decides): what it said,
    /// or `Err` if it had to be killed after `timeout`.
    pub fn migrate_in_background(
        &self,
        via: &str,
        pid: &str,
        to: &str,
        mechanism: &str,
        timeout: Duration,
    ) -> std::thread::JoinHandle<Result<Out, Out>> {
        let args: Vec<String> = ["ctl", "--config", self.cfg(), "--node", via, "--json", "migrate", pid, to, "--mechanism", mechanism]
            .iter()
            .map(|s| s.to_string())
            .collect();
        std::thread::spawn(move || run_for(&args.iter().map(String::as_str).collect::<Vec<_>>(), timeout))
    }

    pub fn ps(&self, via: Option<&str>) -> Vec<(String, String, String)> {
        let Ok(out) = self.try_ctl_on(via, &["--json", "ps"], Duration::from_secs(10)) else { return Vec::new() };
        if !out.ok() {
            return Vec::new();
        }
        let Ok(rows) = serde_json::from_str::<Value>(out.stdout.trim()) else { return Vec::new() };
        rows.as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
                        (s("pid"), s("node"), s("status"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Polls `f` every 100 ms until it holds or `timeout` passes; its last answer.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

pub fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}
