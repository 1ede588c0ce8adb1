//! What nodes say to each other inside the session protocol's payloads, and what an
//! operator (`tern ctl`, `tern repl`) says to a node.
//!
//! Every frame is a version byte followed by postcard. Decoding checks the length
//! against a cap before anything is allocated, rejects another version and trailing
//! bytes; no type here is recursive.

use serde::{Deserialize, Serialize};
use tern_vm::bytecode::ModuleHash;
use tern_vm::node::{FileOp, Op};
use tern_vm::process::IoResult;

/// The version of [`Frame`] and of the operator protocol.
pub const FRAME_VERSION: u8 = 1;

/// A node-to-node payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// An op for the VM (a message, a spawn, a link, ...).
    Vm(Op),
    /// Send me these modules (by content hash).
    WantModules(Vec<ModuleHash>),
    /// Modules, encoded (each one's hash is the blake3 of its bytes).
    Modules(Vec<Vec<u8>>),
    /// A request, answered by [`Frame::Answer`] with the same id.
    Ask {
        id: u64,
        query: Query,
    },
    Answer {
        id: u64,
        answer: Answer,
    },
    /// Console output of a process whose console is on the receiving node.
    Console {
        console: u64,
        pid: u64,
        text: String,
        failed: bool,
    },
    /// The sender's load, sent every heartbeat or so.
    Load(Load),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Query {
    /// A file operation on the receiving node's files (a plain name: its file root).
    File(FileOp),
    /// The processes on the receiving node.
    Ps,
    /// Start module `main`'s top level there (with `needs` present first), its output
    /// going to `console`.
    SpawnMain { main: ModuleHash, needs: Vec<ModuleHash>, console: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    File(IoResult),
    Ps(Vec<PsRow>),
    Spawned(Result<u64, String>),
}

/// A process as `ps` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsRow {
    pub pid: u64,
    pub node: String,
    pub status: String,
    pub reductions: u64,
    pub heap_pages: u64,
    pub mailbox: u64,
}

/// A node's load.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Load {
    pub processes: u64,
    /// Reductions per second over the last interval.
    pub reductions_per_s: u64,
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    TooLarge { len: usize, max: usize },
    Empty,
    WrongVersion(u8),
    Malformed(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::TooLarge { len, max } => write!(f, "frame of {len} bytes is over the limit of {max}"),
            WireError::Empty => write!(f, "empty frame"),
            WireError::WrongVersion(v) => write!(f, "frame version {v}, this node speaks version {FRAME_VERSION}"),
            WireError::Malformed(e) => write!(f, "malformed frame: {e}"),
        }
    }
}

impl std::error::Error for WireError {}

/// A value as a versioned frame.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![FRAME_VERSION];
    // Serialising plain data into a Vec cannot fail.
    out.extend_from_slice(&postcard::to_allocvec(v).unwrap_or_default());
    out
}

/// A versioned frame's value; `max` caps its length.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], max: usize) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge { len: bytes.len(), max });
    }
    let (&v, rest) = bytes.split_first().ok_or(WireError::Empty)?;
    if v != FRAME_VERSION {
        return Err(WireError::WrongVersion(v));
    }
    let (value, extra) = postcard::take_from_bytes::<T>(rest).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !extra.is_empty() {
        return Err(WireError::Malformed(format!("{} bytes after the end", extra.len())));
    }
    Ok(value)
}

/// An operator's request (`tern ctl`, `tern repl`), one per bidirectional stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CtlRequest {
    /// The nodes of the mesh as this node sees them.
    Nodes,
    /// Processes on one node, or on every node that is up.
    Ps {
        node: Option<String>,
    },
    /// Load these modules and start `main`'s top level on `on` (this node if `None`).
    /// With `wait`, the answer comes when it ends (it must run on this node).
    Spawn {
        modules: Vec<Vec<u8>>,
        main: ModuleHash,
        on: Option<String>,
        wait: bool,
    },
    Kill {
        pid: u64,
    },
    /// Opens this connection's console: the node sends every output line of processes
    /// started from it on the stream, as [`CtlReply::Output`].
    Console,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CtlReply {
    Nodes(Vec<NodeRow>),
    Ps(Vec<PsRow>),
    Spawned {
        pid: u64,
        node: String,
    },
    /// A process started with `wait` ended (`failed`: with an uncaught error); `lines`
    /// console lines were sent before this answer.
    Ended {
        pid: u64,
        reason: String,
        failed: bool,
        lines: u64,
    },
    Done,
    Output {
        pid: u64,
        text: String,
        failed: bool,
    },
    Error(String),
}

/// A node as `nodes` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRow {
    pub name: String,
    pub addr: String,
    /// `up` or `down`.
    pub status: String,
    pub processes: u64,
    pub load: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_bytes_are_errors() {
        let f = Frame::WantModules(vec![ModuleHash([7; 32])]);
        let b = encode(&f);
        assert_eq!(decode::<Frame>(&b, 1 << 20), Ok(f));
        assert_eq!(decode::<Frame>(&b, 4), Err(WireError::TooLarge { len: b.len(), max: 4 }));
        let mut w = b.clone();
        w[0] = 9;
        assert_eq!(decode::<Frame>(&w, 1 << 20), Err(WireError::WrongVersion(9)));
        for n in 0..b.len() {
            assert!(decode::<Frame>(&b[..n], 1 << 20).is_err());
        }
        let mut extra = b.clone();
        extra.push(0);
        assert!(decode::<Frame>(&extra, 1 << 20).is_err());
        let mut seed = 1u64;
        for _ in 0..2000 {
            let len = (tern_vm::value::mix64(seed) % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    seed = tern_vm::value::mix64(seed ^ i as u64);
                    seed as u8
                })
                .collect();
            let mut b = vec![FRAME_VERSION];
            b.extend(bytes);
            let _ = decode::<Frame>(&b, 1 << 20);
        }
    }
}
