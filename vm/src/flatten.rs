//! Values leaving a process and entering another: [`flatten`] copies a value out of a
//! process's heap into a [`Message`] (plain data, see `message.rs`), [`rebuild`] copies a
//! message into a heap, and a child process is started from the flattened call and
//! globals its parent sent ([`Process::spawn`], [`Process::from_spec`]).
//!
//! Sharing and cycles are preserved both ways (objects are numbered as they are met);
//! sizes are checked against a limit while copying out, and everything a message says
//! is checked while copying in (it may come from another machine).

use crate::bytecode::ModuleHash;
use crate::heap::Heap;
use crate::message::{Message, MessageError, Obj, Val};
use crate::object;
use crate::process::{Frame, ModuleInstance, ModuleState, ProcSys, Process, SpawnSpec, NOT_INIT};
use crate::runtime::Vm;
use crate::value::{Addr, FnRef, Value};
use std::collections::HashMap;

/// What one value counts for against a message's size limit.
const VALUE_BYTES: usize = 16;

fn invalid<T>(m: impl Into<String>) -> Result<T, MessageError> {
    Err(MessageError::Invalid(m.into()))
}

/// A value that is whole in itself (no heap object, no code): its message form.
fn scalar_val(v: Value) -> Option<Val> {
    Some(match v {
        Value::Nil => Val::Nil,
        Value::Bool(b) => Val::Bool(b),
        Value::Int(i) => Val::Int(i),
        Value::Float(x) => Val::Float(x),
        Value::Pid(p) => Val::Pid(p),
        Value::Tx(c) => Val::Tx(c),
        Value::Rx(c) => Val::Rx(c),
        Value::Timeout => Val::Timeout,
        Value::Group(g) => Val::Group(g),
        _ => return None,
    })
}

/// Copies `v` out of `proc` (at a safepoint). `limit_bytes` bounds the copy's size.
pub fn flatten(proc: &Process, vm: &Vm, v: Value, limit_bytes: usize) -> Result<Message, MessageError> {
    // A number, a pid and the like (most messages): nothing to walk, no table to build.
    let scalar = scalar_val(v);
    if let Some(root) = scalar.filter(|_| limit_bytes >= VALUE_BYTES) {
        return Ok(Message::scalar(root));
    }
    let mut f =
        Flattener { proc, vm, heap: &proc.heap, index: HashMap::new(), objs: Vec::new(), pending: Vec::new(), size: 0, limit: limit_bytes };
    let root = f.val(v)?;
    while let Some((i, a, v)) = f.pending.pop() {
        let obj = f.contents(a, v)?;
        f.objs[i as usize] = obj;
    }
    Ok(Message { root, objs: f.objs })
}

/// Copies several values out of `proc` as one message whose root is an array of them
/// (spawn arguments and the like), sharing objects between them.
pub fn flatten_values(proc: &Process, vm: &Vm, vs: &[Value], limit_bytes: usize) -> Result<Message, MessageError> {
    let mut f =
        Flattener { proc, vm, heap: &proc.heap, index: HashMap::new(), objs: Vec::new(), pending: Vec::new(), size: 0, limit: limit_bytes };
    f.objs.push(Obj::Box(Val::Nil));
    let mut items = Vec::with_capacity(vs.len());
    for &v in vs {
        items.push(f.val(v)?);
    }
    f.objs[0] = Obj::Array(items);
    while let Some((i, a, v)) = f.pending.pop() {
        let obj = f.contents(a, v)?;
        f.objs[i as usize] = obj;
    }
    Ok(Message { root: Val::Obj(0), objs: f.objs })
}

struct Flattener<'a> {
    proc: &'a Process,
    vm: &'a Vm,
    heap: &'a Heap,
    index: HashMap<Addr, u32>,
    objs: Vec<Obj>,
    /// Objects given an index whose contents are still to be copied (an explicit stack,
    /// so deep structures do not recurse).
    pending: Vec<(u32, Addr, Value)>,
    size: usize,
    limit: usize,
}

