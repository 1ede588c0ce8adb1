//! The bytecode: one opcode table, and the module format.
//!
//! Instructions are register-based (like Lua 5.4): `R[a]` is register `a` of the
//! current frame, `K[k]` a constant of the module, `G[g]` a global of the module, `U[u]`
//! a captured variable (a box) of the running closure. Jump offsets are relative to
//! the next instruction.
//!
//! The [`opcodes!`] table below is the single definition of the instruction set: the
//! `Op` enum (matched by the interpreter, so a new opcode cannot be forgotten there),
//! its serde encoding, its name, its one-line meaning and its disassembly all come from
//! it.

use serde::{Deserialize, Serialize};

macro_rules! opcodes {
    ($( $name:ident { $($field:ident : $ty:ty),* } = $meaning:literal, )*) => {
        /// One instruction. See the table in `bytecode.rs` for each meaning.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum Op {
            $( #[doc = $meaning] $name { $($field: $ty),* }, )*
        }

        impl Op {
            /// The instruction's mnemonic.
            pub fn name(&self) -> &'static str {
                match self { $( Op::$name { .. } => stringify!($name), )* }
            }

            /// The instruction's one-line meaning.
            pub fn meaning(&self) -> &'static str {
                match self { $( Op::$name { .. } => $meaning, )* }
            }

            /// The operands as (field name, value) pairs, for disassembly.
            pub fn operands(&self) -> Vec<(&'static str, i64)> {
                match *self {
                    $( #[allow(unused_variables)] Op::$name { $($field),* } => vec![$((stringify!($field), $field as i64)),*], )*
                }
            }

            /// Every mnemonic with its meaning, in table order.
            pub const TABLE: &'static [(&'static str, &'static str)] = &[$((stringify!($name), $meaning)),*];
        }
    };
}

