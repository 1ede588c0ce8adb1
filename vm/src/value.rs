//! Tern values, as held in registers and (encoded as two words) in heap objects.
//!
//! A value is plain data: scalars inline, everything else an [`Addr`] inside the owning
//! process's paged heap. No value ever holds a machine pointer, so a process's registers
//! and pages can be copied to another machine as they are.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// A word address inside a process's heap (page number = `addr >> page_shift`).
pub type Addr = u32;

/// A function, by module slot (an index into the process's module table) and function
/// index inside that module. Slots, not hashes, keep values two words wide; the module
/// table maps slots to content hashes, which is what a snapshot records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(C)]
pub struct FnRef {
    pub module: u32,
    pub func: u32,
}

impl FnRef {
    pub fn pack(self) -> u64 {
        (u64::from(self.module) << 32) | u64::from(self.func)
    }
    pub fn unpack(w: u64) -> FnRef {
        FnRef { module: (w >> 32) as u32, func: w as u32 }
    }
}

/// Bits of a pid or channel id below the node it was born on.
pub const NAME_SERIAL_BITS: u32 = 48;

/// A pid or channel id from its birth node and serial number.
pub fn make_name(node: u16, serial: u64) -> u64 {
    (u64::from(node) << NAME_SERIAL_BITS) | (serial & ((1 << NAME_SERIAL_BITS) - 1))
}

/// The node a pid or channel id was born on.
pub fn name_node(name: u64) -> u16 {
    (name >> NAME_SERIAL_BITS) as u16
}

/// `node.serial`, as pids and channel ids are printed.
pub fn name_text(name: u64) -> String {
    format!("{}.{}", name_node(name), name & ((1 << NAME_SERIAL_BITS) - 1))
}

/// A 64-bit mixing function (splitmix64's finaliser), for seeds.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49eb_133c_11eb);
    z ^ (z >> 31)
}

/// A Tern value. `Copy`, 16 bytes; laid out as C would (`layout`), which compiled code
/// relies on: the variant's tag in byte 0, its payload from byte 8.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[repr(C, u8)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Addr),
    Array(Addr),
    Map(Addr),
    /// A function with captured variables: a heap object holding its `FnRef` and boxes.
    Closure(Addr),
    /// A function without captured variables: no heap object needed.
    Func(FnRef),
    /// A native (Rust) function, by index in the node's native table.
    Native(u32),
    /// A heap cell holding a variable captured by a closure. Never visible to programs:
    /// only registers of captured locals and closure objects hold boxes.
    Box(Addr),
    /// A process id: unique across the mesh, unchanged when the process moves.
    Pid(u64),
    /// The send end of a channel (by channel id); copies are clones of the end.
    Tx(u64),
    /// The receive end of a channel; exactly one process holds it at a time.
    Rx(u64),
    /// An open file: an index into the process's resource table.
    File(u32),
    /// What a receive returns when its time runs out.
    Timeout,
    /// A coprocess group (`group()`): a name like a pid's, unique across the mesh.
    Group(u64),
}

/// Tags of values encoded in heap words (`[tag, payload]`).
pub mod tag {
    pub const NIL: u64 = 0;
    pub const BOOL: u64 = 1;
    pub const INT: u64 = 2;
    pub const FLOAT: u64 = 3;
    pub const STR: u64 = 4;
    pub const ARRAY: u64 = 5;
    pub const MAP: u64 = 6;
    pub const CLOSURE: u64 = 7;
    pub const FUNC: u64 = 8;
    pub const NATIVE: u64 = 9;
    pub const BOX: u64 = 10;
    // Location-independent names, not heap objects.
    pub const PID: u64 = 11;
    pub const TX: u64 = 12;
    pub const RX: u64 = 13;
    pub const FILE: u64 = 14;
    pub const TIMEOUT: u64 = 15;
    pub const GROUP: u64 = 16;
    /// Marks a deleted map entry. Never a value.
    pub const TOMBSTONE: u64 = 0xff;
}

impl Value {
    /// Encodes the value as `[tag, payload]` heap words.
    #[inline]
    pub fn encode(self) -> (u64, u64) {
        match self {
            Value::Nil => (tag::NIL, 0),
            Value::Bool(b) => (tag::BOOL, b as u64),
            Value::Int(i) => (tag::INT, i as u64),
            Value::Float(f) => (tag::FLOAT, f.to_bits()),
            Value::Str(a) => (tag::STR, a as u64),
            Value::Array(a) => (tag::ARRAY, a as u64),
            Value::Map(a) => (tag::MAP, a as u64),
            Value::Closure(a) => (tag::CLOSURE, a as u64),
            Value::Func(f) => (tag::FUNC, f.pack()),
            Value::Native(n) => (tag::NATIVE, n as u64),
            Value::Box(a) => (tag::BOX, a as u64),
            Value::Pid(p) => (tag::PID, p),
            Value::Tx(c) => (tag::TX, c),
            Value::Rx(c) => (tag::RX, c),
            Value::File(f) => (tag::FILE, u64::from(f)),
            Value::Timeout => (tag::TIMEOUT, 0),
            Value::Group(g) => (tag::GROUP, g),
        }
    }

