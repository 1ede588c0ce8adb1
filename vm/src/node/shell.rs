//! A REPL's shell: one long-lived process per REPL session (as Erlang's and Elixir's
//! shells are), so that `self()` is the same on every line and messages sent to it wait in
//! its mailbox until a line receives them.
//!
//! The shell process runs a small loop (the REPL compiles it): `let __env = {}; while
//! true { try { merge __shell_next() into __env } catch e { __shell_failed(e); } }`.
//! `__shell_next()` parks the process until the REPL hands it a line — a module, the
//! line with the REPL's kept declarations before it — and then runs that module's top
//! level as the call's value ([`crate::interp::sys_enter_module`]): the map of its
//! globals, which the loop keeps in `__env`, so that a later line's `let x =
//! __shell_env()["x"];` finds the value `x` had (a binding is evaluated once, not again
//! on every line). The next call says the line has ended. An error the line does not catch reaches the loop's `try` as its
//! rendered text, backtrace included (`interp::throw`), and `__shell_failed` reports it.
//! The REPL's side ([`Node::shell_eval`], [`Node::shell_wait`]) waits for the line to
//! end on a condition variable. A shell process stays on its node: freezing one (to move
//! it) is refused.

use super::slot::{Slot, Status};
use super::{ExitReason, Node, NodeInner, Pid, SysOut};
use crate::bytecode::ModuleHash;
use crate::interp::SysCall;
use crate::process::{IoResult, Process};
use crate::value::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The host's side of a shell process.
#[derive(Debug, Default)]
pub(crate) struct ShellState {
    /// Parked in `__shell_next()`, ready for a line.
    idle: bool,
    /// Lines ended so far (the first `__shell_next()` counts as one: none had started).
    ended: u64,
    /// The error of the line running now, reported by `__shell_failed`.
    failed: Option<String>,
    /// How the last line ended.
    last: Option<Result<(), String>>,
}

/// How a line typed at a REPL ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ShellEnd {
    /// It ran to its end.
    Done,
    /// It raised an error it did not catch: the error, rendered with its backtrace.
    Failed(String),
    /// The shell process itself ended (killed, `exit()`, an exit signal): why.
    Exited(ExitReason),
}

impl NodeInner {
    pub(super) fn is_shell(&self, pid: Pid) -> bool {
        self.shells.lock().contains_key(&pid)
    }
}

impl Node {
    /// Starts a REPL's shell process running module `main` (the shell's loop), its
    /// console output going to `console`.
    pub fn spawn_shell(&self, main: ModuleHash, console: u64) -> Result<Pid, crate::process::LinkError> {
        let pid = self.new_pid();
        let mut p = Process::new(pid, main, &self.inner.vm)?;
        p.sys.console = console;
        p.sys.shell = true;
        {
            let mut shells = self.inner.shells.lock();
            // Forget shells that have ended.
            shells.retain(|&s, _| {
                self.inner.local_slot(s).is_some_and(|slot| !matches!(slot.st.lock().status, Status::Exited | Status::Moved))
            });
            shells.insert(pid, ShellState::default());
        }
        self.watch(pid);
        self.spawn(p);
        Ok(pid)
    }

    /// Hands shell process `pid` a line to run: module `main`'s top level. Waits up to
    /// `timeout` for the shell to be ready (it is busy with another line, or has not
    /// reached its loop yet). Returns the ticket [`Node::shell_wait`] waits with.
    pub fn shell_eval(&self, pid: Pid, main: ModuleHash, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        let mut shells = self.inner.shells.lock();
        loop {
            let Some(s) = shells.get_mut(&pid) else {
                return Err(format!("{} is not a shell process on this node", crate::value::name_text(pid)));
            };
            if s.idle {
                let slot = self.inner.local_slot(pid).ok_or("the shell process has ended")?;
                let mut st = slot.st.lock();
                let waiting = st.status == Status::Waiting;
                let Some(p) = st.parked.as_mut().filter(|p| waiting && p.sys.io_result.is_none()) else {
                    return Err("the shell process is not waiting for a line".into());
                };
                p.sys.set_io(IoResult::ShellEval(main));
                s.idle = false;
                s.last = None;
                let ticket = s.ended;
                self.inner.wake_locked(pid, &slot, &mut st, None);
                return Ok(ticket);
            }
            if self.exit_of(pid).is_some() {
                return Err("the shell process has ended".into());
            }
            let step = (Instant::now() + Duration::from_millis(50)).min(deadline);
            if self.inner.shell_cv.wait_until(&mut shells, step).timed_out() && Instant::now() >= deadline {
                return Err("the shell process is busy".into());
            }
        }
    }

