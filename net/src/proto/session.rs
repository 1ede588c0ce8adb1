//! The node-to-node session protocol: this node and ONE peer node, as a sans-IO state
//! machine in the quinn-proto shape (ARCHITECTURE.md, "one protocol, two drivers").
//!
//! (One file of ~800 lines of protocol and ~500 of its unit tests: the state machine is
//! read as a whole, and its tests sit next to the transitions they pin.)
//!
//! A [`Session`] does no I/O, reads no clock and starts no thread. The driver feeds it
//! time (`now_us`, microseconds on any monotonic clock), transport events
//! ([`Session::connected`], [`Session::disconnected`]) and received packets
//! ([`Session::handle`]); it polls it for packets to send ([`Session::poll_transmit`]),
//! events for the layers above ([`Session::poll_event`]) and the next instant at which
//! [`Session::handle_timeout`] must be called ([`Session::poll_timeout`]). The real driver
//! is QUIC; the deterministic simulator in [`crate::sim::session`] is the other one.
//!
//! # Incarnations
//!
//! Every run of a node is an *incarnation* with an `epoch`: a node that crashes and
//! restarts has lost all its state and must come back with a strictly larger epoch. Every
//! packet carries the sender's epoch and (except a first `Hello`) the epoch of the
//! receiver incarnation it is addressed to. A session is always about one pair of
//! incarnations (this one, the peer's newest known one).
//!
//! # What is guaranteed
//!
//! Whatever the transport does (lose, duplicate, reorder, delay packets; drop and
//! re-establish the connection any number of times):
//!
//! * **Exactly once, in order, per pair of incarnations.** A payload given to
//!   [`Session::send`] is delivered (as [`Event::Deliver`]) at most once, in send order,
//!   and only to the peer incarnation it was addressed to: the peer incarnation this
//!   session knew when `send` was called or, if it knew none yet, the first one it learns.
//!   While both incarnations live and the peer is eventually reachable, every payload is
//!   delivered (retransmission after `retransmit_us`, on reconnect, and when a peer that
//!   was down is heard again).
//! * **Restarts are explicit.** When a packet shows a newer peer epoch,
//!   [`Event::PeerRestarted`] is emitted and all sequence state is reset: payloads not yet
//!   acknowledged by the old incarnation are dropped (counted in
//!   [`SessionStats::dropped_on_restart`]), never delivered to the new one. Packets from an
//!   older peer epoch, or addressed to an older incarnation of this node, are ignored.
//! * **No wedge.** There is one exception: a packet from an older peer epoch heard while
//!   the newer one is down (silent for `down_after_us`). Two incarnations of the peer
//!   lived at once (a second process with the node's identity), and ignoring the
//!   earlier one for good would part two live nodes for good. It is taken back as a
//!   restart ([`Event::PeerRestarted`] with the older epoch, [`Event::Up`]), and this
//!   session starts a new pair with it under a new epoch of its own (one more), so the
//!   peer sees this node restart and drops its side of the pair that was lost here. No
//!   sequence of events leaves two live sessions that never talk again.
//! * **Failure detection.** [`Event::Up`] at first contact and whenever a peer that was
//!   down is heard again; [`Event::Down`] when nothing has been heard for
//!   `down_after_us` while silence counts (below). They alternate, starting with `Up`.
//!   Data for a down peer stays queued (bounded) and is sent when it returns.
//!
//! # Failure detection
//!
//! An idle pair costs nothing: no heartbeat goes either way, and its silence does not
//! count. Silence counts (from when it starts to) while the peer is *watched* (the host
//! watches a few ring successors, [`watch_set`]: they are sent a [`Packet::Probe`] when
//! nothing else was sent for `heartbeat_us`, and answer it) or owes an acknowledgement
//! (data in flight: the traffic is its own heartbeat); after `down_after_us` of it the
//! peer is down. At half of it the session reports [`Event::Suspect`]: the host tells
//! the other nodes, which put the peer *on probation* ([`Session::suspect`]): probed at
//! once and every `heartbeat_us` until heard, down once `down_after_us` has passed since
//! it was last heard and half of it since the first probe. A crashed node is so seen
//! down by every node within about `down_after_us` (plus the suspicion's way), a node
//! that is slow but answers is not, and every node sends `k` probes per heartbeat
//! instead of one heartbeat per peer. A peer not heard from for `idle_probe_us` is put on
//! probation too (a link cut between two nodes that otherwise see everyone), and so is
//! one whose silence the host has other reason to doubt (a new connection claiming to be
//! it). A peer that is down is probed every `heartbeat_us` while the transport is up.
//! Only an answer to a probe of the doubt (every packet but a `Hello` echoes the newest
//! probe its sender had) ends a probation or brings a down peer back: a packet the peer
//! sent before, still on its way, says nothing of whether it is alive now. A watched
//! peer that goes down is suspected again as it does, so that a node whose probation
//! ended on an answer sent just before the crash looks again.
//! This node's own pauses are never held against a peer (`ran`).
//!
//! A peer that *leaves* (its node stops gracefully, and says so as it closes the
//! transport, naming the incarnation that leaves) is down at once: the driver calls
//! [`Session::peer_left`]. The bound above stays for a leave that is not heard (the
//! transport lost it).
//! * **Bounded.** Unacknowledged outgoing data is bounded by `max_unacked_bytes`
//!   ([`SendError::Full`]); packets in flight by `max_in_flight`; payloads by
//!   `max_payload_bytes` ([`SendError::TooLarge`]); the out-of-order buffer by
//!   `max_in_flight` packets; undrained in-order deliveries by `max_unacked_bytes` (beyond
//!   that, data is not accepted and the sender retransmits later; the out-of-order buffer
//!   can add up to `max_in_flight` payloads). Retransmission itself never gives up while
//!   the session lives: `Down` is the bound the layers above act on.
//!
//! # Packets
//!
//! * `Hello { from, epoch, peer_epoch, next_expected }`: sent on every (re)connect, and
//!   instead of a heartbeat until the peer has shown it knows this incarnation; answered
//!   with a `Hello` by a peer that sees it does not know it. `next_expected` is a
//!   cumulative ack when `peer_epoch` names the receiver.
//! * `Data { epoch, peer_epoch, seq, payload }`: sequence numbers start at 0 for each pair
//!   of incarnations. The receiver delivers `seq == next_expected`, buffers up to
//!   `max_in_flight` packets ahead, and drops duplicates.
//! * `Ack { epoch, peer_epoch, upto }`: cumulative, every `seq < upto` received. Acks are
//!   delayed by at most `ack_delay_us`, or sent at once after a quarter of the window.
//! * `Probe { epoch, peer_epoch }`: asks for an answer (see "Failure detection").
//! * `Heartbeat { epoch, peer_epoch }`: the answer to a probe when nothing else is sent.
//!
//! # Timers
//!
//! Probe (`heartbeat_us` after the last packet sent, on the next quarter-heartbeat beat
//! of the host's clock so that a node's probes go out together, to a watched, suspected
//! or down peer, while the transport is up), suspicion and failure detection (half of and all
//! of `down_after_us` after the last packet heard, while silence counts), idle probe
//! (`idle_probe_us` after the last packet heard),
//! retransmission (`retransmit_us` without ack progress: go back to the oldest
//! unacknowledged payload) and delayed ack (`ack_delay_us`).
//!
//! # Wire
//!
//! [`encode_packet`]/[`decode_packet`]: one version byte ([`WIRE_VERSION`]) then postcard.
//! Decoding checks the frame size before anything else, rejects another version and
//! trailing bytes, and never panics.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// A node's identity in the mesh.
pub type NodeId = u16;

/// The version byte that starts every encoded packet.
pub const WIRE_VERSION: u8 = 3;

/// What one outgoing payload costs against `max_unacked_bytes`, beyond its length (so that
/// empty payloads are bounded too).
pub const PAYLOAD_OVERHEAD: usize = 32;

/// A packet between two sessions. No recursive types; every length is bounded by the
/// frame it was decoded from.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Sent on every (re)connect. `peer_epoch` is the receiver incarnation the sender
    /// knows (`None` if none); `next_expected` acknowledges every `seq` below it.
    Hello { from: NodeId, epoch: u64, peer_epoch: Option<u64>, next_expected: u64 },
    /// One payload, `seq` within the pair (`epoch`, `peer_epoch`). `echo` (here and in
    /// `Ack` and `Heartbeat`): the number of the newest probe the sender has had from
    /// the receiver, which shows the receiver the packet was sent after it.
    Data {
        epoch: u64,
        peer_epoch: u64,
        seq: u64,
        echo: u64,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Cumulative: every `seq < upto` was received.
    Ack { epoch: u64, peer_epoch: u64, upto: u64, echo: u64 },
    /// The answer to a [`Packet::Probe`] when nothing else is sent.
    Heartbeat { epoch: u64, peer_epoch: u64, echo: u64 },
    /// Asks the peer to answer at once (with anything: a heartbeat when it has nothing
    /// else to send; every answer echoes `n`, the probe's number within the pair, and
    /// so does a probe, which answers one too). A watched peer is probed every
    /// `heartbeat_us`, a suspected or long-silent one until it answers.
    Probe { epoch: u64, peer_epoch: u64, n: u64, echo: u64 },
}

impl Packet {
    /// The sender's epoch.
    pub fn epoch(&self) -> u64 {
        match self {
            Packet::Hello { epoch, .. }
            | Packet::Data { epoch, .. }
            | Packet::Ack { epoch, .. }
            | Packet::Heartbeat { epoch, .. }
            | Packet::Probe { epoch, .. } => *epoch,
        }
    }

    /// The newest probe of the receiver's the sender had had when it sent this (`None`:
    /// a `Hello`, which says nothing of it).
    pub fn echo(&self) -> Option<u64> {
        match self {
            Packet::Data { echo, .. } | Packet::Ack { echo, .. } | Packet::Heartbeat { echo, .. } | Packet::Probe { echo, .. } => {
                Some(*echo)
            }
            Packet::Hello { .. } => None,
        }
    }

    /// The receiver incarnation the packet is addressed to (`None`: a first `Hello`).
    pub fn addressed_to(&self) -> Option<u64> {
        match self {
            Packet::Hello { peer_epoch, .. } => *peer_epoch,
            Packet::Data { peer_epoch, .. }
            | Packet::Ack { peer_epoch, .. }
            | Packet::Heartbeat { peer_epoch, .. }
            | Packet::Probe { peer_epoch, .. } => Some(*peer_epoch),
        }
    }
}

