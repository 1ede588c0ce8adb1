//! The affinity policy's throughput (`cargo run --release -p tern-bench -- affinity`):
//! pairs of processes that message each other continuously (a ping and its pong, each
//! round trip checked), every pair started split across two nodes of a 3-node loopback
//! mesh (pair k on nodes k mod 3 and k+1 mod 3), each node its own `tern node` OS
//! process. Run with `[policy] mode = "off"` and then `"affinity"` (the mesh.toml
//! defaults otherwise), alternating, a fresh mesh each run. Once the migrations have
//! stopped (none for `--quiet` seconds) the round trips are counted for `--measure`
//! seconds; messages per second are twice the round trips per second. The settle time
//! is from the pairs' start to the last move; the migrations are the processes' moves
//! (`tern ctl --json top`), and the nodes' utilization is read while measuring, against
//! the watermarks. Results: `bench/results/policy-affinity.md`.

use crate::exec::{self, KillOnDrop, Outcome};
use crate::forwarding_real::median;
use crate::procs::{self, TempDir};
use crate::remote::TernMesh;
use anyhow::{anyhow, bail, Context, Result};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct AffinityArgs {
    /// Runs per mode, interleaved (a fresh mesh each); the medians count.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Pairs of processes.
    #[arg(long, value_name = "N", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..1000))]
    pairs: u32,
    /// The policy mode measured against "off" (affinity or both).
    #[arg(long, value_name = "MODE", default_value = "affinity")]
    mode: String,
    /// Worker threads per node.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..64))]
    workers: u64,
    /// Seconds the round trips are counted for, once settled.
    #[arg(long, value_name = "S", default_value_t = 10)]
    measure: u64,
    /// Seconds without a migration that count as settled.
    #[arg(long, value_name = "S", default_value_t = 5)]
    quiet: u64,
    /// Most seconds to wait for the mesh to settle.
    #[arg(long, value_name = "S", default_value_t = 120)]
    settle_limit: u64,
    /// The Tern binary. Without it the runner builds <workspace>/target/release/tern.
    #[arg(long, value_name = "PATH")]
    tern: Option<std::path::PathBuf>,
    /// Use <workspace>/target/release/tern as it is, without building it first.
    #[arg(long)]
    no_build: bool,
    /// Write the results here instead of bench/results/policy-affinity.md.
    #[arg(long, value_name = "FILE")]
    out: Option<std::path::PathBuf>,
}

/// The workload. Main prints its pid, starts the pairs and says so; then it waits for
/// "mark" (each ping counts from there) and "stop" (each ping ends after its round trip
/// in flight, asks its pong where it is, and reports), and prints the round trips, the
/// time between, whether every reply was the one due, and how many pairs ended together.
fn program(pairs: u32) -> String {
    format!(
        r#"fn pong() {{
    while true {{
        let m = recv();
        if m[1] < 0 {{
            send(m[0], node());
            break;
        }}
        send(m[0], m[1]);
    }}
}}
fn ping(partner, parent) {{
    let n = 0;
    let marked = 0;
    let ok = true;
    let stop = false;
    while not stop {{
        send(partner, [self(), n]);
        let waiting = true;
        while waiting {{
            let m = recv();
            if m == "mark" {{
                marked = n;
            }} else if m == "stop" {{
                stop = true;
            }} else {{
                if m != n {{ ok = false; }}
                waiting = false;
            }}
        }}
        n += 1;
    }}
    send(partner, [self(), -1]);
    let there = recv();
    send(parent, [n - marked, ok, node() == there]);
}}
println("me ${{self()}}");
let names = nodes();
let pings = [];
for k in 0..{pairs} {{
    let q = spawn_on(names[(k + 1) % len(names)], pong);
    push(pings, spawn_on(names[k % len(names)], ping, q, self()));
}}
println("started ${{len(pings)}} pairs on ${{len(names)}} nodes");
recv();
for p in pings {{ send(p, "mark"); }}
let t0 = mono_ms();
recv();
let t1 = mono_ms();
for p in pings {{ send(p, "stop"); }}
let total = 0;
let right = true;
let together = 0;
for p in pings {{
    let r = recv();
    total += r[0];
    if not r[1] {{ right = false; }}
    if r[2] {{ together += 1; }}
}}
println("round trips ${{total}} in ${{t1 - t0}} ms; every reply right: ${{right}}; pairs together: ${{together}}");
"#
    )
}

/// One run's numbers.
struct RunResult {
    msgs_per_s: f64,
    settle_s: f64,
    moves: u64,
    together: u64,
    /// Each node's utilization while measuring, per mille.
    util_pm: Vec<(String, u64)>,
}

fn ctl(tern: &Path, config: &Path, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(tern);
    cmd.arg("ctl").arg("--config").arg(config).args(args);
    match exec::run_timed(&mut cmd, Duration::from_secs(60))? {
        Outcome::Exited { status, stdout, .. } if status.success() => Ok(stdout),
        Outcome::Exited { status, stdout, stderr, .. } => bail!("tern ctl {args:?} failed ({status}): {stdout}{stderr}"),
        Outcome::TimedOut => bail!("tern ctl {args:?} took more than 60 s"),
    }
}

