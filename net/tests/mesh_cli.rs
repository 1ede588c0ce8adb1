//! The mesh commands of the real `tern` binary: `tern mesh up` runs a 3-node loopback
//! mesh in a child process; `tern ctl` (nodes, spawn, ps, kill, send, `--json`) and
//! `tern repl` talk to it; Ctrl-C (SIGINT) stops it cleanly. Every child process has a
//! deadline and is killed when its guard is dropped, also when a test fails.

use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tern_net::cmd::loopback_mesh;

/// A child process, killed (and reaped) when dropped.
struct Guard {
    child: Option<Child>,
    what: String,
}

impl Guard {
    fn spawn(what: &str, cmd: &mut Command) -> Guard {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
        Guard { child: Some(child), what: what.to_string() }
    }

    fn id(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits up to `timeout` for the process to end.
    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
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
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What a finished command said.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout:\n{}--- stderr:\n{}", self.code, self.stdout, self.stderr)
    }
}

impl Out {
    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

fn tern() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tern"))
}

/// Runs `tern args...` with `stdin`, killing it after `timeout`.
fn run(args: &[&str], stdin: &str, timeout: Duration) -> Out {
    let what = format!("tern {}", args.join(" "));
    let mut g = Guard::spawn(&what, tern().args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()));
    let child = g.child.as_mut().unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
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
        let out = Out { code: None, stdout: r1.join().unwrap(), stderr: r2.join().unwrap() };
        panic!("{what} did not finish within {timeout:?}: {out:?}");
    }
    let _ = writer.join();
    Out { code: status.and_then(|s| s.code()), stdout: r1.join().unwrap(), stderr: r2.join().unwrap() }
}

const T: Duration = Duration::from_secs(30);

