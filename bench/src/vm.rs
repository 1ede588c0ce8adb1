//! `tern-bench vm`: VM speed against Lua 5.4, LuaJIT, CPython and Erlang/OTP.
//!
//! Every `bench/programs/NAME.tern` with a `NAME.lua` twin (the other programs there
//! belong to `procs`, `remote` and `migrate`) also has `NAME.py` and `NAME.erl` twins
//! implementing the same algorithm with the same output. Each program is run under
//! Tern twice (`--jit off`, and the default, JIT on) and under each peer (best-of-N
//! wall time, time-limited), every language's stdout must agree, and the results are
//! printed as a markdown table and written to `bench/results/vm-speed.md` (or
//! `--output`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::exec::{self, Outcome};
use crate::report;

const INSTALL_HINT: &str = "apt-get install lua5.4 luajit python3 erlang-base";

/// Peer languages run as `COMMAND FILE`: (command on PATH, source file extension).
/// Erlang, the last peer, is started differently (`erl`, after `erlc`).
const PEERS: [(&str, &str); 3] = [("lua5.4", "lua"), ("luajit", "lua"), ("python3", "py")];

/// The programs left out of the geometric means: the micro-benchmarks that are not
/// from Are We Fast Yet.
const NOT_AWFY: [&str; 3] = ["fib", "fib35", "loop"];

/// The column names of Tern's two runs: the interpreter alone, and the default.
const TERN_INTERP: &str = "tern --jit off";
const TERN_JIT: &str = "tern";

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
    /// Where to write the results document [default: bench/results/vm-speed.md].
    #[arg(long, value_name = "PATH")]
    output: Option<PathBuf>,
}

/// How a language starts a program.
#[derive(Clone, Copy, PartialEq)]
enum Launch {
    /// `exe [args...] bench/programs/NAME.ext`.
    Script(&'static [&'static str]),
    /// `erl -noshell -pa EBIN -s NAME main -s erlang halt`, `NAME.erl` having been
    /// compiled into EBIN by `erlc` first (not timed). `erlang:halt()` flushes stdout
    /// and exits at once, as the other languages do at the end of their program;
    /// `-s init stop` (the orderly shutdown `procs` uses) added about 1 s to every run.
    Erlang,
}

/// A language the suite runs.
struct Lang {
    name: &'static str,
    ext: &'static str,
    /// `None` when the interpreter is not installed: its column is skipped.
    exe: Option<PathBuf>,
    launch: Launch,
    /// One of Tern's columns: these never outvote a peer's output.
    tern: bool,
}

/// The Erlang peer: `erl`, `erlc`, and the directory the programs are compiled into.
struct ErlangPeer {
    erlc: PathBuf,
    ebin: PathBuf,
    /// Where a crash dump goes (not into the workspace).
    temp: PathBuf,
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
    let mut langs = vec![
        Lang { name: TERN_INTERP, ext: "tern", exe: Some(tern.clone()), launch: Launch::Script(&["run", "--jit", "off"]), tern: true },
        Lang { name: TERN_JIT, ext: "tern", exe: Some(tern.clone()), launch: Launch::Script(&["run"]), tern: true },
    ];
    let mut skipped = Vec::new();
    for (name, ext) in PEERS {
        let exe = exec::find_on_path(name);
        if exe.is_none() {
            warn_missing(name);
            skipped.push(name);
        }
        langs.push(Lang { name, ext, exe, launch: Launch::Script(&[]), tern: false });
    }
    let temp = crate::procs::TempDir::new("vm")?;
    let (erl, erlang) = match (exec::find_on_path("erl"), exec::find_on_path("erlc")) {
        (Some(erl), Some(erlc)) => {
            let ebin = temp.0.join("ebin");
            fs::create_dir_all(&ebin).with_context(|| format!("cannot create {}", ebin.display()))?;
            (Some(erl), Some(ErlangPeer { erlc, ebin, temp: temp.0.clone() }))
        }
        (erl, _) => {
            warn_missing(if erl.is_none() { "erl" } else { "erlc" });
            skipped.push("erl");
            (None, None)
        }
    };
    let erl_flavor = erl.as_deref().and_then(erlang_version);
    if let Some(erl) = &erl {
        match &erl_flavor {
            Some((_, flavor)) if flavor == "jit" => {}
            other => {
                let flavor = other.as_ref().map_or("unknown", |(_, f)| f.as_str());
                eprintln!(
                    "\n!!! WARNING: {} runs the `{flavor}` emulator, NOT the BEAM JIT:\n\
                     !!! the erl column measures Erlang's interpreter (build OTP >= 24 with the JIT).\n",
                    erl.display()
                );
            }
        }
    }
    langs.push(Lang { name: "erl", ext: "erl", exe: erl, launch: Launch::Erlang, tern: false });

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
        let cells = measure(program, &langs, erlang.as_ref(), &root, &programs_dir, args.runs, limit, &mut problems);
        rows.push((program.clone(), cells));
    }

    let table = render_table(&langs, &rows);
    println!("\n{table}");

    let results = args.output.clone().unwrap_or_else(|| crate::bench_dir().join("results").join("vm-speed.md"));
    let doc = results_document(args, &langs, erl_flavor.as_ref(), &tern, &root, &table);
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