/// The processes' moves so far and each node's utilization (per mille).
fn moves_and_util(tern: &Path, config: &Path) -> Result<(u64, Vec<(String, u64)>)> {
    let out = ctl(tern, config, &["--json", "top", "--once", "--procs", "1000"])?;
    let v: serde_json::Value = serde_json::from_str(out.trim()).with_context(|| format!("top printed {out:?}"))?;
    let nodes = v.as_array().ok_or_else(|| anyhow!("top printed {out:?}"))?;
    let mut moves = 0;
    let mut util = Vec::new();
    for n in nodes {
        for p in n["procs"].as_array().into_iter().flatten() {
            moves += p["moves"].as_u64().unwrap_or(0);
        }
        util.push((n["node"].as_str().unwrap_or("?").to_string(), n["load"]["utilization_pm"].as_u64().unwrap_or(0)));
    }
    Ok((moves, util))
}

/// The next line the program printed that satisfies `f`, within `limit`.
fn line_where(lines: &mpsc::Receiver<String>, limit: Duration, f: impl Fn(&str) -> bool) -> Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now()).ok_or_else(|| anyhow!("no such line within {limit:?}"))?;
        match lines.recv_timeout(left) {
            Ok(l) if f(&l) => return Ok(l),
            Ok(_) => {}
            Err(_) => bail!("the program ended or printed nothing expected within {limit:?}"),
        }
    }
}