impl Flattener<'_> {
    fn charge(&mut self, bytes: usize) -> Result<(), MessageError> {
        self.size += bytes;
        if self.size > self.limit {
            return Err(MessageError::TooLarge(self.limit));
        }
        Ok(())
    }

    fn module_of(&self, f: FnRef) -> Result<ModuleHash, MessageError> {
        match self.proc.modules.get(f.module as usize) {
            Some(m) => Ok(m.hash),
            None => invalid("function of an unknown module"),
        }
    }

    fn val(&mut self, v: Value) -> Result<Val, MessageError> {
        self.charge(VALUE_BYTES)?;
        Ok(match v {
            Value::Func(f) => Val::Func { module: self.module_of(f)?, func: f.func },
            Value::Native(n) => match self.vm.natives.get(n) {
                Some(d) => Val::Native(d.name.to_string()),
                None => return invalid("unknown native function"),
            },
            Value::File(_) => return Err(MessageError::NotSendable("an open file")),
            Value::Str(a) | Value::Array(a) | Value::Map(a) | Value::Closure(a) | Value::Box(a) => {
                if let Some(&i) = self.index.get(&a) {
                    return Ok(Val::Obj(i));
                }
                let i = self.objs.len() as u32;
                self.index.insert(a, i);
                self.objs.push(Obj::Box(Val::Nil));
                self.pending.push((i, a, v));
                Val::Obj(i)
            }
            _ => match scalar_val(v) {
                Some(x) => x,
                None => return invalid("a value of an unknown kind"),
            },
        })
    }

    fn contents(&mut self, a: Addr, v: Value) -> Result<Obj, MessageError> {
        let heap = self.heap;
        Ok(match v {
            Value::Str(_) => {
                let s = object::str_ref(heap, a)?;
                self.charge(s.len())?;
                Obj::Str(s.to_string())
            }
            Value::Array(_) => {
                let items = object::array_values(heap, a)?;
                let mut out = Vec::with_capacity(items.len());
                for x in items {
                    out.push(self.val(x)?);
                }
                Obj::Array(out)
            }
            Value::Map(_) => {
                let entries = object::map_entries(heap, a)?;
                let mut out = Vec::with_capacity(entries.len());
                for (k, x) in entries {
                    out.push((self.val(k)?, self.val(x)?));
                }
                Obj::Map(out)
            }
            Value::Closure(_) => {
                let f = object::closure_fn(heap, a)?;
                let n = object::closure_box_count(heap, a)?;
                let mut boxes = Vec::with_capacity(n);
                for i in 0..n {
                    match self.val(Value::Box(object::closure_box(heap, a, i)?))? {
                        Val::Obj(b) => boxes.push(b),
                        _ => return invalid("closure capture is not a box"),
                    }
                }
                Obj::Closure { module: self.module_of(f)?, func: f.func, boxes }
            }
            _ => Obj::Box(self.val(object::box_get(heap, a)?)?),
        })
    }
}

/// The value of a message that is one scalar needing nothing of the receiver (no heap,
/// no module linked, no channel end carried), as [`rebuild`] would make it.
pub fn plain_value(msg: &Message) -> Option<Value> {
    if msg.objs.is_empty() {
        plain(&msg.root)
    } else {
        None
    }
}

/// A value that stands for itself (no module, no receive end, no object).
fn plain(v: &Val) -> Option<Value> {
    Some(match *v {
        Val::Nil => Value::Nil,
        Val::Bool(b) => Value::Bool(b),
        Val::Int(i) => Value::Int(i),
        Val::Float(x) => Value::Float(x),
        Val::Pid(p) => Value::Pid(p),
        Val::Tx(c) => Value::Tx(c),
        Val::Timeout => Value::Timeout,
        Val::Group(g) => Value::Group(g),
        Val::Rx(_) | Val::Native(_) | Val::Func { .. } | Val::Obj(_) => return None,
    })
}

/// A value that refers to no object: nothing to allocate.
fn rebuild_scalar(v: &Val, proc: &mut Process, vm: &Vm) -> Result<Value, MessageError> {
    Ok(match v {
        Val::Rx(c) => Value::Rx(*c),
        Val::Native(name) => match vm.natives.lookup(name) {
            Some(id) => Value::Native(id),
            None => return invalid(format!("unknown native function `{name}`")),
        },
        Val::Func { module, func } => {
            let slot = proc.link(*module, vm).map_err(|_| MessageError::MissingModule(*module))?;
            match proc.linked[slot as usize].module.functions.get(*func as usize) {
                Some(f) if f.upvals.is_empty() && *func != 0 => Value::Func(FnRef { module: slot, func: *func }),
                Some(_) => return invalid("function captures a different number of variables"),
                None => return invalid("function index out of range"),
            }
        }
        Val::Obj(_) => return invalid("object reference out of range"),
        // (What is left stands for itself.)
        _ => return plain(v).ok_or(MessageError::Invalid(String::new())),
    })
}

