//! QEMU's pre-copy live migration, the migration anchor of `tern-bench migrate`: for each
//! heap size of the run, two `qemu-system-x86_64` processes on loopback (a source whose
//! guest RAM is filled with random bytes, and a destination waiting with `-incoming
//! defer`), driven over QMP (JSON on a unix socket; the small client is here), and the
//! source's `query-migrate` figures once the migration has completed.
//!
//! The guest is stopped (`-S`, QEMU's `prelaunch` state: no vCPU runs, so no page is
//! dirtied during the migration), as Tern's writer `none` is idle. Its RAM is filled
//! before the migration by two `-device loader` blobs of random bytes (written at the
//! machine's reset, before `-S` stops it): the 640 KiB of conventional memory at 0 and
//! everything from 1 MiB to the end of RAM. Only the 384 KiB hole under the VGA window and
//! the BIOS (0xa0000 to 0xfffff) stays zero, and QEMU's own RAM blocks (BIOS, option ROM,
//! ACPI tables: about 0.5 MiB) are migrated as well: `ram.normal` (pages sent whole)
//! against `ram.duplicate` (zero pages, sent as a flag) says how much was non-zero.
//!
//! Every QEMU process is a [`KillOnDrop`] (killed and reaped on every path out), every wait
//! is bounded, and each size's files (random blobs, sockets, logs) live in a directory of
//! their own that is removed after it.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::exec::{self, KillOnDrop};
use crate::migrate::size_label;
use crate::report;

/// The emulator.
pub const BINARY: &str = "qemu-system-x86_64";
/// How to install it (Debian).
pub const INSTALL_HINT: &str = "apt-get install qemu-system-x86";

/// Conventional memory below the VGA window: filled from guest address 0.
const LOW_RAM_BYTES: u64 = 0xa_0000;
/// Where RAM continues above the VGA window and the BIOS (filled to the end of RAM).
const HIGH_RAM_START: u64 = 0x10_0000;
/// `downtime-limit` asked of QEMU, ms.
const DOWNTIME_LIMIT_MS: u64 = 1;
/// `max-bandwidth` asked of QEMU, bytes/s: effectively unlimited (QEMU 7.2's default is
/// 128 MiB/s; libvirt lifts it the same way).
const MAX_BANDWIDTH: u64 = 1 << 40;
/// A guest smaller than this that QEMU refuses is retried with twice the memory.
const RETRY_BELOW_MIB: u64 = 64;
/// How long a QEMU process may take to answer on its QMP socket.
const START_LIMIT: Duration = Duration::from_secs(20);
/// How long one QMP command may take to answer.
const REPLY_LIMIT: Duration = Duration::from_secs(60);
/// How often `query-migrate` is asked while the migration runs.
const POLL: Duration = Duration::from_millis(5);

/// The QEMU peer of one `migrate` run: the emulator (unless skipped) and its runs.
pub struct Peer {
    qemu: Option<Qemu>,
    /// Why it does not run (`None`: it does).
    skipped: Option<String>,
    runs: Vec<Run>,
}

struct Qemu {
    path: PathBuf,
    /// `qemu-system-x86_64 --version`'s first line.
    version: String,
}

/// One size's migration.
struct Run {
    size_mib: u64,
    /// `-m` QEMU ran with: `size_mib`, unless QEMU refused that.
    memory_mib: u64,
    /// QEMU's message for each smaller `-m` it refused.
    refused: Vec<String>,
    result: Result<Stats, String>,
}

/// What QEMU reported (source's `query-migrate` once completed) and what was set.
struct Stats {
    /// Guest RAM (`query-memory-size-summary`'s `base-memory`).
    guest_bytes: u64,
    /// Bytes of random data loaded into the guest's RAM.
    filled_bytes: u64,
    /// The source's run state before the migration (`query-status`).
    state: String,
    total_ms: u64,
    downtime_ms: u64,
    setup_ms: u64,
    /// `ram.transferred`, bytes.
    transferred: u64,
    /// `ram.mbps`: megabits per second over the total time less the setup.
    mbps: f64,
    /// Pages sent whole (`ram.normal`) and as zero pages (`ram.duplicate`).
    normal: u64,
    duplicate: u64,
    /// `ram.total`: every RAM block, guest RAM and QEMU's own.
    ram_total: u64,
    dirty_syncs: u64,
    /// `downtime-limit` (ms) and `max-bandwidth` (bytes/s) as QEMU reports them after they
    /// were set.
    downtime_limit_ms: u64,
    max_bandwidth: u64,
    /// From `migrate` sent to `completed` seen by the bench (polled every 5 ms).
    wall_ms: f64,
    /// Bytes of the destination's guest RAM read back (`pmemsave`) and found equal to the
    /// random data.
    checked_bytes: u64,
}

