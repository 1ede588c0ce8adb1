//! The destination side of a migration: the node the process comes to. [`run_dest`]
//! polls the [`Dest`] machine and carries out what it says, in a loop; [`DestRun`] does
//! the work, a method per concern: the offer (refused when busy or over the limits, the
//! heap staged up front so a heap this machine cannot hold refuses the offer instead of
//! failing the node), the modules the process needs, pages installed as they come in
//! the heap the process will get, the image, reinstating and resuming it, faults and
//! their stream (asked again for everything after that stream failed), the process
//! ending while pages are still at the source (looked for at every wake of the loop, at
//! least every [`ENDED_POLL`]), the late messages (the process runs at `Commit`, its
//! system calls and its end held until they are here too, [`Node::resume_import`]; the
//! loop stays, timing the machine's bound on an unreachable source, until they came or
//! the process was ended for want of them), statistics.
//!
//! Everything the source sends is checked before it is used ("input is hostile" in
//! ARCHITECTURE.md): page lists against the heap limit, page sizes and indices, the
//! image's size, every module verified; a bad one makes reinstating fail, which aborts
//! the migration before the commit point.

use super::streams::{checked_ranges, decoded, frame_bytes, from_ranges, on_session, open_fault_stream, recycle, wait_until, DestInputs};
use super::{mig_config, Input, MAX_FAULT_SAMPLES, MAX_GROUP, MAX_IMAGE};
use crate::node::Host;
use crate::proto::mechanism::Mechanism;
use crate::proto::migrate::{Action, Dest, DestOutcome, MigMsg, PageRange, RefuseReason, SentFor};
use crate::proto::wire::{self, DestStats, Frame, LinkProc, MigWire, PageRecRef};
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
    mut inputs: DestInputs,
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
        if !r.modules_due {
            if let Some((to, m)) = r.held_accept.take() {
                r.transmit(&sh, to, m);
            }
        }
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
        match inputs.next(wait) {
            Ok(input) => r.input(&sh, node, &mut d, input),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        // (Also after an input: a steady stream of them must not hold a bound off.)
        if d.poll_timeout().is_some_and(|t| sh.now_us() >= t) {
            d.handle_timeout(sh.now_us());
        }
    }
    let hold = sh.mig.hooks.lock().hold_dest_end_ms;
    if hold > 0 {
        sh.log(&format!("test hook: migration of {} ends {hold} ms late", name_text(r.pid)));
        std::thread::sleep(Duration::from_millis(hold));
    }
    let outcome = match d.outcome() {
        Some(o) => format!("{o:?}"),
        None => "no outcome".into(),
    };
    let end = format!("ended ({outcome}) at {} µs with {} page(s) absent by its count", sh.now_us(), d.absent_pages());
    sh.mig.dest_ended(r.mid, r.members.iter().map(|m| m.pid), end);
    sh.mig.forget_pids(r.mid, r.members.iter().map(|m| m.pid));
    sh.mig.take_fault_waits(r.mid);
    sh.mig.runs.lock().remove(&r.mid);
}

/// One process of the migration (a coprocess group's members come as one migration,
/// their pages one after another in the machine's page numbers).
struct Member {
    pid: u64,
    size: u32,
    /// Its first page's number in the machine's numbering.
    offset: u32,
    /// The heap it will get, pages installed as they come.
    staged: Heap,
}

