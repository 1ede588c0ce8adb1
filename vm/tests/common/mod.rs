//! Shared by the heap tests: random object graphs and a structural dump of them.
#![allow(dead_code)]

use proptest::prelude::*;
use tern_vm::bytecode::{Function, Module, Op};
use tern_vm::heap::{Heap, HeapConfig};
use tern_vm::object::{self, *};
use tern_vm::{Natives, Process, Value, Vm, VmConfig};

/// A structural description of everything reachable from `v`; shared and cyclic
/// references appear as back-references by visit order, so two heaps with the same
/// graph give the same dump whatever the addresses.
pub fn dump(heap: &Heap, v: Value, seen: &mut Vec<u32>, out: &mut String) {
    use std::fmt::Write;
    let r = match v {
        Value::Str(a) => {
            let s = str_ref(heap, a).unwrap();
            let _ = write!(out, "s{}:{};", s.len(), object::hash_bytes(s.as_bytes()));
            return;
        }
        Value::Array(a) | Value::Map(a) => a,
        other => {
            let _ = write!(out, "{other:?};");
            return;
        }
    };
    if let Some(i) = seen.iter().position(|&x| x == r) {
        let _ = write!(out, "@{i};");
        return;
    }
    seen.push(r);
    match v {
        Value::Array(a) => {
            out.push('[');
            for x in array_values(heap, a).unwrap() {
                dump(heap, x, seen, out);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push('{');
            for (k, x) in map_entries(heap, m).unwrap() {
                dump(heap, k, seen, out);
                out.push_str("=>");
                dump(heap, x, seen, out);
            }
            out.push('}');
        }
        _ => unreachable!(),
    }
}

pub fn dump_of(heap: &Heap, v: Value) -> String {
    let mut s = String::new();
    dump(heap, v, &mut Vec::new(), &mut s);
    s
}

#[derive(Debug, Clone)]
pub enum Node {
    Str(usize),
    Array,
    Map,
}

pub fn node() -> impl Strategy<Value = Node> {
    prop_oneof![(0usize..9000).prop_map(Node::Str), Just(Node::Array), Just(Node::Map)]
}

/// Builds the graph; returns the root array (holding the chosen roots) and all nodes.
pub fn build(heap: &mut Heap, nodes: &[Node], edges: &[(usize, usize)], roots: &[usize]) -> Value {
    let mut vals = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        vals.push(match n {
            Node::Str(len) => Value::Str(alloc_str(heap, &"x".repeat(*len)).unwrap()),
            Node::Array => Value::Array(new_array(heap, 0).unwrap()),
            Node::Map => {
                let m = new_map(heap, 0).unwrap();
                map_set(heap, m, Value::Int(i as i64), Value::Float(i as f64)).unwrap();
                Value::Map(m)
            }
        });
    }
    for (k, &(a, b)) in edges.iter().enumerate() {
        let (a, b) = (a % vals.len(), b % vals.len());
        match vals[a] {
            Value::Array(x) => array_push(heap, x, vals[b]).unwrap(),
            Value::Map(m) => {
                let key = Value::Str(alloc_str(heap, &format!("k{k}")).unwrap());
                map_set(heap, m, key, vals[b]).unwrap();
            }
            _ => {}
        }
    }
    let root = new_array(heap, 0).unwrap();
    for &r in roots {
        array_push(heap, root, vals[r % vals.len()]).unwrap();
    }
    Value::Array(root)
}

pub fn small_config() -> HeapConfig {
    HeapConfig { page_size_bytes: 4096, limit_bytes: 64 << 20, gc_min_bytes: 1 << 20 }
}

/// A VM with a one-function module, and a process of it whose global 0 we can set.
pub fn vm_and_process(config: HeapConfig) -> (Vm, Process) {
    let module = Module {
        name: "t".into(),
        consts: vec![],
        functions: vec![Function { name: String::new(), arity: 0, nregs: 1, upvals: vec![], code: vec![Op::ReturnNil {}], lines: vec![1] }],
        globals: vec!["g".into()],
    };
    let vm = Vm::new(Natives::new(), VmConfig { heap: config, ..VmConfig::default() });
    let h = vm.load(module).unwrap();
    let p = Process::new(7, h, &vm).unwrap();
    (vm, p)
}
