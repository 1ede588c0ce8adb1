//! The connections to the other nodes: one tokio task per peer owns the connection
//! and drives the peer's session (the node with the lower id dials, the other accepts;
//! each side sends its session packets on one unidirectional stream, length-prefixed
//! and size-capped); the accept loop (peers, and operators with their own certificate);
//! (the load reports are the policy thread's: `policy.rs`).
//!
//! A live connection wins: while the current link to a peer is alive, a second
//! connection that claims to be the same node is refused (see [`peer_task`]).

use super::dispatch::{op_needs, receive_op, Inbound};
use super::Host;
use crate::config::{MeshConfig, NodeConf};
use crate::proto::hello::{self, Hello, HELLO_LEN};
use crate::proto::session::watch_set;
use crate::proto::session::{decode_packet, encode_packet, Event, Packet, Session, SessionConfig};
use crate::proto::wire::{self, Frame, Load};
use crate::tls;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};

/// Connections for a peer's task: dialled by this node, or accepted from one that
/// claims to be the peer.
pub(super) type Incoming = mpsc::UnboundedReceiver<(quinn::Connection, Made)>;

/// Another node of the mesh as this node sees it: the session with it, the current
/// connection, whether it is up, its last load report.
pub(super) struct Peer {
    pub(super) conf: NodeConf,
    pub(super) session: Mutex<Session>,
    pub(super) wake: Notify,
    pub(super) up: AtomicBool,
    /// Its last load report and when it came.
    pub(super) load: Mutex<(Load, Option<Instant>)>,
    /// Connections for the peer task: dialled by this node, or accepted from one that
    /// claims to be the peer.
    pub(super) incoming: mpsc::UnboundedSender<(quinn::Connection, Made)>,
    pub(super) has_conn: AtomicBool,
    /// Told when `has_conn` goes false: the dialling task waits on it (an idle node has
    /// no timer for a connected peer).
    pub(super) conn_lost: Notify,
    /// Drop the connection now (it is made again; the session resends what was lost).
    pub(super) kick: AtomicBool,
    /// The peer went down: drop the connection if it is still down `node_down_ms` later.
    pub(super) drop_dead: AtomicBool,
    /// The peer refused the last connection: it is connected to another process that
    /// claims to be this node (dial again only after a pause).
    pub(super) refused: AtomicBool,
    /// Held while taking events from the session and acting on them, so they are acted
    /// on in order whichever task takes them.
    pub(super) events: Mutex<()>,
    /// Frames from this peer given to the dispatcher and not yet carried out: while
    /// there are any, later ones must go there too (to stay in order).
    pub(super) backlog: std::sync::atomic::AtomicUsize,
    /// The current connection (migrations open their own streams on it).
    pub(super) conn: Mutex<Option<quinn::Connection>>,
    /// The load last sent to the peer (`None`: send it at the next report).
    pub(super) load_sent: Mutex<Option<Load>>,
}

impl Peer {
    /// There is no connection to the peer any more: its dialling task is told.
    fn lost_conn(&self) {
        self.has_conn.store(false, Ordering::SeqCst);
        self.conn_lost.notify_one();
    }
}

/// How many ring successors every node watches (`proto::session::watch_set`): each node
/// up is watched by the one before it. One is enough for a crash: the watcher suspects
/// its peer at half of `node_down_ms` and the suspicion gossiped puts every node on
/// watch. Two nodes adjacent in the ring that crash together are seen later (the second
/// once the first is down and the ring is watched anew: up to twice `node_down_ms`);
/// a second watcher would halve that and double the idle mesh's probes.
pub(super) const WATCHERS: usize = 1;

/// This node's QUIC endpoint (listening, and dialling with the node's certificate).
pub(super) fn endpoint(
    cfg: &MeshConfig,
    me: &NodeConf,
    rt: &tokio::runtime::Runtime,
    revoked: tls::Revoked,
) -> Result<(quinn::Endpoint, tls::ServerConfigs), String> {
    let servers = tls::ServerConfigs::new(cfg, &me.name, revoked)?;
    let client = tls::client_config(cfg, &me.name, tls::ALPN_MESH)?;
    let _g = rt.enter();
    let (mut ep, buffer) =
        tls::endpoint(me.addr, Some(servers.make(None)?)).map_err(|e| format!("node {}: cannot listen on {}: {e}", me.name, me.addr))?;
    tracing::debug!(node = %me.name, "UDP receive buffer: {buffer} bytes (asked for {})", tls::SOCKET_BUFFER_BYTES);
    ep.set_default_client_config(client);
    Ok((ep, servers))
}

/// A peer (with a new session: this incarnation's epoch) for every other node of the
/// config, and where each one's task gets its connections.
pub(super) fn peers(cfg: &MeshConfig, me: &NodeConf) -> (BTreeMap<u16, Arc<Peer>>, BTreeMap<u16, Incoming>) {
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64);
    let scfg = SessionConfig {
        heartbeat_us: cfg.limits.heartbeat_ms * 1000,
        down_after_us: cfg.limits.node_down_ms * 1000,
        idle_probe_us: cfg.idle_probe_ms() * 1000,
        max_payload_bytes: (cfg.limits.frame_bytes as usize).saturating_sub(4096).max(1 << 16),
        max_unacked_bytes: (cfg.limits.message_bytes as usize).saturating_mul(8).max(64 << 20),
        max_in_flight: 4096,
        ..SessionConfig::default()
    };
    let mut peers = BTreeMap::new();
    let mut incoming_rx = BTreeMap::new();
    for n in cfg.nodes.iter().filter(|n| n.id != me.id) {
        let (tx, rx) = mpsc::unbounded_channel();
        peers.insert(
            n.id,
            Arc::new(Peer {
                conf: n.clone(),
                session: Mutex::new(Session::new(me.id, n.id, epoch, scfg.clone(), 0)),
                wake: Notify::new(),
                up: AtomicBool::new(false),
                load: Mutex::new((Load::default(), None)),
                incoming: tx,
                has_conn: AtomicBool::new(false),
                conn_lost: Notify::new(),
                kick: AtomicBool::new(false),
                drop_dead: AtomicBool::new(false),
                refused: AtomicBool::new(false),
                events: Mutex::new(()),
                backlog: std::sync::atomic::AtomicUsize::new(0),
                conn: Mutex::new(None),
                load_sent: Mutex::new(None),
            }),
        );
        incoming_rx.insert(n.id, rx);
    }
    (peers, incoming_rx)
}