    /// Ends the line shell process `pid` runs, if any (Ctrl-C at its REPL): the line
    /// fails with the error `interrupted`, where it was; the shell, its mailbox and its
    /// bindings stay. A line waiting (in `recv`, `sleep`, ...) is woken to end; one in a
    /// file operation ends when the operation does.
    pub fn shell_interrupt(&self, pid: Pid, timeout: Duration) -> Result<bool, String> {
        if !self.inner.is_shell(pid) {
            return Err(format!("{} is not a shell process on this node", crate::value::name_text(pid)));
        }
        let done = self.at_safepoint(pid, |p| crate::interp::interrupt_shell(p, "interrupted"), timeout).map_err(|e| e.to_string())?;
        if done {
            if let Some(slot) = self.inner.local_slot(pid) {
                let mut st = slot.st.lock();
                if st.status == Status::Waiting {
                    self.inner.wake_locked(pid, &slot, &mut st, None);
                }
            }
        }
        Ok(done)
    }

    /// Waits up to `timeout` for the line handed over with `ticket` to end (`None`:
    /// still running).
    pub fn shell_wait(&self, pid: Pid, ticket: u64, timeout: Duration) -> Option<ShellEnd> {
        let deadline = Instant::now() + timeout;
        let mut shells = self.inner.shells.lock();
        loop {
            if let Some(s) = shells.get(&pid) {
                if s.ended > ticket {
                    return Some(match &s.last {
                        Some(Err(e)) => ShellEnd::Failed(e.clone()),
                        _ => ShellEnd::Done,
                    });
                }
            }
            if let Some(e) = self.exit_of(pid) {
                shells.remove(&pid);
                return Some(ShellEnd::Exited(e.reason));
            }
            if Instant::now() >= deadline {
                return None;
            }
            let step = (Instant::now() + Duration::from_millis(50)).min(deadline);
            self.inner.shell_cv.wait_until(&mut shells, step);
        }
    }
}

/// `__shell_next()`: with a line handed over, runs it; else the line before has ended
/// (or none had started): say so, and wait for the next.
pub(super) fn next(node: &NodeInner, pid: Pid, slot: &Arc<Slot>, mut proc: Box<Process>, c: SysCall) -> SysOut {
    if !proc.sys.shell {
        return super::sys::err(proc, "__shell_next: only a REPL's shell process runs lines");
    }
    match proc.sys.take_io() {
        Some(IoResult::ShellEval(main)) => match crate::interp::sys_enter_module(&mut proc, &node.vm, c, main) {
            Ok(()) => SysOut::Continue(proc),
            Err(e) => super::sys::raise(proc, e),
        },
        other => {
            proc.sys.io_result = other.map(Box::new);
            let mut st = slot.st.lock();
            if let Some((proc, reason)) = node.park(pid, slot, &mut st, proc, &[], None) {
                return SysOut::Exit(proc, reason);
            }
            drop(st);
            let mut shells = node.shells.lock();
            if let Some(s) = shells.get_mut(&pid) {
                s.last = Some(s.failed.take().map_or(Ok(()), Err));
                s.ended += 1;
                s.idle = true;
            }
            node.shell_cv.notify_all();
            SysOut::Parked
        }
    }
}

/// `__shell_failed(e)`: the line running raised `e` (its rendered text) and did not
/// catch it.
pub(super) fn failed(node: &NodeInner, pid: Pid, proc: Box<Process>, c: SysCall, e: Value) -> SysOut {
    if !proc.sys.shell {
        return super::sys::err(proc, "__shell_failed: only a REPL's shell process runs lines");
    }
    let text = match e {
        Value::Str(a) => crate::object::str_ref(&proc.heap, a).map(str::to_string).unwrap_or_else(|e| e.to_string()),
        other => crate::fmt::display(&proc.heap, &proc.linked, other).unwrap_or_else(|_| "<unprintable error>".into()),
    };
    if let Some(s) = node.shells.lock().get_mut(&pid) {
        s.failed = Some(text);
    }
    super::sys::ret(proc, c, Value::Nil)
}

/// `__shell_env()`: the shell loop's `__env` (the values of the bindings made so far).
pub(super) fn env(proc: Box<Process>, c: SysCall) -> SysOut {
    if !proc.sys.shell {
        return super::sys::err(proc, "__shell_env: only a REPL's shell process has one");
    }
    let found = proc.frames.first().and_then(|f| {
        let slot = f.module as usize;
        let i = proc.linked.get(slot)?.module.globals.iter().position(|g| g == "__env")?;
        proc.globals.get(proc.modules.get(slot)?.globals_base as usize + i).copied()
    });
    match found {
        Some(v) => super::sys::ret(proc, c, v),
        None => super::sys::err(proc, "__shell_env: the shell loop has no __env"),
    }
}
