//! System calls: the natives a node carries out itself, with the whole process at hand.
//!
//! Each is restartable. A call that must wait parks the process at the call; when it is
//! woken (a message, its timer, a finished file operation, or being restored on another
//! node) the call runs again from the start and finds what it waited for — the deadline
//! it set the first time is kept in the process, so a re-issued wait keeps its timeout.

use super::deliver::event_message;
use super::remote::{MigrateOpts, Op};
use super::slot::{Slot, Source, Task, LOST};
use super::{ChanId, ExitReason, FileOp, NodeInner, Pid, SentBy, SysOut, Target};
use crate::flatten::{flatten, flatten_values, rebuild};
use crate::fmt::display;
use crate::heap::{Heap, HeapError};
use crate::interp::{sys_call, sys_raise, sys_return, SysCall};
use crate::message::{Message, MessageError};
use crate::object;
use crate::process::{FileMode, IoResult, OpenFile, Process};
use crate::runtime::{sys_trap, Exn, NativeCtx, NativeDef, Vm};
use crate::value::{name_text, Addr, Value};
use crossbeam_deque::Worker;
use std::collections::VecDeque;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sys {
    Spawn,
    SpawnOn,
    Nodes,
    SelfPid,
    NodeName,
    Send,
    Recv,
    Select,
    Sleep,
    Channel,
    Exit,
    Kill,
    Link,
    Monitor,
    TrapExits,
    Open,
    Read,
    ReadLine,
    Write,
    Seek,
    Close,
    Migrate,
    Group,
    MyGroup,
    Pin,
    MigrateGroup,
    ShellNext,
    ShellFailed,
    ShellEnv,
}

#[rustfmt::skip]
const SYSCALLS: &[(&str, u8, u8, Sys)] = &[
    ("spawn", 1, u8::MAX, Sys::Spawn),
    ("spawn_on", 2, u8::MAX, Sys::SpawnOn),
    ("migrate", 1, 3, Sys::Migrate),
    ("group", 0, 0, Sys::Group),
    ("my_group", 0, 0, Sys::MyGroup),
    ("pin", 0, 1, Sys::Pin),
    ("migrate_group", 2, 3, Sys::MigrateGroup),
    ("nodes", 0, 0, Sys::Nodes),
    ("self", 0, 0, Sys::SelfPid),
    ("node", 0, 0, Sys::NodeName),
    ("send", 2, 2, Sys::Send),
    ("recv", 0, 2, Sys::Recv),
    ("select", 1, 2, Sys::Select),
    ("sleep", 1, 1, Sys::Sleep),
    ("channel", 0, 0, Sys::Channel),
    ("exit", 0, 1, Sys::Exit),
    ("kill", 1, 1, Sys::Kill),
    ("link", 1, 1, Sys::Link),
    ("monitor", 1, 1, Sys::Monitor),
    ("trap_exits", 1, 1, Sys::TrapExits),
    ("open", 1, 2, Sys::Open),
    ("read", 1, 2, Sys::Read),
    ("read_line", 0, 1, Sys::ReadLine),
    ("write", 2, 2, Sys::Write),
    ("seek", 2, 2, Sys::Seek),
    ("close", 1, 1, Sys::Close),
    ("__shell_next", 0, 0, Sys::ShellNext),
    ("__shell_failed", 1, 1, Sys::ShellFailed),
    ("__shell_env", 0, 0, Sys::ShellEnv),
];

/// The most a single `read` returns.
const MAX_READ: u64 = 16 << 20;

/// The process and file natives, for the node's native table (and the compiler's list
/// of names).
pub fn sys_natives() -> Vec<NativeDef> {
    let mut v: Vec<NativeDef> =
        SYSCALLS.iter().map(|&(name, min_args, max_args, _)| NativeDef { name, min_args, max_args, f: sys_trap }).collect();
    v.push(NativeDef { name: "is_timeout", min_args: 1, max_args: 1, f: is_timeout });
    v.push(NativeDef { name: "pid", min_args: 1, max_args: 1, f: pid_from_text });
    v
}

/// `pid("2.15")`: the pid printed as `<pid 2.15>` (for REPLs and scripts that were told
/// a pid as text).
fn pid_from_text(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let Value::Str(a) = args[0] else {
        return Err(Exn::Error(format!("pid: expected a string like \"2.15\", not {}", args[0].a_type())));
    };
    let text = object::str_ref(ctx.heap, a).map_err(Exn::Heap)?;
    let t = text.trim().trim_start_matches("<pid").trim_end_matches('>').trim();
    let parsed = t.split_once('.').and_then(|(n, s)| Some((n.parse::<u16>().ok()?, s.parse::<u64>().ok()?)));
    match parsed {
        Some((n, s)) if s < 1 << crate::value::NAME_SERIAL_BITS => Ok(Value::Pid(crate::value::make_name(n, s))),
        _ => Err(Exn::Error(format!("pid: {text:?} is not a pid (expected node.serial, like \"2.15\")"))),
    }
}

fn is_timeout(_: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    Ok(Value::Bool(matches!(args[0], Value::Timeout)))
}

/// For each native id of `vm`: the system call it is.
pub(crate) fn table(vm: &Vm) -> Vec<Option<Sys>> {
    let mut t = Vec::new();
    for &(name, _, _, sys) in SYSCALLS {
        if let Some(id) = vm.natives.lookup(name) {
            let id = id as usize;
            if t.len() <= id {
                t.resize(id + 1, None);
            }
            t[id] = Some(sys);
        }
    }
    t
}

/// Completes the call with `v`.
pub(super) fn ret(mut proc: Box<Process>, c: SysCall, v: Value) -> SysOut {
    sys_return(&mut proc, c, v);
    SysOut::Continue(proc)
}

/// Raises a Tern error at the call (an absent page is not an error: the call waits for
/// it and runs again).
pub(super) fn raise(mut proc: Box<Process>, exn: Exn) -> SysOut {
    if let Exn::Heap(HeapError::Fault(page)) = exn {
        return SysOut::Fault(proc, page);
    }
    match sys_raise(&mut proc, exn) {
        Ok(()) => SysOut::Continue(proc),
        Err(e) => SysOut::Exit(proc, ExitReason::Failed(e)),
    }
}

pub(super) fn err(proc: Box<Process>, m: impl Into<String>) -> SysOut {
    raise(proc, Exn::Error(m.into()))
}

/// A value that could not be copied out of the heap for `what` (a send, a spawn): an
/// error, unless a page of it is not here yet (the call runs again once it is).
fn message_error(proc: Box<Process>, what: &str, e: MessageError) -> SysOut {
    match e {
        MessageError::Heap(h @ HeapError::Fault(_)) => raise(proc, Exn::Heap(h)),
        e => err(proc, format!("{what}: {e}")),
    }
}

/// Completes the call with a value allocated by `make`, collecting garbage once if the
/// heap is full.
fn ret_alloc(mut proc: Box<Process>, c: SysCall, make: impl Fn(&mut Heap) -> Result<Value, HeapError>) -> SysOut {
    let mut v = make(&mut proc.heap);
    if v.is_err_and(HeapError::is_full) && proc.collect_garbage().is_ok() {
        v = make(&mut proc.heap);
    }
    match v {
        Ok(v) => ret(proc, c, v),
        Err(e) if e.is_full() => {
            let m = proc.heap.full_error(e);
            err(proc, m)
        }
        Err(e) => raise(proc, Exn::Heap(e)),
    }
}

