//! The four message-forwarding mechanisms of a migration (the seed's "Message-Forwarding
//! Mechanisms"), as one type and the rules that tell them apart. The rules are pure
//! functions of what a node knows: the node (`route.rs`, `transfer.rs`, `locate.rs`)
//! and the migration simulator (`tern-net`'s `sim/migrate.rs`) call the same ones.
//!
//! What differs from one mechanism to the next, and nothing else:
//!
//! | | left at the old node after the commit | told at the commit | a message that reaches a node the process left |
//! |---|---|---|---|
//! | `link-update` | a route, until every partner acknowledged its update | every partner node (and the birth node), acknowledged | forwarded while the route lasts; then refused |
//! | `resend` | nothing | the birth node (only that the process lives elsewhere) | refused: its sender's node locates the process by a broadcast and sends it again |
//! | `origin-site` | nothing (a route at the birth node) | the birth node | sent to the birth node, which forwards it |
//! | `link-traversal` | a route (a link), until the process ends | nobody | forwarded along the chain; the node at its end tells the sender's node where the process is |
//!
//! In every mechanism, what reached the source while the process was frozen goes to the
//! destination as part of the transfer (`Late`), the nodes of the process's links and
//! monitors are told where it is (so that `node_down` fires for the right node), and a
//! message keeps its number however it travels, so the destination's per-sender order
//! (`order.rs`) puts a refused and re-sent message, or one that came the long way, back
//! in its place: per-sender FIFO and exactly-once hold for all four.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::fmt::{self, Display};
use std::str::FromStr;

/// How messages find a process after it moved.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Forwarding {
    /// Charlotte: the partners' nodes are told the new place, in parallel, acknowledged.
    #[default]
    LinkUpdate,
    /// V-System, Amoeba: the old node refuses; the sender's node locates and resends.
    Resend,
    /// Sprite, AIX TCF: messages go through the node the process was born on.
    OriginSite,
    /// DEMOS/MP: the old node keeps a forwarding link; chains are shortened when used.
    LinkTraversal,
}

impl Forwarding {
    pub const ALL: [Forwarding; 4] = [Forwarding::LinkUpdate, Forwarding::Resend, Forwarding::OriginSite, Forwarding::LinkTraversal];

    /// Its name, as people type it and as it is printed.
    pub const fn name(self) -> &'static str {
        match self {
            Forwarding::LinkUpdate => "link-update",
            Forwarding::Resend => "resend",
            Forwarding::OriginSite => "origin-site",
            Forwarding::LinkTraversal => "link-traversal",
        }
    }

    /// Every name joined by `sep`, in [`Forwarding::ALL`] order.
    pub fn names(sep: &str) -> String {
        Forwarding::ALL.map(Forwarding::name).join(sep)
    }

    /// Every name as a sentence lists them: `a, b, c or d`.
    pub fn listed() -> String {
        let names = Forwarding::ALL.map(Forwarding::name);
        let (last, rest) = names.split_last().expect("four names");
        format!("{} or {last}", rest.join(", "))
    }

    /// What the node a process leaves keeps for it once the destination owns it
    /// (`birth`: that node is where the process was born).
    pub fn left_behind(self, birth: bool) -> LeftBehind {
        match self {
            Forwarding::LinkUpdate | Forwarding::LinkTraversal => LeftBehind::Route,
            Forwarding::OriginSite if birth => LeftBehind::Route,
            Forwarding::Resend if birth => LeftBehind::Away,
            Forwarding::OriginSite | Forwarding::Resend => LeftBehind::Nothing,
        }
    }

    /// Whether the source tells the process's birth node (when it is neither side) of
    /// the move: where it went, or (`resend`) only that it lives elsewhere.
    pub fn tells_birth(self) -> bool {
        !matches!(self, Forwarding::LinkTraversal)
    }

    /// Whether every partner node (every node that sends to the process, and its birth
    /// node) gets a link update. In the other mechanisms only the nodes of its links and
    /// monitors are told, which failure detection needs whatever the mechanism.
    pub fn updates_partners(self) -> bool {
        matches!(self, Forwarding::LinkUpdate)
    }

    /// Whether the source forgets its route once every node told has acknowledged.
    pub fn drops_route_at_acks(self) -> bool {
        matches!(self, Forwarding::LinkUpdate)
    }

    /// Whether the node a forwarded message reaches the process on tells the message's
    /// origin node where the process is and how it is forwarded: with `link-traversal`
    /// that is path shortening (its next message goes straight there); with
    /// `origin-site` its messages still go by the birth node, but its node now knows
    /// that they must (so it reports the birth node's loss as such) and where the
    /// process is (for its monitors). (`link-update` tells its partners at the move;
    /// `resend`'s senders learn the place by locating it.)
    pub fn tells_origin(self) -> bool {
        matches!(self, Forwarding::LinkTraversal | Forwarding::OriginSite)
    }

    /// Whether a sender's node may keep a route straight to the process (with
    /// `origin-site` every message goes through the birth node).
    pub fn direct(self) -> bool {
        !matches!(self, Forwarding::OriginSite)
    }
}

