//! Array and map natives, and the ones shared with strings (`len`, `slice`,
//! `contains`, `index_of`, `remove`).
//!
//! Natives that change an array or map do every read and allocation first and the
//! change last, so one restarted after a page fault or a collection does the same.

use crate::strings;
use crate::util::{arg_array, arg_index, arg_int, arg_map, key_exn, num_cmp, type_err};
use std::cmp::Ordering;
use tern_vm::heap::Heap;
use tern_vm::object;
use tern_vm::value::Addr;
use tern_vm::{Exn, NativeCtx, NativeDef, Value};

#[rustfmt::skip]
pub const NATIVES: &[NativeDef] = &[
    NativeDef { name: "len", min_args: 1, max_args: 1, f: len },
    NativeDef { name: "push", min_args: 2, max_args: 2, f: push },
    NativeDef { name: "pop", min_args: 1, max_args: 1, f: pop },
    NativeDef { name: "insert", min_args: 3, max_args: 3, f: insert },
    NativeDef { name: "remove", min_args: 2, max_args: 2, f: remove },
    NativeDef { name: "slice", min_args: 2, max_args: 3, f: slice },
    NativeDef { name: "sort", min_args: 1, max_args: 1, f: sort },
    NativeDef { name: "reverse", min_args: 1, max_args: 1, f: reverse },
    NativeDef { name: "index_of", min_args: 2, max_args: 2, f: index_of },
    NativeDef { name: "contains", min_args: 2, max_args: 2, f: contains },
    NativeDef { name: "array", min_args: 1, max_args: 2, f: array },
    NativeDef { name: "keys", min_args: 1, max_args: 1, f: keys },
    NativeDef { name: "values", min_args: 1, max_args: 1, f: values },
    NativeDef { name: "has", min_args: 2, max_args: 2, f: has },
    NativeDef { name: "get", min_args: 2, max_args: 3, f: get },
];

/// Largest array `array(n, fill)` makes.
const MAX_ARRAY: usize = 100_000_000;

fn len(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let n = match args[0] {
        Value::Str(a) => return strings::str_len(ctx.heap, a),
        Value::Array(a) => object::array_len(ctx.heap, a)?,
        Value::Map(m) => object::map_len(ctx.heap, m)?,
        v => return Err(type_err("len", "a string, an array or a map", v)),
    };
    Ok(Value::Int(n as i64))
}

fn push(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let a = arg_array("push", args[0])?;
    object::array_push(ctx.heap, a, args[1])?;
    Ok(Value::Nil)
}

fn pop(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let a = arg_array("pop", args[0])?;
    object::array_pop(ctx.heap, a)?.ok_or_else(|| Exn::msg("pop: the array is empty"))
}

/// An int index argument checked against `0..=limit`; `len` is for the message.
fn index_in(func: &str, v: Value, limit: usize, len: usize) -> Result<usize, Exn> {
    let i = arg_int(func, "an int index", v)?;
    match usize::try_from(i) {
        Ok(u) if u <= limit => Ok(u),
        _ => Err(Exn::msg(format!("{func}: index {i} is out of bounds for an array of length {len}"))),
    }
}

fn insert(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let a = arg_array("insert", args[0])?;
    let n = object::array_len(ctx.heap, a)?;
    let i = index_in("insert", args[1], n, n)?;
    // Read every element first (faulting in every page of the array), then grow by one
    // and write them all; `array_insert` shifts in place, and a page fault partway
    // through its shift could not be restarted.
    let mut vals = object::array_values(ctx.heap, a)?;
    vals.insert(i, args[2]);
    object::array_push(ctx.heap, a, vals[n])?;
    object::array_overwrite(ctx.heap, a, &vals)?;
    Ok(Value::Nil)
}

fn remove(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    match args[0] {
        Value::Array(a) => {
            let n = object::array_len(ctx.heap, a)?;
            if n == 0 {
                return Err(Exn::msg("remove: the array is empty"));
            }
            let i = index_in("remove", args[1], n - 1, n)?;
            object::array_remove(ctx.heap, a, i)?.ok_or_else(|| Exn::msg("remove: index out of bounds"))
        }
        Value::Map(m) => Ok(object::map_remove(ctx.heap, m, args[1]).map_err(key_exn)?.unwrap_or(Value::Nil)),
        v => Err(type_err("remove", "an array or a map", v)),
    }
}

fn slice(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let from = arg_index("slice", "start", args[1])?;
    match args[0] {
        Value::Str(a) => {
            let n = object::str_bytes(ctx.heap, a)?.len();
            let to = match args.get(2) {
                Some(v) => arg_index("slice", "end", *v)?,
                None => n,
            };
            strings::str_slice(ctx.heap, a, from, to)
        }
        Value::Array(a) => {
            let vals = object::array_values(ctx.heap, a)?;
            let to = match args.get(2) {
                Some(v) => arg_index("slice", "end", *v)?,
                None => vals.len(),
            };
            if from > to || to > vals.len() {
                return Err(Exn::msg(format!("slice: range {from}..{to} is out of bounds for an array of length {}", vals.len())));
            }
            Ok(Value::Array(object::array_from(ctx.heap, &vals[from..to])?))
        }
        v => Err(type_err("slice", "a string or an array", v)),
    }
}

