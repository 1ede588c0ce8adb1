//! `tern-bench vm`: VM speed against Lua 5.4, LuaJIT and CPython.
//!
//! Every `bench/programs/NAME.tern` (except the process benchmarks, which have a
//! `NAME.erl` twin instead) has `NAME.lua` and `NAME.py` twins implementing the
//! same algorithm with the same output. Each program is run under each language
//! (best-of-N wall time, time-limited), every language's stdout must agree, and the
//! results are printed as a markdown table and written to `bench/results/vm-speed.md`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::exec::{self, Outcome};
use crate::report;

const INSTALL_HINT: &str = "apt-get install lua5.4 luajit python3";

/// Peer languages: (command on PATH, source file extension).
const PEERS: [(&str, &str); 3] = [("lua5.4", "lua"), ("luajit", "lua"), ("python3", "py")];

#[derive(clap::Args)]
pub struct VmArgs {
    /// Only run programs whose name contains NAME (comma-separated for several).
    #[arg(long, value_name = "NAME")]
    filter: Option<String>,
    /// Runs per program and language; the best wall time counts.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// The Tern binary [default: <workspace>/target/release/tern].
    #[arg(long, value_name = "PATH")]
    tern: Option<PathBuf>,
    /// Kill a run after this many seconds; it is reported as TIMEOUT.
    #[arg(long, value_name = "SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

/// A language the suite runs: `exe [args...] bench/programs/NAME.ext`.
struct Lang {
    name: &'static str,
    ext: &'static str,
    /// `None` when the interpreter is not installed: its column is skipped.
    exe: Option<PathBuf>,
    args: &'static [&'static str],
}

/// One table cell: how a program fared under one language.
#[derive(Clone, Copy, PartialEq)]
enum Cell {
    /// Best wall time, output agreed with the reference.
    Time(Duration),
    Mismatch,
    Failed,
    Timeout,
    /// The interpreter is not installed.
    Skipped,
    /// The program has no source file for this language.
    NoSource,
}

impl Cell {
    fn label(self) -> String {
        match self {
            Cell::Time(t) => format!("{:.3}", t.as_secs_f64()),
            Cell::Mismatch => "MISMATCH".into(),
            Cell::Failed => "FAILED".into(),
            Cell::Timeout => "TIMEOUT".into(),
            Cell::Skipped => "skipped".into(),
            Cell::NoSource => "no source".into(),
        }
    }

    fn seconds(self) -> Option<f64> {
        match self {
            Cell::Time(t) => Some(t.as_secs_f64()),
            _ => None,
        }
    }
}

/// Something that makes the run fail, explained after the table.
struct Problem {
    program: String,
    lang: &'static str,
    detail: String,
}

/// Runs the suite; `Ok(false)` when some program failed, timed out or disagreed.
pub fn run(args: &VmArgs) -> Result<bool> {
    let root = crate::workspace_root();
    let programs_dir = crate::bench_dir().join("programs");
    let limit = Duration::from_secs(args.timeout);

    let tern = tern_binary(args.tern.as_deref(), &root)?;
    let mut langs = vec![Lang { name: "tern", ext: "tern", exe: Some(tern.clone()), args: &["run"] }];
    let mut skipped = Vec::new();
    for (name, ext) in PEERS {
        let exe = exec::find_on_path(name);
        if exe.is_none() {
            eprintln!(
                "\n!!! WARNING: `{name}` is not on PATH: SKIPPING every {name} run.\n\
                 !!! Install the peers with: {INSTALL_HINT}\n"
            );
            skipped.push(name);
        }
        langs.push(Lang { name, ext, exe, args: &[] });
    }

    let programs = discover(&programs_dir, args.filter.as_deref())?;
    eprintln!(
        "running {} program(s) x {} language(s), best of {} run(s), timeout {} s",
        programs.len(),
        langs.len() - skipped.len(),
        args.runs,
        args.timeout
    );

    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for program in &programs {
        let cells = measure(program, &langs, &root, &programs_dir, args.runs, limit, &mut problems);
        rows.push((program.clone(), cells));
    }

    let table = render_table(&langs, &rows);
    println!("\n{table}");

    let results = crate::bench_dir().join("results").join("vm-speed.md");
    let doc = results_document(args, &langs, &tern, &root, &table);
    report::write_file(&results, &doc)?;
    eprintln!("wrote {}", results.display());

    for name in &skipped {
        eprintln!("!!! WARNING: {name} was skipped (not installed; {INSTALL_HINT})");
    }
    if problems.is_empty() {
        return Ok(true);
    }
    eprintln!("\n{} problem(s):", problems.len());
    for p in &problems {
        eprintln!("- {} under {}: {}", p.program, p.lang, p.detail);
    }
    Ok(false)
}