opcodes! {
    LoadNil { a: u8 } = "R[a] := nil",
    LoadBool { a: u8, v: bool } = "R[a] := v",
    LoadInt { a: u8, v: i32 } = "R[a] := v (a small integer)",
    LoadK { a: u8, k: u32 } = "R[a] := K[k]",
    Move { a: u8, b: u8 } = "R[a] := R[b]",
    GetGlobal { a: u8, g: u32 } = "R[a] := G[g]",
    SetGlobal { g: u32, a: u8 } = "G[g] := R[a]",
    GetUpval { a: u8, u: u8 } = "R[a] := value of box U[u]",
    SetUpval { u: u8, a: u8 } = "value of box U[u] := R[a]",
    MakeBox { a: u8 } = "R[a] := a new box holding R[a]",
    GetBox { a: u8, b: u8 } = "R[a] := value of box R[b]",
    SetBox { a: u8, b: u8 } = "value of box R[a] := R[b]",
    Closure { a: u8, f: u32 } = "R[a] := closure of function f, capturing per its upvalue list",
    Add { a: u8, b: u8, c: u8 } = "R[a] := R[b] + R[c]",
    Sub { a: u8, b: u8, c: u8 } = "R[a] := R[b] - R[c]",
    Mul { a: u8, b: u8, c: u8 } = "R[a] := R[b] * R[c]",
    Div { a: u8, b: u8, c: u8 } = "R[a] := R[b] / R[c]",
    Mod { a: u8, b: u8, c: u8 } = "R[a] := R[b] % R[c]",
    AddI { a: u8, b: u8, v: i16 } = "R[a] := R[b] + v",
    AddK { a: u8, b: u8, k: u16 } = "R[a] := R[b] + K[k] (K[k] a number)",
    SubK { a: u8, b: u8, k: u16 } = "R[a] := R[b] - K[k] (K[k] a number)",
    MulK { a: u8, b: u8, k: u16 } = "R[a] := R[b] * K[k] (K[k] a number)",
    DivK { a: u8, b: u8, k: u16 } = "R[a] := R[b] / K[k] (K[k] a number)",
    ModK { a: u8, b: u8, k: u16 } = "R[a] := R[b] % K[k] (K[k] a number)",
    Neg { a: u8, b: u8 } = "R[a] := -R[b]",
    Not { a: u8, b: u8 } = "R[a] := not R[b]",
    BitAnd { a: u8, b: u8, c: u8 } = "R[a] := R[b] & R[c] (ints)",
    BitOr { a: u8, b: u8, c: u8 } = "R[a] := R[b] | R[c] (ints)",
    BitXor { a: u8, b: u8, c: u8 } = "R[a] := R[b] ^ R[c] (ints)",
    Shl { a: u8, b: u8, c: u8 } = "R[a] := R[b] << R[c] (ints; count 0..63; bits shifted out are an overflow error)",
    Shr { a: u8, b: u8, c: u8 } = "R[a] := R[b] >> R[c] (ints; count 0..63; arithmetic: the sign is kept)",
    BitNot { a: u8, b: u8 } = "R[a] := ~R[b] (an int)",
    Eq { a: u8, b: u8, c: u8 } = "R[a] := R[b] == R[c]",
    Ne { a: u8, b: u8, c: u8 } = "R[a] := R[b] != R[c]",
    Lt { a: u8, b: u8, c: u8 } = "R[a] := R[b] < R[c]",
    Le { a: u8, b: u8, c: u8 } = "R[a] := R[b] <= R[c]",
    Jmp { off: i32 } = "pc += off",
    JmpIf { a: u8, off: i32 } = "if R[a] is truthy: pc += off",
    JmpIfNot { a: u8, off: i32 } = "if R[a] is falsy: pc += off",
    JmpIfNotLt { b: u8, c: u8, off: i32 } = "if not R[b] < R[c]: pc += off",
    JmpIfNotLe { b: u8, c: u8, off: i32 } = "if not R[b] <= R[c]: pc += off",
    JmpIfNotEq { b: u8, c: u8, off: i32 } = "if not R[b] == R[c]: pc += off",
    JmpIfEq { b: u8, c: u8, off: i32 } = "if R[b] == R[c]: pc += off",
    JmpIfLt { b: u8, c: u8, off: i32 } = "if R[b] < R[c]: pc += off",
    JmpIfLe { b: u8, c: u8, off: i32 } = "if R[b] <= R[c]: pc += off",
    JmpIfLtI { b: u8, v: i16, off: i32 } = "if R[b] < v: pc += off",
    JmpIfLeI { b: u8, v: i16, off: i32 } = "if R[b] <= v: pc += off",
    JmpIfGtI { b: u8, v: i16, off: i32 } = "if R[b] > v: pc += off",
    JmpIfGeI { b: u8, v: i16, off: i32 } = "if R[b] >= v: pc += off",
    JmpIfNil { a: u8, off: i32 } = "if R[a] is nil: pc += off",
    JmpIfNotNil { a: u8, off: i32 } = "if R[a] is not nil: pc += off",
    JmpIfNotLtI { b: u8, v: i16, off: i32 } = "if not R[b] < v: pc += off",
    JmpIfNotLeI { b: u8, v: i16, off: i32 } = "if not R[b] <= v: pc += off",
    JmpIfNotGtI { b: u8, v: i16, off: i32 } = "if not R[b] > v: pc += off",
    JmpIfNotGeI { b: u8, v: i16, off: i32 } = "if not R[b] >= v: pc += off",
    JmpIfNotEqI { b: u8, v: i16, off: i32 } = "if not R[b] == v: pc += off",
    JmpIfEqI { b: u8, v: i16, off: i32 } = "if R[b] == v: pc += off",
    Call { a: u8, n: u8 } = "R[a] := R[a](R[a+1], ..., R[a+n])",
    Return { a: u8 } = "return R[a]",
    ReturnNil {} = "return nil",
    NewArray { a: u8, b: u8, n: u8 } = "R[a] := [R[b], ..., R[b+n-1]]",
    NewMap { a: u8, b: u8, n: u8 } = "R[a] := {R[b]: R[b+1], ...} (n pairs)",
    GetIndex { a: u8, b: u8, c: u8 } = "R[a] := R[b][R[c]]",
    SetIndex { a: u8, b: u8, c: u8 } = "R[a][R[b]] := R[c]",
    GetField { a: u8, b: u8, k: u32 } = "R[a] := R[b][K[k]] (K[k] a string)",
    SetField { a: u8, k: u32, c: u8 } = "R[a][K[k]] := R[c] (K[k] a string)",
    Concat { a: u8, b: u8, n: u8 } = "R[a] := to_string(R[b]) ++ ... ++ to_string(R[b+n-1])",
    ForPrep { a: u8, off: i32 } = "check R[a] (start), R[a+1] (end) are ints; if R[a] < R[a+1]: R[a+2] := R[a] else pc += off",
    ForLoop { a: u8, off: i32 } = "R[a] += 1; if R[a] < R[a+1]: R[a+2] := R[a]; pc += off",
    IterNext { a: u8, n: u8, off: i32 } = "next of R[a] at cursor R[a+1]: n=1: R[a+2] := element/key/char; n=2: R[a+2], R[a+3] := index/key, element/value; at end pc += off",
    Import { a: u8, k: u32 } = "R[a] := exports of module K[k], running its top level once per process",
    Try { a: u8, off: i32 } = "push a handler: on error R[a] := error value and pc := next + off",
    EndTry {} = "pop the innermost handler of this frame",
}

