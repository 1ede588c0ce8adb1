//! `tern-bench forwarding-real`: the first message after a move, on real meshes — every
//! node a `tern node` OS process on loopback (QUIC, mutual TLS), 3 to 30 of them. For
//! each mesh size and forwarding mechanism a program on node a, round after round,
//! starts an echo process on another node, talks to it once (so node a is a partner),
//! moves it to a third node with that mechanism (`migrate(pid, node, {forwarding})`), and
//! times a round trip to it at once (the first message) and again (a later one); a prober
//! on a node that never talked to it does the same. Medians of the round trips, in µs,
//! in `bench/results/forwarding-real.md`, and the chart
//! `bench/results/forwarding-first-message.svg` (first-message round trip against mesh
//! size, per mechanism).

use crate::exec::{self, Outcome};
use crate::remote::TernMesh;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Args)]
pub struct ForwardingRealArgs {
    /// Mesh sizes (3 or more nodes each).
    #[arg(long, value_delimiter = ',', default_values_t = vec![3, 10, 30])]
    nodes: Vec<usize>,
    /// Moves timed per mesh size and mechanism.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// The `tern` binary (default: target/release/tern).
    #[arg(long)]
    tern: Option<PathBuf>,
    /// Do not write the results and the chart.
    #[arg(long)]
    no_write: bool,
}

const FORWARDINGS: [&str; 4] = ["link-update", "resend", "origin-site", "link-traversal"];

/// The timed program (after `let F = "..."; let ROUNDS = n;`). Each round prints
/// `sample pf=.. pl=.. ff=.. fl=..`: partner first/later, fresh first/later, µs.
const PROGRAM: &str = r#"
fn echo() {
    while true {
        let m = recv();
        send(m[0], m[1]);
    }
}
fn prober(main) {
    while true {
        let e = recv();
        let t0 = mono_us();
        send(e, [self(), 1]);
        recv();
        let t1 = mono_us();
        send(e, [self(), 2]);
        recv();
        let t2 = mono_us();
        send(main, [t1 - t0, t2 - t1]);
    }
}
let others = [];
for x in nodes() {
    if x != node() {
        push(others, x);
    }
}
let k = len(others);
let probers = [];
for x in others {
    push(probers, spawn_on(x, prober, self()));
}
for r in 0..ROUNDS {
    let e = spawn_on(others[r % k], echo);
    send(e, [self(), 0]);
    recv();
    assert(migrate(e, others[(r + 1) % k], {forwarding: F}) == true);
    let t0 = mono_us();
    send(e, [self(), 1]);
    recv();
    let t1 = mono_us();
    send(e, [self(), 2]);
    recv();
    let t2 = mono_us();
    send(probers[(r + 2) % k], e);
    let fresh = recv(30000);
    println("sample pf=${t1 - t0} pl=${t2 - t1} ff=${fresh[0]} fl=${fresh[1]}");
    kill(e);
}
for p in probers {
    kill(p);
}
"#;

/// Medians of one (mesh size, mechanism), µs.
#[derive(Debug, Clone, Default)]
struct Medians {
    partner_first: f64,
    partner_later: f64,
    fresh_first: f64,
    fresh_later: f64,
    samples: usize,
}

/// The median (NaN for none).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The medians of the `sample` lines a run printed.
fn parse(stdout: &str) -> Option<Medians> {
    let (mut pf, mut pl, mut ff, mut fl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("sample ") else { continue };
        for kv in rest.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            let v: f64 = v.parse().ok()?;
            match k {
                "pf" => pf.push(v),
                "pl" => pl.push(v),
                "ff" => ff.push(v),
                "fl" => fl.push(v),
                _ => return None,
            }
        }
    }
    let samples = pf.len();
    (samples > 0).then(|| Medians {
        partner_first: median(pf),
        partner_later: median(pl),
        fresh_first: median(ff),
        fresh_later: median(fl),
        samples,
    })
}

fn run_one(tern: &Path, mesh: &TernMesh, dir: &Path, fwd: &str, rounds: usize) -> Result<Medians> {
    let prog = dir.join(format!("first-{fwd}.tern"));
    std::fs::write(&prog, format!("let F = \"{fwd}\";\nlet ROUNDS = {rounds};\n{PROGRAM}"))?;
    let mut cmd = Command::new(tern);
    cmd.arg("ctl").arg("--config").arg(&mesh.config).args(["--node", "a", "spawn"]).arg(&prog).arg("--wait");
    match exec::run_timed(&mut cmd, Duration::from_secs(600))? {
        Outcome::Exited { status, stdout, stderr, .. } if status.success() => {
            parse(&stdout).ok_or_else(|| anyhow!("the program printed no samples:\n{stdout}{stderr}"))
        }
        Outcome::Exited { status, stdout, stderr, .. } => bail!("the program failed ({status}):\n{stdout}{stderr}"),
        Outcome::TimedOut => bail!("the program took more than 600 s"),
    }
}

