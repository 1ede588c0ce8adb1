//! The operator protocol: `tern ctl` and `tern repl` connect to a node with the
//! operator certificate (`ctl`) on ALPN `tern-ctl/1`, and send one [`CtlRequest`] per
//! bidirectional stream. A connection is also a console: output of the processes it
//! started (and of theirs, wherever they run) comes back on its `Console` stream.
//!
//! Both ends are here: [`server`] (what a node answers, given to it at start as its
//! [`OperatorServer`]; it works through the node's [`Host`] methods) and [`CtlClient`].

use crate::config::MeshConfig;
use crate::node::{ConsoleTx, Host, OperatorServer};
use crate::proto::wire::{self, Answer, CtlReply, CtlRequest, LineOutcome, NodeRow, PolicyChange, PsRow, Query, TopNode};
use crate::tls::{self, Role};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tern_vm::node::{ExitReason, ShellEnd};
use tokio::sync::mpsc;

/// Largest operator frame (a program's modules).
pub const MAX_CTL_FRAME: usize = 64 << 20;

async fn read_frame(recv: &mut quinn::RecvStream, max: usize) -> Result<Option<Vec<u8>>, String> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    }
    let n = u32::from_le_bytes(len) as usize;
    if n > max {
        return Err(format!("frame of {n} bytes is over the limit of {max}"));
    }
    let mut buf = vec![0u8; n];
    recv.read_exact(&mut buf).await.map_err(|e| format!("truncated frame: {e}"))?;
    Ok(Some(buf))
}

async fn write_frame<T: serde::Serialize>(send: &mut quinn::SendStream, v: &T) -> Result<(), String> {
    let b = wire::encode(v);
    let mut out = Vec::with_capacity(b.len() + 4);
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(&b);
    send.write_all(&out).await.map_err(|e| format!("cannot write: {e}"))
}

/// What a node serves operators with.
pub fn server() -> OperatorServer {
    Arc::new(|host, conn, name, role| Box::pin(serve(host, conn, Arc::new(Who { name, role }))))
}

/// Who is on an operator connection: its certificate's name and role.
struct Who {
    name: String,
    role: Role,
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.role.name(), self.name)
    }
}

/// What an observer may ask: to look, never to change anything.
fn observer_may(req: &CtlRequest) -> bool {
    matches!(
        req,
        CtlRequest::Nodes | CtlRequest::Ps { .. } | CtlRequest::Top { .. } | CtlRequest::Policy { change: None, .. } | CtlRequest::Metrics
    )
}

/// What the node logs of a request, with who asked (what changes the mesh; looking is
/// not logged).
fn logged_action(req: &CtlRequest) -> Option<String> {
    let pid = |p: u64| format!("<pid {}>", tern_vm::value::name_text(p));
    Some(match req {
        CtlRequest::Spawn { on, wait, .. } => {
            format!(
                "spawn a program{}{}",
                on.as_ref().map(|n| format!(" on {n}")).unwrap_or_default(),
                if *wait { ", waiting for it" } else { "" }
            )
        }
        CtlRequest::Kill { pid: p } => format!("kill {}", pid(*p)),
        CtlRequest::Resolve { pid: p, resume } => {
            format!("resolve the move in doubt of {}: {}", pid(*p), if *resume { "resume it" } else { "end it" })
        }
        CtlRequest::Migrate { pid: p, to, .. } => format!("migrate {} to {to}", pid(*p)),
        CtlRequest::Shell { .. } => "open a REPL shell".into(),
        CtlRequest::Policy { change: Some(c), .. } => format!("change the policy: {c:?}"),
        CtlRequest::Drain { on } => (if *on { "drain this node" } else { "undrain this node" }).into(),
        CtlRequest::Eval { shell, .. } => format!("run a line in its REPL shell {}", pid(*shell)),
        CtlRequest::Interrupt { shell } => format!("interrupt its REPL shell {}", pid(*shell)),
        CtlRequest::Input { .. } => "type a line to its console".into(),
        _ => return None,
    })
}

/// Serves one operator connection.
async fn serve(sh: Arc<Host>, conn: quinn::Connection, who: Arc<Who>) {
    let console = sh.node().new_pid();
    // The connection's REPL shell processes: they end with it.
    let shells: Shells = Arc::new(parking_lot::Mutex::new(Vec::new()));
    while let Ok((send, recv)) = conn.accept_bi().await {
        let sh = sh.clone();
        let shells = shells.clone();
        let who = who.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(sh.clone(), &who, console, &shells, send, recv).await {
                tracing::debug!(node = %sh.me().name, "operator request failed: {e}");
            }
        });
    }
    for pid in shells.lock().drain(..) {
        sh.node().kill(pid, "its REPL left");
    }
    sh.close_console(console);
}