/// The peers a node watches: the first `k` that are up after `me` in the ring of node
/// ids (the next higher ids, wrapping around). Every node up is then watched by the `k`
/// nodes up before it, whatever the mesh's size, so the mesh's failure detection costs
/// `k` probes per node and heartbeat, not one per pair; the others learn of a silence
/// from the watchers' suspicion and probe the node themselves ([`Session::suspect`]).
pub fn watch_set(me: NodeId, peers: impl IntoIterator<Item = (NodeId, bool)>, k: usize) -> Vec<NodeId> {
    let mut up: Vec<NodeId> = peers.into_iter().filter(|&(id, up)| up && id != me).map(|(id, _)| id).collect();
    up.sort_by_key(|&id| id.wrapping_sub(me));
    up.truncate(k);
    up
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The frame is longer than the caller's cap.
    TooLarge { len: usize, max: usize },
    /// No bytes at all.
    Empty,
    /// Another wire version.
    Version(u8),
    /// Not a valid packet.
    Malformed,
    /// A valid packet followed by more bytes.
    TrailingBytes(usize),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooLarge { len, max } => write!(f, "frame of {len} bytes exceeds the limit of {max}"),
            WireError::Empty => write!(f, "empty frame"),
            WireError::Version(v) => write!(f, "wire version {v}, expected {WIRE_VERSION}"),
            WireError::Malformed => write!(f, "malformed packet"),
            WireError::TrailingBytes(n) => write!(f, "{n} trailing bytes after the packet"),
        }
    }
}

impl std::error::Error for WireError {}

/// The version byte followed by the postcard encoding of `pkt`.
pub fn encode_packet(pkt: &Packet) -> Vec<u8> {
    // Serializing these plain types into a Vec cannot fail.
    postcard::to_extend(pkt, vec![WIRE_VERSION]).expect("postcard encodes a Packet")
}

/// Decodes a frame made by [`encode_packet`]. Frames longer than `max` are rejected
/// before any decoding or allocation.
pub fn decode_packet(bytes: &[u8], max: usize) -> Result<Packet, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge { len: bytes.len(), max });
    }
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    let (pkt, rest) = postcard::take_from_bytes::<Packet>(body).map_err(|_| WireError::Malformed)?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok(pkt)
}

/// Timers and limits of a session. Zero durations and limits are raised to 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Probe a watched peer (and a suspected or down one) when nothing was sent to it
    /// for this long.
    pub heartbeat_us: u64,
    /// Report the peer down when nothing was heard from it for this long while it is
    /// watched or owes an acknowledgement; a peer probed on suspicion also gets at least
    /// half of it from the first probe. (See "Failure detection" in the module docs.)
    pub down_after_us: u64,
    /// Probe a peer heard nothing from for this long even if it is neither watched nor
    /// suspected (0: never).
    pub idle_probe_us: u64,
    /// Resend unacknowledged data when no ack progress was made for this long.
    pub retransmit_us: u64,
    /// Longest delay of an ack.
    pub ack_delay_us: u64,
    /// Bound on queued unacknowledged outgoing bytes (payload + [`PAYLOAD_OVERHEAD`] each),
    /// and on received but undrained deliveries.
    pub max_unacked_bytes: usize,
    /// Most data packets in flight (sent, unacknowledged); also the receive window.
    pub max_in_flight: usize,
    /// Largest payload accepted by `send` and from the wire.
    pub max_payload_bytes: usize,
    /// Test only: a deliberately broken behaviour, to show that the checkers catch it.
    #[doc(hidden)]
    pub fault: Fault,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            heartbeat_us: 1_000_000,
            down_after_us: 5_000_000,
            idle_probe_us: 60_000_000,
            retransmit_us: 300_000,
            ack_delay_us: 5_000,
            max_unacked_bytes: 16 << 20,
            max_in_flight: 256,
            max_payload_bytes: 4 << 20,
            fault: Fault::None,
        }
    }
}

/// Deliberate bugs, for testing the tests.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Deliver data whose sequence number was already delivered.
    SkipDedup,
    /// Keep (and renumber for the new incarnation) unacked data when the peer restarts.
    KeepQueueOnRestart,
    /// Never go back to resend unacknowledged data.
    NoRetransmit,
    /// Ignore suspicion gossiped by other nodes ([`Session::suspect`] does nothing).
    IgnoreSuspicion,
    /// Hold this node's own pauses against the peer (no pause detection in `ran`).
    NoPauseCheck,
    /// Ignore a peer's leave ([`Session::peer_left`] does nothing).
    IgnoreLeave,
}

/// What a session reports to the layers above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A payload from the peer, exactly once and in order.
    Deliver(Vec<u8>),
    /// The peer is heard from (first contact, or again after `Down`).
    Up,
    /// Nothing heard from the peer for `down_after_us`.
    Down,
    /// A peer this session watches has been silent for half of `down_after_us`: the
    /// host tells the other nodes, which probe it
    /// ([`Session::suspect`]). Once per silence; not a verdict.
    Suspect,
    /// The peer is a new incarnation: everything at the old one is gone. `new_epoch` is
    /// newer, except when an earlier incarnation is taken back after the later one went
    /// down (see "No wedge" in the module docs).
    PeerRestarted { old_epoch: u64, new_epoch: u64 },
}

/// Why [`Session::send`] refused a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The unacknowledged queue is at its bound; try again after progress.
    Full { queued_bytes: usize },
    /// The payload exceeds `max_payload_bytes` (or can never fit in the queue).
    TooLarge,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full { queued_bytes } => write!(f, "send queue full ({queued_bytes} bytes unacknowledged)"),
            SendError::TooLarge => write!(f, "payload too large"),
        }
    }
}

impl std::error::Error for SendError {}

/// Counters of a session (over its whole life, across peer restarts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Payloads accepted by `send`, and their bytes.
    pub sent: u64,
    pub sent_bytes: u64,
    /// Data packets transmitted for the first time / again.
    pub transmitted: u64,
    pub retransmitted: u64,
    /// Payloads delivered, and their bytes.
    pub delivered: u64,
    pub delivered_bytes: u64,
    /// Data packets dropped because their payload was already delivered or buffered.
    pub duplicates_dropped: u64,
    /// Data packets buffered because they arrived ahead of a gap.
    pub buffered_out_of_order: u64,
    /// Data packets dropped: beyond the receive window, or undrained deliveries at bound.
    pub dropped_over_limit: u64,
    /// Unacknowledged payloads dropped because the peer restarted.
    pub dropped_on_restart: u64,
    /// Times an earlier peer incarnation was taken back after a later one went down
    /// (each also counted in `peer_restarts`).
    pub earlier_peers_back: u64,
    /// Packets ignored: from an older peer epoch, to an older incarnation of this node,
    /// or malformed for this session (and leaves of another incarnation than the
    /// current peer's).
    pub stale_ignored: u64,
    pub acks_sent: u64,
    pub heartbeats_sent: u64,
    pub probes_sent: u64,
    pub suspicions: u64,
    pub hellos_sent: u64,
    pub peer_restarts: u64,
    /// Times this node was found to have been stopped for longer than the peer's
    /// failure-detection window allows (the silence was not held against the peer).
    pub pauses_survived: u64,
    /// Currently queued (unacknowledged) payloads and their cost.
    pub queued: usize,
    pub queued_bytes: usize,
}

struct Outgoing {
    seq: u64,
    payload: Vec<u8>,
}

/// The session between this node incarnation and one peer node. See the module docs.
pub struct Session {
    me: NodeId,
    peer: NodeId,
    epoch: u64,
    cfg: SessionConfig,

    /// The peer incarnation this session talks to, once known.
    peer_epoch: Option<u64>,
    /// The peer has shown (by addressing a packet to it) that it knows this incarnation.
    peer_knows_me: bool,
    transport_up: bool,
    up: bool,
    last_heard_us: u64,
    last_sent_us: u64,
    /// The last time this session was called at all (any input, timer or poll): a gap
    /// much longer than its timers allow means this node was not running (paused,
    /// starved), which is no fault of the peer's.
    last_run_us: u64,
    // Sending side. Queue entries have consecutive seqs starting at `acked`.
    queue: VecDeque<Outgoing>,
    queued_bytes: usize,
    next_seq: u64,
    acked: u64,
    /// Next seq to transmit in this round (`acked <= cursor <= next_seq`).
    cursor: u64,
    /// Every seq below it was transmitted at least once.
    highest_sent: u64,
    rto_at: Option<u64>,

    // Receiving side.
    next_expected: u64,
    reorder: BTreeMap<u64, Vec<u8>>,
    ack_at: Option<u64>,
    ack_now: bool,
    received_since_ack: usize,

    hello_pending: bool,
    /// Answer the peer (it probed): a heartbeat unless something else goes first.
    heartbeat_due: bool,
    /// Send a probe (unless data, which is answered too, goes first).
    probe_due: bool,

    // Failure detection (see "Failure detection" in the module docs).
    /// The host watches this peer (it is among this node's ring successors).
    watched: bool,
    /// Whether the peer is watched or owes an ack (`armed`), as of the last call.
    was_armed: bool,
    /// Since when it is (silence before it is not counted).
    armed_at: u64,
    /// Probing since (a suspicion, a refused connection, a long silence) until heard.
    probe_since: Option<u64>,
    /// The number of the last probe sent (within this pair of incarnations), and when.
    probes_out: u64,
    last_probe_us: u64,
    /// The newest probe number had from the peer (echoed in every answer).
    probes_in: u64,
    /// While the peer is doubted (on probation, or down after it was up): the first
    /// probe sent since. Only a packet that echoes it or a later one is heard: a packet
    /// the peer sent before, still on its way (perhaps from before it crashed), says
    /// nothing of whether it is alive now (the simulator found a crash missed so: a
    /// probe sent just before the crash, arriving just after the suspicion, ended the
    /// probation, and the node saw the crashed peer up for good).
    doubt_from: Option<u64>,
    /// `Event::Suspect` was emitted for the current silence.
    suspected: bool,
    events: VecDeque<Event>,
    event_bytes: usize,
    stats: SessionStats,
}

