//! Messages: values deep-copied out of one process and rebuilt in another.

mod common;

use common::*;
use proptest::prelude::*;
use tern_vm::flatten::{flatten, rebuild};
use tern_vm::message::{Message, MessageError, Obj, Val};
use tern_vm::object::{alloc_str, array_push, new_array};
use tern_vm::Value;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any graph (shared objects, cycles, objects larger than a page) comes out of the
    /// receiving heap with the same shape, after a trip through the wire encoding.
    #[test]
    fn graphs_survive_a_trip_between_processes(
        nodes in prop::collection::vec(node(), 1..40),
        edges in prop::collection::vec((0usize..40, 0usize..40), 0..120),
        roots in prop::collection::vec(0usize..40, 0..8),
    ) {
        let (vm, mut a) = vm_and_process(small_config());
        let root = build(&mut a.heap, &nodes, &edges, &roots);
        let msg = flatten(&a, &vm, root, 64 << 20).unwrap();
        let bytes = postcard::to_allocvec(&msg).unwrap();
        let msg2: Message = postcard::from_bytes(&bytes).unwrap();
        let (_, mut b) = vm_and_process(small_config());
        // Something already in the receiver's heap, so addresses differ.
        alloc_str(&mut b.heap, "already here").unwrap();
        let copy = rebuild(&msg2, &mut b, &vm).unwrap();
        prop_assert_eq!(dump_of(&b.heap, copy), dump_of(&a.heap, root));
    }
}

#[test]
fn a_shared_object_is_copied_once() {
    let (vm, mut a) = vm_and_process(small_config());
    let s = alloc_str(&mut a.heap, "shared").unwrap();
    let arr = new_array(&mut a.heap, 0).unwrap();
    for _ in 0..3 {
        array_push(&mut a.heap, arr, Value::Str(s)).unwrap();
    }
    array_push(&mut a.heap, arr, Value::Array(arr)).unwrap();
    let msg = flatten(&a, &vm, Value::Array(arr), 1 << 20).unwrap();
    assert_eq!(msg.objs.len(), 2);
}

#[test]
fn size_limit_is_enforced() {
    let (vm, mut a) = vm_and_process(small_config());
    let s = alloc_str(&mut a.heap, &"x".repeat(100_000)).unwrap();
    assert_eq!(flatten(&a, &vm, Value::Str(s), 10_000), Err(MessageError::TooLarge(10_000)));
}

#[test]
fn inconsistent_messages_are_refused() {
    let (vm, mut b) = vm_and_process(small_config());
    let bad = [
        Message { root: Val::Obj(3), objs: vec![] },
        Message { root: Val::Obj(0), objs: vec![Obj::Box(Val::Nil)] },
        Message { root: Val::Obj(0), objs: vec![Obj::Map(vec![(Val::Nil, Val::Int(1))])] },
        Message { root: Val::Obj(0), objs: vec![Obj::Array(vec![Val::Obj(7)])] },
        Message { root: Val::Native("no_such_native".into()), objs: vec![] },
        Message { root: Val::Func { module: tern_vm::ModuleHash([7; 32]), func: 1 }, objs: vec![] },
    ];
    for m in &bad {
        assert!(rebuild(m, &mut b, &vm).is_err(), "{m:?}");
    }
}

#[test]
fn damaged_encodings_never_panic() {
    let (vm, mut a) = vm_and_process(small_config());
    let root = build(&mut a.heap, &[Node::Array, Node::Map, Node::Str(20)], &[(0, 1), (1, 2), (1, 0), (0, 2)], &[0, 1]);
    let bytes = postcard::to_allocvec(&flatten(&a, &vm, root, 1 << 20).unwrap()).unwrap();
    let (_, mut b) = vm_and_process(small_config());
    for i in 0..bytes.len() {
        for flip in [1u8, 0x40, 0xff] {
            let mut d = bytes.clone();
            d[i] ^= flip;
            if let Ok(m) = postcard::from_bytes::<Message>(&d) {
                let _ = rebuild(&m, &mut b, &vm);
            }
        }
    }
}

#[test]
fn a_box_is_never_a_value() {
    let (vm, mut b) = vm_and_process(small_config());
    let m = Message { root: Val::Obj(0), objs: vec![Obj::Array(vec![Val::Obj(1)]), Obj::Box(Val::Int(1))] };
    assert!(matches!(rebuild(&m, &mut b, &vm), Err(MessageError::Invalid(_))));
}