type Shells = Arc<parking_lot::Mutex<Vec<u64>>>;

async fn handle(
    sh: Arc<Host>,
    who: &Who,
    console: u64,
    shells: &Shells,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Result<(), String> {
    let Some(bytes) = read_frame(&mut recv, MAX_CTL_FRAME).await? else { return Ok(()) };
    let req: CtlRequest = match wire::decode(&bytes, MAX_CTL_FRAME) {
        Ok(r) => r,
        Err(e) => {
            write_frame(&mut send, &CtlReply::Error(format!("bad request: {e}"))).await?;
            return Ok(());
        }
    };
    if who.role == Role::Observer && !observer_may(&req) {
        let what = logged_action(&req).unwrap_or_else(|| "do that".into());
        sh.log(&format!("refused {who}: {what} (an observer may only look)"));
        let e = format!("{who} may not {what}: an observer's certificate can only look (nodes, ps, top, policy); ask an operator");
        write_frame(&mut send, &CtlReply::Error(e)).await?;
        return Ok(());
    }
    if let Some(what) = logged_action(&req) {
        sh.log(&format!("{who}: {what}"));
    }
    match req {
        CtlRequest::Console => {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let entry = ConsoleTx::new(tx);
            sh.open_console(console, entry.clone());
            write_frame(&mut send, &CtlReply::Done).await?;
            while let Some(line) = rx.recv().await {
                if write_frame(&mut send, &line).await.is_err() {
                    break;
                }
                entry.wrote();
            }
            sh.close_console(console);
            return Ok(());
        }
        CtlRequest::Input { line } => {
            sh.console_input(console, line);
            write_frame(&mut send, &CtlReply::Done).await?;
        }
        CtlRequest::Nodes => {
            let rows = node_rows(&sh);
            write_frame(&mut send, &CtlReply::Nodes(rows)).await?;
        }
        CtlRequest::Ps { node } => {
            let sh2 = sh.clone();
            let reply = tokio::task::spawn_blocking(move || ps(&sh2, node.as_deref())).await.unwrap_or_else(|e| Err(e.to_string()));
            write_frame(&mut send, &reply.map_or_else(CtlReply::Error, CtlReply::Ps)).await?;
        }
        CtlRequest::Migrate { pid, to, how } => {
            if sh.node().is_local(pid) {
                // Here: progress while it runs, then the report.
                match sh.start_migration(pid, &to, how) {
                    Ok(h) => loop {
                        let done = h.done.clone();
                        match tokio::task::spawn_blocking(move || done.recv_timeout(Duration::from_millis(200))).await {
                            Ok(Ok(report)) => {
                                write_frame(&mut send, &CtlReply::Migrated(Box::new(report))).await?;
                                break;
                            }
                            Ok(Err(crossbeam_channel::RecvTimeoutError::Timeout)) => {
                                let p = &h.progress;
                                let reply = CtlReply::Progress {
                                    sent: p.sent_pages.load(Ordering::Relaxed),
                                    total: p.total_pages.load(Ordering::Relaxed),
                                    phase: p.phase.lock().clone(),
                                };
                                write_frame(&mut send, &reply).await?;
                            }
                            _ => {
                                write_frame(&mut send, &CtlReply::Error("the migration ended without a report".into())).await?;
                                break;
                            }
                        }
                    },
                    Err(e) => write_frame(&mut send, &CtlReply::Error(e)).await?,
                }
            } else {
                // On another node (or nowhere): asked there, on a blocking thread, one of a
                // bounded number.
                let r = match sh.migration_waiter() {
                    Ok(slot) => {
                        let sh2 = sh.clone();
                        tokio::task::spawn_blocking(move || {
                            let _slot = slot;
                            sh2.migrate_and_wait(pid, &to, how)
                        })
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()))
                    }
                    Err(e) => Err(e),
                };
                let reply = match r {
                    Ok(rep) => CtlReply::Migrated(Box::new(rep)),
                    Err(e) => CtlReply::Error(e),
                };
                write_frame(&mut send, &reply).await?;
            }
        }
        CtlRequest::Kill { pid } => {
            // Only a process some node lists: else say so (it ended, or never was).
            let sh2 = sh.clone();
            let rows = tokio::task::spawn_blocking(move || ps(&sh2, None)).await.unwrap_or_else(|e| Err(e.to_string()));
            let reply = match rows {
                Ok(rows) if rows.iter().any(|r| r.pid == pid && r.status != "exited") => {
                    sh.node().kill(pid, "killed");
                    CtlReply::Done
                }
                Ok(_) => CtlReply::Error(format!(
                    "there is no process <pid {}> on any node up (it has ended, or never was)",
                    tern_vm::value::name_text(pid)
                )),
                Err(e) => CtlReply::Error(format!("cannot list the processes to find <pid {}>: {e}", tern_vm::value::name_text(pid))),
            };
            write_frame(&mut send, &reply).await?;
        }
        CtlRequest::Shell { modules, main } => {
            let reply = match sh.load_modules(&modules).and_then(|hashes| {
                if !hashes.contains(&main) {
                    return Err("the main module is not among the modules sent".to_string());
                }
                sh.node().spawn_shell(main, console).map_err(|e| e.to_string())
            }) {
                Ok(pid) => {
                    shells.lock().push(pid);
                    CtlReply::Spawned { pid, node: sh.me().name.clone() }
                }
                Err(e) => CtlReply::Error(e),
            };
            write_frame(&mut send, &reply).await?;
        }
        CtlRequest::Eval { shell, modules, main } => {
            let reply = if !shells.lock().contains(&shell) {
                CtlReply::Error(format!("<pid {}> is not a shell of this connection", tern_vm::value::name_text(shell)))
            } else {
                let sh2 = sh.clone();
                tokio::task::spawn_blocking(move || eval_line(&sh2, console, shell, &modules, main))
                    .await
                    .unwrap_or_else(|e| CtlReply::Error(e.to_string()))
            };
            write_frame(&mut send, &reply).await?;
        }
        CtlRequest::Interrupt { shell } => {
            let reply = if shells.lock().contains(&shell) {
                // The line ends with an error; should that fail (it did not reach a
                // safepoint in time), the shell process ends instead.
                let sh2 = sh.clone();
                let r = tokio::task::spawn_blocking(move || sh2.node().shell_interrupt(shell, Duration::from_secs(2)))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                if r.is_err() {
                    sh.node().kill(shell, "interrupted");
                }
                CtlReply::Done
            } else {
                CtlReply::Error(format!("<pid {}> is not a shell of this connection", tern_vm::value::name_text(shell)))
            };
            write_frame(&mut send, &reply).await?;
        }
        CtlRequest::Top { procs } => {
            let sh2 = sh.clone();
            let reply = tokio::task::spawn_blocking(move || top(&sh2, procs)).await.unwrap_or_else(|e| Err(e.to_string()));
            write_frame(&mut send, &reply.map_or_else(CtlReply::Error, CtlReply::Top)).await?;
        }
        CtlRequest::Policy { change, decisions } => {
            let sh2 = sh.clone();
            let reply = tokio::task::spawn_blocking(move || policy(&sh2, change, decisions))
                .await
                .unwrap_or_else(|e| CtlReply::Error(e.to_string()));
            write_frame(&mut send, &reply).await?;
        }
        CtlRequest::Resolve { pid, resume } => {
            let reply = match sh.resolve_in_doubt(pid, resume) {
                Ok(done) => CtlReply::Resolved(done),
                Err(e) => CtlReply::Error(e),
            };
            write_frame(&mut send, &reply).await?;
        }
        CtlRequest::Metrics => {
            let sh2 = sh.clone();
            let reply = tokio::task::spawn_blocking(move || metrics(&sh2)).await.unwrap_or_else(|e| CtlReply::Error(e.to_string()));
            write_frame(&mut send, &reply).await?;
        }
        CtlRequest::Drain { on: false } => {
            sh.set_accepting(true);
            sh.log("drain: ended; this node takes new processes again");
            write_frame(&mut send, &CtlReply::Done).await?;
        }
        CtlRequest::Drain { on: true } => {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let sh2 = sh.clone();
            let job = tokio::task::spawn_blocking(move || {
                let r = sh2.drain(|done, total, line| {
                    let _ = tx.send(CtlReply::Draining { done, total, line: line.to_string() });
                });
                let _ = tx.send(r.map_or_else(CtlReply::Error, CtlReply::Drained));
            });
            while let Some(reply) = rx.recv().await {
                write_frame(&mut send, &reply).await?;
            }
            let _ = job.await;
        }
        CtlRequest::Spawn { modules, main, on, wait } => {
            let sh2 = sh.clone();
            let reply = tokio::task::spawn_blocking(move || spawn(&sh2, console, &modules, main, on.as_deref(), wait))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            match reply {
                Ok((pid, node)) => {
                    write_frame(&mut send, &CtlReply::Spawned { pid, node: node.clone() }).await?;
                    if wait {
                        let sh2 = sh.clone();
                        let ended = tokio::task::spawn_blocking(move || wait_exit(&sh2, console, pid)).await.map_err(|e| e.to_string())?;
                        write_frame(&mut send, &ended).await?;
                    }
                }
                Err(e) => write_frame(&mut send, &CtlReply::Error(e)).await?,
            }
        }
    }
    let _ = send.finish();
    // Let the reply reach the client before the stream is dropped.
    let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
    Ok(())
}