/// Starts the peer tasks (and the dialling ones, toward peers with a higher id), the
/// accept loop and the load reports.
pub(super) fn start_tasks(
    sh: &Arc<Host>,
    rt: &tokio::runtime::Runtime,
    (endpoint, servers): (quinn::Endpoint, tls::ServerConfigs),
    incoming: BTreeMap<u16, Incoming>,
) {
    for (id, rx) in incoming {
        let peer = sh.peers[&id].clone();
        rt.spawn(peer_task(sh.clone(), peer.clone(), rx));
        if sh.me.id < id {
            rt.spawn(dial_task(sh.clone(), peer));
        }
    }
    rt.spawn(accept_task(sh.clone(), endpoint, servers));
    rt.spawn(watch_revoked(sh.clone()));
    rt.spawn(keep_polling(sh.clone()));
}

/// How long the network thread keeps polling its sockets after the last frame went to
/// or came from a peer, instead of sleeping until the next packet wakes it. The answer
/// to a message comes within a round trip (~100 µs on loopback); a thread asleep in
/// `epoll_wait` then has to be woken for it, which costs a core about as long again
/// (on a virtual machine, more: its CPU may have been halted).
const KEEP_POLLING_US: u64 = 200;

/// When frames last went to or came from a peer, for [`keep_polling`].
#[derive(Default)]
pub(super) struct Traffic {
    last_us: AtomicU64,
    /// Whether `keep_polling` is polling now (else it waits for `wake`).
    polling: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Traffic {
    /// A frame went or came at `now_us`: the network thread keeps polling a while.
    pub(super) fn note(&self, now_us: u64) {
        self.last_us.store(now_us, Ordering::Relaxed);
        if !self.polling.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }
}

/// Keeps the network thread busy for [`KEEP_POLLING_US`] after each frame: it yields
/// to the runtime over and over, and the runtime polls its sockets without waiting
/// (`epoll_wait` with no timeout) before it comes back, so that a packet that comes
/// meanwhile is read at once, and a worker's frame to send finds the thread awake
/// (no wake-up through the runtime's event fd). A mesh with no traffic costs nothing.
async fn keep_polling(sh: Arc<Host>) {
    let t = &sh.traffic;
    while !sh.shutdown.load(Ordering::Relaxed) {
        t.polling.store(false, Ordering::SeqCst);
        if sh.now_us().saturating_sub(t.last_us.load(Ordering::Relaxed)) >= KEEP_POLLING_US {
            // (A frame noted since the look above left a permit: no wait.)
            t.wake.notified().await;
        }
        t.polling.store(true, Ordering::SeqCst);
        let mut last = sh.now_us();
        while last.saturating_sub(t.last_us.load(Ordering::Relaxed)) < KEEP_POLLING_US {
            if sh.shutdown.load(Ordering::Relaxed) {
                return;
            }
            // (The core goes to any other thread that is ready to run: a VM worker with a
            // process the frame woke must not wait for this.)
            std::thread::yield_now();
            tokio::task::yield_now().await;
            let now = sh.now_us();
            if now.saturating_sub(last) > POLL_STALE_US {
                // The OS gave the core to another thread for a while: the machine is busy,
                // and a thread that looks busy to the runtime is not woken for what comes
                // (it would wait for its next time slice). Sleep in `epoll_wait` instead,
                // and keep doing so for a while.
                t.polling.store(false, Ordering::SeqCst);
                tokio::time::sleep(NO_POLLING_FOR).await;
                break;
            }
            last = now;
        }
    }
}

/// A turn of [`keep_polling`] that took longer than this (µs) was descheduled: the OS
/// gave the core to another thread for a time slice (our own threads each yield after
/// a short turn).
const POLL_STALE_US: u64 = 500;

/// How long [`keep_polling`] stops after it found itself descheduled.
const NO_POLLING_FOR: Duration = Duration::from_millis(100);

/// How often a node looks whether its config file changed (for `[security] revoked`).
const CONFIG_RECHECK: Duration = Duration::from_secs(1);

/// Reads the config file again whenever it changes and takes its `[security] revoked`
/// (nothing else: the rest needs a restart). A newly revoked name's connections are
/// closed (a node's link, an operator's connections) and refused from then on; a name
/// taken off the list is let in again. A file that does not load keeps the list as it
/// was, and says why.
async fn watch_revoked(sh: Arc<Host>) {
    let path = sh.cfg.file.clone();
    // The file's contents last taken, and last refused (not said twice). Compared by
    // contents: a write within the file system's timestamp granularity is still seen.
    let (mut seen, mut bad): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
    while !sh.shutdown.load(Ordering::SeqCst) {
        tokio::time::sleep(CONFIG_RECHECK).await;
        let now = std::fs::read(&path).ok();
        if now == seen || now == bad {
            continue;
        }
        let cfg = match MeshConfig::load(&path) {
            Ok(c) => c,
            Err(e) => {
                sh.log(&format!("the config changed but does not load, so the revoked certificates stay as they were: {e}"));
                bad = now;
                continue;
            }
        };
        seen = now;
        if *sh.revoked.read() == cfg.revoked {
            continue;
        }
        *sh.revoked.write() = cfg.revoked.clone();
        let list = if cfg.revoked.is_empty() { "none".to_string() } else { cfg.revoked.join(", ") };
        sh.log(&format!("revoked certificates now: {list}"));
        let revoked = |name: &str| cfg.revoked.iter().any(|r| r == name);
        for peer in sh.peers.values() {
            if revoked(&peer.conf.name) {
                // Its task drops the link (one made meanwhile too: it looks at the list).
                peer.wake.notify_one();
            }
        }
        for (name, conn) in sh.operator_conns.lock().values() {
            if revoked(name) {
                sh.log(&format!("closing {name}'s operator connection: its certificate is revoked"));
                conn.close(REVOKED.into(), b"certificate revoked");
            }
        }
    }
}

/// The close code of a connection whose certificate was revoked.
const REVOKED: u32 = 4;

impl Host {
    /// Whether certificate `name` is revoked now.
    pub(crate) fn is_revoked(&self, name: &str) -> bool {
        self.revoked.read().iter().any(|r| r == name)
    }