fn timeout_ms(v: Value, what: &str) -> Result<Option<u64>, String> {
    match v {
        Value::Nil => Ok(None),
        Value::Int(ms) if ms >= 0 => Ok(Some(ms as u64)),
        Value::Float(ms) if ms >= 0.0 && ms.is_finite() => Ok(Some(ms as u64)),
        Value::Int(_) | Value::Float(_) => Err(format!("{what}: the time must not be negative")),
        other => Err(format!("{what}: the time must be a number of milliseconds, not {}", other.a_type())),
    }
}

/// Carries out the system call `proc` is stopped at.
pub(crate) fn call(node: &NodeInner, pid: Pid, slot: &Arc<Slot>, proc: Box<Process>, local: &Worker<Task>) -> SysOut {
    let Some(c) = sys_call(&proc) else {
        return raise(proc, Exn::Heap(HeapError::Corrupt));
    };
    let Some(&Some(sys)) = node.sys_table.get(c.native as usize) else {
        return err(proc, "this node cannot carry out that call");
    };
    // The arguments, copied out of the registers (the process moves into the call):
    // on the stack for the calls that take few.
    let args = smallvec::SmallVec::<[Value; 6]>::from_slice(&proc.regs[c.args..c.args + c.nargs]);
    let args: &[Value] = &args;
    let arg = |i: usize| args.get(i).copied().unwrap_or(Value::Nil);
    match sys {
        Sys::SelfPid => ret(proc, c, Value::Pid(pid)),
        Sys::ShellNext => super::shell::next(node, pid, slot, proc, c),
        Sys::ShellFailed => super::shell::failed(node, pid, proc, c, arg(0)),
        Sys::ShellEnv => super::shell::env(proc, c),
        Sys::NodeName => {
            let name = node.name.clone();
            ret_alloc(proc, c, move |h| object::alloc_str(h, &name).map(Value::Str))
        }
        Sys::Spawn => spawn(node, pid, slot, proc, c, args, local),
        Sys::Migrate => migrate(node, pid, slot, proc, c, args),
        Sys::Group => ret(proc, c, Value::Group(node.new_name())),
        Sys::MyGroup => {
            let g = proc.sys.group;
            ret(proc, c, if g == 0 { Value::Nil } else { Value::Group(g) })
        }
        Sys::Pin => {
            // `pin()` / `pin(true)` pins, `pin(false)` unpins; the answer is what it was.
            let on = match args.first() {
                None => true,
                Some(Value::Bool(b)) => *b,
                Some(other) => return err(proc, format!("pin: expected true or false, not {}", other.a_type())),
            };
            let mut proc = proc;
            let was = std::mem::replace(&mut proc.sys.pinned, on);
            ret(proc, c, Value::Bool(was))
        }
        Sys::MigrateGroup => migrate_group(node, pid, slot, proc, c, args),
        Sys::SpawnOn => spawn_on(node, pid, slot, proc, c, args, local),
        Sys::Nodes => {
            let names = match node.remote() {
                Some(r) => r.live_nodes(),
                None => vec![node.name.clone()],
            };
            ret_alloc(proc, c, move |h| {
                let mut vals = Vec::with_capacity(names.len());
                for n in &names {
                    vals.push(Value::Str(object::alloc_str(h, n)?));
                }
                object::array_from(h, &vals).map(Value::Array)
            })
        }
        Sys::Send => send(node, pid, slot, proc, c, arg(0), arg(1), local),
        Sys::Recv => {
            let (source, t) = match (args.len(), arg(0)) {
                (0, _) => (Source::Inbox, Value::Nil),
                (1, Value::Int(_) | Value::Float(_)) => (Source::Inbox, arg(0)),
                (_, Value::Nil) => (Source::Inbox, arg(1)),
                (_, Value::Pid(p)) if p == pid => (Source::Inbox, arg(1)),
                (_, Value::Rx(ch)) => (Source::Chan(ch), arg(1)),
                (_, other) => return err(proc, format!("recv: expected a receive end, not {}", other.a_type())),
            };
            match timeout_ms(t, "recv") {
                Ok(t) => receive(node, pid, slot, proc, c, &[source], t, Mode::Recv),
                Err(e) => err(proc, e),
            }
        }
        Sys::Select => {
            let Value::Array(a) = arg(0) else {
                return err(proc, format!("select: expected an array of receive ends, not {}", arg(0).a_type()));
            };
            let items = match object::array_values(&proc.heap, a) {
                Ok(v) => v,
                Err(e) => return raise(proc, Exn::Heap(e)),
            };
            let mut sources = Vec::with_capacity(items.len());
            for x in items {
                sources.push(match x {
                    Value::Rx(ch) => Source::Chan(ch),
                    Value::Pid(p) if p == pid => Source::Inbox,
                    other => return err(proc, format!("select: expected receive ends (or self()), not {}", other.a_type())),
                });
            }
            if sources.is_empty() && args.len() < 2 {
                return err(proc, "select: nothing to wait for and no timeout");
            }
            match timeout_ms(arg(1), "select") {
                Ok(t) => receive(node, pid, slot, proc, c, &sources, t, Mode::Select),
                Err(e) => err(proc, e),
            }
        }
        Sys::Sleep => match timeout_ms(arg(0), "sleep") {
            Ok(Some(ms)) => receive(node, pid, slot, proc, c, &[], Some(ms), Mode::Sleep),
            Ok(None) => err(proc, "sleep: expected a number of milliseconds"),
            Err(e) => err(proc, e),
        },
        Sys::Channel => {
            let ch = node.new_name();
            slot.st.lock().mailbox.chans.push((ch, VecDeque::new()));
            node.set_holder(ch, Some(pid));
            ret_alloc(proc, c, move |h| object::array_from(h, &[Value::Tx(ch), Value::Rx(ch)]).map(Value::Array))
        }
        Sys::Exit => {
            let reason = match arg(0) {
                Value::Nil => Ok("normal".to_string()),
                Value::Str(a) => object::str_ref(&proc.heap, a).map(str::to_string),
                v => display(&proc.heap, &proc.linked, v),
            };
            // (A page of the reason not here yet: the call runs again once it is.)
            let reason = match reason {
                Ok(r) => r,
                Err(e @ HeapError::Fault(_)) => return raise(proc, Exn::Heap(e)),
                Err(_) => String::new(),
            };
            SysOut::Exit(proc, ExitReason::Exit(reason))
        }
        Sys::Kill => match arg(0) {
            Value::Pid(p) if p == pid => SysOut::Exit(proc, ExitReason::Killed("killed".into())),
            Value::Pid(p) => {
                node.kill(p, "killed".into());
                ret(proc, c, Value::Nil)
            }
            other => err(proc, format!("kill: expected a pid, not {}", other.a_type())),
        },
        Sys::Link => match arg(0) {
            Value::Pid(p) if p == pid => ret(proc, c, Value::Nil),
            Value::Pid(p) => link(node, pid, slot, proc, c, p),
            other => err(proc, format!("link: expected a pid, not {}", other.a_type())),
        },
        Sys::Monitor => match arg(0) {
            Value::Pid(p) => {
                if !add_watcher(node, p, pid) {
                    let _ = node.deliver(Target::Inbox(pid), event_message("down", p, "noproc"), Vec::new(), None);
                }
                ret(proc, c, Value::Nil)
            }
            other => err(proc, format!("monitor: expected a pid, not {}", other.a_type())),
        },
        Sys::TrapExits => {
            let on = arg(0).is_truthy();
            let was = std::mem::replace(&mut slot.st.lock().trap_exits, on);
            ret(proc, c, Value::Bool(was))
        }
        Sys::Open => open(node, pid, slot, proc, c, arg(0), arg(1)),
        Sys::ReadLine if args.is_empty() => console_read(node, pid, slot, proc, c),
        Sys::Read | Sys::ReadLine => read(node, pid, slot, proc, c, arg(0), arg(1), sys == Sys::ReadLine),
        Sys::Write => write(node, pid, slot, proc, c, arg(0), arg(1)),
        Sys::Seek => {
            let (mut proc, i) = match file_entry(proc, arg(0), "seek") {
                Ok(x) => x,
                Err(out) => return out,
            };
            match arg(1) {
                Value::Int(off) if off >= 0 => {
                    if let Some(Some(f)) = proc.sys.files.get_mut(i) {
                        f.offset = off as u64;
                    }
                    ret(proc, c, Value::Nil)
                }
                other => {
                    let m = format!("seek: expected an offset of 0 or more, not {}", show(&proc, other));
                    err(proc, m)
                }
            }
        }
        Sys::Close => match arg(0) {
            Value::File(i) => {
                let mut proc = proc;
                if let Some(f) = proc.sys.files.get_mut(i as usize) {
                    *f = None;
                }
                ret(proc, c, Value::Nil)
            }
            other => err(proc, format!("close: expected a file, not {}", other.a_type())),
        },
    }
}

