//! The paged heap: dirty bits, present bits, garbage collection and snapshots of random
//! object graphs.

mod common;

use common::*;
use proptest::prelude::*;
use tern_vm::heap::{Heap, HeapConfig, HeapError};
use tern_vm::object::*;
use tern_vm::snapshot::{restore, snapshot};
use tern_vm::Value;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random graphs (with cycles, sharing and objects larger than a page) are unchanged
    /// by collection, by reuse of the freed space, and by snapshot + restore.
    #[test]
    fn graphs_survive_gc_and_snapshot(
        nodes in prop::collection::vec(node(), 1..40),
        edges in prop::collection::vec((0usize..40, 0usize..40), 0..120),
        roots in prop::collection::vec(0usize..40, 0..8),
    ) {
        let (vm, mut p) = vm_and_process(small_config());
        let root = build(&mut p.heap, &nodes, &edges, &roots);
        // Garbage that must not disturb anything.
        build(&mut p.heap, &nodes, &edges, &roots);
        p.globals[0] = root;
        let before = dump_of(&p.heap, root);
        p.collect_garbage().unwrap();
        prop_assert_eq!(&dump_of(&p.heap, root), &before);
        // Reuse the freed space, then collect again.
        build(&mut p.heap, &nodes, &edges, &roots);
        p.collect_garbage().unwrap();
        prop_assert_eq!(&dump_of(&p.heap, root), &before);
        let bytes = snapshot(&p);
        let q = restore(&bytes, &vm).unwrap();
        prop_assert_eq!(&dump_of(&q.heap, q.globals[0]), &before);
    }
}

/// One step of [`dirty_and_present_maps_agree_with_a_flag_per_page`].
#[derive(Debug, Clone)]
enum PageOp {
    Store(usize),
    Sample,
    Take,
    Absent(usize, usize),
    Supply(usize),
}