fn node_rows(sh: &Host) -> Vec<NodeRow> {
    sh.config()
        .nodes
        .iter()
        .map(|n| {
            let up = sh.is_up(n.id);
            let load = if n.id == sh.me().id { sh.own_load() } else { sh.peer_load(n.id).0 };
            NodeRow {
                name: n.name.clone(),
                addr: n.addr.to_string(),
                status: if up { "up" } else { "down" }.into(),
                processes: if up { load.processes } else { 0 },
                load: if up { load.reductions_per_s } else { 0 },
                migrations: if up { load.migrations } else { 0 },
            }
        })
        .collect()
}

/// Every node's `top`, this one's first. Nodes whose processes were not being measured
/// (the policy off) start now: they are asked again a window later.
fn top(sh: &Host, procs: u32) -> Result<Vec<TopNode>, String> {
    let ask = |id: u16| -> Result<TopNode, String> {
        if id == sh.me().id {
            return Ok(sh.top(procs));
        }
        match sh.ask(id, Query::Top { procs }, Duration::from_secs(10))? {
            Answer::Top(t) => Ok(t),
            _ => Err("unexpected answer".into()),
        }
    };
    let ids: Vec<u16> = sh.config().nodes.iter().map(|n| n.id).filter(|&id| sh.is_up(id) || id == sh.me().id).collect();
    let mut all = ids.iter().map(|&id| ask(id)).collect::<Result<Vec<_>, _>>()?;
    if all.iter().any(|t| !t.measured) {
        let conf = sh.policy_conf();
        std::thread::sleep(Duration::from_millis(conf.window_ms + 2 * conf.gossip_ms));
        all = ids.iter().map(|&id| ask(id)).collect::<Result<Vec<_>, _>>()?;
    }
    Ok(all)
}