impl Stats {
    fn nonzero_pct(&self) -> f64 {
        self.normal as f64 * 100.0 / (self.normal + self.duplicate).max(1) as f64
    }
}

impl Peer {
    /// The peer, or a skipped one (`--no-qemu`, or a loud warning when QEMU is not
    /// installed).
    pub fn new(no_qemu: bool) -> Peer {
        let skip = |why: String| Peer { qemu: None, skipped: Some(why), runs: Vec::new() };
        if no_qemu {
            eprintln!("QEMU pre-copy peer: skipped (--no-qemu)");
            return skip("skipped (--no-qemu)".into());
        }
        match exec::find_on_path(BINARY) {
            Some(path) => {
                let version = exec::first_line_of(&path, &["--version"]).unwrap_or_else(|| "version unknown".into());
                Peer { qemu: Some(Qemu { path, version }), skipped: None, runs: Vec::new() }
            }
            None => {
                warn_missing();
                skip(format!("**SKIPPED**: `{BINARY}` is not on PATH (install it with `{INSTALL_HINT}`)"))
            }
        }
    }

    /// Repeats the loud warning (at the end of the run) when QEMU was not found.
    pub fn warn_if_missing(&self) {
        if self.qemu.is_none() && self.skipped.as_deref().is_some_and(|s| s.contains("not on PATH")) {
            warn_missing();
        }
    }

    /// Why the peer did not run, if it did not.
    pub fn skipped(&self) -> Option<&str> {
        self.skipped.as_deref()
    }

    /// Whether some QEMU migration failed.
    pub fn failed(&self) -> bool {
        self.runs.iter().any(|r| r.result.is_err())
    }

    /// Migrates a guest of `size_mib` (progress on stderr); `dir` is created for it and
    /// removed after. Nothing when the peer is skipped.
    pub fn measure(&mut self, dir: &Path, size_mib: u64, limit: Duration) {
        let Some(qemu) = &self.qemu else { return };
        eprint!("[qemu] {}, stopped guest, QEMU pre-copy: ", size_label(size_mib));
        let run = run_size(qemu, dir, size_mib, limit);
        let _ = std::fs::remove_dir_all(dir);
        match &run.result {
            Ok(s) => eprintln!(
                "total {} ms, downtime {} ms, setup {} ms, {:.1} MB sent, {} of {} pages non-zero ({:.1}%){}",
                s.total_ms,
                s.downtime_ms,
                s.setup_ms,
                s.transferred as f64 / 1e6,
                s.normal,
                s.normal + s.duplicate,
                s.nonzero_pct(),
                if run.memory_mib == size_mib { String::new() } else { format!(" (-m {}M)", run.memory_mib) }
            ),
            Err(e) => eprintln!("FAILED: {e}"),
        }
        self.runs.push(run);
    }

    /// QEMU's total time for `size_mib` in ms (`Err`: why not), `None` if not run.
    pub fn total_ms(&self, size_mib: u64) -> Option<Result<u64, String>> {
        let run = self.runs.iter().find(|r| r.size_mib == size_mib)?;
        Some(match &run.result {
            Ok(s) if run.memory_mib == size_mib => Ok(s.total_ms),
            Ok(s) => Err(format!("QEMU ran with {} MiB, not {}: {} ms", run.memory_mib, size_mib, s.total_ms)),
            Err(e) => Err(format!("QEMU failed: {e}")),
        })
    }

    /// One line for stdout: each size's total time and downtime, or why it was skipped.
    pub fn summary(&self) -> String {
        if let Some(why) = &self.skipped {
            return format!("QEMU pre-copy peer: {}", why.replace("**", ""));
        }
        let parts: Vec<String> = self
            .runs
            .iter()
            .map(|r| match &r.result {
                Ok(s) => format!("{} {} ms (downtime {} ms)", size_label(r.size_mib), s.total_ms, s.downtime_ms),
                Err(_) => format!("{} FAILED", size_label(r.size_mib)),
            })
            .collect();
        format!("QEMU pre-copy peer (stopped guest, same run), total time: {}", parts.join(", "))
    }