impl Session {
    /// A session of incarnation `epoch` of node `me` with node `peer`. The transport
    /// starts disconnected: call [`Session::connected`] when it is up.
    pub fn new(me: NodeId, peer: NodeId, epoch: u64, cfg: SessionConfig, now_us: u64) -> Self {
        let cfg = SessionConfig {
            heartbeat_us: cfg.heartbeat_us.max(1),
            down_after_us: cfg.down_after_us.max(2),
            idle_probe_us: cfg.idle_probe_us,
            retransmit_us: cfg.retransmit_us.max(1),
            ack_delay_us: cfg.ack_delay_us.max(1),
            max_unacked_bytes: cfg.max_unacked_bytes.max(1),
            max_in_flight: cfg.max_in_flight.max(1),
            max_payload_bytes: cfg.max_payload_bytes.max(1),
            fault: cfg.fault,
        };
        Session {
            me,
            peer,
            epoch,
            cfg,
            peer_epoch: None,
            peer_knows_me: false,
            transport_up: false,
            up: false,
            last_heard_us: now_us,
            last_sent_us: now_us,
            last_run_us: now_us,
            queue: VecDeque::new(),
            queued_bytes: 0,
            next_seq: 0,
            acked: 0,
            cursor: 0,
            highest_sent: 0,
            rto_at: None,
            next_expected: 0,
            reorder: BTreeMap::new(),
            ack_at: None,
            ack_now: false,
            received_since_ack: 0,
            hello_pending: false,
            heartbeat_due: false,
            probe_due: false,
            watched: false,
            was_armed: false,
            armed_at: now_us,
            probe_since: None,
            probes_out: 0,
            last_probe_us: now_us,
            probes_in: 0,
            doubt_from: None,
            suspected: false,
            events: VecDeque::new(),
            event_bytes: 0,
            stats: SessionStats::default(),
        }
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The peer node.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// This incarnation's epoch (in this session: one more for each earlier peer
    /// incarnation taken back).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The peer incarnation this session talks to (and addresses new payloads to), if known.
    pub fn peer_epoch(&self) -> Option<u64> {
        self.peer_epoch
    }

    /// Whether the peer was heard from within `down_after_us` (and `Up` was reported).
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Whether every payload given to `send` has been acknowledged.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> SessionStats {
        SessionStats { queued: self.queue.len(), queued_bytes: self.queued_bytes, ..self.stats.clone() }
    }

    /// Whether more than half of `max_unacked_bytes` is queued: a sender that can wait
    /// should, before it queues more (the host's back-pressure), so that the bound is
    /// left to what cannot wait.
    pub fn congested(&self) -> bool {
        self.queued_bytes > self.cfg.max_unacked_bytes / 2
    }

    /// Queues a payload for the peer. It is addressed to the peer incarnation known now
    /// (or, if none is known, to the first one learned).
    pub fn send(&mut self, payload: Vec<u8>) -> Result<(), SendError> {
        let cost = payload.len().saturating_add(PAYLOAD_OVERHEAD);
        if payload.len() > self.cfg.max_payload_bytes || cost > self.cfg.max_unacked_bytes {
            return Err(SendError::TooLarge);
        }
        if self.queued_bytes + cost > self.cfg.max_unacked_bytes {
            return Err(SendError::Full { queued_bytes: self.queued_bytes });
        }
        self.stats.sent += 1;
        self.stats.sent_bytes += payload.len() as u64;
        self.queued_bytes += cost;
        self.queue.push_back(Outgoing { seq: self.next_seq, payload });
        self.next_seq += 1;
        Ok(())
    }

    /// The transport to the peer is (again) connected: announce this incarnation and
    /// resend everything unacknowledged.
    pub fn connected(&mut self, now_us: u64) {
        let _ = now_us;
        self.transport_up = true;
        self.hello_pending = true;
        self.rewind();
    }

    /// The transport to the peer is gone; nothing is transmitted until `connected`.
    pub fn disconnected(&mut self, now_us: u64) {
        let _ = now_us;
        self.transport_up = false;
    }

    /// Whether the transport is connected (as last told).
    pub fn transport_up(&self) -> bool {
        self.transport_up
    }

    /// Whether this node watches the peer (the host's choice: its ring successors, see
    /// [`watch_set`]). A watched peer is probed every `heartbeat_us` when nothing else
    /// was sent, and reported down after `down_after_us` of silence; an unwatched idle
    /// one costs nothing.
    pub fn set_watched(&mut self, now_us: u64, watched: bool) {
        self.ran(now_us);
        self.watched = watched;
        self.refresh_armed(now_us);
    }

    /// Whether the peer is watched.
    pub fn is_watched(&self) -> bool {
        self.watched
    }

    /// Another node suspects the peer (or something here gives reason to doubt it):
    /// probe it now and until it answers. Unless it is heard, it is reported down when
    /// both `down_after_us` has passed since it was last heard and half of it since
    /// the first probe. Nothing happens if it is already probed or down.
    pub fn suspect(&mut self, now_us: u64) {
        self.ran(now_us);
        if self.cfg.fault == Fault::IgnoreSuspicion || !self.up || self.probe_since.is_some() {
            return;
        }
        self.start_probing(now_us);
    }

    /// Whether the peer is being probed (until it is heard).
    pub fn is_probing(&self) -> bool {
        self.probe_since.is_some()
    }

    /// Peer incarnation `epoch` says it is leaving for good (its node stops gracefully):
    /// if it is the one this session talks to, it is down now ([`Event::Down`] if it was
    /// up), without waiting for `down_after_us` of silence: from then on it is as a peer
    /// that went down (seen up again only on an answer to a probe sent since, which an
    /// incarnation that left never sends; what it sent before is still delivered; what
    /// is queued for it stays). Another epoch is ignored: the leave of an incarnation this
    /// session no longer talks to (or never did) says nothing of the current one.
    pub fn peer_left(&mut self, now_us: u64, epoch: u64) {
        self.ran(now_us);
        if self.cfg.fault == Fault::IgnoreLeave {
            return;
        }
        if self.peer_epoch != Some(epoch) {
            self.stats.stale_ignored += 1;
            return;
        }
        if self.up {
            self.go_down();
        }
        self.refresh_armed(now_us);
    }

    /// A packet from the peer.
    pub fn handle(&mut self, now_us: u64, pkt: Packet) {
        self.ran(now_us);
        let their_epoch = pkt.epoch();
        let addressed = pkt.addressed_to();
        if let Packet::Hello { from, .. } = pkt {
            if from != self.peer {
                self.stats.stale_ignored += 1;
                return;
            }
        }
        if let Some(e) = addressed {
            if e != self.epoch {
                // Addressed to another incarnation of this node: the sender does not know
                // this one yet (or the packet is very old). Tell it who we are.
                self.stats.stale_ignored += 1;
                if self.peer_epoch.is_none_or(|k| their_epoch >= k) {
                    self.hello_pending = true;
                }
                return;
            }
        }
        // An earlier incarnation is taken back (below) only once the later one has been
        // silent for `down_after_us`: a packet of it still on its way is no sign that it
        // lives. (A peer down for silence always has been; one that left is down at once,
        // simulator seed 103138.)
        let silent = now_us >= self.last_heard_us.saturating_add(self.cfg.down_after_us);
        match self.peer_epoch {
            Some(k) if their_epoch < k && (self.up || !silent) => {
                self.stats.stale_ignored += 1;
                return;
            }
            Some(k) if their_epoch < k => {
                // The incarnation this session switched to went down, and an earlier one
                // is heard: both lived at once (a second process with the node's identity)
                // and the earlier one is still there. Ignoring it for good would part two
                // live nodes for good, so it is taken back — as a new pair, since what this
                // session had with it was dropped at the switch while it may still hold its
                // side. This packet belongs to that old pair and is not looked into.
                self.earlier_peer_back(now_us, k, their_epoch);
                return;
            }
            Some(k) if their_epoch > k => self.peer_restarted(k, their_epoch),
            Some(_) => {}
            None => self.peer_epoch = Some(their_epoch),
        }
        self.suspected = false;
        let fresh = self.doubt_from.is_none_or(|k| pkt.echo().is_some_and(|e| e >= k));
        if fresh {
            self.last_heard_us = now_us;
            self.probe_since = None;
            self.doubt_from = None;
        }
        if let Packet::Probe { n, .. } = pkt {
            self.probes_in = self.probes_in.max(n);
        }
        // Heard, but not in answer to a probe of the doubt: ask now (once a quarter
        // heartbeat at most) rather than at the next beat.
        if !fresh && self.transport_up && now_us >= self.last_probe_us.saturating_add(self.cfg.heartbeat_us / 4) {
            self.probe_due = true;
        }
        if !self.up && fresh {
            self.up = true;
            self.events.push_back(Event::Up);
            // Whatever was sent while it was away may be lost: send it again.
            self.rewind();
        }
        match addressed {
            Some(_) => self.peer_knows_me = true,
            None => {
                self.peer_knows_me = false;
                self.hello_pending = true;
            }
        }
        match pkt {
            Packet::Hello { next_expected, peer_epoch, .. } => {
                // Not a reason to resend: our own `connected` did, and the retransmission
                // timer covers the rest.
                if peer_epoch.is_some() {
                    self.apply_ack(now_us, next_expected);
                }
            }
            Packet::Data { seq, payload, .. } => self.receive_data(now_us, seq, payload),
            Packet::Ack { upto, .. } => self.apply_ack(now_us, upto),
            Packet::Heartbeat { .. } => {}
            Packet::Probe { .. } => self.heartbeat_due = true,
        }
        self.refresh_armed(now_us);
    }

    /// The next packet to send, if any. Nothing while the transport is down.
    pub fn poll_transmit(&mut self, now_us: u64) -> Option<Packet> {
        self.refresh_armed(now_us);
        if !self.transport_up {
            return None;
        }
        let pkt = self.next_packet(now_us)?;
        self.last_sent_us = now_us;
        self.heartbeat_due = false;
        // Both are answered: no probe is needed besides; but a doubted peer's answer to
        // data does not show it heard from this node since (only a probe's does).
        if matches!(pkt, Packet::Probe { .. }) || (matches!(pkt, Packet::Data { .. }) && self.doubt_from.is_none()) {
            self.probe_due = false;
        }
        self.refresh_armed(now_us);
        Some(pkt)
    }

    /// The next event for the layers above, if any. Must be drained: undrained
    /// deliveries beyond `max_unacked_bytes` stop acceptance of new data.
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        if let Event::Deliver(p) = &ev {
            self.event_bytes -= p.len();
        }
        Some(ev)
    }

