//! The destination side of a migration: the node the process comes to. [`run_dest`]
//! polls the [`Dest`] machine and carries out what it says, in a loop; [`DestRun`] does
//! the work, a method per concern: the offer (refused when busy or over the limits, the
//! heap staged up front so a heap this machine cannot hold refuses the offer instead of
//! failing the node), the modules the process needs, pages installed as they come in
//! the heap the process will get, the image, reinstating and resuming it, faults and
//! their stream (asked again for everything after that stream failed), the process
//! ending while pages are still at the source (looked for at every wake of the loop, at
//! least every [`ENDED_POLL`]), the late messages (the process runs once they and the
//! `Commit` are here; the loop stays, timing the machine's bound on an unreachable
//! source, until they came or the process was ended for want of them), statistics.
//!
//! Everything the source sends is checked before it is used ("input is hostile" in
//! ARCHITECTURE.md): page lists against the heap limit, page sizes and indices, the
//! image's size, every module verified; a bad one makes reinstating fail, which aborts
//! the migration before the commit point.

use super::streams::{frame_bytes, from_ranges, next_input, on_session, open_fault_stream, wait_until};
use super::{mig_config, Input, MAX_IMAGE};
use crate::node::Host;
use crate::proto::migrate::{Action, Dest, DestOutcome, MigMsg, RefuseReason};
use crate::proto::wire::{DestStats, Frame, MigWire, PageRec};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tern_vm::bytecode::{Module, ModuleHash};
use tern_vm::heap::Heap;
use tern_vm::node::{Late, Node};
use tern_vm::value::name_text;
use tokio::sync::mpsc;

/// How often a destination tries to open a stream to the source again, after losing it
/// with pages still there.
const RESYNC_RETRY_US: u64 = 200_000;
/// How often a destination looks whether the process, running here with pages still at
/// the source, has ended (then the source is told it may drop them).
const ENDED_POLL: Duration = Duration::from_millis(50);