fn page_op(pages: usize) -> impl Strategy<Value = PageOp> {
    prop_oneof![
        4 => (0..pages).prop_map(PageOp::Store),
        1 => Just(PageOp::Sample),
        1 => Just(PageOp::Take),
        1 => (0..pages + 8, 0..pages + 8).prop_map(|(a, b)| PageOp::Absent(a.min(b), a.max(b))),
        2 => (0..pages).prop_map(PageOp::Supply),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The dirty flags (taken and sampled a block at a time) and the present bits (a bit
    /// per page, ranges filled a word at a time) against a flag per page, across block
    /// and word edges: the dirty set, the samples' counts, faults, the absent list.
    #[test]
    fn dirty_and_present_maps_agree_with_a_flag_per_page(
        pages in 1usize..300,
        ops in prop::collection::vec(page_op(300), 0..60),
    ) {
        let cfg = HeapConfig { page_size_bytes: 64, limit_bytes: 1 << 20, gc_min_bytes: 1 << 20 };
        let mut h = Heap::with_layout(cfg, pages, 1).expect("a heap");
        let pw = h.page_words();
        let all: Vec<u32> = (0..pages as u32).collect();
        prop_assert_eq!(h.take_dirty(), all, "a new heap is dirty whole");
        let mut dirty = vec![false; pages];
        let mut since_sample = vec![false; pages];
        let mut present = vec![true; pages];
        for op in ops {
            match op {
                PageOp::Store(p) if p < pages => {
                    let r = h.store(p * pw + 1, 7);
                    if present[p] {
                        prop_assert!(r.is_ok());
                        dirty[p] = true;
                        since_sample[p] = true;
                    } else {
                        prop_assert_eq!(r, Err(HeapError::Fault(p as u32)));
                    }
                }
                PageOp::Store(_) => {}
                PageOp::Sample => {
                    let want = since_sample.iter().filter(|&&d| d).count() as u32;
                    prop_assert_eq!(h.sample_dirty(), want);
                    since_sample.fill(false);
                }
                PageOp::Take => {
                    let want: Vec<u32> = (0..pages).filter(|&p| dirty[p]).map(|p| p as u32).collect();
                    prop_assert_eq!(h.take_dirty(), want);
                    dirty.fill(false);
                    since_sample.fill(false);
                }
                PageOp::Absent(a, b) => {
                    h.mark_absent_range(a as u32, b as u32);
                    for f in present.iter_mut().take(b).skip(a) {
                        *f = false;
                    }
                }
                PageOp::Supply(p) => {
                    let r = h.supply_page(p as u32, &vec![0u64; pw]);
                    prop_assert_eq!(r.is_ok(), p < pages);
                    if p < pages {
                        present[p] = true;
                    }
                }
            }
            let absent: Vec<u32> = (0..pages).filter(|&p| !present[p]).map(|p| p as u32).collect();
            prop_assert_eq!(h.first_absent(), absent.first().copied());
            prop_assert_eq!(h.all_present(), absent.is_empty());
            prop_assert_eq!(h.absent_list(), absent);
        }
    }
}

#[test]
fn every_store_marks_its_page_dirty() {
    let mut heap = Heap::new(small_config());
    let a = new_array(&mut heap, 0).unwrap();
    for i in 0..2000 {
        array_push(&mut heap, a, Value::Int(i)).unwrap();
    }
    heap.take_dirty();
    assert!(heap.take_dirty().is_empty(), "reading the dirty set clears it");
    array_set(&mut heap, a, 1500, Value::Int(-1)).unwrap();
    let dirty = heap.take_dirty();
    assert_eq!(dirty.len(), 1);
    // Element 1500 lives in the array's storage, 2 words per element after a header.
    assert!(array_get(&heap, a, 1500).unwrap() == Some(Value::Int(-1)));
    let _ = array_len(&heap, a).unwrap();
    assert!(heap.take_dirty().is_empty(), "reads do not dirty pages");
}

#[test]
fn the_write_rate_sample_counts_pages_written_and_keeps_them_dirty_for_precopy() {
    let mut heap = Heap::new(small_config());
    let a = new_array(&mut heap, 0).unwrap();
    for i in 0..2000 {
        array_push(&mut heap, a, Value::Int(i)).unwrap();
    }
    let all = heap.take_dirty();
    assert!(all.len() > 4);
    assert_eq!(heap.sample_dirty(), 0, "nothing written since");
    array_set(&mut heap, a, 10, Value::Int(-1)).unwrap();
    array_set(&mut heap, a, 1500, Value::Int(-1)).unwrap();
    assert_eq!(heap.sample_dirty(), 2);
    assert_eq!(heap.sample_dirty(), 0, "a sample counts only what was written since the last");
    array_set(&mut heap, a, 1500, Value::Int(-2)).unwrap();
    assert_eq!(heap.sample_dirty(), 1);
    // Pre-copy's dirty set is what it would be without the samples.
    let dirty = heap.take_dirty();
    assert_eq!(dirty.len(), 2, "{dirty:?}");
    assert!(heap.take_dirty().is_empty());
    assert_eq!(heap.sample_dirty(), 0);
}

#[test]
fn absent_page_faults_and_resumes_when_supplied() {
    let mut heap = Heap::new(small_config());
    let s = alloc_str(&mut heap, &"y".repeat(10_000)).unwrap();
    let page = (s as usize + 600) >> heap.page_shift();
    let saved = heap.page(page as u32).to_vec();
    heap.mark_absent(page as u32);
    assert!(!heap.all_present());
    assert_eq!(str_ref(&heap, s).err(), Some(HeapError::Fault(page as u32)));
    heap.supply_page(page as u32, &saved).unwrap();
    assert_eq!(str_ref(&heap, s).unwrap(), "y".repeat(10_000));
    assert!(heap.supply_page(10_000, &saved).is_err(), "a page outside the heap is refused");
}

#[test]
fn collection_dirties_only_pages_where_garbage_died() {
    let (_vm, mut p) = vm_and_process(small_config());
    // 4 MiB of live data, then a little garbage.
    let keep = new_array(&mut p.heap, 2000).unwrap();
    for i in 0..2000 {
        let s = alloc_str(&mut p.heap, &format!("{i:0>200}")).unwrap();
        array_push(&mut p.heap, keep, Value::Str(s)).unwrap();
    }
    p.globals[0] = Value::Array(keep);
    for _ in 0..10 {
        alloc_str(&mut p.heap, "garbage").unwrap();
    }
    p.heap.take_dirty();
    p.collect_garbage().unwrap();
    let pages = p.heap.page_count() as u64;
    let dirtied = p.heap.stats().last_pages_dirtied;
    assert!(dirtied <= 2, "a collection freeing a few small objects dirtied {dirtied} of {pages} pages");
    assert_eq!(p.heap.take_dirty().len() as u64, dirtied);
}

#[test]
fn heap_limit_is_an_error_not_a_crash() {
    let mut heap = Heap::new(HeapConfig { page_size_bytes: 4096, limit_bytes: 1 << 20, gc_min_bytes: 1 << 20 });
    let mut result = Ok(0);
    for _ in 0..1000 {
        result = alloc_str(&mut heap, &"z".repeat(4000));
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(HeapError::Limit));
}

#[test]
fn damaged_images_are_refused() {
    let (vm, mut p) = vm_and_process(small_config());
    let root = build(&mut p.heap, &[Node::Array, Node::Map, Node::Str(10)], &[(0, 1), (1, 2), (1, 0)], &[0]);
    p.globals[0] = root;
    let bytes = snapshot(&p);
    assert!(restore(&bytes, &vm).is_ok());
    // Every truncation and many single-byte corruptions are errors, never panics.
    for cut in 0..bytes.len() {
        assert!(restore(&bytes[..cut], &vm).is_err());
    }
    let mut refused = 0;
    for i in 0..bytes.len() {
        for flip in [1u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= flip;
            if restore(&b, &vm).is_err() {
                refused += 1;
            }
        }
    }
    assert!(refused > 0);
}

#[test]
fn a_range_of_pages_is_marked_absent_in_one_go() {
    let cfg = HeapConfig { page_size_bytes: 64, limit_bytes: 1 << 20, gc_min_bytes: 1 << 20 };
    let mut h = Heap::with_layout(cfg, 8, 1).expect("a heap");
    h.mark_absent(1);
    h.mark_absent_range(0, 3);
    h.mark_absent_range(6, 100);
    h.mark_absent_range(5, 5);
    assert_eq!(h.first_absent(), Some(0));
    let absent: Vec<u32> = (0..8).filter(|&p| !h.is_present(p)).collect();
    assert_eq!(absent, vec![0, 1, 2, 6, 7]);
    for p in absent {
        h.supply_page(p, &[0; 8]).expect("supplied");
    }
    assert!(h.all_present());
}