    /// Notes an operator connection (until [`Host::operator_left`]), to close it if its
    /// certificate is revoked.
    pub(crate) fn operator_came(&self, name: &str, conn: &quinn::Connection) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.operator_conns.lock().insert(id, (name.to_string(), conn.clone()));
        id
    }

    pub(crate) fn operator_left(&self, id: u64) {
        self.operator_conns.lock().remove(&id);
    }
}

/// The close code of a connection refused because the peer is connected already.
const REFUSED: u32 = 3;

/// The close code of a connection refused because its peer is of an incompatible
/// version (the reason names both versions).
const INCOMPATIBLE: u32 = 5;
/// How a reader says it refused the peer's hello, before the reason.
const INCOMPATIBLE_TEXT: &str = "incompatible versions: ";

/// Why the peer closed `conn` for versions this node cannot talk with: its reason.
fn incompatible_by_peer(conn: &quinn::Connection) -> Option<String> {
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c)) if c.error_code == quinn::VarInt::from_u32(INCOMPATIBLE) => {
            Some(String::from_utf8_lossy(&c.reason).into_owned())
        }
        _ => None,
    }
}

/// The close code of a node's connections when it stops gracefully. The reason is
/// `leaving <epoch>`: the incarnation that leaves, as the peer's session knows it.
const LEAVING: u32 = 6;

/// The incarnation that left, if the peer closed `conn` because its node stops
/// ([`Host::leave`]).
fn left_by_peer(conn: &quinn::Connection) -> Option<u64> {
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c)) if c.error_code == quinn::VarInt::from_u32(LEAVING) => {
            std::str::from_utf8(&c.reason).ok()?.strip_prefix("leaving ")?.parse().ok()
        }
        _ => None,
    }
}

/// If the peer closed `conn` because its node stops, its session is told (the peer is
/// down at once): whether it was. To be called before this node closes `conn` itself,
/// which replaces the reason.
fn heed_leave(sh: &Host, peer: &Peer, conn: &quinn::Connection) -> bool {
    let Some(epoch) = left_by_peer(conn) else { return false };
    sh.log(&format!("node {} left (it is stopping)", peer.conf.name));
    peer.session.lock().peer_left(sh.now_us(), epoch);
    true
}

impl Host {
    /// Tells every peer connected that this incarnation leaves: each connection is
    /// closed with [`LEAVING`], naming the epoch its session has, so that the peer sees
    /// this node down at once instead of after `node_down_ms` of silence (a peer that
    /// stops at the same time waits for nothing from here). Then the node is shutting
    /// down: it reads nothing more from its peers and dials none.
    pub(super) fn leave(&self) {
        for p in self.peers.values() {
            let Some(conn) = p.conn.lock().clone() else { continue };
            let epoch = p.session.lock().epoch();
            conn.close(LEAVING.into(), format!("leaving {epoch}").as_bytes());
        }
        self.shutdown.store(true, Ordering::SeqCst);
    }
}

/// How long a node waits before dialling again a peer that refused its connection.
const REFUSED_PAUSE: Duration = Duration::from_secs(1);

/// The peer refused this node's certificate in the TLS handshake of `conn`: why, in words.
fn refused_in_handshake(peer: &Peer, conn: &quinn::Connection) -> Option<String> {
    let reason = conn.close_reason()?;
    tls::handshake_refusal(&reason, &format!("node {} at {}", peer.conf.name, peer.conf.addr), "this node's certificate")
}

/// Whether the peer closed `conn` as a second connection claiming to be this node.
fn refused_by_peer(conn: &quinn::Connection) -> bool {
    matches!(conn.close_reason(), Some(quinn::ConnectionError::ApplicationClosed(c)) if c.error_code == quinn::VarInt::from_u32(REFUSED))
}

/// How long one dial waits for a handshake: `node_down_ms`, kept within 1 to 5 s. A peer
/// that does not answer in the time it would take to call it down is dialled afresh: a
/// peer that starts listening just after a dial (as the nodes of `tern mesh up` do, one
/// after the other) is then found within about a second, where a single dial would wait
/// for QUIC's own retransmissions (about 1, 3, 7 s after the first packet). Each dial
/// that times out doubles the next one's wait, up to 5 s, so a handshake slowed by a
/// loaded machine is not cut short again and again; a connection resets it.
fn dial_timeout(node_down_ms: u64) -> Duration {
    Duration::from_millis(node_down_ms.clamp(1_000, 5_000))
}