/// Asks every other node that is up `query()`; `take` reads its answer (`Err`: what it
/// said instead). The views, and what went wrong, each naming its node.
fn ask_others<T>(sh: &Host, query: impl Fn() -> Query, take: impl Fn(Answer) -> Result<T, String>) -> (Vec<T>, Vec<String>) {
    let (mut views, mut errors) = (Vec::new(), Vec::new());
    for n in sh.config().nodes.iter().filter(|n| n.id != sh.me().id) {
        if !sh.is_up(n.id) {
            errors.push(format!("node {} is down", n.name));
            continue;
        }
        match sh.ask(n.id, query(), Duration::from_secs(10)).and_then(&take) {
            Ok(v) => views.push(v),
            Err(e) => errors.push(format!("node {}: {e}", n.name)),
        }
    }
    (views, errors)
}

/// `tern ctl policy`: the change made here first (so a bad one is refused before any
/// node has it), then on every other node that is up; every node's policy after it.
fn policy(sh: &Host, change: Option<PolicyChange>, decisions: u32) -> CtlReply {
    let mine = match sh.policy_query(change.as_ref(), decisions) {
        Ok(v) => v,
        Err(e) => return CtlReply::Error(e),
    };
    let (others, errors) = ask_others(
        sh,
        || Query::Policy { change: change.clone(), decisions },
        |a| match a {
            Answer::Policy(r) => r,
            _ => Err("unexpected answer".into()),
        },
    );
    CtlReply::Policy { views: std::iter::once(mine).chain(others).collect(), errors }
}

/// Every node's metrics: this one's, then those of the others that are up.
fn metrics(sh: &Host) -> CtlReply {
    let (others, errors) = ask_others(
        sh,
        || Query::Metrics,
        |a| match a {
            Answer::Metrics(v) => Ok(*v),
            _ => Err("unexpected answer".into()),
        },
    );
    CtlReply::Metrics { views: std::iter::once(sh.metrics()).chain(others).collect(), errors }
}

fn ps(sh: &Host, node: Option<&str>) -> Result<Vec<PsRow>, String> {
    let ask = |id: u16| -> Result<Vec<PsRow>, String> {
        if id == sh.me().id {
            return Ok(sh.ps_rows());
        }
        match sh.ask(id, Query::Ps, Duration::from_secs(10))? {
            Answer::Ps(rows) => Ok(rows),
            _ => Err("unexpected answer".into()),
        }
    };
    match node {
        Some(name) => {
            let n = sh.config().node(name).ok_or_else(|| format!("there is no node {name:?} in the mesh"))?;
            ask(n.id)
        }
        None => {
            let mut all = Vec::new();
            for n in &sh.config().nodes {
                if sh.is_up(n.id) {
                    all.extend(ask(n.id)?);
                }
            }
            Ok(all)
        }
    }
}

