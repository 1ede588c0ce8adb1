//! Running a program: compile, load, start a node (two, when moving processes), drive
//! the main process to its end.

use parking_lot::Mutex;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_compiler::{compile_file, CompileError, Compiled};
use tern_vm::node::{Console, ExitReason, FileOp, Files, Mesh, Node, NodeConfig, Pid};
use tern_vm::process::{FileMode, IoResult};
use tern_vm::runtime::LoadError;
use tern_vm::{Host, RuntimeError, Vm, VmConfig};

/// A VM with the standard library's natives.
/// A VM instance (a node's) with the standard natives and, unless `config.jit` is off,
/// its own compiler (`tern_jit`).
pub fn new_vm(config: VmConfig) -> Vm {
    let mut vm = Vm::new(tern_stdlib::natives(), config);
    if config.jit != tern_vm::jit::JitMode::Off {
        match tern_jit::Jit::with_limit(config.jit_cache_bytes) {
            Ok(j) => vm.jit = Some(std::sync::Arc::new(j)),
            Err(e) => tracing::warn!("no JIT, everything is interpreted: {e}"),
        }
    }
    vm
}

/// Compiles a file with the standard library available.
pub fn compile(path: &Path) -> Result<Compiled, CompileError> {
    let natives = tern_stdlib::natives();
    let names = natives.names();
    compile_file(path, &names, &tern_stdlib::module_source)
}

/// Compiles source text (named `name` in messages) with the standard library available.
pub fn compile_text(name: &str, source: &str) -> Result<Compiled, CompileError> {
    let natives = tern_stdlib::natives();
    let names = natives.names();
    tern_compiler::compile_source(name, source, None, &names, &tern_stdlib::module_source)
}

/// [`compile_text`], with the errors of `source` itself as diagnostics (see
/// [`tern_compiler::compile_source_diagnostics`]).
pub fn compile_text_diagnostics(name: &str, source: &str) -> Result<Compiled, (Vec<tern_compiler::diag::Diagnostic>, String)> {
    let natives = tern_stdlib::natives();
    let names = natives.names();
    tern_compiler::compile_source_diagnostics(name, source, &names, &tern_stdlib::module_source)
}

pub fn load(vm: &mut Vm, program: &Compiled) -> Result<(), LoadError> {
    for m in &program.modules {
        vm.load(m.clone())?;
    }
    Ok(())
}

/// How to run a program.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub config: VmConfig,
    /// Run two VM instances and move a randomly chosen process (seeded by `seed`) from
    /// one to the other about every this many reductions, while everything else runs.
    pub migrate_every: Option<u64>,
    pub seed: u64,
    /// Worker threads per node (0: one per core).
    pub workers: usize,
    /// Where `open` finds files (default: the current directory).
    pub file_root: Option<PathBuf>,
}

/// What a run did.
#[derive(Debug)]
pub struct RunReport {
    /// How the main process ended.
    pub result: Result<(), RuntimeError>,
    /// Reductions of the main process.
    pub reductions: u64,
    /// Processes moved between the two VM instances.
    pub migrations: u64,
    /// The largest image a move made (a heap of `IMAGE_WHOLE_BELOW` or more is handed
    /// over, not imaged).
    pub image_bytes_max: usize,
    /// The main process's heap at its end.
    pub gc: tern_vm::heap::GcStats,
    pub heap_bytes: usize,
    /// The compilers' work (every node's, summed).
    pub jit: tern_vm::jit::JitStats,
}

