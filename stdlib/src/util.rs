//! Argument checking and small helpers shared by the natives.
//!
//! Every check returns an [`Exn`] whose message names the native, so a wrong call reads
//! like `sqrt expects a number, got string`.

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

pub(crate) use tern_vm::value::num_cmp;

/// A non-negative int argument (`name` says which, e.g. "count"), as an index or count.
pub(crate) fn arg_index(func: &str, name: &str, v: Value) -> Result<usize, Exn> {
    let i = arg_int(func, &format!("an int {name}"), v)?;
    usize::try_from(i).map_err(|_| Exn::msg(format!("{func}: the {name} must not be negative, got {i}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_to_int_range() {
        assert_eq!(float_to_int("t", i64::MIN as f64).ok(), Some(i64::MIN));
        assert!(float_to_int("t", i64::MAX as f64).is_err());
        assert!(float_to_int("t", f64::NAN).is_err());
        assert!(float_to_int("t", f64::NEG_INFINITY).is_err());
        assert_eq!(float_to_int("t", -3.9).ok(), Some(-3));
    }
}
