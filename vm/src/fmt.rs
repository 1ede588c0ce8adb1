//! How values print: `to_string`, `println` and string interpolation all use this.
//!
//! Strings print raw at the top level and quoted inside arrays and maps; floats always
//! show a decimal point or exponent (`2.0`, `1e300`); a container that contains itself
//! prints `[...]` / `{...}` where it recurs.

use crate::heap::{Heap, HeapError};
use crate::object::{array_values, closure_fn, map_entries, str_ref};
use crate::process::fn_name;
use crate::runtime::LinkedModule;
use crate::value::{Addr, Value};
use std::sync::Arc;

/// Longest text one conversion produces; beyond it the output ends in `...`.
const MAX_LEN: usize = 1 << 20;
/// Deepest nesting printed; deeper containers print as `[...]` / `{...}` (printing
/// recurses, and must not exhaust the Rust stack whatever a program builds).
const MAX_DEPTH: usize = 200;

pub fn display(heap: &Heap, linked: &[Arc<LinkedModule>], v: Value) -> Result<String, HeapError> {
    let mut out = String::new();
    write_value(heap, linked, v, false, &mut Vec::new(), &mut out)?;
    Ok(out)
}

/// Like [`display`] but strings are quoted (as inside containers).
pub fn repr(heap: &Heap, linked: &[Arc<LinkedModule>], v: Value) -> Result<String, HeapError> {
    let mut out = String::new();
    write_value(heap, linked, v, true, &mut Vec::new(), &mut out)?;
    Ok(out)
}

pub fn float_text(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        format!("{f:?}")
    }
}

fn write_value(
    heap: &Heap,
    linked: &[Arc<LinkedModule>],
    v: Value,
    quoted: bool,
    path: &mut Vec<Addr>,
    out: &mut String,
) -> Result<(), HeapError> {
    use std::fmt::Write;
    if out.len() > MAX_LEN {
        return Ok(());
    }
    match v {
        Value::Nil => out.push_str("nil"),
        Value::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => out.push_str(&float_text(f)),
        Value::Str(a) => {
            let s = str_ref(heap, a)?;
            if quoted {
                let _ = write!(out, "{s:?}");
            } else {
                out.push_str(s);
            }
        }
        Value::Array(a) => {
            if path.contains(&a) || path.len() >= MAX_DEPTH {
                out.push_str("[...]");
                return Ok(());
            }
            path.push(a);
            out.push('[');
            for (i, x) in array_values(heap, a)?.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(heap, linked, x, true, path, out)?;
            }
            out.push(']');
            path.pop();
        }
        Value::Map(a) => {
            if path.contains(&a) || path.len() >= MAX_DEPTH {
                out.push_str("{...}");
                return Ok(());
            }
            path.push(a);
            out.push('{');
            for (i, (k, x)) in map_entries(heap, a)?.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(heap, linked, k, true, path, out)?;
                out.push_str(": ");
                write_value(heap, linked, x, true, path, out)?;
            }
            out.push('}');
            path.pop();
        }
        Value::Closure(a) => {
            let f = closure_fn(heap, a)?;
            let _ = write!(out, "<fn {}>", fn_name(linked, f));
        }
        Value::Func(f) => {
            let _ = write!(out, "<fn {}>", fn_name(linked, f));
        }
        Value::Native(_) => out.push_str("<native fn>"),
        Value::Box(_) => out.push_str("<box>"),
        Value::Pid(p) => {
            let _ = write!(out, "<pid {}>", crate::value::name_text(p));
        }
        Value::Tx(c) => {
            let _ = write!(out, "<sender {}>", crate::value::name_text(c));
        }
        Value::Rx(c) => {
            let _ = write!(out, "<receiver {}>", crate::value::name_text(c));
        }
        Value::File(f) => {
            let _ = write!(out, "<file {f}>");
        }
        Value::Timeout => out.push_str("timeout"),
        Value::Group(g) => {
            let _ = write!(out, "<group {}>", crate::value::name_text(g));
        }
    }
    if out.len() > MAX_LEN {
        let mut cut = MAX_LEN;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    Ok(())
}
