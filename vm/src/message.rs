//! Values in transit between processes: plain data, independent of any heap (copied out
//! of and into heaps by `flatten.rs`).
//!
//! Processes share nothing, so a value sent to another process (a message, a spawn
//! argument) is deep-copied. A [`Message`] is that copy in transit: a table of objects
//! that refer to each other by index — no heap addresses, no recursion in the types, so
//! it is safe to encode for the wire — with sharing and cycles preserved. Functions
//! travel by module hash and function index, natives by name, so the receiver resolves
//! them against its own code.

use crate::bytecode::ModuleHash;
use crate::heap::HeapError;
use serde::{Deserialize, Serialize};

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
    Group(u64),
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
