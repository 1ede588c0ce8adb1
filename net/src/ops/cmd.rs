//! The mesh commands of `tern`: `node`, `mesh up`, `ctl`, `repl` and `demo`.

use crate::config::MeshConfig;
use crate::node::migration::TestHooks;
use crate::node::{LogSink, MeshNode, NodeOptions};
use crate::ops::ctl::{server, ConnectOpts, CtlClient};
use crate::ops::report::{
    drain_json, drain_text, nodes_json, nodes_table, policy_json, policy_text, ps_json, ps_table, report_table, report_table_explained,
    top_json, top_table,
};
use crate::proto::mechanism::{Choice, How, Mechanism};
use crate::proto::wire::{CtlReply, CtlRequest, DrainReport, MigReport, PolicyChange};
use crate::runner::{compile, compile_text};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tern_vm::value::name_text;

/// A log sink printing `prefix` and the line to stdout.
pub fn stdout_log(prefix: String) -> LogSink {
    Arc::new(move |line: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{prefix}{line}");
        let _ = out.flush();
    })
}

/// Waits for Ctrl-C (or SIGTERM).
pub fn wait_for_signal() -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r.map_err(|e| e.to_string()),
                _ = term.recv() => Ok(()),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.map_err(|e| e.to_string())
        }
    })
}

/// What `tern node` does when it is asked to stop (SIGTERM or Ctrl-C).
#[derive(Clone, Copy, Debug)]
pub struct StopOpts {
    /// Move the node's processes to the other nodes first (`--drain-on-stop`).
    pub drain: bool,
    /// How long the stop may take (`--stop-timeout`): what is left then is dropped.
    pub limit: Duration,
}

/// `tern node --config C --name N`: runs one node until SIGTERM or Ctrl-C, then stops
/// it gracefully ([`MeshNode::stop_gracefully`]); a second signal stops it at once.
pub fn node(cfg: &MeshConfig, name: &str, stop: StopOpts) -> Result<(), String> {
    let n = MeshNode::start(cfg, name, NodeOptions { log: stdout_log(String::new()), workers: None, operators: Some(server()) })?;
    if let Some(hooks) = test_hooks_from_env(|k| std::env::var(k).ok()) {
        n.log(&format!("test hooks from the environment: {hooks:?}"));
        n.set_migration_hooks(hooks);
    }
    let http = crate::ops::dashboard::serve_node_http(cfg, &n)?;
    wait_for_signal()?;
    drop(http);
    n.log(&format!(
        "node {} asked to stop{} (a second SIGTERM or Ctrl-C stops it at once)",
        n.name(),
        if stop.drain { ": moving its processes to the other nodes first" } else { "" }
    ));
    let log = stdout_log(String::new());
    std::thread::spawn(move || {
        if wait_for_signal().is_ok() {
            log("stopping at once");
            std::process::exit(130);
        }
    });
    n.stop_gracefully(stop.drain, stop.limit);
    Ok(())
}

/// Test only: the migration hooks a test on real nodes (each node its own `tern node`)
/// asks for in the environment, where an in-process test calls
/// [`MeshNode::set_migration_hooks`]: `TERN_TEST_NO_PUSH=1` (a lazy migration from this
/// node pushes no pages in the background), `TERN_TEST_HOLD_LATE_MS=N` (a migration
/// from this node waits N ms after `Committed` before it sends the late messages) and
/// `TERN_TEST_HOLD_COMMIT_MS=N` (a migration to this node waits N ms on `Commit` before
/// it resumes the process and answers) and `TERN_TEST_LOSE_PAGE=P` (a migration to this
/// node loses every copy of page P on its way to the process until the loss is noticed).
/// `None` when none is set (or the first three are `0`).
fn test_hooks_from_env(var: impl Fn(&str) -> Option<String>) -> Option<TestHooks> {
    let num = |k: &str| var(k).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
    let hooks = TestHooks {
        no_push: num("TERN_TEST_NO_PUSH") != 0,
        hold_late_ms: num("TERN_TEST_HOLD_LATE_MS"),
        hold_commit_ms: num("TERN_TEST_HOLD_COMMIT_MS"),
        lose_page_install: var("TERN_TEST_LOSE_PAGE").and_then(|v| v.trim().parse::<u32>().ok()),
        ..TestHooks::default()
    };
    (hooks.no_push || hooks.hold_late_ms > 0 || hooks.hold_commit_ms > 0 || hooks.lose_page_install.is_some()).then_some(hooks)
}

/// A node's refusal of a command, printed as the command's answer (`{"error": …}` with
/// `--json`); false, for exit status 1.
fn refused(json_out: bool, e: &str) -> bool {
    if json_out {
        println!("{}", json!({"error": e}));
    } else {
        eprintln!("error: {e}");
    }
    false
}

