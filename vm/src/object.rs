//! Heap objects: strings, arrays, maps, closures and boxes, laid out in heap words
//! (see [`crate::heap::kind`] for each layout).
//!
//! Operations that mutate an object first do every read that may fault and every
//! allocation, and only then write into reachable objects. An operation interrupted
//! by a page fault or a full heap can therefore be restarted from scratch.

use crate::heap::{header_size, kind, Heap, HeapError};
use crate::value::{tag, Addr, FnRef, Value};

/// FNV-1a, 64-bit: small, deterministic on every machine (map layouts are heap data
/// and must mean the same after a migration).
pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[inline]
fn hash_int(i: i64) -> u64 {
    let mut x = i as u64;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

// ---- strings ----

pub fn alloc_str(heap: &mut Heap, s: &str) -> Result<Addr, HeapError> {
    alloc_str_bytes(heap, s.as_bytes())
}

/// Allocates a string from bytes that are known to be UTF-8.
pub fn alloc_str_bytes(heap: &mut Heap, b: &[u8]) -> Result<Addr, HeapError> {
    let size = 3 + b.len().div_ceil(8);
    let a = heap.alloc(kind::STR, size)?;
    let at = a as usize;
    heap.store(at + 1, b.len() as u64)?;
    heap.store(at + 2, hash_bytes(b))?;
    heap.write_bytes(at + 3, b)?;
    Ok(a)
}

pub fn str_bytes(heap: &Heap, a: Addr) -> Result<&[u8], HeapError> {
    let size = heap.header_of(a, kind::STR)?;
    let at = a as usize;
    let len = heap.load(at + 1)? as usize;
    if len.div_ceil(8) + 3 > size {
        return Err(HeapError::Corrupt);
    }
    heap.bytes(at + 3, len)
}

pub fn str_ref(heap: &Heap, a: Addr) -> Result<&str, HeapError> {
    std::str::from_utf8(str_bytes(heap, a)?).map_err(|_| HeapError::Corrupt)
}

pub fn str_hash(heap: &Heap, a: Addr) -> Result<u64, HeapError> {
    heap.header_of(a, kind::STR)?;
    heap.load(a as usize + 2)
}

pub fn str_eq(heap: &Heap, a: Addr, b: Addr) -> Result<bool, HeapError> {
    if a == b {
        return Ok(true);
    }
    if str_hash(heap, a)? != str_hash(heap, b)? {
        return Ok(false);
    }
    Ok(str_bytes(heap, a)? == str_bytes(heap, b)?)
}

// ---- boxes ----

pub fn new_box(heap: &mut Heap, v: Value) -> Result<Addr, HeapError> {
    let a = heap.alloc(kind::BOX, 3)?;
    heap.store_value(a as usize + 1, v)?;
    Ok(a)
}

#[inline]
pub fn box_get(heap: &Heap, a: Addr) -> Result<Value, HeapError> {
    heap.load_value(a as usize + 1)
}

#[inline]
pub fn box_set(heap: &mut Heap, a: Addr, v: Value) -> Result<(), HeapError> {
    heap.store_value(a as usize + 1, v)
}

// ---- closures ----

pub fn new_closure(heap: &mut Heap, f: FnRef, boxes: &[Addr]) -> Result<Addr, HeapError> {
    let a = heap.alloc(kind::CLOSURE, 2 + boxes.len())?;
    let at = a as usize;
    heap.store(at + 1, f.pack())?;
    for (i, b) in boxes.iter().enumerate() {
        heap.store(at + 2 + i, u64::from(*b))?;
    }
    Ok(a)
}

#[inline]
pub fn closure_fn(heap: &Heap, a: Addr) -> Result<FnRef, HeapError> {
    Ok(FnRef::unpack(heap.load(a as usize + 1)?))
}

#[inline]
pub fn closure_box(heap: &Heap, a: Addr, i: usize) -> Result<Addr, HeapError> {
    Ok(heap.load(a as usize + 2 + i)? as Addr)
}

pub fn closure_box_count(heap: &Heap, a: Addr) -> Result<usize, HeapError> {
    Ok(heap.header_of(a, kind::CLOSURE)?.saturating_sub(2))
}

// ---- arrays ----

pub fn new_array(heap: &mut Heap, cap: usize) -> Result<Addr, HeapError> {
    let data = if cap > 0 { heap.alloc(kind::ARRDATA, 1 + 2 * cap)? } else { 0 };
    let a = heap.alloc(kind::ARRAY, 3)?;
    let at = a as usize;
    heap.store(at + 1, 0)?;
    heap.store(at + 2, u64::from(data))?;
    Ok(a)
}

/// Makes an array holding `vals`.
pub fn array_from(heap: &mut Heap, vals: &[Value]) -> Result<Addr, HeapError> {
    let a = new_array(heap, vals.len())?;
    let data = heap.load(a as usize + 2)? as usize;
    for (i, v) in vals.iter().enumerate() {
        heap.store_value(data + 1 + 2 * i, *v)?;
    }
    heap.store(a as usize + 1, vals.len() as u64)?;
    Ok(a)
}

#[inline]
pub fn array_len(heap: &Heap, a: Addr) -> Result<usize, HeapError> {
    Ok(heap.load(a as usize + 1)? as usize)
}

fn array_cap(heap: &Heap, data: usize) -> Result<usize, HeapError> {
    if data == 0 {
        return Ok(0);
    }
    Ok((heap.header_of(data as Addr, kind::ARRDATA)? - 1) / 2)
}

/// Element `i`, or `None` when out of range. Always inlined: returned through memory,
/// the value was copied in pieces that defeated the CPU's store forwarding (a stall on
/// every element read).
#[inline(always)]
pub fn array_get(heap: &Heap, a: Addr, i: i64) -> Result<Option<Value>, HeapError> {
    let hdr = heap.slice(a as usize + 1, 2)?;
    let (len, data) = (hdr[0], hdr[1] as usize);
    if i < 0 || i as u64 >= len {
        return Ok(None);
    }
    let w = heap.slice(data + 1 + 2 * i as usize, 2)?;
    Ok(Some(Value::decode(w[0], w[1]).ok_or(HeapError::Corrupt)?))
}

/// Stores element `i`; returns false when out of range.
#[inline]
pub fn array_set(heap: &mut Heap, a: Addr, i: i64, v: Value) -> Result<bool, HeapError> {
    let hdr = heap.slice(a as usize + 1, 2)?;
    let (len, data) = (hdr[0], hdr[1] as usize);
    if i < 0 || i as u64 >= len {
        return Ok(false);
    }
    heap.store_value(data + 1 + 2 * i as usize, v)?;
    Ok(true)
}

/// Ensures room for `need` elements; returns the data address.
fn array_reserve(heap: &mut Heap, a: Addr, need: usize) -> Result<usize, HeapError> {
    let at = a as usize;
    let len = heap.load(at + 1)? as usize;
    let data = heap.load(at + 2)? as usize;
    let cap = array_cap(heap, data)?;
    if need <= cap {
        return Ok(data);
    }
    let new_cap = need.max(cap * 2).max(4);
    let nd = heap.alloc(kind::ARRDATA, 1 + 2 * new_cap)? as usize;
    if len > 0 {
        heap.copy_words(data + 1, nd + 1, 2 * len)?;
    }
    heap.store(at + 2, nd as u64)?;
    Ok(nd)
}

pub fn array_push(heap: &mut Heap, a: Addr, v: Value) -> Result<(), HeapError> {
    let len = array_len(heap, a)?;
    let data = array_reserve(heap, a, len + 1)?;
    heap.store_value(data + 1 + 2 * len, v)?;
    heap.store(a as usize + 1, len as u64 + 1)
}

pub fn array_pop(heap: &mut Heap, a: Addr) -> Result<Option<Value>, HeapError> {
    let len = array_len(heap, a)?;
    if len == 0 {
        return Ok(None);
    }
    let v = array_get(heap, a, len as i64 - 1)?;
    heap.store(a as usize + 1, len as u64 - 1)?;
    Ok(v)
}

/// Inserts at `i` (0..=len); false when out of range.
pub fn array_insert(heap: &mut Heap, a: Addr, i: usize, v: Value) -> Result<bool, HeapError> {
    let len = array_len(heap, a)?;
    if i > len {
        return Ok(false);
    }
    let data = array_reserve(heap, a, len + 1)?;
    // Every page the shift touches must be present before the first write, or a
    // restart after a fault would shift twice.
    heap.check_range(data + 1, 2 * (len + 1))?;
    for j in (i..len).rev() {
        let x = heap.load_value(data + 1 + 2 * j)?;
        heap.store_value(data + 1 + 2 * (j + 1), x)?;
    }
    heap.store_value(data + 1 + 2 * i, v)?;
    heap.store(a as usize + 1, len as u64 + 1)?;
    Ok(true)
}

/// Removes and returns element `i`, or `None` when out of range.
pub fn array_remove(heap: &mut Heap, a: Addr, i: usize) -> Result<Option<Value>, HeapError> {
    let len = array_len(heap, a)?;
    if i >= len {
        return Ok(None);
    }
    let data = heap.load(a as usize + 2)? as usize;
    heap.check_range(data + 1, 2 * len)?;
    let v = heap.load_value(data + 1 + 2 * i)?;
    for j in i + 1..len {
        let x = heap.load_value(data + 1 + 2 * j)?;
        heap.store_value(data + 1 + 2 * (j - 1), x)?;
    }
    heap.store(a as usize + 1, len as u64 - 1)?;
    Ok(Some(v))
}

/// All elements, copied out.
pub fn array_values(heap: &Heap, a: Addr) -> Result<Vec<Value>, HeapError> {
    let len = array_len(heap, a)?;
    let data = heap.load(a as usize + 2)? as usize;
    let mut out = Vec::with_capacity(len);
    for i in 0..len {
        out.push(heap.load_value(data + 1 + 2 * i)?);
    }
    Ok(out)
}

/// Overwrites the elements (same length) — used by in-place sorts and reversals.
pub fn array_overwrite(heap: &mut Heap, a: Addr, vals: &[Value]) -> Result<(), HeapError> {
    let data = heap.load(a as usize + 2)? as usize;
    heap.check_range(data + 1, 2 * vals.len())?;
    for (i, v) in vals.iter().enumerate() {
        heap.store_value(data + 1 + 2 * i, *v)?;
    }
    Ok(())
}

// ---- maps ----

/// Maps up to this many entries are searched linearly, without an index.
const MAP_LINEAR_MAX: usize = 8;

/// Why a value cannot be a map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    Heap(HeapError),
    /// The value's type cannot be a key.
    BadKey(&'static str),
}

impl From<HeapError> for KeyError {
    fn from(e: HeapError) -> Self {
        KeyError::Heap(e)
    }
}

/// Hash of a key; ints and integral floats hash alike because `1 == 1.0`.
pub fn key_hash(heap: &Heap, k: Value) -> Result<u64, KeyError> {
    Ok(match k {
        Value::Int(i) => hash_int(i),
        Value::Float(f) => {
            if f.fract() == 0.0 && (-9.2e18..=9.2e18).contains(&f) {
                hash_int(f as i64)
            } else if f.is_nan() {
                return Err(KeyError::BadKey("NaN"));
            } else {
                hash_int(f.to_bits() as i64) ^ 0x5555
            }
        }
        Value::Bool(b) => hash_int(b as i64) ^ 0xb001,
        Value::Str(a) => str_hash(heap, a)?,
        Value::Pid(p) => hash_int(p as i64) ^ 0x9d1d,
        Value::Tx(c) => hash_int(c as i64) ^ 0x7c7c,
        Value::Group(g) => hash_int(g as i64) ^ 0x6e6e,
        other => return Err(KeyError::BadKey(other.a_type())),
    })
}

/// Equality of two values as `==` defines it: numbers numerically, strings by content,
/// everything else by identity.
pub fn values_equal(heap: &Heap, a: Value, b: Value) -> Result<bool, HeapError> {
    Ok(match (a, b) {
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) => {
            crate::value::int_float_cmp(x, y) == Some(std::cmp::Ordering::Equal)
        }
        (Value::Str(x), Value::Str(y)) => str_eq(heap, x, y)?,
        (x, y) => x == y,
    })
}

