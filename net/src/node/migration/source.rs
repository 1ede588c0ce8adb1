//! The source side of a migration: the node the process leaves. [`run_source`] polls
//! the [`Source`] machine and carries out what it says, in a loop; [`SourceRun`] does
//! the work, a method per concern: opening the stream and making the machine, sending
//! pages (read from the running process at its safepoints, or from its heap once it
//! left), the final pages with the modules the destination lacks and the state image
//! in chunks, link updates to the partner nodes, the inputs (the destination's
//! messages, streams failing, peers going down), and the report.

use super::streams::{frame_buf, frame_bytes, next_input, on_session, read_frames, recycle, spawn_writer, wait_until, wire_msg};
use super::{mig_config, Caller, Input, Progress, PAGES_PER_FRAME, PUSH_QUEUE_FRAMES};
use crate::node::Host;
use crate::proto::compress::Compressor;
use crate::proto::mechanism::{choose, Choice, Sizes};
use crate::proto::migrate::{Action, Admit, Forwarding, Mechanism, MigMsg, SentFor, Source, SourceInit, SourceOutcome};
use crate::proto::wire::{self, DestStats, Frame, LinkProc, MigReport, MigWire, PagesFrameWriter};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_vm::bytecode::ModuleHash;
use tern_vm::heap::Heap;
use tern_vm::node::Node;
use tern_vm::process::IoResult;
use tokio::sync::mpsc;

type Pid = u64;

/// The most fetches kept until the commit is known (see `SourceRun::input`).
const MAX_EARLY_FETCHES: usize = 65_536;