/// The Tern binary to benchmark: `--tern PATH` (a path, or a name on PATH) or
/// `<workspace>/target/release/tern`. Fails with a build hint when it is missing.
pub(crate) fn tern_binary(explicit: Option<&Path>, root: &Path) -> Result<PathBuf> {
    let path = match explicit {
        Some(p) if p.components().count() == 1 && !p.exists() => {
            exec::find_on_path(&p.to_string_lossy()).unwrap_or_else(|| p.to_path_buf())
        }
        Some(p) => p.to_path_buf(),
        None => root.join("target").join("release").join("tern"),
    };
    if !exec::is_executable(&path) {
        bail!(
            "the Tern binary {} is missing (or not executable).\n\
             Build it first with `cargo build --release` in {} (or pass --tern PATH).",
            path.display(),
            root.display()
        );
    }
    // Children run in the workspace root, so a relative path must be made absolute.
    fs::canonicalize(&path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// The benchmark names: every `NAME.tern` in `dir` with a `NAME.lua` twin (the peers'
/// version; the other programs there belong to `procs`, `remote` and `migrate`), sorted,
/// narrowed by the filter.
fn discover(dir: &Path, filter: Option<&str>) -> Result<Vec<String>> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot read programs in {}", dir.display()))?;
    let wanted: Vec<&str> = filter.map(|f| f.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    let mut names = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("tern") || !path.with_extension("lua").is_file() {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if wanted.is_empty() || wanted.iter().any(|w| name.contains(w)) {
            names.push(name.to_string());
        }
    }
    names.sort();
    if names.is_empty() {
        match filter {
            Some(f) => bail!("no program in {} matches --filter {f}", dir.display()),
            None => bail!("no .tern programs in {}", dir.display()),
        }
    }
    Ok(names)
}

/// Per-language state while one program is measured.
struct Runs {
    cell: Option<Cell>,
    best: Option<Duration>,
    stdout: Option<String>,
}

/// Runs one program under every language (interleaving the runs, so a slow drift in
/// machine speed does not favour one language) and checks the outputs agree.
fn measure(
    program: &str,
    langs: &[Lang],
    root: &Path,
    programs_dir: &Path,
    runs: u32,
    limit: Duration,
    problems: &mut Vec<Problem>,
) -> Vec<Cell> {
    let mut state: Vec<Runs> = langs
        .iter()
        .map(|lang| {
            let source = programs_dir.join(format!("{program}.{}", lang.ext));
            let cell = if lang.exe.is_none() {
                Some(Cell::Skipped)
            } else if !source.is_file() {
                problems.push(Problem {
                    program: program.to_string(),
                    lang: lang.name,
                    detail: format!("{} does not exist", source.display()),
                });
                Some(Cell::NoSource)
            } else {
                None
            };
            Runs { cell, best: None, stdout: None }
        })
        .collect();

    for run in 1..=runs {
        for (lang, st) in langs.iter().zip(state.iter_mut()) {
            let (Some(exe), None) = (&lang.exe, st.cell) else {
                continue;
            };
            let source = programs_dir.join(format!("{program}.{}", lang.ext));
            let source = source.strip_prefix(root).unwrap_or(&source);
            let mut cmd = Command::new(exe);
            cmd.args(lang.args).arg(source).current_dir(root);
            eprint!("{program:<12} {:<8} run {run}/{runs}: ", lang.name);
            let failure = match exec::run_timed(&mut cmd, limit) {
                Err(err) => Some((Cell::Failed, format!("{err:#}"))),
                Ok(Outcome::TimedOut) => Some((Cell::Timeout, format!("still running after {} s, killed", limit.as_secs()))),
                Ok(Outcome::Exited { status, stdout, stderr, wall, .. }) => {
                    if !status.success() {
                        Some((Cell::Failed, format!("{status}{}", stderr_tail(&stderr))))
                    } else if st.stdout.as_ref().is_some_and(|prev| *prev != stdout) {
                        Some((Cell::Mismatch, "output differs from its own previous run".to_string()))
                    } else {
                        eprintln!("{:.3} s", wall.as_secs_f64());
                        st.best = Some(st.best.map_or(wall, |b| b.min(wall)));
                        st.stdout = Some(stdout);
                        None
                    }
                }
            };
            if let Some((cell, detail)) = failure {
                eprintln!("{}", cell.label());
                st.cell = Some(cell);
                problems.push(Problem { program: program.to_string(), lang: lang.name, detail });
            }
        }
    }

    // The reference output is the one most languages printed; ties go to the earlier
    // language in PEERS order (tern last), so Tern never outvotes a single peer.
    let mut votes: HashMap<&str, usize> = HashMap::new();
    for st in &state {
        if let (None, Some(out)) = (st.cell, &st.stdout) {
            *votes.entry(out.as_str()).or_default() += 1;
        }
    }
    let mut reference: Option<String> = None;
    let mut top_votes = 0;
    for i in (1..langs.len()).chain([0]) {
        if let (None, Some(out)) = (state[i].cell, &state[i].stdout) {
            if votes[out.as_str()] > top_votes {
                top_votes = votes[out.as_str()];
                reference = Some(out.clone());
            }
        }
    }

    langs
        .iter()
        .zip(state)
        .map(|(lang, st)| {
            if let Some(cell) = st.cell {
                return cell;
            }
            let (Some(best), Some(out)) = (st.best, st.stdout) else {
                return Cell::Failed;
            };
            match &reference {
                Some(expected) if *expected != out => {
                    problems.push(Problem { program: program.to_string(), lang: lang.name, detail: describe_mismatch(expected, &out) });
                    Cell::Mismatch
                }
                _ => Cell::Time(best),
            }
        })
        .collect()
}

/// The last few lines of a failed run's output, indented for the problem list.
pub(crate) fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = &lines[lines.len().saturating_sub(8)..];
    if tail.is_empty() {
        return String::new();
    }
    let mut out = String::from("; output ends with:");
    for line in tail {
        out.push_str("\n    ");
        out.push_str(line);
    }
    out
}

/// The first line where `got` differs from `expected`.
fn describe_mismatch(expected: &str, got: &str) -> String {
    let mut exp = expected.lines();
    let mut act = got.lines();
    let mut line = 1;
    loop {
        match (exp.next(), act.next()) {
            (Some(e), Some(g)) if e == g => line += 1,
            (None, None) => return "output differs only in whitespace".to_string(),
            (e, g) => {
                let show = |s: Option<&str>| match s {
                    Some(s) if s.chars().count() > 120 => {
                        format!("`{}...`", s.chars().take(120).collect::<String>())
                    }
                    Some(s) => format!("`{s}`"),
                    None => "end of output".to_string(),
                };
                return format!("output differs at line {line}: expected {}, got {}", show(e), show(g));
            }
        }
    }
}

/// The results table: seconds per language, Tern's ratio to each peer, and a final row
/// of the ratios' geometric means.
fn render_table(langs: &[Lang], rows: &[(String, Vec<Cell>)]) -> String {
    let mut headers = vec!["program".to_string()];
    headers.extend(langs.iter().map(|l| format!("{} (s)", l.name)));
    headers.extend(langs[1..].iter().map(|l| format!("tern/{}", l.name)));

    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); langs.len() - 1];
    let mut body = Vec::new();
    for (program, cells) in rows {
        let mut row = vec![program.clone()];
        row.extend(cells.iter().map(|c| c.label()));
        for (i, peer) in cells[1..].iter().enumerate() {
            match (cells[0].seconds(), peer.seconds()) {
                (Some(t), Some(p)) if p > 0.0 => {
                    ratios[i].push(t / p);
                    row.push(format!("{:.2}", t / p));
                }
                _ => row.push("-".to_string()),
            }
        }
        body.push(row);
    }
    let mut last = vec!["geomean".to_string()];
    last.extend(langs.iter().map(|_| String::new()));
    last.extend(ratios.iter().map(|r| match report::geometric_mean(r) {
        Some(g) => format!("{g:.2}"),
        None => "-".to_string(),
    }));
    body.push(last);
    report::markdown_table(&headers, &body)
}