/// `tern mesh up --config C`: every node of the config in this OS process, until Ctrl-C.
pub fn mesh_up(cfg: &MeshConfig) -> Result<(), String> {
    let width = cfg.nodes.iter().map(|n| n.name.len()).max().unwrap_or(1);
    let mut nodes = Vec::new();
    for n in &cfg.nodes {
        let log = stdout_log(format!("{:>width$}| ", n.name));
        match MeshNode::start(cfg, &n.name, NodeOptions { log, workers: None, operators: Some(server()) })
            .and_then(|m| crate::ops::dashboard::serve_node_http(cfg, &m).map(|h| (m, h)))
        {
            Ok(m) => nodes.push(m),
            Err(e) => {
                for (m, http) in nodes {
                    drop(http);
                    m.shutdown();
                }
                return Err(format!("node {} failed to start: {e}", n.name));
            }
        }
    }
    wait_for_signal()?;
    for (m, http) in nodes {
        drop(http);
        m.shutdown();
    }
    Ok(())
}

/// A pid as the user types it: `2.15` or `<pid 2.15>`.
pub fn parse_pid(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_start_matches("<pid").trim_end_matches('>').trim();
    let parsed = t.split_once('.').and_then(|(n, s)| Some((n.parse::<u16>().ok()?, s.parse::<u64>().ok()?)));
    match parsed {
        Some((n, s)) if s < 1 << tern_vm::value::NAME_SERIAL_BITS => Ok(tern_vm::value::make_name(n, s)),
        _ => Err(format!("{s:?} is not a pid (expected node.serial, like 2.15)")),
    }
}

/// What `tern ctl` does.
#[derive(Debug, Clone)]
pub enum CtlCommand {
    Nodes,
    Ps {
        node: Option<String>,
    },
    /// `attach`: stdin goes to the program's console input.
    Spawn {
        file: std::path::PathBuf,
        on: Option<String>,
        wait: bool,
        attach: bool,
    },
    Kill {
        pid: String,
    },
    /// A process kept frozen because its move is in doubt for good: run it again here
    /// (`resume`) or end it.
    Resolve {
        pid: String,
        resume: bool,
    },
    Send {
        pid: String,
        value: String,
    },
    Migrate {
        pid: String,
        to: String,
        mechanism: Option<String>,
        forwarding: Option<String>,
        /// Move its whole coprocess group.
        group: bool,
        metrics_out: Option<std::path::PathBuf>,
    },
    /// `once`: print once, else refresh in place on a terminal until Ctrl-C.
    Top {
        procs: u32,
        once: bool,
    },
    Policy {
        change: Option<PolicyChange>,
        decisions: u32,
    },
    /// Drain (`on`) or undrain a node.
    Drain {
        node: String,
        on: bool,
    },
}

/// A progress bar on stderr drawn with `template`.
fn progress_bar(template: &str) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(0);
    b.set_style(
        indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()).progress_chars("=> "),
    );
    b
}

/// How often `top` refreshes on a terminal.
const TOP_REFRESH: Duration = Duration::from_secs(1);