pub fn new_map(heap: &mut Heap, cap: usize) -> Result<Addr, HeapError> {
    let cap = cap.max(4);
    let entries = heap.alloc(kind::MAPENTRIES, 1 + 4 * cap)?;
    let index = if cap > MAP_LINEAR_MAX { new_index(heap, cap)? } else { 0 };
    let a = heap.alloc(kind::MAP, 5)?;
    let at = a as usize;
    heap.store(at + 1, 0)?;
    heap.store(at + 2, u64::from(entries))?;
    heap.store(at + 3, 0)?;
    heap.store(at + 4, u64::from(index))?;
    Ok(a)
}

fn new_index(heap: &mut Heap, entries_cap: usize) -> Result<Addr, HeapError> {
    let icap = (entries_cap * 2).next_power_of_two();
    let idx = heap.alloc(kind::MAPINDEX, 1 + icap)?;
    for i in 0..icap {
        heap.store(idx as usize + 1 + i, 0)?;
    }
    Ok(idx)
}

struct MapView {
    live: usize,
    entries: usize,
    used: usize,
    index: usize,
}

#[inline]
fn map_view(heap: &Heap, m: Addr) -> Result<MapView, HeapError> {
    let w = heap.slice(m as usize + 1, 4)?;
    Ok(MapView { live: w[0] as usize, entries: w[1] as usize, used: w[2] as usize, index: w[3] as usize })
}

