//! String natives. Strings are immutable UTF-8; offsets and lengths are in bytes.

use crate::util::{arg_array, arg_index, arg_int, arg_num, arg_str, check_str_size, new_str};
use tern_vm::fmt::{display, float_text};
use tern_vm::heap::Heap;
use tern_vm::object;
use tern_vm::value::Addr;
use tern_vm::{Exn, NativeCtx, NativeDef, Value};

#[rustfmt::skip]
pub const NATIVES: &[NativeDef] = &[
    NativeDef { name: "split", min_args: 2, max_args: 2, f: split },
    NativeDef { name: "join", min_args: 2, max_args: 2, f: join },
    NativeDef { name: "find", min_args: 2, max_args: 2, f: find },
    NativeDef { name: "replace", min_args: 3, max_args: 3, f: replace },
    NativeDef { name: "trim", min_args: 1, max_args: 1, f: trim },
    NativeDef { name: "upper", min_args: 1, max_args: 1, f: upper },
    NativeDef { name: "lower", min_args: 1, max_args: 1, f: lower },
    NativeDef { name: "chars", min_args: 1, max_args: 1, f: chars },
    NativeDef { name: "starts_with", min_args: 2, max_args: 2, f: starts_with },
    NativeDef { name: "ends_with", min_args: 2, max_args: 2, f: ends_with },
    NativeDef { name: "repeat", min_args: 2, max_args: 2, f: repeat },
    NativeDef { name: "format", min_args: 1, max_args: u8::MAX, f: format },
    NativeDef { name: "to_fixed", min_args: 2, max_args: 2, f: to_fixed },
    NativeDef { name: "ord", min_args: 1, max_args: 1, f: ord },
    NativeDef { name: "chr", min_args: 1, max_args: 1, f: chr },
];

/// Most decimals `to_fixed` produces.
const MAX_FIXED_DIGITS: i64 = 100;

/// An array of new strings, one per piece; `count` is how many there are. Checked
/// against the heap limit first, so a huge split never builds its pieces' table.
fn str_array<'a>(heap: &mut Heap, func: &str, count: usize, pieces: impl IntoIterator<Item = &'a str>) -> Result<Value, Exn> {
    // Each piece takes at least a 3-word string and a 2-word array slot.
    if count.saturating_mul(40) > heap.config().limit_bytes {
        return Err(Exn::msg(format!("{func}: {count} pieces would not fit in the heap limit")));
    }
    let mut vals = Vec::with_capacity(count);
    for p in pieces {
        vals.push(Value::Str(object::alloc_str(heap, p)?));
    }
    Ok(Value::Array(object::array_from(heap, &vals)?))
}

/// The characters of `s`, each as a string slice.
fn char_pieces(s: &str) -> impl Iterator<Item = &str> {
    s.char_indices().map(move |(i, c)| &s[i..i + c.len_utf8()])
}

fn split(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let s = arg_str(ctx.heap, "split", "a string", args[0])?.to_owned();
    let sep = arg_str(ctx.heap, "split", "a string separator", args[1])?.to_owned();
    if sep.is_empty() {
        return str_array(ctx.heap, "split", s.chars().count(), char_pieces(&s));
    }
    let count = s.matches(sep.as_str()).count() + 1;
    str_array(ctx.heap, "split", count, s.split(sep.as_str()))
}

fn join(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let a = arg_array("join", args[0])?;
    let sep = arg_str(ctx.heap, "join", "a string separator", args[1])?.to_owned();
    let mut out = String::new();
    for (i, v) in object::array_values(ctx.heap, a)?.into_iter().enumerate() {
        if i > 0 {
            out.push_str(&sep);
        }
        match v {
            Value::Str(s) => out.push_str(object::str_ref(ctx.heap, s)?),
            _ => out.push_str(&display(ctx.heap, ctx.linked, v)?),
        }
        check_str_size(ctx.heap, "join", Some(out.len()))?;
    }
    new_str(ctx.heap, &out)
}

/// The byte offset of `sub` in `s`, or nil (shared with `index_of`).
pub(crate) fn find_in(heap: &Heap, func: &str, s: &str, sub: Value) -> Result<Value, Exn> {
    let sub = arg_str(heap, func, "a string to search for", sub)?;
    Ok(s.find(sub).map_or(Value::Nil, |i| Value::Int(i as i64)))
}

fn find(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let s = arg_str(ctx.heap, "find", "a string", args[0])?;
    find_in(ctx.heap, "find", s, args[1])
}

fn replace(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let heap = &*ctx.heap;
    let s = arg_str(heap, "replace", "a string", args[0])?;
    let from = arg_str(heap, "replace", "a string to replace", args[1])?;
    let to = arg_str(heap, "replace", "a replacement string", args[2])?;
    let count = if from.is_empty() { s.chars().count() + 1 } else { s.matches(from).count() };
    let size = count.checked_mul(to.len()).and_then(|n| n.checked_add(s.len() - count * from.len()));
    check_str_size(heap, "replace", size)?;
    let out = s.replace(from, to);
    new_str(ctx.heap, &out)
}

fn trim(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let s = arg_str(ctx.heap, "trim", "a string", args[0])?;
    let t = s.trim();
    if t.len() == s.len() {
        return Ok(args[0]);
    }
    let t = t.to_owned();
    new_str(ctx.heap, &t)
}