/// Dials a peer (this node has the lower id) whenever there is no connection: while
/// there is one, the task sleeps until it is lost ([`Peer::conn_lost`]; a check every
/// [`DIAL_RECHECK`] besides, in case a connection was lost without a word).
async fn dial_task(sh: Arc<Host>, peer: Arc<Peer>) {
    let mut backoff = Duration::from_millis(50);
    // Handshakes refused (by either side), logged once per interval with a count.
    let mut refusals = Refusals::default();
    let first = dial_timeout(sh.cfg.limits.node_down_ms);
    let mut timeout = first;
    while !sh.shutdown.load(Ordering::SeqCst) {
        if peer.refused.swap(false, Ordering::SeqCst) {
            tokio::time::sleep(REFUSED_PAUSE).await;
        }
        if sh.is_revoked(&peer.conf.name) {
            // Not dialled while its certificate is revoked (nor let in).
            tokio::time::sleep(CONFIG_RECHECK).await;
            continue;
        }
        if peer.has_conn.load(Ordering::SeqCst) {
            backoff = Duration::from_millis(50);
            tokio::select! {
                // A moment for the peer to see the old connection go: dialled at once,
                // it refuses the new one as a second connection claiming to be this
                // node, and the pause after a refusal makes a flap of a lost link.
                _ = peer.conn_lost.notified() => tokio::time::sleep(LOST_PAUSE).await,
                _ = tokio::time::sleep(DIAL_RECHECK) => {}
            }
            continue;
        }
        let Some(ep) = sh.endpoint.get() else { return };
        match ep.connect(peer.conf.addr, &peer.conf.name) {
            Ok(connecting) => match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok(conn)) => {
                    timeout = first;
                    peer.has_conn.store(true, Ordering::SeqCst);
                    let _ = peer.incoming.send((conn, Made::Dialled));
                    continue;
                }
                Ok(Err(e)) => {
                    match tls::handshake_refusal(&e, &format!("node {} at {}", peer.conf.name, peer.conf.addr), "this node's certificate") {
                        Some(why) => {
                            sh.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                            if let Some(so_far) = refusals.note() {
                                tracing::warn!(node = %sh.me.name, peer = %peer.conf.name, "{why}{so_far}");
                                sh.log(&format!("{why}{so_far}"));
                            }
                        }
                        None => tracing::debug!(node = %sh.me.name, peer = %peer.conf.name, "cannot connect: {e}"),
                    }
                }
                Err(_) => {
                    tracing::debug!(node = %sh.me.name, peer = %peer.conf.name, "connect timed out after {timeout:?}");
                    timeout = (timeout * 2).min(first.max(Duration::from_secs(5)));
                }
            },
            Err(e) => sh.log(&format!("cannot connect to node {} at {}: {e}", peer.conf.name, peer.conf.addr)),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

/// How often a dialling task looks at a peer it is connected to, besides being told
/// when the connection is lost.
const DIAL_RECHECK: Duration = Duration::from_secs(5);

/// How long a dialling task waits after its connection was lost before dialling again.
const LOST_PAUSE: Duration = Duration::from_millis(100);

/// Accepts connections: peers' (handed to their peer task) and operators'. Each
/// handshake gets a server config of its own, whose verifier says why it refused the
/// peer; refusals are logged once per address per [`REFUSAL_LOG_EVERY`] with a count.
async fn accept_task(sh: Arc<Host>, ep: quinn::Endpoint, servers: tls::ServerConfigs) {
    let log = Arc::new(Mutex::new(RefusalLog::default()));
    while let Some(incoming) = ep.accept().await {
        let sh = sh.clone();
        let log = log.clone();
        let from = incoming.remote_address();
        let slot = tls::RefusalSlot::default();
        let connecting = match servers.make(Some(slot.clone())) {
            Ok(sc) => incoming.accept_with(Arc::new(sc)),
            Err(e) => {
                tracing::warn!(node = %sh.me.name, "cannot make a server config: {e}");
                incoming.refuse();
                continue;
            }
        };
        tokio::spawn(async move {
            // Logs a line about a refused connection from `from`, if one is due.
            let say = move |sh: &Host, line: String| {
                sh.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                if let Some(line) = log.lock().note(from.ip(), line, Instant::now()) {
                    tracing::warn!(node = %sh.me.name, "{line}");
                    sh.log(&line);
                }
            };
            let refuse = |sh: &Host, why: &str| say(sh, format!("refused a connection from {from}: {why}"));
            let conn = match connecting {
                Ok(connecting) => connecting.await,
                Err(e) => Err(e),
            };
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    let text = e.to_string();
                    match slot.lock().take() {
                        // This node's verifier refused the peer's certificate.
                        Some(why) => refuse(&sh, &why),
                        None => match tls::handshake_refusal(&e, &format!("the peer at {from}"), "this node's certificate") {
                            // The peer refused this node's certificate.
                            Some(line) if matches!(e, quinn::ConnectionError::ConnectionClosed(_)) => say(&sh, line),
                            _ if text.contains("peer sent no certificates") => refuse(&sh, "it presented no certificate"),
                            _ if text.contains("doesn't support any known protocol") => {
                                refuse(&sh, "it offered none of this node's protocols (another Tern version?)")
                            }
                            // Not a refusal: the peer gave up the handshake (it timed
                            // out, or it is shutting down), or the network failed.
                            _ => tracing::debug!(node = %sh.me.name, "a handshake from {from} did not complete: {text}"),
                        },
                    }
                    return;
                }
            };
            match tls::identify_peer(&sh.cfg, &conn) {
                // Revoked while its handshake was on the way.
                Ok(tls::Peer::Ctl { name, .. } | tls::Peer::Node { name, .. }) if sh.is_revoked(&name) => {
                    refuse(&sh, &format!("certificate {name:?}: it is revoked"));
                    conn.close(REVOKED.into(), b"certificate revoked");
                }
                Ok(tls::Peer::Node { id, name }) => match sh.peers.get(&id) {
                    Some(peer) if id != sh.me.id => {
                        peer.has_conn.store(true, Ordering::SeqCst);
                        let _ = peer.incoming.send((conn, Made::Accepted));
                    }
                    _ => {
                        refuse(&sh, &format!("certificate {name:?}: that is this node's own name"));
                        conn.close(1u32.into(), b"not a peer");
                    }
                },
                Ok(tls::Peer::Ctl { name, role }) => match sh.operators.clone() {
                    Some(serve) => {
                        let id = sh.operator_came(&name, &conn);
                        // Revoked between the check above and now: `watch_revoked` did
                        // not see it yet.
                        if sh.is_revoked(&name) {
                            conn.close(REVOKED.into(), b"certificate revoked");
                        }
                        serve(sh.clone(), conn, name, role).await;
                        sh.operator_left(id);
                    }
                    None => {
                        refuse(&sh, &format!("certificate {name:?}: this node serves no operators"));
                        conn.close(1u32.into(), b"no operators");
                    }
                },
                Err(why) => {
                    refuse(&sh, &why);
                    conn.close(1u32.into(), b"refused");
                }
            }
        });
    }
}