    /// The results file's section: the table (or why it was skipped) and the method.
    pub fn section(&self) -> String {
        let mut doc = String::from("\n## Peer: QEMU pre-copy (same run)\n\n");
        if let Some(why) = &self.skipped {
            let _ = writeln!(doc, "QEMU pre-copy: {why}.");
            return doc;
        }
        doc.push_str(&self.table());
        let version = self.qemu.as_ref().map_or("", |q| q.version.as_str());
        let set = self.runs.iter().find_map(|r| r.result.as_ref().ok());
        let source = source_args(256, "LOW.bin", Some("HIGH.bin"), "SRC.sock").join(" ");
        let dest = dest_args(256, "DST.sock").join(" ");
        let _ = writeln!(doc, "\n- QEMU: {version}, TCG (`accel=tcg`), one vCPU, machine `pc`.");
        let _ = writeln!(
            doc,
            "- Each size: right after Tern's runs of that size, two QEMU processes on this machine, started \
             fresh (the Tern nodes are stopped by then). Source (for 256 MiB): `{BINARY} {source}`; destination: `{BINARY} {dest}`, then \
             `migrate-incoming` with `tcp:127.0.0.1:0` (the port it got is read from its `query-migrate`). The \
             destination has no loader: its RAM starts zeroed, as a fresh destination's does (the loader has no \
             migration state). Over QMP (`qmp_capabilities` first): `migrate-set-parameters` with \
             `downtime-limit` {DOWNTIME_LIMIT_MS} ms and `max-bandwidth` {MAX_BANDWIDTH} B/s, which lifts \
             QEMU 7.2's default cap of 128 MiB/s as libvirt does{}; then `migrate` to `tcp:127.0.0.1:PORT`, then \
             `query-migrate` every 5 ms until `completed` or `failed`. The source's figures: `total-time`, \
             `downtime`, `setup-time`, `ram.transferred` (MB = 10^6 bytes), `ram.mbps` (MB/s = `ram.mbps` / 8: \
             QEMU's rate over the total time less the setup), `ram.normal` and `ram.duplicate` (zero pages).",
            match set {
                Some(s) =>
                    format!(" (QEMU then reported `downtime-limit` {} ms and `max-bandwidth` {} B/s)", s.downtime_limit_ms, s.max_bandwidth),
                None => String::new(),
            }
        );
        let _ = writeln!(
            doc,
            "- Guest: **stopped** (`-S`: QEMU's `prelaunch` state; no vCPU runs, so nothing is dirtied during \
             the migration: like Tern's writer `none`). Its RAM is filled with random bytes before the \
             migration by two `-device loader` blobs (written at the machine's reset): the 640 KiB below the VGA \
             window at 0 and everything from 1 MiB to the end of RAM. The 384 KiB from 0xa0000 to 0xfffff stay \
             zero, and QEMU also migrates its own RAM blocks (BIOS, option ROMs, ACPI tables: `ram.total` less \
             the guest's RAM{}). `non-zero pages` is `ram.normal` of `ram.normal` + `ram.duplicate`, over every \
             block; it is lowest at 1 MiB, where the hole is 96 of the guest's 256 pages and QEMU's own blocks, \
             mostly zero, are half as large as the guest.",
            match set {
                Some(s) => format!(", {} KiB here", s.ram_total.saturating_sub(s.guest_bytes) >> 10),
                None => String::new(),
            }
        );
        doc.push_str(
            "- Downtime: QEMU's `downtime` is the time from the start of the migration's completion stage \
             (where it stops the VM, here already stopped, and sends the last dirty pages and the devices' \
             state) to its end. With the guest stopped QEMU counts every byte as `downtime-bytes` (its counters \
             go by whether the VM runs), but the figure in the table is the completion stage's time, which is \
             what a running guest would be paused for. QEMU reports whole milliseconds.\n",
        );
        doc.push_str(
            "- Check: after the migration the bench reads the destination's guest RAM back (`pmemsave` of the \
             low 640 KiB and of the last MiB) and compares it with the random data; a mismatch fails the run.\n",
        );
        let failed: Vec<&Run> = self.runs.iter().filter(|r| r.result.is_err()).collect();
        if !failed.is_empty() {
            doc.push_str("- Failed:\n");
            for r in failed {
                let _ = writeln!(doc, "  - {}: {}", size_label(r.size_mib), r.result.as_ref().err().map_or("", |e| e.as_str()));
            }
        }
        for r in &self.runs {
            if let Ok(s) = &r.result {
                let _ = writeln!(
                    doc,
                    "- {}: guest RAM {} KiB ({} KiB of random data), source state `{}`, `ram.total` {} KiB, dirty \
                     syncs {}, {} KiB checked at the destination, {:.1} ms from `migrate` to `completed` seen by the \
                     bench{}.",
                    size_label(r.size_mib),
                    s.guest_bytes >> 10,
                    s.filled_bytes >> 10,
                    s.state,
                    s.ram_total >> 10,
                    s.dirty_syncs,
                    s.checked_bytes >> 10,
                    s.wall_ms,
                    if r.refused.is_empty() { String::new() } else { format!("; QEMU refused smaller `-m`: {}", r.refused.join("; ")) }
                );
            }
        }
        doc
    }