fn show(proc: &Process, v: Value) -> String {
    display(&proc.heap, &proc.linked, v).unwrap_or_else(|_| v.type_name().into())
}

fn spawn(node: &NodeInner, pid: Pid, slot: &Arc<Slot>, proc: Box<Process>, c: SysCall, args: &[Value], local: &Worker<Task>) -> SysOut {
    let (args, SpawnOpts { group, pin }) = match spawn_options(node, &proc, args, "spawn") {
        Ok(x) => x,
        Err(Exn::Error(e)) => return err(proc, e),
        Err(e) => return raise(proc, e),
    };
    let (msg, env_globals, env) = match spawn_messages(node, &proc, args, "spawn") {
        Ok(m) => m,
        Err(e) => return e.raise(proc),
    };
    if let Some(why) = node.process_limit_reached() {
        return err(proc, format!("spawn: {why}"));
    }
    let child = node.new_name();
    let mut p = match Process::spawn(&proc, child, &msg, &env_globals, &env, &node.vm) {
        Ok(p) => p,
        Err(e) => return err(proc, format!("spawn: {e}")),
    };
    p.sys.group = group;
    p.sys.pinned = pin;
    let carried = match take_ends(slot, &msg.rx_ends()) {
        Ok(x) => x,
        Err(ch) => return err(proc, not_held("spawn", ch)),
    };
    let ends: Vec<ChanId> = carried.iter().map(|(c, _)| *c).collect();
    node.spawn(p, carried, Some(local));
    for ch in ends {
        node.set_holder(ch, Some(child));
    }
    let _ = pid;
    ret(proc, c, Value::Pid(child))
}

/// `spawn(f, args..., {group: g, pin: true})`: a map after as many arguments as `f`
/// takes holds the spawn's options (a map that is one of `f`'s arguments is not one).
/// `group`: a group made by `group()`, or `"parent"` for the caller's own; `pin`: the
/// load policy leaves the child where it is. Returns `f` and its arguments, and the
/// options (the group checked to be one a child here may join: a group lives on one
/// node).
fn spawn_options<'a>(node: &NodeInner, proc: &Process, args: &'a [Value], what: &str) -> Result<(&'a [Value], SpawnOpts), Exn> {
    let mut opts = SpawnOpts::default();
    let (Some((&Value::Map(m), rest)), Some(arity)) = (args.split_last(), callee_arity(proc, args[0])) else { return Ok((args, opts)) };
    if rest.len() != usize::from(arity) + 1 {
        return Ok((args, opts));
    }
    for (k, v) in object::map_entries(&proc.heap, m).map_err(Exn::Heap)? {
        let key = match k {
            Value::Str(a) => object::str_ref(&proc.heap, a).map_err(Exn::Heap)?.to_string(),
            other => return Err(Exn::Error(format!("{what}: an option's name is a string, not {}", other.a_type()))),
        };
        match (key.as_str(), v) {
            ("group", Value::Group(g)) => opts.group = g,
            ("group", Value::Str(a)) if object::str_ref(&proc.heap, a).map_err(Exn::Heap)? == "parent" => {
                if proc.sys.group == 0 {
                    return Err(Exn::Error(format!("{what}: {{group: \"parent\"}}: this process is in no group")));
                }
                opts.group = proc.sys.group;
            }
            ("group", other) => {
                return Err(Exn::Error(format!("{what}: the group option is a group (from group()) or \"parent\", not {}", other.a_type())))
            }
            ("pin", Value::Bool(b)) => opts.pin = b,
            ("pin", other) => return Err(Exn::Error(format!("{what}: the pin option is true or false, not {}", other.a_type()))),
            (other, _) => return Err(Exn::Error(format!("{what}: unknown option {other:?} (expected group or pin)"))),
        }
    }
    if opts.group != 0 {
        node.groups.lock().may_join(opts.group, node.id).map_err(|e| Exn::Error(format!("{what}: {e}")))?;
    }
    Ok((rest, opts))
}

/// A spawn's options ([`spawn_options`]).
#[derive(Default)]
struct SpawnOpts {
    group: u64,
    pin: bool,
}

/// How many arguments the function `f` takes, if it is a Tern function.
fn callee_arity(proc: &Process, f: Value) -> Option<u8> {
    let fref = match f {
        Value::Func(f) => f,
        Value::Closure(c) => object::closure_fn(&proc.heap, c).ok()?,
        _ => return None,
    };
    Some(proc.linked.get(fref.module as usize)?.module.functions.get(fref.func as usize)?.arity)
}

/// What a child started with `args` (a function and its arguments) is given: the call,
/// the globals it can reach (see [`Process::reachable_globals`]) and their values.
fn spawn_messages(node: &NodeInner, proc: &Process, args: &[Value], what: &'static str) -> Result<(Message, Vec<u32>, Message), NotCopied> {
    if !matches!(args[0], Value::Func(_) | Value::Closure(_)) {
        return Err(NotCopied::NotAFunction(format!("{what}: expected a Tern function, not {}", args[0].a_type())));
    }
    let limit = node.config.message_limit_bytes;
    let env_globals = proc.reachable_globals(args);
    let env_values: Vec<Value> = env_globals.iter().map(|&g| proc.globals[g as usize]).collect();
    let call = flatten_values(proc, &node.vm, args, limit).map_err(|e| NotCopied::Value(what, e))?;
    let env = flatten_values(proc, &node.vm, &env_values, limit).map_err(|e| NotCopied::Value(what, e))?;
    Ok((call, env_globals, env))
}