/// Watches this node's next [`WATCHERS`] peers up in the ring, and no other (called
/// whenever a peer goes up or down).
fn rewatch(sh: &Host) {
    let set = watch_set(sh.me.id, sh.peers.iter().map(|(&id, p)| (id, p.up.load(Ordering::SeqCst))), WATCHERS);
    let now = sh.now_us();
    for (id, p) in &sh.peers {
        let w = set.contains(id);
        let mut s = p.session.lock();
        if s.is_watched() != w {
            s.set_watched(now, w);
            drop(s);
            p.wake.notify_one();
        }
    }
}

/// Reads length-prefixed packets from a peer's stream and feeds them to its session
/// (acting on what that delivers at once); errors go to the peer task.
async fn read_packets(
    sh: Arc<Host>,
    peer: Arc<Peer>,
    conn: &quinn::Connection,
    mut recv: quinn::RecvStream,
    max: usize,
    gen: u64,
    tx: mpsc::UnboundedSender<(u64, Result<Packet, String>)>,
) {
    // The peer's hello first: a node of an incompatible version is refused, both told
    // both versions.
    let mut hello = [0u8; HELLO_LEN];
    if let Err(e) = recv.read_exact(&mut hello).await {
        let _ = tx.send((gen, Err(format!("stream ended: {e}"))));
        return;
    }
    let ours = Hello::ours();
    match Hello::decode(&hello) {
        Ok(theirs) if ours.compatible(&theirs) => {}
        Ok(theirs) => {
            let why = hello::incompatible(&sh.me.name, &ours, &peer.conf.name, &theirs);
            // This connection's (not `peer.conn`, which may still be the one before).
            conn.close(INCOMPATIBLE.into(), why.as_bytes());
            let _ = tx.send((gen, Err(format!("{INCOMPATIBLE_TEXT}{why}"))));
            return;
        }
        Err(why) => {
            let _ = tx.send((gen, Err(why)));
            return;
        }
    }
    loop {
        let mut len = [0u8; 4];
        if let Err(e) = recv.read_exact(&mut len).await {
            let _ = tx.send((gen, Err(format!("stream ended: {e}"))));
            return;
        }
        let n = u32::from_le_bytes(len) as usize;
        if n > max {
            let _ = tx.send((gen, Err(format!("frame of {n} bytes is over the limit of {max}"))));
            return;
        }
        let mut buf = vec![0u8; n];
        if let Err(e) = recv.read_exact(&mut buf).await {
            let _ = tx.send((gen, Err(format!("truncated frame: {e}"))));
            return;
        }
        match decode_packet(&buf, max) {
            Ok(p) => {
                if sh.shutdown.load(Ordering::SeqCst) {
                    return;
                }
                let now = sh.now_us();
                peer.session.lock().handle(now, p);
                sh.traffic.note(now);
                act_on_events(&sh, &peer);
                // Acks and whatever else the session has to send.
                peer.wake.notify_one();
            }
            Err(e) => {
                let _ = tx.send((gen, Err(format!("bad frame: {e}"))));
                return;
            }
        }
    }
}

struct Link {
    conn: quinn::Connection,
    send: quinn::SendStream,
    gen: u64,
}

/// How a connection to a peer came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Made {
    /// This node dialled it (it dials only when it has no connection).
    Dialled,
    /// The other side dialled and showed the peer's certificate.
    Accepted,
}

/// How often refusals from one address are logged (the ones between are counted).
pub(super) const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Addresses whose refusals [`RefusalLog`] keeps count of; past it, the one logged
/// longest ago is forgotten (its next refusal is logged at once: a line more, never a
/// refusal unsaid).
const REFUSAL_ADDRESSES: usize = 1024;

/// The accepting side's refusals, by the peer's IP address (a dialler's port changes
/// from one attempt to the next): the first is logged, then at most one line per
/// [`REFUSAL_LOG_EVERY`] with the number refused since.
#[derive(Default)]
pub(super) struct RefusalLog {
    by_addr: HashMap<std::net::IpAddr, (Instant, u64)>,
}