    /// The absolute time (µs) at which `handle_timeout` must next be called, if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t: Option<u64> = None;
        let mut consider = |x: u64| t = Some(t.map_or(x, |t| t.min(x)));
        if let Some(d) = self.down_deadline() {
            consider(d);
            // A tick at least every heartbeat while the peer is watched for silence, so
            // that a long gap between two calls can only be a pause of this node (see
            // `ran`).
            consider(self.last_run_us.saturating_add(self.cfg.heartbeat_us));
        }
        if let Some(t) = self.suspect_at() {
            consider(t);
        }
        if let Some(t) = self.idle_probe_at() {
            consider(t);
        }
        if self.transport_up {
            if !self.probe_due && !self.hello_pending && self.probing_wanted() {
                consider(self.probe_at());
            }
            if let Some(a) = self.ack_at {
                consider(a);
            }
        }
        if let Some(r) = self.rto_at {
            consider(r);
        }
        t
    }

    /// Fires every timer due at `now_us`.
    pub fn handle_timeout(&mut self, now_us: u64) {
        self.ran(now_us);
        self.refresh_armed(now_us);
        if self.down_deadline().is_some_and(|d| now_us >= d) {
            if self.watched {
                // Told again, now that it is down: a node whose probation of it ended
                // on an answer it sent just before it crashed (after the suspicion was
                // told) has nothing else to make it look again (simulator seed 1050654).
                self.events.push_back(Event::Suspect);
            }
            self.go_down();
        }
        if self.suspect_at().is_some_and(|t| now_us >= t) {
            self.suspected = true;
            self.stats.suspicions += 1;
            self.events.push_back(Event::Suspect);
        }
        if self.idle_probe_at().is_some_and(|t| now_us >= t) {
            self.start_probing(now_us);
        }
        if self.transport_up {
            if !self.probe_due && !self.hello_pending && self.probing_wanted() && now_us >= self.probe_at() {
                if self.peer_epoch.is_some() {
                    self.probe_due = true;
                } else {
                    self.hello_pending = true;
                }
            }
            if self.ack_at.is_some_and(|a| now_us >= a) {
                self.ack_at = None;
                self.ack_now = true;
            }
        }
        if self.rto_at.is_some_and(|r| now_us >= r) {
            self.rto_at = None;
            if self.cursor > self.acked {
                self.rewind();
            }
        }
    }

    /// The peer is down: seen up again only on an answer to a probe sent from now on.
    fn go_down(&mut self) {
        self.up = false;
        self.probe_since = None;
        self.suspected = false;
        self.doubt_from = Some(self.probes_out + 1);
        self.events.push_back(Event::Down);
    }

    fn next_packet(&mut self, now_us: u64) -> Option<Packet> {
        if self.hello_pending {
            self.hello_pending = false;
            self.stats.hellos_sent += 1;
            if self.peer_epoch.is_some() {
                self.ack_sent();
            }
            return Some(Packet::Hello {
                from: self.me,
                epoch: self.epoch,
                peer_epoch: self.peer_epoch,
                next_expected: if self.peer_epoch.is_some() { self.next_expected } else { 0 },
            });
        }
        let peer_epoch = self.peer_epoch?;
        if self.ack_now || self.ack_at.is_some_and(|a| now_us >= a) {
            self.ack_sent();
            self.stats.acks_sent += 1;
            return Some(Packet::Ack { epoch: self.epoch, peer_epoch, upto: self.next_expected, echo: self.probes_in });
        }
        if self.cursor < self.next_seq && self.cursor < self.acked.saturating_add(self.cfg.max_in_flight as u64) {
            let seq = self.cursor;
            let entry = &self.queue[(seq - self.acked) as usize];
            debug_assert_eq!(entry.seq, seq);
            let payload = entry.payload.clone();
            self.cursor += 1;
            if seq < self.highest_sent {
                self.stats.retransmitted += 1;
            } else {
                self.highest_sent = seq + 1;
                self.stats.transmitted += 1;
            }
            if self.rto_at.is_none() {
                self.rto_at = Some(now_us.saturating_add(self.cfg.retransmit_us));
            }
            return Some(Packet::Data { epoch: self.epoch, peer_epoch, seq, echo: self.probes_in, payload });
        }
        if self.probe_due {
            self.stats.probes_sent += 1;
            self.probes_out += 1;
            self.last_probe_us = now_us;
            return Some(Packet::Probe { epoch: self.epoch, peer_epoch, n: self.probes_out, echo: self.probes_in });
        }
        if self.heartbeat_due {
            self.stats.heartbeats_sent += 1;
            return Some(Packet::Heartbeat { epoch: self.epoch, peer_epoch, echo: self.probes_in });
        }
        None
    }

    /// The peer is watched or owes an acknowledgement: silence counts against it.
    fn armed(&self) -> bool {
        self.watched || !self.queue.is_empty()
    }

    /// Notes when silence starts to count (see `armed`).
    fn refresh_armed(&mut self, now_us: u64) {
        let armed = self.armed();
        if armed && !self.was_armed {
            self.armed_at = now_us;
            // Silence counts from now: the idle time before is no pause of this node.
            self.last_run_us = self.last_run_us.max(now_us);
        }
        self.was_armed = armed;
    }

    /// When the peer is reported down unless heard before, if silence counts now: at
    /// `down_after_us` of silence while armed; on probation, once both `down_after_us`
    /// of silence and half of it since the first probe have passed.
    fn down_deadline(&self) -> Option<u64> {
        if !self.up {
            return None;
        }
        let d = self.cfg.down_after_us;
        let armed = self.was_armed.then(|| self.last_heard_us.max(self.armed_at).saturating_add(d));
        let probed = self.probe_since.map(|p| self.last_heard_us.saturating_add(d).max(p.saturating_add(d / 2)));
        match (armed, probed) {
            (Some(a), Some(p)) => Some(a.min(p)),
            (a, p) => a.or(p),
        }
    }

    /// When to tell the host that a watched peer is suspect: at half of
    /// `down_after_us` of silence, once per silence. (Only watched peers: the gossip is
    /// itself data, and a peer slow to acknowledge data on an overloaded machine would
    /// otherwise set off suspicions of its own, each costing a message to every node.)
    fn suspect_at(&self) -> Option<u64> {
        (self.up && self.watched && self.was_armed && !self.suspected)
            .then(|| self.last_heard_us.max(self.armed_at).saturating_add(self.cfg.down_after_us / 2))
    }

    /// When an idle peer (up, not armed, not probed) is probed anyway.
    fn idle_probe_at(&self) -> Option<u64> {
        (self.up && self.cfg.idle_probe_us > 0 && !self.was_armed && self.probe_since.is_none())
            .then(|| self.last_heard_us.saturating_add(self.cfg.idle_probe_us))
    }

    /// When the next probe is due: `heartbeat_us` after the last packet sent, put off to
    /// the next multiple of a quarter of `heartbeat_us` on the host's clock. Every
    /// session of a node so probes on the same beats: a node's probes to its watched
    /// peers go out in one wake-up of its network thread, not one each (the drift of
    /// each session's own timer would spread them apart), at most a quarter of a
    /// heartbeat late.
    fn probe_at(&self) -> u64 {
        let beat = (self.cfg.heartbeat_us / 4).max(1);
        // A doubted peer is probed every heartbeat however much else goes to it (its
        // answers to the peer's probes do not show this node it is alive now).
        let last = if self.doubt_from.is_some() { self.last_probe_us } else { self.last_sent_us };
        last.saturating_add(self.cfg.heartbeat_us).div_ceil(beat).saturating_mul(beat)
    }

    /// Whether probes go out every `heartbeat_us` when nothing else is sent: to a
    /// watched peer, one on probation, and one that is down (so that it is seen back).
    fn probing_wanted(&self) -> bool {
        self.watched || self.probe_since.is_some() || !self.up
    }

    fn start_probing(&mut self, now_us: u64) {
        self.probe_since = Some(now_us);
        self.doubt_from.get_or_insert(self.probes_out + 1);
        self.last_run_us = self.last_run_us.max(now_us);
        if self.transport_up {
            if self.peer_epoch.is_some() {
                self.probe_due = true;
            } else {
                self.hello_pending = true;
            }
        }
    }

    /// Notes that the session runs at `now_us`. While silence counts against the peer a
    /// timer is always armed at most `heartbeat_us` ahead, so
    /// a gap of more than half of `down_after_us` between two calls means this node
    /// itself was stopped (`SIGSTOP`, a suspended VM, a starved runtime): the peer
    /// could not have been heard meanwhile, so the silence is not held against it. Its
    /// failure-detection window is moved on by the gap, and it has the time it had
    /// left before the pause to be heard again.
    fn ran(&mut self, now_us: u64) {
        let gap = now_us.saturating_sub(self.last_run_us);
        let watching = self.down_deadline().is_some();
        if watching
            && self.cfg.fault != Fault::NoPauseCheck
            && gap > self.cfg.down_after_us / 2
            && gap > self.cfg.heartbeat_us.saturating_mul(2)
        {
            self.stats.pauses_survived += 1;
            self.last_heard_us = self.last_heard_us.saturating_add(gap).min(now_us);
            self.armed_at = self.armed_at.saturating_add(gap).min(now_us);
            if let Some(p) = self.probe_since.as_mut() {
                *p = p.saturating_add(gap).min(now_us);
            }
        }
        self.last_run_us = self.last_run_us.max(now_us);
    }

    fn ack_sent(&mut self) {
        self.ack_now = false;
        self.ack_at = None;
        self.received_since_ack = 0;
    }

    /// Go back to the oldest unacknowledged payload.
    fn rewind(&mut self) {
        if self.cfg.fault == Fault::NoRetransmit {
            return;
        }
        self.cursor = self.acked;
    }

    fn peer_restarted(&mut self, old_epoch: u64, new_epoch: u64) {
        self.stats.peer_restarts += 1;
        self.events.push_back(Event::PeerRestarted { old_epoch, new_epoch });
        if self.cfg.fault == Fault::KeepQueueOnRestart {
            // The bug: renumber the old incarnation's unacked payloads for the new one.
            for (i, o) in self.queue.iter_mut().enumerate() {
                o.seq = i as u64;
            }
            self.next_seq = self.queue.len() as u64;
        } else {
            self.stats.dropped_on_restart += self.queue.len() as u64;
            self.queue.clear();
            self.queued_bytes = 0;
            self.next_seq = 0;
        }
        self.acked = 0;
        self.cursor = 0;
        self.highest_sent = 0;
        self.rto_at = None;
        self.next_expected = 0;
        self.reorder.clear();
        self.ack_at = None;
        self.ack_now = false;
        self.received_since_ack = 0;
        self.peer_knows_me = false;
        self.peer_epoch = Some(new_epoch);
        // A new incarnation: its packets show it alive; its probes count from 1.
        self.probes_in = 0;
        self.doubt_from = None;
    }

    /// An earlier peer incarnation `back` is heard after the later one, `current`, went
    /// down (see [`Session::handle`]). This session drops everything of the pair with
    /// `current`, as at a restart, and starts a new pair with `back` under a new epoch of
    /// its own, so that `back` too sees a restart (of this node) and drops what it has of
    /// the pair that was lost here: without that, the two sides' sequence numbers would
    /// never match again. The new epoch is this one plus one: a later incarnation of
    /// this node must start above it (the mesh's epochs are microseconds of wall-clock
    /// time, and a switch back takes at least `down_after_us`).
    fn earlier_peer_back(&mut self, now_us: u64, current: u64, back: u64) {
        self.peer_restarted(current, back);
        self.epoch += 1;
        self.stats.earlier_peers_back += 1;
        self.last_heard_us = now_us;
        self.up = true;
        self.events.push_back(Event::Up);
        self.hello_pending = true;
    }

    fn apply_ack(&mut self, now_us: u64, upto: u64) {
        if upto <= self.acked || upto > self.highest_sent {
            return; // old, or acknowledges what was never sent (hostile): ignore
        }
        while self.queue.front().is_some_and(|o| o.seq < upto) {
            if let Some(o) = self.queue.pop_front() {
                self.queued_bytes -= o.payload.len() + PAYLOAD_OVERHEAD;
            }
        }
        self.acked = upto;
        self.cursor = self.cursor.max(upto);
        self.rto_at = (self.cursor > self.acked).then(|| now_us.saturating_add(self.cfg.retransmit_us));
    }

    fn receive_data(&mut self, now_us: u64, seq: u64, payload: Vec<u8>) {
        if payload.len() > self.cfg.max_payload_bytes {
            self.stats.stale_ignored += 1;
            return;
        }
        let window = self.cfg.max_in_flight as u64;
        if seq < self.next_expected {
            if self.cfg.fault == Fault::SkipDedup {
                self.push_delivery(payload);
            } else {
                self.stats.duplicates_dropped += 1;
            }
            // Our ack was probably lost: ack soon.
            self.schedule_ack(now_us);
            return;
        }
        if seq == self.next_expected {
            if self.event_bytes + payload.len() > self.cfg.max_unacked_bytes {
                self.stats.dropped_over_limit += 1;
                return;
            }
            self.push_delivery(payload);
            self.next_expected += 1;
            while let Some(p) = self.reorder.remove(&self.next_expected) {
                self.push_delivery(p);
                self.next_expected += 1;
            }
        } else if seq - self.next_expected < window && self.reorder.len() < self.cfg.max_in_flight {
            if self.reorder.contains_key(&seq) {
                self.stats.duplicates_dropped += 1;
            } else {
                self.stats.buffered_out_of_order += 1;
                self.reorder.insert(seq, payload);
            }
        } else {
            self.stats.dropped_over_limit += 1;
            return;
        }
        self.received_since_ack += 1;
        if self.received_since_ack >= (self.cfg.max_in_flight / 4).max(1) {
            self.ack_now = true;
        } else {
            self.schedule_ack(now_us);
        }
    }

    fn schedule_ack(&mut self, now_us: u64) {
        if self.ack_at.is_none() && !self.ack_now {
            self.ack_at = Some(now_us.saturating_add(self.cfg.ack_delay_us));
        }
    }

    fn push_delivery(&mut self, payload: Vec<u8>) {
        self.stats.delivered += 1;
        self.stats.delivered_bytes += payload.len() as u64;
        self.event_bytes += payload.len();
        self.events.push_back(Event::Deliver(payload));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A_EPOCH: u64 = 1;
    const B_EPOCH: u64 = 7;

    fn cfg() -> SessionConfig {
        SessionConfig {
            heartbeat_us: 10_000,
            down_after_us: 50_000,
            idle_probe_us: 0,
            retransmit_us: 20_000,
            ack_delay_us: 1_000,
            max_unacked_bytes: 1_000,
            max_in_flight: 8,
            max_payload_bytes: 100,
            fault: Fault::None,
        }
    }

    fn drain(s: &mut Session, now: u64) -> Vec<Packet> {
        std::iter::from_fn(|| s.poll_transmit(now)).take(10_000).collect()
    }

    fn events(s: &mut Session) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    /// The events but `Suspect` (which a silent watched peer gets before `Down`).
    fn verdicts(s: &mut Session) -> Vec<Event> {
        events(s).into_iter().filter(|e| *e != Event::Suspect).collect()
    }

    fn delivered(evs: &[Event]) -> Vec<Vec<u8>> {
        evs.iter().filter_map(|e| if let Event::Deliver(p) = e { Some(p.clone()) } else { None }).collect()
    }

    fn feed(s: &mut Session, now: u64, pkts: impl IntoIterator<Item = Packet>) {
        for p in pkts {
            s.handle(now, p);
        }
    }

    /// Passes packets both ways until neither side has anything to send.
    fn exchange(a: &mut Session, b: &mut Session, now: u64) {
        for _ in 0..100 {
            let pa = drain(a, now);
            let pb = drain(b, now);
            if pa.is_empty() && pb.is_empty() {
                return;
            }
            feed(b, now, pa);
            feed(a, now, pb);
        }
        panic!("no quiescence");
    }

    /// Fires every timer up to `until`, throwing away what is transmitted.
    fn advance_silent(s: &mut Session, until: u64) {
        while let Some(t) = s.poll_timeout().filter(|&t| t <= until) {
            s.handle_timeout(t);
            drain(s, t);
        }
    }

    /// Two connected sessions that know each other and watch each other.
    fn pair() -> (Session, Session) {
        let (mut a, mut b) = idle_pair();
        a.set_watched(0, true);
        b.set_watched(0, true);
        (a, b)
    }

    /// Two connected sessions that know each other, neither watching the other.
    fn idle_pair() -> (Session, Session) {
        let mut a = Session::new(0, 1, A_EPOCH, cfg(), 0);
        let mut b = Session::new(1, 0, B_EPOCH, cfg(), 0);
        a.connected(0);
        b.connected(0);
        exchange(&mut a, &mut b, 0);
        assert_eq!(events(&mut a), vec![Event::Up]);
        assert_eq!(events(&mut b), vec![Event::Up]);
        assert_eq!((a.peer_epoch(), b.peer_epoch()), (Some(B_EPOCH), Some(A_EPOCH)));
        (a, b)
    }

    fn p(i: u8) -> Vec<u8> {
        vec![i; 1 + i as usize % 5]
    }

    #[test]
    fn delivers_in_order_exactly_once() {
        let (mut a, mut b) = pair();
        for i in 0..20 {
            a.send(p(i)).unwrap();
        }
        for t in 1..20 {
            exchange(&mut a, &mut b, t * 1_000);
            a.handle_timeout(t * 1_000);
            b.handle_timeout(t * 1_000);
        }
        assert_eq!(delivered(&events(&mut b)), (0..20).map(p).collect::<Vec<_>>());
        assert!(a.is_idle());
        assert_eq!(a.stats().retransmitted, 0);
    }

    #[test]
    fn reconnect_retransmits_unacked() {
        let (mut a, mut b) = pair();
        for i in 0..3 {
            a.send(p(i)).unwrap();
        }
        let lost = drain(&mut a, 100);
        assert_eq!(lost.iter().filter(|p| matches!(p, Packet::Data { .. })).count(), 3);
        a.disconnected(200);
        b.disconnected(200);
        assert_eq!(a.poll_transmit(300), None, "nothing is sent while disconnected");
        a.connected(1_000);
        b.connected(1_000);
        exchange(&mut a, &mut b, 1_000);
        b.handle_timeout(2_000);
        exchange(&mut a, &mut b, 2_000);
        assert_eq!(delivered(&events(&mut b)), vec![p(0), p(1), p(2)]);
        assert_eq!(a.stats().retransmitted, 3);
        assert!(a.is_idle());
    }

    #[test]
    fn retransmits_after_timeout() {
        let (mut a, mut b) = pair();
        a.send(p(1)).unwrap();
        drain(&mut a, 0); // lost
        let mut resent = vec![];
        while let Some(t) = a.poll_timeout().filter(|&t| t <= cfg().retransmit_us) {
            a.handle_timeout(t);
            resent.extend(drain(&mut a, t));
        }
        assert_eq!(resent.iter().filter(|p| matches!(p, Packet::Data { .. })).count(), 1);
        feed(&mut b, cfg().retransmit_us, resent);
        assert_eq!(delivered(&events(&mut b)), vec![p(1)]);
        assert_eq!(a.stats().retransmitted, 1);
    }

    #[test]
    fn duplicates_are_dropped() {
        let (mut a, mut b) = pair();
        for i in 0..5 {
            a.send(p(i)).unwrap();
        }
        let data = drain(&mut a, 10);
        feed(&mut b, 20, data.clone());
        feed(&mut b, 30, data.clone());
        feed(&mut b, 40, data.into_iter().rev());
        assert_eq!(delivered(&events(&mut b)), (0..5).map(p).collect::<Vec<_>>());
        assert_eq!(b.stats().duplicates_dropped, 10);
        assert_eq!(b.stats().delivered, 5);
    }

    #[test]
    fn reordered_packets_are_buffered_and_delivered_in_order() {
        let (mut a, mut b) = pair();
        for i in 0..6 {
            a.send(p(i)).unwrap();
        }
        let data = drain(&mut a, 10);
        feed(&mut b, 20, data.into_iter().rev());
        assert_eq!(delivered(&events(&mut b)), (0..6).map(p).collect::<Vec<_>>());
        assert_eq!(b.stats().buffered_out_of_order, 5);
    }

    #[test]
    fn peer_restart_is_detected_and_unacked_data_dropped() {
        let (mut a, mut b) = pair();
        a.send(p(1)).unwrap();
        exchange(&mut a, &mut b, 10);
        b.handle_timeout(2_000);
        exchange(&mut a, &mut b, 2_000);
        assert_eq!(delivered(&events(&mut b)), vec![p(1)]);
        // Two payloads to the old incarnation are lost with it.
        a.send(p(2)).unwrap();
        a.send(p(3)).unwrap();
        let old_b_packets = drain(&mut a, 3_000);
        let mut b2 = Session::new(1, 0, B_EPOCH + 5, cfg(), 4_000);
        b2.connected(4_000);
        a.connected(4_000);
        feed(&mut b2, 4_000, old_b_packets); // addressed to the old incarnation: ignored
        assert!(delivered(&events(&mut b2)).is_empty());
        exchange(&mut a, &mut b2, 4_000);
        assert_eq!(events(&mut a), vec![Event::PeerRestarted { old_epoch: B_EPOCH, new_epoch: B_EPOCH + 5 }]);
        assert_eq!(a.stats().dropped_on_restart, 2);
        assert_eq!(a.stats().peer_restarts, 1);
        assert!(a.is_idle());
        assert_eq!(events(&mut b2), vec![Event::Up]);
        // The new pair starts afresh.
        a.send(p(4)).unwrap();
        exchange(&mut a, &mut b2, 5_000);
        assert_eq!(delivered(&events(&mut b2)), vec![p(4)]);
        // Packets from the old incarnation are ignored from now on.
        let ignored = a.stats().stale_ignored;
        a.handle(6_000, Packet::Data { epoch: B_EPOCH, peer_epoch: A_EPOCH, seq: 0, echo: 0, payload: p(9) });
        a.handle(6_000, Packet::Hello { from: 1, epoch: B_EPOCH, peer_epoch: None, next_expected: 0 });
        assert!(events(&mut a).is_empty());
        assert_eq!(a.stats().stale_ignored, ignored + 2);
        assert_eq!(a.peer_epoch(), Some(B_EPOCH + 5));
    }

    /// A peer that says it leaves is down at once (not after `down_after_us`); what it
    /// sent before still arrives, and does not bring it up; its restart is seen as any
    /// restart.
    #[test]
    fn a_peer_that_leaves_is_down_at_once_and_its_restart_is_seen() {
        let (mut a, mut b) = pair();
        b.send(p(1)).unwrap();
        exchange(&mut a, &mut b, 10);
        assert_eq!(delivered(&events(&mut a)), vec![p(1)]);
        // b sends once more, then leaves; the packet arrives after the leave.
        b.send(p(2)).unwrap();
        let late = drain(&mut b, 20);
        a.send(p(3)).unwrap();
        a.peer_left(30, B_EPOCH);
        assert_eq!(events(&mut a), vec![Event::Down]);
        assert!(!a.is_up());
        feed(&mut a, 40, late.clone());
        assert_eq!(events(&mut a), vec![Event::Deliver(p(2))], "what it sent before it left is delivered, and no Up");
        assert!(!a.is_up());
        // Still down long after (no Up from its old packets, no second Down), and what
        // was queued for it stays queued.
        feed(&mut a, 200_000, late);
        advance_silent(&mut a, 300_000);
        assert!(verdicts(&mut a).is_empty());
        assert!(!a.is_idle());
        // A new incarnation of b is seen: a restart, then up, and the pair starts afresh.
        let mut b2 = Session::new(1, 0, B_EPOCH + 1, cfg(), 300_000);
        b2.connected(300_000);
        exchange(&mut a, &mut b2, 300_000);
        assert_eq!(verdicts(&mut a), vec![Event::PeerRestarted { old_epoch: B_EPOCH, new_epoch: B_EPOCH + 1 }, Event::Up]);
        assert!(a.is_up());
        a.send(p(4)).unwrap();
        exchange(&mut a, &mut b2, 300_010);
        assert_eq!(delivered(&events(&mut b2)), vec![p(4)]);
    }

    /// After a leave, a packet of an earlier incarnation still on its way (sent before
    /// the restart) is no sign that the earlier one lives: it is ignored, where after a
    /// silence of `down_after_us` it would be taken back (simulator seed 103138). One
    /// heard `down_after_us` after the leave still is.
    #[test]
    fn a_late_packet_of_an_earlier_incarnation_after_a_leave_is_not_taken_back() {
        let (mut a, mut b) = pair();
        b.send(p(1)).unwrap();
        let stale = drain(&mut b, 10);
        let mut b2 = Session::new(1, 0, B_EPOCH + 1, cfg(), 20);
        b2.connected(20);
        exchange(&mut a, &mut b2, 20);
        assert_eq!(verdicts(&mut a), vec![Event::PeerRestarted { old_epoch: B_EPOCH, new_epoch: B_EPOCH + 1 }]);
        a.peer_left(30, B_EPOCH + 1);
        assert_eq!(events(&mut a), vec![Event::Down]);
        feed(&mut a, 40, stale.clone());
        assert!(events(&mut a).is_empty(), "an earlier incarnation was taken back on a late packet");
        assert_eq!(a.peer_epoch(), Some(B_EPOCH + 1));
        // Still talking `down_after_us` later: it lives, and is taken back.
        feed(&mut a, 30 + cfg().down_after_us, stale);
        assert_eq!(verdicts(&mut a), vec![Event::PeerRestarted { old_epoch: B_EPOCH + 1, new_epoch: B_EPOCH }, Event::Up]);
    }

    /// The leave of another incarnation than the one the session talks to changes
    /// nothing (a leave that arrives after the peer restarted, or a wrong one).
    #[test]
    fn the_leave_of_another_incarnation_is_ignored() {
        let (mut a, mut b) = pair();
        exchange(&mut a, &mut b, 10);
        let ignored = a.stats().stale_ignored;
        a.peer_left(20, B_EPOCH - 1);
        a.peer_left(20, B_EPOCH + 1);
        assert!(events(&mut a).is_empty());
        assert!(a.is_up());
        assert_eq!(a.stats().stale_ignored, ignored + 2);
        // A leave heard while the peer is already down: no second Down.
        advance_silent(&mut a, 200_000);
        assert_eq!(verdicts(&mut a), vec![Event::Down]);
        a.peer_left(200_000, B_EPOCH);
        assert!(events(&mut a).is_empty() && !a.is_up());
    }

    #[test]
    fn restarted_sender_is_seen_by_the_receiver() {
        let (mut a, mut b) = pair();
        a.send(p(1)).unwrap();
        exchange(&mut a, &mut b, 10);
        events(&mut b);
        let mut a2 = Session::new(0, 1, A_EPOCH + 1, cfg(), 100);
        a2.connected(100);
        a2.send(p(2)).unwrap();
        exchange(&mut a2, &mut b, 100);
        assert_eq!(events(&mut b), vec![Event::PeerRestarted { old_epoch: A_EPOCH, new_epoch: A_EPOCH + 1 }, Event::Deliver(p(2))]);
    }

    /// A second incarnation of b (a process with b's identity: a newer epoch) is heard
    /// while the real b lives, then goes silent. While it is up the real b is ignored;
    /// once it is down the real b is taken back, and the two talk again both ways.
    #[test]
    fn an_earlier_incarnation_is_taken_back_once_the_later_one_is_down() {
        let (mut a, mut b) = pair();
        a.send(p(1)).unwrap();
        b.send(p(2)).unwrap();
        for t in [10, 2_000, 4_000] {
            a.handle_timeout(t);
            b.handle_timeout(t);
            exchange(&mut a, &mut b, t);
        }
        assert_eq!(delivered(&events(&mut b)), vec![p(1)]);
        assert_eq!(delivered(&events(&mut a)), vec![p(2)]);
        let later = B_EPOCH + 3;
        let mut other = Session::new(1, 0, later, cfg(), 5_000);
        other.connected(5_000);
        exchange(&mut a, &mut other, 5_000);
        assert_eq!(events(&mut a), vec![Event::PeerRestarted { old_epoch: B_EPOCH, new_epoch: later }]);
        assert_eq!(events(&mut other), vec![Event::Up]);
        // The real b, still there, is not heard while the later one is up.
        b.send(p(3)).unwrap();
        b.handle_timeout(6_000);
        exchange(&mut a, &mut b, 6_000);
        assert!(events(&mut a).is_empty());
        assert_eq!(a.peer_epoch(), Some(later));
        // The later one goes silent: down.
        let t = 6_000 + cfg().down_after_us;
        advance_silent(&mut a, t);
        assert_eq!(verdicts(&mut a), vec![Event::Down]);
        advance_silent(&mut b, t);
        assert_eq!(verdicts(&mut b), vec![Event::Down], "b heard nothing addressed to it since the switch");
        // The real b is heard again (its next packet: a retransmission or a heartbeat):
        // taken back, as a new pair under a new epoch of a's.
        let t = b.poll_timeout().unwrap().max(t);
        b.handle_timeout(t);
        exchange(&mut a, &mut b, t);
        assert_eq!(events(&mut a), vec![Event::PeerRestarted { old_epoch: later, new_epoch: B_EPOCH }, Event::Up]);
        assert_eq!((a.epoch(), a.peer_epoch()), (A_EPOCH + 1, Some(B_EPOCH)));
        // b sees a restart of a and drops its side of the pair that a lost (p(3)).
        assert_eq!(events(&mut b), vec![Event::PeerRestarted { old_epoch: A_EPOCH, new_epoch: A_EPOCH + 1 }, Event::Up]);
        assert_eq!(b.stats().dropped_on_restart, 1);
        assert_eq!(a.stats().earlier_peers_back, 1);
        // Both ways again, exactly once and in order.
        for i in 4..8 {
            a.send(p(i)).unwrap();
            b.send(p(i + 10)).unwrap();
        }
        for k in 2..10 {
            let now = t + k * 2_000;
            a.handle_timeout(now);
            b.handle_timeout(now);
            exchange(&mut a, &mut b, now);
        }
        assert_eq!(delivered(&events(&mut b)), (4..8).map(p).collect::<Vec<_>>());
        assert_eq!(delivered(&events(&mut a)), (14..18).map(p).collect::<Vec<_>>());
        assert!(a.is_idle() && b.is_idle() && a.is_up() && b.is_up());
        // A late packet of the later incarnation while the earlier one is up: a restart
        // again (it is newer), never a wedge; an older one than the current: ignored.
        let ignored = a.stats().stale_ignored;
        a.handle(t + 30_000, Packet::Heartbeat { epoch: B_EPOCH - 1, peer_epoch: A_EPOCH + 1, echo: 0 });
        assert_eq!(a.stats().stale_ignored, ignored + 1);
        assert!(events(&mut a).is_empty());
    }

    #[test]
    fn down_after_silence_and_up_after_heal() {
        let (mut a, mut b) = pair();
        advance_silent(&mut a, cfg().down_after_us - 1);
        assert!(a.is_up());
        advance_silent(&mut a, cfg().down_after_us);
        assert_eq!(verdicts(&mut a), vec![Event::Down]);
        assert!(!a.is_up());
        // Data for a down peer stays queued...
        a.send(p(7)).unwrap();
        advance_silent(&mut a, 200_000);
        assert!(events(&mut a).is_empty(), "Down is reported once");
        // ...and is sent when the peer is heard again.
        let t = 200_000;
        advance_silent(&mut b, t);
        assert_eq!(verdicts(&mut b), vec![Event::Down]);
        drain(&mut a, t);
        a.handle(t, Packet::Heartbeat { epoch: B_EPOCH, peer_epoch: A_EPOCH, echo: a.probes_out });
        assert_eq!(events(&mut a), vec![Event::Up]);
        assert!(a.is_up());
        exchange(&mut a, &mut b, t);
        // b sees a back once a has answered a probe of b's (what a sent before that is
        // delivered: a packet says nothing of when it was sent).
        let later = t + 2 * cfg().heartbeat_us;
        while let Some(tt) = b.poll_timeout().filter(|&tt| tt <= later) {
            b.handle_timeout(tt);
            a.handle_timeout(tt);
            exchange(&mut a, &mut b, tt);
        }
        let seen = events(&mut b);
        assert!(seen.contains(&Event::Up) && seen.contains(&Event::Deliver(p(7))), "{seen:?}");
        assert!(b.is_up());
    }

    #[test]
    fn a_pause_of_this_node_is_not_the_peers_silence() {
        let (mut a, _b) = pair();
        // a runs its timers for a while, then is stopped for ten detection windows.
        advance_silent(&mut a, 20_000);
        let resumed = 20_000 + 10 * cfg().down_after_us;
        a.handle_timeout(resumed);
        assert!(a.is_up(), "a node that was itself stopped declared its peer down");
        assert!(events(&mut a).is_empty());
        assert_eq!(a.stats().pauses_survived, 1);
        // The peer still has the rest of its window to be heard; silence after that is
        // held against it as usual.
        advance_silent(&mut a, resumed + cfg().down_after_us);
        assert_eq!(verdicts(&mut a), vec![Event::Down]);
    }

    #[test]
    fn probes_fall_on_the_nodes_beats() {
        // Two watched sessions of one node whose last packets went out at different
        // times within a beat probe at the same instant, on a quarter-heartbeat beat,
        // never sooner than a heartbeat after their last packet.
        let hb = cfg().heartbeat_us;
        let (mut a, _) = idle_pair();
        let (mut c, _) = idle_pair();
        a.set_watched(0, true);
        c.set_watched(0, true);
        a.send(p(1)).unwrap();
        drain(&mut a, 1_100);
        c.send(p(2)).unwrap();
        drain(&mut c, 2_300);
        let (ta, tc) = (a.probe_at(), c.probe_at());
        assert_eq!(ta, tc, "the same beat");
        assert_eq!(ta % (hb / 4), 0);
        assert!(ta >= 2_300 + hb && ta < 1_100 + hb + hb / 4, "{ta}");
    }

    #[test]
    fn idle_time_before_data_is_not_taken_for_a_pause() {
        // An idle pair (no timer), then data to a peer that has just crashed: silence
        // counts from the send, and the peer is down `down_after_us` later — the idle
        // time before the send is no pause of this node (it postponed the verdict by
        // up to that time once: real nodes saw a crash 0.4 s late after load reports).
        let (mut a, _b) = idle_pair();
        let sent = 10 * cfg().down_after_us;
        a.send(p(1)).unwrap();
        drain(&mut a, sent);
        a.handle_timeout(sent + cfg().heartbeat_us);
        advance_silent(&mut a, sent + cfg().down_after_us);
        assert_eq!(verdicts(&mut a), vec![Event::Down], "down_after_us after the unanswered send");
        assert_eq!(a.stats().pauses_survived, 0);
        // The same when the peer is suspected by others meanwhile (probation).
        let (mut a, _b) = idle_pair();
        a.send(p(1)).unwrap();
        drain(&mut a, sent);
        a.suspect(sent + cfg().down_after_us / 4);
        advance_silent(&mut a, sent + cfg().down_after_us);
        assert_eq!(verdicts(&mut a), vec![Event::Down]);
        assert_eq!(a.stats().pauses_survived, 0);
    }

    #[test]
    fn a_peer_silent_without_a_transport_is_still_declared_down() {
        let (mut a, _b) = pair();
        a.disconnected(0);
        advance_silent(&mut a, cfg().down_after_us);
        assert_eq!(verdicts(&mut a), vec![Event::Down], "ticks while up keep pause detection from hiding real silence");
        assert_eq!(a.stats().pauses_survived, 0);
    }

    #[test]
    fn a_watched_peer_is_probed_when_idle_only_and_answers() {
        let (mut a, mut b) = idle_pair();
        a.set_watched(0, true);
        let t = a.poll_timeout().unwrap();
        assert_eq!(t, cfg().heartbeat_us);
        a.handle_timeout(t);
        assert_eq!(drain(&mut a, t), vec![Packet::Probe { epoch: A_EPOCH, peer_epoch: B_EPOCH, n: 1, echo: 0 }]);
        feed(&mut b, t, [Packet::Probe { epoch: A_EPOCH, peer_epoch: B_EPOCH, n: 1, echo: 0 }]);
        assert_eq!(
            drain(&mut b, t),
            vec![Packet::Heartbeat { epoch: B_EPOCH, peer_epoch: A_EPOCH, echo: 1 }],
            "a probe is answered at once"
        );
        // Traffic postpones the probe.
        a.send(p(1)).unwrap();
        feed(&mut b, t + 5_000, drain(&mut a, t + 5_000));
        a.handle_timeout(t + cfg().heartbeat_us);
        assert!(drain(&mut a, t + cfg().heartbeat_us).iter().all(|p| !matches!(p, Packet::Probe { .. })));
        assert_eq!(a.stats().probes_sent, 1);
    }

    #[test]
    fn an_idle_pair_sends_nothing_and_is_never_down() {
        let (mut a, mut b) = idle_pair();
        let until = 100 * cfg().down_after_us;
        assert_eq!(a.poll_timeout(), None, "no timer at all on an idle pair");
        advance_silent(&mut a, until);
        advance_silent(&mut b, until);
        assert!(drain(&mut a, until).is_empty() && drain(&mut b, until).is_empty());
        assert!(events(&mut a).is_empty() && events(&mut b).is_empty());
        assert!(a.is_up() && b.is_up());
    }

    #[test]
    fn an_idle_peer_is_probed_after_idle_probe_us() {
        let c = SessionConfig { idle_probe_us: 500_000, ..cfg() };
        let mut a = Session::new(0, 1, A_EPOCH, c.clone(), 0);
        let mut b = Session::new(1, 0, B_EPOCH, c, 0);
        a.connected(0);
        b.connected(0);
        exchange(&mut a, &mut b, 0);
        events(&mut a);
        events(&mut b);
        // Both probe after idle_probe_us of silence; answered, the silence starts again.
        let t = a.poll_timeout().unwrap();
        assert_eq!(t, 500_000);
        a.handle_timeout(t);
        b.handle_timeout(t);
        exchange(&mut a, &mut b, t);
        assert!(events(&mut a).is_empty() && events(&mut b).is_empty());
        assert!(!a.is_probing() && !b.is_probing());
        // Unanswered: down half a window after the probe (the silence is long enough).
        let t2 = a.poll_timeout().unwrap();
        assert_eq!(t2, t + 500_000);
        advance_silent(&mut a, t2 + cfg().down_after_us / 2 - 1);
        assert!(a.is_up());
        advance_silent(&mut a, t2 + cfg().down_after_us / 2);
        assert_eq!(events(&mut a), vec![Event::Down]);
    }

    /// Found by the simulator (seed 1035234): a probe the peer sent just before it
    /// crashed, arriving just after the suspicion, ended the probation, and the node
    /// saw the crashed peer up for good. Only an answer to a probe of the probation
    /// ends it; what the peer sent before still on its way does not.
    #[test]
    fn a_packet_sent_before_a_suspicion_does_not_end_the_probation() {
        let (mut a, mut b) = idle_pair();
        // b probes a (its probe is on its way when b crashes).
        b.suspect(10_000);
        let stale = drain(&mut b, 10_000);
        assert!(matches!(stale.as_slice(), [Packet::Probe { .. }]), "{stale:?}");
        a.suspect(30_000);
        let probe = drain(&mut a, 30_000);
        assert_eq!(probe, vec![Packet::Probe { epoch: A_EPOCH, peer_epoch: B_EPOCH, n: 1, echo: 0 }]);
        feed(&mut a, 30_100, stale);
        a.handle(30_200, Packet::Heartbeat { epoch: B_EPOCH, peer_epoch: A_EPOCH, echo: 0 });
        assert!(a.is_probing(), "packets sent before the probation do not end it");
        let down = 30_000 + cfg().down_after_us / 2;
        advance_silent(&mut a, down.max(cfg().down_after_us));
        assert_eq!(events(&mut a).into_iter().filter(|e| *e == Event::Down).count(), 1, "the crashed peer is seen down");
        // Seen up again only on an answer to a probe sent after it went down.
        a.handle(down + 1_000, Packet::Heartbeat { epoch: B_EPOCH, peer_epoch: A_EPOCH, echo: 1 });
        assert!(!a.is_up(), "an answer to a probe from before it went down is not one");
        let until = down + 3 * cfg().heartbeat_us;
        // (Heard from it: it is asked at once.)
        let mut probes = drain(&mut a, down + 1_000);
        while let Some(t) = a.poll_timeout().filter(|&t| t <= until) {
            a.handle_timeout(t);
            probes.extend(drain(&mut a, t));
        }
        let n = probes.iter().find_map(|p| if let Packet::Probe { n, .. } = p { Some(*n) } else { None }).expect("a down peer is probed");
        a.handle(until, Packet::Heartbeat { epoch: B_EPOCH, peer_epoch: A_EPOCH, echo: n });
        assert!(a.is_up());
    }

    #[test]
    fn a_live_peer_on_probation_ends_it_by_answering_the_probe() {
        let (mut a, mut b) = idle_pair();
        a.suspect(30_000);
        let probe = drain(&mut a, 30_000);
        feed(&mut b, 30_100, probe);
        let answer = drain(&mut b, 30_100);
        assert_eq!(answer, vec![Packet::Heartbeat { epoch: B_EPOCH, peer_epoch: A_EPOCH, echo: 1 }]);
        feed(&mut a, 30_200, answer);
        assert!(!a.is_probing() && a.is_up());
    }

    #[test]
    fn a_suspected_peer_is_probed_and_down_only_if_silent() {
        let (mut a, _b) = idle_pair();
        // Suspected at 30_000: down at the later of 0 + window and 30_000 + half.
        a.suspect(30_000);
        assert!(a.is_probing());
        assert_eq!(drain(&mut a, 30_000), vec![Packet::Probe { epoch: A_EPOCH, peer_epoch: B_EPOCH, n: 1, echo: 0 }]);
        let down = 30_000 + cfg().down_after_us / 2;
        advance_silent(&mut a, down - 1);
        assert!(a.is_up());
        advance_silent(&mut a, down);
        assert_eq!(events(&mut a), vec![Event::Down]);
        // Long heard from before it: half a window after the suspicion. An answer in time
        // clears it.
        let (mut a, mut b2) = idle_pair();
        let t = 10 * cfg().down_after_us;
        a.suspect(t);
        let probe = drain(&mut a, t);
        feed(&mut b2, t + 20_000, probe);
        feed(&mut a, t + 20_000, drain(&mut b2, t + 20_000));
        assert!(!a.is_probing() && a.is_up());
        advance_silent(&mut a, t + 10 * cfg().down_after_us);
        assert!(events(&mut a).is_empty(), "an idle peer that answered is not held to anything");
        let (mut a, _) = idle_pair();
        a.suspect(t);
        advance_silent(&mut a, t + cfg().down_after_us / 2);
        assert_eq!(events(&mut a), vec![Event::Down]);
    }

    #[test]
    fn a_silent_watched_peer_is_suspected_at_half_the_window_then_down() {
        let (mut a, _b) = pair();
        advance_silent(&mut a, cfg().down_after_us / 2);
        assert_eq!(events(&mut a), vec![Event::Suspect]);
        advance_silent(&mut a, cfg().down_after_us);
        // Told again with the verdict, for the nodes whose probation ended meanwhile.
        assert_eq!(events(&mut a), vec![Event::Suspect, Event::Down]);
    }

    #[test]
    fn silence_counts_from_when_the_peer_is_watched_or_owes_an_ack() {
        let (mut a, _b) = idle_pair();
        let t = 10 * cfg().down_after_us;
        a.send(p(1)).unwrap();
        drain(&mut a, t);
        advance_silent(&mut a, t + cfg().down_after_us - 1);
        assert!(a.is_up(), "an idle pair's silence before the data went out is not held against the peer");
        advance_silent(&mut a, t + cfg().down_after_us);
        assert_eq!(events(&mut a), vec![Event::Down], "no suspicion for an unwatched peer");
    }

    #[test]
    fn the_watch_set_is_the_next_peers_up_in_the_ring() {
        let peers = [(0, true), (1, true), (2, false), (3, true), (5, true), (9, true)];
        assert_eq!(watch_set(3, peers, 2), vec![5, 9]);
        assert_eq!(watch_set(9, peers, 2), vec![0, 1]);
        assert_eq!(watch_set(1, peers, 2), vec![3, 5], "a peer that is down is skipped");
        assert_eq!(watch_set(1, peers, 10), vec![3, 5, 9, 0]);
        assert_eq!(watch_set(1, [(1, true)], 2), Vec::<NodeId>::new());
    }

    #[test]
    fn acks_are_delayed_and_coalesced() {
        let (mut a, mut b) = pair();
        a.send(p(1)).unwrap();
        feed(&mut b, 100, drain(&mut a, 100));
        assert!(drain(&mut b, 100).is_empty(), "no ack at once for one packet");
        let t = b.poll_timeout().unwrap();
        assert_eq!(t, 100 + cfg().ack_delay_us);
        b.handle_timeout(t);
        let ack = drain(&mut b, t);
        assert_eq!(ack, vec![Packet::Ack { epoch: B_EPOCH, peer_epoch: A_EPOCH, upto: 1, echo: 0 }]);
        feed(&mut a, t, ack);
        assert!(a.is_idle());
        // A burst gets one ack per quarter window, not one per packet.
        for i in 0..8 {
            a.send(p(i)).unwrap();
        }
        feed(&mut b, 2_000, drain(&mut a, 2_000));
        let acks = drain(&mut b, 2_000);
        assert_eq!(acks, vec![Packet::Ack { epoch: B_EPOCH, peer_epoch: A_EPOCH, upto: 9, echo: 0 }]);
    }

    #[test]
    fn window_bounds_packets_in_flight() {
        let (mut a, _b) = pair();
        for i in 0..20 {
            a.send(p(i)).unwrap();
        }
        let sent = drain(&mut a, 10);
        assert_eq!(sent.len(), cfg().max_in_flight);
        a.handle(20, Packet::Ack { epoch: B_EPOCH, peer_epoch: A_EPOCH, upto: 3, echo: 0 });
        assert_eq!(drain(&mut a, 20).len(), 3);
    }

    #[test]
    fn bounded_queue_is_full_then_drains() {
        let (mut a, mut b) = pair();
        let mut n = 0;
        let err = loop {
            match a.send(vec![0; 50]) {
                Ok(()) => n += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(n, 1_000 / (50 + PAYLOAD_OVERHEAD));
        assert_eq!(err, SendError::Full { queued_bytes: n * (50 + PAYLOAD_OVERHEAD) });
        assert_eq!(a.send(vec![0; 101]), Err(SendError::TooLarge));
        for t in 1..10 {
            exchange(&mut a, &mut b, t * 2_000);
            a.handle_timeout(t * 2_000);
            b.handle_timeout(t * 2_000);
        }
        assert!(a.is_idle());
        assert_eq!(a.stats().queued_bytes, 0);
        a.send(vec![0; 50]).unwrap();
    }

    #[test]
    fn hostile_packets_are_ignored() {
        let (mut a, _b) = pair();
        a.send(p(1)).unwrap();
        drain(&mut a, 0);
        // An ack for what was never sent, a hello from another node, an oversized payload.
        a.handle(1, Packet::Ack { epoch: B_EPOCH, peer_epoch: A_EPOCH, upto: u64::MAX, echo: 0 });
        assert_eq!(a.stats().queued, 1);
        a.handle(1, Packet::Hello { from: 9, epoch: B_EPOCH + 1, peer_epoch: None, next_expected: 0 });
        assert_eq!(a.peer_epoch(), Some(B_EPOCH));
        a.handle(1, Packet::Data { epoch: B_EPOCH, peer_epoch: A_EPOCH, seq: 0, echo: 0, payload: vec![0; 101] });
        a.handle(1, Packet::Data { epoch: B_EPOCH, peer_epoch: A_EPOCH, seq: u64::MAX, echo: 0, payload: vec![1] });
        assert!(delivered(&events(&mut a)).is_empty());
    }

    #[test]
    fn unknown_peer_gets_queued_data_after_first_contact() {
        let mut a = Session::new(0, 1, A_EPOCH, cfg(), 0);
        let mut b = Session::new(1, 0, B_EPOCH, cfg(), 0);
        a.send(p(1)).unwrap();
        a.connected(0);
        assert!(matches!(drain(&mut a, 0)[..], [Packet::Hello { peer_epoch: None, .. }]), "no data before the peer is known");
        b.connected(10);
        exchange(&mut a, &mut b, 10);
        assert_eq!(delivered(&events(&mut b)), vec![p(1)]);
    }

    fn packets() -> impl Strategy<Value = Packet> {
        let payload = proptest::collection::vec(any::<u8>(), 0..40);
        prop_oneof![
            (any::<u16>(), any::<u64>(), any::<Option<u64>>(), any::<u64>())
                .prop_map(|(from, epoch, peer_epoch, next_expected)| Packet::Hello { from, epoch, peer_epoch, next_expected }),
            (any::<u64>(), any::<u64>(), any::<u64>(), payload).prop_map(|(epoch, peer_epoch, seq, payload)| Packet::Data {
                epoch,
                peer_epoch,
                seq,
                echo: seq / 2,
                payload
            }),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(epoch, peer_epoch, upto)| Packet::Ack {
                epoch,
                peer_epoch,
                upto,
                echo: upto / 3
            }),
            (any::<u64>(), any::<u64>()).prop_map(|(epoch, peer_epoch)| Packet::Heartbeat { epoch, peer_epoch, echo: epoch ^ peer_epoch }),
            (any::<u64>(), any::<u64>()).prop_map(|(epoch, peer_epoch)| Packet::Probe {
                epoch,
                peer_epoch,
                n: epoch.wrapping_add(peer_epoch),
                echo: epoch / 2
            }),
        ]
    }

    /// Packets near a session's own numbers, so that they reach deep into it.
    fn plausible_packets() -> impl Strategy<Value = Packet> {
        let e = prop_oneof![Just(A_EPOCH), Just(B_EPOCH), 0..12u64];
        let n = 0..12u64;
        let payload = proptest::collection::vec(any::<u8>(), 0..120);
        prop_oneof![
            (0..3u16, e.clone(), proptest::option::of(e.clone()), n.clone())
                .prop_map(|(from, epoch, peer_epoch, next_expected)| Packet::Hello { from, epoch, peer_epoch, next_expected }),
            (e.clone(), e.clone(), n.clone(), payload).prop_map(|(epoch, peer_epoch, seq, payload)| Packet::Data {
                epoch,
                peer_epoch,
                seq,
                echo: seq / 2,
                payload
            }),
            (e.clone(), e.clone(), n).prop_map(|(epoch, peer_epoch, upto)| Packet::Ack { epoch, peer_epoch, upto, echo: upto }),
            (e.clone(), e.clone()).prop_map(|(epoch, peer_epoch)| Packet::Heartbeat { epoch, peer_epoch, echo: epoch }),
            (e.clone(), e).prop_map(|(epoch, peer_epoch)| Packet::Probe { epoch, peer_epoch, n: peer_epoch, echo: epoch }),
        ]
    }

    #[test]
    fn wire_rejects_bad_frames() {
        let pkt = Packet::Data { epoch: 1, peer_epoch: 2, seq: 3, echo: 4, payload: vec![7; 10] };
        let bytes = encode_packet(&pkt);
        assert_eq!(bytes[0], WIRE_VERSION);
        assert_eq!(decode_packet(&bytes, bytes.len()), Ok(pkt));
        assert_eq!(decode_packet(&bytes, bytes.len() - 1), Err(WireError::TooLarge { len: bytes.len(), max: bytes.len() - 1 }));
        assert_eq!(decode_packet(&[], 100), Err(WireError::Empty));
        let mut v2 = bytes.clone();
        v2[0] = 9;
        assert_eq!(decode_packet(&v2, 100), Err(WireError::Version(9)));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode_packet(&long, 100), Err(WireError::TrailingBytes(1)));
        // A length prefix claiming far more than the frame holds is an error, not an allocation.
        let huge = [WIRE_VERSION, 1, 1, 2, 3, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert_eq!(decode_packet(&huge, 100), Err(WireError::Malformed));
    }

    proptest! {
        #[test]
        fn wire_roundtrips(pkt in packets()) {
            let bytes = encode_packet(&pkt);
            prop_assert_eq!(decode_packet(&bytes, bytes.len()), Ok(pkt));
        }

        #[test]
        fn truncated_packets_are_errors(pkt in packets(), cut in any::<prop::sample::Index>()) {
            let bytes = encode_packet(&pkt);
            let n = cut.index(bytes.len());
            prop_assert!(decode_packet(&bytes[..n], 1 << 20).is_err());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), max in 0usize..300) {
            let _ = decode_packet(&bytes, max);
            let mut v = vec![WIRE_VERSION];
            v.extend_from_slice(&bytes);
            let _ = decode_packet(&v, max);
        }

        #[test]
        fn sessions_survive_any_packets(pkts in proptest::collection::vec((0u64..200_000, plausible_packets()), 0..60)) {
            let (mut a, _b) = pair();
            a.send(p(1)).unwrap();
            a.send(p(2)).unwrap();
            let mut now = 0;
            for (dt, pkt) in pkts {
                now += dt;
                a.handle_timeout(now);
                a.handle(now, pkt);
                drain(&mut a, now);
                let evs = events(&mut a);
                prop_assert!(delivered(&evs).iter().all(|p| p.len() <= cfg().max_payload_bytes));
                if let Some(t) = a.poll_timeout() {
                    prop_assert!(t > now || a.transport_up());
                }
            }
        }
    }
}