/// A running `tern mesh up` of a 3-node loopback config in a temporary directory.
struct MeshUp {
    proc: Guard,
    config: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl MeshUp {
    fn start() -> MeshUp {
        let dir = tempfile::tempdir().unwrap();
        let cfg = loopback_mesh(dir.path(), 3, "").expect("a loopback config with certificates");
        let config = dir.path().join("mesh.toml");
        assert_eq!(cfg.nodes.len(), 3);
        let log = dir.path().join("mesh-up.log");
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let proc = Guard::spawn(
            "tern mesh up",
            tern().args(["mesh", "up", "--config", config.to_str().unwrap()]).stdin(Stdio::null()).stdout(out).stderr(err),
        );
        let mut m = MeshUp { proc, config, log, dir };
        m.wait_up();
        m
    }

    fn cfg(&self) -> &str {
        self.config.to_str().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `tern ctl --config C args...`
    fn ctl(&self, args: &[&str]) -> Out {
        let mut all = vec!["ctl", "--config", self.cfg()];
        all.extend_from_slice(args);
        run(&all, "", T)
    }

    /// Waits until `ctl --node N --json nodes` shows every node up, asked of every node N:
    /// the mesh is up when each node sees each other one (a alone seeing b and c says
    /// nothing of b's connection to c).
    fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = None;
        let mut seen = 0;
        while Instant::now() < deadline && seen < 3 {
            if let Some(s) = self.proc.wait(Duration::ZERO) {
                panic!("tern mesh up exited early ({s}):\n{}", self.log());
            }
            let out = self.ctl(&["--node", ["a", "b", "c"][seen], "--json", "nodes"]);
            let all_up = out.code == Some(0)
                && matches!(serde_json::from_str::<Value>(out.stdout.trim()),
                    Ok(Value::Array(rows)) if rows.len() == 3 && rows.iter().all(|r| r["status"] == "up"));
            if all_up {
                seen += 1;
                continue;
            }
            last = Some(out);
            std::thread::sleep(Duration::from_millis(200));
        }
        if seen == 3 {
            return;
        }
        panic!("the mesh did not come up within 30 s; last ctl: {last:?}\nmesh up said:\n{}", self.log());
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Pids `ctl --json ps` lists, with their node and status.
    fn ps(&self) -> Vec<(String, String, String)> {
        let out = self.ctl(&["--json", "ps"]);
        assert_eq!(out.code, Some(0), "{out:?}");
        let rows = out.json();
        rows.as_array()
            .unwrap_or_else(|| panic!("ps is not an array: {out:?}"))
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or_else(|| panic!("ps row without {k}: {r}")).to_string();
                assert!(r["reductions"].is_u64() && r["heap_pages"].is_u64() && r["mailbox"].is_u64(), "{r}");
                (s("pid"), s("node"), s("status"))
            })
            .collect()
    }
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn mesh_up_ctl_repl_and_ctrl_c() {
    let mut mesh = MeshUp::start();

    // nodes
    let out = mesh.ctl(&["--json", "nodes"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let rows = out.json();
    let rows = rows.as_array().expect("an array");
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["a", "b", "c"]);
    for r in rows {
        assert!(r["addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{r}");
        assert_eq!(r["status"], "up", "{r}");
        assert!(r["processes"].is_u64(), "{r}");
    }
    let table = mesh.ctl(&["nodes"]);
    assert_eq!(table.code, Some(0), "{table:?}");
    assert!(table.stdout.starts_with("NODE") && table.stdout.lines().count() == 4, "{table:?}");

    // spawn --on b, ps, kill
    let long = mesh.write("long.tern", "println(\"long-lived on ${node()}\");\nrecv();\n");
    let out = mesh.ctl(&["--json", "spawn", path(&long), "--on", "b"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let spawned = out.json();
    assert_eq!(spawned["node"], "b", "{out:?}");
    let pid = spawned["pid"].as_str().expect("a pid").to_string();
    assert!(pid.starts_with("2."), "a pid born on b (node 2): {pid}");
    let ps = mesh.ps();
    let row = ps.iter().find(|r| r.0 == pid).unwrap_or_else(|| panic!("{pid} not in ps: {ps:?}"));
    assert_eq!(row.1, "b");
    assert!(["running", "waiting"].contains(&row.2.as_str()), "{row:?}");
    let text = mesh.ctl(&["ps", "b"]);
    assert!(text.code == Some(0) && text.stdout.contains(&pid), "{text:?}");
    let out = mesh.ctl(&["--json", "kill", &pid]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.json(), serde_json::json!({"ok": true}));
    assert!(wait_until(Duration::from_secs(10), || !mesh.ps().iter().any(|r| r.0 == pid)), "{pid} still listed after kill");
    // Killing it again, or a pid no node has, says so (exit 1).
    let again = mesh.ctl(&["kill", &pid]);
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(again.stderr.contains("there is no process") && again.stderr.contains(&pid), "{again:?}");
    let none = mesh.ctl(&["--json", "kill", "3.999999"]);
    assert_eq!(none.code, Some(1), "{none:?}");
    assert!(none.json()["error"].as_str().is_some_and(|e| e.contains("no process <pid 3.999999>")), "{none:?}");
    let bad = mesh.ctl(&["--json", "kill", "nonsense"]);
    assert_ne!(bad.code, Some(0), "{bad:?}");
    assert!(bad.json()["error"].as_str().is_some_and(|e| e.contains("is not a pid")), "{bad:?}");

    // send: a process on c gets a value typed on the command line.
    let echo = mesh.write("echo.tern", "let m = recv(20000);\nprintln(\"echo got ${m}\");\n");
    let out = mesh.ctl(&["--json", "spawn", path(&echo), "--on", "c"]);
    let epid = out.json()["pid"].as_str().unwrap_or_else(|| panic!("{out:?}")).to_string();
    let out = mesh.ctl(&["--json", "send", &epid, "[1, \"two\"]"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        wait_until(Duration::from_secs(10), || mesh.log().contains("echo got [1, \"two\"]")),
        "the echo's output is not in the mesh's log:\n{}",
        mesh.log()
    );

    // migrate: a running counter moves a → b (lazy, JSON, a metrics line), then b → c
    // asked of node a (the default mechanism, a table); bad input fails clearly.
    let counter = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/counter.tern");
    let out = mesh.ctl(&["--json", "spawn", path(&counter), "--on", "a"]);
    let cpid = out.json()["pid"].as_str().unwrap_or_else(|| panic!("{out:?}")).to_string();
    let metrics = mesh.dir.path().join("metrics.jsonl");
    let out =
        mesh.ctl(&["--json", "migrate", &cpid, "b", "--mechanism", "lazy", "--forwarding", "resend", "--metrics-out", path(&metrics)]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let r = out.json();
    assert!(
        r["ok"] == true && r["mechanism"] == "lazy" && r["forwarding"] == "resend" && r["to"] == "b" && r["freeze_time_us"].is_u64(),
        "{out:?}"
    );
    let out = mesh.ctl(&["--node", "a", "migrate", &cpid, "c"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("picked by auto")
            && out.stdout.contains("link-update")
            && out.stdout.contains("committed")
            && out.stdout.contains("b → c"),
        "{out:?}"
    );
    let lines = std::fs::read_to_string(&metrics).unwrap_or_default();
    assert_eq!(lines.lines().count(), 1, "{lines}");
    assert!(mesh.ps().iter().any(|(p, n, _)| *p == cpid && n == "c"), "{:?}", mesh.ps());
    let out = mesh.ctl(&["migrate", &cpid, "a", "--mechanism", "teleport"]);
    assert!(out.code.is_some_and(|c| c != 0) && out.stderr.contains("unknown migration mechanism"), "{out:?}");
    let out = mesh.ctl(&["migrate", &cpid, "a", "--forwarding", "carrier-pigeon"]);
    assert!(out.code.is_some_and(|c| c != 0) && out.stderr.contains("unknown forwarding mechanism \"carrier-pigeon\""), "{out:?}");
    let out = mesh.ctl(&["migrate", &cpid, "zz"]);
    assert!(out.code.is_some_and(|c| c != 0) && out.stderr.contains("no node \"zz\""), "{out:?}");
    let out = mesh.ctl(&["migrate", &cpid, "a", "--group"]);
    assert!(out.code.is_some_and(|c| c != 0) && out.stderr.contains("is in no group"), "{out:?}");

    // spawn --wait: the output, and the exit code.
    let hello = mesh.write(
        "hello.tern",
        "fn f(m) { println(\"child on ${node()}\"); send(m, 1); }\nprintln(\"hello from ${node()}\");\nspawn_on(\"c\", f, self());\nrecv(10000);\nprintln(\"bye\");\n",
    );
    let out = mesh.ctl(&["--node", "a", "spawn", path(&hello), "--wait"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "hello from a\nchild on c\nbye\n", "{out:?}");
    let fail = mesh.write("fail.tern", "println(\"before\");\nlet x = 1 / 0;\n");
    let out = mesh.ctl(&["spawn", path(&fail), "--wait"]);
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    assert!(out.stdout.contains("before"), "{out:?}");
    assert!(out.stderr.contains("division by zero"), "{out:?}");
    let out = mesh.ctl(&["--json", "spawn", path(&fail), "--wait"]);
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    assert_eq!(out.json()["failed"], true, "{out:?}");
    let broken = mesh.write("broken.tern", "let = ;\n");
    let out = mesh.ctl(&["spawn", path(&broken)]);
    assert!(out.code.is_some_and(|c| c != 0) && out.stderr.contains("broken.tern:1:5"), "{out:?}");
    // A compile error keeps its own form: no `tern: ` or second `error: ` before it.
    assert!(out.stderr.starts_with("error: expected a variable name after `let`, found `=`\n"), "{out:?}");

    // repl
    let input = format!(
        "1 + 2\nfn sq(x) {{ x * x }}\nsq(7)\n:nodes\n:migrate {cpid} a --forwarding link-traversal --json\n:policy\n:top 3\n:policy set nonsense 1\n:quit\n"
    );
    let out = run(&["repl", "--config", mesh.cfg(), "--node", "a"], &input, T);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("\"forwarding\":\"link-traversal\"") && out.stdout.contains("\"to\":\"a\""), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    let three = lines.iter().position(|l| *l == "3").unwrap_or_else(|| panic!("no 3: {out:?}"));
    let forty_nine = lines.iter().position(|l| *l == "49").unwrap_or_else(|| panic!("no 49: {out:?}"));
    assert!(three < forty_nine, "{out:?}");
    assert!(out.stdout.contains("NODE") && out.stdout.contains("ADDRESS"), "no nodes table: {out:?}");
    // :policy, :top, and a bad policy change (an error; the REPL goes on).
    assert!(out.stdout.contains("policy: mode off"), "no policy: {out:?}");
    assert!(out.stdout.contains("REDUCTIONS/S") && out.stdout.contains("TAKES NEW"), "no top: {out:?}");
    assert!(out.stderr.contains("unknown policy key \"nonsense\""), "{out:?}");
    for n in ["a", "b", "c"] {
        assert!(lines.iter().any(|l| l.starts_with(&format!("{n} ")) && l.contains(" up ")), "node {n} not in the table: {out:?}");
    }
    // A program started from the REPL reads the lines given with :input; :eof ends them.
    let reader = mesh.write("reader.tern", "let l = read_line();\nwhile l != nil {\n    println(\"got [${l}] on ${node()}\");\n    l = read_line();\n}\nprintln(\"input ended\");\n");
    let input = format!(":spawn {}\nsleep(300)\n:input hello  world\nsleep(300)\n:eof\nsleep(300)\n:quit\n", path(&reader));
    let out = run(&["repl", "--config", mesh.cfg(), "--node", "a"], &input, T);
    assert_eq!(out.code, Some(0), "{out:?}");
    // `:spawn` without a node: on the least loaded node, wherever that is.
    let on = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("started <pid ").and_then(|r| r.split(" on node ").nth(1)))
        .unwrap_or_else(|| panic!("no started line: {out:?}"))
        .to_string();
    assert!(out.stdout.contains(&format!("got [hello  world] on {on}")) && out.stdout.contains("input ended"), "{out:?}");

    // Ctrl-C
    let pid = mesh.proc.id().to_string();
    let k = Command::new("kill").args(["-INT", &pid]).status().expect("kill runs");
    assert!(k.success());
    let status = mesh.proc.wait(Duration::from_secs(10));
    let status = status.unwrap_or_else(|| panic!("tern mesh up did not stop within 10 s of SIGINT:\n{}", mesh.log()));
    assert_eq!(status.code(), Some(0), "{}", mesh.log());
    // Now nothing answers.
    let out = mesh.ctl(&["--node", "b", "--json", "nodes"]);
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    assert!(out.stderr.contains("cannot reach node b"), "{out:?}");
}

#[test]
fn ctl_against_a_node_that_is_not_running_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    loopback_mesh(dir.path(), 3, "").unwrap();
    let config = dir.path().join("mesh.toml");
    let t0 = Instant::now();
    let out = run(&["ctl", "--config", path(&config), "--node", "b", "--json", "nodes"], "", T);
    assert_eq!(out.code, Some(2), "{out:?}");
    let err = out.stderr.trim();
    assert!(err.starts_with("error: cannot reach node b at 127.0.0.1:"), "{out:?}");
    assert!(err.contains("no answer within 1.5 s"), "{out:?}");
    // Only the node asked for is tried.
    assert!(!err.contains("node a ") && !err.contains("node c "), "{out:?}");
    assert!(err.contains(&format!("hint: is the mesh running? start it with: tern mesh up --config {}", path(&config))), "{out:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
    let out = run(&["ctl", "--config", path(&config), "--node", "zzz", "nodes"], "", T);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("there is no node \"zzz\""), "{out:?}");
}

/// No node of the config runs: every node is tried at once, and the one error names
/// each with its address and why, then says how to start the mesh. (One after another
/// with 5 s each, this took 15 s and named only the last.)
#[test]
fn ctl_and_repl_against_a_mesh_that_is_not_running_name_every_node_and_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = loopback_mesh(dir.path(), 3, "").unwrap();
    let config = dir.path().join("mesh.toml");
    let hint = format!("hint: is the mesh running? start it with: tern mesh up --config {}", path(&config));
    for args in [vec!["ctl", "--config", path(&config), "nodes"], vec!["repl", "--config", path(&config)]] {
        let t0 = Instant::now();
        let out = run(&args, "", T);
        let took = t0.elapsed();
        assert_eq!(out.code, Some(2), "{out:?}");
        assert!(out.stderr.starts_with(&format!("error: no node of {} answered:", path(&config))), "{out:?}");
        for n in &cfg.nodes {
            assert!(out.stderr.contains(&format!("cannot reach node {} at {}: no answer within 1.5 s", n.name, n.addr)), "{out:?}");
        }
        assert!(out.stderr.trim_end().ends_with(&hint), "{out:?}");
        assert!(took < Duration::from_secs(6), "took {took:?} (all nodes are tried at once)");
    }
    // The timeout is the operator's to choose.
    let t0 = Instant::now();
    let out = run(&["ctl", "--config", path(&config), "--connect-timeout", "0.3", "nodes"], "", T);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("no answer within 300 ms"), "{out:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
    let out = run(&["ctl", "--config", path(&config), "--connect-timeout", "0", "nodes"], "", T);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--connect-timeout"), "{out:?}");
}

/// Only the config's second node runs: `tern ctl` without --node reaches it.
/// Starts `tern node NAME` of `config`, its output going to `NAME.log` beside the
/// config, and waits until it answers `tern ctl --node NAME nodes`.
fn node_up(config: &Path, name: &str) -> (Guard, PathBuf) {
    let log = config.with_file_name(format!("{name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let mut node = Guard::spawn(
        &format!("tern node {name}"),
        tern().args(["node", "--config", path(config), "--name", name]).stdin(Stdio::null()).stdout(out).stderr(err),
    );
    let up = wait_until(Duration::from_secs(30), || {
        assert!(node.wait(Duration::ZERO).is_none(), "node {name} exited: {}", std::fs::read_to_string(&log).unwrap_or_default());
        run(&["ctl", "--config", path(config), "--node", name, "nodes"], "", T).code == Some(0)
    });
    assert!(up, "node {name} did not answer within 30 s: {}", std::fs::read_to_string(&log).unwrap_or_default());
    (node, log)
}

#[test]
fn ctl_reaches_the_one_node_that_runs_when_the_first_does_not() {
    let dir = tempfile::tempdir().unwrap();
    loopback_mesh(dir.path(), 3, "").unwrap();
    let config = dir.path().join("mesh.toml");
    let _b = node_up(&config, "b");
    let t0 = Instant::now();
    let out = run(&["ctl", "--config", path(&config), "--json", "nodes"], "", T);
    assert_eq!(out.code, Some(0), "{out:?}");
    let status: Vec<(String, String)> = out
        .json()
        .as_array()
        .unwrap_or_else(|| panic!("nodes is not an array: {out:?}"))
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r["status"].as_str().unwrap().to_string()))
        .collect();
    let want = [("a", "down"), ("b", "up"), ("c", "down")].map(|(n, s)| (n.to_string(), s.to_string()));
    assert_eq!(status, want, "{out:?}");
    // It did not wait for a and c to time out.
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
}

#[test]
fn node_with_a_name_not_in_the_config_exits_two() {
    let dir = tempfile::tempdir().unwrap();
    loopback_mesh(dir.path(), 3, "").unwrap();
    let config = dir.path().join("mesh.toml");
    let out = run(&["node", "--config", path(&config), "--name", "zzz"], "", T);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("zzz") && out.stderr.contains("no node"), "{out:?}");
}

#[test]
fn mesh_up_exits_nonzero_when_a_node_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = loopback_mesh(dir.path(), 3, "").unwrap();
    // Node b's port is taken.
    let _taken = std::net::UdpSocket::bind(cfg.node("b").unwrap().addr).unwrap();
    let config = dir.path().join("mesh.toml");
    let out = run(&["mesh", "up", "--config", path(&config)], "", T);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("node b failed to start") && out.stderr.contains("cannot listen"), "{out:?}");
}

/// `tern repl` in a terminal (a pseudo-terminal): the shell is one process for the whole
/// session — `self()` is the same on every line, a reply sent to it waits in its mailbox
/// until a line receives it — names complete with Tab, another process's output is
/// printed above the prompt without losing the line being typed, Ctrl-C interrupts a
/// busy line (and leaves nothing running on the node), two Ctrl-C at the prompt ask
/// before leaving, and Ctrl-D leaves, ending the shell process.
#[test]
fn repl_in_a_terminal_is_a_shell_process() {
    let mesh = MeshUp::start();
    let mut cmd = tern();
    cmd.args(["repl", "--config", mesh.cfg(), "--node", "a"]).env("TERM", "xterm").env("HOME", mesh.dir.path());
    let mut p = rexpect::session::spawn_command(cmd, Some(20_000)).expect("tern repl starts in a pty");
    let shell = {
        p.exp_string("this shell is <pid ").expect("the banner names the shell");
        let (_, pid) = p.exp_regex(r"1\.[0-9]+").expect("the shell's pid");
        pid
    };
    let me = format!("<pid {shell}>");
    let ps_of = |pid: &str| mesh.ps().into_iter().find(|(p, ..)| p == pid);
    // Types a line once the prompt for it is there (the line editor drops what is typed
    // while a line runs, as terminals' line editors do).
    let n = std::cell::Cell::new(1);
    let say = |p: &mut rexpect::session::PtySession, text: &str| {
        p.exp_string(&format!("a({})> ", n.get())).unwrap_or_else(|e| panic!("no prompt {} before {text:?}: {e}", n.get()));
        p.send_line(text).unwrap();
        n.set(n.get() + 1);
    };

    // One process for every line.
    say(&mut p, "self()");
    p.exp_string(&me).unwrap();
    say(&mut p, "self() == self()");
    p.exp_string("true").unwrap();
    say(&mut p, ":self");
    p.exp_string(&me).unwrap();

    // Another process answers the shell; the answer waits in the shell's mailbox.
    say(&mut p, "let r = spawn(fn() { let m = recv(); send(m.from, \"count is ${m.ask}\"); });");
    say(&mut p, "r");
    let (_, rpid) = p.exp_regex(r"<pid 1\.[0-9]+>").unwrap();
    let rpid = rpid.trim_start_matches("<pid ").trim_end_matches('>').to_string();
    assert_ne!(rpid, shell);
    say(&mut p, &format!(":send {rpid} {{from: self(), ask: 7}}"));
    std::thread::sleep(Duration::from_millis(300));
    say(&mut p, "recv(2000)");
    p.exp_string("count is 7").unwrap();
    // flush() prints what waits and empties the mailbox.
    say(&mut p, "send(self(), \"one\"); send(self(), \"two\");");
    say(&mut p, ":flush");
    p.exp_string("one").unwrap();
    p.exp_string("two").unwrap();
    say(&mut p, "recv(0)");
    p.exp_string("timeout").unwrap();
    let shell_row = ps_of(&shell).unwrap_or_else(|| panic!("the shell {shell} is not listed: {:?}", mesh.ps()));
    assert_eq!(shell_row.1, "a");

    // Completion of a binding's name.
    say(&mut p, "let counter_value = 41;");
    p.exp_string(&format!("a({})> ", n.get())).unwrap();
    p.send("counter_v\t").unwrap();
    p.flush().unwrap();
    p.exp_string("counter_value").expect("Tab completes the name");
    p.send_line(" + 1").unwrap();
    n.set(n.get() + 1);
    p.exp_string("42").unwrap();

    // Output of another process lands above the prompt; the half-typed line survives.
    say(&mut p, "spawn(fn() { sleep(600); println(\"late output\"); })");
    p.exp_regex(r"<pid 1\.[0-9]+>").unwrap();
    p.exp_string(&format!("a({})> ", n.get())).unwrap();
    p.send("40 + ").unwrap();
    p.flush().unwrap();
    p.exp_string("late output").unwrap();
    let (after, _) =
        p.exp_regex(&format!(r"a\({}\)> (\x1b\[[0-9;]*[A-Za-z])*40 \+ ", n.get())).expect("the prompt and the typed text are redrawn");
    assert!(!after.contains("40 + late output"), "{after:?}");
    p.send_line("2").unwrap();
    n.set(n.get() + 1);
    p.exp_string("42").unwrap();

    // Ctrl-C interrupts a busy line, where it was; the shell stays (same pid, mailbox,
    // bindings) and nothing keeps running on the node. A line waiting in recv() too.
    let busy_line = n.get();
    say(&mut p, "send(self(), \"kept\"); while true { }");
    std::thread::sleep(Duration::from_millis(700));
    p.send_control('c').unwrap();
    p.exp_string(&format!("repl:{busy_line}: error: interrupted")).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || mesh.ps().iter().all(|(_, _, status)| status != "running" && status != "runnable")),
        "a process still runs after Ctrl-C: {:?}",
        mesh.ps()
    );
    say(&mut p, "recv()");
    p.exp_string("kept").unwrap();
    say(&mut p, "recv()");
    std::thread::sleep(Duration::from_millis(300));
    p.send_control('c').unwrap();
    p.exp_string("error: interrupted").unwrap();
    say(&mut p, "[self() == pid(\"SHELL\"), counter_value]".replace("SHELL", &shell).as_str());
    p.exp_string("[true, 41]").unwrap();
    let new_shell = shell.clone();