fn spawn(
    sh: &Host,
    console: u64,
    modules: &[Vec<u8>],
    main: tern_vm::bytecode::ModuleHash,
    on: Option<&str>,
    wait: bool,
) -> Result<(u64, String), String> {
    let hashes = sh.load_modules(modules)?;
    if !hashes.contains(&main) {
        return Err("the main module is not among the modules sent".into());
    }
    let target = match on {
        None => sh.me().clone(),
        Some("any") if !wait => {
            let id = sh.place_new().ok_or("no node is up and taking new processes (all are drained)")?;
            sh.config().nodes.iter().find(|n| n.id == id).ok_or("the chosen node is not in the config")?.clone()
        }
        Some("any") => sh.me().clone(),
        Some(name) => sh.config().node(name).ok_or_else(|| format!("there is no node {name:?} in the mesh"))?.clone(),
    };
    // (A node that is drained refuses it itself.) A program run attached to the node
    // talked to (`spawn --wait` without `--on`, `send`'s one-line sender) is the
    // operator's own, and runs there all the same.
    if target.id == sh.me().id && !sh.accepting() && !(on.is_none() && wait) {
        return Err(format!("node {0} is drained: it takes no new processes (tern ctl undrain {0})", target.name));
    }
    if target.id == sh.me().id {
        if let Some(why) = sh.node().process_limit_reached() {
            return Err(why);
        }
        let pid = sh.node().spawn_main_on(main, console, wait).map_err(|e| e.to_string())?;
        return Ok((pid, target.name));
    }
    if wait {
        return Err("--wait needs the process to run on the node the operator is connected to".into());
    }
    match sh.ask(target.id, Query::SpawnMain { main, needs: hashes, console }, Duration::from_secs(30))? {
        Answer::Spawned(Ok(pid)) => Ok((pid, target.name)),
        Answer::Spawned(Err(e)) => Err(format!("node {}: {e}", target.name)),
        _ => Err("unexpected answer".into()),
    }
}

/// Waits for a process to end, then for the output it queued on the console to be
/// written; the answer says how many console lines precede it.
fn wait_exit(sh: &Host, console: u64, pid: u64) -> CtlReply {
    loop {
        if sh.is_shutting_down() {
            return CtlReply::Error("the node is shutting down".into());
        }
        if let Some(e) = sh.node().wait_exit(pid, Duration::from_millis(500)) {
            let lines = console_written(sh, console);
            return CtlReply::Ended { pid, reason: e.reason.text(), failed: matches!(e.reason, ExitReason::Failed(_)), lines };
        }
    }
}

/// Waits (a little) for the output queued on a console to be written; how many lines
/// have been.
fn console_written(sh: &Host, console: u64) -> u64 {
    match sh.console(console) {
        Some(c) => {
            let queued = c.queued();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while c.written() < queued && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            c.written()
        }
        None => 0,
    }
}

/// Has shell process `shell` run module `main` (a line typed at a REPL), and waits for
/// the line to end.
fn eval_line(sh: &Host, console: u64, shell: u64, modules: &[Vec<u8>], main: tern_vm::bytecode::ModuleHash) -> CtlReply {
    let hashes = match sh.load_modules(modules) {
        Ok(h) => h,
        Err(e) => return CtlReply::Error(e),
    };
    if !hashes.contains(&main) {
        return CtlReply::Error("the main module is not among the modules sent".into());
    }
    let ticket = match sh.node().shell_eval(shell, main, Duration::from_secs(10)) {
        Ok(t) => t,
        Err(e) => return CtlReply::Error(e),
    };
    loop {
        if sh.is_shutting_down() {
            return CtlReply::Error("the node is shutting down".into());
        }
        if let Some(end) = sh.node().shell_wait(shell, ticket, Duration::from_millis(500)) {
            let outcome = match end {
                ShellEnd::Done => LineOutcome::Done,
                ShellEnd::Failed(e) => LineOutcome::Failed(e),
                ShellEnd::Exited(r) => LineOutcome::ShellEnded(r.text()),
            };
            return CtlReply::LineEnded { outcome, lines: console_written(sh, console) };
        }
    }
}

/// How long `tern ctl` and `tern repl` wait for a node to answer, unless told
/// (`--connect-timeout`). A node that is up answers on loopback or a LAN in
/// milliseconds; QUIC to an address where nothing listens gets no answer at all.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