/// A constant of a module.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Const {
    Int(i64),
    Float(f64),
    Str(String),
    /// A native function, by name (resolved against the node's native table at load).
    Native(String),
    /// Another module, by content hash.
    Module(ModuleHash),
}

/// Where a closure's captured variable comes from when the closure is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpvalDesc {
    /// True: register `index` of the enclosing function (which holds a box); false:
    /// captured variable `index` of the enclosing closure.
    pub from_local: bool,
    pub index: u8,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Function {
    pub name: String,
    pub arity: u8,
    /// Registers used (parameters first); at most 256.
    pub nregs: u16,
    pub upvals: Vec<UpvalDesc>,
    pub code: Vec<Op>,
    /// Source line of each instruction (same length as `code`).
    pub lines: Vec<u32>,
}

/// A compiled module: function 0 runs the module's top level and returns its exports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Module {
    /// The source file name, for messages.
    pub name: String,
    pub consts: Vec<Const>,
    pub functions: Vec<Function>,
    /// Names of the module's globals (top-level `let` and `fn`).
    pub globals: Vec<String>,
}

/// A module's identity: the blake3 hash of its encoded bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModuleHash(pub [u8; 32]);

impl std::fmt::Debug for ModuleHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for ModuleHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Magic bytes at the start of every encoded module.
pub const MODULE_MAGIC: [u8; 4] = *b"TRNM";
/// Version of the module encoding; bumped on any change to [`Module`] or [`Op`].
/// 2: the bitwise instructions (`BitAnd` ... `BitNot`), which renumber the ones after them.
pub const MODULE_VERSION: u16 = 2;
/// Largest encoded module accepted.
pub const MODULE_MAX_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    TooLarge(usize),
    BadMagic,
    WrongVersion(u16),
    Malformed(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooLarge(n) => write!(f, "module of {n} bytes exceeds the {MODULE_MAX_BYTES}-byte limit"),
            DecodeError::BadMagic => write!(f, "not a Tern module (bad magic bytes)"),
            DecodeError::WrongVersion(v) => write!(f, "module format version {v}, this VM reads version {MODULE_VERSION}"),
            DecodeError::Malformed(e) => write!(f, "malformed module: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl Module {
    /// Encodes the module: magic, version (u16 little-endian), postcard body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&MODULE_MAGIC);
        out.extend_from_slice(&MODULE_VERSION.to_le_bytes());
        // Serialising plain data into a Vec cannot fail.
        let body = postcard::to_allocvec(self).unwrap_or_default();
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Module, DecodeError> {
        if bytes.len() > MODULE_MAX_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        if bytes.len() < 6 || bytes[..4] != MODULE_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != MODULE_VERSION {
            return Err(DecodeError::WrongVersion(version));
        }
        let (m, rest): (Module, &[u8]) = postcard::take_from_bytes(&bytes[6..]).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DecodeError::Malformed(format!("{} trailing bytes", rest.len())));
        }
        Ok(m)
    }

    pub fn hash(&self) -> ModuleHash {
        hash_bytes(&self.encode())
    }
}

