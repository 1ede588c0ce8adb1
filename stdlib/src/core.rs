//! Output, conversion and error natives.

use crate::util::{arg_str, float_to_int, new_str, type_err};
use tern_vm::fmt::display;
use tern_vm::object;
use tern_vm::{Exn, NativeCtx, NativeDef, Value};

#[rustfmt::skip]
pub const NATIVES: &[NativeDef] = &[
    NativeDef { name: "print", min_args: 0, max_args: u8::MAX, f: print },
    NativeDef { name: "println", min_args: 0, max_args: u8::MAX, f: println },
    NativeDef { name: "to_string", min_args: 1, max_args: 1, f: to_string },
    NativeDef { name: "type_of", min_args: 1, max_args: 1, f: type_of },
    NativeDef { name: "int", min_args: 1, max_args: 1, f: int },
    NativeDef { name: "float", min_args: 1, max_args: 1, f: float },
    NativeDef { name: "parse_int", min_args: 1, max_args: 1, f: parse_int },
    NativeDef { name: "parse_float", min_args: 1, max_args: 1, f: parse_float },
    NativeDef { name: "error", min_args: 1, max_args: 1, f: error },
    NativeDef { name: "assert", min_args: 1, max_args: 2, f: assert },
];

fn joined(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<String, Exn> {
    let mut s = String::new();
    for (i, v) in args.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&display(ctx.heap, ctx.linked, *v)?);
    }
    Ok(s)
}

fn print(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let s = joined(ctx, args)?;
    ctx.host.console_write(&s);
    Ok(Value::Nil)
}

fn println(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let mut s = joined(ctx, args)?;
    s.push('\n');
    ctx.host.console_write(&s);
    Ok(Value::Nil)
}

fn to_string(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    if let Value::Str(_) = args[0] {
        return Ok(args[0]);
    }
    let s = display(ctx.heap, ctx.linked, args[0])?;
    Ok(Value::Str(object::alloc_str(ctx.heap, &s)?))
}

fn type_of(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    new_str(ctx.heap, args[0].type_name())
}

/// Parses an int: optional sign, then decimal digits or `0x` and hex digits, with
/// surrounding whitespace allowed. `None` when the text is not such a number or does
/// not fit in an int.
pub(crate) fn parse_int_text(s: &str) -> Option<i64> {
    let t = s.trim();
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits) = match body.get(..2) {
        Some("0x" | "0X") => (16, &body[2..]),
        _ => (10, body),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || (radix == 16 && b.is_ascii_hexdigit())) {
        return None;
    }
    let mag = u128::from_str_radix(digits, radix).ok()?;
    let v = if neg { -i128::try_from(mag).ok()? } else { i128::try_from(mag).ok()? };
    i64::try_from(v).ok()
}

/// Parses a float (anything Rust's `f64` parser takes, plus whatever
/// [`parse_int_text`] takes), surrounding whitespace allowed.
fn parse_float_text(s: &str) -> Option<f64> {
    let t = s.trim();
    if let Ok(f) = t.parse::<f64>() {
        return Some(f);
    }
    parse_int_text(t).map(|i| i as f64)
}

fn int(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    match args[0] {
        Value::Int(i) => Ok(Value::Int(i)),
        Value::Float(f) => Ok(Value::Int(float_to_int("int", f.trunc())?)),
        Value::Str(a) => {
            let s = object::str_ref(ctx.heap, a)?;
            if let Some(i) = parse_int_text(s) {
                return Ok(Value::Int(i));
            }
            match parse_float_text(s) {
                Some(f) if f.is_finite() => Ok(Value::Int(float_to_int("int", f.trunc())?)),
                _ => Err(Exn::msg(format!("int: cannot convert {s:?} to an int"))),
            }
        }
        v => Err(type_err("int", "a number or a string", v)),
    }
}

fn float(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    match args[0] {
        Value::Int(i) => Ok(Value::Float(i as f64)),
        Value::Float(f) => Ok(Value::Float(f)),
        Value::Str(a) => {
            let s = object::str_ref(ctx.heap, a)?;
            match parse_float_text(s) {
                Some(f) => Ok(Value::Float(f)),
                None => Err(Exn::msg(format!("float: cannot convert {s:?} to a float"))),
            }
        }
        v => Err(type_err("float", "a number or a string", v)),
    }
}

fn parse_int(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let s = arg_str(ctx.heap, "parse_int", "a string", args[0])?;
    Ok(parse_int_text(s).map_or(Value::Nil, Value::Int))
}

fn parse_float(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let s = arg_str(ctx.heap, "parse_float", "a string", args[0])?;
    Ok(parse_float_text(s).map_or(Value::Nil, Value::Float))
}

fn error(_ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    Err(Exn::Raise(args[0]))
}

fn assert(_ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    if args[0].is_truthy() {
        return Ok(Value::Nil);
    }
    match args.get(1) {
        Some(m) => Err(Exn::Raise(*m)),
        None => Err(Exn::msg("assertion failed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_text() {
        assert_eq!(parse_int_text("42"), Some(42));
        assert_eq!(parse_int_text("  -7\n"), Some(-7));
        assert_eq!(parse_int_text("+0x1F"), Some(31));
        assert_eq!(parse_int_text("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int_text("-0x8000000000000000"), Some(i64::MIN));
        assert_eq!(parse_int_text("9223372036854775808"), None);
        for bad in ["", "-", "+", "0x", "1.5", "1e3", "--1", "+-1", "0x-1", "0x+1", "1_000", "abc", "١"] {
            assert_eq!(parse_int_text(bad), None, "{bad:?}");
        }
    }
}