/// How `tern ctl` and `tern repl` connect: with which control certificate, waiting how
/// long for a node to answer.
#[derive(Debug, Clone)]
pub struct ConnectOpts {
    pub timeout: Duration,
    /// `ctl` (the default), `PERSON.operator` or `PERSON.observer`.
    pub identity: String,
}

impl Default for ConnectOpts {
    fn default() -> Self {
        ConnectOpts { timeout: DEFAULT_CONNECT_TIMEOUT, identity: crate::config::CTL_NAME.into() }
    }
}

/// After the first node answers, how long the nodes before it in the config still get
/// (so a mesh that is up is reached at the same node each time).
const PREFER_EARLIER: Duration = Duration::from_millis(100);

/// Why a node could not be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unreachable {
    /// Nothing came back within the timeout (also what QUIC sees when nothing listens).
    NoAnswer,
    /// The node answered, but the TLS handshake failed (certificates of another
    /// cluster, or of another config).
    Tls(String),
    /// The node answered and closed or refused the connection, or the socket failed.
    Refused(String),
}

/// Connects to each candidate at once; the index and connection of the one chosen, or
/// why each could not be reached (in the candidates' order).
async fn connect_any(
    candidates: &[crate::config::NodeConf],
    client: quinn::ClientConfig,
    timeout: Duration,
) -> Result<(usize, quinn::Connection), Vec<Unreachable>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, n) in candidates.iter().enumerate() {
        let (addr, name, client) = (n.addr, n.name.clone(), client.clone());
        tasks.spawn(async move { (i, connect_one(addr, &name, client, timeout).await) });
    }
    let mut results: Vec<Option<Result<quinn::Connection, Unreachable>>> = candidates.iter().map(|_| None).collect();
    let mut deadline = tokio::time::Instant::now() + timeout + Duration::from_millis(200);
    loop {
        // The earliest in the config that answered, once every node before it is done.
        let first_ok = results.iter().position(|r| matches!(r, Some(Ok(_))));
        if let Some(i) = first_ok {
            if results[..i].iter().all(Option::is_some) {
                break;
            }
        }
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok((i, r)))) => {
                if r.is_ok() && first_ok.is_none() {
                    deadline = deadline.min(tokio::time::Instant::now() + PREFER_EARLIER);
                }
                results[i] = Some(r);
            }
            Ok(Some(Err(_))) => {}
            // All done, or out of time.
            Ok(None) | Err(_) => break,
        }
    }
    tasks.abort_all();
    let mut chosen = None;
    let mut why = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Some(Ok(conn)) if chosen.is_none() => chosen = Some((i, conn)),
            Some(Ok(conn)) => conn.close(0u32.into(), b"another node answered first"),
            Some(Err(e)) => why.push(e),
            None => why.push(Unreachable::NoAnswer),
        }
    }
    chosen.ok_or(why)
}

async fn connect_one(
    addr: std::net::SocketAddr,
    name: &str,
    client: quinn::ClientConfig,
    timeout: Duration,
) -> Result<quinn::Connection, Unreachable> {
    let bind: std::net::SocketAddr = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("an address");
    let mut ep = quinn::Endpoint::client(bind).map_err(|e| Unreachable::Refused(format!("cannot open a socket: {e}")))?;
    ep.set_default_client_config(client);
    let connecting = ep.connect(addr, name).map_err(|e| Unreachable::Refused(e.to_string()))?;
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(classify(&e)),
        Err(_) => Err(Unreachable::NoAnswer),
    }
}

/// A QUIC connection error as one of the reasons [`Unreachable`] tells apart; a refusal
/// in the TLS handshake in words (`tls::handshake_refusal`).
fn classify(e: &quinn::ConnectionError) -> Unreachable {
    if let Some(words) = tls::handshake_refusal(e, "the node", "this command's certificate") {
        return Unreachable::Tls(words);
    }
    match e {
        quinn::ConnectionError::TimedOut => Unreachable::NoAnswer,
        _ => Unreachable::Refused(e.to_string()),
    }
}

/// A duration as people write it: `1.5 s`, `2 s`, `300 ms`.
fn seconds_text(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{} ms", d.as_millis());
    }
    let s = format!("{:.3}", d.as_secs_f64());
    format!("{} s", s.trim_end_matches('0').trim_end_matches('.'))
}