    fn table(&self) -> String {
        let headers: Vec<String> =
            ["memory", "guest state", "non-zero pages", "total time (ms)", "downtime (ms)", "setup (ms)", "MB transferred", "MB/s"]
                .iter()
                .map(|h| h.to_string())
                .collect();
        let rows: Vec<Vec<String>> = self
            .runs
            .iter()
            .map(|r| {
                let mut memory = size_label(r.memory_mib);
                if r.memory_mib != r.size_mib {
                    let _ = write!(memory, " (QEMU's smallest: {} refused)", size_label(r.size_mib));
                }
                match &r.result {
                    Ok(s) => {
                        if s.guest_bytes != r.memory_mib << 20 {
                            let _ = write!(memory, " (QEMU made it {} KiB)", s.guest_bytes >> 10);
                        }
                        vec![
                            memory,
                            "stopped (-S)".into(),
                            format!("{} of {} ({:.1}%)", s.normal, s.normal + s.duplicate, s.nonzero_pct()),
                            s.total_ms.to_string(),
                            s.downtime_ms.to_string(),
                            s.setup_ms.to_string(),
                            format!("{:.1}", s.transferred as f64 / 1e6),
                            format!("{:.0}", s.mbps / 8.0),
                        ]
                    }
                    Err(_) => {
                        let mut row = vec![memory, "stopped (-S)".into(), "FAILED".into()];
                        row.extend((0..5).map(|_| "-".to_string()));
                        row
                    }
                }
            })
            .collect();
        report::markdown_table(&headers, &rows)
    }
}

fn warn_missing() {
    eprintln!(
        "\n!!! WARNING: `{BINARY}` is not on PATH: SKIPPING the QEMU pre-copy peer (the migration anchor).\n\
         !!! Install it with: {INSTALL_HINT}\n"
    );
}

/// The source's arguments: a stopped guest of `mib` MiB with its RAM loaded from `low`
/// (at 0) and `high` (at 1 MiB), QMP on `sock`.
fn source_args(mib: u64, low: &str, high: Option<&str>, sock: &str) -> Vec<String> {
    let mut args = machine_args(mib);
    args.extend(["-device".into(), format!("loader,file={low},addr=0x0")]);
    if let Some(high) = high {
        args.extend(["-device".into(), format!("loader,file={high},addr={HIGH_RAM_START:#x}")]);
    }
    args.extend(qmp_args(sock));
    args
}

/// The destination's arguments: the same machine, waiting for `migrate-incoming`.
fn dest_args(mib: u64, sock: &str) -> Vec<String> {
    let mut args = machine_args(mib);
    args.extend(["-incoming".into(), "defer".into()]);
    args.extend(qmp_args(sock));
    args
}

fn machine_args(mib: u64) -> Vec<String> {
    ["-machine", "pc,accel=tcg", "-m", &format!("{mib}M"), "-nodefaults", "-display", "none", "-S"].iter().map(|s| s.to_string()).collect()
}

fn qmp_args(sock: &str) -> [String; 2] {
    ["-qmp".into(), format!("unix:{sock},server=on,wait=off")]
}

