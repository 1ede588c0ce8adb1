//! Output and conversion natives.

use tern_vm::fmt::display;
use tern_vm::object;
use tern_vm::{Exn, NativeCtx, NativeDef, Value};

pub const NATIVES: &[NativeDef] = &[
    NativeDef { name: "print", min_args: 0, max_args: u8::MAX, f: print },
    NativeDef { name: "println", min_args: 0, max_args: u8::MAX, f: println },
    NativeDef { name: "to_string", min_args: 1, max_args: 1, f: to_string },
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