/// Why the call of `spawn` or `spawn_on` was not copied out of the heap.
enum NotCopied {
    NotAFunction(String),
    /// For the named call.
    Value(&'static str, MessageError),
}

impl NotCopied {
    fn raise(self, proc: Box<Process>) -> SysOut {
        match self {
            NotCopied::NotAFunction(m) => err(proc, m),
            NotCopied::Value(what, e) => message_error(proc, what, e),
        }
    }
}

/// The node name `spawn_on` takes for "wherever the load is least" (no node may be
/// named so).
pub const ANY_NODE: &str = "any";

/// `spawn_on(node, f, args...)`: starts `f(args...)` on the named node (the seed's
/// non-preemptive migration) and returns its pid. The caller waits for the answer.
fn spawn_on(
    node: &NodeInner,
    pid: Pid,
    slot: &Arc<Slot>,
    mut proc: Box<Process>,
    c: SysCall,
    args: &[Value],
    local: &Worker<Task>,
) -> SysOut {
    if let Some(r) = proc.sys.take_io() {
        return match r {
            IoResult::Spawned(child) => ret(proc, c, Value::Pid(child)),
            IoResult::SpawnedAll(pids) => ret_pids(proc, c, pids),
            IoResult::Failed(e) => err(proc, e),
            _ => err(proc, "spawn_on: unexpected answer"),
        };
    }
    if let Value::Array(list) = args[0] {
        return spawn_on_all(node, pid, slot, proc, c, list, args);
    }
    let Value::Str(a) = args[0] else {
        return err(proc, format!("spawn_on: expected a node name, not {}", args[0].a_type()));
    };
    let mut name = match object::str_ref(&proc.heap, a) {
        Ok(s) => s.to_string(),
        Err(e) => return raise(proc, Exn::Heap(e)),
    };
    // "any": the least loaded node that takes new processes (alone: this one).
    if name == ANY_NODE {
        name = match node.remote() {
            None => node.name.clone(),
            Some(r) => match r.least_loaded().and_then(|id| r.node_name(id)) {
                Some(n) => n,
                None => return err(proc, "spawn_on: no node takes new processes (every node is drained or down)"),
            },
        };
    }
    if name == node.name {
        return spawn(node, pid, slot, proc, c, &args[1..], local);
    }
    if has_spawn_options(&proc, args) {
        return err(proc, "spawn_on: a group lives on one node: spawn into it with spawn, from its node (spawn options are for spawn; a child started elsewhere can call pin() itself)");
    }
    let (_, id) = match live_node(node, &name) {
        Ok(x) => x,
        Err(e) => return err(proc, format!("spawn_on: {e}")),
    };
    let (msg, env_globals, env) = match spawn_messages(node, &proc, &args[1..], "spawn_on") {
        Ok(m) => m,
        Err(e) => return e.raise(proc),
    };
    let carried = match take_ends(slot, &msg.rx_ends()) {
        Ok(x) => x,
        Err(ch) => return err(proc, not_held("spawn_on", ch)),
    };
    let spec = proc.spawn_spec(msg, env_globals, env);
    // Parked before asking, so the answer always finds it waiting.
    node.park_remote(slot, proc);
    if let Err(e) = node.spawn_remote(id, pid, spec, carried, None) {
        node.complete_io(pid, IoResult::Failed(format!("spawn_on: {e}")));
    }
    SysOut::Parked
}

/// Whether `spawn_on(node(s), f, args..., options)` was given spawn options: a map one
/// past the callee's arity (a map it takes as an argument is an argument).
fn has_spawn_options(proc: &Process, args: &[Value]) -> bool {
    args.len() > 2
        && matches!(args.last(), Some(Value::Map(_)))
        && callee_arity(proc, args[1]).is_some_and(|a| usize::from(a) + 3 == args.len())
}

/// Returns the pids of a `spawn_on` with a list (`nil` for a node that went down). The
/// answer is kept until the list is in the heap: a page it goes on may not be here yet
/// (lazy), and the call then runs again once it is and must not start the children again.
fn ret_pids(proc: Box<Process>, c: SysCall, pids: Vec<Option<Pid>>) -> SysOut {
    let vals: Vec<Value> = pids.iter().map(|p| p.map_or(Value::Nil, Value::Pid)).collect();
    match ret_alloc(proc, c, move |h| object::array_from(h, &vals).map(Value::Array)) {
        SysOut::Fault(mut proc, page) => {
            proc.sys.set_io(IoResult::SpawnedAll(pids));
            SysOut::Fault(proc, page)
        }
        other => other,
    }
}

/// `spawn_on([node, ...], f, args...)`: starts `f(args...)` on every node of the list at
/// once and returns their pids in the list's order (`nil` where a node went down
/// before it answered). The requests all go out before any answer is awaited: a
/// fan-out costs about one round trip, not one per node. Every name must be a node up
/// when it is called (else an error, and nothing is started); the call cannot carry a
/// receive end (it can go to one process only).
fn spawn_on_all(node: &NodeInner, pid: Pid, slot: &Arc<Slot>, proc: Box<Process>, c: SysCall, list: Addr, args: &[Value]) -> SysOut {
    let items = match object::array_values(&proc.heap, list) {
        Ok(v) => v,
        Err(e) => return raise(proc, Exn::Heap(e)),
    };
    let mut places = Vec::with_capacity(items.len());
    for v in items {
        let Value::Str(a) = v else {
            return err(proc, format!("spawn_on: expected a list of node names, and it holds {}", v.a_type()));
        };
        let name = match object::str_ref(&proc.heap, a) {
            Ok(s) => s.to_string(),
            Err(e) => return raise(proc, Exn::Heap(e)),
        };
        if name == node.name {
            places.push(None);
            continue;
        }
        match live_node(node, &name) {
            Ok((_, id)) => places.push(Some(id)),
            Err(e) => return err(proc, format!("spawn_on: {e}")),
        }
    }
    if has_spawn_options(&proc, args) {
        return err(proc, "spawn_on: a group lives on one node: spawn into it with spawn, from its node (spawn options are for spawn; a child started elsewhere can call pin() itself)");
    }
    let (msg, env_globals, env) = match spawn_messages(node, &proc, &args[1..], "spawn_on") {
        Ok(m) => m,
        Err(e) => return e.raise(proc),
    };
    if !msg.rx_ends().is_empty() {
        return err(proc, "spawn_on: a receive end goes to one process: it cannot be given to every node of a list");
    }
    let spec = proc.spawn_spec(msg, env_globals, env);
    let mut got: Vec<Option<Pid>> = vec![None; places.len()];
    let mut remote = 0;
    for (i, place) in places.iter().enumerate() {
        match place {
            // Started here as another node would start it: from the same spec.
            None => got[i] = node.spawn_from(&spec, Vec::new()).ok(),
            Some(_) => remote += 1,
        }
    }
    if remote == 0 {
        return ret_pids(proc, c, got);
    }
    node.start_spawn_batch(pid, got, remote);
    // Parked before asking, so every answer finds it waiting.
    node.park_remote(slot, proc);
    for (i, place) in places.into_iter().enumerate() {
        if let Some(id) = place {
            if node.spawn_remote(id, pid, spec.clone(), Vec::new(), Some(i)).is_err() {
                node.spawn_batch_answer(pid, i, None);
            }
        }
    }
    SysOut::Parked
}

/// `migrate(node)` moves the calling process to the named node: it waits parked in the
/// call (an interruptible wait, so it can be frozen at once) while the host moves it; on
/// the new node the call runs again, finds itself there and returns `true`. If the move
/// fails it raises an error on the node it stayed on. `migrate(pid, node)` moves another
/// process and returns `true` when it is there (the caller waits for the outcome).
fn migrate(node: &NodeInner, pid: Pid, slot: &Arc<Slot>, mut proc: Box<Process>, c: SysCall, args: &[Value]) -> SysOut {
    if let Some(r) = proc.sys.take_io() {
        return match r {
            IoResult::Migrated(_) => ret(proc, c, Value::Bool(true)),
            IoResult::Failed(e) => err(proc, format!("migrate: {e}")),
            _ => err(proc, "migrate: unexpected answer"),
        };
    }
    // Options come last, as a map.
    let (args, opts) = match args.split_last() {
        Some((Value::Map(m), rest)) if !rest.is_empty() => match migrate_opts(&proc, *m) {
            Ok(o) => (rest, o),
            Err(Exn::Error(e)) => return err(proc, format!("migrate: {e}")),
            Err(e) => return raise(proc, e),
        },
        _ => (args, MigrateOpts::default()),
    };
    let (target, name_arg) = match args {
        [n] => (pid, *n),
        [Value::Pid(p), n] => (*p, *n),
        [other, _] => return err(proc, format!("migrate: expected a pid, not {}", other.a_type())),
        _ => return err(proc, "migrate: expected (node), (pid, node), (node, options) or (pid, node, options)"),
    };
    let Value::Str(a) = name_arg else {
        return err(proc, format!("migrate: expected a node name, not {}", name_arg.a_type()));
    };
    let name = match object::str_ref(&proc.heap, a) {
        Ok(s) => s.to_string(),
        Err(e) => return raise(proc, Exn::Heap(e)),
    };
    if target == pid && name == node.name {
        return ret(proc, c, Value::Bool(true));
    }
    let (remote, id) = match live_node(node, &name) {
        Ok(x) => x,
        Err(e) => return err(proc, format!("migrate: {e}")),
    };
    if target == pid {
        let mut st = slot.st.lock();
        if let Some((proc, reason)) = node.park(pid, slot, &mut st, proc, &[], None) {
            return SysOut::Exit(proc, reason);
        }
        drop(st);
        if let Err(e) = remote.migrate(pid, id, None, &opts) {
            node.answer_migrate(pid, IoResult::Failed(e));
        }
    } else {
        // Parked before asking, so the answer always finds it waiting.
        node.park_remote(slot, proc);
        if let Err(e) = remote.migrate(target, id, Some(pid), &opts) {
            node.answer_migrate(pid, IoResult::Failed(e));
        }
    }
    SysOut::Parked
}

/// `migrate_group(g, node)` moves every member of group `g` (its members here: a group
/// lives on one node) to the named node in one migration, and returns `true` when they
/// are there; `migrate_group(pid, node)` moves the group of process `pid`, wherever it
/// is; with options as `migrate`'s. A member that calls it moves too: it waits in an
/// interruptible wait, so it can be frozen with the others, and on the new node the call
/// runs again, finds the group there and returns `true`.
fn migrate_group(node: &NodeInner, pid: Pid, slot: &Arc<Slot>, mut proc: Box<Process>, c: SysCall, args: &[Value]) -> SysOut {
    if let Some(r) = proc.sys.take_io() {
        return match r {
            IoResult::Migrated(_) => ret(proc, c, Value::Bool(true)),
            IoResult::Failed(e) => err(proc, format!("migrate_group: {e}")),
            _ => err(proc, "migrate_group: unexpected answer"),
        };
    }
    let opts = match args.get(2) {
        Some(Value::Map(m)) => match migrate_opts(&proc, *m) {
            Ok(o) => MigrateOpts { group: true, ..o },
            Err(Exn::Error(e)) => return err(proc, format!("migrate_group: {e}")),
            Err(e) => return raise(proc, e),
        },
        Some(other) => return err(proc, format!("migrate_group: options are a map, not {}", other.a_type())),
        None => MigrateOpts { group: true, ..MigrateOpts::default() },
    };
    let Value::Str(a) = args[1] else {
        return err(proc, format!("migrate_group: expected a node name, not {}", args[1].a_type()));
    };
    let name = match object::str_ref(&proc.heap, a) {
        Ok(s) => s.to_string(),
        Err(e) => return raise(proc, Exn::Heap(e)),
    };
    let mine = proc.sys.group;
    let (leader, member) = match args[0] {
        Value::Group(g) => {
            if g == mine && name == node.name {
                return ret(proc, c, Value::Bool(true));
            }
            let members = node.groups.lock().members(g);
            let Some(&leader) = members.first() else {
                return err(
                    proc,
                    format!(
                        "migrate_group: <group {}> has no members on node {} (a group lives on one node: name one of its members instead)",
                        name_text(g),
                        node.name
                    ),
                );
            };
            if name == node.name {
                return ret(proc, c, Value::Bool(true));
            }
            (leader, g == mine)
        }
        Value::Pid(p) => {
            let member = p == pid || (mine != 0 && node.groups.lock().group_of(p) == Some(mine));
            if member && name == node.name {
                return ret(proc, c, Value::Bool(true));
            }
            (p, member)
        }
        other => return err(proc, format!("migrate_group: expected a group or a pid, not {}", other.a_type())),
    };
    let (remote, id) = match live_node(node, &name) {
        Ok(x) => x,
        Err(e) => return err(proc, format!("migrate_group: {e}")),
    };
    if member {
        // It moves with them: an interruptible wait, answered only if the move fails.
        let mut st = slot.st.lock();
        if let Some((proc, reason)) = node.park(pid, slot, &mut st, proc, &[], None) {
            return SysOut::Exit(proc, reason);
        }
    } else {
        // Parked before asking, so the answer always finds it waiting.
        node.park_remote(slot, proc);
    }
    if let Err(e) = remote.migrate(leader, id, Some(pid), &opts) {
        node.answer_migrate(pid, IoResult::Failed(e));
    }
    SysOut::Parked
}

/// The options of `migrate(..., {forwarding: "resend", mechanism: "lazy"})`.
fn migrate_opts(proc: &Process, m: crate::value::Addr) -> Result<MigrateOpts, Exn> {
    let mut o = MigrateOpts::default();
    for (k, v) in object::map_entries(&proc.heap, m).map_err(Exn::Heap)? {
        let text = |v: Value, what: &str| -> Result<String, Exn> {
            match v {
                Value::Str(a) => Ok(object::str_ref(&proc.heap, a).map_err(Exn::Heap)?.to_string()),
                other => Err(Exn::Error(format!("{what} expects a string, not {}", other.a_type()))),
            }
        };
        let key = text(k, "an option's name")?;
        match key.as_str() {
            "forwarding" => o.forwarding = Some(text(v, "forwarding")?.parse().map_err(Exn::Error)?),
            "mechanism" => o.mechanism = Some(text(v, "mechanism")?),
            other => return Err(Exn::Error(format!("unknown option {other:?} (expected forwarding or mechanism)"))),
        }
    }
    Ok(o)
}

/// The mesh node named `name`, which must be up: how to reach it, and its id.
fn live_node<'a>(node: &'a NodeInner, name: &str) -> Result<(&'a Arc<dyn super::Remote>, u16), String> {
    let Some(remote) = node.remote() else {
        return Err(format!("there is no node {name:?} (this node is not part of a mesh)"));
    };
    let Some(id) = remote.node_id(name) else {
        return Err(format!("there is no node {name:?} in the mesh"));
    };
    if !remote.live_nodes().iter().any(|n| n == name) {
        return Err(format!("node {name} is down"));
    }
    Ok((remote, id))
}