/// Migrates `size_mib`, retrying with twice the memory while QEMU refuses a small one.
fn run_size(qemu: &Qemu, dir: &Path, size_mib: u64, limit: Duration) -> Run {
    let mut memory_mib = size_mib;
    let mut refused = Vec::new();
    loop {
        let _ = std::fs::remove_dir_all(dir);
        let result = migrate_once(qemu, dir, memory_mib, limit);
        match result {
            Err(e) if memory_mib < RETRY_BELOW_MIB && e.downcast_ref::<Refused>().is_some() => {
                refused.push(format!("`-m {memory_mib}M`: {e}"));
                memory_mib *= 2;
            }
            result => return Run { size_mib, memory_mib, refused, result: result.map_err(|e| format!("{e:#}")) },
        }
    }
}

/// QEMU exited at its start, saying something about its memory.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn migrate_once(qemu: &Qemu, dir: &Path, mib: u64, limit: Duration) -> Result<Stats> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ram = mib << 20;
    let low = dir.join("low.bin");
    let low_bytes = LOW_RAM_BYTES.min(ram);
    write_random(&low, low_bytes, 1)?;
    let high = dir.join("high.bin");
    let high_bytes = ram.saturating_sub(HIGH_RAM_START);
    if high_bytes > 0 {
        write_random(&high, high_bytes, 2)?;
    }
    let (src_sock, dst_sock) = (dir.join("src.sock"), dir.join("dst.sock"));
    let source = source_args(mib, &text(&low), (high_bytes > 0).then(|| text(&high)).as_deref(), &text(&src_sock));
    let (_src_child, mut src) = start(qemu, &source, &src_sock, &dir.join("src.log"))?;
    let (_dst_child, mut dst) = start(qemu, &dest_args(mib, &text(&dst_sock)), &dst_sock, &dir.join("dst.log"))?;

    let guest_bytes = src.call("query-memory-size-summary", None)?["base-memory"].as_u64().unwrap_or(0);
    let state = src.call("query-status", None)?["status"].as_str().unwrap_or("?").to_string();
    dst.call("migrate-incoming", Some(json!({ "uri": "tcp:127.0.0.1:0" })))?;
    let listening = dst.call("query-migrate", None)?;
    let port = match &listening["socket-address"][0]["port"] {
        Value::String(p) => p.parse::<u16>().ok(),
        Value::Number(p) => p.as_u64().and_then(|p| u16::try_from(p).ok()),
        _ => None,
    }
    .ok_or_else(|| anyhow!("the destination's query-migrate gave no port: {listening}"))?;
    if src.call("migrate-set-parameters", Some(json!({ "downtime-limit": DOWNTIME_LIMIT_MS, "max-bandwidth": MAX_BANDWIDTH }))).is_err() {
        // Each on its own, so that one QEMU refuses does not lose the other.
        let _ = src.call("migrate-set-parameters", Some(json!({ "max-bandwidth": MAX_BANDWIDTH })));
        let _ = src.call("migrate-set-parameters", Some(json!({ "downtime-limit": DOWNTIME_LIMIT_MS })));
    }
    let params = src.call("query-migrate-parameters", None)?;

    let started = Instant::now();
    src.call("migrate", Some(json!({ "uri": format!("tcp:127.0.0.1:{port}") })))?;
    let deadline = started + limit;
    let info = loop {
        let info = src.call("query-migrate", None)?;
        match info["status"].as_str() {
            Some("completed") => break info,
            Some(s @ ("failed" | "cancelled")) => {
                bail!("the migration {s}: {}{}", info["error-desc"].as_str().unwrap_or(""), logs(dir))
            }
            _ if Instant::now() > deadline => {
                let _ = src.call("migrate_cancel", None);
                bail!("the migration did not complete within {} s", limit.as_secs());
            }
            _ => thread::sleep(POLL),
        }
    };
    let wall_ms = started.elapsed().as_secs_f64() * 1e3;
    // The destination: done too, and holding the source's RAM.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match dst.call("query-migrate", None)?["status"].as_str() {
            Some("completed") => break,
            Some(s) if Instant::now() > deadline => bail!("the destination is `{s}`, not completed, 10 s after the source{}", logs(dir)),
            _ => thread::sleep(POLL),
        }
    }
    let mut checked_bytes = check(&mut dst, dir, &low, 0, 0, low_bytes)?;
    if high_bytes > 0 {
        let n = high_bytes.min(1 << 20);
        checked_bytes += check(&mut dst, dir, &high, HIGH_RAM_START + high_bytes - n, high_bytes - n, n)?;
    }

    let ram = &info["ram"];
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let stats = Stats {
        guest_bytes,
        filled_bytes: low_bytes + high_bytes,
        state,
        total_ms: u(&info["total-time"]),
        downtime_ms: u(&info["downtime"]),
        setup_ms: u(&info["setup-time"]),
        transferred: u(&ram["transferred"]),
        mbps: ram["mbps"].as_f64().unwrap_or(0.0),
        normal: u(&ram["normal"]),
        duplicate: u(&ram["duplicate"]),
        ram_total: u(&ram["total"]),
        dirty_syncs: u(&ram["dirty-sync-count"]),
        downtime_limit_ms: u(&params["downtime-limit"]),
        max_bandwidth: u(&params["max-bandwidth"]),
        wall_ms,
        checked_bytes,
    };
    // Both QEMUs are killed when their guards go, here and on every early return above.
    Ok(stats)
}