/// What `sort` orders by: all numbers, or all strings.
enum SortKey<'h> {
    Num(Value),
    Str(&'h [u8]),
}

fn sort_order(heap: &Heap, vals: &[Value]) -> Result<Vec<usize>, Exn> {
    let mut keys = Vec::with_capacity(vals.len());
    for &v in vals {
        keys.push(match v {
            Value::Int(_) | Value::Float(_) => SortKey::Num(v),
            Value::Str(a) => SortKey::Str(object::str_bytes(heap, a)?),
            _ => {
                return Err(Exn::msg(format!("sort expects an array of numbers or of strings, found an element of type {}", v.type_name())))
            }
        });
    }
    let (mut nums, mut strs) = (false, false);
    for k in &keys {
        match k {
            SortKey::Num(_) => nums = true,
            SortKey::Str(_) => strs = true,
        }
    }
    if nums && strs {
        return Err(Exn::msg("sort: cannot sort an array that mixes numbers and strings"));
    }
    let mut order: Vec<usize> = (0..vals.len()).collect();
    // NaN sorts after every other number, so the order is total.
    let is_nan = |v: Value| matches!(v, Value::Float(f) if f.is_nan());
    order.sort_by(|&i, &j| match (&keys[i], &keys[j]) {
        (SortKey::Str(x), SortKey::Str(y)) => x.cmp(y),
        (SortKey::Num(x), SortKey::Num(y)) => num_cmp(*x, *y).unwrap_or_else(|| is_nan(*x).cmp(&is_nan(*y))),
        (SortKey::Num(_), SortKey::Str(_)) => Ordering::Less,
        (SortKey::Str(_), SortKey::Num(_)) => Ordering::Greater,
    });
    Ok(order)
}

fn sort(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let a = arg_array("sort", args[0])?;
    let vals = object::array_values(ctx.heap, a)?;
    let order = sort_order(ctx.heap, &vals)?;
    let sorted: Vec<Value> = order.into_iter().map(|i| vals[i]).collect();
    object::array_overwrite(ctx.heap, a, &sorted)?;
    Ok(Value::Nil)
}

fn reverse(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let a = arg_array("reverse", args[0])?;
    let mut vals = object::array_values(ctx.heap, a)?;
    vals.reverse();
    object::array_overwrite(ctx.heap, a, &vals)?;
    Ok(Value::Nil)
}

fn position(heap: &Heap, a: Addr, x: Value) -> Result<Option<usize>, Exn> {
    for (i, v) in object::array_values(heap, a)?.into_iter().enumerate() {
        if object::values_equal(heap, v, x)? {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

fn index_of(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    match args[0] {
        Value::Array(a) => Ok(position(ctx.heap, a, args[1])?.map_or(Value::Nil, |i| Value::Int(i as i64))),
        Value::Str(s) => strings::find_in(ctx.heap, "index_of", object::str_ref(ctx.heap, s)?, args[1]),
        v => Err(type_err("index_of", "an array or a string", v)),
    }
}

fn contains(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    match args[0] {
        Value::Array(a) => Ok(Value::Bool(position(ctx.heap, a, args[1])?.is_some())),
        Value::Str(s) => strings::str_contains(ctx.heap, object::str_ref(ctx.heap, s)?, args[1]),
        v => Err(type_err("contains", "a string or an array", v)),
    }
}

fn array(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let n = arg_index("array", "length", args[0])?;
    if n > MAX_ARRAY {
        return Err(Exn::msg(format!("array: length {n} is too large (at most {MAX_ARRAY})")));
    }
    let fill = args.get(1).copied().unwrap_or(Value::Nil);
    let a = object::new_array(ctx.heap, n)?;
    for _ in 0..n {
        object::array_push(ctx.heap, a, fill)?;
    }
    Ok(Value::Array(a))
}

fn keys(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let m = arg_map("keys", args[0])?;
    let ks: Vec<Value> = object::map_entries(ctx.heap, m)?.into_iter().map(|(k, _)| k).collect();
    Ok(Value::Array(object::array_from(ctx.heap, &ks)?))
}

fn values(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let m = arg_map("values", args[0])?;
    let vs: Vec<Value> = object::map_entries(ctx.heap, m)?.into_iter().map(|(_, v)| v).collect();
    Ok(Value::Array(object::array_from(ctx.heap, &vs)?))
}

fn has(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let m = arg_map("has", args[0])?;
    Ok(Value::Bool(object::map_get(ctx.heap, m, args[1]).map_err(key_exn)?.is_some()))
}

fn get(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let m = arg_map("get", args[0])?;
    let default = args.get(2).copied().unwrap_or(Value::Nil);
    Ok(object::map_get(ctx.heap, m, args[1]).map_err(key_exn)?.unwrap_or(default))
}