/// Builds the values of a message made by [`flatten_values`] in `proc`'s heap, without
/// the array that holds them in the message (so scalars cost no heap at all).
pub fn rebuild_values(msg: &Message, proc: &mut Process, vm: &Vm) -> Result<Vec<Value>, MessageError> {
    match (&msg.root, msg.objs.first()) {
        (Val::Obj(0), Some(Obj::Array(items))) if items.iter().all(|v| !matches!(v, Val::Obj(_))) && msg.objs.len() == 1 => {
            // Only scalars and functions: check them as a message would be checked.
            items.iter().map(|v| rebuild_scalar(v, proc, vm)).collect()
        }
        _ => match rebuild(msg, proc, vm)? {
            Value::Array(a) => Ok(object::array_values(&proc.heap, a)?),
            _ => invalid("not a list of values"),
        },
    }
}

/// Builds the message's value in `proc`'s heap (linking any module its functions come
/// from). Everything is checked first: a bad message changes nothing but garbage.
pub fn rebuild(msg: &Message, proc: &mut Process, vm: &Vm) -> Result<Value, MessageError> {
    if msg.objs.is_empty() {
        return rebuild_scalar(&msg.root, proc, vm);
    }
    let n = msg.objs.len();
    let is_box = |i: u32| matches!(msg.objs.get(i as usize), Some(Obj::Box(_)));
    // Every value refers to an object of the message, and never to a box (boxes are
    // reachable only through the closures that capture them).
    let check = |v: &Val| match v {
        Val::Obj(i) if *i as usize >= n => invalid(format!("object reference {i} out of range")),
        Val::Obj(i) if is_box(*i) => invalid("a box cannot be a value"),
        _ => Ok(()),
    };
    check(&msg.root)?;
    // Functions first: they need the modules linked, and must match their capture counts.
    let mut fns: HashMap<(ModuleHash, u32), FnRef> = HashMap::new();
    let mut link = |proc: &mut Process, module: ModuleHash, func: u32, boxes: Option<usize>| -> Result<FnRef, MessageError> {
        let slot = proc.link(module, vm).map_err(|_| MessageError::MissingModule(module))?;
        let Some(f) = proc.linked[slot as usize].module.functions.get(func as usize) else {
            return invalid("function index out of range");
        };
        if f.upvals.len() != boxes.unwrap_or(0) || func == 0 {
            return invalid("function captures a different number of variables");
        }
        let r = FnRef { module: slot, func };
        fns.insert((module, func), r);
        Ok(r)
    };
    for o in &msg.objs {
        match o {
            Obj::Str(_) => {}
            Obj::Array(items) => items.iter().try_for_each(check)?,
            Obj::Map(pairs) => {
                for (k, v) in pairs {
                    check(k)?;
                    check(v)?;
                    let key_ok = match k {
                        Val::Bool(_) | Val::Int(_) | Val::Pid(_) | Val::Tx(_) => true,
                        Val::Float(x) => !x.is_nan(),
                        Val::Obj(i) => matches!(msg.objs[*i as usize], Obj::Str(_)),
                        _ => false,
                    };
                    if !key_ok {
                        return invalid("map key of a type that cannot be a key");
                    }
                }
            }
            Obj::Closure { module, func, boxes } => {
                if !boxes.iter().all(|&b| is_box(b)) {
                    return invalid("closure capture is not a box");
                }
                link(proc, *module, *func, Some(boxes.len()))?;
            }
            Obj::Box(v) => check(v)?,
        }
    }
    let mut plain_fns = Vec::new();
    let walk = |v: &Val, out: &mut Vec<(ModuleHash, u32)>| {
        if let Val::Func { module, func } = v {
            out.push((*module, *func));
        }
    };
    walk(&msg.root, &mut plain_fns);
    for o in &msg.objs {
        match o {
            Obj::Array(items) => items.iter().for_each(|v| walk(v, &mut plain_fns)),
            Obj::Map(pairs) => pairs.iter().for_each(|(k, v)| {
                walk(k, &mut plain_fns);
                walk(v, &mut plain_fns);
            }),
            Obj::Box(v) => walk(v, &mut plain_fns),
            _ => {}
        }
    }
    for (module, func) in plain_fns {
        link(proc, module, func, None)?;
    }

    // Allocate every object, then fill in the references.
    let heap = &mut proc.heap;
    let mut addrs: Vec<Value> = Vec::with_capacity(n);
    for o in &msg.objs {
        addrs.push(match o {
            Obj::Str(s) => Value::Str(object::alloc_str(heap, s)?),
            Obj::Array(items) => Value::Array(object::new_array(heap, items.len())?),
            Obj::Map(pairs) => Value::Map(object::new_map(heap, pairs.len())?),
            Obj::Box(_) => Value::Box(object::new_box(heap, Value::Nil)?),
            Obj::Closure { .. } => Value::Nil,
        });
    }
    for (i, o) in msg.objs.iter().enumerate() {
        if let Obj::Closure { module, func, boxes } = o {
            let f = fns[&(*module, *func)];
            let boxes: Vec<Addr> = boxes.iter().map(|&b| addrs[b as usize].heap_ref().unwrap_or(0)).collect();
            addrs[i] = Value::Closure(object::new_closure(heap, f, &boxes)?);
        }
    }
    let value = |v: &Val| -> Result<Value, MessageError> {
        Ok(match v {
            Val::Nil => Value::Nil,
            Val::Bool(b) => Value::Bool(*b),
            Val::Int(i) => Value::Int(*i),
            Val::Float(x) => Value::Float(*x),
            Val::Func { module, func } => Value::Func(fns[&(*module, *func)]),
            Val::Native(name) => match vm.natives.lookup(name) {
                Some(id) => Value::Native(id),
                None => return invalid(format!("unknown native function `{name}`")),
            },
            Val::Obj(i) => addrs[*i as usize],
            Val::Pid(p) => Value::Pid(*p),
            Val::Tx(c) => Value::Tx(*c),
            Val::Rx(c) => Value::Rx(*c),
            Val::Timeout => Value::Timeout,
            Val::Group(g) => Value::Group(*g),
        })
    };
    for (i, o) in msg.objs.iter().enumerate() {
        match (o, addrs[i]) {
            (Obj::Array(items), Value::Array(a)) => {
                for x in items {
                    object::array_push(heap, a, value(x)?)?;
                }
            }
            (Obj::Map(pairs), Value::Map(m)) => {
                for (k, x) in pairs {
                    object::map_set(heap, m, value(k)?, value(x)?).map_err(|e| match e {
                        object::KeyError::Heap(h) => MessageError::Heap(h),
                        object::KeyError::BadKey(t) => MessageError::Invalid(format!("{t} cannot be a map key")),
                    })?;
                }
            }
            (Obj::Box(x), Value::Box(b)) => object::box_set(heap, b, value(x)?)?,
            _ => {}
        }
    }
    value(&msg.root)
}

