//! Math natives. Functions of reals take ints or floats and return floats; `abs`,
//! `min`, `max` and `pow` keep ints as ints; `floor`, `ceil` and `round` return ints.

use crate::util::{arg_num, float_to_int, num_cmp, type_err};
use std::cmp::Ordering;
use tern_vm::object;
use tern_vm::{Exn, NativeCtx, NativeDef, Value};

#[rustfmt::skip]
pub const NATIVES: &[NativeDef] = &[
    NativeDef { name: "abs", min_args: 1, max_args: 1, f: abs },
    NativeDef { name: "min", min_args: 1, max_args: u8::MAX, f: min },
    NativeDef { name: "max", min_args: 1, max_args: u8::MAX, f: max },
    NativeDef { name: "sqrt", min_args: 1, max_args: 1, f: sqrt },
    NativeDef { name: "pow", min_args: 2, max_args: 2, f: pow },
    NativeDef { name: "floor", min_args: 1, max_args: 1, f: floor },
    NativeDef { name: "ceil", min_args: 1, max_args: 1, f: ceil },
    NativeDef { name: "round", min_args: 1, max_args: 1, f: round },
    NativeDef { name: "sin", min_args: 1, max_args: 1, f: sin },
    NativeDef { name: "cos", min_args: 1, max_args: 1, f: cos },
    NativeDef { name: "tan", min_args: 1, max_args: 1, f: tan },
    NativeDef { name: "atan", min_args: 1, max_args: 1, f: atan },
    NativeDef { name: "atan2", min_args: 2, max_args: 2, f: atan2 },
    NativeDef { name: "exp", min_args: 1, max_args: 1, f: exp },
    NativeDef { name: "ln", min_args: 1, max_args: 1, f: ln },
    NativeDef { name: "log10", min_args: 1, max_args: 1, f: log10 },
    NativeDef { name: "pi", min_args: 0, max_args: 0, f: pi },
    NativeDef { name: "is_nan", min_args: 1, max_args: 1, f: is_nan },
];

fn abs(_ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    match args[0] {
        Value::Int(i) => i.checked_abs().map(Value::Int).ok_or_else(|| Exn::msg(format!("integer overflow: abs({i})"))),
        Value::Float(f) => Ok(Value::Float(f.abs())),
        v => Err(type_err("abs", "a number", v)),
    }
}

/// The least (`want` = Less) or greatest (Greater) of numbers; NaN if any is NaN. One
/// array argument means its elements.
fn extreme(ctx: &mut NativeCtx<'_>, args: &[Value], func: &str, want: Ordering) -> Result<Value, Exn> {
    let owned;
    let vals = match args {
        [Value::Array(a)] => {
            owned = object::array_values(ctx.heap, *a)?;
            if owned.is_empty() {
                return Err(Exn::msg(format!("{func}: the array is empty")));
            }
            &owned[..]
        }
        _ => args,
    };
    let mut best = vals[0];
    for &v in vals {
        if !matches!(v, Value::Int(_) | Value::Float(_)) {
            return Err(type_err(func, "numbers", v));
        }
    }
    for &v in &vals[1..] {
        if matches!(best, Value::Float(f) if f.is_nan()) {
            break;
        }
        match num_cmp(v, best) {
            Some(o) if o == want => best = v,
            Some(_) => {}
            None => best = Value::Float(f64::NAN),
        }
    }
    Ok(best)
}

fn min(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    extreme(ctx, args, "min", Ordering::Less)
}

fn max(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    extreme(ctx, args, "max", Ordering::Greater)
}

fn pow(_ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    if let (Value::Int(x), Value::Int(y)) = (args[0], args[1]) {
        if y >= 0 {
            let r = match x {
                0 => Some(if y == 0 { 1 } else { 0 }),
                1 => Some(1),
                -1 => Some(if y % 2 == 0 { 1 } else { -1 }),
                _ => u32::try_from(y).ok().and_then(|e| x.checked_pow(e)),
            };
            return r.map(Value::Int).ok_or_else(|| Exn::msg(format!("integer overflow: pow({x}, {y})")));
        }
    }
    let x = arg_num("pow", args[0])?;
    let y = arg_num("pow", args[1])?;
    Ok(Value::Float(x.powf(y)))
}

/// `floor`, `ceil`, `round`: ints pass through, floats become ints.
fn to_int(func: &str, v: Value, op: fn(f64) -> f64) -> Result<Value, Exn> {
    match v {
        Value::Int(i) => Ok(Value::Int(i)),
        Value::Float(f) => Ok(Value::Int(float_to_int(func, op(f))?)),
        v => Err(type_err(func, "a number", v)),
    }
}

fn floor(_ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    to_int("floor", args[0], f64::floor)
}

fn ceil(_ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    to_int("ceil", args[0], f64::ceil)
}

/// Rounds half away from zero.
fn round(_ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    to_int("round", args[0], f64::round)
}

macro_rules! real_fn {
    ($($name:ident),* $(,)?) => {$(
        fn $name(_ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
            Ok(Value::Float(arg_num(stringify!($name), args[0])?.$name()))
        }
    )*};
}

real_fn!(sqrt, sin, cos, tan, atan, exp, ln, log10);

fn atan2(_ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let y = arg_num("atan2", args[0])?;
    let x = arg_num("atan2", args[1])?;
    Ok(Value::Float(y.atan2(x)))
}

fn pi(_ctx: &mut NativeCtx<'_>, _args: &[Value]) -> Result<Value, Exn> {
    Ok(Value::Float(std::f64::consts::PI))
}

fn is_nan(_ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    match args[0] {
        Value::Int(_) => Ok(Value::Bool(false)),
        Value::Float(f) => Ok(Value::Bool(f.is_nan())),
        v => Err(type_err("is_nan", "a number", v)),
    }
}