    /// Decodes `[tag, payload]` heap words; `None` for a tag no value has.
    #[inline(always)]
    pub fn decode(t: u64, p: u64) -> Option<Value> {
        Some(match t {
            tag::NIL => Value::Nil,
            tag::BOOL => Value::Bool(p != 0),
            tag::INT => Value::Int(p as i64),
            tag::FLOAT => Value::Float(f64::from_bits(p)),
            tag::STR => Value::Str(p as Addr),
            tag::ARRAY => Value::Array(p as Addr),
            tag::MAP => Value::Map(p as Addr),
            tag::CLOSURE => Value::Closure(p as Addr),
            tag::FUNC => Value::Func(FnRef::unpack(p)),
            tag::NATIVE => Value::Native(p as u32),
            tag::BOX => Value::Box(p as Addr),
            tag::PID => Value::Pid(p),
            tag::TX => Value::Tx(p),
            tag::RX => Value::Rx(p),
            tag::FILE => Value::File(p as u32),
            tag::TIMEOUT => Value::Timeout,
            tag::GROUP => Value::Group(p),
            _ => return None,
        })
    }

    /// The heap object this value refers to, if any.
    #[inline]
    pub fn heap_ref(self) -> Option<Addr> {
        match self {
            Value::Str(a) | Value::Array(a) | Value::Map(a) | Value::Closure(a) | Value::Box(a) => Some(a),
            _ => None,
        }
    }

    #[inline]
    pub fn is_truthy(self) -> bool {
        !matches!(self, Value::Nil | Value::Bool(false))
    }

    /// The type name with its article: "an int", "a string".
    pub fn a_type(self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Array(_) => "an array",
            Value::Map(_) => "a map",
            Value::Closure(_) | Value::Func(_) | Value::Native(_) => "a function",
            Value::Box(_) => "a box",
            Value::Pid(_) => "a pid",
            Value::Tx(_) => "a send end",
            Value::Rx(_) => "a receive end",
            Value::File(_) => "a file",
            Value::Timeout => "a timeout",
            Value::Group(_) => "a group",
        }
    }

    pub fn type_name(self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::Closure(_) | Value::Func(_) | Value::Native(_) => "function",
            Value::Box(_) => "box",
            Value::Pid(_) => "pid",
            Value::Tx(_) => "sender",
            Value::Rx(_) => "receiver",
            Value::File(_) => "file",
            Value::Timeout => "timeout",
            Value::Group(_) => "group",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_is_two_words() {
        assert_eq!(std::mem::size_of::<Value>(), 16);
    }

    #[test]
    fn encode_decode_roundtrip() {
        let vals = [
            Value::Nil,
            Value::Bool(true),
            Value::Int(-5),
            Value::Float(1.5),
            Value::Str(9),
            Value::Func(FnRef { module: 3, func: 7 }),
            Value::Native(4),
            Value::Pid(1 << 48 | 5),
            Value::Tx(7),
            Value::Rx(8),
            Value::File(2),
            Value::Timeout,
            Value::Group(1 << 48 | 3),
        ];
        for v in vals {
            let (t, p) = v.encode();
            assert_eq!(Value::decode(t, p), Some(v));
        }
        assert_eq!(Value::decode(77, 0), None);
        assert_eq!(Value::decode(17, 0), None);
    }
}

/// Exact numeric order of two numbers (ints and floats mixed without rounding, as their
/// mathematical values: Python's and Erlang's rule); `None` when either is NaN or not a
/// number. `<`, `==`, `>` and `sort` all use it, so exactly one of them holds for any two
/// numbers but NaN.
pub fn num_cmp(a: Value, b: Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(&y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(&y),
        (Value::Int(x), Value::Float(y)) => int_float_cmp(x, y),
        (Value::Float(x), Value::Int(y)) => int_float_cmp(y, x).map(Ordering::reverse),
        _ => None,
    }
}

