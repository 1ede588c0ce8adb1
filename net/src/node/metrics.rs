//! What a node counts for operators' tools: the counters and histograms behind
//! `/metrics` (Prometheus) and the dashboard, kept as atomics, read as a
//! [`MetricsView`](crate::proto::wire::MetricsView) (`Host::metrics`).

use crate::proto::mechanism::Mechanism;
use crate::proto::wire::{HistView, LiveMig, MechCounts, MetricsView, PeerTraffic};
use std::sync::atomic::{AtomicU64, Ordering};

use super::Host;

/// A histogram with fixed bucket bounds (µs), Prometheus' way: `counts[i]` are the
/// observations at most `BOUNDS_US[i]`, not cumulative here (the rendering adds them
/// up); the last count is those above every bound.
pub(crate) struct Histogram {
    counts: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

/// The buckets of every histogram: 50 µs to 10 s, roughly ×2–2.5 apart.
pub const BOUNDS_US: [u64; 16] =
    [50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000, 10_000_000];

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: std::array::from_fn(|_| AtomicU64::new(0)), sum_us: AtomicU64::new(0) }
    }
}

impl Histogram {
    pub(crate) fn observe(&self, us: u64) {
        let i = BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(BOUNDS_US.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn view(&self) -> HistView {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        HistView { bounds_us: BOUNDS_US.to_vec(), count: counts.iter().sum(), counts, sum_us: self.sum_us.load(Ordering::Relaxed) }
    }
}

/// The migration counters, by mechanism ([`Mechanism::ALL`]'s order).
#[derive(Default)]
pub(crate) struct MigCounters {
    started: [AtomicU64; 4],
    committed: [AtomicU64; 4],
    aborted: [AtomicU64; 4],
    /// Bytes sent by migrations from here (pages, images, messages).
    bytes_sent: AtomicU64,
    /// Source: from freeze to resume, of each committed migration.
    pub(crate) freeze: Histogram,
    /// Destination: each page fault's wait.
    pub(crate) fault: Histogram,
}

fn index(m: Mechanism) -> usize {
    Mechanism::ALL.iter().position(|&x| x == m).unwrap_or(0)
}

impl MigCounters {
    pub(crate) fn started(&self, m: Mechanism) {
        self.started[index(m)].fetch_add(1, Ordering::Relaxed);
    }

    /// A migration from here ended (`ok`: committed), having sent `bytes`; `freeze_us`
    /// observed when it committed.
    pub(crate) fn ended(&self, m: Mechanism, ok: bool, bytes: u64, freeze_us: u64) {
        let i = index(m);
        if ok {
            self.committed[i].fetch_add(1, Ordering::Relaxed);
            self.freeze.observe(freeze_us);
        } else {
            self.aborted[i].fetch_add(1, Ordering::Relaxed);
        }
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// How many of the newest reports a view carries.
pub const VIEW_REPORTS: usize = 16;

impl Host {
    /// This node's counters, its migrations in flight (started here) and its newest
    /// reports, now.
    pub(crate) fn metrics(&self) -> MetricsView {
        let load = self.own_load();
        let mut view = MetricsView {
            node: self.me.name.clone(),
            uptime_s: self.start.elapsed().as_secs(),
            accepting: load.accepting,
            workers: load.workers,
            processes: self.node().live() as u64,
            run_queue_x100: load.runnable_x100,
            utilization_pm: load.utilization_pm,
            reductions: self.node().reductions(),
            ..MetricsView::default()
        };
        for p in self.peers.values() {
            let s = p.session.lock().stats();
            let t = PeerTraffic {
                peer: p.conf.name.clone(),
                up: p.up.load(Ordering::SeqCst),
                messages_out: s.sent,
                bytes_out: s.sent_bytes,
                messages_in: s.delivered,
                bytes_in: s.delivered_bytes,
            };
            view.messages_out += t.messages_out;
            view.bytes_out += t.bytes_out;
            view.messages_in += t.messages_in;
            view.bytes_in += t.bytes_in;
            view.peers.push(t);
        }
        let c = &self.mig.counters;
        view.migrations = Mechanism::ALL
            .iter()
            .enumerate()
            .map(|(i, m)| MechCounts {
                mechanism: m.name().to_string(),
                started: c.started[i].load(Ordering::Relaxed),
                committed: c.committed[i].load(Ordering::Relaxed),
                aborted: c.aborted[i].load(Ordering::Relaxed),
            })
            .collect();
        view.migration_bytes_sent = c.bytes_sent.load(Ordering::Relaxed);
        view.freeze_us = c.freeze.view();
        view.fault_us = c.fault.view();
        view.in_flight = self.mig.live();
        let reports = self.mig.reports.lock();
        view.reports = reports.iter().rev().take(VIEW_REPORTS).cloned().collect();
        view
    }
}

/// What a view says of a migration in flight (see `Migrations::live`).
pub(crate) fn live_mig(mid: u64, pid: u64, to: String, mechanism: Mechanism, p: &super::migration::Progress, elapsed_ms: u64) -> LiveMig {
    LiveMig {
        mid,
        pid,
        to,
        mechanism: mechanism.name().to_string(),
        phase: p.phase.lock().clone(),
        sent_pages: p.sent_pages.load(Ordering::Relaxed),
        total_pages: p.total_pages.load(Ordering::Relaxed),
        rounds: p.rounds.lock().clone(),
        dirty_pages: p.dirty_pages.load(Ordering::Relaxed),
        pages_served: p.pages_served.load(Ordering::Relaxed),
        elapsed_ms,
    }
}