fn entry_key(heap: &Heap, entries: usize, i: usize) -> Result<Option<Value>, HeapError> {
    let e = entries + 1 + 4 * i;
    let t = heap.load(e)?;
    if t == tag::TOMBSTONE {
        return Ok(None);
    }
    Ok(Some(Value::decode(t, heap.load(e + 1)?).ok_or(HeapError::Corrupt)?))
}

/// Does the stored key equal `key` (whose hash is `hash`)? Strings compare by address
/// first (keys written by literals and field syntax share the module's constant
/// strings), then by the stored hash, and only then by bytes.
#[inline(always)]
fn key_matches(heap: &Heap, stored: Value, key: Value, hash: u64) -> Result<bool, HeapError> {
    match (stored, key) {
        (Value::Str(s), Value::Str(k)) => {
            if s == k {
                return Ok(true);
            }
            if heap.load(s as usize + 2)? != hash {
                return Ok(false);
            }
            Ok(str_bytes(heap, s)? == str_bytes(heap, k)?)
        }
        (Value::Int(a), Value::Int(b)) => Ok(a == b),
        _ => values_equal(heap, stored, key),
    }
}

/// Finds the entry index of `key`, and the index slot where it is or would go.
fn map_find(heap: &Heap, v: &MapView, key: Value, hash: u64) -> Result<(Option<usize>, usize), HeapError> {
    if v.index == 0 {
        // Most lookups find a key that is the very same word pair (an int, or the same
        // string object): try that cheap comparison over all entries first.
        if let k @ (Value::Int(_) | Value::Str(_)) = key {
            let (kt, kp) = k.encode();
            let words = heap.slice(v.entries + 1, 4 * v.used)?;
            for (i, e) in words.chunks_exact(4).enumerate() {
                if e[0] == kt && e[1] == kp {
                    return Ok((Some(i), 0));
                }
            }
        }
        for i in 0..v.used {
            if let Some(k) = entry_key(heap, v.entries, i)? {
                if key_matches(heap, k, key, hash)? {
                    return Ok((Some(i), 0));
                }
            }
        }
        return Ok((None, 0));
    }
    let icap = heap.header_of(v.index as Addr, kind::MAPINDEX)? - 1;
    let mask = icap - 1;
    let mut slot = hash as usize & mask;
    for _ in 0..icap {
        let s = heap.load(v.index + 1 + slot)? as usize;
        if s == 0 {
            return Ok((None, slot));
        }
        if let Some(k) = entry_key(heap, v.entries, s - 1)? {
            if key_matches(heap, k, key, hash)? {
                return Ok((Some(s - 1), slot));
            }
        }
        slot = (slot + 1) & mask;
    }
    Err(HeapError::Corrupt)
}