/// A path as QEMU's command line takes it.
fn text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The ends of both QEMUs' stderr, for a failure report.
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["src", "dst"] {
        let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
        if !tail.is_empty() {
            let _ = write!(out, "; {name}: {}", tail.join(" / "));
        }
    }
    out
}

/// `bytes` of a splitmix64 stream (incompressible, no zero page) to `path`.
fn write_random(path: &Path, bytes: u64, seed: u64) -> Result<()> {
    let mut file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut state = seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        file.write_all(&buf[..n]).with_context(|| format!("cannot write {}", path.display()))?;
        left -= n as u64;
    }
    Ok(())
}

/// Reads `len` bytes of the destination's guest RAM at `addr` (`pmemsave`) and compares
/// them with `file` from `offset`; the bytes checked.
fn check(dst: &mut Qmp, dir: &Path, file: &Path, addr: u64, offset: u64, len: u64) -> Result<u64> {
    let saved = dir.join("check.bin");
    dst.call("pmemsave", Some(json!({ "val": addr, "size": len, "filename": text(&saved) })))?;
    let got = std::fs::read(&saved).with_context(|| format!("cannot read {}", saved.display()))?;
    let _ = std::fs::remove_file(&saved);
    let mut want = vec![0u8; len as usize];
    let mut f = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(&mut want)?;
    if got != want {
        bail!("the destination's guest RAM at {addr:#x} ({len} bytes) differs from what the source held");
    }
    Ok(len)
}