    // Two Ctrl-C at an idle prompt ask first; "n" stays.
    p.exp_string(&format!("a({})> ", n.get())).unwrap();
    p.send_control('c').unwrap();
    p.exp_string("Ctrl-C again").unwrap();
    p.send_control('c').unwrap();
    p.exp_string("leave tern repl? (y/n)").unwrap();
    p.send_line("n").unwrap();
    say(&mut p, "6 * 7");
    p.exp_string("42").unwrap();

    // Ctrl-D leaves; the shell process ends with the session.
    p.exp_string(&format!("a({})> ", n.get())).unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
    assert!(wait_until(Duration::from_secs(5), || ps_of(&new_shell).is_none()), "the shell outlived its REPL: {:?}", mesh.ps());
}

/// Errors at the REPL quote what was typed (never the code the REPL wraps it in), once,
/// with the REPL's own line numbers; so does `tern ctl send`.
#[test]
fn repl_errors_quote_what_was_typed() {
    let mesh = MeshUp::start();
    let input = "let xs = [1, 2, 3];\npush(xs, 4); len(xs)\n{a: \nfn at(i) { xs[i] }\nat(9)\n:doc push\n:doc list.map\n:quit\n";
    let out = run(&["repl", "--config", mesh.cfg(), "--node", "a"], input, T);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.lines().any(|l| l.trim() == "4"), "push; len printed the length: {out:?}");
    assert!(!out.stderr.contains("println"), "the REPL's wrapper is quoted: {out:?}");
    // Line 3 is unfinished: one error, at line 3, quoting what was typed.
    assert_eq!(out.stderr.matches("repl:3:").count(), 1, "{out:?}");
    assert!(out.stderr.contains("error: expected expression") && out.stderr.contains("3 | {a:"), "{out:?}");
    assert!(out.stderr.contains("{a:") && out.stderr.contains("found the end of the text"), "{out:?}");
    // Line 5's call fails in the function of line 4: named so, and printed once.
    assert_eq!(out.stderr.matches("index 9 out of range").count(), 1, "{out:?}");
    assert!(out.stderr.contains("repl:4: error: index 9 out of range") && out.stderr.contains("at <top level> (repl:5)"), "{out:?}");
    assert!(out.stdout.contains("`push(a, v)`") && out.stdout.contains("The array of f(x) for each element x."), "{out:?}");

    let r = mesh.ctl(&["spawn", path(&mesh.write("sink.tern", "recv();\n"))]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let pid = r.stdout.split("<pid ").nth(1).and_then(|s| s.split('>').next()).unwrap_or_else(|| panic!("{r:?}")).to_string();
    let out = mesh.ctl(&["send", &pid, "{a: "]);
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    assert!(out.stderr.contains("value:1:") && !out.stderr.contains("send(pid"), "{out:?}");
}