/// What the destination keeps for one migration besides its machine.
pub(super) struct DestRun {
    from: u16,
    mid: u64,
    /// The process (a group's first member).
    pid: u64,
    /// Every process it brings: `pid`, then the rest of its group.
    members: Vec<Member>,
    /// The migration's stream (answers to the source).
    out: mpsc::Sender<Vec<u8>>,
    /// The page-fault stream, once opened.
    fault_tx: Option<mpsc::Sender<Vec<u8>>>,
    rt: tokio::runtime::Handle,
    image: Vec<u8>,
    image_done: bool,
    imported: bool,
    resume_pending: bool,
    /// One per member, in order.
    late: Option<Vec<Late>>,
    /// The source restarted after the commit: its late messages will not come.
    late_lost: bool,
    /// Resumed (at `Commit`): it computes; its system calls wait for the late messages.
    running: bool,
    /// The late messages (or their loss) are given to the process: the move is complete.
    late_done: bool,
    /// When each page asked for on a fault was asked for.
    fetched_at: HashMap<u32, u64>,
    stats: DestStats,
    resumed_at: u64,
    /// The hotness profile: functions compiled at the source, compiled here too (their
    /// module is here), or waiting for their module.
    hot: Vec<(Arc<tern_vm::runtime::LinkedModule>, u32)>,
    hot_waiting: Vec<(ModuleHash, u32)>,
    /// A lazy move whose modules are not here: its `Accept` waits for them (`held_accept`),
    /// so that loading them is done before the source freezes the process, which it does
    /// at `Accept` (other mechanisms send pages first, and load them meanwhile).
    modules_due: bool,
    held_accept: Option<(u16, MigMsg)>,
    /// Its `Accept` went.
    accepted: bool,
    /// Whether the profile is acted on (`[jit] profile`): when not, its functions are
    /// only watched, to report when they turned hot and were compiled here again.
    use_profile: bool,
    /// `resumed_at` on the compiler's clock (`tern_vm::jit::clock_us`).
    resumed_at_jit: u64,
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
        inputs: &DestInputs,
        rt: tokio::runtime::Handle,
    ) -> Option<(DestRun, Dest)> {
        let mid = offer.mid();
        let MigMsg::Offer { pid, size_pages, ref members, admit, .. } = *offer else { return None };
        let listed: Vec<(u64, u32)> = if members.is_empty() { vec![(pid, size_pages)] } else { members.clone() };
        // Pages are installed as they come, in the heaps the processes will get: made now,
        // so heaps this machine has no memory for refuse the offer (never abort the node).
        let mut members: Vec<Member> = Vec::with_capacity(listed.len().min(MAX_GROUP));
        let mut refuse = group_refusal(pid, size_pages, &listed);
        // A load policy's move: only if it leaves this node no busier than the source.
        if let (None, Some(a)) = (refuse, admit) {
            if let Err(why) = sh.admit(pid, from, a) {
                sh.log(&format!("refused to take {} from node {}: {why}", name_text(pid), sh.node_name(from)));
                refuse = Some(RefuseReason::NoRoom);
            }
        }
        let page_limit = sh.cfg.limits.heap_bytes / sh.cfg.page_size as u64;
        let mut offset = 0u32;
        for &(p, size) in listed.iter().take(if refuse.is_some() { 0 } else { MAX_GROUP }) {
            let mut staged = Heap::new(node.vm().config.heap);
            if node.is_local(p) || sh.mig.by_pid.lock().contains_key(&p) {
                refuse = Some(RefuseReason::Busy);
            } else if u64::from(size) > page_limit {
                refuse = Some(RefuseReason::OverLimits);
            } else if let Err(e) = staged.ensure_pages(size as usize) {
                sh.log(&format!("refused to take {}: {e}", name_text(p)));
                refuse = Some(RefuseReason::OverLimits);
            }
            if refuse.is_some() {
                members.clear();
                break;
            }
            members.push(Member { pid: p, size, offset, staged });
            offset += size;
        }
        let d = Dest::new(sh.now_us(), mig_config(sh), sh.me.id, from, offer, refuse)?;
        let r = DestRun {
            from,
            mid,
            pid,
            members,
            out,
            fault_tx: None,
            rt,
            image: Vec::new(),
            image_done: false,
            imported: false,
            resume_pending: false,
            late_lost: false,
            late: None,
            running: false,
            late_done: false,
            fetched_at: HashMap::new(),
            stats: DestStats::default(),
            resumed_at: 0,
            hot: Vec::new(),
            hot_waiting: Vec::new(),
            modules_due: false,
            held_accept: None,
            accepted: false,
            use_profile: sh.cfg.jit.profile,
            resumed_at_jit: 0,
            bad: None,
            commit_at: 0,
            resync_at: None,
        };
        let mut r = r;
        let lazy = matches!(offer, MigMsg::Offer { mechanism: Mechanism::Lazy, .. });
        if refuse.is_none() && !r.answer_need(node, inputs, lazy) {
            sh.mig.runs.lock().remove(&mid);
            return None;
        }
        Some((r, d))
    }

    /// The offer is followed by the hashes of the process's modules: the answer (those
    /// missing here) goes before the machine's `Accept`, so the source has it in time
    /// (and a lazy move's `Accept` waits for them, see `modules_due`).
    fn answer_need(&mut self, node: &Node, inputs: &DestInputs, lazy: bool) -> bool {
        let Some(bulk) = &inputs.bulk else { return false };
        match bulk.recv_timeout(Duration::from_secs(30)).map(decoded) {
            Ok(Input::Wire(_, MigWire::Need { hashes, hot, .. })) => {
                let missing: Vec<ModuleHash> = hashes.into_iter().take(4096).filter(|h| !node.vm().has_module(h)).collect();
                self.modules_due = lazy && !missing.is_empty();
                let _ = self.out.blocking_send(frame_bytes(&MigWire::Need { mid: self.mid, hashes: missing, hot: vec![] }));
                self.hot_waiting = hot.into_iter().take(super::source::MAX_HOT).collect();
                self.compile_hot(node);
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
        if self.running && d.pages_pending() && !self.members.iter().any(|m| node.is_local(m.pid)) {
            sh.log(&format!(
                "migration of {}: the process ended with {} page(s) still at the source; they are released",
                name_text(self.pid),
                d.absent_pages()
            ));
            d.process_ended(sh.now_us());
        }
    }

    /// Reinstates the processes, frozen, from the image and the staged heaps (after the
    /// test hook that holds it here, if set): all of them, or none.
    fn reinstate(&mut self, sh: &Host, node: &Node, d: &mut Dest, absent: u32) {
        if sh.mig.hooks.lock().hold_before_ready {
            sh.log(&format!("test hook: migration of {} held before Ready", name_text(self.pid)));
            while sh.mig.hooks.lock().hold_before_ready && !sh.is_shutting_down() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let image = std::mem::take(&mut self.image);
        let r = if !self.image_done {
            Err("the image is incomplete".to_string())
        } else if let Some(b) = self.bad.take() {
            Err(b)
        } else {
            self.import_all(node, d, absent, image)
        };
        match r {
            Ok(any_absent) => {
                self.imported = true;
                if any_absent {
                    let mut by_pid = sh.mig.by_pid.lock();
                    for m in &self.members {
                        by_pid.insert(m.pid, self.mid);
                    }
                }
                d.reinstated(sh.now_us());
            }
            Err(e) => {
                sh.log(&format!("refused the image of {}: {e}", name_text(self.pid)));
                d.reinstate_failed(sh.now_us());
            }
        }
    }

    /// Imports every member from its part of the image and its staged heap; if one
    /// fails, those imported are discarded. Whether any page is left absent.
    fn import_all(&mut self, node: &Node, d: &Dest, absent: u32, image: Vec<u8>) -> Result<bool, String> {
        let images: Vec<Vec<u8>> = if self.members.len() == 1 {
            vec![image]
        } else {
            match postcard::from_bytes::<Vec<serde_bytes::ByteBuf>>(&image) {
                Ok(parts) if parts.len() == self.members.len() => parts.into_iter().map(|b| b.into_vec()).collect(),
                _ => return Err("the group's image does not hold one image per member".into()),
            }
        };
        let mut done: Vec<u64> = Vec::new();
        let mut any_absent = false;
        for (m, img) in self.members.iter_mut().zip(images) {
            // The member's absent pages, by its own page numbers.
            let absent_list: Vec<(u32, u32)> = if absent > 0 {
                d.absent_ranges(m.offset, m.offset + m.size).into_iter().map(|(a, b)| (a - m.offset, b - m.offset)).collect()
            } else {
                Vec::new()
            };
            any_absent |= !absent_list.is_empty();
            let heap = std::mem::replace(&mut m.staged, Heap::new(node.vm().config.heap));
            match node.import_state(&img, tern_vm::node::Staged::Heap(Box::new(heap)), &absent_list) {
                Ok(p) if p == m.pid => {
                    node.arrived_from(p, self.from);
                    done.push(p)
                }
                Ok(p) => {
                    done.push(p);
                    for &p in &done {
                        node.abort_import(p);
                    }
                    return Err(format!("the image of {} is of another process", name_text(m.pid)));
                }
                Err(e) => {
                    for &p in &done {
                        node.abort_import(p);
                    }
                    return Err(e.to_string());
                }
            }
        }
        Ok(any_absent)
    }

    /// At `Commit` the process runs ([`Node::resume_import`]: its system calls and its
    /// end wait for the late messages); once they are here too (or were lost with the
    /// source) it gets them, and the move is complete.
    fn resume_if_ready(&mut self, sh: &Host, node: &Node) {
        if self.resume_pending && !self.running {
            self.running = true;
            self.resumed_at = sh.now_us();
            self.resumed_at_jit = tern_vm::jit::clock_us();
            for m in &self.members {
                if let Err(e) = node.resume_import(m.pid) {
                    sh.log(&format!("cannot resume {}: {e}", name_text(m.pid)));
                }
            }
            self.stats.resume_wait_us = self.resumed_at.saturating_sub(self.commit_at);
        }
        if !self.running || self.late_done || (self.late.is_none() && !self.late_lost) {
            return;
        }
        self.late_done = true;
        self.stats.late_wait_us = sh.now_us().saturating_sub(self.resumed_at);
        let mut lates = self.late.take().map(|l| l.into_iter());
        if lates.is_none() {
            sh.log(&format!(
                "migration of {}: the source restarted before its late messages came; it runs without them",
                name_text(self.pid)
            ));
        }
        for m in &self.members {
            let r = match lates.as_mut().and_then(Iterator::next) {
                Some(l) => node.commit_import(m.pid, l),
                None => node.commit_import_without_late(m.pid),
            };
            if let Err(e) = r {
                sh.log(&format!("cannot resume {}: {e}", name_text(m.pid)));
            }
        }
        // Once the move is complete, the profiled functions whose module is here are
        // compiled in the background (not at the resume: a compile takes a core for
        // milliseconds, which on a small machine delayed `Committed` and the late
        // messages, and so the process's next system call, by as much).
        if self.use_profile {
            for (lm, func) in &self.hot {
                tern_vm::jit::precompile(node.vm(), lm, *func);
            }
        }
    }

    /// Of the pages that came (every one has), those a process of the migration does not
    /// have, in the machine's page numbers; each is logged, since it means a page was
    /// lost between this run and the process (the machine asks for it again). A process
    /// no longer here lacks nothing.
    fn missing_pages(&self, sh: &Host, node: &Node) -> Vec<u32> {
        let mut out = Vec::new();
        for m in &self.members {
            let absent = node.absent_pages_of(m.pid).unwrap_or_default();
            let lacks: Vec<u32> = absent.into_iter().filter(|&p| p < m.size).map(|p| p + m.offset).collect();
            if !lacks.is_empty() {
                sh.mig.hooks.lock().lose_page_install = None;
                sh.log(&format!(
                    "migration of {}: every page came, but the process lacks {} of them (the first: {}); they are asked for again",
                    name_text(m.pid),
                    lacks.len(),
                    lacks[0] - m.offset
                ));
            }
            out.extend(lacks);
        }
        out
    }

    /// The machine ends the process (the pages or the late messages it waits for are
    /// lost with the source, or the source stayed unreachable too long). One whose late
    /// messages have not come (its end waits for them) is marked killed and then
    /// committed without them, so it ends as any process does (links, watchers, its
    /// messages).
    fn end_process(&mut self, sh: &Host, node: &Node, why: &str) {
        let why = format!("migrated from node {}: {why}", sh.peers.get(&self.from).map_or("?", |p| p.conf.name.as_str()));
        sh.mig.forget_pids(self.mid, self.members.iter().map(|m| m.pid));
        for m in &self.members {
            sh.log(&format!("process {} ended: {why}", name_text(m.pid)));
            node.pages_lost(m.pid, &why);
        }
        if self.resume_pending && !self.late_done {
            self.resume_pending = false;
            self.late_done = true;
            if self.late.is_none() {
                sh.mig.ended_before_late(self.mid);
            }
            for m in &self.members {
                if let Err(e) = node.commit_import_without_late(m.pid) {
                    sh.log(&format!("cannot end {}: {e}", name_text(m.pid)));
                }
            }
        }
    }

    /// Sends one message of the machine: on the session (the commit decision also on
    /// the stream, the fast path), a fetch on the fault stream, the rest on the stream.
    fn transmit(&mut self, sh: &Arc<Host>, to: u16, m: MigMsg) {
        if matches!(m, MigMsg::Accept { .. }) {
            if self.modules_due {
                self.held_accept = Some((to, m));
                return;
            }
            self.accepted = true;
        }
        tracing::debug!(node = %sh.me.name, mid = self.mid, "migration destination: sends {} to {to}", m.name());
        if on_session(&m) {
            if matches!(m, MigMsg::Committed { .. } | MigMsg::Aborted { .. }) {
                let _ = self.send(&MigWire::Msg(m.clone()), false);
            }
            if let MigMsg::LinkUpdate { mid, to: at, fwd, .. } = m {
                // The route's version is the process's move count, this move included (the
                // imported slot has it). Its receive ends' new places were announced by the
                // source at its commit, before anything else it sent after it.
                let procs = self
                    .members
                    .iter()
                    .map(|m| LinkProc { pid: m.pid, moves: sh.node().moves_of(m.pid).unwrap_or(0), chans: Vec::new() })
                    .collect();
                let _ = sh.send_frame(to, &Frame::Mig(MigWire::LinkUpdate { mid, procs, to: at, fwd }));
            } else {
                let _ = sh.send_frame(to, &Frame::Mig(MigWire::Msg(m)));
            }
            return;
        }
        if let MigMsg::Fetch { pages: want, ahead, .. } = &m {
            if !ahead {
                for &p in want {
                    self.fetched_at.entry(p).or_insert_with(|| sh.now_us());
                }
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
        if matches!(o, DestOutcome::Committed) && !self.late_done {
            // Committed but the late messages are not here yet: wait for them.
            return false;
        }
        self.stats.outcome = match o {
            DestOutcome::Committed => "committed".into(),
            DestOutcome::Aborted(f) => format!("aborted: {f}"),
            DestOutcome::ProcessLost(f) => format!("process lost: {f}"),
        };
        self.stats.page_faults = u64::from(d.report().faults);
        self.stats.pages_read_ahead = u64::from(d.report().pages_read_ahead);
        self.stats.pages_received = u64::from(d.report().pages_received);
        self.stats.fault_latency_us.sort_unstable();
        self.stats.fault_wait_us = sh.mig.take_fault_waits(self.mid);
        self.stats.fault_wait_us.sort_unstable();
        self.stats.dependency_ended_after_us = d.report().dependency_ended_us.map(|t| t.saturating_sub(self.resumed_at));
        if matches!(o, DestOutcome::Committed) {
            self.hot_stats();
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
            Input::Fault(pid, page) => {
                if let Some(m) = self.members.iter().find(|m| m.pid == pid && page < m.size) {
                    if d.is_present(m.offset + page) && d.pages_pending() {
                        sh.mig.hooks.lock().lose_page_install = None;
                        sh.log(&format!(
                            "migration of {}: the process faulted on page {page}, which had come; it is asked for again",
                            name_text(pid)
                        ));
                    }
                    d.page_fault(now, m.offset + page);
                }
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
            Input::Pages(f, frame, max) => {
                self.pages_frame(sh, node, d, f, &frame, max);
                recycle(frame);
            }
            Input::FaultStream(..) | Input::Frame(..) => {}
        }
    }

    /// What the source sent: protocol messages to the machine, pages, modules, the
    /// image in parts, the late messages.
    fn wire(&mut self, sh: &Host, node: &Node, d: &mut Dest, f: u16, w: MigWire) {
        // Only the source speaks for this migration: what another node sends with its
        // id (its pages, image, modules, late messages) is ignored.
        if f != self.from {
            return;
        }
        match &w {
            MigWire::Msg(m) => tracing::debug!(node = %sh.me.name, mid = self.mid, "migration destination: has {}", m.name()),
            MigWire::Final { .. } => tracing::debug!(node = %sh.me.name, mid = self.mid, "migration destination: has Final"),
            _ => {}
        }
        match w {
            MigWire::Msg(MigMsg::Offer { .. }) => {}
            MigWire::Final { mid, image_len, pages, absent, partners } => {
                let (pages, absent) = self.final_lists(sh, &pages, absent);
                d.handle(sh.now_us(), f, MigMsg::Final { mid, image_len, pages, absent, partners })
            }
            MigWire::Msg(m) => {
                if let MigMsg::PageData { sent: SentFor::Push, pages: ref got, .. } = m {
                    self.stats.pages_pushed += got.len() as u64;
                }
                d.handle(sh.now_us(), f, m)
            }
            MigWire::Pages { member, pages, .. } => {
                let pages: Vec<PageRecRef> = pages.iter().map(|p| PageRecRef { index: p.index, data: p.data.as_deref() }).collect();
                self.pages_in(sh, node, d, member, &pages);
            }
            MigWire::Modules { modules, .. } => {
                if self.accepted {
                    self.stats.modules_after_accept += modules.len() as u32;
                }
                self.load_modules(node, modules);
                self.modules_due = false;
            }
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

    /// Pages from the source, read in place from their frame.
    fn pages_frame(&mut self, sh: &Host, node: &Node, d: &mut Dest, f: u16, frame: &[u8], max: usize) {
        if f != self.from {
            return;
        }
        match wire::decode_pages(frame, max) {
            Ok(p) => self.pages_in(sh, node, d, p.member, &p.pages),
            Err(e) => self.input(sh, node, d, Input::StreamFailed(format!("bad migration frame: {e}"))),
        }
    }

    fn pages_in(&mut self, sh: &Host, node: &Node, d: &mut Dest, member: u32, pages: &[PageRecRef]) {
        self.stage_pages(sh, node, member as usize, pages);
        // Pages are progress: keep the receiving deadline from expiring.
        d.handle(sh.now_us(), self.from, MigMsg::Pages { mid: self.mid, round: u32::MAX, pages: Vec::new() });
    }

    /// `Final`'s page lists (as ranges), each at most every page of the heap limit, the
    /// absent ones in order and apart; others are bad (reinstating fails) and the
    /// machine gets empty lists.
    fn final_lists(&mut self, sh: &Host, pages: &[PageRange], absent: Vec<PageRange>) -> (Vec<u32>, Vec<PageRange>) {
        let max = (sh.cfg.limits.heap_bytes / sh.cfg.page_size as u64).min(u64::from(u32::MAX)) as u32 + 1;
        match (from_ranges(pages, max), checked_ranges(absent, max)) {
            (Some(pages), Some(absent)) => (pages, absent),
            _ => {
                self.bad = Some("the final page lists are over the heap limit or out of order".into());
                (Vec::new(), Vec::new())
            }
        }
    }

    /// Pages from the source: into the staged heap (grown for pages past the offered
    /// size, within the limit) or, once the process is reinstated, to the process.
    fn stage_pages(&mut self, sh: &Host, node: &Node, member: usize, recs: &[PageRecRef]) {
        let pw = sh.cfg.page_size / 8;
        let mut supply = Vec::new();
        let i = member;
        let Some(m) = self.members.get_mut(member) else {
            self.bad = Some(format!("pages of member {member}, which the offer did not name"));
            return;
        };
        for rec in recs {
            if let Some(b) = rec.data {
                if b.len() != pw * 8 {
                    self.bad = Some(format!("page {} has the wrong size", rec.index));
                    continue;
                }
            }
            if let Some(t) = self.fetched_at.remove(&(m.offset + rec.index)) {
                if self.stats.fault_latency_us.len() < MAX_FAULT_SAMPLES {
                    self.stats.fault_latency_us.push(sh.now_us().saturating_sub(t));
                }
            }
            if self.imported {
                // (The test hook loses every copy until the loss is noticed.)
                if i == 0 && sh.mig.hooks.lock().lose_page_install == Some(rec.index) {
                    sh.log(&format!("test hook: page {} of {} lost on its way to the process", rec.index, name_text(m.pid)));
                    continue;
                }
                supply.push((rec.index, rec.data.map_or_else(|| vec![0; pw], bytes_to_words)));
                continue;
            }
            // Pages past the offered size: the heap grew before it was frozen.
            if rec.index as usize >= m.staged.page_count() {
                if let Err(e) = m.staged.ensure_pages(rec.index as usize + 1) {
                    self.bad = Some(match e {
                        tern_vm::heap::HeapError::OutOfMemory(_) => format!("page {}: {e}", rec.index),
                        _ => format!("page {} is outside the heap limit", rec.index),
                    });
                    continue;
                }
            }
            match rec.data {
                Some(b) => {
                    let _ = m.staged.supply_page_bytes(rec.index, b);
                }
                None => m.staged.zero_page(rec.index),
            }
        }
        if !supply.is_empty() {
            node.supply_pages(m.pid, supply);
        }
    }

    /// The modules the process needs that were missing here, each verified.
    /// Notes the profiled functions whose module is here and, once the process runs,
    /// starts compiling them (in the background: the process does not wait for them);
    /// without `use_profile`, only watches them.
    fn compile_hot(&mut self, node: &Node) {
        let vm = node.vm();
        let compiles = vm.jit.is_some() && vm.config.jit != tern_vm::jit::JitMode::Off;
        // Once the move is complete: compiled while the process is frozen, or before its
        // late messages came, they would take the CPU those need (measured:
        // `bench/results/jit-migrate.md`).
        let use_profile = self.use_profile && self.late_done;
        self.hot_waiting.retain(|&(hash, func)| match vm.module(&hash) {
            Some(lm) => {
                if compiles && lm.jit.get(func as usize).is_some_and(|s| !s.given_up()) {
                    if use_profile {
                        tern_vm::jit::precompile(vm, &lm, func);
                    }
                    self.hot.push((lm, func));
                }
                false
            }
            None => true,
        });
    }

    /// The profiled functions compiled here, and when the last of them was ready after
    /// the resume. Waits a little (the process runs meanwhile) for those still compiling.
    fn hot_stats(&mut self) {
        let start = std::time::Instant::now();
        let deadline = start + Duration::from_secs(1);
        let done = |h: &[(Arc<tern_vm::runtime::LinkedModule>, u32)]| h.iter().filter(|(lm, f)| lm.jit[*f as usize].is_compiled()).count();
        while done(&self.hot) < self.hot.len() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.stats.jit_wait_us = start.elapsed().as_micros() as u64;
        self.stats.jit_rebuilt = done(&self.hot) as u32;
        let last = self.hot.iter().filter_map(|(lm, f)| lm.jit[*f as usize].compiled_at()).max().unwrap_or(0);
        self.stats.jit_ready_after_resume_us =
            (self.stats.jit_rebuilt as usize == self.hot.len()).then(|| last.saturating_sub(self.resumed_at_jit));
    }

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
        self.compile_hot(node);
    }
}

/// Carries out one action of the destination machine on the VM.
fn dest_action(sh: &Arc<Host>, node: &Node, r: &mut DestRun, d: &mut Dest, a: Action) {
    match &a {
        Action::PagesArrived { pages } => {
            tracing::debug!(node = %sh.me.name, mid = r.mid, "migration destination: {} pages arrived", pages.len())
        }
        a => tracing::debug!(node = %sh.me.name, mid = r.mid, "migration destination: {a:?}"),
    }
    match a {
        Action::Reinstate { .. } if sh.mig.hooks.lock().stall_before_ready => {}
        Action::Reinstate { absent } => r.reinstate(sh, node, d, absent),
        Action::Discard => {
            // Imported: `Ready` went, so a `Commit` may come after this run is gone.
            if r.imported {
                for m in &r.members {
                    node.abort_import(m.pid);
                }
                r.imported = false;
                sh.mig.aborted.lock().insert(r.mid, r.from);
            }
            sh.mig.forget_pids(r.mid, r.members.iter().map(|m| m.pid));
        }
        Action::Resume { .. } => {
            let hold = sh.mig.hooks.lock().hold_commit_ms;
            if hold > 0 {
                sh.log(&format!("test hook: migration of {} holds Commit {hold} ms", name_text(r.pid)));
                std::thread::sleep(Duration::from_millis(hold));
            }
            r.resume_pending = true;
            r.commit_at = sh.now_us();
        }
        Action::RunWithoutLate => r.late_lost = true,
        Action::Kill { why } => r.end_process(sh, node, &why.to_string()),
        Action::VerifyPages => {
            let missing = r.missing_pages(sh, node);
            d.pages_verified(sh.now_us(), &missing);
        }
        _ => {}
    }
}

/// Why a group's offer is refused before anything is made for it: its member list must
/// start with `pid`, name each process once, at most [`MAX_GROUP`] of them, and its
/// pages must add up to `size_pages`.
fn group_refusal(pid: u64, size_pages: u32, members: &[(u64, u32)]) -> Option<RefuseReason> {
    let mut pids: Vec<u64> = members.iter().map(|m| m.0).collect();
    let total: u64 = members.iter().map(|m| u64::from(m.1)).sum();
    pids.sort_unstable();
    pids.dedup();
    let ok = members.first().is_some_and(|m| m.0 == pid)
        && members.len() <= MAX_GROUP
        && pids.len() == members.len()
        && total == u64::from(size_pages);
    (!ok).then_some(RefuseReason::BadImage)
}

fn bytes_to_words(bytes: &[u8]) -> Vec<u64> {
    bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()
}