/// The exact order of int `i` and float `f` (`None`: `f` is NaN).
pub fn int_float_cmp(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f >= 9.3e18 {
        return Some(Ordering::Less);
    }
    if f <= -9.3e18 {
        return Some(Ordering::Greater);
    }
    let fl = f.floor();
    // |fl| < 9.3e18 < 2^127, so the conversion is exact.
    Some(match i128::from(i).cmp(&(fl as i128)) {
        Ordering::Equal if f > fl => Ordering::Less,
        o => o,
    })
}

#[cfg(test)]
mod num_tests {
    use super::*;
    use proptest::prelude::*;

    /// The order of `i` and `f` by exact rational arithmetic: `f` = `m` × 2^`e`.
    fn reference(i: i64, f: f64) -> Option<Ordering> {
        if f.is_nan() {
            return None;
        }
        if f.is_infinite() {
            return Some(if f > 0.0 { Ordering::Less } else { Ordering::Greater });
        }
        let bits = f.to_bits();
        let neg = bits >> 63 == 1;
        let exp = ((bits >> 52) & 0x7ff) as i32;
        let frac = bits & ((1 << 52) - 1);
        let (m, e) = if exp == 0 { (frac as i128, -1074) } else { ((frac | 1 << 52) as i128, exp - 1075) };
        let m = if neg { -m } else { m };
        if e >= 0 {
            // |f| >= 2^64 decides by sign alone; else m << e fits an i128.
            if e > 11 {
                return Some(if m > 0 { Ordering::Less } else { Ordering::Greater });
            }
            return Some(i128::from(i).cmp(&(m << e)));
        }
        if -e > 64 {
            // |f| < 2^53 × 2^-65 < 1: only the sign of i, or of f when i is 0, counts.
            return Some(match i.cmp(&0) {
                Ordering::Equal => 0i128.cmp(&m),
                o => o,
            });
        }
        Some((i128::from(i) << -e).cmp(&m))
    }

    fn near(v: f64, k: i64) -> f64 {
        f64::from_bits((v.to_bits() as i64).wrapping_add(k) as u64)
    }