fn warn_missing(name: &str) {
    eprintln!(
        "\n!!! WARNING: `{name}` is not on PATH: SKIPPING every {name} run.\n\
         !!! Install the peers with: {INSTALL_HINT}\n"
    );
}

/// `erl`'s version (`OTP 25, erts 13.1.5`) and emulator flavor (`jit` or `emu`).
fn erlang_version(erl: &Path) -> Option<(String, String)> {
    let mut cmd = Command::new(erl);
    cmd.args([
        "-noshell",
        "-eval",
        "io:format(\"OTP ~s, erts ~s~n~s~n\", [erlang:system_info(otp_release), \
         erlang:system_info(version), erlang:system_info(emu_flavor)]), halt().",
    ]);
    match exec::run_timed(&mut cmd, Duration::from_secs(60)) {
        Ok(Outcome::Exited { status, stdout, .. }) if status.success() => {
            let mut lines = stdout.lines();
            Some((lines.next()?.to_string(), lines.next()?.to_string()))
        }
        _ => None,
    }
}

/// Compiles `NAME.erl` into the peer's ebin directory; the reason when it fails.
fn compile_erl(erlang: &ErlangPeer, source: &Path, root: &Path, limit: Duration) -> Option<String> {
    let mut cmd = Command::new(&erlang.erlc);
    cmd.arg("-o").arg(&erlang.ebin).arg(source).current_dir(root);
    match exec::run_timed(&mut cmd, limit) {
        Ok(Outcome::Exited { status, .. }) if status.success() => None,
        Ok(Outcome::Exited { status, stdout, stderr, .. }) => {
            Some(format!("erlc failed ({status}){}", stderr_tail(&format!("{stdout}{stderr}"))))
        }
        Ok(Outcome::TimedOut) => Some(format!("erlc still running after {} s, killed", limit.as_secs())),
        Err(err) => Some(format!("{err:#}")),
    }
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
#[allow(clippy::too_many_arguments)]
fn measure(
    program: &str,
    langs: &[Lang],
    erlang: Option<&ErlangPeer>,
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
            } else if lang.launch == Launch::Erlang {
                let failure = erlang.map_or(Some("erlc is missing".to_string()), |e| compile_erl(e, &source, root, limit));
                failure.map(|detail| {
                    problems.push(Problem { program: program.to_string(), lang: lang.name, detail });
                    Cell::Failed
                })
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
            match (lang.launch, erlang) {
                (Launch::Script(args), _) => {
                    cmd.args(args).arg(source);
                }
                (Launch::Erlang, Some(erlang)) => {
                    cmd.args(["-noshell", "-pa"]).arg(&erlang.ebin).args(["-s", program, "main", "-s", "erlang", "halt"]);
                    cmd.env("ERL_CRASH_DUMP", erlang.temp.join(format!("erl_crash-{program}.dump")));
                }
                (Launch::Erlang, None) => continue,
            }
            cmd.current_dir(root);
            eprint!("{program:<12} {:<14} run {run}/{runs}: ", lang.name);
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

    let outputs: Vec<(bool, Option<&str>)> =
        langs.iter().zip(&state).map(|(lang, st)| (lang.tern, if st.cell.is_none() { st.stdout.as_deref() } else { None })).collect();
    let reference = reference_output(&outputs).map(str::to_string);

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

/// The expected output, from each language's (`is Tern`, output if it ran fine): the
/// one most peers printed, ties going to the earlier peer; Tern's columns vote only
/// when no peer printed anything, so Tern (which has two columns) never outvotes a
/// peer.
fn reference_output<'a>(outputs: &[(bool, Option<&'a str>)]) -> Option<&'a str> {
    let peers_ran = outputs.iter().any(|&(tern, out)| !tern && out.is_some());
    let voters: Vec<&str> = outputs.iter().filter(|&&(tern, _)| tern != peers_ran).filter_map(|&(_, out)| out).collect();
    let mut votes: HashMap<&str, usize> = HashMap::new();
    for out in &voters {
        *votes.entry(out).or_default() += 1;
    }
    let mut reference = None;
    let mut top_votes = 0;
    for out in voters {
        if votes[out] > top_votes {
            top_votes = votes[out];
            reference = Some(out);
        }
    }
    reference
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

