//! A migration's own QUIC streams: frames (length-prefixed, versioned, capped before
//! decoding) written by a writer task and read into the migration's inputs; the
//! page-fault stream a destination opens; the page lists as ranges; which protocol
//! messages take the session instead.

use super::{Host, Input, FAULT_PRIORITY};
use crate::proto::migrate::{to_ranges, MigMsg, PageRange};
use crate::proto::wire::{self, MigWire};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub(super) fn frame_bytes<T: serde::Serialize>(v: &T) -> Vec<u8> {
    wire::encode_framed(v)
}

/// Messages that go on the session rather than the migration stream.
pub(super) fn on_session(m: &MigMsg) -> bool {
    matches!(
        m,
        MigMsg::Commit { .. }
            | MigMsg::Committed { .. }
            | MigMsg::Aborted { .. }
            | MigMsg::Abort { .. }
            | MigMsg::LinkUpdate { .. }
            | MigMsg::LinkAck { .. }
            | MigMsg::Released { .. }
    )
}

/// Frame buffers kept for the next frame: a frame of pages is about 1 MiB, and one
/// allocated afresh for each would be new memory (page faults, zeroing) each time.
static FRAME_POOL: std::sync::LazyLock<Pool> = std::sync::LazyLock::new(|| crossbeam_channel::bounded(POOLED_FRAMES));
type Pool = (crossbeam_channel::Sender<Vec<u8>>, crossbeam_channel::Receiver<Vec<u8>>);

/// Frame buffers the pool keeps (per OS process), and the largest it keeps.
const POOLED_FRAMES: usize = 8;
const POOLED_FRAME_BYTES: usize = 2 << 20;

/// A buffer for a frame, to be written over (its memory may be reused: its contents
/// and length are a former frame's).
pub(super) fn frame_buf() -> Vec<u8> {
    FRAME_POOL.1.try_recv().unwrap_or_default()
}

/// A frame buffer done with, kept for the next frame if the pool has room.
pub(super) fn recycle(buf: Vec<u8>) {
    if buf.capacity() <= POOLED_FRAME_BYTES && buf.capacity() >= 4096 {
        let _ = FRAME_POOL.0.try_send(buf);
    }
}

/// Writes frames to a QUIC send stream until the sender is dropped.
pub(super) fn spawn_writer(rt: &tokio::runtime::Handle, mut send: quinn::SendStream, priority: i32) -> mpsc::Sender<Vec<u8>> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
    rt.spawn(async move {
        let _ = send.set_priority(priority);
        while let Some(b) = rx.recv().await {
            tracing::trace!("migration stream: writing a frame of {} bytes", b.len());
            if send.write_all(&b).await.is_err() {
                return;
            }
            tracing::trace!("migration stream: wrote a frame of {} bytes", b.len());
            recycle(b);
        }
        let _ = send.finish();
    });
    tx
}

/// Reads frames from a QUIC receive stream into a migration's inputs.
pub(super) async fn read_frames(mut recv: quinn::RecvStream, from: u16, max: usize, to: crossbeam_channel::Sender<Input>) {
    loop {
        let mut len = [0u8; 4];
        match recv.read_exact(&mut len).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return,
            Err(e) => {
                let _ = to.send(Input::StreamFailed(format!("migration stream: {e}")));
                return;
            }
        }
        let n = u32::from_le_bytes(len) as usize;
        tracing::trace!("migration stream: reading a frame of {n} bytes");
        if n > max {
            let _ = to.send(Input::StreamFailed(format!("migration frame of {n} bytes is over the limit of {max}")));
            return;
        }
        // A buffer used before: its memory is not new (no page faults, no zeroing but
        // past its former length).
        let mut buf = frame_buf();
        buf.resize(n, 0);
        if let Err(e) = recv.read_exact(&mut buf).await {
            let _ = to.send(Input::StreamFailed(format!("migration stream: {e}")));
            return;
        }
        tracing::trace!("migration stream: read a frame of {n} bytes");
        if to.send(Input::Frame(from, buf, max)).is_err() {
            return;
        }
    }
}

/// Ranges back into page numbers, refusing more than `max` of them.
pub(super) fn from_ranges(ranges: &[(u32, u32)], max: u32) -> Option<Vec<u32>> {
    let total: u64 = ranges.iter().map(|&(a, b)| u64::from(b.saturating_sub(a))).sum();
    if total > u64::from(max) {
        return None;
    }
    Some(ranges.iter().flat_map(|&(a, b)| a..b).collect())
}