fn upper(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let s = arg_str(ctx.heap, "upper", "a string", args[0])?.to_uppercase();
    new_str(ctx.heap, &s)
}

fn lower(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let s = arg_str(ctx.heap, "lower", "a string", args[0])?.to_lowercase();
    new_str(ctx.heap, &s)
}

fn chars(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let s = arg_str(ctx.heap, "chars", "a string", args[0])?.to_owned();
    str_array(ctx.heap, "chars", s.chars().count(), char_pieces(&s))
}

fn starts_with(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let s = arg_str(ctx.heap, "starts_with", "a string", args[0])?;
    let p = arg_str(ctx.heap, "starts_with", "a string prefix", args[1])?;
    Ok(Value::Bool(s.starts_with(p)))
}

fn ends_with(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let s = arg_str(ctx.heap, "ends_with", "a string", args[0])?;
    let p = arg_str(ctx.heap, "ends_with", "a string suffix", args[1])?;
    Ok(Value::Bool(s.ends_with(p)))
}

fn repeat(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let s = arg_str(ctx.heap, "repeat", "a string", args[0])?;
    let n = arg_index("repeat", "count", args[1])?;
    check_str_size(ctx.heap, "repeat", s.len().checked_mul(n))?;
    let out = s.repeat(n);
    new_str(ctx.heap, &out)
}

fn format(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let fmt = arg_str(ctx.heap, "format", "a format string", args[0])?;
    let mut out = String::with_capacity(fmt.len());
    let mut next = 1;
    let mut rest = fmt;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let two = rest.get(i..i + 2).unwrap_or("");
        match two {
            "{{" => out.push('{'),
            "}}" => out.push('}'),
            "{}" => {
                let Some(v) = args.get(next) else {
                    return Err(Exn::msg(format!(
                        "format: the format string has more {{}} placeholders than the {} argument{} given",
                        args.len() - 1,
                        if args.len() == 2 { "" } else { "s" }
                    )));
                };
                out.push_str(&display(ctx.heap, ctx.linked, *v)?);
                check_str_size(ctx.heap, "format", Some(out.len()))?;
                next += 1;
            }
            _ => {
                let c = &rest[i..i + 1];
                return Err(Exn::msg(format!(
                    "format: unmatched `{c}` at byte {} (write `{c}{c}` for a literal `{c}`)",
                    fmt.len() - rest.len() + i
                )));
            }
        }
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    if next < args.len() {
        let extra = args.len() - next;
        return Err(Exn::msg(format!("format: {extra} argument{} left over with no {{}} placeholder", if extra == 1 { "" } else { "s" })));
    }
    new_str(ctx.heap, &out)
}

fn to_fixed(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let digits = arg_int("to_fixed", "an int number of digits", args[1])?;
    if !(0..=MAX_FIXED_DIGITS).contains(&digits) {
        return Err(Exn::msg(format!("to_fixed: digits must be between 0 and {MAX_FIXED_DIGITS}, got {digits}")));
    }
    let d = digits as usize;
    let s = match args[0] {
        Value::Int(i) if d == 0 => i.to_string(),
        Value::Int(i) => format!("{i}.{}", "0".repeat(d)),
        v => {
            let f = arg_num("to_fixed", v)?;
            if f.is_finite() {
                format!("{f:.d$}")
            } else {
                float_text(f)
            }
        }
    };
    new_str(ctx.heap, &s)
}

fn ord(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let s = arg_str(ctx.heap, "ord", "a string", args[0])?;
    match s.chars().next() {
        Some(c) => Ok(Value::Int(i64::from(u32::from(c)))),
        None => Err(Exn::msg("ord: the string is empty")),
    }
}

fn chr(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let n = arg_int("chr", "an int code point", args[0])?;
    let c = u32::try_from(n).ok().and_then(char::from_u32).ok_or_else(|| Exn::msg(format!("chr: {n} is not a Unicode code point")))?;
    let mut buf = [0u8; 4];
    new_str(ctx.heap, c.encode_utf8(&mut buf))
}

/// `len` of a string: its length in bytes.
pub(crate) fn str_len(heap: &Heap, a: Addr) -> Result<Value, Exn> {
    Ok(Value::Int(object::str_bytes(heap, a)?.len() as i64))
}

/// `slice` of a string: bytes `from..to`, which must be on character boundaries.
pub(crate) fn str_slice(heap: &mut Heap, a: Addr, from: usize, to: usize) -> Result<Value, Exn> {
    let s = object::str_ref(heap, a)?;
    if from > to || to > s.len() {
        return Err(Exn::msg(format!("slice: range {from}..{to} is out of bounds for a string of {} bytes", s.len())));
    }
    for i in [from, to] {
        if !s.is_char_boundary(i) {
            return Err(Exn::msg(format!("slice: byte offset {i} is not on a character boundary")));
        }
    }
    let t = s[from..to].to_owned();
    new_str(heap, &t)
}

/// `contains` of a string: whether `sub` occurs in it.
pub(crate) fn str_contains(heap: &Heap, s: &str, sub: Value) -> Result<Value, Exn> {
    let sub = arg_str(heap, "contains", "a string to search for", sub)?;
    Ok(Value::Bool(s.contains(sub)))
}