pub fn map_get(heap: &Heap, m: Addr, key: Value) -> Result<Option<Value>, KeyError> {
    let h = key_hash(heap, key)?;
    Ok(map_get_ref(heap, m, key, h)?)
}

/// Finds the entry whose key is the very word pair `(kt, kp)` (an int, or that same
/// string object): the inline fast path of field access. `None` means "not found this
/// way"; the general lookup then decides.
#[inline(always)]
fn entry_of_word_key(heap: &Heap, v: &MapView, kt: u64, kp: u64, hash: u64) -> Option<usize> {
    if v.index == 0 {
        // A counted loop, not `Iterator::position`: that is compiled as a call of its own
        // (`try_fold`) once the interpreter's loop is large, and this runs at every field
        // access.
        // (Bounded by the words given, not by `used`: a damaged count is a miss, not a panic.)
        let words = heap.slice(v.entries + 1, v.used.checked_mul(4)?).ok()?;
        let n = words.len() / 4;
        let mut i = 0;
        while i < n {
            if words[4 * i] == kt && words[4 * i + 1] == kp {
                return Some(i);
            }
            i += 1;
        }
        return None;
    }
    let icap = header_size(heap.load(v.index).ok()?).checked_sub(1)?;
    let slots = heap.slice(v.index + 1, icap).ok()?;
    let mask = icap.wrapping_sub(1);
    let mut slot = hash as usize & mask;
    for _ in 0..icap {
        let s = *slots.get(slot)? as usize;
        if s == 0 || s > v.used {
            return None;
        }
        let e = heap.slice(v.entries + 1 + 4 * (s - 1), 2).ok()?;
        if e[0] == kt && e[1] == kp {
            return Some(s - 1);
        }
        slot = (slot + 1) & mask;
    }
    None
}

