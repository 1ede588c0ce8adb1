//! The source side of a migration: the node the process leaves. [`run_source`] polls
//! the [`Source`] machine and carries out what it says, in a loop; [`SourceRun`] does
//! the work, a method per concern: opening the stream and making the machine, sending
//! pages (read from the running process at its safepoints, or from its heap once it
//! left), the final pages with the modules the destination lacks and the state image
//! in chunks, link updates to the partner nodes, the inputs (the destination's
//! messages, streams failing, peers going down), and the report.

use super::streams::{frame_bytes, next_input, on_session, read_frames, spawn_writer, wait_until, wire_msg};
use super::{mig_config, Caller, Input, Progress, PAGES_PER_FRAME};
use crate::node::Host;
use crate::proto::migrate::{Action, Forwarding, Mechanism, MigMsg, Source, SourceInit, SourceOutcome};
use crate::proto::wire::{DestStats, Frame, MigReport, MigWire, PageRec};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_vm::bytecode::ModuleHash;
use tern_vm::node::Node;
use tern_vm::process::IoResult;
use tokio::sync::mpsc;

type Pid = u64;

/// Runs a migration from this node to the end; its report.
pub(super) fn run_source(sh: &Arc<Host>, mut r: SourceRun, inputs: crossbeam_channel::Receiver<Input>) -> MigReport {
    let node = sh.node();
    r.report.from = sh.me.name.clone();
    r.report.to = sh.node_name(r.dest);
    let mut src = match r.open(sh, node) {
        Ok(src) => src,
        Err(why) => return r.failed_early(why),
    };
    loop {
        while let Some(a) = src.poll_action() {
            source_action(sh, node, &mut r, &mut src, a);
        }
        while let Some((to, m)) = src.poll_transmit() {
            r.transmit(sh, node, &mut src, to, m);
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
        match next_input(&inputs, wait_until(src.poll_timeout(), sh.now_us())) {
            Ok(input) => r.input(sh, &mut src, input),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => src.handle_timeout(sh.now_us()),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        r.release_early_fetches(sh, &mut src);
    }
    r.finish_report(sh, &src)
}

/// What the source keeps for one migration besides its machine.
pub(super) struct SourceRun {
    mid: u64,
    pid: Pid,
    dest: u16,
    mechanism: Mechanism,
    forwarding: Forwarding,
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
    heap: Option<tern_vm::heap::Heap>,
    committed: bool,
    early_fetches: Vec<MigMsg>,
    late_info: Option<(u32, Vec<(u64, u32)>)>,
    link_chans: Vec<u64>,
    zero_pages: u64,
    bytes: u64,
    held: u64,
    modules_sent: u32,
    dest_stats: Option<DestStats>,
    reductions_at_start: u64,
    reductions_during_rounds: u64,
    failure: Option<String>,
}

impl SourceRun {
    pub(super) fn new(
        mid: u64,
        pid: Pid,
        dest: u16,
        (mechanism, forwarding): (Mechanism, Forwarding),
        caller: Caller,
        progress: Arc<Progress>,
        rt: tokio::runtime::Handle,
    ) -> Self {
        SourceRun {
            mid,
            pid,
            dest,
            mechanism,
            forwarding,
            caller,
            progress,
            rt,
            started: Instant::now(),
            report: MigReport { pid, mechanism, forwarding, ..MigReport::default() },
            size_pages: 0,
            modules: None,
            bulk: None,
            faults: None,
            image: None,
            need: Vec::new(),
            heap: None,
            committed: false,
            early_fetches: Vec::new(),
            late_info: None,
            link_chans: Vec::new(),
            zero_pages: 0,
            bytes: 0,
            held: 0,
            modules_sent: 0,
            dest_stats: None,
            reductions_at_start: 0,
            reductions_during_rounds: 0,
            failure: None,
        }
    }

    /// Measures the heap, opens the migration's stream and makes the machine (which
    /// starts with the offer).
    fn open(&mut self, sh: &Arc<Host>, node: &Node) -> Result<Source, String> {
        self.size_pages =
            match node.at_safepoint(self.pid, |p| (p.heap.page_count() as u32, p.heap.first_absent()), Duration::from_secs(10)) {
                Ok((n, None)) => n,
                Ok((_, Some(_))) => {
                    return Err("some of its pages are still on the node it came from (it moves again once they are all here)".into())
                }
                Err(e) => return Err(e.to_string()),
            };
        self.report.heap_pages = self.size_pages;
        self.progress.total_pages.store(u64::from(self.size_pages), Ordering::Relaxed);
        set_phase(&self.progress, "connecting");
        self.open_stream(sh)?;
        let linked: Vec<ModuleHash> =
            node.at_safepoint(self.pid, |p| p.modules.iter().map(|m| m.hash).collect(), Duration::from_secs(10)).unwrap_or_default();
        self.modules = Some(with_imports(node, linked));
        self.reductions_at_start = node.at_safepoint(self.pid, |p| p.reductions, Duration::from_secs(10)).unwrap_or(0);
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
            forwarding: self.forwarding,
            partners: link_update_nodes(node, self.pid, self.forwarding),
        };
        let src = Source::new(sh.now_us(), mig_config(sh), init);
        set_phase(&self.progress, "offered");
        Ok(src)
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

    fn send_stream(&mut self, fault: bool, w: &MigWire) -> bool {
        let b = frame_bytes(w);
        self.bytes += b.len() as u64;
        let out = if fault { self.faults.as_ref().or(self.bulk.as_ref()) } else { self.bulk.as_ref() };
        match out {
            Some(tx) => tx.blocking_send(b).is_ok(),
            None => false,
        }
    }

    /// Sends pages' contents (read from the process, or from its heap once it left).
    fn send_pages(&mut self, node: &Node, pages: &[u32], fault: bool) -> Result<(), String> {
        for chunk in pages.chunks(PAGES_PER_FRAME) {
            let copies = match &self.heap {
                Some(h) => tern_vm::node::copy_pages_bytes(h, chunk),
                None => node.read_pages_bytes(self.pid, chunk.to_vec()).map_err(|e| e.to_string())?,
            };
            let recs: Vec<PageRec> = copies
                .into_iter()
                .map(|(index, words)| {
                    if words.is_none() {
                        self.zero_pages += 1;
                    }
                    PageRec { index, data: words }
                })
                .collect();
            self.progress.sent_pages.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if !self.send_stream(fault, &MigWire::Pages { mid: self.mid, pages: recs }) {
                return Err("the migration stream is closed".into());
            }
        }
        Ok(())
    }

    /// What goes with `Final`: the last pages, and those the heap grew by since the
    /// offer (the machines know the offered pages only); the modules the destination
    /// lacks; the state image, in chunks under the frame limit. False if the stream
    /// failed.
    fn send_final(&mut self, sh: &Host, node: &Node, pages: &[u32]) -> bool {
        let mut pages = pages.to_vec();
        if let Ok(n) = node.heap_pages(self.pid) {
            pages.extend(self.size_pages..n);
        }
        let mut ok = self.send_pages(node, &pages, false).is_ok();
        if ok && !self.need.is_empty() {
            let mods: Vec<serde_bytes::ByteBuf> =
                self.need.iter().filter_map(|h| node.vm().module(h)).map(|m| serde_bytes::ByteBuf::from(m.module.encode())).collect();
            self.modules_sent = mods.len() as u32;
            ok = self.send_stream(false, &MigWire::Modules { mid: self.mid, modules: mods });
        }
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
        if to != self.dest {
            if let MigMsg::LinkUpdate { mid, pid, to: at, fwd } = m {
                let (moves, chans) = self.late_info.clone().unwrap_or_default();
                let _ = sh.send_frame(to, &Frame::Mig(MigWire::LinkUpdate { mid, pid, to: at, moves, chans, fwd }));
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
            MigMsg::Pages { pages, .. } => self.send_pages(node, pages, false).is_ok(),
            MigMsg::PageData { pages, pushed, .. } => self.send_pages(node, pages, !pushed).is_ok(),
            MigMsg::Final { pages, .. } => self.send_final(sh, node, pages),
            _ => true,
        };
        let fault = matches!(m, MigMsg::PageData { pushed: false, .. });
        let ok = ok && self.send_stream(fault, &wire_msg(m));
        if let Some(hashes) = self.modules.take() {
            // Right after the offer: the process's code, by hash only.
            let _ = self.send_stream(false, &MigWire::Need { mid: self.mid, hashes });
        }
        if !ok && !src.commit_sent() && src.outcome().is_none() {
            self.failure = Some("the connection to the destination was lost".into());
            src.handle_timeout(u64::MAX);
        }
    }

    /// Takes one input: the destination's messages to the machine (fetches wait for
    /// the commit), what it lacks, its statistics; streams failing or opening; peers
    /// going down or restarting.
    fn input(&mut self, sh: &Host, src: &mut Source, input: Input) {
        let now = sh.now_us();
        let before_commit = |src: &Source| !src.commit_sent() && src.outcome().is_none();
        match input {
            Input::Wire(from, w) => match w {
                MigWire::Msg(m @ MigMsg::Fetch { .. }) if !self.committed => self.early_fetches.push(m),
                MigWire::Msg(m) => {
                    if matches!(m, MigMsg::RoundAck { .. }) {
                        set_phase(&self.progress, "pre-copy");
                    }
                    src.handle(now, from, m)
                }
                MigWire::Need { hashes, .. } => self.need = hashes,
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
            Input::FaultStream(tx) => {
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
            Input::Fault(_) | Input::Frame(..) | Input::PeerUp(_) => {}
        }
    }

    /// Fetches that came before the commit are answered once it is made.
    fn release_early_fetches(&mut self, sh: &Host, src: &mut Source) {
        if self.committed && !self.early_fetches.is_empty() {
            for m in std::mem::take(&mut self.early_fetches) {
                src.handle(sh.now_us(), self.dest, m);
            }
        }
    }

    /// Waits briefly for the destination's side of the report.
    fn await_dest_stats(&mut self, inputs: &crossbeam_channel::Receiver<Input>) {
        if let Ok(Input::Wire(_, MigWire::DestDone { stats, .. })) = next_input(inputs, Duration::from_secs(2)) {
            self.dest_stats = Some(stats);
        }
    }

    /// The report: the machine's, this side's counts, the destination's statistics.
    fn finish_report(self, sh: &Host, src: &Source) -> MigReport {
        let mut report = self.report;
        let rep = src.report();
        report.rounds = rep.rounds.clone();
        report.stop_reason = format!("{:?}", rep.stop);
        report.throttle_level = rep.throttle;
        report.redundant_pages = rep.redundant_pages;
        report.zero_pages_skipped = self.zero_pages;
        report.final_pages = rep.final_pages;
        report.absent_pages_at_resume = rep.absent_at_resume;
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
            // Frozen here until `Committed` came back, plus the destination's wait from
            // `Commit` to running it: an upper bound of the time it was stopped.
            report.freeze_time_us += d.resume_wait_us;
            report.page_faults = d.page_faults;
            let l = &d.fault_latency_us;
            let pct = |q: usize| if l.is_empty() { 0 } else { l[((l.len() - 1) * q) / 100] };
            report.fault_latency_p50_us = pct(50);
            report.fault_latency_p99_us = pct(99);
            report.fault_latency_max_us = l.last().copied().unwrap_or(0);
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

/// Carries out one action of the source machine on the VM.
fn source_action(sh: &Arc<Host>, node: &Node, r: &mut SourceRun, src: &mut Source, a: Action) {
    let now = sh.now_us();
    match a {
        Action::StartDirtyTracking => {
            let _ = node.take_dirty(r.pid);
            set_phase(&r.progress, "pre-copy");
        }
        Action::CollectDirty => match node.take_dirty(r.pid) {
            Ok(d) => src.pages_dirtied(now, &d),
            Err(e) => {
                r.failure = Some(e.to_string());
                src.handle_timeout(u64::MAX);
            }
        },
        Action::Throttle { level } => node.set_throttle(r.pid, level.min(8) as u8),
        Action::Freeze => {
            set_phase(&r.progress, "freezing");
            if src.in_rounds() || matches!(r.mechanism, Mechanism::Precopy | Mechanism::Hybrid) {
                let red = node.at_safepoint(r.pid, |p| p.reductions, Duration::from_secs(10)).unwrap_or(r.reductions_at_start);
                r.reductions_during_rounds = red.saturating_sub(r.reductions_at_start);
            }
            match node.freeze(r.pid, Duration::from_secs(30)) {
                Ok(()) => {
                    // Only pre-copy needs the pages dirtied since its last round.
                    let dirty = if matches!(r.mechanism, Mechanism::Precopy | Mechanism::Hybrid) {
                        node.take_dirty(r.pid).unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    match node.export_state(r.pid) {
                        Ok(img) => {
                            let len = img.len() as u64;
                            r.image = Some(img);
                            src.frozen(sh.now_us(), &dirty, len);
                            set_phase(&r.progress, "frozen");
                        }
                        Err(e) => {
                            r.failure = Some(e.to_string());
                            src.handle_timeout(u64::MAX);
                        }
                    }
                }
                Err(e) => {
                    r.failure = Some(e.to_string());
                    src.handle_timeout(u64::MAX);
                }
            }
        }
        Action::Unfreeze => {
            node.set_throttle(r.pid, 0);
            if matches!(r.caller, Caller::Itself) {
                let why =
                    r.failure.clone().or_else(|| src.outcome().map(|o| format!("{o:?}"))).unwrap_or_else(|| "the migration failed".into());
                node.answer_migrate(r.pid, IoResult::Failed(why));
            }
            node.abort_export(r.pid);
        }
        Action::CommitExport { .. } => {
            // Committed: the destination owns the process. What reached it here after its
            // image follows it; from now on the slot here forwards.
            r.committed = true;
            set_phase(&r.progress, "committed");
            if r.mechanism == Mechanism::Lazy || r.mechanism == Mechanism::Hybrid {
                r.heap = node.take_heap(r.pid).ok();
            }
            // A partner that is down now will not be reported down again: its link update
            // waits in the session for its return, and holds nothing up here.
            for &p in sh.peers.keys() {
                if p != r.dest && !sh.is_up(p) {
                    src.peer_down(now, p);
                }
            }
            match node.commit_export(r.pid, r.dest, r.forwarding) {
                Ok(late) => {
                    r.held = late.inbox.len() as u64 + late.chans.iter().map(|c| c.queue.len() as u64).sum::<u64>();
                    r.link_chans = late.chans.iter().map(|c| c.chan).collect();
                    r.late_info = Some((late.moves, late.chans.iter().map(|c| (c.chan, c.moves)).collect()));
                    let hold = sh.mig.hooks.lock().hold_late_ms;
                    if hold > 0 {
                        sh.log(&format!("test hook: late messages of {} held for {hold} ms", tern_vm::value::name_text(r.pid)));
                        let until = Instant::now() + Duration::from_millis(hold);
                        while Instant::now() < until && !sh.is_shutting_down() {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                    // Both ways too: the process runs at the destination once this is there.
                    let w = MigWire::Late { mid: r.mid, late };
                    let _ = r.send_stream(false, &w);
                    let _ = sh.send_frame(r.dest, &Frame::Mig(w));
                }
                Err(e) => sh.log(&format!("migration of {}: {e}", tern_vm::value::name_text(r.pid))),
            }
        }
        Action::DeleteSource => {
            r.heap = None;
        }
        // Every partner acknowledged: nothing here points at it any more.
        Action::Done if src.is_committed() => node.drop_forwarding(r.pid, &r.link_chans, r.forwarding),
        _ => {}
    }
}
