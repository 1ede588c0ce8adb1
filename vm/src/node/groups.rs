//! Coprocess groups (V-System's logical host): which processes on this node belong to
//! which group. A group lives on one node: its members are spawned there (`spawn(f,
//! ..., {group: g})`) and move together (`migrate_group`, `--group`), in one migration.
//!
//! The group is a field of each member's state ([`crate::process::ProcSys::group`],
//! carried in its image); this index is the node's view of it, kept where processes
//! come and go: a spawn, an exit, a move away, an arrival.

use super::{Node, Pid};
use std::collections::{BTreeSet, HashMap, HashSet};

impl Node {
    /// The group of process `pid` (here) and its members here, `pid` included, in pid
    /// order; `None` if it is not here or in no group.
    pub fn group_members(&self, pid: Pid) -> Option<(u64, Vec<Pid>)> {
        let gs = self.inner.groups.lock();
        let g = gs.group_of(pid)?;
        Some((g, gs.members(g)))
    }
}

/// The groups with members on this node.
#[derive(Default)]
pub(crate) struct Groups {
    members: HashMap<u64, BTreeSet<Pid>>,
    of: HashMap<Pid, u64>,
    /// Groups that moved away from here (their members are on another node now).
    left: HashSet<u64>,
}

/// Most groups a node remembers as moved away (older ones are forgotten: spawning into
/// one of them here is then refused only because it was not made here).
const MAX_LEFT: usize = 4096;

impl Groups {
    /// `pid` is here, in group `g` (0: none).
    pub(crate) fn join(&mut self, pid: Pid, g: u64) {
        if g == 0 {
            return;
        }
        self.members.entry(g).or_default().insert(pid);
        self.of.insert(pid, g);
        self.left.remove(&g);
    }

    /// `pid` is no longer here (it ended); `moved`: it moved away, and with it its group
    /// if no member is left here.
    pub(crate) fn leave(&mut self, pid: Pid, moved: bool) {
        let Some(g) = self.of.remove(&pid) else { return };
        if let Some(m) = self.members.get_mut(&g) {
            m.remove(&pid);
            if m.is_empty() {
                self.members.remove(&g);
                if moved {
                    if self.left.len() >= MAX_LEFT {
                        self.left.clear();
                    }
                    self.left.insert(g);
                }
            }
        }
    }

    /// The group of `pid`, if it is here and in one.
    pub(crate) fn group_of(&self, pid: Pid) -> Option<u64> {
        self.of.get(&pid).copied()
    }

    /// The members of group `g` here, in pid order.
    pub(crate) fn members(&self, g: u64) -> Vec<Pid> {
        self.members.get(&g).map(|m| m.iter().copied().collect()).unwrap_or_default()
    }

    /// Whether a process spawned on node `me` may join group `g`: it has members here,
    /// or it was made here and never left (a group lives on one node).
    pub(crate) fn may_join(&self, g: u64, me: u16) -> Result<(), String> {
        if self.members.contains_key(&g) {
            return Ok(());
        }
        let made_here = crate::value::name_node(g) == me;
        if made_here && !self.left.contains(&g) {
            return Ok(());
        }
        let g = crate::value::name_text(g);
        Err(if made_here {
            format!("<group {g}> moved away from this node (a group lives on one node: spawn into it where its members are)")
        } else {
            format!("<group {g}> has no members on this node (a group lives on one node: spawn into it where its members are)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::make_name;

    #[test]
    fn a_group_lives_on_one_node() {
        let mut gs = Groups::default();
        let g = make_name(1, 7);
        assert!(gs.may_join(g, 1).is_ok(), "made here, no members yet");
        assert!(gs.may_join(g, 2).is_err(), "made elsewhere, no members here");
        gs.join(10, g);
        gs.join(11, g);
        assert_eq!(gs.members(g), vec![10, 11]);
        assert_eq!(gs.group_of(11), Some(g));
        gs.leave(10, true);
        assert!(gs.may_join(g, 1).is_ok(), "a member is still here");
        gs.leave(11, true);
        assert!(gs.members(g).is_empty());
        let e = gs.may_join(g, 1).unwrap_err();
        assert!(e.contains("moved away"), "{e}");
        gs.join(12, g);
        assert!(gs.may_join(g, 1).is_ok(), "it came back");
        gs.leave(12, false);
        assert!(gs.may_join(g, 1).is_ok(), "its last member ended here: it never left");
    }
}