/// `m[key]` for a string key given as a heap string, trying the word-equality fast
/// path first. Always inlined, as `array_get`.
#[inline(always)]
pub fn map_get_field(heap: &Heap, m: Addr, key: Addr) -> Result<Option<Value>, HeapError> {
    // One view of the map for the lookup and the read (this runs at every field read).
    let v = map_view(heap, m)?;
    let hash = heap.load(key as usize + 2)?;
    let i = match entry_of_word_key(heap, &v, tag::STR, u64::from(key), hash) {
        Some(i) => i,
        None => match map_find_str(heap, &v, key, hash)? {
            Some(i) => i,
            None => return Ok(None),
        },
    };
    Ok(Some(heap.load_value(v.entries + 1 + 4 * i + 2)?))
}

/// The general lookup of a string key, out of the inlined fast paths' way.
#[inline(never)]
fn map_find_str(heap: &Heap, v: &MapView, key: Addr, hash: u64) -> Result<Option<usize>, HeapError> {
    Ok(map_find(heap, v, Value::Str(key), hash)?.0)
}

/// The entry of map `m` whose key is the heap string `key` (the same string first,
/// then an equal one), if there is one.
#[inline(always)]
pub fn map_field_entry(heap: &Heap, m: Addr, key: Addr) -> Result<Option<usize>, HeapError> {
    let v = map_view(heap, m)?;
    let hash = heap.load(key as usize + 2)?;
    if let Some(i) = entry_of_word_key(heap, &v, tag::STR, u64::from(key), hash) {
        return Ok(Some(i));
    }
    map_find_str(heap, &v, key, hash)
}

/// The value of entry `i` of map `m` (an entry [`map_field_entry`] found).
#[inline(always)]
pub fn map_entry_value(heap: &Heap, m: Addr, i: usize) -> Result<Value, HeapError> {
    let v = map_view(heap, m)?;
    heap.load_value(v.entries + 1 + 4 * i + 2)
}

/// Sets the value of entry `i` of map `m` (an entry [`map_field_entry`] found).
pub fn map_entry_set(heap: &mut Heap, m: Addr, i: usize, val: Value) -> Result<(), HeapError> {
    let v = map_view(heap, m)?;
    heap.store_value(v.entries + 1 + 4 * i + 2, val)
}

/// `m[key] = val` for a string key given as a heap string; the fast path overwrites an
/// existing entry in place. Always inlined, as `map_get_field`: the rest is `map_set`.
#[inline(always)]
pub fn map_set_field(heap: &mut Heap, m: Addr, key: Addr, val: Value) -> Result<(), KeyError> {
    let v = map_view(heap, m)?;
    let hash = heap.load(key as usize + 2)?;
    if let Some(i) = entry_of_word_key(heap, &v, tag::STR, u64::from(key), hash) {
        heap.store_value(v.entries + 1 + 4 * i + 2, val)?;
        return Ok(());
    }
    map_set(heap, m, Value::Str(key), val)
}

fn map_get_ref(heap: &Heap, m: Addr, key: Value, hash: u64) -> Result<Option<Value>, HeapError> {
    let v = map_view(heap, m)?;
    match map_find(heap, &v, key, hash)?.0 {
        Some(i) => Ok(Some(heap.load_value(v.entries + 1 + 4 * i + 2)?)),
        None => Ok(None),
    }
}

pub fn map_len(heap: &Heap, m: Addr) -> Result<usize, HeapError> {
    Ok(heap.load(m as usize + 1)? as usize)
}