/// Ranges as the machines take them: each `[start, end)` not empty, in order, apart,
/// at most `max` pages in all; `None` otherwise.
pub(super) fn checked_ranges(ranges: Vec<PageRange>, max: u32) -> Option<Vec<PageRange>> {
    let mut total = 0u64;
    let mut prev_end = 0u32;
    for (i, &(a, b)) in ranges.iter().enumerate() {
        if a >= b || (i > 0 && a < prev_end) {
            return None;
        }
        prev_end = b;
        total += u64::from(b - a);
    }
    (total <= u64::from(max)).then_some(ranges)
}

/// A message as it goes on the migration stream (`Final` with ranges).
pub(super) fn wire_msg(m: MigMsg) -> MigWire {
    match m {
        MigMsg::Final { mid, image_len, pages, absent, partners } => {
            MigWire::Final { mid, image_len, pages: to_ranges(&pages), absent, partners }
        }
        m => MigWire::Msg(m),
    }
}

/// The migration a message is about (`None` for [`MigWire::Lz4`], which only a
/// migration's own stream carries: the stream says which).
pub(super) fn wire_mid(w: &MigWire) -> Option<u64> {
    Some(match w {
        MigWire::Lz4 { .. } => return None,
        MigWire::Msg(m) => m.mid(),
        MigWire::Final { mid, .. } => *mid,
        MigWire::Pages { mid, .. }
        | MigWire::Modules { mid, .. }
        | MigWire::Need { mid, .. }
        | MigWire::Image { mid, .. }
        | MigWire::Late { mid, .. }
        | MigWire::LinkUpdate { mid, .. }
        | MigWire::DestDone { mid, .. } => *mid,
    })
}

/// How long to wait for input: until a machine's next timeout, or a while.
pub(super) fn wait_until(timeout_us: Option<u64>, now_us: u64) -> Duration {
    timeout_us.map_or(Duration::from_millis(500), |t| Duration::from_micros(t.saturating_sub(now_us)))
}

/// Receives the next input, decoding a stream frame.
pub(super) fn next_input(
    inputs: &crossbeam_channel::Receiver<Input>,
    wait: Duration,
) -> Result<Input, crossbeam_channel::RecvTimeoutError> {
    inputs.recv_timeout(wait).map(decoded)
}

pub(super) fn decoded(i: Input) -> Input {
    match i {
        // A compressed frame: decompressed here, on the migration's thread.
        Input::Frame(from, buf, max) if wire::is_lz4_frame(&buf) => {
            let mut out = frame_buf();
            let r = wire::unlz4(&buf, max, &mut out);
            recycle(buf);
            match r {
                Ok(()) => decoded(Input::Frame(from, out, max)),
                Err(e) => {
                    recycle(out);
                    Input::StreamFailed(format!("bad migration frame: {e}"))
                }
            }
        }
        // Pages are read in place by the destination.
        Input::Frame(from, buf, max) if wire::is_pages_frame(&buf) => Input::Pages(from, buf, max),
        Input::Frame(from, buf, max) => {
            let i = match wire::decode::<MigWire>(&buf, max) {
                Ok(w) => Input::Wire(from, w),
                Err(e) => Input::StreamFailed(format!("bad migration frame: {e}")),
            };
            recycle(buf);
            i
        }
        other => other,
    }
}

/// A destination's inputs: `urgent` (faults, their stream's pages, the session's
/// messages, peers) before `bulk` (the migration stream: rounds, the image, the
/// background push), so that a fault never waits behind bulk data that came first.
pub(super) struct DestInputs {
    pub(super) urgent: crossbeam_channel::Receiver<Input>,
    /// `None` once the stream ended (its reader is gone).
    pub(super) bulk: Option<crossbeam_channel::Receiver<Input>>,
}