impl Process {
    /// A new process that will call `callee(args...)`, with the same modules as
    /// `parent`. `call` is the flattened array `[callee, args...]`; `env` the flattened
    /// values of the parent's globals numbered `env_globals` (see
    /// [`Process::reachable_globals`]). Every other global starts as nil, and every
    /// module whose top level has run is seen as not run (a child runs no top level).
    pub fn spawn(parent: &Process, pid: u64, call: &Message, env_globals: &[u32], env: &Message, vm: &Vm) -> Result<Process, String> {
        let mut p = Process {
            pid,
            frames: Vec::new(),
            regs: Vec::new(),
            heap: Heap::new(vm.config.heap),
            globals: vec![Value::Nil; parent.globals.len()],
            modules: parent
                .modules
                .iter()
                .map(|m| ModuleInstance {
                    hash: m.hash,
                    globals_base: m.globals_base,
                    globals_len: m.globals_len,
                    state: match m.state {
                        ModuleState::Ready(_) => ModuleState::NotRun,
                        s => s,
                    },
                    strs: vec![0; m.strs.len()],
                })
                .collect(),
            handlers: Vec::new(),
            reductions: 0,
            rng: crate::value::mix64(parent.rng ^ pid),
            max_frames: parent.max_frames,
            sys: ProcSys { console: parent.sys.console, home: parent.home(), ..ProcSys::default() },
            linked: parent.linked.clone(),
            jit_rest: Default::default(),
        };
        let bad = |e: crate::heap::HeapError| format!("{e:?}");
        let env = rebuild_values(env, &mut p, vm).map_err(|e| e.to_string())?;
        if env.len() != env_globals.len() {
            return Err("bad spawn message".into());
        }
        for (&g, v) in env_globals.iter().zip(env) {
            *p.globals.get_mut(g as usize).ok_or("bad spawn message")? = v;
        }
        let vals = rebuild_values(call, &mut p, vm).map_err(|e| e.to_string())?;
        let (&callee, args) = vals.split_first().ok_or("bad spawn message")?;
        let nargs = args.len();
        let (fref, closure) = match callee {
            Value::Func(f) => (f, 0),
            Value::Closure(c) => (crate::object::closure_fn(&p.heap, c).map_err(bad)?, c),
            other => return Err(format!("spawn needs a Tern function, not {}", other.a_type())),
        };
        let func = p.linked.get(fref.module as usize).and_then(|m| m.module.functions.get(fref.func as usize)).ok_or("bad function")?;
        if usize::from(func.arity) != nargs {
            let name = if func.name.is_empty() { "function" } else { &func.name };
            return Err(format!("{name} expects {} argument{}, got {nargs}", func.arity, if func.arity == 1 { "" } else { "s" }));
        }
        p.regs = vec![Value::Nil; 1 + usize::from(func.nregs)];
        p.regs[0] = callee;
        p.regs[1..1 + nargs].copy_from_slice(args);
        // Room for this one frame only: a process that calls nothing more (one waiting in
        // `recv`, say) would otherwise carry room for four.
        p.frames.reserve_exact(1);
        p.frames.push(Frame { module: fref.module, func: fref.func, pc: 0, base: 1, ret: 0, closure, init_of: NOT_INIT });
        Ok(p)
    }