pub fn run(args: &ForwardingRealArgs) -> Result<bool> {
    let root = crate::workspace_root();
    let tern = crate::vm::tern_binary(args.tern.as_deref(), &root)?;
    let temp = tempfile_dir()?;
    let mut rows: Vec<(usize, &str, Medians)> = Vec::new();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# The first message after a move, on real meshes\n\n`tern-bench forwarding-real` ({} moves per row): every node a `tern node` \
         OS process on loopback (QUIC with mutual TLS), on this machine's 2 cores. A program on node a starts an echo process on \
         another node, sends it one message (node a becomes a partner), moves it to a third node with the mechanism, then times \
         round trips to it: the first message after the move and a later one, from node a (a partner) and from a prober on a node \
         that never talked to it. Medians, µs (a round trip: the reply comes straight back).\n\n\
         | N | mechanism | partner: first | partner: later | fresh node: first | fresh node: later | moves |\n|---|---|---|---|---|---|---|",
        args.rounds
    );
    for &n in &args.nodes {
        if n < 3 {
            bail!("meshes of 3 nodes or more");
        }
        let dir = temp.join(format!("mesh-{n}"));
        eprint!("{n} nodes: starting ... ");
        let mesh = TernMesh::start_n(&tern, &dir, n).with_context(|| format!("a mesh of {n} nodes"))?;
        eprintln!("up");
        for fwd in FORWARDINGS {
            let m = run_one(&tern, &mesh, &dir, fwd, args.rounds).with_context(|| format!("{n} nodes, {fwd}"))?;
            let line = format!(
                "| {n} | {fwd} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
                m.partner_first, m.partner_later, m.fresh_first, m.fresh_later, m.samples
            );
            println!("{line}");
            let _ = writeln!(md, "{line}");
            rows.push((n, fwd, m));
        }
    }
    let _ = std::fs::remove_dir_all(&temp);
    if !args.no_write {
        let path = crate::bench_dir().join("results/forwarding-real.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        // Keep what was written under the table by hand (the reading of the numbers).
        let notes = old.split_once("\n## ").map(|(_, rest)| format!("\n## {rest}")).unwrap_or_default();
        std::fs::write(&path, format!("{md}{notes}"))?;
        println!("wrote {}", path.display());
        let svg = crate::bench_dir().join("results/forwarding-first-message.svg");
        chart(&svg, &rows)?;
        println!("wrote {}", svg.display());
    }
    Ok(true)
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("tern-bench-forwarding-real-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn colour(fwd: &str) -> plotters::style::RGBColor {
    use plotters::style::RGBColor;
    match fwd {
        "link-update" => RGBColor(0x1f, 0x77, 0xb4),
        "resend" => RGBColor(0xd6, 0x27, 0x28),
        "origin-site" => RGBColor(0x2c, 0xa0, 0x2c),
        _ => RGBColor(0x94, 0x67, 0xbd),
    }
}

/// First-message round trip against mesh size, one line per mechanism; a panel for the
/// partner and one for the fresh node.
fn chart(path: &Path, rows: &[(usize, &str, Medians)]) -> Result<()> {
    use plotters::prelude::*;
    if rows.is_empty() {
        bail!("nothing to chart");
    }
    let e = |e: &dyn std::fmt::Display| anyhow!("chart: {e}");
    let nmax = rows.iter().map(|r| r.0).max().unwrap_or(3) as f64;
    let ymax = rows.iter().map(|r| r.2.partner_first.max(r.2.fresh_first)).fold(0.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (900, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let root =
        root.titled("Tern: first message after a move vs mesh size (real nodes, loopback)", ("sans-serif", 18)).map_err(|x| e(&x))?;
    let panels = root.split_evenly((1, 2));
    type Pick = fn(&Medians) -> f64;
    let sides: [(&str, Pick); 2] = [("from a partner", |m| m.partner_first), ("from a node that never talked to it", |m| m.fresh_first)];
    for (panel, (title, pick)) in panels.iter().zip(sides) {
        let mut c = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((2.5f64..nmax * 1.3).log_scale(), 0f64..ymax.max(1.0))
            .map_err(|x| e(&x))?;
        c.configure_mesh()
            .x_desc("nodes in the mesh")
            .y_desc("round trip (µs, median)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|x| e(&x))?;
        for fwd in FORWARDINGS {
            let pts: Vec<(f64, f64)> = rows.iter().filter(|r| r.1 == fwd).map(|r| (r.0 as f64, pick(&r.2))).collect();
            let col = colour(fwd);
            c.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
                .map_err(|x| e(&x))?
                .label(fwd)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], col.stroke_width(2)));
            c.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled()))).map_err(|x| e(&x))?;
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_compiles() {
        let src = format!("let F = \"resend\";\nlet ROUNDS = 2;\n{PROGRAM}");
        tern_net::runner::compile_text("first.tern", &src).map_err(|e| e.rendered).unwrap();
    }

    #[test]
    fn samples_give_medians() {
        let m = parse("x\nsample pf=10 pl=2 ff=30 fl=4\nsample pf=20 pl=4 ff=10 fl=6\nsample pf=30 pl=3 ff=20 fl=5\n").unwrap();
        assert_eq!((m.partner_first, m.partner_later, m.fresh_first, m.fresh_later, m.samples), (20.0, 3.0, 20.0, 5.0, 3));
        assert!(parse("nothing").is_none());
    }
}