/// Starts QEMU with `args` (stderr to `log`) and connects to its QMP socket `sock`.
fn start(qemu: &Qemu, args: &[String], sock: &Path, log: &Path) -> Result<(KillOnDrop, Qmp)> {
    let err = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let child = Command::new(&qemu.path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start {}", qemu.path.display()))?;
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + START_LIMIT;
    let stream = loop {
        if let Some(status) = child.0.try_wait()? {
            let said = std::fs::read_to_string(log).unwrap_or_default().trim().replace('\n', " / ");
            let message = format!("{BINARY} exited at its start ({status}): {said}");
            let lower = said.to_lowercase();
            if lower.contains("mem") || lower.contains("ram") {
                return Err(Refused(message).into());
            }
            bail!(message);
        }
        match UnixStream::connect(sock) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => {
                bail!("{BINARY}'s QMP socket {} did not answer within {} s: {e}", sock.display(), START_LIMIT.as_secs())
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    };
    let qmp = Qmp::handshake(stream)?;
    Ok((child, qmp))
}

/// A QMP connection: one JSON object a line each way.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Reads the greeting and leaves capabilities negotiation mode.
    fn handshake(stream: UnixStream) -> Result<Qmp> {
        stream.set_read_timeout(Some(REPLY_LIMIT))?;
        stream.set_write_timeout(Some(REPLY_LIMIT))?;
        let writer = stream.try_clone()?;
        let mut qmp = Qmp { reader: BufReader::new(stream), writer };
        let greeting = qmp.read()?;
        if greeting.get("QMP").is_none() {
            bail!("QMP greeting expected, got {greeting}");
        }
        qmp.call("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// The next message that is not an event.
    fn read(&mut self) -> Result<Value> {
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).context("reading from QMP")?;
            if n == 0 {
                bail!("QEMU closed its QMP socket");
            }
            let v: Value = serde_json::from_str(line.trim()).with_context(|| format!("QMP sent {line:?}"))?;
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    }

    /// Runs `command` and returns its `return` value (an `error` answer is an error).
    fn call(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        writeln!(self.writer, "{msg}").with_context(|| format!("sending {command} to QMP"))?;
        let reply = self.read().with_context(|| format!("QMP {command}"))?;
        if let Some(e) = reply.get("error") {
            bail!("QMP {command}: {} ({})", e["desc"].as_str().unwrap_or("?"), e["class"].as_str().unwrap_or("?"));
        }
        reply.get("return").cloned().ok_or_else(|| anyhow!("QMP {command} answered {reply}"))
    }
}

#[cfg(test)]
impl Peer {
    /// A peer that migrated each `(MiB, total ms)`, a total of 0 standing for a failed run
    /// (for the renderers' tests).
    pub(crate) fn ran(totals: &[(u64, u64)]) -> Peer {
        let runs = totals
            .iter()
            .map(|&(mib, total_ms)| Run {
                size_mib: mib,
                memory_mib: mib,
                refused: Vec::new(),
                result: if total_ms == 0 {
                    Err("the migration failed: test".into())
                } else {
                    Ok(Stats {
                        guest_bytes: mib << 20,
                        filled_bytes: (mib << 20) - 0x6_0000,
                        state: "prelaunch".into(),
                        total_ms,
                        downtime_ms: 2,
                        setup_ms: 1,
                        transferred: (mib << 20) + 40_000,
                        mbps: 2000.0,
                        normal: (mib << 8) - 96 + 113,
                        duplicate: 177,
                        ram_total: (mib << 20) + 532_480,
                        dirty_syncs: 2,
                        downtime_limit_ms: 1,
                        max_bandwidth: MAX_BANDWIDTH,
                        wall_ms: total_ms as f64 + 1.5,
                        checked_bytes: LOW_RAM_BYTES + (1 << 20),
                    })
                },
            })
            .collect();
        Peer { qemu: Some(Qemu { path: PathBuf::from(BINARY), version: "QEMU emulator version 7.2.22".into() }), skipped: None, runs }
    }

    /// A peer skipped for `why` (for the renderers' tests).
    pub(crate) fn skipped_for(why: &str) -> Peer {
        Peer { qemu: None, skipped: Some(why.into()), runs: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_has_the_table_or_says_why_not() {
        let doc = Peer::ran(&[(1, 11), (256, 794), (1024, 0)]).section();
        assert!(doc.starts_with("\n## Peer: QEMU pre-copy (same run)\n\n| memory "));
        assert!(doc.contains("| 256 MiB | stopped (-S) |"));
        assert!(doc.lines().any(|l| l.starts_with("| 1 GiB ") && l.contains(" FAILED |")));
        assert!(doc.contains("`downtime-limit` 1 ms"));
        let skipped = Peer::skipped_for("**SKIPPED**: `qemu-system-x86_64` is not on PATH").section();
        assert!(skipped.contains("QEMU pre-copy: **SKIPPED**: `qemu-system-x86_64` is not on PATH."));
        assert!(Peer::ran(&[(16, 72)]).summary().ends_with("16 MiB 72 ms (downtime 2 ms)"));
    }

    #[test]
    fn random_pages_are_never_zero() {
        let dir = crate::procs::TempDir::new("qemu-test").unwrap();
        let f = dir.0.join("r.bin");
        write_random(&f, (1 << 20) + 12, 7).unwrap();
        let bytes = std::fs::read(&f).unwrap();
        assert_eq!(bytes.len(), (1 << 20) + 12);
        assert!(bytes.chunks(4096).all(|page| page.iter().any(|&b| b != 0)));
    }

    #[test]
    fn command_lines() {
        let src = source_args(1, "l", None, "s").join(" ");
        assert_eq!(
            src,
            "-machine pc,accel=tcg -m 1M -nodefaults -display none -S -device loader,file=l,addr=0x0 -qmp unix:s,server=on,wait=off"
        );
        let dst = dest_args(16, "d").join(" ");
        assert_eq!(dst, "-machine pc,accel=tcg -m 16M -nodefaults -display none -S -incoming defer -qmp unix:d,server=on,wait=off");
        assert!(source_args(16, "l", Some("h"), "s").contains(&"loader,file=h,addr=0x100000".to_string()));
    }
}