    /// Starts the child a [`SpawnSpec`] describes as process `pid`; every module must be
    /// in `vm` already. The spec comes from another node: all of it is checked.
    pub fn from_spec(spec: &SpawnSpec, pid: u64, vm: &Vm) -> Result<Process, String> {
        let mut parent = Process {
            pid: 0,
            frames: Vec::new(),
            regs: Vec::new(),
            heap: Heap::new(vm.config.heap),
            globals: Vec::new(),
            modules: Vec::new(),
            handlers: Vec::new(),
            reductions: 0,
            rng: spec.rng,
            max_frames: spec.max_frames.clamp(1, vm.config.max_frames.max(1)),
            sys: ProcSys { console: spec.console, home: spec.home, ..ProcSys::default() },
            linked: Vec::new(),
            jit_rest: Default::default(),
        };
        for m in &spec.modules {
            let lm = vm.module(&m.hash).ok_or_else(|| format!("module {} is missing", m.hash))?;
            if m.globals_base as usize != parent.globals.len() {
                return Err("bad spawn request: module globals out of place".into());
            }
            let n = lm.module.globals.len();
            if parent.globals.len() + n > 1 << 24 {
                return Err("bad spawn request: too many globals".into());
            }
            parent.globals.resize(parent.globals.len() + n, Value::Nil);
            parent.modules.push(ModuleInstance {
                hash: m.hash,
                globals_base: m.globals_base,
                globals_len: n as u32,
                state: if m.running { ModuleState::Running } else { ModuleState::NotRun },
                strs: vec![0; lm.module.consts.len()],
            });
            parent.linked.push(lm);
        }
        if spec.env_globals.iter().any(|&g| g as usize >= parent.globals.len()) {
            return Err("bad spawn request: global out of range".into());
        }
        Process::spawn(&parent, pid, &spec.call, &spec.env_globals, &spec.env, vm)
    }
}
