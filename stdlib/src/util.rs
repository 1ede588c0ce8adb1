//! Argument checking and small helpers shared by the natives.
//!
//! Every check returns an [`Exn`] whose message names the native, so a wrong call reads
//! like `sqrt expects a number, got string`.

use std::cmp::Ordering;
use tern_vm::fmt::float_text;
use tern_vm::heap::Heap;
use tern_vm::object::{self, KeyError};
use tern_vm::value::Addr;
use tern_vm::{Exn, Value};

/// Longest string (in bytes) a native builds, whatever the heap limit.
const MAX_STR_BYTES: usize = 1 << 30;

/// `func expects what, got <type>`.
pub(crate) fn type_err(func: &str, what: &str, v: Value) -> Exn {
    Exn::msg(format!("{func} expects {what}, got {}", v.type_name()))
}

pub(crate) fn arg_int(func: &str, what: &str, v: Value) -> Result<i64, Exn> {
    match v {
        Value::Int(i) => Ok(i),
        _ => Err(type_err(func, what, v)),
    }
}

/// An int or a float, as a float.
pub(crate) fn arg_num(func: &str, v: Value) -> Result<f64, Exn> {
    match v {
        Value::Int(i) => Ok(i as f64),
        Value::Float(f) => Ok(f),
        _ => Err(type_err(func, "a number", v)),
    }
}

pub(crate) fn arg_str<'h>(heap: &'h Heap, func: &str, what: &str, v: Value) -> Result<&'h str, Exn> {
    match v {
        Value::Str(a) => Ok(object::str_ref(heap, a)?),
        _ => Err(type_err(func, what, v)),
    }
}

pub(crate) fn arg_array(func: &str, v: Value) -> Result<Addr, Exn> {
    match v {
        Value::Array(a) => Ok(a),
        _ => Err(type_err(func, "an array", v)),
    }
}

pub(crate) fn arg_map(func: &str, v: Value) -> Result<Addr, Exn> {
    match v {
        Value::Map(a) => Ok(a),
        _ => Err(type_err(func, "a map", v)),
    }
}

pub(crate) fn new_str(heap: &mut Heap, s: &str) -> Result<Value, Exn> {
    Ok(Value::Str(object::alloc_str(heap, s)?))
}

/// A map-key error as the interpreter reports it.
pub(crate) fn key_exn(e: KeyError) -> Exn {
    match e {
        KeyError::Heap(h) => Exn::Heap(h),
        KeyError::BadKey(t) => Exn::msg(format!("{t} cannot be a map key")),
    }
}

/// Fails unless a string of `bytes` bytes may be built (checked before building it, so
/// a huge request never reaches the host's allocator).
pub(crate) fn check_str_size(heap: &Heap, func: &str, bytes: Option<usize>) -> Result<(), Exn> {
    let cap = heap.config().limit_bytes.min(MAX_STR_BYTES);
    match bytes {
        Some(n) if n <= cap => Ok(()),
        Some(n) => Err(Exn::msg(format!("{func}: result of {n} bytes is too large (at most {cap})"))),
        None => Err(Exn::msg(format!("{func}: result is too large (at most {cap} bytes)"))),
    }
}

/// A float converted to an int, or an error if it has no int value.
pub(crate) fn float_to_int(func: &str, f: f64) -> Result<i64, Exn> {
    // 2^63 is exactly representable; every float in [-2^63, 2^63) converts exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if f.is_nan() {
        return Err(Exn::msg(format!("{func}: cannot convert nan to an int")));
    }
    if !(-LIMIT..LIMIT).contains(&f) {
        return Err(Exn::msg(format!("{func}: {} is out of the int range", float_text(f))));
    }
    Ok(f as i64)
}

/// Exact numeric order of two numbers (ints and floats mixed without rounding);
/// `None` when either is NaN or not a number.
pub(crate) fn num_cmp(a: Value, b: Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(&y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(&y),
        (Value::Int(x), Value::Float(y)) => int_float_cmp(x, y),
        (Value::Float(x), Value::Int(y)) => int_float_cmp(y, x).map(Ordering::reverse),
        _ => None,
    }
}

fn int_float_cmp(i: i64, f: f64) -> Option<Ordering> {
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

/// A non-negative int argument (`name` says which, e.g. "count"), as an index or count.
pub(crate) fn arg_index(func: &str, name: &str, v: Value) -> Result<usize, Exn> {
    let i = arg_int(func, &format!("an int {name}"), v)?;
    usize::try_from(i).map_err(|_| Exn::msg(format!("{func}: the {name} must not be negative, got {i}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_compare_is_exact() {
        assert_eq!(num_cmp(Value::Int(1), Value::Float(1.0)), Some(Ordering::Equal));
        assert_eq!(num_cmp(Value::Int(1), Value::Float(1.5)), Some(Ordering::Less));
        assert_eq!(num_cmp(Value::Int(-2), Value::Float(-1.5)), Some(Ordering::Less));
        assert_eq!(num_cmp(Value::Float(-1.5), Value::Int(-2)), Some(Ordering::Greater));
        let big = 9_007_199_254_740_993_i64; // 2^53 + 1: rounds to 2^53 as a float
        assert_eq!(num_cmp(Value::Int(big), Value::Float(9_007_199_254_740_992.0)), Some(Ordering::Greater));
        assert_eq!(num_cmp(Value::Int(i64::MAX), Value::Float(i64::MAX as f64)), Some(Ordering::Less));
        assert_eq!(num_cmp(Value::Int(i64::MIN), Value::Float(i64::MIN as f64)), Some(Ordering::Equal));
        assert_eq!(num_cmp(Value::Int(0), Value::Float(f64::NAN)), None);
        assert_eq!(num_cmp(Value::Int(0), Value::Float(f64::INFINITY)), Some(Ordering::Less));
    }

    #[test]
    fn float_to_int_range() {
        assert_eq!(float_to_int("t", i64::MIN as f64).ok(), Some(i64::MIN));
        assert!(float_to_int("t", i64::MAX as f64).is_err());
        assert!(float_to_int("t", f64::NAN).is_err());
        assert!(float_to_int("t", f64::NEG_INFINITY).is_err());
        assert_eq!(float_to_int("t", -3.9).ok(), Some(-3));
    }
}