/// Control certificates carry a role: `tern cluster cert` makes one per person; with
/// `--as`, an observer may look (nodes, ps) but not change anything (kill, spawn,
/// migrate are refused with a clear error and no effect), an operator may, and the
/// node logs which certificate asked for each change and each refusal.
#[test]
fn an_observer_may_look_but_not_kill_and_the_node_logs_who_did_what() {
    let dir = tempfile::tempdir().unwrap();
    loopback_mesh(dir.path(), 1, "").unwrap();
    let config = dir.path().join("mesh.toml");
    let cfg = path(&config);
    for (role, name) in [("observer", "olive"), ("operator", "alice")] {
        let out = run(&["cluster", "cert", "--config", cfg, "--role", role, "--name", name], "", T);
        assert_eq!(out.code, Some(0), "{out:?}");
        assert!(out.stdout.contains(&format!("{role} certificate \"{name}.{role}\"")), "{out:?}");
        assert!(
            dir.path().join(format!("certs/{name}.{role}.pem")).is_file() && dir.path().join(format!("certs/{name}.{role}.key")).is_file()
        );
    }
    // Bad roles and names are usage errors; a certificate is not made twice.
    let bad = run(&["cluster", "cert", "--config", cfg, "--role", "admin", "--name", "x"], "", T);
    assert_eq!(bad.code, Some(2), "{bad:?}");
    let bad = run(&["cluster", "cert", "--config", cfg, "--role", "observer", "--name", "Bad Name"], "", T);
    assert_eq!(bad.code, Some(2), "{bad:?}");
    let again = run(&["cluster", "cert", "--config", cfg, "--role", "observer", "--name", "olive"], "", T);
    assert_ne!(again.code, Some(0), "{again:?}");

    let (_a, log) = node_up(&config, "a");
    let long = dir.path().join("long.tern");
    std::fs::write(&long, "recv();\n").unwrap();
    let out = run(&["ctl", "--config", cfg, "--json", "spawn", path(&long)], "", T);
    assert_eq!(out.code, Some(0), "{out:?}");
    let pid = out.json()["pid"].as_str().expect("a pid").to_string();
    let listed = |who: &str| {
        let out = run(&["ctl", "--config", cfg, "--as", who, "--json", "ps"], "", T);
        assert_eq!(out.code, Some(0), "{out:?}");
        out.json().as_array().expect("rows").iter().any(|r| r["pid"] == pid.as_str())
    };

    // The observer looks, and is refused every change, which has no effect.
    assert!(listed("olive.observer"));
    let nodes = run(&["ctl", "--config", cfg, "--as", "olive.observer", "nodes"], "", T);
    assert_eq!(nodes.code, Some(0), "{nodes:?}");
    let kill = run(&["ctl", "--config", cfg, "--as", "olive.observer", "kill", &pid], "", T);
    assert_eq!(kill.code, Some(1), "{kill:?}");
    assert!(kill.stderr.contains("observer olive.observer may not kill") && kill.stderr.contains("can only look"), "{kill:?}");
    let spawn = run(&["ctl", "--config", cfg, "--as", "olive.observer", "spawn", path(&long)], "", T);
    assert_ne!(spawn.code, Some(0), "{spawn:?}");
    assert!(spawn.stderr.contains("may not spawn"), "{spawn:?}");
    let migrate = run(&["ctl", "--config", cfg, "--as", "olive.observer", "migrate", &pid, "a"], "", T);
    assert_ne!(migrate.code, Some(0), "{migrate:?}");
    assert!(listed("ctl"), "the observer's kill had no effect");

    // The operator's kill works, and the node says who asked.
    let kill = run(&["ctl", "--config", cfg, "--as", "alice.operator", "--json", "kill", &pid], "", T);
    assert_eq!(kill.code, Some(0), "{kill:?}");
    assert!(wait_until(Duration::from_secs(10), || !listed("alice.operator")), "{pid} still listed after the operator's kill");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(&format!("operator alice.operator: kill <pid {pid}>")), "{text}");
    assert!(text.contains(&format!("refused observer olive.observer: kill <pid {pid}>")), "{text}");
    assert!(text.contains("operator ctl: spawn a program"), "{text}");

    // --as takes control certificates only.
    for who in ["a", "nobody.admin", "olive"] {
        let out = run(&["ctl", "--config", cfg, "--as", who, "nodes"], "", T);
        assert_eq!(out.code, Some(2), "--as {who}: {out:?}");
        assert!(out.stderr.contains("PERSON.observer"), "{out:?}");
    }
}