/// The results table: seconds per language (Tern with the JIT off, Tern by default,
/// then the peers), Tern's interpreter time divided by its JIT time, Tern's (JIT) time
/// divided by each peer's, and a final row of the ratios' geometric means over the AWFY
/// programs (every program but those in `NOT_AWFY`).
///
/// `langs` starts with Tern's two columns, interpreter then JIT.
fn render_table(langs: &[Lang], rows: &[(String, Vec<Cell>)]) -> String {
    let (interp, jit, peers) = (0, 1, 2..langs.len());
    let mut headers = vec!["program".to_string()];
    headers.extend(langs.iter().map(|l| format!("{} (s)", l.name)));
    headers.push("interp/JIT".to_string());
    headers.extend(langs[peers.clone()].iter().map(|l| format!("tern/{}", l.name)));

    let ratio = |a: Cell, b: Cell| match (a.seconds(), b.seconds()) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    // One list of AWFY ratios per ratio column.
    let mut means: Vec<Vec<f64>> = vec![Vec::new(); 1 + peers.len()];
    let mut body = Vec::new();
    for (program, cells) in rows {
        let mut row = vec![program.clone()];
        row.extend(cells.iter().map(|c| c.label()));
        let ratios = std::iter::once(ratio(cells[interp], cells[jit])).chain(peers.clone().map(|p| ratio(cells[jit], cells[p])));
        for (column, r) in ratios.enumerate() {
            match r {
                Some(r) => {
                    if !NOT_AWFY.contains(&program.as_str()) {
                        means[column].push(r);
                    }
                    row.push(format!("{r:.2}"));
                }
                None => row.push("-".to_string()),
            }
        }
        body.push(row);
    }
    let mut last = vec!["geomean (AWFY)".to_string()];
    last.extend(langs.iter().map(|_| String::new()));
    last.extend(means.iter().map(|r| match report::geometric_mean(r) {
        Some(g) => format!("{g:.2}"),
        None => "-".to_string(),
    }));
    body.push(last);
    report::markdown_table(&headers, &body)
}