/// Runs a migration to this node (offered by `from` on the stream `out` answers on) to
/// the end.
pub(super) fn run_dest(
    sh: Arc<Host>,
    from: u16,
    offer: MigMsg,
    out: mpsc::Sender<Vec<u8>>,
    inputs: crossbeam_channel::Receiver<Input>,
    rt: tokio::runtime::Handle,
) {
    let node = sh.node();
    let Some((mut r, mut d)) = DestRun::open(&sh, node, from, &offer, out, &inputs, rt) else { return };
    loop {
        r.retry_resync(&sh, &mut d);
        r.notice_end(&sh, node, &mut d);
        while let Some(a) = d.poll_action() {
            dest_action(&sh, node, &mut r, &mut d, a);
        }
        r.resume_if_ready(&sh, node);
        while let Some((to, m)) = d.poll_transmit() {
            r.transmit(&sh, to, m);
        }
        if let Some(o) = d.outcome() {
            if r.finished(&sh, &d, o) {
                break;
            }
        }
        if sh.is_shutting_down() {
            break;
        }
        let mut wait = wait_until(d.poll_timeout(), sh.now_us());
        if r.running && d.pages_pending() {
            wait = wait.min(ENDED_POLL);
        }
        match next_input(&inputs, wait) {
            Ok(input) => r.input(&sh, node, &mut d, input),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        // (Also after an input: a steady stream of them must not hold a bound off.)
        if d.poll_timeout().is_some_and(|t| sh.now_us() >= t) {
            d.handle_timeout(sh.now_us());
        }
    }
    sh.mig.by_pid.lock().remove(&r.pid);
    sh.mig.runs.lock().remove(&r.mid);
}

/// What the destination keeps for one migration besides its machine.
pub(super) struct DestRun {
    from: u16,
    mid: u64,
    pid: u64,
    size_pages: u32,
    /// The migration's stream (answers to the source).
    out: mpsc::Sender<Vec<u8>>,
    /// The page-fault stream, once opened.
    fault_tx: Option<mpsc::Sender<Vec<u8>>>,
    rt: tokio::runtime::Handle,
    /// The heap the process will get, pages installed as they come.
    staged: Heap,
    image: Vec<u8>,
    image_done: bool,
    imported: bool,
    resume_pending: bool,
    late: Option<Late>,
    /// The source restarted after the commit: its late messages will not come.
    late_lost: bool,
    running: bool,
    /// When each page asked for on a fault was asked for.
    fetched_at: HashMap<u32, u64>,
    stats: DestStats,
    resumed_at: u64,
    /// What was wrong with what the source sent: reinstating fails with it.
    bad: Option<String>,
    commit_at: u64,
    /// After the stream to the source failed with pages still there: when to try again
    /// to open one and ask for every absent page.
    resync_at: Option<u64>,
}

impl DestRun {
    /// Takes the offer: refused (busy, over the limits, a heap this machine cannot
    /// make) or answered with the modules missing here. `None`: nothing more to do.
    fn open(
        sh: &Host,
        node: &Node,
        from: u16,
        offer: &MigMsg,
        out: mpsc::Sender<Vec<u8>>,
        inputs: &crossbeam_channel::Receiver<Input>,
        rt: tokio::runtime::Handle,
    ) -> Option<(DestRun, Dest)> {
        let mid = offer.mid();
        let MigMsg::Offer { pid, size_pages, .. } = *offer else { return None };
        // Pages are installed as they come, in the heap the process will get: made now, so
        // a heap this machine has no memory for refuses the offer (never aborts the node).
        let mut staged = Heap::new(node.vm().config.heap);
        let refuse = if node.is_local(pid) || sh.mig.by_pid.lock().contains_key(&pid) {
            Some(RefuseReason::Busy)
        } else if u64::from(size_pages) * sh.cfg.page_size as u64 > sh.cfg.limits.heap_bytes {
            Some(RefuseReason::OverLimits)
        } else if let Err(e) = staged.ensure_pages(size_pages as usize) {
            sh.log(&format!("refused to take {}: {e}", name_text(pid)));
            staged = Heap::new(node.vm().config.heap);
            Some(RefuseReason::OverLimits)
        } else {
            None
        };
        let d = Dest::new(sh.now_us(), mig_config(sh), sh.me.id, from, offer, refuse)?;
        let r = DestRun {
            from,
            mid,
            pid,
            size_pages,
            out,
            fault_tx: None,
            rt,
            staged,
            image: Vec::new(),
            image_done: false,
            imported: false,
            resume_pending: false,
            late_lost: false,
            late: None,
            running: false,
            fetched_at: HashMap::new(),
            stats: DestStats::default(),
            resumed_at: 0,
            bad: None,
            commit_at: 0,
            resync_at: None,
        };
        if refuse.is_none() && !r.answer_need(node, inputs) {
            sh.mig.runs.lock().remove(&mid);
            return None;
        }
        Some((r, d))
    }

    /// The offer is followed by the hashes of the process's modules: the answer (those
    /// missing here) goes before the machine's `Accept`, so the source has it in time.
    fn answer_need(&self, node: &Node, inputs: &crossbeam_channel::Receiver<Input>) -> bool {
        match next_input(inputs, Duration::from_secs(30)) {
            Ok(Input::Wire(_, MigWire::Need { hashes, .. })) => {
                let missing: Vec<ModuleHash> = hashes.into_iter().take(4096).filter(|h| !node.vm().has_module(h)).collect();
                let _ = self.out.blocking_send(frame_bytes(&MigWire::Need { mid: self.mid, hashes: missing }));
                true
            }
            _ => false,
        }
    }

    /// Sends on the page-fault stream (with `fault`, when there is one) or the
    /// migration's stream.
    fn send(&self, w: &MigWire, fault: bool) -> bool {
        let b = frame_bytes(w);
        match (&self.fault_tx, fault) {
            (Some(f), true) => f.blocking_send(b).is_ok(),
            _ => self.out.blocking_send(b).is_ok(),
        }
    }

    /// After the stream failed with pages still at the source: once a stream opens
    /// again, every absent page is asked for again.
    fn retry_resync(&mut self, sh: &Arc<Host>, d: &mut Dest) {
        let Some(t) = self.resync_at.filter(|&t| sh.now_us() >= t) else { return };
        self.resync_at = None;
        if !d.pages_pending() {
            return;
        }
        match open_fault_stream(sh, &self.rt, self.from, self.mid) {
            Some(tx) => {
                self.fault_tx = Some(tx);
                sh.log(&format!("migration of {}: asking the source again for its pages", name_text(self.pid)));
                d.resync(sh.now_us());
            }
            None => self.resync_at = Some(t + RESYNC_RETRY_US),
        }
    }

    /// The process ran here with pages still at the source and is no longer here: it
    /// ended (it cannot move on while pages are away). The machine tells the source it
    /// may drop them, and the migration ends.
    fn notice_end(&self, sh: &Host, node: &Node, d: &mut Dest) {
        if self.running && d.pages_pending() && !node.is_local(self.pid) {
            sh.log(&format!(
                "migration of {}: the process ended with {} page(s) still at the source; they are released",
                name_text(self.pid),
                d.absent_pages()
            ));
            d.process_ended(sh.now_us());
        }
    }

    /// Reinstates the process, frozen, from the image and the staged heap (after the
    /// test hook that holds it here, if set).
    fn reinstate(&mut self, sh: &Host, node: &Node, d: &mut Dest, absent: u32) {
        if sh.mig.hooks.lock().hold_before_ready {
            sh.log(&format!("test hook: migration of {} held before Ready", name_text(self.pid)));
            while sh.mig.hooks.lock().hold_before_ready && !sh.is_shutting_down() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let absent_list: Vec<u32> = if absent > 0 { (0..self.size_pages).filter(|&p| !d.is_present(p)).collect() } else { Vec::new() };
        let r = if !self.image_done {
            Err("the image is incomplete".to_string())
        } else if let Some(b) = self.bad.take() {
            Err(b)
        } else {
            let heap = std::mem::replace(&mut self.staged, Heap::new(node.vm().config.heap));
            node.import_state(&self.image, tern_vm::node::Staged::Heap(Box::new(heap)), &absent_list).map_err(|e| e.to_string())
        };
        self.image = Vec::new();
        match r {
            Ok(_) => {
                self.imported = true;
                if !absent_list.is_empty() {
                    sh.mig.by_pid.lock().insert(self.pid, self.mid);
                }
                d.reinstated(sh.now_us());
            }
            Err(e) => {
                sh.log(&format!("refused the image of {}: {e}", name_text(self.pid)));
                d.reinstate_failed(sh.now_us());
            }
        }
    }

    /// Commit and the late messages are both here (or the late messages were lost with
    /// the source): it runs.
    fn resume_if_ready(&mut self, sh: &Host, node: &Node) {
        if !self.resume_pending || self.running || (self.late.is_none() && !self.late_lost) {
            return;
        }
        self.running = true;
        self.resumed_at = sh.now_us();
        self.stats.resume_wait_us = self.resumed_at.saturating_sub(self.commit_at);
        let r = match self.late.take() {
            Some(l) => node.commit_import(self.pid, l),
            None => {
                sh.log(&format!(
                    "migration of {}: the source restarted before its late messages came; it runs without them",
                    name_text(self.pid)
                ));
                node.commit_import_without_late(self.pid)
            }
        };
        if let Err(e) = r {
            sh.log(&format!("cannot resume {}: {e}", name_text(self.pid)));
        }
    }

    /// The machine ends the process (the pages or the late messages it waits for are
    /// lost with the source, or the source stayed unreachable too long). One that has not
    /// run here yet (it waited for its late messages) is marked killed and then
    /// committed without them, so it ends as any process does (links, watchers, its
    /// messages) without running a step.
    fn end_process(&mut self, sh: &Host, node: &Node, why: &str) {
        sh.mig.by_pid.lock().remove(&self.pid);
        let why = format!("migrated from node {}: {why}", sh.peers.get(&self.from).map_or("?", |p| p.conf.name.as_str()));
        sh.log(&format!("process {} ended: {why}", name_text(self.pid)));
        node.pages_lost(self.pid, &why);
        if self.resume_pending && !self.running {
            self.resume_pending = false;
            if self.late.is_none() {
                sh.mig.ended_before_late(self.mid);
            }
            if let Err(e) = node.commit_import_without_late(self.pid) {
                sh.log(&format!("cannot end {}: {e}", name_text(self.pid)));
            }
        }
    }

    /// Sends one message of the machine: on the session (the commit decision also on
    /// the stream, the fast path), a fetch on the fault stream, the rest on the stream.
    fn transmit(&mut self, sh: &Arc<Host>, to: u16, m: MigMsg) {
        if on_session(&m) {
            if matches!(m, MigMsg::Committed { .. } | MigMsg::Aborted { .. }) {
                let _ = self.send(&MigWire::Msg(m.clone()), false);
            }
            if let MigMsg::LinkUpdate { mid, pid, to: at, fwd } = m {
                // The route's version is the process's move count, this move included (the
                // imported slot has it). Its receive ends' new places were announced by the
                // source at its commit, before anything else it sent after it.
                let moves = sh.node().moves_of(pid).unwrap_or(0);
                let _ = sh.send_frame(to, &Frame::Mig(MigWire::LinkUpdate { mid, pid, to: at, moves, chans: Vec::new(), fwd }));
            } else {
                let _ = sh.send_frame(to, &Frame::Mig(MigWire::Msg(m)));
            }
            return;
        }
        if let MigMsg::Fetch { pages: want, .. } = &m {
            for &p in want {
                self.fetched_at.entry(p).or_insert_with(|| sh.now_us());
            }
            if self.fault_tx.as_ref().is_none_or(|f| f.is_closed()) {
                self.fault_tx = open_fault_stream(sh, &self.rt, self.from, self.mid);
            }
            if !self.send(&MigWire::Msg(m.clone()), true) {
                // No stream: the pages cannot come back on one either; ask again for
                // everything once a stream opens.
                self.fault_tx = None;
                self.resync_at.get_or_insert(sh.now_us() + RESYNC_RETRY_US);
            }
            return;
        }
        let _ = self.send(&MigWire::Msg(m), false);
    }

    /// At the machine's outcome: true when the run is over (committed and running,
    /// or failed), after the statistics went to the source.
    fn finished(&mut self, sh: &Host, d: &Dest, o: &DestOutcome) -> bool {
        if matches!(o, DestOutcome::Committed) && !self.running {
            // Committed but the late messages are not here yet: wait for them.
            return false;
        }
        self.stats.outcome = match o {
            DestOutcome::Committed => "committed".into(),
            DestOutcome::Aborted(f) => format!("aborted: {f}"),
            DestOutcome::ProcessLost(f) => format!("process lost: {f}"),
        };
        self.stats.page_faults = u64::from(d.report().faults);
        self.stats.pages_received = u64::from(d.report().pages_received);
        self.stats.fault_latency_us.sort_unstable();
        self.stats.dependency_ended_after_us = d.report().dependency_ended_us.map(|t| t.saturating_sub(self.resumed_at));
        if matches!(o, DestOutcome::Committed) {
            let _ = sh.send_frame(self.from, &Frame::Mig(MigWire::DestDone { mid: self.mid, stats: self.stats.clone() }));
        }
        true
    }

    /// Takes one input: what the source sent, a fault of the process, the stream
    /// failing, peers going down, restarting or coming back.
    fn input(&mut self, sh: &Host, node: &Node, d: &mut Dest, input: Input) {
        let now = sh.now_us();
        match input {
            Input::Wire(f, w) => self.wire(sh, node, d, f, w),
            Input::Fault(page) => {
                d.page_fault(now, page);
            }
            Input::StreamFailed(e) => {
                if !d.committed() && d.outcome().is_none() {
                    sh.log(&format!("migration of {}: {e}", name_text(self.pid)));
                    d.handle(now, self.from, MigMsg::Abort { mid: self.mid });
                } else if d.pages_pending() {
                    // Pages asked for or pushed may be lost with it: once a stream can be
                    // opened again, every absent page is asked for again.
                    self.fault_tx = None;
                    self.resync_at = Some(now);
                }
            }
            Input::PeerDown(n) => d.peer_down(now, n),
            Input::PeerRestarted(n) => d.peer_restarted(now, n),
            Input::PeerUp(n) => d.peer_up(now, n),
            Input::FaultStream(_) | Input::Frame(..) => {}
        }
    }

    /// What the source sent: protocol messages to the machine, pages, modules, the
    /// image in parts, the late messages.
    fn wire(&mut self, sh: &Host, node: &Node, d: &mut Dest, f: u16, w: MigWire) {
        match w {
            MigWire::Msg(MigMsg::Offer { .. }) => {}
            MigWire::Final { mid, image_len, pages, absent, partners } => {
                let (pages, absent) = self.final_lists(sh, &pages, &absent);
                d.handle(sh.now_us(), f, MigMsg::Final { mid, image_len, pages, absent, partners })
            }
            MigWire::Msg(m) => {
                if let MigMsg::PageData { pushed: true, pages: ref got, .. } = m {
                    self.stats.pages_pushed += got.len() as u64;
                }
                d.handle(sh.now_us(), f, m)
            }
            MigWire::Pages { pages, .. } => {
                self.stage_pages(sh, node, pages);
                // Pages are progress: keep the receiving deadline from expiring.
                d.handle(sh.now_us(), f, MigMsg::Pages { mid: self.mid, round: u32::MAX, pages: Vec::new() });
            }
            MigWire::Modules { modules, .. } => self.load_modules(node, modules),
            MigWire::Image { part, last, .. } => {
                if self.image.len() + part.len() > MAX_IMAGE {
                    self.bad = Some("the image is over the size limit".into());
                } else {
                    self.image.extend_from_slice(&part);
                }
                self.image_done = last;
            }
            MigWire::Late { late, .. } => {
                d.late_arrived(sh.now_us());
                self.late = Some(late);
            }
            _ => {}
        }
    }

    /// `Final`'s page lists (as ranges), each at most every page of the heap limit; a
    /// longer one is bad (reinstating fails) and the machine gets empty lists.
    fn final_lists(&mut self, sh: &Host, pages: &[(u32, u32)], absent: &[(u32, u32)]) -> (Vec<u32>, Vec<u32>) {
        let max = (sh.cfg.limits.heap_bytes / sh.cfg.page_size as u64).min(u64::from(u32::MAX)) as u32 + 1;
        match (from_ranges(pages, max), from_ranges(absent, max)) {
            (Some(pages), Some(absent)) => (pages, absent),
            _ => {
                self.bad = Some("the final page lists are over the heap limit".into());
                (Vec::new(), Vec::new())
            }
        }
    }

    /// Pages from the source: into the staged heap (grown for pages past the offered
    /// size, within the limit) or, once the process is reinstated, to the process.
    fn stage_pages(&mut self, sh: &Host, node: &Node, recs: Vec<PageRec>) {
        let pw = sh.cfg.page_size / 8;
        let mut supply = Vec::new();
        for rec in recs {
            if let Some(b) = &rec.data {
                if b.len() != pw * 8 {
                    self.bad = Some(format!("page {} has the wrong size", rec.index));
                    continue;
                }
            }
            if let Some(t) = self.fetched_at.remove(&rec.index) {
                self.stats.fault_latency_us.push(sh.now_us().saturating_sub(t));
            }
            if self.imported {
                supply.push((rec.index, rec.data.as_deref().map_or_else(|| vec![0; pw], bytes_to_words)));
                continue;
            }
            // Pages past the offered size: the heap grew before it was frozen.
            if rec.index as usize >= self.staged.page_count() {
                if let Err(e) = self.staged.ensure_pages(rec.index as usize + 1) {
                    self.bad = Some(match e {
                        tern_vm::heap::HeapError::OutOfMemory(_) => format!("page {}: {e}", rec.index),
                        _ => format!("page {} is outside the heap limit", rec.index),
                    });
                    continue;
                }
            }
            match &rec.data {
                Some(b) => {
                    let _ = self.staged.supply_page_bytes(rec.index, b);
                }
                None => self.staged.zero_page(rec.index),
            }
        }
        if !supply.is_empty() {
            node.supply_pages(self.pid, supply);
        }
    }

    /// The modules the process needs that were missing here, each verified.
    fn load_modules(&mut self, node: &Node, modules: Vec<serde_bytes::ByteBuf>) {
        for m in modules {
            match Module::decode(&m) {
                Ok(m) => {
                    if let Err(e) = node.vm().load(m) {
                        self.bad = Some(format!("a module of the process does not verify: {e}"));
                    }
                }
                Err(e) => self.bad = Some(format!("a module of the process is damaged: {e}")),
            }
        }
    }
}

/// Carries out one action of the destination machine on the VM.
fn dest_action(sh: &Arc<Host>, node: &Node, r: &mut DestRun, d: &mut Dest, a: Action) {
    match a {
        Action::Reinstate { .. } if sh.mig.hooks.lock().stall_before_ready => {}
        Action::Reinstate { absent } => r.reinstate(sh, node, d, absent),
        Action::Discard => {
            // Imported: `Ready` went, so a `Commit` may come after this run is gone.
            if r.imported {
                node.abort_import(r.pid);
                r.imported = false;
                sh.mig.aborted.lock().insert(r.mid, r.from);
            }
            sh.mig.by_pid.lock().remove(&r.pid);
        }
        Action::Resume { .. } => {
            r.resume_pending = true;
            r.commit_at = sh.now_us();
        }
        Action::RunWithoutLate => r.late_lost = true,
        Action::Kill { why } => r.end_process(sh, node, &why.to_string()),
        _ => {}
    }
}

fn bytes_to_words(bytes: &[u8]) -> Vec<u64> {
    bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()
}
