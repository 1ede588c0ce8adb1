//! Console input (the seed's slow I/O): the lines a console (`tern run`'s stdin, a `tern
//! repl`, a `tern ctl spawn --attach`) gives to the processes started from it, wherever
//! they run. Sans-IO: the host feeds it requests and lines and sends the answers it
//! returns.
//!
//! A process asks for line `k` of its own input (`k`: the lines it has read so far,
//! [`crate::process::ProcSys::console_reads`]). Each line typed goes to one request, in
//! the order the requests came; the answer given to `(pid, k)` is kept, so a request
//! asked again — by a process that moved while it waited, from its new node, or whose
//! answer reached a node it had just left — gets the same line. A process reads each `k`
//! once (it counts it when the line is in its heap), so every line is read exactly once.
//! At the end of the input every request is answered `None` (the program's `nil`).

use std::collections::{HashMap, VecDeque};

type Pid = u64;

/// Where an answer goes: the node that asked (the process is there, or has moved on and
/// asks again from its new node).
pub type Asker = u16;

/// An answer to send: line `k` of process `pid` (`None`: end of input), to `asker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub asker: Asker,
    pub pid: Pid,
    pub k: u64,
    pub line: Option<String>,
}

/// Most lines a console keeps typed ahead of the requests for them (older ones are
/// dropped, counted in [`ConsoleIn::dropped`]).
pub const MAX_AHEAD: usize = 4096;

/// One console's input.
#[derive(Debug, Default)]
pub struct ConsoleIn {
    /// Lines typed that no request took yet.
    ahead: VecDeque<String>,
    /// The input ended (no more lines will come).
    ended: bool,
    /// The last line given to each process: (its `k`, the line).
    given: HashMap<Pid, (u64, Option<String>)>,
    /// Requests waiting for a line, oldest first.
    waiting: VecDeque<(Pid, u64, Asker)>,
    /// Lines dropped because too many were typed ahead.
    pub dropped: u64,
}

impl ConsoleIn {
    /// Process `pid` (on node `asker`) asks for its line `k`: the answer, if there is one
    /// now (else it waits for a line).
    pub fn request(&mut self, pid: Pid, k: u64, asker: Asker) -> Option<Answer> {
        match self.given.get(&pid) {
            Some((had, line)) if *had == k => return Some(Answer { asker, pid, k, line: line.clone() }),
            // An old request (its answer was read): nothing to do.
            Some((had, _)) if *had > k => return None,
            _ => {}
        }
        if let Some(w) = self.waiting.iter_mut().find(|w| w.0 == pid) {
            // Asked again (from where it is now); a newer k replaces an older one.
            if k >= w.1 {
                *w = (pid, k, asker);
            }
            return None;
        }
        if let Some(line) = self.ahead.pop_front() {
            return Some(self.give(pid, k, asker, Some(line)));
        }
        if self.ended {
            return Some(self.give(pid, k, asker, None));
        }
        self.waiting.push_back((pid, k, asker));
        None
    }

    /// A line was typed: the answer to the oldest waiting request, if any.
    pub fn line(&mut self, line: String) -> Option<Answer> {
        if self.ended {
            return None;
        }
        match self.waiting.pop_front() {
            Some((pid, k, asker)) => Some(self.give(pid, k, asker, Some(line))),
            None => {
                if self.ahead.len() >= MAX_AHEAD {
                    self.ahead.pop_front();
                    self.dropped += 1;
                }
                self.ahead.push_back(line);
                None
            }
        }
    }

    /// The input ended: every waiting request is answered `None`.
    pub fn end(&mut self) -> Vec<Answer> {
        self.ended = true;
        let waiting: Vec<_> = self.waiting.drain(..).collect();
        waiting.into_iter().map(|(pid, k, asker)| self.give(pid, k, asker, None)).collect()
    }

    /// Requests waiting for a line.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn give(&mut self, pid: Pid, k: u64, asker: Asker, line: Option<String>) -> Answer {
        self.given.insert(pid, (k, line.clone()));
        Answer { asker, pid, k, line }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_goes_to_one_request_and_is_given_again_to_the_same_one() {
        let mut c = ConsoleIn::default();
        assert_eq!(c.request(10, 0, 1), None, "nothing typed yet");
        assert_eq!(c.request(11, 0, 1), None);
        // Process 10 moved while it waited: it asks again from node 2.
        assert_eq!(c.request(10, 0, 2), None);
        assert_eq!(c.waiting(), 2);
        let a = c.line("first".into()).expect("the oldest request");
        assert_eq!(a, Answer { asker: 2, pid: 10, k: 0, line: Some("first".into()) });
        // Its answer reached node 2 after it left for node 3: asked again, the same line.
        assert_eq!(c.request(10, 0, 3).map(|a| a.line), Some(Some("first".into())));
        assert_eq!(c.line("second".into()).map(|a| (a.pid, a.line)), Some((11, Some("second".into()))));
        // Typed ahead.
        assert_eq!(c.line("third".into()), None);
        assert_eq!(c.request(10, 1, 3).map(|a| a.line), Some(Some("third".into())));
        // An old k is not answered again once a newer one was.
        assert_eq!(c.request(10, 0, 3), None);
        assert_eq!(c.request(11, 1, 1), None);
        let ends = c.end();
        assert_eq!(ends, vec![Answer { asker: 1, pid: 11, k: 1, line: None }]);
        assert_eq!(c.request(12, 0, 1).map(|a| a.line), Some(None), "after the end: nil");
        assert_eq!(c.line("late".into()), None);
        assert_eq!(c.request(10, 2, 1).map(|a| a.line), Some(None));
    }

    #[test]
    fn lines_typed_far_ahead_are_bounded() {
        let mut c = ConsoleIn::default();
        for i in 0..MAX_AHEAD + 3 {
            c.line(format!("{i}"));
        }
        assert_eq!(c.dropped, 3);
        assert_eq!(c.request(1, 0, 1).and_then(|a| a.line), Some("3".into()));
    }
}
