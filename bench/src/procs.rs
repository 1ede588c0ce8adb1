//! `tern-bench procs`: process benchmarks against Erlang.
//!
//! Each benchmark is `bench/programs/NAME.tern` beside `NAME.erl` (module `NAME`
//! exporting `main/0`). Every program times its own work with a monotonic clock (so VM
//! start-up is excluded) and prints one line `NAME: key=value ...`; the runner also
//! records each run's wall time and peak RSS. `spawn` is run a second time with its count
//! set to 1 (the line marked `bench:count`), and the difference of the two peaks, divided
//! by the count, is the memory per process. The results are printed as a markdown table
//! and written to `bench/results/procs-speed.md`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::exec::{self, Outcome};
use crate::report;
use crate::table::{self, Cell, Failure, Lang, Row, Target};
use crate::vm::stderr_tail;

pub(crate) const INSTALL_HINT: &str = "apt-get install erlang-base";

/// The programs, in table order.
const PROGRAMS: [&str; 3] = ["spawn", "pingpong", "ring"];

/// The marker on the line of `spawn.{tern,erl}` that holds the process count.
const COUNT_MARKER: &str = "bench:count";

/// The Erlang VM's process limit for the runs (the default, 1,048,576, is too tight for
/// a million processes beside the system's own).
const ERL_PROCESS_LIMIT: &str = "2000000";

#[derive(clap::Args)]
pub struct ProcsArgs {
    /// Only run programs whose name contains NAME (comma-separated for several):
    /// spawn, pingpong, ring.
    #[arg(long, value_name = "NAME")]
    filter: Option<String>,
    /// Runs per program and language; the best (lowest) value of each measure counts.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// The Tern binary. Without it the runner builds <workspace>/target/release/tern
    /// (`cargo build --release -p tern-net --bin tern`) and uses that.
    #[arg(long, value_name = "PATH")]
    tern: Option<PathBuf>,
    /// Use <workspace>/target/release/tern as it is, without building it first.
    #[arg(long)]
    no_build: bool,
    /// Kill a run after this many seconds; it is reported as TIMEOUT.
    #[arg(long, value_name = "SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

/// Which version of a program a run uses: as written, or (for `spawn`) with its count
/// set to 1, for the memory baseline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Variant {
    Full,
    Baseline,
}

/// The installed Erlang tools.
pub(crate) struct Erlang {
    pub(crate) erl: PathBuf,
    pub(crate) erlc: PathBuf,
}

/// What one successful run measured.
struct Sample {
    /// The `key=value` pairs of the program's `NAME:` line.
    values: HashMap<String, f64>,
    wall: Duration,
    peak_rss: Option<u64>,
}

/// The runs of one (program, language, variant): the samples so far, or why it failed.
#[derive(Default)]
struct Runs {
    samples: Vec<Sample>,
    failed: Option<Failure>,
}

impl Runs {
    /// The lowest value of `key` over the runs.
    fn best(&self, key: &str) -> Option<f64> {
        self.samples.iter().filter_map(|s| s.values.get(key).copied()).reduce(f64::min)
    }

    fn best_wall(&self) -> Option<f64> {
        self.samples.iter().map(|s| s.wall.as_secs_f64()).reduce(f64::min)
    }

    fn best_peak_rss(&self) -> Option<f64> {
        self.samples.iter().filter_map(|s| s.peak_rss).map(|b| b as f64).reduce(f64::min)
    }
}

/// Something that makes the run fail, explained after the table.
pub(crate) struct Problem {
    /// The program, or the step (`starting the nodes`), that failed.
    pub(crate) what: String,
    pub(crate) lang: &'static str,
    pub(crate) detail: String,
}

/// A scratch directory of one bench run (programs' copies, compiled modules, meshes);
/// removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(kind: &str) -> Result<TempDir> {
        let path = std::env::temp_dir().join(format!("tern-bench-{kind}-{}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path).with_context(|| format!("cannot clear {}", path.display()))?;
        }
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }
}

/// Whether the bench keeps its temporary directories (`TERN_BENCH_KEEP` set).
pub(crate) fn keep_temp() -> bool {
    std::env::var_os("TERN_BENCH_KEEP").is_some()
}

