//! Clocks and random numbers.
//!
//! The random state is a `u64` that belongs to the process (it migrates with it), so a
//! seeded sequence is the same wherever the process runs. The generator is splitmix64.

use crate::util::arg_int;
use tern_vm::{Exn, NativeCtx, NativeDef, Value};

#[rustfmt::skip]
pub const NATIVES: &[NativeDef] = &[
    NativeDef { name: "mono_ms", min_args: 0, max_args: 0, f: mono_ms },
    NativeDef { name: "mono_us", min_args: 0, max_args: 0, f: mono_us },
    NativeDef { name: "wall_ms", min_args: 0, max_args: 0, f: wall_ms },
    NativeDef { name: "rand_seed", min_args: 1, max_args: 1, f: rand_seed },
    NativeDef { name: "rand_int", min_args: 2, max_args: 2, f: rand_int },
    NativeDef { name: "rand_float", min_args: 0, max_args: 0, f: rand_float },
];

fn clamp_i64(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

fn mono_ms(ctx: &mut NativeCtx<'_>, _args: &[Value]) -> Result<Value, Exn> {
    Ok(Value::Int(clamp_i64(ctx.host.mono_us() / 1000)))
}

fn mono_us(ctx: &mut NativeCtx<'_>, _args: &[Value]) -> Result<Value, Exn> {
    Ok(Value::Int(clamp_i64(ctx.host.mono_us())))
}

fn wall_ms(ctx: &mut NativeCtx<'_>, _args: &[Value]) -> Result<Value, Exn> {
    Ok(Value::Int(clamp_i64(ctx.host.wall_ms())))
}

/// splitmix64: advances `state` and returns the next 64 random bits.
pub fn next_u64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform value in `0..span` (`span` > 0), without modulo bias (Lemire's method).
fn below(state: &mut u64, span: u64) -> u64 {
    let threshold = span.wrapping_neg() % span;
    loop {
        let m = u128::from(next_u64(state)) * u128::from(span);
        if (m as u64) >= threshold {
            return (m >> 64) as u64;
        }
    }
}

fn rand_seed(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let n = arg_int("rand_seed", "an int seed", args[0])?;
    *ctx.rng = n as u64;
    Ok(Value::Nil)
}

fn rand_int(ctx: &mut NativeCtx<'_>, args: &[Value]) -> Result<Value, Exn> {
    let lo = arg_int("rand_int", "int bounds", args[0])?;
    let hi = arg_int("rand_int", "int bounds", args[1])?;
    if lo > hi {
        return Err(Exn::msg(format!("rand_int: empty range {lo}..{hi} (lo must be at most hi)")));
    }
    let mut state = *ctx.rng;
    // hi - lo fits in a u64; the span is 2^64 only for the full int range.
    let diff = hi.wrapping_sub(lo) as u64;
    let r = match diff.checked_add(1) {
        Some(span) => below(&mut state, span),
        None => next_u64(&mut state),
    };
    *ctx.rng = state;
    Ok(Value::Int(lo.wrapping_add(r as i64)))
}

fn rand_float(ctx: &mut NativeCtx<'_>, _args: &[Value]) -> Result<Value, Exn> {
    let bits = next_u64(ctx.rng) >> 11;
    Ok(Value::Float(bits as f64 / (1u64 << 53) as f64))
}