/// The error when no candidate answered: every node tried, why, and a hint.
fn unreachable_text(
    cfg: &MeshConfig,
    node: Option<&str>,
    candidates: &[crate::config::NodeConf],
    why: &[Unreachable],
    timeout: Duration,
) -> String {
    let reason = |u: &Unreachable| match u {
        Unreachable::NoAnswer => format!("no answer within {}", seconds_text(timeout)),
        Unreachable::Tls(e) => e.clone(),
        Unreachable::Refused(e) => format!("refused ({e})"),
    };
    let config = cfg.file_label();
    let mut s = match (node, candidates, why) {
        (Some(_), [n], [u]) => format!("cannot reach node {} at {}: {}\n", n.name, n.addr, reason(u)),
        _ => {
            let mut s = format!("no node of {config} answered:\n");
            for (n, u) in candidates.iter().zip(why) {
                s += &format!("  cannot reach node {} at {}: {}\n", n.name, n.addr, reason(u));
            }
            s
        }
    };
    if why.iter().all(|u| matches!(u, Unreachable::Tls(_))) {
        s += &format!(
            "hint: the TLS handshake failed: were the certificates in {} made for this mesh (tern cluster init --config {config})?",
            cfg.cert_dir.display()
        );
    } else {
        s += &format!("hint: is the mesh running? start it with: tern mesh up --config {config}");
        if let Some(n) = node {
            s += &format!(" (or this node alone: tern node --config {config} --name {n})");
        }
    }
    s
}

/// An operator's connection to a node.
pub struct CtlClient {
    rt: tokio::runtime::Runtime,
    conn: quinn::Connection,
    console_lines: Arc<std::sync::atomic::AtomicU64>,
    /// The node connected to.
    pub node: String,
}

impl CtlClient {
    /// Connects to `node`, or to a node of the config that answers (all are tried at
    /// once; of those that answer within a moment of the first, the earliest in the
    /// config), waiting at most `timeout` for an answer. When none answers, the error
    /// names every node tried, its address and why, and ends with a hint.
    pub fn connect(cfg: &MeshConfig, node: Option<&str>, timeout: Duration) -> Result<CtlClient, String> {
        Self::connect_as(cfg, node, crate::config::CTL_NAME, timeout)
    }

    /// [`CtlClient::connect`] with the control certificate `identity`
    /// (`<cert_dir>/IDENTITY.pem`: `ctl`, `PERSON.operator` or `PERSON.observer`).
    pub fn connect_as(cfg: &MeshConfig, node: Option<&str>, identity: &str, timeout: Duration) -> Result<CtlClient, String> {
        tls::install_provider();
        if tls::control_role(identity).is_none() {
            return Err(format!(
                "{identity:?} is not a control certificate's name (ctl, PERSON.operator or PERSON.observer; `tern cluster cert` makes them)"
            ));
        }
        let client = tls::client_config(cfg, identity, tls::ALPN_CTL)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the network runtime: {e}"))?;
        let candidates: Vec<_> = match node {
            Some(n) => vec![cfg.node(n).ok_or_else(|| format!("there is no node {n:?} in {}", cfg.file_label()))?.clone()],
            None => cfg.nodes.clone(),
        };
        if candidates.is_empty() {
            return Err(format!("{} lists no node", cfg.file_label()));
        }
        let tried = rt.block_on(connect_any(&candidates, client, timeout));
        match tried {
            Ok((i, conn)) => Ok(CtlClient { rt, conn, node: candidates[i].name.clone(), console_lines: Arc::default() }),
            Err(why) => {
                rt.shutdown_timeout(Duration::from_millis(200));
                Err(unreachable_text(cfg, node, &candidates, &why, timeout))
            }
        }
    }