#[derive(Debug)]
pub enum RunError {
    Load(LoadError),
    Link(String),
    /// Every process waits and nothing can wake any of them: where the main process
    /// waits (a runtime error's form: `file:line: error: ...` and its backtrace).
    Deadlock(tern_vm::interp::RuntimeError),
    Move(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Load(e) => write!(f, "cannot load program: {e}"),
            RunError::Link(e) => write!(f, "cannot start program: {e}"),
            RunError::Deadlock(e) => write!(f, "{e}"),
            RunError::Move(e) => write!(f, "cannot move a process: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Console output of every process, collected for the driver to pass on in order, and
/// the console's input (`read_line()`), which the driver feeds from the host.
#[derive(Default)]
struct Collect {
    out: Mutex<String>,
    main: Mutex<Option<Pid>>,
    input: Mutex<tern_vm::console_in::ConsoleIn>,
    /// A process asked for a line: the driver opens the host's input.
    wants_input: std::sync::atomic::AtomicBool,
}

impl Console for Collect {
    fn write(&self, _pid: Pid, text: &str) {
        self.out.lock().push_str(text);
    }
    fn failed(&self, pid: Pid, text: &str) {
        if *self.main.lock() != Some(pid) {
            eprintln!("process <pid {}> failed: {text}", tern_vm::value::name_text(pid));
        }
    }
    fn request_line(&self, _console: u64, pid: Pid, k: u64) -> Option<Option<String>> {
        self.wants_input.store(true, std::sync::atomic::Ordering::SeqCst);
        self.input.lock().request(pid, k, 0).map(|a| a.line)
    }
}

/// The console's input, once a process asked for it: lines from the host go to the
/// processes that wait for them, wherever they are.
struct Input {
    rx: Option<std::sync::mpsc::Receiver<Option<String>>>,
    opened: bool,
}

impl Input {
    /// Takes what the host typed; whether the input is still open (so a process waiting
    /// for it is not a deadlock).
    fn pump(&mut self, console: &Collect, host: &mut dyn Host, nodes: &[Node]) -> bool {
        if !self.opened {
            if !console.wants_input.load(std::sync::atomic::Ordering::SeqCst) {
                return false;
            }
            self.opened = true;
            self.rx = host.console_input();
            if self.rx.is_none() {
                let ends = console.input.lock().end();
                deliver(nodes, ends);
            }
        }
        let Some(rx) = &self.rx else { return false };
        loop {
            let answers = match rx.try_recv() {
                Ok(Some(line)) => console.input.lock().line(line).into_iter().collect(),
                Ok(None) | Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    self.rx = None;
                    let ends = console.input.lock().end();
                    deliver(nodes, ends);
                    return false;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => return true,
            };
            deliver(nodes, answers);
        }
    }
}

fn deliver(nodes: &[Node], answers: Vec<tern_vm::console_in::Answer>) {
    for a in answers {
        for n in nodes {
            n.console_line(a.pid, a.k, a.line.clone());
        }
    }
}

impl Collect {
    fn drain(&self, host: &mut dyn Host) {
        let text = std::mem::take(&mut *self.out.lock());
        if !text.is_empty() {
            host.console_write(&text);
        }
    }
}

fn start_node(program: &Compiled, opts: &RunOptions, mesh: &Arc<Mesh>, id: u16, console: &Arc<Collect>) -> Result<Node, RunError> {
    let mut config = opts.config;
    if let Some(r) = opts.migrate_every {
        // Short slices, so that moves can happen about every `r` reductions.
        config.budget = config.budget.min(r.clamp(1, u64::from(u32::MAX)) as u32);
    }
    let mut vm = new_vm(config);
    load(&mut vm, program).map_err(RunError::Load)?;
    let root = opts.file_root.clone().unwrap_or_else(|| PathBuf::from("."));
    let mut node_config =
        NodeConfig { name: if id == 0 { "local".into() } else { format!("local{}", id + 1) }, id, ..NodeConfig::default() };
    if opts.workers > 0 {
        node_config.workers = opts.workers;
    }
    Ok(Node::start(Arc::new(vm), mesh.clone(), node_config, console.clone(), Arc::new(DirFiles { root })))
}

/// Runs `program`'s main module until its main process ends; console output goes to
/// `host`. Other processes still running then are stopped.
pub fn run_program(program: &Compiled, opts: &RunOptions, host: &mut dyn Host) -> Result<RunReport, RunError> {
    let mesh = Mesh::new();
    let console = Arc::new(Collect::default());
    let n = if opts.migrate_every.is_some() { 2 } else { 1 };
    let nodes = (0..n).map(|i| start_node(program, opts, &mesh, i as u16, &console)).collect::<Result<Vec<_>, _>>()?;
    if let Some(r) = opts.migrate_every {
        // Each node moves processes to the other at seeded points of their execution.
        for (i, node) in nodes.iter().enumerate() {
            let mut rng = tern_vm::value::mix64(opts.seed ^ (i as u64 + 1));
            let mut due = 1 + r / 2 + tern_stdlib::splitmix64(&mut rng) % r;
            let other = 1 - i as u16;
            node.set_relocate_hook(Box::new(move |_pid, used| {
                due = due.saturating_sub(used);
                if due > 0 {
                    return None;
                }
                due = 1 + r / 2 + tern_stdlib::splitmix64(&mut rng) % r;
                Some(other)
            }));
        }
    }
    let main = nodes[0].new_pid();
    *console.main.lock() = Some(main);
    let p = tern_vm::Process::new(main, program.main, nodes[0].vm()).map_err(|e| RunError::Link(e.to_string()))?;
    nodes[0].watch(main);
    nodes[0].spawn(p);

    let mut rng = opts.seed ^ 0x7465_726e;
    let next_move = |rng: &mut u64, r: u64| 1 + r / 2 + tern_stdlib::splitmix64(rng) % r.max(1);
    let total = |nodes: &[Node]| nodes.iter().map(Node::reductions).sum::<u64>();
    let mut due = opts.migrate_every.map(|r| next_move(&mut rng, r));
    let (mut migrations, mut image_bytes_max) = (0, 0);
    let mut still: Option<Instant> = None;
    let mut last_flush = Instant::now();
    let mut input = Input { rx: None, opened: false };
    let exit = loop {
        if let Some(e) = nodes.iter().find_map(|n| n.exit_of(main)) {
            break e;
        }
        let typing = input.pump(&console, host, &nodes);
        if last_flush.elapsed() >= Duration::from_millis(20) {
            console.drain(host);
            last_flush = Instant::now();
        }
        if let (Some(d), Some(r)) = (due, opts.migrate_every) {
            if total(&nodes) >= d {
                let mut pids: Vec<(Pid, usize)> = Vec::new();
                for (i, node) in nodes.iter().enumerate() {
                    // Running processes are moved by the nodes' hooks at their
                    // safepoints; this moves the ones waiting in recv, sleep or a file
                    // operation, which run no safepoints meanwhile.
                    pids.extend(node.waiting_pids().into_iter().map(|p| (p, i)));
                }
                pids.sort_unstable();
                if !pids.is_empty() {
                    let (pid, from) = pids[(tern_stdlib::splitmix64(&mut rng) % pids.len() as u64) as usize];
                    match nodes[from].relocate(pid, &nodes[1 - from], Duration::from_secs(30)) {
                        Ok(_) => {}
                        // It ended (or is ending) meanwhile.
                        Err(tern_vm::node::MoveError::NotHere(_)) => {}
                        Err(e) => return Err(RunError::Move(e.to_string())),
                    }
                }
                due = Some(total(&nodes) + next_move(&mut rng, r));
                continue;
            }
        }
        // Waiting for a line the console may still give is not a deadlock.
        if nodes.iter().all(Node::quiescent) && !(typing && console.input.lock().waiting() > 0) {
            let since = *still.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_millis(100) {
                if let Some(e) = nodes.iter().find_map(|n| n.exit_of(main)) {
                    break e;
                }
                console.drain(host);
                let trace = nodes.iter().find_map(|n| n.backtrace_of(main)).unwrap_or_default();
                let message = "deadlock: the main process waits here, and every process waits for something no one will send".to_string();
                return Err(RunError::Deadlock(tern_vm::interp::RuntimeError { message, trace }));
            }
        } else {
            still = None;
        }
        std::thread::sleep(Duration::from_micros(if due.is_some() { 50 } else { 500 }));
    };
    let mut jit = tern_vm::jit::JitStats::default();
    for n in &nodes {
        let (m, b) = n.moves_out();
        migrations += m;
        image_bytes_max = image_bytes_max.max(b);
        if let Some(s) = n.vm().jit.as_ref().map(|j| j.stats()) {
            jit.compiled += s.compiled;
            jit.failed += s.failed;
            jit.code_bytes += s.code_bytes;
            jit.evicted += s.evicted;
            jit.flushes += s.flushes;
            jit.freed += s.freed;
            jit.compile_us.extend(s.compile_us);
        }
    }
    drop(nodes);
    console.drain(host);
    let result = match exit.reason {
        ExitReason::Normal => Ok(()),
        ExitReason::Exit(r) if r == "normal" => Ok(()),
        ExitReason::Exit(r) => Err(RuntimeError { message: format!("exited: {r}"), trace: vec![] }),
        ExitReason::Killed(r) => Err(RuntimeError { message: format!("killed: {r}"), trace: vec![] }),
        ExitReason::Failed(e) => Err(e),
    };
    Ok(RunReport { result, reductions: exit.reductions, migrations, image_bytes_max, gc: exit.gc, heap_bytes: exit.heap_bytes, jit })
}

/// Files under a root directory: the node's file root.
pub struct DirFiles {
    pub root: PathBuf,
}

fn io_message(name: &str, e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    let why = match e.kind() {
        NotFound => "no such file".to_string(),
        PermissionDenied => "permission denied".to_string(),
        AlreadyExists => "it already exists".to_string(),
        IsADirectory => "it is a directory".to_string(),
        _ => e.to_string(),
    };
    format!("cannot use file {name}: {why}")
}

impl Files for DirFiles {
    fn run(&self, op: &FileOp) -> IoResult {
        match op {
            FileOp::Open { name, mode } => {
                let path = self.root.join(name);
                let mut o = std::fs::OpenOptions::new();
                match mode {
                    FileMode::Read => o.read(true),
                    FileMode::Write => o.write(true).create(true).truncate(true),
                    FileMode::Append => o.append(true).create(true),
                    FileMode::ReadWrite => o.read(true).write(true),
                };
                match o.open(&path) {
                    Ok(f) => match f.metadata() {
                        Ok(m) if m.is_dir() => IoResult::Failed(format!("cannot use file {name}: it is a directory")),
                        _ => IoResult::Opened,
                    },
                    Err(e) => IoResult::Failed(io_message(name, &e)),
                }
            }
            FileOp::Read { name, offset, max, line } => {
                let run = || -> std::io::Result<(Vec<u8>, u64)> {
                    let mut f = std::fs::File::open(self.root.join(name))?;
                    f.seek(SeekFrom::Start(*offset))?;
                    let mut data = Vec::new();
                    if *line {
                        let mut buf = [0u8; 4096];
                        while (data.len() as u64) < *max {
                            let k = f.read(&mut buf)?;
                            if k == 0 {
                                break;
                            }
                            if let Some(nl) = buf[..k].iter().position(|&b| b == b'\n') {
                                data.extend_from_slice(&buf[..=nl]);
                                break;
                            }
                            data.extend_from_slice(&buf[..k]);
                        }
                    } else {
                        f.take(*max).read_to_end(&mut data)?;
                    }
                    let len = data.len() as u64;
                    Ok((data, offset + len))
                };
                match run() {
                    Ok((data, offset)) => IoResult::Read { data, offset },
                    Err(e) => IoResult::Failed(io_message(name, &e)),
                }
            }
            FileOp::Write { name, offset, append, data } => {
                let run = || -> std::io::Result<u64> {
                    let path = self.root.join(name);
                    let mut f = if *append {
                        std::fs::OpenOptions::new().append(true).open(path)?
                    } else {
                        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
                        f.seek(SeekFrom::Start(*offset))?;
                        f
                    };
                    let before = f.metadata()?.len();
                    if let Err(e) = f.write_all(data) {
                        // A write that fails (the disk is full) leaves nothing of itself
                        // past the file's end: what it had written is cut off again.
                        if f.metadata().is_ok_and(|m| m.len() > before) {
                            let _ = f.set_len(before);
                        }
                        return Err(e);
                    }
                    f.stream_position()
                };
                match run() {
                    Ok(offset) => IoResult::Wrote { count: data.len() as u64, offset },
                    Err(e) => IoResult::Failed(io_message(name, &e)),
                }
            }
        }
    }
}

/// Console output to this OS process's stdout.
pub struct StdoutHost {
    out: std::io::BufWriter<std::io::Stdout>,
    start: Instant,
}

impl Default for StdoutHost {
    fn default() -> Self {
        StdoutHost { out: std::io::BufWriter::with_capacity(1 << 16, std::io::stdout()), start: Instant::now() }
    }
}

impl StdoutHost {
    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

impl Host for StdoutHost {
    fn console_write(&mut self, text: &str) {
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }
    /// Stdin, line by line, read on a thread of its own.
    fn console_input(&mut self) -> Option<std::sync::mpsc::Receiver<Option<String>>> {
        let (tx, rx) = std::sync::mpsc::channel();
        stdin_lines("tern-stdin", move |line| tx.send(line).is_ok()).ok()?;
        Some(rx)
    }
    fn mono_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
    fn wall_ms(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

/// Reads stdin line by line on a thread named `name`, giving `each` every line (without
/// its newline) and then `None` at its end; stops early when `each` returns false.
pub fn stdin_lines(name: &str, mut each: impl FnMut(Option<String>) -> bool + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new().name(name.into()).spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = String::new();
        loop {
            buf.clear();
            match std::io::BufRead::read_line(&mut stdin, &mut buf) {
                Ok(0) | Err(_) => {
                    each(None);
                    return;
                }
                Ok(_) => {
                    if !each(Some(buf.trim_end_matches('\n').trim_end_matches('\r').to_string())) {
                        return;
                    }
                }
            }
        }
    })?;
    Ok(())
}

/// Console output collected in memory (tests, golden files); its console input, the
/// lines of `input` (none: end of input at once).
#[derive(Default)]
pub struct BufferHost {
    pub out: String,
    start: Option<Instant>,
    pub input: Vec<String>,
}

impl Host for BufferHost {
    fn console_write(&mut self, text: &str) {
        self.out.push_str(text);
    }
    fn console_input(&mut self) -> Option<std::sync::mpsc::Receiver<Option<String>>> {
        let (tx, rx) = std::sync::mpsc::channel();
        for l in self.input.drain(..) {
            let _ = tx.send(Some(l));
        }
        let _ = tx.send(None);
        Some(rx)
    }
    fn mono_us(&self) -> u64 {
        self.start.map_or(0, |s| s.elapsed().as_micros() as u64)
    }
    fn wall_ms(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

impl BufferHost {
    pub fn new() -> BufferHost {
        BufferHost { out: String::new(), start: Some(Instant::now()), input: Vec::new() }
    }
}