impl Drop for TempDir {
    /// Removed, unless `TERN_BENCH_KEEP` is set (then its nodes' logs can be read after,
    /// e.g. with `TERN_LOG=tern_net::node::migration=debug` for a migration's steps).
    fn drop(&mut self) {
        if keep_temp() {
            eprintln!("kept {} (TERN_BENCH_KEEP)", self.0.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Everything needed to start one program under one language.
struct Launch {
    /// The `.tern` file to run (relative to the workspace root or absolute).
    tern_source: PathBuf,
    /// The directory holding the compiled `NAME.beam`, when Erlang is there and the
    /// module compiled.
    erl_ebin: Option<PathBuf>,
}

/// Runs the suite; `Ok(false)` when some program failed, timed out or printed
/// something unexpected.
pub fn run(args: &ProcsArgs) -> Result<bool> {
    let root = crate::workspace_root();
    let programs_dir = crate::bench_dir().join("programs");
    let limit = Duration::from_secs(args.timeout);
    let programs = select_programs(args.filter.as_deref())?;

    let tern = tern_to_measure(args.tern.as_deref(), args.no_build, &root)?;
    let erlang = find_erlang();
    let temp = TempDir::new("procs")?;
    let mut problems = Vec::new();

    // Prepare every (program, variant): the Tern source to run and the compiled module.
    let mut launches: HashMap<(&str, Variant), Launch> = HashMap::new();
    for &program in &programs {
        for &variant in variants(program) {
            let launch = prepare(program, variant, &root, &programs_dir, &temp.0, erlang.as_ref(), limit, &mut problems)?;
            launches.insert((program, variant), launch);
        }
    }

    let langs: Vec<Lang> = if erlang.is_some() { vec![Lang::Tern, Lang::Erlang] } else { vec![Lang::Tern] };
    eprintln!(
        "running {} program(s) x {} language(s), best of {} run(s), timeout {} s",
        programs.len(),
        langs.len(),
        args.runs,
        args.timeout
    );

    // Interleave the languages within each run, so that a slow drift in machine speed
    // does not favour one of them.
    let mut results: HashMap<(&str, Lang, Variant), Runs> = HashMap::new();
    for run in 1..=args.runs {
        for &program in &programs {
            for &variant in variants(program) {
                for &lang in &langs {
                    let runs = results.entry((program, lang, variant)).or_default();
                    if runs.failed.is_some() {
                        continue;
                    }
                    let launch = &launches[&(program, variant)];
                    let mut cmd = match (lang, &erlang, &launch.erl_ebin) {
                        (Lang::Tern, _, _) => {
                            let mut cmd = Command::new(&tern);
                            cmd.arg("run").arg(&launch.tern_source);
                            cmd
                        }
                        (Lang::Erlang, Some(erl), Some(ebin)) => erl_command(&erl.erl, ebin, program, &temp.0),
                        // The module did not compile (already reported) or Erlang is
                        // missing.
                        (Lang::Erlang, _, _) => {
                            runs.failed = Some(Failure::Failed);
                            continue;
                        }
                    };
                    cmd.current_dir(&root);
                    let tag = match variant {
                        Variant::Full => program.to_string(),
                        Variant::Baseline => format!("{program} (count 1)"),
                    };
                    eprint!("{tag:<18} {:<6} run {run}/{}: ", lang.name(), args.runs);
                    let expected = expected_values(program, variant);
                    match run_once(&mut cmd, program, &expected, limit) {
                        Ok(sample) => {
                            eprintln!("{}", describe_sample(&sample));
                            runs.samples.push(sample);
                        }
                        Err((failure, detail)) => {
                            eprintln!("{}", if failure == Failure::Timeout { "TIMEOUT" } else { "FAILED" });
                            runs.failed = Some(failure);
                            problems.push(Problem { what: tag, lang: lang.name(), detail });
                        }
                    }
                }
            }
        }
    }

    let rows = measures(&programs, &results, erlang.is_some());
    let table = table::render(&rows);
    println!("\n{table}");

    let results_path = crate::bench_dir().join("results").join("procs-speed.md");
    let doc = results_document(args, &tern, &root, erlang.as_ref(), limit, &table);
    report::write_file(&results_path, &doc)?;
    eprintln!("wrote {}", results_path.display());

    Ok(finish(erlang.is_some(), &rows, &problems))
}

/// After the table: warns if Erlang was skipped, lists the missed targets and the
/// problems; whether there were none of the latter.
pub(crate) fn finish(have_erlang: bool, rows: &[Row], problems: &[Problem]) -> bool {
    if !have_erlang {
        eprintln!("!!! WARNING: Erlang was skipped (`erl`/`erlc` not on PATH; {INSTALL_HINT})");
    }
    table::report_missed(rows);
    if problems.is_empty() {
        return true;
    }
    eprintln!("\n{} problem(s):", problems.len());
    for p in problems {
        eprintln!("- {} under {}: {}", p.what, p.lang, p.detail);
    }
    false
}

/// The programs to run, in table order, narrowed by `--filter`.
fn select_programs(filter: Option<&str>) -> Result<Vec<&'static str>> {
    let wanted: Vec<&str> = filter.map(|f| f.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    let programs: Vec<&'static str> =
        PROGRAMS.into_iter().filter(|name| wanted.is_empty() || wanted.iter().any(|w| name.contains(w))).collect();
    if programs.is_empty() {
        bail!("no process benchmark matches --filter {} (there are: {})", filter.unwrap_or(""), PROGRAMS.join(", "));
    }
    Ok(programs)
}

/// The variants of a program that are run: `spawn` also runs with a count of 1.
fn variants(program: &str) -> &'static [Variant] {
    if program == "spawn" {
        &[Variant::Full, Variant::Baseline]
    } else {
        &[Variant::Full]
    }
}

/// The Tern binary to measure: `--tern PATH`, else `target/release/tern`, built first
/// unless `--no-build`.
pub(crate) fn tern_to_measure(tern: Option<&Path>, no_build: bool, root: &Path) -> Result<PathBuf> {
    if tern.is_none() && !no_build {
        build_tern(root)?;
    }
    crate::vm::tern_binary(tern, root)
}

/// Builds `target/release/tern` with cargo (the one running this, if any).
fn build_tern(root: &Path) -> Result<()> {
    let cargo = std::env::var_os("CARGO").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("cargo"));
    let args = ["build", "--release", "-p", "tern-net", "--bin", "tern"];
    eprintln!("building target/release/tern: cargo {} (waits for cargo's lock if another build holds it)", args.join(" "));
    let mut cmd = Command::new(&cargo);
    cmd.args(args).current_dir(root);
    match exec::run_timed(&mut cmd, Duration::from_secs(3600))? {
        Outcome::Exited { status, .. } if status.success() => Ok(()),
        Outcome::Exited { status, stderr, .. } => bail!(
            "building the Tern binary failed ({status}){}\n\
             Use --no-build to measure the existing target/release/tern, or --tern PATH.",
            stderr_tail(&stderr)
        ),
        Outcome::TimedOut => bail!("building the Tern binary took more than an hour; gave up"),
    }
}

/// `erl` and `erlc`, when both are on `PATH`; otherwise a loud warning.
pub(crate) fn find_erlang() -> Option<Erlang> {
    match (exec::find_on_path("erl"), exec::find_on_path("erlc")) {
        (Some(erl), Some(erlc)) => Some(Erlang { erl, erlc }),
        (erl, _) => {
            let missing = if erl.is_none() { "erl" } else { "erlc" };
            eprintln!(
                "\n!!! WARNING: `{missing}` is not on PATH: SKIPPING every Erlang run.\n\
                 !!! Install Erlang with: {INSTALL_HINT}\n"
            );
            None
        }
    }
}

/// The Tern source and compiled Erlang module for one (program, variant). The full
/// variant runs `bench/programs/NAME.tern` itself; the baseline runs copies, with the
/// count set to 1, written to a directory of their own under `temp`.
#[allow(clippy::too_many_arguments)]
fn prepare(
    program: &str,
    variant: Variant,
    root: &Path,
    programs_dir: &Path,
    temp: &Path,
    erlang: Option<&Erlang>,
    limit: Duration,
    problems: &mut Vec<Problem>,
) -> Result<Launch> {
    let tern_file = programs_dir.join(format!("{program}.tern"));
    let erl_file = programs_dir.join(format!("{program}.erl"));
    for file in [&tern_file, &erl_file] {
        if !file.is_file() {
            bail!("{} does not exist", file.display());
        }
    }
    let dir = temp.join(match variant {
        Variant::Full => "full",
        Variant::Baseline => "baseline",
    });
    let ebin = dir.join("ebin");
    fs::create_dir_all(&ebin).with_context(|| format!("cannot create {}", ebin.display()))?;

    let (tern_source, erl_source) = match variant {
        Variant::Full => (tern_file.strip_prefix(root).unwrap_or(&tern_file).to_path_buf(), erl_file),
        Variant::Baseline => {
            let mut copies = Vec::new();
            for file in [&tern_file, &erl_file] {
                let text = fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
                let text = set_count(&text, 1).with_context(|| format!("in {}", file.display()))?;
                let copy = dir.join(file.file_name().unwrap_or_default());
                report::write_file(&copy, &text)?;
                copies.push(copy);
            }
            let erl_copy = copies.pop().unwrap_or_default();
            (copies.pop().unwrap_or_default(), erl_copy)
        }
    };

    let mut erl_ebin = None;
    if let Some(erlang) = erlang {
        let mut cmd = Command::new(&erlang.erlc);
        cmd.arg("-o").arg(&ebin).arg(&erl_source).current_dir(root);
        let failure = match exec::run_timed(&mut cmd, limit)? {
            Outcome::Exited { status, .. } if status.success() => None,
            Outcome::Exited { status, stdout, stderr, .. } => {
                Some(format!("erlc failed ({status}){}", stderr_tail(&format!("{stdout}{stderr}"))))
            }
            Outcome::TimedOut => Some(format!("erlc still running after {} s, killed", limit.as_secs())),
        };
        match failure {
            None => erl_ebin = Some(ebin),
            Some(detail) => problems.push(Problem { what: program.to_string(), lang: "erlang", detail }),
        }
    }
    Ok(Launch { tern_source, erl_ebin })
}

/// `text` with the number on its `bench:count` line replaced by `count`.
fn set_count(text: &str, count: u64) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    for line in text.split_inclusive('\n') {
        if !found && line.contains(COUNT_MARKER) {
            let Some(start) = line.find(|c: char| c.is_ascii_digit()) else {
                bail!("the `{COUNT_MARKER}` line has no number");
            };
            let len = line[start..].find(|c: char| !(c.is_ascii_digit() || c == '_')).unwrap_or(line.len() - start);
            out.push_str(&line[..start]);
            out.push_str(&count.to_string());
            out.push_str(&line[start + len..]);
            found = true;
        } else {
            out.push_str(line);
        }
    }
    if !found {
        bail!("no line is marked `{COUNT_MARKER}`");
    }
    Ok(out)
}

/// `erl +P 2000000 -noshell -pa EBIN -s NAME main -s init stop`, with any crash dump
/// kept out of the workspace.
fn erl_command(erl: &Path, ebin: &Path, program: &str, temp: &Path) -> Command {
    let mut cmd = Command::new(erl);
    cmd.args(["+P", ERL_PROCESS_LIMIT, "-noshell", "-pa"]).arg(ebin).args(["-s", program, "main", "-s", "init", "stop"]);
    cmd.env("ERL_CRASH_DUMP", temp.join(format!("erl_crash-{program}.dump")));
    cmd
}

/// The keys a program's line must have, with the values they must have (`None`: any
/// number, a time).
fn expected_values(program: &str, variant: Variant) -> Vec<(&'static str, Option<f64>)> {
    match (program, variant) {
        ("spawn", Variant::Full) => vec![("count", Some(1e6)), ("spawn_us", None), ("total_us", None)],
        ("spawn", Variant::Baseline) => vec![("count", Some(1.0)), ("spawn_us", None), ("total_us", None)],
        ("pingpong", _) => vec![("rounds", Some(1e6)), ("total_us", None)],
        ("ring", _) => vec![("size", Some(1e4)), ("rounds", Some(100.0)), ("hops", Some(1e6)), ("build_us", None), ("pass_us", None)],
        _ => Vec::new(),
    }
}

/// Runs one program once and reads its `NAME: key=value ...` line.
fn run_once(cmd: &mut Command, program: &str, expected: &[(&str, Option<f64>)], limit: Duration) -> Result<Sample, (Failure, String)> {
    let (status, stdout, stderr, wall, peak_rss) = match exec::run_timed(cmd, limit) {
        Err(err) => return Err((Failure::Failed, format!("{err:#}"))),
        Ok(Outcome::TimedOut) => return Err((Failure::Timeout, format!("still running after {} s, killed", limit.as_secs()))),
        Ok(Outcome::Exited { status, stdout, stderr, wall, peak_rss }) => (status, stdout, stderr, wall, peak_rss),
    };
    if !status.success() {
        return Err((Failure::Failed, format!("{status}{}", stderr_tail(&format!("{stdout}{stderr}")))));
    }
    let prefix = format!("{program}:");
    let Some(line) = stdout.lines().find(|l| l.starts_with(&prefix)) else {
        return Err((Failure::Failed, format!("no `{prefix} ...` line in the output{}", stderr_tail(&stdout))));
    };
    let values = parse_values(&line[prefix.len()..]);
    for &(key, want) in expected {
        match (values.get(key), want) {
            (None, _) => return Err((Failure::Failed, format!("`{key}=` missing from `{line}`"))),
            (Some(&got), Some(want)) if got != want => {
                return Err((Failure::Failed, format!("expected {key}={want}, got `{line}`")));
            }
            _ => {}
        }
    }
    Ok(Sample { values, wall, peak_rss })
}

/// The `key=value` pairs with a numeric value in `text`.
pub(crate) fn parse_values(text: &str) -> HashMap<String, f64> {
    text.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .filter_map(|(k, v)| v.trim_end_matches(',').parse::<f64>().ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// A run's numbers for the progress line.
fn describe_sample(sample: &Sample) -> String {
    let mut keys: Vec<&String> = sample.values.keys().filter(|k| k.ends_with("_us")).collect();
    keys.sort();
    let mut parts: Vec<String> = keys.iter().map(|k| format!("{k}={}", sample.values[*k])).collect();
    parts.push(format!("wall {:.3} s", sample.wall.as_secs_f64()));
    if let Some(rss) = sample.peak_rss {
        parts.push(format!("peak RSS {:.1} MiB", rss as f64 / MIB));
    }
    parts.join(", ")
}

const MIB: f64 = 1024.0 * 1024.0;

/// The table rows, from the best values of the runs.
fn measures(programs: &[&str], results: &HashMap<(&str, Lang, Variant), Runs>, have_erlang: bool) -> Vec<Row> {
    // One cell: `f` of the runs of (program, lang, variant), or why there is none.
    let cell = |program: &str, lang: Lang, variant: Variant, f: &dyn Fn(&Runs) -> Option<f64>| -> Cell {
        if lang == Lang::Erlang && !have_erlang {
            return Cell::Skipped;
        }
        match results.get(&(program, lang, variant)) {
            Some(Runs { failed: Some(failure), .. }) => Cell::failed(*failure),
            None => Cell::Failed,
            Some(runs) => f(runs).map_or(Cell::Unknown, Cell::Value),
        }
    };
    let row = |label: &str, decimals: usize, target: Option<Target>, f: &dyn Fn(Lang) -> Cell| Row {
        label: label.to_string(),
        tern: f(Lang::Tern),
        erlang: f(Lang::Erlang),
        decimals,
        target,
    };
    let best = |key: &'static str, scale: f64| move |runs: &Runs| runs.best(key).map(|v| v * scale);
    let wall = |program: &'static str| move |lang: Lang| cell(program, lang, Variant::Full, &|runs: &Runs| runs.best_wall());

    let mut rows = Vec::new();
    for &program in programs {
        match program {
            "spawn" => {
                rows.push(row("spawn: time per spawn (µs)", 3, Some(Target::AtMost(1.0)), &|lang| {
                    cell("spawn", lang, Variant::Full, &|runs: &Runs| Some(runs.best("spawn_us")? / runs.best("count")?))
                }));
                rows.push(row("spawn: memory per idle process (bytes)", 0, Some(Target::AtMost(2.0)), &|lang| {
                    let full = cell("spawn", lang, Variant::Full, &Runs::best_peak_rss);
                    let base = cell("spawn", lang, Variant::Baseline, &Runs::best_peak_rss);
                    let count = cell("spawn", lang, Variant::Full, &best("count", 1.0));
                    match (full, base, count) {
                        (Cell::Value(full), Cell::Value(base), Cell::Value(count)) => Cell::Value((full - base) / count),
                        (Cell::Value(_), Cell::Value(_), other) | (Cell::Value(_), other, _) | (other, _, _) => other,
                    }
                }));
                rows.push(row("spawn: peak RSS, 1M processes (MiB)", 1, None, &|lang| {
                    cell("spawn", lang, Variant::Full, &|runs: &Runs| runs.best_peak_rss().map(|b| b / MIB))
                }));
                rows.push(row("spawn: peak RSS, 1 process (MiB)", 1, None, &|lang| {
                    cell("spawn", lang, Variant::Baseline, &|runs: &Runs| runs.best_peak_rss().map(|b| b / MIB))
                }));
                rows.push(row("spawn: 1M spawns + 1M messages (s)", 3, None, &|lang| {
                    cell("spawn", lang, Variant::Full, &best("total_us", 1e-6))
                }));
                rows.push(row("spawn: wall, whole OS process (s)", 3, None, &wall("spawn")));
            }
            "pingpong" => {
                rows.push(row("pingpong: round trip (µs)", 3, Some(Target::AtMost(1.0)), &|lang| {
                    cell("pingpong", lang, Variant::Full, &|runs: &Runs| Some(runs.best("total_us")? / runs.best("rounds")?))
                }));
                rows.push(row("pingpong: wall, whole OS process (s)", 3, None, &wall("pingpong")));
            }
            "ring" => {
                rows.push(row("ring: token 100 times round 10k processes (ms)", 1, Some(Target::AtMost(1.0)), &|lang| {
                    cell("ring", lang, Variant::Full, &best("pass_us", 1e-3))
                }));
                rows.push(row("ring: building the ring (ms)", 1, None, &|lang| cell("ring", lang, Variant::Full, &best("build_us", 1e-3))));
                rows.push(row("ring: wall, whole OS process (s)", 3, None, &wall("ring")));
            }
            _ => {}
        }
    }
    rows
}

/// The Erlang version: `OTP 25, erts 13.1.5`.
pub(crate) fn erlang_version(erl: &Path) -> Option<String> {
    let mut cmd = Command::new(erl);
    cmd.args([
        "-noshell",
        "-eval",
        "io:format(\"OTP ~s, erts ~s, ~b schedulers~n\", [erlang:system_info(otp_release), \
         erlang:system_info(version), erlang:system_info(schedulers)]), halt().",
    ]);
    match exec::run_timed(&mut cmd, Duration::from_secs(60)) {
        Ok(Outcome::Exited { status, stdout, .. }) if status.success() => stdout.lines().next().map(str::to_string),
        _ => None,
    }
}

/// `bench/results/procs-speed.md`: the table with when, where and how it was measured.
fn results_document(args: &ProcsArgs, tern: &Path, root: &Path, erlang: Option<&Erlang>, limit: Duration, table: &str) -> String {
    let mut invocation = String::from("cargo run --release -p tern-bench -- procs");
    if let Some(f) = &args.filter {
        invocation.push_str(&format!(" --filter {f}"));
    }
    invocation.push_str(&format!(" --runs {}", args.runs));
    let tern_shown = tern.strip_prefix(root).unwrap_or(tern).display().to_string();
    let erlang_shown = match erlang {
        Some(e) => format!(
            "{} (`erl +P {ERL_PROCESS_LIMIT} -noshell -pa EBIN -s NAME main -s init stop`)",
            erlang_version(&e.erl).unwrap_or_else(|| "version unknown".into())
        ),
        None => format!("not installed, skipped ({INSTALL_HINT})"),
    };

    let mut doc = String::from("# Tern processes beside Erlang\n\n");
    doc.push_str(&format!("- Date: {}\n", report::utc_now()));
    doc.push_str(&format!("- Machine: {}{}\n", report::machine_note(), memory_note()));
    doc.push_str(&format!("- Command: `{invocation}`\n"));
    doc.push_str(&format!(
        "- Method: {} run(s) per program and language, interleaved; the lowest value of each \
         measure counts; runs killed after {} s\n",
        args.runs,
        limit.as_secs()
    ));
    doc.push_str(&format!(
        "- tern: `{tern_shown} run bench/programs/NAME.tern` (default worker threads: one per core){}\n",
        source_note(root)
    ));
    doc.push_str(&format!("- erlang: {erlang_shown}\n"));
    doc.push('\n');
    doc.push_str(table);
    doc.push_str(
        "\nTimes other than the wall times are measured inside the programs with a monotonic clock \
         (`mono_us()`, `erlang:monotonic_time(microsecond)`), so VM start-up is excluded. Memory per \
         idle process is the peak RSS of the OS process running `spawn` minus that of the same program \
         with its count set to 1, divided by 1,000,000; it includes the spawner's list of pids. The \
         peak RSS is the child's `ru_maxrss` from `wait4`. `tern/erlang` below 1 means Tern is faster \
         (or smaller); the targets are on that ratio. On a small shared machine the message-passing \
         times vary by tens of percent from run to run, in both languages: use several runs.\n",
    );
    doc
}

/// `, 23.5 GiB of memory` from `/proc/meminfo`, or nothing.
pub(crate) fn memory_note() -> String {
    let total_kib = fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace().nth(1)?.parse::<f64>().ok()
    });
    total_kib.map_or_else(String::new, |kib| format!(", {:.1} GiB of memory", kib / (1024.0 * 1024.0)))
}

/// `, built from commit abc1234 (with uncommitted changes)`: the source the Tern binary
/// was built from, as far as git tells; nothing if it cannot.
pub(crate) fn source_note(root: &Path) -> String {
    let git = |args: &[&str]| {
        let mut cmd = Command::new("git");
        cmd.args(args).current_dir(root);
        match exec::run_timed(&mut cmd, Duration::from_secs(30)) {
            Ok(Outcome::Exited { status, stdout, .. }) if status.success() => Some(stdout),
            _ => None,
        }
    };
    let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) else {
        return String::new();
    };
    let dirty = match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(status) if !status.trim().is_empty() => " (with uncommitted changes)",
        _ => "",
    };
    format!(", built from commit {}{dirty}", commit.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_line_is_rewritten() {
        let tern = "fn main() {\n    let count = 1_000_000; // bench:count\n    let x = 5;\n}\n";
        assert_eq!(set_count(tern, 1).unwrap(), "fn main() {\n    let count = 1; // bench:count\n    let x = 5;\n}\n");
        let erl = "-define(COUNT, 1000000). % bench:count\nmain() -> 2.\n";
        assert_eq!(set_count(erl, 1).unwrap(), "-define(COUNT, 1). % bench:count\nmain() -> 2.\n");
        assert!(set_count("let count = 7;\n", 1).is_err());
    }

    #[test]
    fn values_are_parsed() {
        let v = parse_values(" count=1000000 spawn_us=812345 total_us=9 note=x");
        assert_eq!(v.len(), 3);
        assert_eq!(v["count"], 1e6);
        assert_eq!(v["spawn_us"], 812345.0);
    }

    #[test]
    fn programs_exist_with_count_markers() {
        let dir = crate::bench_dir().join("programs");
        for program in PROGRAMS {
            for ext in ["tern", "erl"] {
                let text = fs::read_to_string(dir.join(format!("{program}.{ext}"))).unwrap();
                assert!(text.contains(&format!("{program}:")), "{program}.{ext} prints no `{program}:` line");
                if program == "spawn" {
                    set_count(&text, 1).unwrap();
                }
            }
        }
    }
}
