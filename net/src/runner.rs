//! Running a program on one node: compile, load, and drive its process to the end.

use std::io::Write;
use std::path::Path;
use std::time::Instant;
use tern_compiler::{compile_file, CompileError, Compiled};
use tern_vm::interp::BlockReason;
use tern_vm::runtime::LoadError;
use tern_vm::snapshot::{restore, snapshot, ImageError};
use tern_vm::{run, Host, Outcome, Process, RuntimeError, Value, Vm, VmConfig};

/// A VM with the standard library's natives.
pub fn new_vm(config: VmConfig) -> Vm {
    Vm::new(tern_stdlib::natives(), config)
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
    /// Snapshot the process every this many reductions (jittered by `seed`), and go on in
    /// a fresh VM instance restored from the bytes.
    pub migrate_every: Option<u64>,
    pub seed: u64,
}

/// What a run did.
#[derive(Debug)]
pub struct RunReport {
    pub result: Result<Value, RuntimeError>,
    pub reductions: u64,
    /// Snapshot/restore cycles done.
    pub migrations: u64,
    pub image_bytes_max: usize,
    pub gc: tern_vm::heap::GcStats,
    pub heap_bytes: usize,
}

#[derive(Debug)]
pub enum RunError {
    Load(LoadError),
    Link(String),
    Image(ImageError),
    Blocked(BlockReason),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Load(e) => write!(f, "cannot load program: {e}"),
            RunError::Link(e) => write!(f, "cannot start program: {e}"),
            RunError::Image(e) => write!(f, "cannot restore process: {e}"),
            RunError::Blocked(b) => write!(f, "process blocked with nothing to wake it: {b:?}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Runs `program`'s main module as one process until it ends.
pub fn run_program(program: &Compiled, opts: &RunOptions, host: &mut dyn Host) -> Result<RunReport, RunError> {
    let mut vm = new_vm(opts.config);
    load(&mut vm, program).map_err(RunError::Load)?;
    let mut proc = Process::new(1, program.main, &vm).map_err(|e| RunError::Link(e.to_string()))?;
    let mut rng = opts.seed ^ 0x7465_726e;
    let next_move = |rng: &mut u64, r: u64| 1 + r / 2 + tern_stdlib::splitmix64(rng) % r.max(1);
    let mut due = opts.migrate_every.map(|r| next_move(&mut rng, r));
    let mut migrations = 0;
    let mut image_bytes_max = 0;
    loop {
        let budget = match due {
            Some(d) => d.saturating_sub(proc.reductions).clamp(1, u64::from(opts.config.budget)) as u32,
            None => opts.config.budget,
        };
        match run(&mut proc, &vm, host, budget) {
            Outcome::Yielded => {
                if let (Some(d), Some(r)) = (due, opts.migrate_every) {
                    if proc.reductions >= d {
                        let bytes = snapshot(&proc);
                        image_bytes_max = image_bytes_max.max(bytes.len());
                        drop(proc);
                        vm = new_vm(opts.config);
                        load(&mut vm, program).map_err(RunError::Load)?;
                        proc = restore(&bytes, &vm).map_err(RunError::Image)?;
                        migrations += 1;
                        due = Some(proc.reductions + next_move(&mut rng, r));
                    }
                }
            }
            Outcome::Blocked(b) => return Err(RunError::Blocked(b)),
            Outcome::Finished(v) => return Ok(report(&proc, Ok(v), migrations, image_bytes_max)),
            Outcome::Failed(e) => return Ok(report(&proc, Err(e), migrations, image_bytes_max)),
        }
    }
}

fn report(proc: &Process, result: Result<Value, RuntimeError>, migrations: u64, image_bytes_max: usize) -> RunReport {
    RunReport { result, reductions: proc.reductions, migrations, image_bytes_max, gc: proc.heap.stats, heap_bytes: proc.heap.size_bytes() }
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
    }
    fn mono_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
    fn wall_ms(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

/// Console output collected in memory (tests, golden files).
#[derive(Default)]
pub struct BufferHost {
    pub out: String,
    start: Option<Instant>,
}

impl Host for BufferHost {
    fn console_write(&mut self, text: &str) {
        self.out.push_str(text);
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
        BufferHost { out: String::new(), start: Some(Instant::now()) }
    }
}