fn not_held(what: &str, ch: ChanId) -> String {
    format!("{what}: this process does not hold <receiver {}> (a receive end that was sent away cannot be used here)", name_text(ch))
}

/// Removes receive ends (and their queues) from a process that is sending them away.
fn take_ends(slot: &Arc<Slot>, ends: &[ChanId]) -> Result<Vec<(ChanId, VecDeque<crate::message::Message>)>, ChanId> {
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    let mut st = slot.st.lock();
    if let Some(&ch) = ends.iter().find(|&&ch| !st.mailbox.holds(ch)) {
        return Err(ch);
    }
    let mut out = Vec::with_capacity(ends.len());
    for &ch in ends {
        if let Some(i) = st.mailbox.chans.iter().position(|(id, _)| *id == ch) {
            let (id, q) = st.mailbox.chans.swap_remove(i);
            st.mailbox.bytes = st.mailbox.bytes.saturating_sub(q.iter().map(crate::message::Message::approx_bytes).sum::<usize>());
            out.push((id, q));
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn send(
    node: &NodeInner,
    pid: Pid,
    slot: &Arc<Slot>,
    proc: Box<Process>,
    c: SysCall,
    dest: Value,
    v: Value,
    local: &Worker<Task>,
) -> SysOut {
    let target = match dest {
        Value::Pid(p) => Target::Inbox(p),
        Value::Tx(ch) => Target::Chan(ch),
        Value::Rx(_) => return err(proc, "send: cannot send on a receive end (send on its send end)"),
        other => return err(proc, format!("send: expected a pid or a send end, not {}", other.a_type())),
    };
    // A congested link to the target: wait before copying anything (see `back_pressure`).
    let proc = match back_pressure(node, pid, slot, proc, target) {
        Ok(p) => p,
        Err(out) => return out,
    };
    // (First: a page of the value not here yet runs the call again once it is.)
    let msg = match flatten(&proc, &node.vm, v, node.config.message_limit_bytes) {
        Ok(m) => m,
        Err(e) => return message_error(proc, "send", e),
    };
    // An earlier message from this process was lost on its way (see `remote.rs`,
    // "Bounds"): this send fails instead, saying so, and a retry goes through.
    // (The flag first, then the note: a loss reported meanwhile sets it again.)
    let lost = if slot.flags.load(std::sync::atomic::Ordering::SeqCst) & LOST != 0 {
        slot.flags.fetch_and(!LOST, std::sync::atomic::Ordering::SeqCst);
        slot.st.lock().lost.take()
    } else {
        None
    };
    if let Some((n, first)) = lost {
        let more = if n > 1 { format!(", and {} more since", n - 1) } else { String::new() };
        return err(proc, format!("send: not sent: an earlier message from this process was lost ({first}{more})"));
    }
    let ends = msg.rx_ends();
    if let Target::Chan(ch) = target {
        if ends.contains(&ch) {
            return err(proc, "send: cannot send a receive end into its own channel");
        }
    }
    let carried = match take_ends(slot, &ends) {
        Ok(x) => x,
        Err(ch) => return err(proc, not_held("send", ch)),
    };
    slot.meter.sent(msg.approx_bytes() as u64);
    match node.send_as(SentBy::Process(pid), target, msg, carried, Some(local)) {
        Ok(_) => ret(proc, c, Value::Nil),
        Err(e) => err(proc, format!("send: {}", node.send_error(&e))),
    }
}

/// How long a sender waits between looks at a congested link.
const BACK_OFF_US: u64 = 2_000;

/// Back-pressure (see `remote.rs`, "Bounds"): while the link to the node `target` is on
/// is congested, the sending process waits, parked, and its `send` runs again every
/// [`BACK_OFF_US`], for at most the settle timeout; after that the message is offered to
/// the link anyway (a link that is still full refuses it: a catchable error). Other
/// processes on the node run meanwhile. `Ok`: go on sending.
fn back_pressure(node: &NodeInner, pid: Pid, slot: &Arc<Slot>, mut proc: Box<Process>, target: Target) -> Result<Box<Process>, SysOut> {
    if !node.link_congested(target) {
        proc.sys.deadline_us = None;
        return Ok(proc);
    }
    let now = node.now_us();
    let give_up = *proc.sys.deadline_us.get_or_insert_with(|| now.saturating_add(node.config.settle_timeout.as_micros() as u64));
    if now >= give_up {
        proc.sys.deadline_us = None;
        return Ok(proc);
    }
    node.counters.backed_off.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut st = slot.st.lock();
    Err(match node.park(pid, slot, &mut st, proc, &[], Some(now.saturating_add(BACK_OFF_US).min(give_up))) {
        None => SysOut::Parked,
        Some((p, reason)) => SysOut::Exit(p, reason),
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Recv,
    Select,
    Sleep,
}

/// Takes the first message waiting on `sources`, or parks the process until one comes
/// or the timeout passes.
#[allow(clippy::too_many_arguments)]
fn receive(
    node: &NodeInner,
    pid: Pid,
    slot: &Arc<Slot>,
    mut proc: Box<Process>,
    c: SysCall,
    sources: &[Source],
    timeout: Option<u64>,
    mode: Mode,
) -> SysOut {
    // The clock is read only for a wait with a timeout.
    let deadline = timeout.map(|ms| *proc.sys.deadline_us.get_or_insert_with(|| node.now_us().saturating_add(ms.saturating_mul(1000))));
    let mut collected = false;
    loop {
        let mut st = slot.st.lock();
        if let Some(ch) = sources.iter().find_map(|s| match s {
            Source::Chan(ch) if !st.mailbox.holds(*ch) => Some(*ch),
            _ => None,
        }) {
            drop(st);
            proc.sys.deadline_us = None;
            return err(proc, not_held(if mode == Mode::Select { "select" } else { "recv" }, ch));
        }
        let found = sources.iter().copied().find(|s| st.mailbox.queue(*s).is_some_and(|q| !q.is_empty()));
        if let Some(src) = found {
            let Some(q) = st.mailbox.queue(src) else { continue };
            let Some(msg) = q.front() else { continue };
            match rebuild(msg, &mut proc, &node.vm) {
                Ok(v) => {
                    // `select` returns `[end, value]`: the pair is made before the message
                    // is taken, so that a page fault runs the call again with it queued.
                    let made = if mode == Mode::Select {
                        // The value is a root while the pair is allocated.
                        proc.regs[c.dst] = v;
                        let tag = match src {
                            Source::Inbox => Value::Pid(pid),
                            Source::Chan(ch) => Value::Rx(ch),
                        };
                        let dst = c.dst;
                        let pair = |h: &mut Heap, v: Value| object::array_from(h, &[tag, v]).map(Value::Array);
                        let mut r = pair(&mut proc.heap, v);
                        if r.is_err_and(HeapError::is_full) && proc.collect_garbage().is_ok() {
                            let v = proc.regs[dst];
                            r = pair(&mut proc.heap, v);
                        }
                        r
                    } else {
                        Ok(v)
                    };
                    if let Err(HeapError::Fault(page)) = made {
                        drop(st);
                        return SysOut::Fault(proc, page);
                    }
                    let bytes = st.mailbox.queue(src).and_then(|q| q.pop_front()).map_or(0, |m| m.approx_bytes());
                    st.mailbox.bytes = st.mailbox.bytes.saturating_sub(bytes);
                    drop(st);
                    proc.sys.deadline_us = None;
                    return match made {
                        Ok(v) => ret(proc, c, v),
                        Err(e) if e.is_full() => {
                            let m = proc.heap.full_error(e);
                            err(proc, m)
                        }
                        Err(e) => raise(proc, Exn::Heap(e)),
                    };
                }
                Err(MessageError::Heap(HeapError::Fault(page))) => {
                    // The message stays queued; the call runs again with the page here.
                    drop(st);
                    return SysOut::Fault(proc, page);
                }
                Err(MessageError::Heap(e)) if e.is_full() && !collected => {
                    drop(st);
                    collected = true;
                    match proc.collect_garbage() {
                        // No room to collect: the receive fails below, as for a full heap.
                        Ok(()) | Err(HeapError::OutOfMemory(_)) => {}
                        Err(_) => return raise(proc, Exn::Heap(HeapError::Corrupt)),
                    }
                    continue;
                }
                Err(e) => {
                    let bytes = q.pop_front().map_or(0, |m| m.approx_bytes());
                    st.mailbox.bytes = st.mailbox.bytes.saturating_sub(bytes);
                    drop(st);
                    proc.sys.deadline_us = None;
                    let e = match e {
                        MessageError::Heap(e) if e.is_full() => format!("{} while receiving a message", proc.heap.full_error(e)),
                        e => format!("cannot receive a message: {e}"),
                    };
                    return err(proc, e);
                }
            }
        }
        if deadline.is_some_and(|d| node.now_us() >= d) {
            drop(st);
            proc.sys.deadline_us = None;
            return ret(proc, c, if mode == Mode::Sleep { Value::Nil } else { Value::Timeout });
        }
        return match node.park(pid, slot, &mut st, proc, sources, deadline) {
            None => {
                if mode == Mode::Recv && st.status == super::slot::Status::Waiting {
                    if let Ok(dst) = u32::try_from(c.dst) {
                        st.recv_dst = dst;
                    }
                }
                SysOut::Parked
            }
            Some((p, reason)) => SysOut::Exit(p, reason),
        };
    }
}

fn link(node: &NodeInner, pid: Pid, slot: &Arc<Slot>, proc: Box<Process>, c: SysCall, p: Pid) -> SysOut {
    if node.is_away(p) {
        // (Its birth node, `resend`: where it is must be asked.)
        {
            let mut st = slot.st.lock();
            if !st.links.contains(&p) {
                st.links.push(p);
            }
        }
        node.locate_then(p, super::locate::Waiting::Op(Op::Link { pid: p, from: pid }));
        return ret(proc, c, Value::Nil);
    }
    if let Some(n) = node.remote_node_of(p) {
        // The other node answers with an exit signal if `p` has ended.
        {
            let mut st = slot.st.lock();
            if !st.links.contains(&p) {
                st.links.push(p);
            }
        }
        if node.remote_send(n, Op::Link { pid: p, from: pid }).is_err() {
            node.exit_signal(pid, p, &ExitReason::Killed("node_down".into()));
        }
        return ret(proc, c, Value::Nil);
    }
    let alive = node
        .with_live(p, |_, _, st| {
            if !st.links.contains(&pid) {
                st.links.push(pid);
            }
        })
        .is_some();
    let mut st = slot.st.lock();
    if alive {
        if !st.links.contains(&p) {
            st.links.push(p);
        }
        drop(st);
        return ret(proc, c, Value::Nil);
    }
    let trap = st.trap_exits;
    drop(st);
    if trap {
        let _ = node.deliver(Target::Inbox(pid), event_message("exit", p, "noproc"), Vec::new(), None);
        ret(proc, c, Value::Nil)
    } else {
        SysOut::Exit(proc, ExitReason::Killed(format!("linked process <pid {}> ended: noproc", name_text(p))))
    }
}

/// Adds `watcher` to `p`'s monitors; false if `p` has ended.
fn add_watcher(node: &NodeInner, p: Pid, watcher: Pid) -> bool {
    if node.is_away(p) {
        node.locate_then(p, super::locate::Waiting::Op(Op::Monitor { pid: p, watcher }));
        return true;
    }
    if let Some(n) = node.remote_node_of(p) {
        node.count_remote_monitor(n, watcher, p);
        if node.remote_send(n, Op::Monitor { pid: p, watcher }).is_err() {
            node.forget_monitor(n, watcher, p);
            let _ = node.deliver(Target::Inbox(watcher), event_message("down", p, "node_down"), Vec::new(), None);
        }
        return true;
    }
    node.with_live(p, |_, _, st| st.watchers.push(watcher)).is_some()
}

/// A path relative to the node's file root, checked: no `..` out of the root.
fn file_name(proc: &Process, v: Value) -> Result<String, Exn> {
    let Value::Str(a) = v else { return Err(Exn::Error(format!("open: expected a path string, not {}", v.a_type()))) };
    // (A page of it not here yet: the call runs again once it is.)
    let s = object::str_ref(&proc.heap, a).map_err(Exn::Heap)?;
    checked_path(s).map_err(Exn::Error)
}

fn checked_path(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains('\0') {
        return Err(format!("open: bad path {s:?}"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("open: {s:?} is outside the node's file root"));
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(format!("open: bad path {s:?}"));
    }
    Ok(parts.join("/"))
}

fn open(node: &NodeInner, pid: Pid, slot: &Arc<Slot>, mut proc: Box<Process>, c: SysCall, path: Value, mode: Value) -> SysOut {
    let name = match file_name(&proc, path) {
        Ok(n) => n,
        Err(e) => return raise(proc, e),
    };
    let mode = match mode {
        Value::Nil => FileMode::Read,
        Value::Str(a) => match object::str_ref(&proc.heap, a).map(FileMode::parse) {
            Ok(Some(m)) => m,
            Err(e @ HeapError::Fault(_)) => return raise(proc, Exn::Heap(e)),
            Ok(None) | Err(_) => {
                let shown = crate::fmt::repr(&proc.heap, &proc.linked, mode).unwrap_or_default();
                let m = format!("open: bad mode {shown} (use \"r\", \"w\", \"a\" or \"r+\")");
                return err(proc, m);
            }
        },
        other => return err(proc, format!("open: the mode must be a string, not {}", other.a_type())),
    };
    let open_now = proc.sys.files.iter().filter(|f| f.is_some()).count();
    if open_now >= node.config.max_files {
        let m = format!("open: this process has {open_now} files open, its limit ([limits] files = {})", node.config.max_files);
        return err(proc, m);
    }
    match proc.sys.take_io() {
        Some(IoResult::Opened) => {
            let entry = Some(OpenFile { name, mode, offset: 0 });
            let files = &mut proc.sys.files;
            let i = match files.iter().position(Option::is_none) {
                Some(i) => {
                    files[i] = entry;
                    i
                }
                None => {
                    files.push(entry);
                    files.len() - 1
                }
            };
            ret(proc, c, Value::File(i as u32))
        }
        Some(IoResult::Failed(m)) => err(proc, m),
        Some(_) => err(proc, "open: unexpected file result"),
        None => {
            node.start_io(pid, slot, proc, FileOp::Open { name, mode });
            SysOut::Parked
        }
    }
}

/// The resource-table index of a file argument that is open.
fn file_entry(proc: Box<Process>, f: Value, what: &str) -> Result<(Box<Process>, usize), SysOut> {
    let Value::File(i) = f else { return Err(err(proc, format!("{what}: expected a file, not {}", f.a_type()))) };
    match proc.sys.files.get(i as usize) {
        Some(Some(_)) => Ok((proc, i as usize)),
        _ => Err(err(proc, format!("{what}: the file is closed"))),
    }
}

#[allow(clippy::too_many_arguments)]
fn read(node: &NodeInner, pid: Pid, slot: &Arc<Slot>, proc: Box<Process>, c: SysCall, f: Value, n: Value, line: bool) -> SysOut {
    let what = if line { "read_line" } else { "read" };
    let (mut proc, i) = match file_entry(proc, f, what) {
        Ok(x) => x,
        Err(out) => return out,
    };
    let Some(Some(file)) = proc.sys.files.get(i).cloned() else { return err(proc, format!("{what}: the file is closed")) };
    if !file.mode.can_read() {
        return err(proc, format!("{what}: {} is not open for reading", file.name));
    }
    let max = match n {
        Value::Nil => MAX_READ,
        Value::Int(k) if k >= 0 => (k as u64).min(MAX_READ),
        other => {
            let m = format!("read: expected a byte count, not {}", show(&proc, other));
            return err(proc, m);
        }
    };
    match proc.sys.take_io() {
        Some(IoResult::Read { data, offset }) => {
            if data.is_empty() && (max > 0 || line) {
                if let Some(Some(f)) = proc.sys.files.get_mut(i) {
                    f.offset = offset;
                }
                return ret(proc, c, Value::Nil);
            }
            let mut text = String::from_utf8_lossy(&data).into_owned();
            if line {
                if text.ends_with('\n') {
                    text.pop();
                }
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            // The offset moves on only with the text in the heap: a page the string goes
            // on may not be here yet (lazy), and the call then runs again once it is,
            // and must find the same bytes (else it would read past them).
            match ret_alloc(proc, c, move |h| object::alloc_str(h, &text).map(Value::Str)) {
                SysOut::Fault(mut proc, page) => {
                    proc.sys.set_io(IoResult::Read { data, offset });
                    SysOut::Fault(proc, page)
                }
                SysOut::Continue(mut proc) => {
                    if let Some(Some(f)) = proc.sys.files.get_mut(i) {
                        f.offset = offset;
                    }
                    SysOut::Continue(proc)
                }
                other => other,
            }
        }
        Some(IoResult::Failed(m)) => err(proc, m),
        Some(_) => err(proc, format!("{what}: unexpected file result")),
        None => {
            node.start_io(pid, slot, proc, FileOp::Read { name: file.name, offset: file.offset, max, line });
            SysOut::Parked
        }
    }
}

/// `read_line()`: the next line of the console the program was started from (`tern
/// run`'s stdin, its `tern repl`, its `tern ctl spawn --attach`), wherever the process
/// runs now; nil at the end of the input. It asks for line `k` (the lines it has read so
/// far) and waits — an interruptible wait, so it can be frozen and moved at once; the
/// call runs again where it is restored, and asks again from there, getting the same
/// line (`crate::console_in`). The line counts as read only once it is in the heap.
fn console_read(node: &NodeInner, pid: Pid, slot: &Arc<Slot>, mut proc: Box<Process>, c: SysCall) -> SysOut {
    let k = proc.sys.console_reads;
    let line = match proc.sys.take_io() {
        Some(IoResult::ConsoleLine { k: got, line }) if got == k => line,
        // Nothing yet (or an answer to an older request): ask, parked first so that the
        // answer always finds it waiting.
        _ => {
            let console = proc.sys.console;
            let mut st = slot.st.lock();
            if let Some((proc, reason)) = node.park(pid, slot, &mut st, proc, &[], None) {
                return SysOut::Exit(proc, reason);
            }
            drop(st);
            if let Some(line) = node.console.request_line(console, pid, k) {
                node.console_line(pid, k, line);
            }
            return SysOut::Parked;
        }
    };
    let Some(text) = line else {
        proc.sys.console_reads = k + 1;
        return ret(proc, c, Value::Nil);
    };
    let copy = text.clone();
    match ret_alloc(proc, c, move |h| object::alloc_str(h, &copy).map(Value::Str)) {
        SysOut::Fault(mut proc, page) => {
            proc.sys.set_io(IoResult::ConsoleLine { k, line: Some(text) });
            SysOut::Fault(proc, page)
        }
        SysOut::Continue(mut proc) => {
            proc.sys.console_reads = k + 1;
            SysOut::Continue(proc)
        }
        other => other,
    }
}

fn write(node: &NodeInner, pid: Pid, slot: &Arc<Slot>, proc: Box<Process>, c: SysCall, f: Value, data: Value) -> SysOut {
    let (mut proc, i) = match file_entry(proc, f, "write") {
        Ok(x) => x,
        Err(out) => return out,
    };
    let Some(Some(file)) = proc.sys.files.get(i).cloned() else { return err(proc, "write: the file is closed") };
    if !file.mode.can_write() {
        return err(proc, format!("write: {} is open for reading only", file.name));
    }
    match proc.sys.take_io() {
        Some(IoResult::Wrote { count, offset }) => {
            if let Some(Some(f)) = proc.sys.files.get_mut(i) {
                f.offset = offset;
            }
            ret(proc, c, Value::Int(count as i64))
        }
        Some(IoResult::Failed(m)) => err(proc, m),
        Some(_) => err(proc, "write: unexpected file result"),
        None => {
            let bytes = match data {
                Value::Str(a) => match object::str_ref(&proc.heap, a) {
                    Ok(s) => s.as_bytes().to_vec(),
                    Err(e) => return raise(proc, Exn::Heap(e)),
                },
                other => return err(proc, format!("write: expected a string, not {}", other.a_type())),
            };
            let op = FileOp::Write { name: file.name, offset: file.offset, append: file.mode == FileMode::Append, data: bytes };
            node.start_io(pid, slot, proc, op);
            SysOut::Parked
        }
    }
}
