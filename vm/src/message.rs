//! Values leaving a process: flattened into plain data, and rebuilt in another heap.
//!
//! Processes share nothing, so a value sent to another process (a message, a spawn
//! argument) is deep-copied. A [`Message`] is that copy in transit: a table of objects
//! that refer to each other by index — no heap addresses, no recursion in the types, so
//! it is safe to encode for the wire — with sharing and cycles preserved. Functions
//! travel by module hash and function index, natives by name, so the receiver resolves
//! them against its own code.

use crate::bytecode::ModuleHash;
use crate::heap::{Heap, HeapError};
use crate::object;
use crate::process::Process;
use crate::runtime::Vm;
use crate::value::{Addr, FnRef, Value};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A value inside a message: a scalar, or a reference to one of its objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Val {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Func { module: ModuleHash, func: u32 },
    Native(String),
    Obj(u32),
    Pid(u64),
    Tx(u64),
    Rx(u64),
    Timeout,
}

/// An object inside a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Obj {
    Str(String),
    Array(Vec<Val>),
    Map(Vec<(Val, Val)>),
    /// `boxes` are indices of `Box` objects.
    Closure {
        module: ModuleHash,
        func: u32,
        boxes: Vec<u32>,
    },
    Box(Val),
}

/// Where numbered messages come from: a node, in one incarnation (a node that restarts
/// numbers afresh from 0 under a new `inc`, so the messages of its old incarnation that
/// are still on their way keep their own order beside the new ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Origin {
    pub node: u16,
    /// The incarnation: when that node started (µs since the Unix epoch, or any number
    /// that grows from one start of a node to the next).
    pub inc: u64,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} (incarnation {})", self.node, self.inc)
    }
}

/// A deep copy of a value, independent of any heap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub root: Val,
    pub objs: Vec<Obj>,
}

impl Message {
    /// A message holding one scalar value (a notification, a reply).
    pub fn scalar(root: Val) -> Message {
        Message { root, objs: Vec::new() }
    }

    /// The channel receive ends inside the message (each once, in order of appearance).
    pub fn rx_ends(&self) -> Vec<u64> {
        let mut out = Vec::new();
        self.each_val(|v| {
            if let Val::Rx(c) = v {
                if !out.contains(c) {
                    out.push(*c);
                }
            }
        });
        out
    }

    /// Every value in the message (the root, then the objects' contents).
    fn each_val(&self, mut f: impl FnMut(&Val)) {
        f(&self.root);
        for o in &self.objs {
            match o {
                Obj::Array(items) => items.iter().for_each(&mut f),
                Obj::Map(pairs) => pairs.iter().for_each(|(k, v)| {
                    f(k);
                    f(v);
                }),
                Obj::Box(v) => f(v),
                Obj::Str(_) | Obj::Closure { .. } => {}
            }
        }
    }

    /// The channel send ends inside the message (each once).
    pub fn tx_ends(&self) -> Vec<u64> {
        let mut out = Vec::new();
        self.each_val(|v| {
            if let Val::Tx(c) = v {
                if !out.contains(c) {
                    out.push(*c);
                }
            }
        });
        out
    }

    /// The modules the message's functions and closures come from (each once): what a
    /// node must have before it can rebuild the message.
    pub fn modules(&self) -> Vec<ModuleHash> {
        let mut out = Vec::new();
        let mut add = |h: &ModuleHash| {
            if !out.contains(h) {
                out.push(*h);
            }
        };
        self.each_val(|v| {
            if let Val::Func { module, .. } = v {
                add(module);
            }
        });
        for o in &self.objs {
            if let Obj::Closure { module, .. } = o {
                add(module);
            }
        }
        out
    }

    /// Approximate size in bytes, as counted against mailbox limits.
    pub fn approx_bytes(&self) -> usize {
        let mut n = 32;
        for o in &self.objs {
            n += 16
                + match o {
                    Obj::Str(s) => s.len(),
                    Obj::Array(items) => 16 * items.len(),
                    Obj::Map(pairs) => 32 * pairs.len(),
                    Obj::Closure { boxes, .. } => 40 + 4 * boxes.len(),
                    Obj::Box(_) => 16,
                };
        }
        n
    }
}

/// Why a value could not be copied out of, or into, a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// The value is larger than the limit (in bytes, approximately).
    TooLarge(usize),
    /// A heap access failed (a page fault or a damaged reference, in the sender; the
    /// heap limit, in the receiver).
    Heap(HeapError),
    /// The message is inconsistent (hostile or damaged).
    Invalid(String),
    /// The receiver's node lacks a module the message's functions need.
    MissingModule(ModuleHash),
    /// The value holds something that cannot leave its process.
    NotSendable(&'static str),
}

impl std::fmt::Display for MessageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageError::TooLarge(n) => write!(f, "message larger than the {n}-byte limit"),
            MessageError::Heap(e) => write!(f, "heap access failed while copying a message: {e}"),
            MessageError::Invalid(m) => write!(f, "invalid message: {m}"),
            MessageError::MissingModule(h) => write!(f, "message refers to module {h}, which is not loaded here"),
            MessageError::NotSendable(what) => write!(f, "{what} cannot be sent to another process"),
        }
    }
}

impl std::error::Error for MessageError {}

impl From<HeapError> for MessageError {
    fn from(e: HeapError) -> Self {
        MessageError::Heap(e)
    }
}

fn invalid<T>(m: impl Into<String>) -> Result<T, MessageError> {
    Err(MessageError::Invalid(m.into()))
}

/// Copies `v` out of `proc` (at a safepoint). `limit_bytes` bounds the copy's size.
pub fn flatten(proc: &Process, vm: &Vm, v: Value, limit_bytes: usize) -> Result<Message, MessageError> {
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
        self.charge(16)?;
        Ok(match v {
            Value::Nil => Val::Nil,
            Value::Bool(b) => Val::Bool(b),
            Value::Int(i) => Val::Int(i),
            Value::Float(x) => Val::Float(x),
            Value::Func(f) => Val::Func { module: self.module_of(f)?, func: f.func },
            Value::Native(n) => match self.vm.natives.get(n) {
                Some(d) => Val::Native(d.name.to_string()),
                None => return invalid("unknown native function"),
            },
            Value::Pid(p) => Val::Pid(p),
            Value::Tx(c) => Val::Tx(c),
            Value::Rx(c) => Val::Rx(c),
            Value::Timeout => Val::Timeout,
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

/// A value that refers to no object: nothing to allocate.
fn rebuild_scalar(v: &Val, proc: &mut Process, vm: &Vm) -> Result<Value, MessageError> {
    Ok(match v {
        Val::Nil => Value::Nil,
        Val::Bool(b) => Value::Bool(*b),
        Val::Int(i) => Value::Int(*i),
        Val::Float(x) => Value::Float(*x),
        Val::Pid(p) => Value::Pid(*p),
        Val::Tx(c) => Value::Tx(*c),
        Val::Rx(c) => Value::Rx(*c),
        Val::Timeout => Value::Timeout,
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