/// Runs a migration from this node to the end; its report.
///
/// `early` is sent a report before the end when the move is in doubt past a bound (the
/// machine's [`Action::InDoubt`]): it asked its destination to commit, and that node has
/// been down for [`in_doubt_after`] since. The run goes on (the process stays frozen here until that
/// node answers, by the commit rule), but whoever waits for the outcome — an operator,
/// the policy, a drain — learns it now instead of waiting as long as the node is away.
pub(super) fn run_source(
    sh: &Arc<Host>,
    mut r: SourceRun,
    inputs: crossbeam_channel::Receiver<Input>,
    early: &dyn Fn(MigReport),
) -> MigReport {
    let node = sh.node();
    r.report.from = sh.me.name.clone();
    r.report.to = sh.node_name(r.dest);
    let mut src = match r.open(sh, node) {
        Ok(src) => src,
        Err(why) => {
            // Nothing was frozen yet: a process waiting in its own move learns it now.
            if let Caller::Itself(asker) = r.caller {
                node.answer_migrate(asker, IoResult::Failed(why.clone()));
            }
            return r.failed_early(why);
        }
    };
    loop {
        // Until neither has anything: a send that fails ends the machine, whose last
        // actions (the process unfrozen) must be carried out before the outcome ends
        // the run (they were not, and a freeze that lost its connection left the
        // process frozen here while its report said it ran on).
        loop {
            let mut any = false;
            while let Some(a) = src.poll_action() {
                match a {
                    Action::InDoubt { down_us } => r.report_early(sh, &src, down_us, false, early),
                    Action::AwayAfterCommit { down_us } => r.report_early(sh, &src, down_us, true, early),
                    a => source_action(sh, node, &mut r, &mut src, a),
                }
                any = true;
            }
            while let Some((to, m)) = src.poll_transmit() {
                r.transmit(sh, node, &mut src, to, m);
                any = true;
            }
            if !any {
                break;
            }
        }
        if let Some(o) = src.outcome() {
            if r.dest_stats.is_none() && matches!(o, SourceOutcome::Committed) {
                r.await_dest_stats(&inputs);
            }
            break;
        }
        if sh.is_shutting_down() {
            r.failure.get_or_insert_with(|| "this node shut down".into());
            break;
        }
        // The destination is down now, whatever events this run was given (one may have
        // come before it asked to commit, or never: it started with the node seen up):
        // the machine's in-doubt bound counts from now at the latest.
        if src.awaits_dest() && !sh.is_up(r.dest) {
            src.peer_down(sh.now_us(), r.dest);
        }
        match next_input(&inputs, wait_until(src.poll_timeout(), sh.now_us())) {
            Ok(input) => r.input(sh, node, &mut src, input),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        // (Also after an input: a steady stream of fetches must not hold the push off.)
        if src.poll_timeout().is_some_and(|t| sh.now_us() >= t) {
            src.set_push_room(r.push_room());
            src.handle_timeout(sh.now_us());
        }
        r.release_early_fetches(sh, &mut src);
    }
    let report = r.finish_report(sh, &src);
    if matches!(src.outcome(), Some(SourceOutcome::InDoubt(_))) {
        let members: Vec<Pid> = r.members.iter().map(|m| m.pid).collect();
        sh.hold_in_doubt(&members, &report.to);
    }
    if src.report().reported_in_doubt || src.report().reported_away {
        // Whoever waited was told before the end: the operator learns how it ended here.
        let pid = tern_vm::value::name_text(report.pid);
        let what = if src.report().reported_in_doubt { "reported in doubt" } else { "reported with its destination away" };
        sh.log(&format!(
            "migration of {pid} to {}, {what}, ended: {} ({} pages pushed, {} faults, {} of {} compiled functions compiled again there, {} ms in all)",
            report.to,
            report.outcome,
            report.pages_pushed,
            report.page_faults,
            report.jit_functions_rebuilt,
            report.jit_functions_at_source,
            report.total_time_us / 1000
        ));
    }
    report
}

/// How long a destination asked to commit may stay down before the move is reported in
/// doubt to whoever waits for it (three failure-detection bounds: past a short stall).
pub(super) fn in_doubt_after(sh: &Host) -> Duration {
    Duration::from_millis(3 * sh.cfg.limits.node_down_ms.max(1000))
}

/// How long a move waits for the pages a process still has on the node it came from
/// (a lazy or hybrid move pushes them meanwhile) before it gives up.
const LAZY_WAIT: Duration = Duration::from_secs(60);

/// The `q`th percentile of `sorted` (0 when empty).
fn percentile(sorted: &[u64], q: usize) -> u64 {
    if sorted.is_empty() {
        0
    } else {
        sorted[((sorted.len() - 1) * q.min(100)) / 100]
    }
}

/// Under a bandwidth cap, how much of the time the background push did not use it may
/// still use at once.
const PACE_BURST: Duration = Duration::from_millis(20);

/// The page count of `pid`'s heap once every page of it is here: a process that arrived
/// by a lazy or hybrid move and still has pages on the node it came from moves once they
/// have all come (the pushes go on meanwhile), so that it never depends on two nodes.
fn whole_heap(sh: &Host, node: &Node, pid: u64) -> Result<u32, String> {
    let deadline = Instant::now() + LAZY_WAIT;
    loop {
        match node.at_safepoint(pid, |p| (p.heap.page_count() as u32, p.heap.first_absent()), Duration::from_secs(10)) {
            Ok((n, None)) => return Ok(n),
            Ok((_, Some(_))) if Instant::now() < deadline && !sh.is_shutting_down() => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok((_, Some(_))) => {
                return Err(format!(
                    "some of the pages of {} are still on the node it came from after {} s (it can move once they are all here)",
                    tern_vm::value::name_text(pid),
                    LAZY_WAIT.as_secs()
                ))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// One process of the migration (a coprocess group moves as one migration: its
/// members' pages follow each other in the machine's page numbers).
pub(super) struct Member {
    pid: Pid,
    /// Pages of its heap when the migration began.
    size: u32,
    /// Its first page's number in the machine's numbering.
    offset: u32,
    /// Its heap, once it left (lazy/hybrid: pages still to send).
    heap: Option<tern_vm::heap::Heap>,
    /// Its move count and its receive ends' (for the link update), once committed.
    late_info: Option<(u32, Vec<(u64, u32)>)>,
    link_chans: Vec<u64>,
}

impl Member {
    fn new(pid: Pid) -> Member {
        Member { pid, size: 0, offset: 0, heap: None, late_info: None, link_chans: Vec::new() }
    }
}

/// What the source keeps for one migration besides its machine.
/// Functions named in a hotness profile at most (the destination takes as many).
pub(super) const MAX_HOT: usize = 4096;

pub(super) struct SourceRun {
    mid: u64,
    /// The process (a group's first member: the machine's `pid`).
    pid: Pid,
    /// Every process it moves: `pid`, then the rest of its group.
    members: Vec<Member>,
    dest: u16,
    /// What was asked for; `mechanism` is what it is (`auto` picks it when the heap
    /// is measured, in [`SourceRun::open`]).
    choice: Choice,
    mechanism: Mechanism,
    /// Pre-copy: post-copy for what is left if it stops converging (`auto`'s).
    fallback: bool,
    forwarding: Forwarding,
    /// A load policy's move (see `proto::mechanism::Admit`).
    admit: Option<Admit>,
    caller: Caller,
    progress: Arc<Progress>,
    rt: tokio::runtime::Handle,
    started: Instant,
    report: MigReport,
    /// Pages of the heap when the migration began (the machines know these only).
    size_pages: u32,
    /// The process's modules (with what they import), named to the destination after
    /// the offer; `None` once named.
    modules: Option<Vec<ModuleHash>>,
    bulk: Option<mpsc::Sender<Vec<u8>>>,
    faults: Option<mpsc::Sender<Vec<u8>>>,
    image: Option<Vec<u8>>,
    /// Modules the destination said it lacks.
    need: Vec<ModuleHash>,
    committed: bool,
    early_fetches: Vec<MigMsg>,
    zero_pages: u64,
    /// Whether frames of pages go compressed, and what went so.
    lz4: Compressor,
    bytes: u64,
    held: u64,
    modules_sent: u32,
    dest_stats: Option<DestStats>,
    reductions_at_start: u64,
    reductions_during_rounds: u64,
    failure: Option<String>,
    /// The migration bandwidth cap, bytes per second (0: none), and what it has paced
    /// so far: page data sent while the process runs (rounds, background pushes) goes
    /// no faster; the frozen transfer and fetched pages are not held back.
    cap_bytes_s: u64,
    paced: Option<(Instant, u64)>,
    /// Bytes in a page (what the cap's room is counted in).
    page_bytes: u64,
    /// What is left here of the processes after the commit, freed when the run ends.
    remains: Vec<tern_vm::node::Remains>,
}

impl SourceRun {
    pub(super) fn new(
        mid: u64,
        pids: Vec<Pid>,
        dest: u16,
        (choice, forwarding, admit): (Choice, Forwarding, Option<Admit>),
        caller: Caller,
        progress: Arc<Progress>,
        rt: tokio::runtime::Handle,
    ) -> Self {
        let pid = pids[0];
        let group = if pids.len() > 1 { pids.clone() } else { Vec::new() };
        let mechanism = match choice {
            Choice::Use(m) => m,
            Choice::Auto => Mechanism::Precopy,
        };
        SourceRun {
            choice,
            fallback: false,
            mid,
            pid,
            members: pids.into_iter().map(Member::new).collect(),
            dest,
            mechanism,
            forwarding,
            admit,
            caller,
            progress,
            rt,
            started: Instant::now(),
            report: MigReport { pid, members: group, mechanism, forwarding, ..MigReport::default() },
            size_pages: 0,
            modules: None,
            bulk: None,
            faults: None,
            image: None,
            need: Vec::new(),
            committed: false,
            early_fetches: Vec::new(),
            zero_pages: 0,
            lz4: Compressor::new(false, 1),
            bytes: 0,
            held: 0,
            modules_sent: 0,
            dest_stats: None,
            reductions_at_start: 0,
            reductions_during_rounds: 0,
            failure: None,
            cap_bytes_s: 0,
            paced: None,
            page_bytes: 4096,
            remains: Vec::new(),
        }
    }

    /// Measures the heaps, opens the migration's stream and makes the machine (which
    /// starts with the offer).
    fn open(&mut self, sh: &Arc<Host>, node: &Node) -> Result<Source, String> {
        let mut offset = 0u32;
        for m in &mut self.members {
            m.size = whole_heap(sh, node, m.pid)?;
            m.offset = offset;
            offset = offset.checked_add(m.size).ok_or("the group's heaps are too large to move at once")?;
        }
        self.size_pages = offset;
        self.report.heap_pages = self.size_pages;
        self.cap_bytes_s = sh.policy_conf().bandwidth_mib_s << 20;
        self.lz4 = Compressor::new(sh.cfg.compress, sh.link_speed(self.dest).0);
        self.page_bytes = mig_config(sh).page_bytes.max(1);
        if self.choice == Choice::Auto {
            let write: Option<u64> = self.members.iter().map(|m| sh.write_rate(m.pid)).sum();
            let (link_bytes_s, link_from) = sh.link_speed(self.dest);
            let cfg = mig_config(sh);
            let p = choose(&Sizes {
                heap_bytes: u64::from(self.size_pages) * cfg.page_bytes,
                write_bytes_s: write,
                link_bytes_s,
                link_from,
                sample_us: tern_vm::node::DIRTY_SAMPLE_US,
                freeze_budget_us: cfg.freeze_budget_us,
                max_rounds: cfg.max_rounds,
            });
            self.mechanism = p.mechanism;
            self.fallback = p.fallback;
            self.report.mechanism = p.mechanism;
            self.report.auto = p.why;
        }
        self.progress.total_pages.store(u64::from(self.size_pages), Ordering::Relaxed);
        *self.progress.mechanism.lock() = Some(self.mechanism);
        sh.mig.counters.started(self.mechanism);
        set_phase(&self.progress, "connecting");
        self.open_stream(sh)?;
        let mut linked: Vec<ModuleHash> = Vec::new();
        let mut partners: Vec<u16> = Vec::new();
        for m in &self.members {
            let hashes = node.at_safepoint(m.pid, |p| p.modules.iter().map(|m| m.hash).collect::<Vec<_>>(), Duration::from_secs(10));
            for h in hashes.unwrap_or_default() {
                if !linked.contains(&h) {
                    linked.push(h);
                }
            }
            self.reductions_at_start += node.at_safepoint(m.pid, |p| p.reductions, Duration::from_secs(10)).unwrap_or(0);
            for n in link_update_nodes(node, m.pid, self.forwarding) {
                if !partners.contains(&n) {
                    partners.push(n);
                }
            }
        }
        self.modules = Some(with_imports(node, linked));
        if let Ok((home, calls)) = node.at_safepoint(self.pid, |p| (p.home(), p.sys.home_calls), Duration::from_secs(10)) {
            self.report.home = sh.node_name(home);
            self.report.home_calls = calls;
        }
        let init = SourceInit {
            mid: self.mid,
            pid: self.pid,
            me: sh.me.id,
            dest: self.dest,
            size_pages: self.size_pages,
            mechanism: self.mechanism,
            fallback: self.fallback,
            forwarding: self.forwarding,
            partners,
            members: if self.members.len() > 1 { self.members.iter().map(|m| (m.pid, m.size)).collect() } else { Vec::new() },
            admit: self.admit,
        };
        let src = Source::new(sh.now_us(), mig_config(sh), init);
        set_phase(&self.progress, "offered");
        Ok(src)
    }

    /// The machine's page numbers `pages` as (member, its own page numbers).
    fn split(&self, pages: &[u32]) -> Vec<(usize, Vec<u32>)> {
        let mut out: Vec<(usize, Vec<u32>)> = Vec::new();
        for &p in pages {
            let i = self.members.partition_point(|m| m.offset + m.size <= p);
            let Some(m) = self.members.get(i) else { continue };
            match out.last_mut() {
                Some((j, v)) if *j == i => v.push(p - m.offset),
                _ => out.push((i, vec![p - m.offset])),
            }
        }
        out
    }

    /// Opens the bulk stream to the destination (waiting a little for a connection
    /// being made again); what comes back goes to the migration's inputs.
    fn open_stream(&mut self, sh: &Arc<Host>) -> Result<(), String> {
        let to_name = self.report.to.clone();
        let mut conn = None;
        for _ in 0..100 {
            conn = sh.connection(self.dest);
            if conn.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let Some(conn) = conn else {
            return Err(format!("no connection to node {to_name}"));
        };
        let opened = self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), conn.open_bi()).await });
        let (send, recv) = match opened {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("cannot open a stream to node {to_name}: {e}")),
            Err(_) => return Err(format!("cannot open a stream to node {to_name}: timed out")),
        };
        self.bulk = Some(spawn_writer(&self.rt, send, 0));
        if let Some(tx) = sh.mig.runs.lock().get(&self.mid).cloned() {
            self.rt.spawn(read_frames(recv, self.dest, sh.cfg.limits.frame_bytes as usize, tx));
        }
        Ok(())
    }

    /// The report of a migration that ended before its machine started.
    fn failed_early(mut self, why: String) -> MigReport {
        self.report.outcome = why;
        self.report.ok = false;
        self.report.total_time_us = self.started.elapsed().as_micros() as u64;
        self.report
    }

    /// Pages the background push may send now: as many as fill the stream writer's
    /// queue up to [`PUSH_QUEUE_FRAMES`] (none without a stream).
    /// With a bandwidth cap, no more than the cap leaves room for now: the push waits
    /// for its turn by sending less, never by sleeping (the thread that pushes also
    /// serves the destination's page faults, which are not held back).
    fn push_room(&mut self) -> u32 {
        let Some(tx) = &self.bulk else { return 0 };
        let queued = tx.max_capacity() - tx.capacity();
        let room = (PUSH_QUEUE_FRAMES.saturating_sub(queued) * PAGES_PER_FRAME) as u32;
        if self.cap_bytes_s == 0 {
            return room;
        }
        let cap = self.cap_bytes_s as f64;
        let (start, sent) = self.paced.get_or_insert((Instant::now(), 0));
        let due = start.elapsed().as_secs_f64() * cap;
        // Time it did not use is not saved up beyond a short burst.
        let burst = (cap * PACE_BURST.as_secs_f64()).max((PAGES_PER_FRAME as u64 * self.page_bytes) as f64);
        if due - *sent as f64 > burst {
            *sent = (due - burst) as u64;
        }
        let allowed = (due - *sent as f64).max(0.0) as u64;
        room.min((allowed / self.page_bytes).min(u64::from(u32::MAX)) as u32)
    }

    /// A frame of pages (behind its length) as an lz4 frame, if that pays
    /// ([`Compressor`]); else as it was.
    fn compressed(&mut self, frame: Vec<u8>) -> Vec<u8> {
        let t = Instant::now();
        let c = wire::lz4_frame(frame_buf(), &frame[4..]);
        let nanos = t.elapsed().as_nanos() as u64;
        if self.lz4.compressed(frame.len() - 4, c.len() - 4, nanos) {
            recycle(frame);
            c
        } else {
            recycle(c);
            frame
        }
    }

    fn send_stream(&mut self, fault: bool, w: &MigWire) -> bool {
        self.send_frame(fault, frame_bytes(w))
    }

    fn send_frame(&mut self, fault: bool, b: Vec<u8>) -> bool {
        self.bytes += b.len() as u64;
        let out = if fault { self.faults.as_ref().or(self.bulk.as_ref()) } else { self.bulk.as_ref() };
        match out {
            Some(tx) => tx.blocking_send(b).is_ok(),
            None => false,
        }
    }

    /// Sends pages' contents (the machine's page numbers), read from the processes, or
    /// from their heaps once they left.
    fn send_pages(&mut self, node: &Node, pages: &[u32], fault: bool) -> Result<(), String> {
        for (i, local) in self.split(pages) {
            self.send_member_pages(node, i, &local, fault)?;
        }
        Ok(())
    }

    /// Sends pages as [`SourceRun::send_pages`], no faster than the bandwidth cap:
    /// a round (`sleep`) waits for its turn, frame by frame; a background push was
    /// sized to the room the cap left ([`SourceRun::push_room`]) and is only counted.
    fn send_pages_paced(&mut self, node: &Node, pages: &[u32], sleep: bool) -> Result<(), String> {
        if self.cap_bytes_s == 0 {
            return self.send_pages(node, pages, false);
        }
        for chunk in pages.chunks(PAGES_PER_FRAME) {
            let before = self.bytes;
            self.send_pages(node, chunk, false)?;
            let (start, sent) = self.paced.get_or_insert((Instant::now(), 0));
            *sent += self.bytes - before;
            let due = *start + Duration::from_secs_f64(*sent as f64 / self.cap_bytes_s as f64);
            let now = Instant::now();
            if sleep && due > now {
                std::thread::sleep(due - now);
            }
        }
        Ok(())
    }

    /// Sends pages of the `i`th member, by its own page numbers: each frame written
    /// straight from the heap (one copy of a page at the source before quinn's).
    fn send_member_pages(&mut self, node: &Node, i: usize, pages: &[u32], fault: bool) -> Result<(), String> {
        for chunk in pages.chunks(PAGES_PER_FRAME) {
            let m = &self.members[i];
            let (mid, member, buf) = (self.mid, i as u32, frame_buf());
            let (frame, zeros) = match &m.heap {
                Some(h) => pages_frame(buf, mid, member, h, chunk),
                None => {
                    let chunk = chunk.to_vec();
                    node.read_pages_with(m.pid, move |h| pages_frame(buf, mid, member, h, &chunk)).map_err(|e| e.to_string())?
                }
            };
            self.zero_pages += zeros;
            self.progress.sent_pages.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            // (Not the answers to faults: a fault waits for its page, and its frame is
            // small.)
            let frame = if !fault && self.lz4.wants() { self.compressed(frame) } else { frame };
            if !self.send_frame(fault, frame) {
                return Err("the migration stream is closed".into());
            }
        }
        Ok(())
    }

    /// The modules the destination said it lacks, if they did not go yet (they go as
    /// soon as it says, and in any case before `Final`). False if the stream failed.
    fn send_needed_modules(&mut self, node: &Node) -> bool {
        if self.need.is_empty() {
            return true;
        }
        let mods: Vec<serde_bytes::ByteBuf> =
            self.need.iter().filter_map(|h| node.vm().module(h)).map(|m| serde_bytes::ByteBuf::from(m.module.encode())).collect();
        self.modules_sent += mods.len() as u32;
        let ok = self.send_stream(false, &MigWire::Modules { mid: self.mid, modules: mods });
        if ok {
            self.need.clear();
        }
        ok
    }

    /// What goes with `Final`: the last pages, and those the heap grew by since the
    /// offer (the machines know the offered pages only); the modules the destination
    /// lacks, if they did not go yet; the state image, in chunks under the frame limit.
    /// False if the stream failed.
    fn send_final(&mut self, sh: &Host, node: &Node, pages: &[u32]) -> bool {
        let mut ok = self.send_pages(node, pages, false).is_ok();
        for i in 0..self.members.len() {
            let m = &self.members[i];
            if let Ok(n) = node.heap_pages(m.pid) {
                let grown: Vec<u32> = (m.size..n).collect();
                ok = ok && self.send_member_pages(node, i, &grown, false).is_ok();
            }
        }
        ok = ok && self.send_needed_modules(node);
        let image = self.image.take().unwrap_or_default();
        let part = (sh.cfg.limits.frame_bytes as usize).saturating_sub(4096).max(1 << 16);
        let chunks: Vec<&[u8]> = if image.is_empty() { vec![&[][..]] } else { image.chunks(part).collect() };
        let n = chunks.len();
        for (k, c) in chunks.into_iter().enumerate() {
            ok = ok
                && self
                    .send_stream(false, &MigWire::Image { mid: self.mid, part: serde_bytes::ByteBuf::from(c.to_vec()), last: k + 1 == n });
        }
        ok
    }

    /// Sends one message of the machine: to a partner node (a link update, on the
    /// session), the commit decision (on the session, and the stream as a fast path),
    /// or on the stream with the data it names.
    fn transmit(&mut self, sh: &Host, node: &Node, src: &mut Source, to: u16, m: MigMsg) {
        tracing::debug!(node = %sh.me.name, mid = self.mid, "migration source: sends {} to {to}", m.name());
        if to != self.dest {
            if let MigMsg::LinkUpdate { mid, to: at, fwd, .. } = m {
                // One link update names every process of the migration.
                let procs = self
                    .members
                    .iter()
                    .map(|m| {
                        let (moves, chans) = m.late_info.clone().unwrap_or_default();
                        LinkProc { pid: m.pid, moves, chans }
                    })
                    .collect();
                let _ = sh.send_frame(to, &Frame::Mig(MigWire::LinkUpdate { mid, procs, to: at, fwd }));
            }
            return;
        }
        if on_session(&m) {
            // The commit decision also takes the migration's stream, the fast path;
            // the session is the sure one (a copy that comes second is ignored).
            if matches!(m, MigMsg::Commit { .. }) {
                let _ = self.send_stream(false, &MigWire::Msg(m.clone()));
            }
            let _ = sh.send_frame(to, &Frame::Mig(MigWire::Msg(m)));
            return;
        }
        let ok = match &m {
            MigMsg::Pages { pages, .. } => self.send_pages_paced(node, pages, true).is_ok(),
            MigMsg::PageData { pages, sent: SentFor::Push, .. } => self.send_pages_paced(node, pages, false).is_ok(),
            // Answers to fetches, read-ahead included, on the fault stream: the push's
            // queue is not ahead of them.
            MigMsg::PageData { pages, .. } => self.send_pages(node, pages, true).is_ok(),
            MigMsg::Final { pages, .. } => self.send_final(sh, node, pages),
            _ => true,
        };
        // On the stream its pages went on, after them.
        let fault = matches!(m, MigMsg::PageData { sent: SentFor::Fault | SentFor::ReadAhead, .. });
        if let MigMsg::PageData { pages, sent: SentFor::Fault | SentFor::ReadAhead, .. } = &m {
            self.progress.pages_served.fetch_add(pages.len() as u64, Ordering::Relaxed);
        }
        let ok = ok && self.send_stream(fault, &wire_msg(m));
        if let Some(hashes) = self.modules.take() {
            // Right after the offer: the process's code, by hash only, and which of its
            // functions run compiled here (the destination starts compiling them now).
            let hot: Vec<(ModuleHash, u32)> = hashes
                .iter()
                .filter_map(|h| node.vm().module(h))
                .flat_map(|lm| tern_vm::jit::compiled_functions(&lm).into_iter().map(move |f| (lm.hash, f)))
                .take(MAX_HOT)
                .collect();
            self.report.jit_functions_at_source = hot.len() as u32;
            let _ = self.send_stream(false, &MigWire::Need { mid: self.mid, hashes, hot });
        }
        if !ok && !src.commit_sent() && src.outcome().is_none() {
            self.failure = Some("the connection to the destination was lost".into());
            src.handle_timeout(u64::MAX);
        }
    }

    /// Takes one input: the destination's messages to the machine (fetches wait for
    /// the commit), what it lacks, its statistics; streams failing or opening; peers
    /// going down or restarting.
    fn input(&mut self, sh: &Host, node: &Node, src: &mut Source, input: Input) {
        let now = sh.now_us();
        if let Input::Wire(from, MigWire::Msg(m)) = &input {
            tracing::debug!(node = %sh.me.name, mid = self.mid, "migration source: has {} from {from}", m.name());
        }
        let before_commit = |src: &Source| !src.commit_sent() && src.outcome().is_none();
        match input {
            // Only the dest speaks for this migration, but for the partners' link acks:
            // what another node sends with its id is ignored.
            Input::Wire(from, w) if from != self.dest && !matches!(w, MigWire::Msg(MigMsg::LinkAck { .. })) => {
                let _ = w;
            }
            Input::Wire(from, w) => match w {
                // A dest asks for pages only as its process faults, one fault at a time
                // per process: far fewer than this before the source hears `Committed`.
                MigWire::Msg(MigMsg::Fetch { .. }) if !self.committed && self.early_fetches.len() >= MAX_EARLY_FETCHES => {}
                MigWire::Msg(m @ MigMsg::Fetch { .. }) if !self.committed => self.early_fetches.push(m),
                MigWire::Msg(m) => {
                    if matches!(m, MigMsg::RoundAck { .. }) {
                        set_phase(&self.progress, "pre-copy");
                    }
                    src.handle(now, from, m)
                }
                MigWire::Need { hashes, .. } => {
                    // Sent at once: loading them takes the destination a while, which
                    // must not fall in the freeze. (A failed stream is an input to come.)
                    self.need = hashes;
                    let _ = self.send_needed_modules(node);
                }
                MigWire::DestDone { stats, .. } => self.dest_stats = Some(stats),
                _ => {}
            },
            Input::StreamFailed(e) => {
                if before_commit(src) {
                    self.failure = Some(format!("the connection to the destination failed: {e}"));
                    src.handle_timeout(u64::MAX);
                } else {
                    // After the commit point: pages still go once the destination opens a
                    // stream again (it asks again for every page it lacks).
                    self.bulk = None;
                    self.faults = None;
                }
            }
            Input::FaultStream(from, _) if from != self.dest => {}
            Input::FaultStream(_, tx) => {
                if self.bulk.as_ref().is_none_or(|b| b.is_closed()) {
                    self.bulk = Some(tx.clone());
                }
                self.faults = Some(tx);
            }
            Input::PeerDown(n) => {
                if n == self.dest && before_commit(src) {
                    self.failure = Some(format!("node {} stopped answering", self.report.to));
                }
                src.peer_down(now, n)
            }
            Input::PeerRestarted(n) => {
                if n == self.dest && before_commit(src) {
                    self.failure = Some(format!("node {} restarted", self.report.to));
                }
                src.peer_restarted(now, n)
            }
            Input::PeerUp(n) => src.peer_up(now, n),
            Input::Fault(..) | Input::Frame(..) | Input::Pages(..) => {}
        }
    }

    /// Whoever waits for the move is told now, before its end, with what is known: the
    /// destination has stayed down past the bound while the move awaits it. Asked to
    /// commit (the machine's [`Action::InDoubt`]): in doubt, and the process stays frozen
    /// here. Committed with pages still here ([`Action::AwayAfterCommit`]): it moved, and
    /// the pages are kept for that node (it may be stopped and come back needing them; if
    /// it restarted, the process ended with its old incarnation). The run goes on.
    fn report_early(&self, sh: &Host, src: &Source, down_us: u64, committed: bool, early: &dyn Fn(MigReport)) {
        let mut report = self.finish_report(sh, src);
        let (to, ms) = (&report.to, down_us / 1000);
        report.outcome = if committed {
            report.ok = true;
            format!(
                "committed; node {to} has been down for {ms} ms since, while pages of the process are still here: \
                 they are kept for it until it is back (the process runs there only if it comes back, as the same node)"
            )
        } else {
            format!(
                "in doubt: node {to} went down after it was asked to commit, and has been down for {ms} ms; \
                 the process stays frozen here until that node answers (it may run there: it is never resumed here unless that node says it did not commit)"
            )
        };
        sh.log(&format!("migration of {} to {}: {}", tern_vm::value::name_text(self.report.pid), report.to, report.outcome));
        early(report);
    }

    /// Fetches that came before the commit are answered once it is made.
    fn release_early_fetches(&mut self, sh: &Host, src: &mut Source) {
        if self.committed && !self.early_fetches.is_empty() {
            for m in std::mem::take(&mut self.early_fetches) {
                src.handle(sh.now_us(), self.dest, m);
            }
        }
    }

    /// Waits briefly for the destination's side of the report (what else comes now is
    /// of no more use: the migration is over).
    fn await_dest_stats(&mut self, inputs: &crossbeam_channel::Receiver<Input>) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match next_input(inputs, left) {
                Ok(Input::Wire(_, MigWire::DestDone { stats, .. })) => {
                    self.dest_stats = Some(stats);
                    return;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }

    /// The report: the machine's, this side's counts, the destination's statistics.
    fn finish_report(&self, sh: &Host, src: &Source) -> MigReport {
        let mut report = self.report.clone();
        let rep = src.report();
        report.rounds = rep.rounds.clone();
        report.stop_reason = format!("{:?}", rep.stop);
        report.throttle_level = rep.throttle;
        report.redundant_pages = rep.redundant_pages;
        report.zero_pages_skipped = self.zero_pages;
        report.lz4_raw_bytes = self.lz4.raw_bytes;
        report.lz4_sent_bytes = self.lz4.sent_bytes;
        report.lz4_refused_frames = self.lz4.refused;
        report.final_pages = rep.final_pages;
        report.absent_pages_at_resume = rep.absent_at_resume;
        report.fell_back = rep.fell_back;
        report.freeze_time_us = rep.freeze_time_us.unwrap_or(0);
        report.total_time_us = self.started.elapsed().as_micros() as u64;
        report.bytes_sent = self.bytes;
        report.bandwidth_bytes_per_ms = rep.bandwidth_bytes_per_ms;
        report.reductions_during_rounds = self.reductions_during_rounds;
        report.pages_pushed = u64::from(rep.pages_pushed);
        report.dependency_ended_us = rep.dependency_ended_us.map_or(0, |t| t.saturating_sub(rep.started_us));
        report.messages_held = self.held;
        report.link_updates = rep.link_updates;
        report.modules_sent = self.modules_sent;
        if let Some(d) = &self.dest_stats {
            // The destination read its clock at `Commit`'s arrival and resumed the process
            // `resume_wait_us` later. On this node's clock that arrival lies within the
            // `Commit`/`Committed` round trip, taken at its midpoint (off by at most half
            // of it); the freeze began at `frozen_at`.
            if let (Some(frozen), Some(sent), Some(back)) = (rep.frozen_at_us, rep.commit_sent_at_us, rep.committed_at_us) {
                let half = back.saturating_sub(sent) / 2;
                // (`resume_wait_us` came over the wire: no arithmetic on it may overflow.)
                report.freeze_time_us = sent.saturating_add(half).saturating_add(d.resume_wait_us).saturating_sub(frozen);
                report.freeze_error_us = half;
                report.resume_wait_us = d.resume_wait_us;
            } else {
                report.freeze_time_us = report.freeze_time_us.saturating_add(d.resume_wait_us);
            }
            report.late_wait_us = d.late_wait_us;
            report.modules_loaded_after_accept = d.modules_after_accept;
            report.page_faults = d.page_faults;
            report.pages_read_ahead = d.pages_read_ahead;
            let (l, w) = (&d.fault_latency_us, &d.fault_wait_us);
            report.fault_latency_p50_us = percentile(l, 50);
            report.fault_latency_p99_us = percentile(l, 99);
            report.fault_latency_max_us = l.last().copied().unwrap_or(0);
            report.fault_wait_p50_us = percentile(w, 50);
            report.fault_wait_p99_us = percentile(w, 99);
            report.jit_functions_rebuilt = d.jit_rebuilt;
            report.time_to_compiled_us = d.jit_ready_after_resume_us.unwrap_or(0);
            // The destination's wait for its compiles is warm-up, not the move (it came
            // over the wire: saturating).
            report.total_time_us = report.total_time_us.saturating_sub(d.jit_wait_us);
            // The destination reported after it resumed, so the whole migration so far
            // bounds the freeze too.
            report.freeze_time_us = report.freeze_time_us.min(report.total_time_us);
        }
        match src.outcome() {
            Some(SourceOutcome::Committed) => {
                report.ok = true;
                report.outcome = "committed".into();
            }
            Some(SourceOutcome::Failed(f)) => {
                report.outcome = self.failure.clone().unwrap_or_else(|| f.to_string());
                report.outcome = format!("{}; the process runs on at {}", report.outcome, sh.me.name);
            }
            Some(SourceOutcome::InDoubt(f)) => {
                report.outcome = format!("in doubt ({f}): the process is kept frozen here and never resumed")
            }
            None => report.outcome = "the migration was stopped".into(),
        }
        report
    }
}

/// The nodes told where a migrated process went (the link update). With `link-update`
/// its partners: the nodes it talks with (that sent it messages, hold send ends of its
/// receive ends, or its links and monitors) and its birth node — so the cost grows with
/// its partners, not with the mesh (a node that never talked with it asks the birth
/// node, or locates it when that is down). With any other mechanism only the nodes of
/// its links and monitors, which must know where it is to tell a `node_down` that
/// concerns it from one that does not.
fn link_update_nodes(node: &Node, pid: Pid, fwd: Forwarding) -> Vec<u16> {
    if fwd.updates_partners() {
        node.partner_nodes(pid)
    } else {
        node.watch_nodes(pid)
    }
}

/// `hashes` and every module they refer to, transitively: a process links the modules
/// it imports only when it first runs the import, maybe after it moved.
fn with_imports(node: &Node, hashes: Vec<ModuleHash>) -> Vec<ModuleHash> {
    let mut seen: HashSet<ModuleHash> = hashes.iter().copied().collect();
    let mut out = hashes.clone();
    let mut todo = hashes;
    while let Some(h) = todo.pop() {
        let Some(m) = node.vm().module(&h) else { continue };
        for c in &m.module.consts {
            if let tern_vm::bytecode::Const::Module(d) = c {
                if seen.insert(*d) {
                    out.push(*d);
                    todo.push(*d);
                }
            }
        }
    }
    out
}

fn set_phase(p: &Progress, s: &str) {
    *p.phase.lock() = s.to_string();
}

/// Carries out one action of the source machine on the VM (on every process of the
/// migration: a group's members are tracked, frozen, exported and handed over together).
fn source_action(sh: &Arc<Host>, node: &Node, r: &mut SourceRun, src: &mut Source, a: Action) {
    let now = sh.now_us();
    tracing::debug!(node = %sh.me.name, mid = r.mid, "migration source: {a:?}");
    match a {
        Action::StartDirtyTracking => {
            for m in &r.members {
                let _ = node.take_dirty(m.pid);
            }
            set_phase(&r.progress, "pre-copy");
        }
        Action::CollectDirty => match r.dirty(node) {
            Ok(d) => {
                src.pages_dirtied(now, &d);
                r.progress.dirty_pages.store(d.len() as u64, Ordering::Relaxed);
                let rounds = &src.report().rounds;
                let mut seen = r.progress.rounds.lock();
                if seen.len() != rounds.len() {
                    seen.clone_from(rounds);
                }
            }
            Err(e) => {
                r.failure = Some(e);
                src.handle_timeout(u64::MAX);
            }
        },
        Action::Throttle { level } => {
            for m in &r.members {
                node.set_throttle(m.pid, level.min(8) as u8);
            }
        }
        Action::Freeze => {
            set_phase(&r.progress, "freezing");
            if src.in_rounds() || matches!(r.mechanism, Mechanism::Precopy | Mechanism::Hybrid) {
                let red: u64 =
                    r.members.iter().map(|m| node.at_safepoint(m.pid, |p| p.reductions, Duration::from_secs(10)).unwrap_or(0)).sum();
                r.reductions_during_rounds = red.saturating_sub(r.reductions_at_start);
            }
            // The process stops at its next safepoint (within `freeze_all`); the freeze
            // starts when it was last seen running. The dirty set and the image are
            // taken while it is stopped.
            match r.freeze_all(node, src.needs_last_dirty()) {
                Ok((dirty, image, running_at)) => {
                    let len = image.len() as u64;
                    r.image = Some(image);
                    let stopped = sh.now_us().saturating_sub(running_at.elapsed().as_micros() as u64);
                    src.frozen(stopped, &dirty, len);
                    set_phase(&r.progress, "frozen");
                }
                Err(e) => {
                    r.failure = Some(e);
                    src.handle_timeout(u64::MAX);
                }
            }
        }
        Action::Unfreeze => {
            for m in &r.members {
                node.set_throttle(m.pid, 0);
            }
            if let Caller::Itself(asker) = r.caller {
                let why =
                    r.failure.clone().or_else(|| src.outcome().map(|o| format!("{o:?}"))).unwrap_or_else(|| "the migration failed".into());
                node.answer_migrate(asker, IoResult::Failed(why));
            }
            for m in &r.members {
                node.abort_export(m.pid);
            }
        }
        Action::CommitExport { .. } => {
            // Committed: the destination owns the processes. What reached them here after
            // their images follows them; from now on their slots here forward.
            r.committed = true;
            set_phase(&r.progress, "committed");
            if src.report().absent_at_resume > 0 {
                for m in &mut r.members {
                    m.heap = node.take_heap(m.pid).ok();
                }
            }
            // A partner that is down now will not be reported down again: its link update
            // waits in the session for its return, and holds nothing up here.
            for &p in sh.peers.keys() {
                if p != r.dest && !sh.is_up(p) {
                    src.peer_down(now, p);
                }
            }
            let mut lates = Vec::with_capacity(r.members.len());
            // What is left of the processes here is freed when the migration is over,
            // well after the late messages went (the destination runs them when those are
            // there): unmapping a large heap holds this OS process's memory map, which
            // the network thread sending them needs.
            let remains = &mut r.remains;
            for m in &mut r.members {
                match node.commit_export_keeping(m.pid, r.dest, r.forwarding) {
                    Ok((late, left)) => {
                        remains.push(left);
                        r.held += late.inbox.len() as u64 + late.chans.iter().map(|c| c.queue.len() as u64).sum::<u64>();
                        m.link_chans = late.chans.iter().map(|c| c.chan).collect();
                        m.late_info = Some((late.moves, late.chans.iter().map(|c| (c.chan, c.moves)).collect()));
                        lates.push(late);
                    }
                    Err(e) => {
                        sh.log(&format!("migration of {}: {e}", tern_vm::value::name_text(m.pid)));
                        lates.push(tern_vm::node::Late::default());
                    }
                }
            }
            let hold = sh.mig.hooks.lock().hold_late_ms;
            if hold > 0 {
                sh.log(&format!("test hook: late messages of {} held for {hold} ms", tern_vm::value::name_text(r.pid)));
                let until = Instant::now() + Duration::from_millis(hold);
                while Instant::now() < until && !sh.is_shutting_down() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            // Both ways too: the processes run at the destination once this is there.
            let w = MigWire::Late { mid: r.mid, late: lates };
            let _ = r.send_stream(false, &w);
            let _ = sh.send_frame(r.dest, &Frame::Mig(w));
        }
        Action::DeleteSource => {
            for m in &mut r.members {
                m.heap = None;
            }
        }
        // Every partner acknowledged: nothing here points at them any more.
        Action::Done if src.is_committed() => {
            for m in &r.members {
                node.drop_forwarding(m.pid, &m.link_chans, r.forwarding);
            }
        }
        _ => {}
    }
}

impl SourceRun {
    /// The pages dirtied since the last collection, in the machine's page numbers (pages
    /// past a heap's size at the offer go with `Final`).
    fn dirty(&self, node: &Node) -> Result<Vec<u32>, String> {
        let mut out = Vec::new();
        for m in &self.members {
            let d = node.take_dirty(m.pid).map_err(|e| e.to_string())?;
            out.extend(d.into_iter().filter(|&p| p < m.size).map(|p| p + m.offset));
        }
        Ok(out)
    }

    /// Freezes every process of the migration (none runs again here unless the move
    /// fails), then takes their images: the pages dirtied since the last round and the
    /// state image (a group's: its members' images, in order). A group whose membership
    /// here changed since the offer (a process joined it) is not moved: the group must
    /// move whole. Also returns when the first of them was last seen running (the
    /// freeze's start); the dirty pages only if the machine uses them (`dirty`).
    fn freeze_all(&mut self, node: &Node, dirty: bool) -> Result<(Vec<u32>, Vec<u8>, Instant), String> {
        // A group's freeze starts when its first member (frozen first) stops.
        let mut running_at = None;
        for m in &self.members {
            let seen = node.freeze(m.pid, Duration::from_secs(30)).map_err(|e| e.to_string())?;
            running_at.get_or_insert(seen);
        }
        let running_at = running_at.unwrap_or_else(Instant::now);
        if self.members.len() > 1 {
            let now: Vec<Pid> = node.group_members(self.pid).map(|(_, m)| m).unwrap_or_default();
            let mut was: Vec<Pid> = self.members.iter().map(|m| m.pid).collect();
            was.sort_unstable();
            if now != was {
                return Err("the group changed while it was being moved (a process joined it or ended): it stays here".into());
            }
        }
        // Only pre-copy needs the pages dirtied since its last round (listed page by page
        // while the process is frozen: the machine says when it does not need them).
        let dirty = if dirty { self.dirty(node)? } else { Vec::new() };
        let mut images = Vec::with_capacity(self.members.len());
        for m in &self.members {
            images.push(node.export_state(m.pid).map_err(|e| e.to_string())?);
        }
        let image = if images.len() == 1 { images.pop().unwrap_or_default() } else { group_image(images) };
        Ok((dirty, image, running_at))
    }
}

/// A group's state image: its members' images, in order.
pub(super) fn group_image(images: Vec<Vec<u8>>) -> Vec<u8> {
    let parts: Vec<serde_bytes::ByteBuf> = images.into_iter().map(serde_bytes::ByteBuf::from).collect();
    postcard::to_allocvec(&parts).unwrap_or_default()
}

/// A frame of pages of a heap (those within it), and how many of them were all zero.
fn pages_frame(buf: Vec<u8>, mid: u64, member: u32, heap: &Heap, pages: &[u32]) -> (Vec<u8>, u64) {
    let mut w = PagesFrameWriter::new(buf, mid, member, tern_vm::node::pages_within(heap, pages));
    let mut zeros = 0;
    tern_vm::node::visit_pages(heap, pages, |p, words| {
        zeros += u64::from(words.is_none());
        w.page(p, words);
    });
    (w.finish(), zeros)
}