impl RefusalLog {
    /// Counts a refused connection from `from`, of which `line` says who and why; the
    /// line to log, if one is due.
    pub(super) fn note(&mut self, from: std::net::IpAddr, line: String, now: Instant) -> Option<String> {
        if let Some((logged, unsaid)) = self.by_addr.get_mut(&from) {
            if now.duration_since(*logged) < REFUSAL_LOG_EVERY {
                *unsaid += 1;
                return None;
            }
            let more = std::mem::take(unsaid);
            let since = now.duration_since(*logged).as_secs();
            *logged = now;
            return Some(if more > 0 { format!("{line} ({more} more from {from} in the {since} s before this)") } else { line });
        }
        if self.by_addr.len() >= REFUSAL_ADDRESSES {
            if let Some(oldest) = self.by_addr.iter().min_by_key(|(_, (t, _))| *t).map(|(a, _)| *a) {
                self.by_addr.remove(&oldest);
            }
        }
        self.by_addr.insert(from, (now, 0));
        Some(line)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_addr.len()
    }
}

/// Connections refused (by this node or by the peer), logged at most every 10 s.
#[derive(Default)]
struct Refusals {
    count: u64,
    logged: Option<Instant>,
}

impl Refusals {
    /// Counts one; `Some(" (N so far)")` (empty the first time) if it is to be logged.
    fn note(&mut self) -> Option<String> {
        self.count += 1;
        if self.logged.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return None;
        }
        self.logged = Some(Instant::now());
        Some(if self.count > 1 { format!(" ({} so far)", self.count) } else { String::new() })
    }
}

fn refused_text(sh: &Host, peer: &Peer, so_far: &str) -> String {
    format!(
        "node {} refused this node's connection{so_far}: another node {} is connected to it (this node's previous run, until it is seen gone, or another process with this node's identity); trying again",
        peer.conf.name, sh.me.name
    )
}

/// Whether the current link to a peer is alive: open, and the peer heard from within
/// the failure-detection timeout (timers brought up to date first).
fn link_alive(sh: &Host, peer: &Peer, link: &Option<Link>) -> bool {
    if link.as_ref().is_none_or(|l| l.conn.close_reason().is_some()) {
        return false;
    }
    let mut s = peer.session.lock();
    s.handle_timeout(sh.now_us());
    s.is_up()
}