/// Every node's load and the busiest processes.
pub fn top(client: &CtlClient, procs: u32) -> Result<Vec<crate::proto::wire::TopNode>, String> {
    match client.call(&CtlRequest::Top { procs })? {
        CtlReply::Top(nodes) => Ok(nodes),
        CtlReply::Error(e) => Err(e),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

/// Every node's policy, after `change` (made on every node that is up).
pub fn policy(
    client: &CtlClient,
    change: Option<PolicyChange>,
    decisions: u32,
) -> Result<(Vec<crate::proto::wire::PolicyView>, Vec<String>), String> {
    match client.call(&CtlRequest::Policy { change, decisions })? {
        CtlReply::Policy { views, errors } => Ok((views, errors)),
        CtlReply::Error(e) => Err(e),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

/// `policy` as typed: `[show] | on | off | set KEY VALUE`.
pub fn policy_change(words: &[&str]) -> Result<Option<PolicyChange>, String> {
    match words {
        [] | ["show"] => Ok(None),
        ["on"] => Ok(Some(PolicyChange::On)),
        ["off"] => Ok(Some(PolicyChange::Off)),
        ["set", key, value] => Ok(Some(PolicyChange::Set { key: key.to_string(), value: value.to_string() })),
        _ => Err("usage: policy [show | on | off | set KEY VALUE]".into()),
    }
}

/// Drains the node `client` is connected to (`on`), with a progress bar on a terminal
/// (`progress`), or undrains it.
pub fn drain(client: &CtlClient, on: bool, progress: bool) -> Result<Option<DrainReport>, String> {
    if !on {
        return match client.call(&CtlRequest::Drain { on: false })? {
            CtlReply::Done => Ok(None),
            CtlReply::Error(e) => Err(e),
            other => Err(format!("unexpected reply {other:?}")),
        };
    }
    let bar = progress.then(|| progress_bar("draining [{bar:30}] {pos}/{len} moves  {msg}"));
    let mut out = Err("no answer".to_string());
    client.request(&CtlRequest::Drain { on: true }, |reply| match reply {
        CtlReply::Draining { done, total, line } => {
            match &bar {
                Some(b) => {
                    b.set_length(total);
                    b.set_position(done.min(total));
                    b.set_message(line);
                }
                None => eprintln!("[{done}/{total}] {line}"),
            }
            true
        }
        CtlReply::Drained(r) => {
            out = Ok(Some(r));
            false
        }
        CtlReply::Error(e) => {
            out = Err(e);
            false
        }
        other => {
            out = Err(format!("unexpected reply {other:?}"));
            false
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    out
}

/// Asks for a migration and waits for its report, showing a progress bar on a terminal
/// (`progress`); with `metrics_out` the report is appended to that file as a JSON line.
pub fn migrate(
    client: &CtlClient,
    pid: u64,
    to: &str,
    how: How,
    progress: bool,
    metrics_out: Option<&std::path::Path>,
) -> Result<crate::proto::wire::MigReport, String> {
    let bar = progress.then(|| progress_bar("{spinner} {msg:<10} [{bar:30}] {pos}/{len} pages"));
    let mut out = Err("no answer".to_string());
    client.request(&CtlRequest::Migrate { pid, to: to.to_string(), how }, |reply| match reply {
        CtlReply::Progress { sent, total, phase } => {
            if let Some(b) = &bar {
                b.set_length(total);
                b.set_position(sent.min(total));
                b.set_message(phase);
            }
            true
        }
        CtlReply::Migrated(r) => {
            out = Ok(*r);
            false
        }
        CtlReply::Error(e) => {
            out = Err(e);
            false
        }
        other => {
            out = Err(format!("unexpected reply {other:?}"));
            false
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let r = out?;
    if let Some(path) = metrics_out {
        use std::io::Write;
        let line = serde_json::to_string(&r).map_err(|e| e.to_string())?;
        let mut f =
            std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        writeln!(f, "{line}").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(r)
}

/// What `tern ctl send PID VALUE` asks of the node it talks to: a one-line program there,
/// waited for, that sends VALUE (a Tern expression; errors quote it as typed) to `pid`.
pub fn send_request(pid: u64, value: &str) -> Result<CtlRequest, String> {
    let mut s = crate::ops::snippet::Snippet::new();
    let f = s.file("value", value);
    s.ours(&format!("send(pid(\"{}\"), (\n", name_text(pid)));
    s.theirs(f, 0, value.len());
    s.ours("\n));\n");
    let p = s.compile("send")?;
    Ok(CtlRequest::Spawn { modules: p.modules.iter().map(|m| m.encode()).collect(), main: p.main, on: None, wait: true })
}

/// Compiles a program for spawning: its modules, encoded, and its main module's hash.
/// An error as the `tern` command prints it: `error: MESSAGE`. Rendered compile errors
/// already start with `error: ` (one such line per error) and are left as they are.
pub fn error_text(msg: &str) -> String {
    let msg = msg.trim_end();
    if msg.starts_with("error: ") {
        msg.to_string()
    } else {
        format!("error: {msg}")
    }
}

pub fn program_request(file: &Path, on: Option<String>, wait: bool) -> Result<CtlRequest, String> {
    let p = compile(file).map_err(|e| e.rendered)?;
    Ok(CtlRequest::Spawn { modules: p.modules.iter().map(|m| m.encode()).collect(), main: p.main, on, wait })
}

/// Runs a spawn request with `wait`, printing console output as it comes; the reason
/// it ended, and whether that was a failure.
fn run_waiting(client: &CtlClient, req: &CtlRequest, json_out: bool, attach: bool) -> Result<(String, bool), String> {
    client.open_console(move |pid, text, failed| {
        if failed {
            eprintln!("<pid {}> failed: {}", name_text(pid), text.trim_end());
        } else if !json_out {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    })?;
    if attach {
        // Stdin, line by line, is the program's console input; its end, the input's end.
        let input = client.input_sender();
        crate::runner::stdin_lines("tern-ctl-stdin", input).map_err(|e| format!("cannot start a thread: {e}"))?;
    }
    let mut ended = None;
    let mut err = None;
    client.request(req, |r| match r {
        CtlReply::Spawned { .. } => true,
        CtlReply::Ended { reason, failed, lines, .. } => {
            ended = Some((reason, failed, lines));
            false
        }
        CtlReply::Error(e) => {
            err = Some(e);
            false
        }
        _ => true,
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    let (reason, failed, lines) = ended.ok_or("the node did not say how the process ended")?;
    // Output travels on its own stream: wait for all that came before the answer.
    client.await_console(lines);
    Ok((reason, failed))
}

/// `tern ctl`: one command; prints its result (as JSON with `json`). `Ok(false)`: the
/// command ran but did not succeed (a process failed, a node refused). `Err`: also when
/// no node answered within `connect_timeout`.
pub fn ctl(cfg: &MeshConfig, node: Option<&str>, connect: &ConnectOpts, json_out: bool, cmd: CtlCommand) -> Result<bool, String> {
    // A drain is the drained node's work: asked of it.
    let node = match &cmd {
        CtlCommand::Drain { node, .. } => Some(node.as_str()),
        _ => node,
    };
    let client = CtlClient::connect_as(cfg, node, &connect.identity, connect.timeout)?;
    let r = ctl_with(&client, json_out, cmd);
    client.close();
    r
}

fn ctl_with(client: &CtlClient, json_out: bool, cmd: CtlCommand) -> Result<bool, String> {
    let fail = |e: String| -> Result<bool, String> {
        if json_out {
            println!("{}", json!({"error": e}));
            Ok(false)
        } else {
            Err(e)
        }
    };
    match cmd {
        CtlCommand::Nodes => match client.call(&CtlRequest::Nodes)? {
            CtlReply::Nodes(rows) => {
                if json_out {
                    println!("{}", nodes_json(&rows));
                } else {
                    print!("{}", nodes_table(&rows));
                }
                Ok(true)
            }
            CtlReply::Error(e) => fail(e),
            other => fail(format!("unexpected reply {other:?}")),
        },
        CtlCommand::Ps { node } => match client.call(&CtlRequest::Ps { node })? {
            CtlReply::Ps(rows) => {
                if json_out {
                    println!("{}", ps_json(&rows));
                } else {
                    print!("{}", ps_table(&rows));
                }
                Ok(true)
            }
            CtlReply::Error(e) => fail(e),
            other => fail(format!("unexpected reply {other:?}")),
        },
        CtlCommand::Spawn { file, on, wait, attach } => {
            let req = match program_request(&file, on, wait) {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            if wait {
                let (reason, failed) = match run_waiting(client, &req, json_out, attach) {
                    Ok(x) => x,
                    Err(e) => return fail(e),
                };
                if json_out {
                    println!("{}", json!({"reason": reason, "failed": failed}));
                } else if failed || reason != "normal" {
                    eprintln!("process ended: {reason}");
                }
                return Ok(!failed);
            }
            match client.call(&req)? {
                CtlReply::Spawned { pid, node } => {
                    if json_out {
                        println!("{}", json!({"pid": name_text(pid), "node": node}));
                    } else {
                        println!("started <pid {}> on node {node}", name_text(pid));
                    }
                    Ok(true)
                }
                CtlReply::Error(e) => fail(e),
                other => fail(format!("unexpected reply {other:?}")),
            }
        }
        CtlCommand::Migrate { pid, to, mechanism, forwarding, group, metrics_out } => {
            let pid = match parse_pid(&pid) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            let how = match How::parse(mechanism.as_deref(), forwarding.as_deref()) {
                Ok(h) => How { group, ..h },
                Err(e) => return fail(e),
            };
            let tty = !json_out && std::io::IsTerminal::is_terminal(&std::io::stderr());
            match migrate(client, pid, &to, how, tty, metrics_out.as_deref()) {
                Ok(r) => {
                    if json_out {
                        println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
                    } else {
                        print!("{}", report_table(&r));
                    }
                    if r.ok {
                        Ok(true)
                    } else {
                        if !json_out {
                            eprintln!("error: migration failed: {}", r.outcome);
                        }
                        Ok(false)
                    }
                }
                Err(e) => fail(e),
            }
        }
        CtlCommand::Kill { pid } => {
            let pid = match parse_pid(&pid) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            match client.call(&CtlRequest::Kill { pid })? {
                CtlReply::Done => {
                    if json_out {
                        println!("{}", json!({"ok": true}));
                    }
                    Ok(true)
                }
                // No such process: an answer, not a usage error (exit 1, as a failed migrate).
                CtlReply::Error(e) => Ok(refused(json_out, &e)),
                other => fail(format!("unexpected reply {other:?}")),
            }
        }
        CtlCommand::Resolve { pid, resume } => {
            let pid = match parse_pid(&pid) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            match client.call(&CtlRequest::Resolve { pid, resume })? {
                CtlReply::Resolved(done) => {
                    if json_out {
                        println!("{}", json!({"ok": true, "done": done}));
                    } else {
                        println!("{done}");
                    }
                    Ok(true)
                }
                // Nothing in doubt by that pid here: an answer (exit 1).
                CtlReply::Error(e) => Ok(refused(json_out, &e)),
                other => fail(format!("unexpected reply {other:?}")),
            }
        }
        CtlCommand::Top { procs, once } => {
            let tty = !json_out && !once && std::io::IsTerminal::is_terminal(&std::io::stdout());
            loop {
                let nodes = match top(client, procs) {
                    Ok(n) => n,
                    Err(e) => return fail(e),
                };
                if json_out {
                    println!("{}", top_json(&nodes));
                    return Ok(true);
                }
                let table = top_table(&nodes, procs as usize);
                if !tty {
                    print!("{table}");
                    return Ok(true);
                }
                // In place: home, the table, the rest of the screen cleared.
                print!("\x1b[H{}\x1b[J", table.replace('\n', "\x1b[K\n"));
                let _ = std::io::stdout().flush();
                std::thread::sleep(TOP_REFRESH);
            }
        }
        CtlCommand::Policy { change, decisions } => match policy(client, change, decisions) {
            Ok((views, errors)) => {
                if json_out {
                    println!("{}", policy_json(&views, &errors));
                } else {
                    print!("{}", policy_text(&views, &errors));
                }
                Ok(errors.is_empty())
            }
            Err(e) => fail(e),
        },
        CtlCommand::Drain { node, on } => {
            let tty = !json_out && std::io::IsTerminal::is_terminal(&std::io::stderr());
            match drain(client, on, tty) {
                Ok(Some(r)) => {
                    if json_out {
                        println!("{}", drain_json(&r));
                    } else {
                        print!("{}", drain_text(&r));
                    }
                    Ok(r.failed.is_empty())
                }
                Ok(None) => {
                    if json_out {
                        println!("{}", json!({"ok": true}));
                    } else {
                        println!("node {node} takes new processes again");
                    }
                    Ok(true)
                }
                Err(e) => fail(e),
            }
        }
        CtlCommand::Send { pid, value } => {
            let pid = match parse_pid(&pid) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            let req = match send_request(pid, &value) {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            match run_waiting(client, &req, json_out, false) {
                Ok((_, false)) => {
                    if json_out {
                        println!("{}", json!({"ok": true}));
                    }
                    Ok(true)
                }
                Ok((reason, true)) => fail(reason),
                Err(e) => fail(e),
            }
        }
    }
}

pub use crate::ops::repl::repl;

/// A config for `n` nodes named a, b, c, ... z, then n27, n28, ... on free loopback
/// ports, in `dir` (with `extra` appended after its `[limits]` table; a `[mesh]` table
/// `extra` starts with, up to its first blank line, goes into the config's own), loaded;
/// certificates made with `cluster init`.
pub fn loopback_mesh(dir: &Path, n: usize, extra: &str) -> Result<MeshConfig, String> {
    let (mesh, extra) = match extra.strip_prefix("[mesh]\n") {
        Some(rest) => rest.split_once("\n\n").unwrap_or((rest, "")),
        None => ("", extra),
    };
    let mut text = format!("[mesh]\ncert_dir = \"certs\"\n{mesh}\n\n[limits]\nheartbeat_ms = 100\nnode_down_ms = 1000\n");
    text.push_str(extra);
    let mut sockets = Vec::new();
    for i in 0..n {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
        let port = s.local_addr().map_err(|e| e.to_string())?.port();
        sockets.push(s);
        let name = if i < 26 { ((b'a' + i as u8) as char).to_string() } else { format!("n{}", i + 1) };
        text.push_str(&format!("\n[[node]]\nname = \"{name}\"\naddr = \"127.0.0.1:{port}\"\nworkers = 2\n"));
    }
    drop(sockets);
    let path = dir.join("mesh.toml");
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let cfg = MeshConfig::load(&path).map_err(|e| e.to_string())?;
    crate::certs::cluster_init(&cfg, false)?;
    Ok(cfg)
}

/// Starts every node of `cfg` here and waits until each sees all the others up.
pub fn start_all(cfg: &MeshConfig, log: impl Fn(&str) -> LogSink) -> Result<Vec<MeshNode>, String> {
    let mut nodes = Vec::new();
    for n in &cfg.nodes {
        nodes.push(MeshNode::start(cfg, &n.name, NodeOptions { log: log(&n.name), workers: None, operators: Some(server()) })?);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !nodes.iter().all(|m| cfg.nodes.iter().all(|n| n.name == m.name() || m.peer_up(&n.name))) {
        if std::time::Instant::now() > deadline {
            return Err("the nodes did not all connect within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(nodes)
}

/// A string as a message (what the demo's programs are told).
fn text_message(t: &str) -> tern_vm::message::Message {
    tern_vm::message::Message { root: tern_vm::message::Val::Obj(0), objs: vec![tern_vm::message::Obj::Str(t.into())] }
}

/// A program of the demo started on node `a` with a console of its own, whose lines
/// are printed indented as they come.
struct DemoRun {
    pid: u64,
    console: u64,
    /// Its line that starts with "stopped" (empty if it failed).
    done: std::sync::mpsc::Receiver<String>,
    printer: std::thread::JoinHandle<()>,
}

impl DemoRun {
    fn start(a: &MeshNode, file: &str, source: &str) -> Result<DemoRun, String> {
        let program = compile_text(file, source).map_err(|e| e.rendered)?;
        for m in &program.modules {
            a.node().vm().load(m.clone()).map_err(|e| e.to_string())?;
        }
        let (console, mut out) = a.open_console();
        let pid = a.node().spawn_main_on(program.main, console, false).map_err(|e| e.to_string())?;
        let (done_tx, done) = std::sync::mpsc::channel();
        let printer = std::thread::spawn(move || {
            while let Some(CtlReply::Output { text, failed, pid }) = out.blocking_recv() {
                if failed {
                    println!("<pid {}> failed: {}", name_text(pid), text.trim_end());
                    let _ = done_tx.send(String::new());
                } else {
                    print!("  | {text}");
                    let _ = std::io::stdout().flush();
                    if text.starts_with("stopped") {
                        let _ = done_tx.send(text);
                    }
                }
            }
        });
        Ok(DemoRun { pid, console, done, printer })
    }

    /// Waits (up to 30 s) for its "stopped" line, which it returns (empty if none came),
    /// and closes its console.
    fn finish(self, a: &MeshNode) -> String {
        let last = self.done.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        std::thread::sleep(Duration::from_millis(100));
        a.close_console(self.console);
        let _ = self.printer.join();
        last
    }
}

/// The demo's second part: a running process moved around the mesh with each mechanism
/// while it writes to a small part of its heap, then once more with pre-copy while it
/// writes all over it (pre-copy's worst case), each report explained.
fn demo_migrations(nodes: &[MeshNode]) -> Result<(), String> {
    println!("Live migration: examples/mesh/migrating.tern holds 4 MiB of heap and keeps writing to a small part");
    println!("of it (8 pages) while it is moved with each mechanism; then, writing all over its heap, once more.");
    println!("A report follows each move; ↳ lines say what its numbers mean.\n");
    // Each mechanism once; then, writing all over its heap, the mesh picks (`auto`).
    let moves = [
        ("a", "b", Some(Mechanism::Freeze), false),
        ("b", "c", Some(Mechanism::Precopy), false),
        ("c", "a", Some(Mechanism::Lazy), false),
        ("a", "b", Some(Mechanism::Hybrid), false),
        ("b", "c", None, true),
    ];
    let a = &nodes[0];
    let run = DemoRun::start(a, "migrating.tern", include_str!("../../../examples/mesh/migrating.tern"))?;
    let pid = run.pid;
    std::thread::sleep(Duration::from_millis(300));
    let by_name = |n: &str| nodes.iter().find(|m| m.name() == n);
    let mut result = Ok(());
    let mut freeze_us = None;
    for (at, to, mech, heavy) in moves {
        let from = by_name(at).ok_or("no such node")?;
        if heavy {
            println!("Now the process writes all over its 4 MiB, every page every millisecond: pre-copy's worst case (its");
            println!("rounds would never catch up). This move leaves the choice to the mesh, as every move does by default.");
            from.node().send_to(pid, text_message("heavy")).map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(300));
        }
        let choice = match mech {
            Some(m) => {
                println!("{at} → {to} by {m}: {}", mechanism_sentence(m));
                m.into()
            }
            None => {
                println!(
                    "{at} → {to} by auto: the mesh picks the mechanism from the heap's size, how fast the process writes and the link's speed"
                );
                Choice::Auto
            }
        };
        let mech = mech.map_or_else(|| "auto".to_string(), |m| m.to_string());
        match from.migrate(pid, to, Some(choice)) {
            Ok(r) => {
                std::thread::sleep(Duration::from_millis(150));
                print!("{}", report_table_explained(&r));
                if r.mechanism == Mechanism::Freeze {
                    freeze_us = Some(r.freeze_time_us);
                }
                if let Some(moral) = precopy_moral(&r, freeze_us) {
                    println!("  {moral}");
                }
                println!();
                if !r.ok {
                    result = Err(format!("the {mech} migration failed: {}", r.outcome));
                    break;
                }
            }
            Err(e) => {
                result = Err(format!("the {mech} migration failed: {e}"));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    a.node().send_to(pid, text_message("stop")).map_err(|e| e.to_string())?;
    let stopped = !run.finish(a).is_empty();
    println!();
    result?;
    if !stopped {
        return Err("the migrated process did not stop cleanly".into());
    }
    Ok(())
}

/// The policy settings of the demo's third part: the defaults' rules, with shorter
/// windows and waits so that it takes seconds.
const DEMO_POLICY: [(&str, &str); 6] = [
    ("hysteresis_ms", "300"),
    ("residence_ms", "800"),
    ("interval_ms", "100"),
    ("gossip_ms", "50"),
    ("window_ms", "400"),
    ("mode", "balance"),
];

/// How many processes each node runs, `but` not counted.
fn spread_of(nodes: &[MeshNode], but: u64) -> Vec<(String, usize)> {
    nodes.iter().map(|m| (m.name().to_string(), m.node().ps().iter().filter(|p| p.pid != but).count())).collect()
}

/// The demo's third part: work piled on node a spreads over the mesh by the load
/// policy, each of its moves printed with its reason (`show` makes the nodes' logs print
/// them), then the workers' results checked.
fn demo_policy(nodes: &[MeshNode], show: &AtomicBool) -> Result<(), String> {
    println!("The load policy: examples/mesh/spread.tern starts 6 CPU-bound workers on node a, and the policy is");
    println!("turned on (mode balance; shorter windows and waits than the defaults, so that this takes seconds).");
    println!("Each node looks at its load and its peers'; a busy one moves work to one with room, and says why:\n");
    let a = &nodes[0];
    let run = DemoRun::start(a, "spread.tern", include_str!("../../../examples/mesh/spread.tern"))?;
    let pid = run.pid;
    std::thread::sleep(Duration::from_millis(200));
    show.store(true, std::sync::atomic::Ordering::SeqCst);
    let set = |key: &str, value: &str| -> Result<(), String> {
        let change = PolicyChange::Set { key: key.into(), value: value.into() };
        nodes.iter().try_for_each(|m| m.policy(Some(&change), 0).map(|_| ()))
    };
    let mut result = DEMO_POLICY.iter().try_for_each(|(k, v)| set(k, v));
    // Spread: every node runs some, and nothing has moved for two seconds.
    let t0 = std::time::Instant::now();
    let mut last = spread_of(nodes, pid);
    let mut since = std::time::Instant::now();
    while result.is_ok() && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        let now = spread_of(nodes, pid);
        if now != last {
            last = now;
            since = std::time::Instant::now();
        } else if since.elapsed() > Duration::from_secs(2) && last.iter().all(|(_, k)| *k > 0) {
            break;
        }
    }
    let _ = set("mode", "off");
    show.store(false, std::sync::atomic::Ordering::SeqCst);
    let at: Vec<String> = last.iter().map(|(n, k)| format!("{n} {k}")).collect();
    if result.is_ok() && !last.iter().all(|(_, k)| *k > 0) {
        result = Err(format!("the policy did not spread the work within 30 s: {}", at.join(", ")));
    }
    println!("\nsettled after {:.1} s: workers on {}; the policy is off again.", since.duration_since(t0).as_secs_f64(), at.join(", "));
    a.node().send_to(pid, text_message("stop")).map_err(|e| e.to_string())?;
    let last_line = run.finish(a);
    println!();
    result?;
    if !last_line.contains("6 of 6 results right") {
        return Err(format!("the workers' results: {:?}", last_line.trim_end()));
    }
    Ok(())
}

/// What a mechanism does, in one sentence for the demo.
fn mechanism_sentence(m: Mechanism) -> &'static str {
    match m {
        Mechanism::Freeze => "the process is stopped, its whole heap sent, and it runs on at the destination",
        Mechanism::Precopy => {
            "the heap is copied while the process runs; then it is stopped and only the pages it wrote to meanwhile are sent"
        }
        Mechanism::Lazy => "the process is stopped only to send its state; it runs on at once and its pages follow on demand",
        Mechanism::Hybrid => "pre-copy rounds while the process runs at full speed, as long as they shrink what it dirtied; then as lazy: the rest follows on demand",
    }
}

/// The demo's last word on a pre-copy report, from its numbers (and the freeze time of
/// the move by freezing, `freeze_us`): why it went as it did.
fn precopy_moral(r: &MigReport, freeze_us: Option<u64>) -> Option<String> {
    if r.mechanism != Mechanism::Precopy || r.heap_pages == 0 {
        return None;
    }
    let share = 100.0 * r.redundant_pages as f64 / r.heap_pages as f64;
    let against = freeze_us.map(|f| format!(" (freeze stopped it for {f} µs)")).unwrap_or_default();
    let moral = if share < 50.0 {
        format!(
            "In short: most of the heap was copied once while the process ran, only {} pages ({share:.1} % of the heap) went \
             twice, and the process was stopped for {} µs{against}.",
            r.redundant_pages, r.freeze_time_us
        )
    } else {
        format!(
            "In short: the process dirtied pages faster than they could be sent, so {} pages ({:.1} times the heap) were \
             sent for nothing and it was still stopped for {} µs{against}: for such a process lazy or hybrid is the choice.",
            r.redundant_pages,
            share / 100.0,
            r.freeze_time_us
        )
    };
    Some(crate::ops::report::wrap(&moral, 96).join("\n  "))
}

/// `tern demo`: a 3-node mesh on loopback, from a built-in config with certificates in a
/// temporary directory; a program on node a that works with all three.
pub fn demo() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let cfg = loopback_mesh(dir.path(), 3, "")?;
    println!("Tern demo: a mesh of 3 nodes on loopback (QUIC, mutual TLS with a cluster CA made just now):");
    for n in &cfg.nodes {
        println!("  node {} at {}", n.name, n.addr);
    }
    let logs: Arc<parking_lot::Mutex<Vec<String>>> = Arc::default();
    // The policy's moves are printed as they are made while the demo shows it.
    let show = Arc::new(AtomicBool::new(false));
    let nodes = start_all(&cfg, |name| {
        let logs = logs.clone();
        let show = show.clone();
        let name = name.to_string();
        Arc::new(move |line: &str| {
            if show.load(std::sync::atomic::Ordering::SeqCst) && line.starts_with("policy: moving") {
                let text = format!("node {name}: {}", &line["policy: ".len()..]);
                println!("  {}", crate::ops::report::wrap(&text, 100).join("\n      "));
            }
            logs.lock().push(format!("{name}| {line}"))
        })
    })?;
    println!("all three connected; starting examples/mesh/demo.tern on node a:\n");
    let program = compile_text("demo.tern", include_str!("../../../examples/mesh/demo.tern")).map_err(|e| e.rendered)?;
    let a = &nodes[0];
    for m in &program.modules {
        a.node().vm().load(m.clone()).map_err(|e| e.to_string())?;
    }
    let (console, mut out) = a.open_console();
    let pid = a.node().spawn_main_on(program.main, console, true).map_err(|e| e.to_string())?;
    let printer = std::thread::spawn(move || {
        while let Some(CtlReply::Output { text, failed, pid }) = out.blocking_recv() {
            if failed {
                eprintln!("<pid {}> failed: {}", name_text(pid), text.trim_end());
            } else {
                print!("{text}");
                let _ = std::io::stdout().flush();
            }
        }
    });
    let exit = a.node().wait_exit(pid, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(100));
    a.close_console(console);
    let _ = printer.join();
    println!();
    let moved = demo_migrations(&nodes).and_then(|()| demo_policy(&nodes, &show));
    for m in &nodes {
        let s = m.stats();
        println!(
            "node {}: {} module{} sent ({} bytes), {} received; {} frames from peers",
            m.name(),
            s.modules_sent.load(std::sync::atomic::Ordering::Relaxed),
            if s.modules_sent.load(std::sync::atomic::Ordering::Relaxed) == 1 { "" } else { "s" },
            s.module_bytes_sent.load(std::sync::atomic::Ordering::Relaxed),
            s.modules_received.load(std::sync::atomic::Ordering::Relaxed),
            s.ops_received.load(std::sync::atomic::Ordering::Relaxed),
        );
    }
    for m in nodes {
        m.shutdown();
    }
    if let Err(e) = moved {
        for l in logs.lock().iter() {
            eprintln!("{l}");
        }
        return Err(e);
    }
    match exit {
        Some(e) if e.reason.is_normal() => {
            println!("the mesh shut down cleanly.");
            Ok(())
        }
        Some(e) => Err(format!("the demo program ended: {}", e.reason.text())),
        None => {
            for l in logs.lock().iter() {
                eprintln!("{l}");
            }
            Err("the demo program did not finish within 60 s".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_hooks_come_from_the_environment_only_when_asked_for() {
        let env =
            |pairs: &'static [(&'static str, &'static str)]| move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        assert!(test_hooks_from_env(env(&[])).is_none());
        assert!(test_hooks_from_env(env(&[("TERN_TEST_NO_PUSH", "0"), ("TERN_TEST_HOLD_LATE_MS", "x")])).is_none());
        let h = test_hooks_from_env(env(&[("TERN_TEST_NO_PUSH", "1")])).unwrap();
        assert!(h.no_push && h.hold_late_ms == 0 && !h.stall_before_ready && !h.hold_before_ready);
        let h = test_hooks_from_env(env(&[("TERN_TEST_HOLD_LATE_MS", "2500")])).unwrap();
        assert!(!h.no_push && h.hold_late_ms == 2500);
        let h = test_hooks_from_env(env(&[("TERN_TEST_LOSE_PAGE", "0")])).unwrap();
        assert_eq!(h.lose_page_install, Some(0));
    }
}