pub fn hash_bytes(bytes: &[u8]) -> ModuleHash {
    ModuleHash(*blake3::hash(bytes).as_bytes())
}

/// Human-readable listing of a module.
pub fn disassemble(m: &Module) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "module {} ({} constants, {} functions, {} globals)", m.name, m.consts.len(), m.functions.len(), m.globals.len());
    for (i, c) in m.consts.iter().enumerate() {
        let _ = writeln!(s, "  K{i:<4} {}", const_text(c));
    }
    for (i, g) in m.globals.iter().enumerate() {
        let _ = writeln!(s, "  G{i:<4} {g}");
    }
    for (fi, f) in m.functions.iter().enumerate() {
        let _ = writeln!(s, "\nfn #{fi} {} (arity {}, {} registers, {} upvalues)", f.name, f.arity, f.nregs, f.upvals.len());
        for (ui, u) in f.upvals.iter().enumerate() {
            let _ = writeln!(s, "  U{ui:<4} {} {}", if u.from_local { "local R" } else { "upval U" }, u.index);
        }
        for (pc, op) in f.code.iter().enumerate() {
            let line = f.lines.get(pc).copied().unwrap_or(0);
            let ops: Vec<String> = op
                .operands()
                .into_iter()
                .map(|(name, v)| match name {
                    "a" | "b" | "c" => format!("R{v}"),
                    "k" => format!("K{v}"),
                    "g" => format!("G{v}"),
                    "u" => format!("U{v}"),
                    "f" => format!("fn#{v}"),
                    "off" => format!("->{}", pc as i64 + 1 + v),
                    _ => v.to_string(),
                })
                .collect();
            let mut text = format!("{:<11}{}", op.name(), ops.join(" "));
            let note = match op {
                Op::LoadK { k, .. } | Op::GetField { k, .. } | Op::SetField { k, .. } | Op::Import { k, .. } => {
                    m.consts.get(*k as usize).map(const_text)
                }
                Op::GetGlobal { g, .. } | Op::SetGlobal { g, .. } => m.globals.get(*g as usize).cloned(),
                _ => None,
            };
            if let Some(n) = note {
                text = format!("{text:<30}; {n}");
            }
            let _ = writeln!(s, "  {pc:>4}  [{line:>3}]  {text}");
        }
    }
    s
}

fn const_text(c: &Const) -> String {
    match c {
        Const::Int(i) => i.to_string(),
        Const::Float(f) => format!("{f:?}"),
        Const::Str(s) => format!("{s:?}"),
        Const::Native(n) => format!("native {n}"),
        Const::Module(h) => format!("module {h}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_is_eight_bytes() {
        assert_eq!(std::mem::size_of::<Op>(), 8);
    }

    #[test]
    fn every_opcode_has_a_meaning() {
        for (name, meaning) in Op::TABLE {
            assert!(!meaning.is_empty(), "{name}");
        }
    }

    #[test]
    fn encode_decode_roundtrip_and_rejects_garbage() {
        let m = Module {
            name: "t.tern".into(),
            consts: vec![Const::Int(1), Const::Str("x".into())],
            functions: vec![Function {
                name: "main".into(),
                arity: 0,
                nregs: 1,
                upvals: vec![],
                code: vec![Op::LoadK { a: 0, k: 0 }, Op::Return { a: 0 }],
                lines: vec![1, 1],
            }],
            globals: vec![],
        };
        let bytes = m.encode();
        assert_eq!(Module::decode(&bytes).unwrap(), m);
        assert_eq!(m.hash(), Module::decode(&bytes).unwrap().hash());
        assert_eq!(Module::decode(b"nope"), Err(DecodeError::BadMagic));
        let mut wrong = bytes.clone();
        wrong[4] = 9;
        assert_eq!(Module::decode(&wrong), Err(DecodeError::WrongVersion(9)));
        assert!(matches!(Module::decode(&bytes[..bytes.len() - 1]), Err(DecodeError::Malformed(_))));
    }
}