    /// Sends a request; calls `each` with every reply until the stream ends (or `each`
    /// returns false).
    pub fn request(&self, req: &CtlRequest, mut each: impl FnMut(CtlReply) -> bool) -> Result<(), String> {
        let conn = self.conn.clone();
        let r = self.rt.block_on(async move {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("connection lost: {e}"))?;
            write_frame(&mut send, req).await?;
            let _ = send.finish();
            while let Some(b) = read_frame(&mut recv, MAX_CTL_FRAME).await? {
                let r: CtlReply = wire::decode(&b, MAX_CTL_FRAME).map_err(|e| format!("bad reply: {e}"))?;
                if !each(r) {
                    break;
                }
            }
            Ok(())
        });
        r.map_err(|e| self.explain(e))
    }

    /// `e`, and why the node closed the connection if it did: it refused this
    /// certificate in the handshake (a TLS alert: not signed by the cluster's CA, not a
    /// name it takes, revoked) or closed it afterwards with a reason.
    fn explain(&self, e: String) -> String {
        let reason = self.conn.close_reason();
        if let Some(words) =
            reason.as_ref().and_then(|r| crate::tls::handshake_refusal(r, &format!("node {}", self.node), "this certificate"))
        {
            return words;
        }
        match reason {
            Some(quinn::ConnectionError::ApplicationClosed(c)) if !c.reason.is_empty() => {
                format!("node {} closed the connection: {}", self.node, String::from_utf8_lossy(&c.reason))
            }
            _ => e,
        }
    }

    /// From now on Ctrl-C (SIGINT) no longer ends this OS process: it is seen by
    /// [`CtlClient::call_interruptible`] while that waits, and ignored otherwise (a
    /// REPL's line editor reads Ctrl-C as a key).
    pub fn catch_interrupts(&self) -> Result<(), String> {
        let _rt = self.rt.enter();
        #[cfg(unix)]
        drop(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map_err(|e| format!("cannot catch Ctrl-C: {e}"))?);
        Ok(())
    }

    /// One request, one reply; each Ctrl-C while it waits sends `on_interrupt()` (on a
    /// stream of its own; its answer is not awaited) and goes on waiting for the reply.
    pub fn call_interruptible(&self, req: &CtlRequest, on_interrupt: impl Fn() -> CtlRequest) -> Result<CtlReply, String> {
        let conn = self.conn.clone();
        self.rt.block_on(async move {
            #[cfg(unix)]
            let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .map_err(|e| format!("cannot catch Ctrl-C: {e}"))?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("connection lost: {e}"))?;
            write_frame(&mut send, req).await?;
            let _ = send.finish();
            let reply = read_frame(&mut recv, MAX_CTL_FRAME);
            tokio::pin!(reply);
            loop {
                #[cfg(unix)]
                let interrupted = sigint.recv();
                #[cfg(not(unix))]
                let interrupted = async { tokio::signal::ctrl_c().await.ok() };
                tokio::select! {
                    r = &mut reply => {
                        let b = r?.ok_or("the node closed the stream without answering")?;
                        return wire::decode::<CtlReply>(&b, MAX_CTL_FRAME).map_err(|e| format!("bad reply: {e}"));
                    }
                    _ = interrupted => {
                        let (mut s, _r) = conn.open_bi().await.map_err(|e| format!("connection lost: {e}"))?;
                        write_frame(&mut s, &on_interrupt()).await?;
                        let _ = s.finish();
                    }
                }
            }
        })
    }

    /// One request, one reply.
    pub fn call(&self, req: &CtlRequest) -> Result<CtlReply, String> {
        let mut out = None;
        self.request(req, |r| {
            out = Some(r);
            false
        })?;
        out.ok_or_else(|| "the node closed the stream without answering".into())
    }

    /// Opens the console: `each` gets every output line, on a background thread, until
    /// the connection closes.
    pub fn open_console(&self, mut each: impl FnMut(u64, String, bool) + Send + 'static) -> Result<(), String> {
        let conn = self.conn.clone();
        let received = self.console_lines.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        self.rt.spawn(async move {
            let opened = async {
                let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("connection lost: {e}"))?;
                write_frame(&mut send, &CtlRequest::Console).await?;
                match read_frame(&mut recv, MAX_CTL_FRAME).await? {
                    Some(b) if wire::decode::<CtlReply>(&b, MAX_CTL_FRAME) == Ok(CtlReply::Done) => Ok((send, recv)),
                    _ => Err("the node did not open a console".to_string()),
                }
            };
            let (_send, mut recv) = match opened.await {
                Ok(x) => {
                    let _ = ready_tx.send(Ok(()));
                    x
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            while let Ok(Some(b)) = read_frame(&mut recv, MAX_CTL_FRAME).await {
                if let Ok(CtlReply::Output { pid, text, failed }) = wire::decode(&b, MAX_CTL_FRAME) {
                    each(pid, text, failed);
                    received.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).map_err(|_| "the node did not open a console".to_string())?
    }

    /// A function that sends a line to this connection's console input (`None`: its
    /// end), from any thread; false once the connection is gone.
    pub fn input_sender(&self) -> impl Fn(Option<String>) -> bool + Send + 'static {
        let conn = self.conn.clone();
        let rt = self.rt.handle().clone();
        move |line| {
            let conn = conn.clone();
            rt.block_on(async move {
                let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("connection lost: {e}"))?;
                write_frame(&mut send, &CtlRequest::Input { line }).await?;
                let _ = send.finish();
                read_frame(&mut recv, MAX_CTL_FRAME).await.map(|_| ())
            })
            .is_ok()
        }
    }

    /// Waits (up to 5 s) until the console has received `lines` lines: the output that
    /// came before an [`CtlReply::Ended`] (it travels on its own stream).
    pub fn await_console(&self, lines: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.console_lines.load(Ordering::SeqCst) < lines && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn close(self) {
        self.conn.close(0u32.into(), b"bye");
        self.rt.shutdown_timeout(Duration::from_millis(500));
    }
}