/// Sets `key` to `val`.
pub fn map_set(heap: &mut Heap, m: Addr, key: Value, val: Value) -> Result<(), KeyError> {
    let h = key_hash(heap, key)?;
    let v = map_view(heap, m)?;
    let (found, _) = map_find(heap, &v, key, h)?;
    if let Some(i) = found {
        heap.store_value(v.entries + 1 + 4 * i + 2, val)?;
        return Ok(());
    }
    let cap = (heap.header_of(v.entries as Addr, kind::MAPENTRIES)? - 1) / 4;
    let v = if v.used >= cap { map_rebuild(heap, m, &v)? } else { v };
    let i = v.used;
    let e = v.entries + 1 + 4 * i;
    if v.index != 0 {
        // Find the empty slot for this key in the (possibly new) index.
        let (_, slot) = map_find(heap, &v, key, h)?;
        heap.store(v.index + 1 + slot, i as u64 + 1)?;
    }
    heap.store_value(e, key)?;
    heap.store_value(e + 2, val)?;
    let at = m as usize;
    heap.store(at + 3, v.used as u64 + 1)?;
    heap.store(at + 1, v.live as u64 + 1)?;
    Ok(())
}

/// Copies the live entries into new, larger storage (dropping tombstones) and
/// rebuilds the index. Reads everything before writing the map's header.
fn map_rebuild(heap: &mut Heap, m: Addr, v: &MapView) -> Result<MapView, KeyError> {
    let mut live = Vec::with_capacity(v.live);
    for i in 0..v.used {
        if let Some(k) = entry_key(heap, v.entries, i)? {
            live.push((k, heap.load_value(v.entries + 1 + 4 * i + 2)?, key_hash(heap, k)?));
        }
    }
    let cap = (live.len() * 2).max(4);
    let entries = heap.alloc(kind::MAPENTRIES, 1 + 4 * cap)? as usize;
    let index = if cap > MAP_LINEAR_MAX { new_index(heap, cap)? as usize } else { 0 };
    let mask = if index != 0 { heap.header_of(index as Addr, kind::MAPINDEX)? - 2 } else { 0 };
    for (i, (k, val, h)) in live.iter().enumerate() {
        let e = entries + 1 + 4 * i;
        heap.store_value(e, *k)?;
        heap.store_value(e + 2, *val)?;
        if index != 0 {
            let mut slot = *h as usize & mask;
            while heap.load(index + 1 + slot)? != 0 {
                slot = (slot + 1) & mask;
            }
            heap.store(index + 1 + slot, i as u64 + 1)?;
        }
    }
    let at = m as usize;
    heap.store(at + 1, live.len() as u64)?;
    heap.store(at + 2, entries as u64)?;
    heap.store(at + 3, live.len() as u64)?;
    heap.store(at + 4, index as u64)?;
    Ok(MapView { live: live.len(), entries, used: live.len(), index })
}

/// Removes `key`; returns its value if it was there.
pub fn map_remove(heap: &mut Heap, m: Addr, key: Value) -> Result<Option<Value>, KeyError> {
    let h = key_hash(heap, key)?;
    let v = map_view(heap, m)?;
    let Some(i) = map_find(heap, &v, key, h)?.0 else {
        return Ok(None);
    };
    let e = v.entries + 1 + 4 * i;
    let old = heap.load_value(e + 2)?;
    heap.store(e, tag::TOMBSTONE)?;
    heap.store(m as usize + 1, v.live as u64 - 1)?;
    Ok(Some(old))
}

/// The next live entry at or after position `cursor`: `(next_cursor, key, value)`.
pub fn map_next(heap: &Heap, m: Addr, cursor: usize) -> Result<Option<(usize, Value, Value)>, HeapError> {
    let v = map_view(heap, m)?;
    let mut i = cursor;
    while i < v.used {
        if let Some(k) = entry_key(heap, v.entries, i)? {
            let val = heap.load_value(v.entries + 1 + 4 * i + 2)?;
            return Ok(Some((i + 1, k, val)));
        }
        i += 1;
    }
    Ok(None)
}

/// All live entries, in insertion order.
pub fn map_entries(heap: &Heap, m: Addr) -> Result<Vec<(Value, Value)>, HeapError> {
    let mut out = Vec::new();
    let mut c = 0;
    while let Some((n, k, v)) = map_next(heap, m, c)? {
        out.push((k, v));
        c = n;
    }
    Ok(out)
}