/// What the node a process left keeps for it (see [`Forwarding::left_behind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftBehind {
    /// A route to the destination (a forwarding pointer).
    Route,
    /// At the birth node with `resend`: that the process lives elsewhere, not where.
    Away,
    Nothing,
}

/// What a node knows about a process, for routing a message to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// It is here.
    Here,
    /// A route: the node it went to (or was last told of) and under which mechanism.
    Route(u16, Forwarding),
    /// (Birth node, `resend`.) It lives, somewhere else: the place last learned (a
    /// sender's cache, as any sender's node keeps), if any — never a route to forward by.
    Away(Option<u16>),
    /// Nothing.
    Nothing,
}

/// What a node does with a message for a process (see [`step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Queue it here.
    Queue,
    /// Send it (on) to this node, keeping its number.
    Forward(u16),
    /// Give it back to its origin node, which finds the process and sends it again.
    Refuse,
    /// (At the origin node.) Find the process by asking every node, then send it there.
    Locate,
    /// The process has ended: drop it (as any message to an ended process).
    Ended,
}

/// The routing rule: where a message for a process goes from node `me`, knowing `known`;
/// `birth` is the process's birth node; `arrived`: the message came from another node
/// (else it is sent from here, or given back here).
pub fn step(known: Known, me: u16, birth: u16, arrived: bool) -> Step {
    match known {
        Known::Here => Step::Queue,
        // A sender's direct route to a process that now forwards by its origin site is
        // stale: the birth node knows. (Not for a message that came from elsewhere: it
        // went by the birth node or a link already, and a birth node that has not heard
        // of the move yet would send it back here, and so on.)
        Known::Route(_, Forwarding::OriginSite) if me != birth && !arrived => Step::Forward(birth),
        Known::Route(n, _) => Step::Forward(n),
        Known::Away(_) if arrived => Step::Refuse,
        // Sent from here: to where it was last seen (given back if it left: then located).
        Known::Away(Some(n)) => Step::Forward(n),
        Known::Away(None) => Step::Locate,
        Known::Nothing if me == birth => Step::Ended,
        Known::Nothing if arrived => Step::Refuse,
        Known::Nothing => Step::Forward(birth),
    }
}

/// What the origin node does with a message given back by node `refuser`, knowing
/// `route` (the mechanism of the route it sent it by, if it had one): a stale route of
/// its own under `link-update`, `origin-site` or `link-traversal` is corrected by the
/// birth node, which knows where the process is under those; otherwise — the route said
/// `resend`, or the message went by the birth node already (no route of its own, or
/// the refuser is the birth node) — the process is located by asking every node.
pub fn after_refusal(route: Option<Forwarding>, refuser: u16, birth: u16) -> Step {
    match route {
        Some(f) if refuser != birth && f != Forwarding::Resend => Step::Forward(birth),
        _ => Step::Locate,
    }
}

/// The move counts of processes a node keeps no entry for any more (it handed one over
/// and the mechanism leaves nothing, it dropped a route, the process ended): a link
/// update that is older than what the node took part in is stale, and taking it would
/// leave a route pointing back the way the process came (two such nodes pass a message
/// between them until its hop limit). Never consulted for routing: it only refuses
/// stale news. Bounded: the oldest are forgotten first (an update delayed past
/// [`Forgotten::CAP`] later departures is taken as news, as before).
#[derive(Debug, Default)]
pub struct Forgotten {
    moves: HashMap<u64, u32>,
    order: VecDeque<u64>,
}

impl Forgotten {
    pub const CAP: usize = 65_536;

    pub fn len(&self) -> usize {
        self.moves.len()
    }

    pub fn is_empty(&self) -> bool {
        self.moves.is_empty()
    }