/// `bench/results/vm-speed.md`: the table with when, where and how it was measured.
fn results_document(args: &VmArgs, langs: &[Lang], tern: &Path, root: &Path, table: &str) -> String {
    let mut invocation = String::from("cargo run --release -p tern-bench -- vm");
    if let Some(f) = &args.filter {
        invocation.push_str(&format!(" --filter {f}"));
    }
    invocation.push_str(&format!(" --runs {}", args.runs));
    let tern_shown = tern.strip_prefix(root).unwrap_or(tern).display().to_string();

    let mut doc = String::from("# Tern VM speed\n\n");
    doc.push_str(&format!("- Date: {}\n", report::utc_now()));
    doc.push_str(&format!("- Machine: {}\n", report::machine_note()));
    doc.push_str(&format!("- Command: `{invocation}`\n"));
    doc.push_str(&format!(
        "- Method: best of {} run(s) per language, wall-clock seconds for the whole \
         process (startup included); runs killed after {} s\n",
        args.runs, args.timeout
    ));
    doc.push_str(&format!("- tern: `{tern_shown}`\n"));
    for lang in &langs[1..] {
        let version = match &lang.exe {
            Some(exe) => {
                let flag = if lang.name == "python3" { "--version" } else { "-v" };
                exec::first_line_of(exe, &[flag]).unwrap_or_else(|| "version unknown".into())
            }
            None => format!("not installed, skipped ({INSTALL_HINT})"),
        };
        doc.push_str(&format!("- {}: {version}\n", lang.name));
    }
    doc.push('\n');
    doc.push_str(table);
    doc.push_str(
        "\nRatios are Tern's time divided by the peer's: below 1 Tern is faster, above 1 \
         slower. MISMATCH means the program's output differed from the other languages'.\n",
    );
    doc
}

#[cfg(test)]
mod tests {
    /// `tern-bench vm` once took `migrate_heap.tern` (the migration suite's) for one of
    /// its programs and failed on it.
    #[test]
    fn the_suite_takes_only_programs_with_a_lua_twin() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("programs");
        let names = super::discover(&dir, None).unwrap();
        assert!(names.iter().any(|n| n == "fib"), "{names:?}");
        for other in ["migrate_heap", "spawn", "ring", "remote_pingpong"] {
            assert!(!names.iter().any(|n| n == other), "{other} is not a VM benchmark: {names:?}");
        }
    }
}
