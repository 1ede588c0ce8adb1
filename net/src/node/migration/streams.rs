//! A migration's own QUIC streams: frames (length-prefixed, versioned, capped before
//! decoding) written by a writer task and read into the migration's inputs; the
//! page-fault stream a destination opens; the page lists as ranges; which protocol
//! messages take the session instead.

use super::{Host, Input, FAULT_PRIORITY};
use crate::proto::migrate::MigMsg;
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

/// Writes frames to a QUIC send stream until the sender is dropped.
pub(super) fn spawn_writer(rt: &tokio::runtime::Handle, mut send: quinn::SendStream, priority: i32) -> mpsc::Sender<Vec<u8>> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
    rt.spawn(async move {
        let _ = send.set_priority(priority);
        while let Some(b) = rx.recv().await {
            if send.write_all(&b).await.is_err() {
                return;
            }
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
        if n > max {
            let _ = to.send(Input::StreamFailed(format!("migration frame of {n} bytes is over the limit of {max}")));
            return;
        }
        let mut buf = vec![0u8; n];
        if let Err(e) = recv.read_exact(&mut buf).await {
            let _ = to.send(Input::StreamFailed(format!("migration stream: {e}")));
            return;
        }
        if to.send(Input::Frame(from, buf, max)).is_err() {
            return;
        }
    }
}

/// Page numbers as ranges `[start, end)`.
pub(super) fn to_ranges(pages: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &p in pages {
        match out.last_mut() {
            Some((_, end)) if *end == p => *end += 1,
            _ => out.push((p, p.saturating_add(1))),
        }
    }
    out
}

/// Ranges back into page numbers, refusing more than `max` of them.
pub(super) fn from_ranges(ranges: &[(u32, u32)], max: u32) -> Option<Vec<u32>> {
    let total: u64 = ranges.iter().map(|&(a, b)| u64::from(b.saturating_sub(a))).sum();
    if total > u64::from(max) {
        return None;
    }
    Some(ranges.iter().flat_map(|&(a, b)| a..b).collect())
}

/// A message as it goes on the migration stream (`Final` with ranges).
pub(super) fn wire_msg(m: MigMsg) -> MigWire {
    match m {
        MigMsg::Final { mid, image_len, pages, absent, partners } => {
            MigWire::Final { mid, image_len, pages: to_ranges(&pages), absent: to_ranges(&absent), partners }
        }
        m => MigWire::Msg(m),
    }
}

pub(super) fn wire_mid(w: &MigWire) -> u64 {
    match w {
        MigWire::Msg(m) => m.mid(),
        MigWire::Final { mid, .. } => *mid,
        MigWire::Pages { mid, .. }
        | MigWire::Modules { mid, .. }
        | MigWire::Need { mid, .. }
        | MigWire::Image { mid, .. }
        | MigWire::Late { mid, .. }
        | MigWire::LinkUpdate { mid, .. }
        | MigWire::DestDone { mid, .. } => *mid,
    }
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
    inputs.recv_timeout(wait).map(|i| match i {
        Input::Frame(from, buf, max) => match wire::decode::<MigWire>(&buf, max) {
            Ok(w) => Input::Wire(from, w),
            Err(e) => Input::StreamFailed(format!("bad migration frame: {e}")),
        },
        other => other,
    })
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