fn run_once(tern: &Path, dir: &Path, mode: &str, file: &Path, args: &AffinityArgs) -> Result<RunResult> {
    let extra = format!("\n[policy]\nmode = \"{mode}\"\n");
    let mesh = TernMesh::start_with(tern, dir, 3, &extra, Some(args.workers as usize))?;
    let config = mesh.config.clone();
    let mut cmd = Command::new(tern);
    cmd.arg("ctl").arg("--config").arg(&config).args(["--node", "a", "spawn"]).arg(file).arg("--wait");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    // Kills the waiting `tern ctl spawn` when a run ends early.
    let mut child = KillOnDrop(cmd.spawn().context("cannot start tern ctl spawn")?);
    let stdout = child.0.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let me = line_where(&lines, Duration::from_secs(60), |l| l.starts_with("me <pid "))?;
    let pid = me.trim_start_matches("me <pid ").trim_end_matches('>').to_string();
    line_where(&lines, Duration::from_secs(60), |l| l.starts_with("started "))?;
    let started = Instant::now();

    // Settled: no move for `quiet` seconds.
    let (mut moves, _) = moves_and_util(tern, &config)?;
    let mut last_move = started;
    let mut last_change = Instant::now();
    while last_change.elapsed() < Duration::from_secs(args.quiet) {
        if started.elapsed() > Duration::from_secs(args.settle_limit) {
            eprint!("(not settled within {} s) ", args.settle_limit);
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        let (m, _) = moves_and_util(tern, &config)?;
        if m != moves {
            moves = m;
            last_move = Instant::now();
            last_change = last_move;
        }
    }
    let settle_s = if moves == 0 { 0.0 } else { last_move.duration_since(started).as_secs_f64() };

    ctl(tern, &config, &["--node", "a", "send", &pid, "\"mark\""])?;
    std::thread::sleep(Duration::from_secs(args.measure / 2));
    let (moves_meanwhile, util_pm) = moves_and_util(tern, &config)?;
    std::thread::sleep(Duration::from_secs(args.measure - args.measure / 2));
    ctl(tern, &config, &["--node", "a", "send", &pid, "\"stop\""])?;
    let last = line_where(&lines, Duration::from_secs(120), |l| l.starts_with("round trips "))?;
    // "round trips N in T ms; every reply right: B; pairs together: P"
    let words: Vec<&str> = last.split_whitespace().collect();
    let num = |i: usize| words.get(i).and_then(|w| w.trim_end_matches(';').parse::<u64>().ok()).ok_or_else(|| anyhow!("{last}"));
    let (trips, ms, together) = (num(2)?, num(4)?, num(12)?);
    if !last.contains("every reply right: true") {
        bail!("a reply was not the one due: {last}");
    }
    let (moves_end, _) = moves_and_util(tern, &config).unwrap_or((moves_meanwhile, Vec::new()));
    drop(child);
    drop(mesh);
    Ok(RunResult { msgs_per_s: 2.0 * trips as f64 / (ms.max(1) as f64 / 1000.0), settle_s, moves: moves_end.max(moves), together, util_pm })
}

pub fn run(args: &AffinityArgs) -> Result<bool> {
    if !matches!(args.mode.as_str(), "affinity" | "both") {
        bail!("--mode is affinity or both, not {:?}", args.mode);
    }
    if args.measure < 2 {
        bail!("--measure is at least 2 seconds");
    }
    let root = crate::workspace_root();
    let tern = procs::tern_to_measure(args.tern.as_deref(), args.no_build, &root)?;
    let temp = TempDir::new("affinity")?;
    let file = temp.0.join("pairs.tern");
    fs::write(&file, program(args.pairs)).context("cannot write the pairs program")?;
    let mut rows: Vec<[RunResult; 2]> = Vec::new();
    for run in 1..=args.runs {
        let mut row = Vec::new();
        for mode in ["off", args.mode.as_str()] {
            eprint!("run {run}/{}: policy {mode:<8} ... ", args.runs);
            let r = run_once(&tern, &temp.0.join(format!("{mode}-{run}")), mode, &file, args)?;
            let util: Vec<String> = r.util_pm.iter().map(|(n, u)| format!("{n} {}%", u / 10)).collect();
            eprintln!(
                "{:.0} msgs/s, settled at {:.1} s, {} migrations, {} of {} pairs together, utilization {}",
                r.msgs_per_s,
                r.settle_s,
                r.moves,
                r.together,
                args.pairs,
                util.join(", ")
            );
            row.push(r);
        }
        let [off, on]: [RunResult; 2] = row.try_into().map_err(|_| anyhow!("two modes per run"))?;
        rows.push([off, on]);
    }
    let off = median(rows.iter().map(|r| r[0].msgs_per_s).collect());
    let on = median(rows.iter().map(|r| r[1].msgs_per_s).collect());
    let ratio = on / off;
    let mode = &args.mode;
    let mut doc = String::from("# The affinity policy: pairs of talking processes split across nodes\n\n");
    doc += &format!(
        "`cargo run --release -p tern-bench -- affinity --runs {} --pairs {} --mode {mode} --workers {} --measure {} --quiet {}`: \
         {} pairs of processes that message each other continuously (a ping and its pong; every reply checked), each pair \
         started split across two nodes of a 3-node loopback mesh (pair k on nodes k mod 3 and k+1 mod 3); each node is its own \
         `tern node` OS process with {} worker thread(s). Each run starts a fresh mesh; policy off and `mode = \"{mode}\"` \
         (every other `[policy]` key at its default: watermarks 30% and 80%, hysteresis 1000 ms, residence 2000 ms) alternate. \
         Settled: no migration for {} s; then the round trips are counted for {} s (messages = 2 per round trip). Settle time: \
         from the pairs' start to the last move. Utilization: each node's workers' busy time while measuring.\n\n",
        args.runs, args.pairs, args.workers, args.measure, args.quiet, args.pairs, args.workers, args.quiet, args.measure
    );
    doc += &format!(
        "| run | off: msgs/s | {mode}: msgs/s | ratio | settle (s) | migrations | pairs together | utilization ({mode}) |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    for (i, [a, b]) in rows.iter().enumerate() {
        let util: Vec<String> = b.util_pm.iter().map(|(n, u)| format!("{n} {}%", u / 10)).collect();
        doc += &format!(
            "| {} | {:.0} | {:.0} | {:.2}x | {:.1} | {} | {} of {} | {} |\n",
            i + 1,
            a.msgs_per_s,
            b.msgs_per_s,
            b.msgs_per_s / a.msgs_per_s,
            b.settle_s,
            b.moves,
            b.together,
            args.pairs,
            util.join(", ")
        );
    }
    let settle = median(rows.iter().map(|r| r[1].settle_s).collect());
    doc += &format!(
        "| median | {off:.0} | {on:.0} | **{ratio:.2}x** | {settle:.1} | | | |\n\n\
         Target: at least 2x the messages per second of the policy-off run once settled, every node's load within the \
         watermarks.\n"
    );
    let busiest = rows.iter().flat_map(|r| r[1].util_pm.iter().map(|u| u.1)).max().unwrap_or(0);
    let idlest = rows.iter().flat_map(|r| r[1].util_pm.iter().map(|u| u.1)).min().unwrap_or(0);
    if busiest > 800 {
        doc += &format!(
            "\nThe watermarks: once settled every node's utilization was {}-{}%, above the 80% high watermark, and \
             within {} points of each other. A pair that talks as fast as it can is a closed loop: together on one node \
             it uses every cycle its worker gives it, where split it waits for the network (the policy-off run's nodes \
             are about half busy doing less work). So for this workload a node's utilization says how much work it \
             does, not that it is overloaded; affinity moves a pair to a node above the watermark only while that \
             node is no busier than the one the pair leaves, which is what keeps the nodes even.\n",
            idlest / 10,
            busiest / 10,
            (busiest - idlest) / 10
        );
    }
    let out = args.out.clone().unwrap_or_else(|| crate::bench_dir().join("results").join("policy-affinity.md"));
    fs::write(&out, &doc).with_context(|| format!("cannot write {}", out.display()))?;
    print!("{doc}");
    eprintln!("wrote {}", out.display());
    Ok(true)
}