    /// Process `pid` left this node's knowledge at move count `moves` (`u32::MAX`: it
    /// ended, and no news of it is newer).
    pub fn note(&mut self, pid: u64, moves: u32) {
        match self.moves.get_mut(&pid) {
            Some(m) => *m = (*m).max(moves),
            None => {
                self.moves.insert(pid, moves);
                self.order.push_back(pid);
                while self.order.len() > Self::CAP {
                    if let Some(old) = self.order.pop_front() {
                        self.moves.remove(&old);
                    }
                }
            }
        }
    }

    /// Whether news of `pid` at move count `moves` is newer than what was forgotten.
    pub fn newer(&self, pid: u64, moves: u32) -> bool {
        self.moves.get(&pid).is_none_or(|&m| moves > m)
    }
}

impl FromStr for Forwarding {
    type Err = String;

    fn from_str(s: &str) -> Result<Forwarding, String> {
        Forwarding::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown forwarding mechanism {s:?} (expected {})", Forwarding::listed()))
    }
}

impl Display for Forwarding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgotten_move_counts_refuse_older_news_and_stay_bounded() {
        let mut f = Forgotten::default();
        assert!(f.newer(7, 0));
        f.note(7, 5);
        assert!(!f.newer(7, 4) && !f.newer(7, 5) && f.newer(7, 6));
        f.note(7, 3);
        assert!(!f.newer(7, 5), "a count only goes up");
        f.note(8, u32::MAX);
        assert!(!f.newer(8, u32::MAX - 1), "an ended process has no news");
        for p in 100..100 + Forgotten::CAP as u64 {
            f.note(p, 1);
        }
        assert_eq!(f.moves.len(), Forgotten::CAP);
        assert!(f.newer(7, 0), "the oldest went first");
    }

    #[test]
    fn names_parse_print_and_serialise_alike() {
        for m in Forwarding::ALL {
            assert_eq!(m.name().parse::<Forwarding>(), Ok(m));
            assert_eq!(m.to_string(), m.name());
        }
        assert_eq!(Forwarding::listed(), "link-update, resend, origin-site or link-traversal");
        let e = "carrier-pigeon".parse::<Forwarding>().unwrap_err();
        assert_eq!(e, r#"unknown forwarding mechanism "carrier-pigeon" (expected link-update, resend, origin-site or link-traversal)"#);
    }

    #[test]
    fn the_routing_rule() {
        use Forwarding::*;
        let (me, birth) = (1, 0);
        assert_eq!(step(Known::Here, me, birth, true), Step::Queue);
        assert_eq!(step(Known::Route(5, LinkTraversal), me, birth, true), Step::Forward(5));
        assert_eq!(step(Known::Route(5, OriginSite), me, birth, false), Step::Forward(birth));
        // One that came from elsewhere goes straight on (back to a birth node that has not
        // heard of the move yet, it would come back here).
        assert_eq!(step(Known::Route(5, OriginSite), me, birth, true), Step::Forward(5));
        assert_eq!(step(Known::Route(5, OriginSite), birth, birth, true), Step::Forward(5));
        // A node that knows nothing sends a fresh message by the birth node, and gives
        // one that came from elsewhere back.
        assert_eq!(step(Known::Nothing, me, birth, false), Step::Forward(birth));
        assert_eq!(step(Known::Nothing, me, birth, true), Step::Refuse);
        assert_eq!(step(Known::Nothing, birth, birth, true), Step::Ended);
        assert_eq!(step(Known::Away(Some(3)), birth, birth, true), Step::Refuse);
        assert_eq!(step(Known::Away(None), birth, birth, true), Step::Refuse);
        assert_eq!(step(Known::Away(Some(3)), birth, birth, false), Step::Forward(3));
        assert_eq!(step(Known::Away(None), birth, birth, false), Step::Locate);
        assert_eq!(after_refusal(Some(Resend), 3, birth), Step::Locate);
        assert_eq!(after_refusal(None, birth, birth), Step::Locate);
        assert_eq!(after_refusal(Some(LinkUpdate), 3, birth), Step::Forward(birth));
        assert_eq!(after_refusal(None, 3, birth), Step::Locate, "it went by the birth node already");
        assert_eq!(Resend.left_behind(false), LeftBehind::Nothing);
        assert_eq!(Resend.left_behind(true), LeftBehind::Away);
        assert_eq!(OriginSite.left_behind(false), LeftBehind::Nothing);
        assert_eq!(LinkTraversal.left_behind(false), LeftBehind::Route);
    }
}