/// `bench/results/vm-speed.md`: the table with when, where and how it was measured.
fn results_document(args: &VmArgs, langs: &[Lang], erl_flavor: Option<&(String, String)>, tern: &Path, root: &Path, table: &str) -> String {
    let mut invocation = String::from("cargo run --release -p tern-bench -- vm");
    if let Some(f) = &args.filter {
        invocation.push_str(&format!(" --filter {f}"));
    }
    invocation.push_str(&format!(" --runs {}", args.runs));
    if let Some(out) = &args.output {
        invocation.push_str(&format!(" --output {}", out.display()));
    }
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
    doc.push_str(&format!(
        "- tern: `{tern_shown}`, run as `tern run --jit off FILE` ({TERN_INTERP}) and `tern run FILE` \
         ({TERN_JIT}: the default, JIT on)\n"
    ));
    for lang in langs.iter().filter(|l| !l.tern) {
        let version = match (&lang.exe, lang.launch) {
            (Some(_), Launch::Erlang) => {
                match erl_flavor {
                    Some((version, flavor)) if flavor == "jit" => {
                        format!("{version}, emu_flavor {flavor} (the BEAM JIT); `erl -noshell -pa EBIN -s NAME main -s erlang halt` after `erlc`")
                    }
                    Some((version, flavor)) => format!("{version}, emu_flavor {flavor}: **NOT the BEAM JIT**, Erlang's interpreter"),
                    None => "version unknown (emu_flavor unknown)".into(),
                }
            }
            (Some(exe), Launch::Script(_)) => {
                let flag = if lang.name == "python3" { "--version" } else { "-v" };
                exec::first_line_of(exe, &[flag]).unwrap_or_else(|| "version unknown".into())
            }
            (None, _) => format!("not installed, skipped ({INSTALL_HINT})"),
        };
        doc.push_str(&format!("- {}: {version}\n", lang.name));
    }
    doc.push('\n');
    doc.push_str(table);
    doc.push_str(
        "\n`interp/JIT` is Tern's time with `--jit off` divided by its time with the JIT (above \
         1: the JIT is faster). The `tern/PEER` ratios are Tern's time with the JIT divided by \
         the peer's: below 1 Tern is faster, above 1 slower. The geomean row is over the AWFY \
         programs (all but fib, fib35 and loop). MISMATCH means the program's output differed \
         from the other languages'.\n",
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

    /// Every program of the suite has all its twins, `fib35` included.
    #[test]
    fn every_program_has_a_python_and_an_erlang_twin() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("programs");
        let names = super::discover(&dir, None).unwrap();
        assert!(names.iter().any(|n| n == "fib35"), "{names:?}");
        for name in &names {
            for ext in ["py", "erl"] {
                assert!(dir.join(format!("{name}.{ext}")).is_file(), "{name}.{ext} is missing");
            }
        }
    }

    /// Tern has two columns; together they must not outvote a single peer.
    #[test]
    fn tern_never_outvotes_a_peer() {
        let pick = super::reference_output;
        assert_eq!(pick(&[(true, Some("t")), (true, Some("t")), (false, Some("p"))]), Some("p"));
        assert_eq!(pick(&[(true, Some("t")), (true, Some("t")), (false, Some("a")), (false, Some("b")), (false, Some("b"))]), Some("b"));
        assert_eq!(pick(&[(true, Some("t")), (true, Some("t")), (false, Some("a")), (false, Some("b"))]), Some("a"));
        assert_eq!(pick(&[(true, Some("t")), (true, Some("u")), (false, None)]), Some("t"));
        assert_eq!(pick(&[(true, None), (false, None)]), None);
    }

    /// The table: both Tern columns, interp/JIT, Tern's JIT time against each peer, and
    /// geometric means over the AWFY programs only.
    #[test]
    fn table_has_jit_ratios_and_an_awfy_geomean() {
        use super::{Cell, Lang, Launch};
        use std::time::Duration;
        let lang = |name, tern| Lang { name, ext: "x", exe: None, launch: Launch::Script(&[]), tern };
        let langs = [lang("tern --jit off", true), lang("tern", true), lang("lua5.4", false), lang("erl", false)];
        let t = |s: f64| Cell::Time(Duration::from_secs_f64(s));
        let rows = vec![
            ("fib".to_string(), vec![t(9.0), t(1.0), t(1.0), t(1.0)]),
            ("sieve".to_string(), vec![t(2.0), t(1.0), t(0.5), Cell::Skipped]),
            ("towers".to_string(), vec![t(8.0), t(2.0), t(0.5), t(4.0)]),
        ];
        let expected = "\
| program        | tern --jit off (s) | tern (s) | lua5.4 (s) | erl (s) | interp/JIT | tern/lua5.4 | tern/erl |
|----------------|-------------------:|---------:|-----------:|--------:|-----------:|------------:|---------:|
| fib            |              9.000 |    1.000 |      1.000 |   1.000 |       9.00 |        1.00 |     1.00 |
| sieve          |              2.000 |    1.000 |      0.500 | skipped |       2.00 |        2.00 |        - |
| towers         |              8.000 |    2.000 |      0.500 |   4.000 |       4.00 |        4.00 |     0.50 |
| geomean (AWFY) |                    |          |            |         |       2.83 |        2.83 |     0.50 |
";
        assert_eq!(super::render_table(&langs, &rows), expected);
    }
}