    #[test]
    fn the_issues_cases_and_the_edges() {
        let (i, f) = (9_007_199_254_740_993_i64, 9_007_199_254_740_992.0);
        assert_eq!(int_float_cmp(i, f), Some(Ordering::Greater));
        assert_eq!(int_float_cmp(i64::MAX, 9_223_372_036_854_775_807.0), Some(Ordering::Less), "2^63 - 1 < 2^63");
        assert_eq!(int_float_cmp(i64::MIN, i64::MIN as f64), Some(Ordering::Equal));
        assert_eq!(int_float_cmp(0, f64::NAN), None);
        assert_eq!(int_float_cmp(i64::MAX, f64::INFINITY), Some(Ordering::Less));
        assert_eq!(int_float_cmp(i64::MIN, f64::NEG_INFINITY), Some(Ordering::Greater));
        assert_eq!(int_float_cmp(0, -0.0), Some(Ordering::Equal));
        assert_eq!(int_float_cmp(-1, -0.5), Some(Ordering::Less));
        assert_eq!(num_cmp(Value::Float(1.5), Value::Int(1)), Some(Ordering::Greater));
        for i in [0, 1, -1, 1 << 53, -(1 << 53), (1 << 53) + 1, i64::MAX, i64::MIN, i64::MAX - 1, i64::MIN + 1] {
            for base in [i as f64, 0.5, -0.5, 1e-300, -1e-300, 9.3e18, -9.3e18, 1e300] {
                for k in -3..=3 {
                    let f = near(base, k);
                    assert_eq!(int_float_cmp(i, f), reference(i, f), "{i} vs {f:e}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn int_float_order_is_exact(i in any::<i64>(), bits in any::<u64>(), k in -4i64..4, pick in 0u8..3) {
            let f = match pick {
                0 => f64::from_bits(bits),
                1 => near(i as f64, k),
                _ => near((i >> (bits % 64)) as f64, k),
            };
            prop_assert_eq!(int_float_cmp(i, f), reference(i, f), "{} vs {:e}", i, f);
        }
    }
}

/// Where a [`Value`]'s parts are, for compiled code.
pub mod layout {
    /// Size of a value (a register).
    pub const SIZE: i32 = 16;
    /// Offset of the tag byte.
    pub const TAG: i32 = 0;
    /// Offset of the payload (an `i64` for ints, a byte for bools).
    pub const PAYLOAD: i32 = 8;
    pub const TAG_NIL: u8 = 0;
    pub const TAG_BOOL: u8 = 1;
    pub const TAG_INT: u8 = 2;
    /// A float's payload is its `f64` bits.
    pub const TAG_FLOAT: u8 = 3;
    /// A function without captured variables: its module slot (u32) at `PAYLOAD`, its
    /// index (u32) at `PAYLOAD + 4`.
    pub const TAG_FUNC: u8 = 8;
    /// A native function: its index in the node's native table (u32) at `PAYLOAD`.
    pub const TAG_NATIVE: u8 = 9;
    /// A string: its heap address (u32) at `PAYLOAD`.
    pub const TAG_STR: u8 = 4;
    /// An array: its heap address (u32) at `PAYLOAD`.
    pub const TAG_ARRAY: u8 = 5;
    /// A map: its heap address (u32) at `PAYLOAD`.
    pub const TAG_MAP: u8 = 6;
    /// A function with captured variables: its heap address (u32) at `PAYLOAD`.
    pub const TAG_CLOSURE: u8 = 7;

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::value::Value;

        fn bytes(v: Value) -> [u8; 16] {
            // SAFETY: a Value is 16 plain bytes (checked below).
            unsafe { std::mem::transmute::<Value, [u8; 16]>(v) }
        }

        #[test]
        fn the_layout_compiled_code_relies_on() {
            assert_eq!(std::mem::size_of::<Value>(), SIZE as usize);
            assert_eq!(bytes(Value::Nil)[TAG as usize], TAG_NIL);
            let b = bytes(Value::Bool(true));
            assert_eq!((b[TAG as usize], b[PAYLOAD as usize]), (TAG_BOOL, 1));
            let f = bytes(Value::Float(-2.5));
            assert_eq!(f[TAG as usize], TAG_FLOAT);
            assert_eq!(f64::from_le_bytes(f[PAYLOAD as usize..PAYLOAD as usize + 8].try_into().unwrap()), -2.5);
            let arr = bytes(Value::Array(77));
            assert_eq!((arr[TAG as usize], arr[PAYLOAD as usize]), (TAG_ARRAY, 77));
            // Nil, bools, ints, floats, strings, arrays, maps and closures have the same
            // tag in a register as in the heap (tags 0 to TAG_CLOSURE), and a payload that
            // is the heap's payload word (a bool's in its low byte, an address's in its
            // low four bytes).
            use crate::value::tag;
            assert_eq!(
                [TAG_NIL, TAG_BOOL, TAG_INT, TAG_FLOAT, TAG_STR, TAG_ARRAY, TAG_MAP, TAG_CLOSURE].map(u64::from),
                [tag::NIL, tag::BOOL, tag::INT, tag::FLOAT, tag::STR, tag::ARRAY, tag::MAP, tag::CLOSURE]
            );
            assert_eq!(u64::from(TAG_CLOSURE), 7);
            let nat = bytes(Value::Native(0x0102_0304));
            assert_eq!((nat[TAG as usize], &nat[PAYLOAD as usize..PAYLOAD as usize + 4]), (TAG_NATIVE, &[4u8, 3, 2, 1][..]));
            for v in [Value::Str(0x1234_5678), Value::Map(9), Value::Closure(u32::MAX), Value::Bool(true), Value::Int(-3)] {
                let (t, p) = v.encode();
                let b = bytes(v);
                assert_eq!(u64::from(b[TAG as usize]), t, "{v:?}");
                let width = match v {
                    Value::Bool(_) => 1,
                    Value::Int(_) => 8,
                    _ => 4,
                };
                let mut word = [0u8; 8];
                word[..width].copy_from_slice(&b[PAYLOAD as usize..PAYLOAD as usize + width]);
                assert_eq!(u64::from_le_bytes(word), p, "{v:?}");
            }
            let fr = bytes(Value::Func(crate::value::FnRef { module: 3, func: 9 }));
            assert_eq!(fr[TAG as usize], TAG_FUNC);
            assert_eq!(fr[PAYLOAD as usize..PAYLOAD as usize + 8], [3, 0, 0, 0, 9, 0, 0, 0]);
            let i = bytes(Value::Int(-5));
            assert_eq!(i[TAG as usize], TAG_INT);
            assert_eq!(i64::from_le_bytes(i[PAYLOAD as usize..PAYLOAD as usize + 8].try_into().unwrap()), -5);
            // And back: bytes written so make the value.
            let mut raw = [0u8; 16];
            raw[TAG as usize] = TAG_INT;
            raw[PAYLOAD as usize..].copy_from_slice(&77i64.to_le_bytes());
            // SAFETY: tag and payload of a valid Int.
            assert_eq!(unsafe { std::mem::transmute::<[u8; 16], Value>(raw) }, Value::Int(77));
        }
    }
}