impl DestInputs {
    /// The next input, urgent ones first; `Disconnected` when the urgent side is.
    pub(super) fn next(&mut self, wait: Duration) -> Result<Input, crossbeam_channel::RecvTimeoutError> {
        use crossbeam_channel::{RecvTimeoutError, TryRecvError};
        match self.urgent.try_recv() {
            Ok(i) => return Ok(decoded(i)),
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => {}
        }
        let Some(bulk) = &self.bulk else { return next_input(&self.urgent, wait) };
        let mut sel = crossbeam_channel::Select::new();
        let u = sel.recv(&self.urgent);
        sel.recv(bulk);
        let Ok(op) = sel.select_timeout(wait) else { return Err(RecvTimeoutError::Timeout) };
        if op.index() == u {
            return op.recv(&self.urgent).map(decoded).map_err(|_| RecvTimeoutError::Disconnected);
        }
        match op.recv(bulk) {
            Ok(i) => Ok(decoded(i)),
            Err(_) => {
                // The stream's reader ended (what it had is all here): urgent ones only now.
                self.bulk = None;
                self.next(Duration::ZERO)
            }
        }
    }
}

/// Opens the high-priority page-fault stream to node `to` for migration `mid` (its
/// answers go to the migration's inputs), if a connection is there.
pub(super) fn open_fault_stream(sh: &Arc<Host>, rt: &tokio::runtime::Handle, to: u16, mid: u64) -> Option<mpsc::Sender<Vec<u8>>> {
    let conn = sh.connection(to)?;
    let (s, recv) = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), conn.open_bi()).await }).ok()?.ok()?;
    let tx = sh.mig.runs.lock().get(&mid).cloned()?;
    rt.spawn(read_frames(recv, to, sh.cfg.limits.frame_bytes as usize, tx));
    Some(spawn_writer(rt, s, FAULT_PRIORITY))
}

#[cfg(test)]
mod tests {
    use super::{checked_ranges, DestInputs, Input};
    use std::time::Duration;

    #[test]
    fn a_destination_takes_urgent_inputs_before_bulk_ones_and_outlives_its_stream() {
        let (utx, urgent) = crossbeam_channel::unbounded();
        let (btx, bulk) = crossbeam_channel::unbounded();
        let mut inputs = DestInputs { urgent, bulk: Some(bulk) };
        for n in 0..3 {
            btx.send(Input::PeerUp(n)).unwrap();
        }
        utx.send(Input::Fault(7, 1)).unwrap();
        // The fault came after three bulk inputs and is taken first.
        assert!(matches!(inputs.next(Duration::ZERO), Ok(Input::Fault(7, 1))));
        assert!(matches!(inputs.next(Duration::ZERO), Ok(Input::PeerUp(0))));
        utx.send(Input::Fault(7, 2)).unwrap();
        assert!(matches!(inputs.next(Duration::ZERO), Ok(Input::Fault(7, 2))));
        assert!(matches!(inputs.next(Duration::ZERO), Ok(Input::PeerUp(1))));
        assert!(matches!(inputs.next(Duration::ZERO), Ok(Input::PeerUp(2))));
        // The stream ended: the urgent side goes on alone.
        drop(btx);
        assert!(matches!(inputs.next(Duration::from_millis(1)), Err(crossbeam_channel::RecvTimeoutError::Timeout)));
        assert!(inputs.bulk.is_none());
        utx.send(Input::Fault(7, 3)).unwrap();
        assert!(matches!(inputs.next(Duration::ZERO), Ok(Input::Fault(7, 3))));
        drop(utx);
        assert!(matches!(inputs.next(Duration::ZERO), Err(crossbeam_channel::RecvTimeoutError::Disconnected)));
    }

    #[test]
    fn absent_ranges_from_a_source_must_be_in_order_apart_and_within_the_limit() {
        assert_eq!(checked_ranges(vec![(0, 4), (6, 9)], 10), Some(vec![(0, 4), (6, 9)]));
        assert_eq!(checked_ranges(vec![], 0), Some(vec![]));
        assert_eq!(checked_ranges(vec![(0, 4), (3, 9)], 100), None, "overlapping");
        assert_eq!(checked_ranges(vec![(6, 9), (0, 4)], 100), None, "out of order");
        assert_eq!(checked_ranges(vec![(4, 4)], 100), None, "empty");
        assert_eq!(checked_ranges(vec![(0, 4), (6, 9)], 6), None, "over the limit");
        assert_eq!(checked_ranges(vec![(0, u32::MAX)], u32::MAX), Some(vec![(0, u32::MAX)]));
    }
}