/// `[security] revoked` is read again while a node runs: a revoked certificate's open
/// connection is closed and new ones are refused; others go on; taken off the list, it
/// is let in again.
#[test]
fn a_certificate_revoked_in_the_config_is_cut_off_while_the_node_runs() {
    use tern_net::ctl::CtlClient;
    use tern_net::proto::wire::{CtlReply, CtlRequest};
    let dir = tempfile::tempdir().unwrap();
    loopback_mesh(dir.path(), 1, "").unwrap();
    let config = dir.path().join("mesh.toml");
    let cfg = path(&config);
    let out = run(&["cluster", "cert", "--config", cfg, "--role", "observer", "--name", "olive"], "", T);
    assert_eq!(out.code, Some(0), "{out:?}");
    let (_a, log) = node_up(&config, "a");
    let mesh = tern_net::config::MeshConfig::load(&config).unwrap();
    let olive = CtlClient::connect_as(&mesh, Some("a"), "olive.observer", T).unwrap();
    assert!(matches!(olive.call(&CtlRequest::Nodes), Ok(CtlReply::Nodes(_))));

    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[security]\nrevoked = [\"olive.observer\"]\n")).unwrap();
    // The open connection is closed, and a new one refused; the operator goes on.
    assert!(wait_until(Duration::from_secs(15), || olive.call(&CtlRequest::Nodes).is_err()), "olive's connection is still served");
    let again = run(&["ctl", "--config", cfg, "--as", "olive.observer", "nodes"], "", T);
    assert_ne!(again.code, Some(0), "{again:?}");
    assert!(again.stderr.contains("node a refused the connection in the TLS handshake"), "{again:?}");
    assert_eq!(run(&["ctl", "--config", cfg, "nodes"], "", T).code, Some(0));
    let node_log = std::fs::read_to_string(&log).unwrap();
    assert!(node_log.contains("revoked certificates now: olive.observer"), "{node_log}");
    assert!(node_log.contains("closing olive.observer's operator connection: its certificate is revoked"), "{node_log}");
    assert!(node_log.contains(r#": certificate "olive.observer": it is revoked ([security] revoked in"#), "{node_log}");
    assert!(!node_log.contains("BEGIN"), "no key or certificate material in the log");

    // Taken off the list: let in again.
    std::fs::write(&config, &text).unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || run(&["ctl", "--config", cfg, "--as", "olive.observer", "nodes"], "", T).code == Some(0)),
        "olive is not let in again: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// A refused connection is logged on both sides, in words, once per address per
/// interval with a count: node b revokes node a, which dials it again and again; a
/// `tern ctl` of another cluster is refused by node a.
#[test]
fn refusals_are_logged_on_both_sides_once_per_interval_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    loopback_mesh(dir.path(), 2, "").unwrap();
    let config = dir.path().join("mesh.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let b_config = dir.path().join("b.toml");
    std::fs::write(&b_config, format!("{text}\n[security]\nrevoked = [\"a\"]\n")).unwrap();
    let (_b, b_log) = node_up(&b_config, "b");
    let t0 = Instant::now();
    let (_a, a_log) = node_up(&config, "a");

    // Another cluster's certificates, for the same nodes.
    let other = tempfile::tempdir().unwrap();
    let other_config = other.path().join("mesh.toml");
    std::fs::write(&other_config, &text).unwrap();
    assert_eq!(run(&["cluster", "init", "--config", path(&other_config)], "", T).code, Some(0));
    for _ in 0..3 {
        let out = run(&["ctl", "--config", path(&other_config), "--node", "a", "nodes"], "", T);
        assert_eq!(out.code, Some(2), "{out:?}");
        assert!(
            out.stderr
                .contains("refused the connection to the node in the TLS handshake: its certificate is not signed by this cluster's CA"),
            "{out:?}"
        );
    }

    // Past one interval (10 s) of a's dialling.
    std::thread::sleep(Duration::from_secs(12).saturating_sub(t0.elapsed()));
    let lines = |log: &Path, what: &str| -> Vec<String> {
        std::fs::read_to_string(log).unwrap().lines().filter(|l| l.contains(what)).map(str::to_string).collect()
    };
    let b_said = lines(&b_log, r#": certificate "a": it is revoked ([security] revoked in"#);
    assert!(b_said.iter().all(|l| l.starts_with("refused a connection from 127.0.0.1:")), "{b_said:#?}");
    assert!((1..=2).contains(&b_said.len()), "b logs each refusal: {b_said:#?}");
    assert!(b_said.iter().any(|l| l.contains("more from 127.0.0.1 in the")), "b counts the refusals between: {b_said:#?}");
    let a_said = lines(&a_log, "refused the connection in the TLS handshake (alert 42): it does not take this node's certificate");
    assert!((1..=2).contains(&a_said.len()), "a logs each refusal: {}", std::fs::read_to_string(&a_log).unwrap());
    assert!(a_said[0].starts_with("node b at 127.0.0.1:"), "{a_said:#?}");
    assert!(a_said.iter().any(|l| l.contains("so far)")), "a counts them: {a_said:#?}");
    let a_refused = lines(&a_log, "): this node's certificate is not signed by its CA: the two are of different clusters");
    assert_eq!(a_refused.len(), 1, "the other cluster's three tries, logged once: {a_refused:#?}");
    assert!(a_refused[0].starts_with("the peer at 127.0.0.1:"), "{a_refused:#?}");
    for log in [&a_log, &b_log] {
        assert!(!std::fs::read_to_string(log).unwrap().contains("BEGIN"), "no key or certificate material in the log");
    }
}