/// Owns the connection to one peer and drives its session.
///
/// A live connection wins: while the current link is alive, a second connection that
/// claims to be the same node is refused. Only one process can be the node; another one
/// with its certificate (a stolen key, a copied config) would otherwise displace it, be
/// taken for a restart, and part the real one from this node.
async fn peer_task(sh: Arc<Host>, peer: Arc<Peer>, mut incoming: mpsc::UnboundedReceiver<(quinn::Connection, Made)>) {
    let max = sh.cfg.limits.frame_bytes as usize;
    let (pkt_tx, mut pkt_rx) = mpsc::unbounded_channel::<(u64, Result<Packet, String>)>();
    let mut link: Option<Link> = None;
    let mut gen = 0u64;
    let mut out = Vec::new();
    // Connections refused by this node, and by the peer.
    let mut refusing = Refusals::default();
    let mut refused = Refusals::default();
    // This node's connections the peer refused in the TLS handshake (with TLS 1.3 the
    // dialler's side of a handshake is done before the peer checks its certificate).
    let mut in_handshake = Refusals::default();
    // Connections refused for incompatible versions (by either side).
    let mut versions = Refusals::default();
    // Since when the peer is down with the connection still open, and the datagrams
    // the connection had received then.
    let mut down_since: Option<(Instant, u64)> = None;
    let linger = Duration::from_millis(sh.cfg.limits.node_down_ms);
    loop {
        if sh.shutdown.load(Ordering::SeqCst) {
            if let Some(l) = link.take() {
                l.conn.close(0u32.into(), b"shutting down");
            }
            return;
        }
        if link.is_some() && sh.is_revoked(&peer.conf.name) {
            sh.log(&format!("closing the connection with node {}: its certificate is revoked", peer.conf.name));
            if let Some(l) = link.as_ref() {
                l.conn.close(REVOKED.into(), b"certificate revoked");
            }
            drop_link(&sh, &peer, &mut link);
        }
        if peer.kick.swap(false, Ordering::SeqCst) && link.is_some() {
            sh.log(&format!("dropping the connection with node {} (asked to)", peer.conf.name));
            drop_link(&sh, &peer, &mut link);
        }
        if peer.drop_dead.swap(false, Ordering::SeqCst) {
            if let Some(l) = link.as_ref() {
                down_since = Some((Instant::now(), l.conn.stats().udp_rx.datagrams));
            }
        }
        if peer.up.load(Ordering::SeqCst) || link.is_none() {
            down_since = None;
        }
        if let Some((_, rx)) = down_since.filter(|(t, _)| t.elapsed() >= linger) {
            // Down, and not a datagram on the connection for another `node_down_ms`
            // (not even QUIC's acknowledgements of the probes): the connection is dropped
            // and made again (a restarted peer is found that way, and QUIC stops resending
            // to a dead one). A peer that is only slow (an overloaded machine) keeps its
            // connection, and no handshakes are added to the load.
            let now_rx = link.as_ref().map_or(rx, |l| l.conn.stats().udp_rx.datagrams);
            if now_rx == rx {
                down_since = None;
                sh.log(&format!(
                    "dropping the connection with node {}: down, and not a datagram from it for {} ms",
                    peer.conf.name, sh.cfg.limits.node_down_ms
                ));
                drop_link(&sh, &peer, &mut link);
            } else {
                down_since = Some((Instant::now(), now_rx));
            }
        }
        // Packets to send, and what the session has to say.
        let now = sh.now_us();
        let timeout = {
            let mut s = peer.session.lock();
            out.clear();
            while let Some(p) = s.poll_transmit(now) {
                let b = encode_packet(&p);
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(&b);
            }
            s.poll_timeout()
        };
        if !out.is_empty() {
            if let Some(l) = link.as_mut() {
                if let Err(e) = l.send.write_all(&out).await {
                    sh.log(&format!("connection to node {} lost: {e}", peer.conf.name));
                    drop_link(&sh, &peer, &mut link);
                }
            }
        }
        act_on_events(&sh, &peer);
        // No timer: an idle pair. Anything that changes that wakes the task.
        let mut sleep = match timeout {
            Some(t) => Duration::from_micros(t.saturating_sub(sh.now_us())),
            None => Duration::from_secs(3600),
        };
        if let Some((t, _)) = down_since {
            sleep = sleep.min(linger.saturating_sub(t.elapsed()));
        }
        tokio::select! {
            _ = peer.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {
                peer.session.lock().handle_timeout(sh.now_us());
            }
            Some((conn, made)) = incoming.recv() => {
                if made == Made::Accepted && link_alive(&sh, &peer, &link) {
                    sh.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                    // Perhaps the peer restarted and this link is dead but idle: probe
                    // it, so that a restarted peer is let in within `node_down_ms`.
                    peer.session.lock().suspect(sh.now_us());
                    conn.close(REFUSED.into(), b"already connected");
                    if let Some(so_far) = refusing.note() {
                        let n = &peer.conf.name;
                        sh.log(&format!(
                            "refused a second connection claiming to be node {n} while {n} is connected{so_far} (a restarted {n} is let in once this connection goes quiet)"
                        ));
                    }
                    continue;
                }
                if let Some(old) = link.take() {
                    old.conn.close(0u32.into(), b"replaced");
                    peer.session.lock().disconnected(sh.now_us());
                }
                gen += 1;
                let opened = match conn.open_uni().await {
                    // The hello first: this node's versions and features.
                    Ok(mut send) => send.write_all(&Hello::ours().encode()).await.map(|()| send).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match opened {
                    Ok(send) => {
                        let c2 = conn.clone();
                        let tx = pkt_tx.clone();
                        let g = gen;
                        let (sh2, peer2) = (sh.clone(), peer.clone());
                        tokio::spawn(async move {
                            match c2.accept_uni().await {
                                Ok(recv) => read_packets(sh2, peer2, &c2, recv, max, g, tx).await,
                                Err(e) => { let _ = tx.send((g, Err(format!("connection closed: {e}")))); }
                            }
                        });
                        peer.has_conn.store(true, Ordering::SeqCst);
                        sh.stats.connections_made.fetch_add(1, Ordering::Relaxed);
                        *peer.conn.lock() = Some(conn.clone());
                        tokio::spawn(super::migration::accept_streams(Arc::downgrade(&sh), peer.conf.id, conn.clone()));
                        link = Some(Link { conn, send, gen });
                        peer.session.lock().connected(sh.now_us());
                    }
                    Err(e) => {
                        if let Some(words) = refused_in_handshake(&peer, &conn) {
                            sh.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                            peer.refused.store(true, Ordering::SeqCst);
                            if let Some(so_far) = in_handshake.note() {
                                sh.log(&format!("{words}{so_far}"));
                            }
                        } else if refused_by_peer(&conn) {
                            peer.refused.store(true, Ordering::SeqCst);
                            if let Some(so_far) = refused.note() {
                                sh.log(&refused_text(&sh, &peer, &so_far));
                            }
                        } else {
                            sh.log(&format!("connection to node {} failed: {e}", peer.conf.name));
                        }
                        peer.lost_conn();
                    }
                }
            }
            Some((g, r)) = pkt_rx.recv() => {
                if link.as_ref().is_some_and(|l| l.gen == g) {
                    match r {
                        Ok(p) => peer.session.lock().handle(sh.now_us(), p),
                        Err(e) => {
                            // Before this node closes the connection too (which would
                            // replace the peer's reason).
                            let left = link.as_ref().is_some_and(|l| heed_leave(&sh, &peer, &l.conn));
                            if !e.starts_with("stream ended") && !e.starts_with("connection closed") && !e.starts_with(INCOMPATIBLE_TEXT) {
                                sh.stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(node = %sh.me.name, peer = %peer.conf.name, "closing the connection: {e}");
                            }
                            let theirs = link.as_ref().and_then(|l| incompatible_by_peer(&l.conn));
                            if let Some(why) = e.strip_prefix(INCOMPATIBLE_TEXT).map(str::to_string).or(theirs) {
                                // This node or the peer refused the other's versions.
                                sh.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                                peer.refused.store(true, Ordering::SeqCst);
                                if let Some(so_far) = versions.note() {
                                    sh.log(&format!("refused the connection with node {}{so_far}: {why}", peer.conf.name));
                                }
                            } else if let Some(words) = link.as_ref().and_then(|l| refused_in_handshake(&peer, &l.conn)) {
                                sh.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                                peer.refused.store(true, Ordering::SeqCst);
                                if let Some(so_far) = in_handshake.note() {
                                    sh.log(&format!("{words}{so_far}"));
                                }
                            } else if link.as_ref().is_some_and(|l| refused_by_peer(&l.conn)) {
                                peer.refused.store(true, Ordering::SeqCst);
                                if let Some(so_far) = refused.note() {
                                    sh.log(&refused_text(&sh, &peer, &so_far));
                                }
                            } else if !left && !sh.is_shutting_down() {
                                sh.log(&format!("closing the connection with node {}: {e}", peer.conf.name));
                            }
                            if let Some(l) = link.as_ref() {
                                l.conn.close(2u32.into(), b"bad frame");
                            }
                            drop_link(&sh, &peer, &mut link);
                        }
                    }
                }
            }
        }
    }
}

fn drop_link(sh: &Host, peer: &Peer, link: &mut Option<Link>) {
    if let Some(l) = link.take() {
        heed_leave(sh, peer, &l.conn);
        l.conn.close(0u32.into(), b"");
    }
    *peer.conn.lock() = None;
    peer.lost_conn();
    peer.session.lock().disconnected(sh.now_us());
}

/// Takes what the session has to say and acts on it, in order.
pub(super) fn act_on_events(sh: &Arc<Host>, peer: &Arc<Peer>) {
    let _events = peer.events.lock();
    loop {
        let Some(e) = peer.session.lock().poll_event() else { break };
        if let Event::PeerRestarted { old_epoch, new_epoch } = e {
            if new_epoch < old_epoch {
                let n = &peer.conf.name;
                sh.log(&format!("node {n}: an earlier incarnation is heard again after the one that replaced it went down"));
            }
        }
        handle_event(sh, peer, e);
    }
}

/// Acts on one event of peer `peer`'s session: a delivered frame (carried out here or
/// handed to the dispatcher, in order), the peer up, down or restarted.
fn handle_event(sh: &Arc<Host>, peer: &Arc<Peer>, e: Event) {
    match e {
        Event::Deliver(bytes) => match wire::decode::<Frame>(&bytes, sh.cfg.limits.frame_bytes as usize) {
            // An op that needs no module fetched, with nothing before it still waiting at
            // the dispatcher, is carried out here and now (a thread hand-off less).
            Ok(Frame::Vm(op)) if peer.backlog.load(Ordering::SeqCst) == 0 && op_needs(&op).iter().all(|h| sh.node().vm().has_module(h)) => {
                sh.stats.ops_received.fetch_add(1, Ordering::Relaxed);
                receive_op(sh, peer.conf.id, op);
            }
            // Who to probe: no order to keep.
            Ok(Frame::Suspect(id)) => sh.suspect(id),
            // Migration control stays in order with the ops before it.
            Ok(Frame::Mig(w)) if peer.backlog.load(Ordering::SeqCst) == 0 => super::migration::session_frame(sh, peer.conf.id, w),
            Ok(f) => {
                peer.backlog.fetch_add(1, Ordering::SeqCst);
                let _ = sh.to_dispatch.send(Inbound::Frame(peer.conf.id, Box::new(f)));
            }
            Err(err) => {
                sh.stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
                sh.log(&format!("dropped a bad frame from node {}: {err}", peer.conf.name));
            }
        },
        Event::Up => {
            peer.up.store(true, Ordering::SeqCst);
            *peer.load_sent.lock() = None;
            rewatch(sh);
            sh.mig.peer_up(peer.conf.id);
            sh.log(&format!("node {} is up", peer.conf.name));
        }
        Event::Suspect => {
            // Tell every other node up: they probe it, so that all see it down in time.
            for (&id, p) in &sh.peers {
                if id != peer.conf.id && p.up.load(Ordering::SeqCst) {
                    let _ = sh.send_frame(id, &Frame::Suspect(peer.conf.id));
                }
            }
        }
        Event::Down => {
            peer.up.store(false, Ordering::SeqCst);
            rewatch(sh);
            peer.drop_dead.store(true, Ordering::SeqCst);
            peer.wake.notify_one();
            sh.log(&format!("node {} is down", peer.conf.name));
            sh.mig.peer_gone(peer.conf.id, false);
            let _ = sh.to_dispatch.send(Inbound::PeerGone(peer.conf.id));
        }
        Event::PeerRestarted { .. } => {
            sh.log(&format!("node {} restarted", peer.conf.name));
            sh.mig.peer_gone(peer.conf.id, true);
            let _ = sh.to_dispatch.send(Inbound::PeerRestarted(peer.conf.id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_once_per_address_per_interval_with_a_count() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        let a: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "::1".parse().unwrap();
        assert_eq!(log.note(a, "refused a".into(), t0).as_deref(), Some("refused a"));
        assert_eq!(log.note(b, "refused b".into(), t0).as_deref(), Some("refused b"), "another address has its own line");
        for i in 1..=5 {
            assert_eq!(log.note(a, "refused a".into(), t0 + Duration::from_secs(i)), None);
        }
        let line = log.note(a, "refused a".into(), t0 + REFUSAL_LOG_EVERY + Duration::from_secs(1)).unwrap();
        assert_eq!(line, "refused a (5 more from 127.0.0.1 in the 11 s before this)");
        // Nothing refused in between: the next line, when due, has no count.
        let later = t0 + 3 * REFUSAL_LOG_EVERY;
        assert_eq!(log.note(a, "refused a".into(), later).as_deref(), Some("refused a"));
    }

    #[test]
    fn the_refusal_log_keeps_a_bounded_number_of_addresses() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        for i in 0..(REFUSAL_ADDRESSES as u32 + 100) {
            let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(log.note(ip, "x".into(), t0 + Duration::from_millis(u64::from(i))).is_some());
        }
        assert_eq!(log.len(), REFUSAL_ADDRESSES);
        // The first address was forgotten: its next refusal is logged at once.
        assert!(log.note(std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000)), "x".into(), t0 + Duration::from_secs(2)).is_some());
    }
}
