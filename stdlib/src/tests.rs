//! Natives called directly on a heap, to check that they can be restarted: after a page
//! fault (a page still on another machine) a native runs again from the start once the
//! page has arrived, and after a full heap it is abandoned or retried after a collection.
//! Either way its effects must be those of one clean run.

use crate::natives;
use tern_vm::fmt::repr;
use tern_vm::heap::{Heap, HeapConfig, HeapError};
use tern_vm::object;
use tern_vm::runtime::NativeFn;
use tern_vm::{Exn, Host, NativeCtx, Value};

#[derive(Default)]
struct TestHost {
    out: String,
}

impl Host for TestHost {
    fn console_write(&mut self, text: &str) {
        self.out.push_str(text);
    }
    fn mono_us(&self) -> u64 {
        1234
    }
    fn wall_ms(&self) -> u64 {
        5678
    }
}

/// A value to build on a test heap.
#[derive(Clone)]
enum V {
    Nil,
    I(i64),
    F(f64),
    S(String),
    A(Vec<V>),
    /// An array with room to grow (its storage is larger than its length).
    Roomy(Vec<V>),
    M(Vec<(V, V)>),
}

fn s(x: &str) -> V {
    V::S(x.to_string())
}

fn ints(n: i64, f: impl Fn(i64) -> i64) -> V {
    V::A((0..n).map(|i| V::I(f(i))).collect())
}

fn build(heap: &mut Heap, v: &V) -> Value {
    match v {
        V::Nil => Value::Nil,
        V::I(i) => Value::Int(*i),
        V::F(f) => Value::Float(*f),
        V::S(x) => Value::Str(object::alloc_str(heap, x).unwrap()),
        V::A(xs) => {
            let vals: Vec<Value> = xs.iter().map(|x| build(heap, x)).collect();
            Value::Array(object::array_from(heap, &vals).unwrap())
        }
        V::Roomy(xs) => {
            let a = build(heap, &V::A(xs.clone()));
            if let Value::Array(a) = a {
                object::array_push(heap, a, Value::Nil).unwrap();
                object::array_pop(heap, a).unwrap();
            }
            a
        }
        V::M(kvs) => {
            let m = object::new_map(heap, 0).unwrap();
            for (k, x) in kvs {
                let (k, x) = (build(heap, k), build(heap, x));
                object::map_set(heap, m, k, x).unwrap();
            }
            Value::Map(m)
        }
    }
}

/// Every case: a native and its arguments. Many touch arrays, maps and strings spread
/// over several pages of a small-paged heap.
fn cases() -> Vec<(&'static str, Vec<V>)> {
    let arr = ints(40, |i| (i * 37) % 40);
    let roomy = V::Roomy((0..40).map(V::I).collect());
    let strs = V::A((0..30).map(|i| s(&format!("w{}", (i * 7) % 30))).collect());
    let map = V::M((0..30).map(|i| (V::I(i), s(&format!("v{i}")))).collect());
    let smap = V::M((0..12).map(|i| (s(&format!("k{i}")), V::I(i))).collect());
    let text = s(&"alpha,beta,gamma,é,".repeat(10));
    vec![
        ("push", vec![arr.clone(), V::I(99)]),
        ("push", vec![V::A(vec![]), s("x")]),
        ("pop", vec![arr.clone()]),
        ("insert", vec![arr.clone(), V::I(5), V::I(99)]),
        ("insert", vec![arr.clone(), V::I(0), s("x")]),
        ("insert", vec![arr.clone(), V::I(40), V::Nil]),
        ("insert", vec![ints(3, |i| i), V::I(1), V::I(7)]),
        ("insert", vec![roomy.clone(), V::I(1), V::I(-1)]),
        ("insert", vec![roomy.clone(), V::I(40), V::I(-1)]),
        ("push", vec![roomy.clone(), V::I(-1)]),
        ("remove", vec![roomy.clone(), V::I(0)]),
        ("sort", vec![roomy.clone()]),
        ("reverse", vec![roomy.clone()]),
        ("pop", vec![roomy.clone()]),
        ("remove", vec![arr.clone(), V::I(3)]),
        ("remove", vec![arr.clone(), V::I(39)]),
        ("remove", vec![map.clone(), V::I(7)]),
        ("remove", vec![smap.clone(), s("k3")]),
        ("remove", vec![smap.clone(), s("nope")]),
        ("sort", vec![arr.clone()]),
        ("sort", vec![strs.clone()]),
        ("sort", vec![V::A(vec![V::I(3), V::F(1.5), V::I(-2), V::F(f64::NAN), V::I(0)])]),
        ("sort", vec![V::A(vec![V::I(3), s("x")])]),
        ("reverse", vec![arr.clone()]),
        ("slice", vec![arr.clone(), V::I(3), V::I(30)]),
        ("slice", vec![text.clone(), V::I(2), V::I(17)]),
        ("len", vec![text.clone()]),
        ("len", vec![map.clone()]),
        ("keys", vec![map.clone()]),
        ("values", vec![smap.clone()]),
        ("has", vec![smap.clone(), s("k11")]),
        ("get", vec![map.clone(), V::I(29), V::I(0)]),
        ("get", vec![map.clone(), V::I(31), V::I(0)]),
        ("index_of", vec![strs.clone(), s("w9")]),
        ("contains", vec![arr.clone(), V::F(12.0)]),
        ("array", vec![V::I(30), s("fill")]),
        ("join", vec![strs.clone(), s(", ")]),
        ("split", vec![text.clone(), s(",")]),
        ("split", vec![text.clone(), s("")]),
        ("replace", vec![text.clone(), s("a"), s("AA")]),
        ("find", vec![text.clone(), s("é")]),
        ("trim", vec![s("  padded  ")]),
        ("upper", vec![text.clone()]),
        ("chars", vec![text.clone()]),
        ("repeat", vec![s("ab"), V::I(50)]),
        ("format", vec![s("{} and {} {{}}"), arr.clone(), map.clone()]),
        ("to_fixed", vec![V::F(2.0 / 3.0), V::I(10)]),
        ("to_string", vec![map.clone()]),
        ("type_of", vec![map.clone()]),
        ("int", vec![s(" 42 ")]),
        ("float", vec![s("2.5")]),
        ("parse_int", vec![s("0x1f")]),
        ("parse_float", vec![s("nope")]),
        ("starts_with", vec![text.clone(), s("alpha")]),
        ("ends_with", vec![text.clone(), s("é,")]),
        ("ord", vec![s("é")]),
        ("chr", vec![V::I(0x1F600)]),
        ("min", vec![arr.clone()]),
        ("max", vec![V::I(3), V::F(4.5)]),
        ("print", vec![arr.clone(), text.clone()]),
        ("println", vec![smap.clone()]),
        ("rand_int", vec![V::I(1), V::I(100)]),
        ("rand_float", vec![]),
        ("rand_seed", vec![V::I(9)]),
        ("mono_ms", vec![]),
        ("error", vec![s("raised")]),
        ("assert", vec![V::Nil, s("failed")]),
        ("sqrt", vec![V::I(2)]),
    ]
}

/// What a call did: its result or error, every argument afterwards, the random state
/// and the console output. Reads with every page present.
fn observe(heap: &Heap, r: &Result<Value, Exn>, args: &[Value], rng: u64, out: &str) -> String {
    let mut o = match r {
        Ok(v) => format!("ok {}", repr(heap, &[], *v).unwrap()),
        Err(Exn::Raise(v)) => format!("raise {}", repr(heap, &[], *v).unwrap()),
        Err(e) => format!("err {e:?}"),
    };
    for a in args {
        o.push_str(" | ");
        o.push_str(&repr(heap, &[], *a).unwrap());
    }
    o.push_str(&format!(" | rng {rng} | out {out:?}"));
    o
}

fn config() -> HeapConfig {
    HeapConfig { page_size_bytes: 64, limit_bytes: 1 << 24, gc_min_bytes: 1 << 24 }
}

fn setup(args: &[V], limit_bytes: usize) -> (Heap, Vec<Value>) {
    let mut heap = Heap::new(HeapConfig { limit_bytes, ..config() });
    let vals: Vec<Value> = args.iter().map(|a| build(&mut heap, a)).collect();
    (heap, vals)
}

fn call(heap: &mut Heap, rng: &mut u64, host: &mut TestHost, f: NativeFn, args: &[Value]) -> Result<Value, Exn> {
    let mut ctx = NativeCtx { heap, host, rng, linked: &[] };
    f(&mut ctx, args)
}

fn native(name: &str) -> NativeFn {
    let n = natives();
    n.get(n.lookup(name).unwrap_or_else(|| panic!("no native {name}"))).unwrap().f
}

/// Runs the call on `heap` (some pages absent), supplying each page from `clean` as it
/// faults and starting the call again, as the node does during a lazy migration.
fn run_faulting(mut heap: Heap, clean: &Heap, f: NativeFn, args: &[Value]) -> String {
    let mut rng = 77;
    let mut host = TestHost::default();
    let mut faults = 0;
    let r = loop {
        match call(&mut heap, &mut rng, &mut host, f, args) {
            Err(Exn::Heap(HeapError::Fault(p))) => {
                heap.supply_page(p, clean.page(p)).unwrap();
                faults += 1;
                assert!(faults <= clean.page_count(), "faults on page {p} again");
            }
            r => break r,
        }
    };
    for p in 0..clean.page_count() as u32 {
        if !heap.is_present(p) {
            heap.supply_page(p, clean.page(p)).unwrap();
        }
    }
    observe(&heap, &r, args, rng, &host.out)
}

#[test]
fn natives_restart_after_page_faults() {
    for (name, spec) in cases() {
        let f = native(name);
        let (clean, args) = setup(&spec, config().limit_bytes);
        let expected = {
            let mut heap = clean.clone();
            let (mut rng, mut host) = (77, TestHost::default());
            let r = call(&mut heap, &mut rng, &mut host, f, &args);
            observe(&heap, &r, &args, rng, &host.out)
        };
        // Every page absent: the call faults them in one at a time.
        let mut heap = clean.clone();
        for p in 0..heap.page_count() as u32 {
            heap.mark_absent(p);
        }
        assert_eq!(run_faulting(heap, &clean, f, &args), expected, "{name}, all pages absent");
        // One page absent at a time.
        for p in 0..clean.page_count() as u32 {
            let mut heap = clean.clone();
            heap.mark_absent(p);
            assert_eq!(run_faulting(heap, &clean, f, &args), expected, "{name}, page {p} absent");
        }
    }
}

#[test]
fn natives_change_nothing_when_the_heap_is_full() {
    for (name, spec) in cases() {
        let f = native(name);
        let (probe, _) = setup(&spec, config().limit_bytes);
        let used = probe.top() * 8;
        // Limits from "nothing left" up to "enough", in steps of a few words.
        for extra in (0..2048).step_by(24) {
            let (mut heap, args) = setup(&spec, used + extra);
            let before = observe(&heap, &Ok(Value::Nil), &args, 77, "");
            let (mut rng, mut host) = (77, TestHost::default());
            match call(&mut heap, &mut rng, &mut host, f, &args) {
                Err(Exn::Heap(HeapError::Limit)) => {
                    let after = observe(&heap, &Ok(Value::Nil), &args, rng, &host.out);
                    assert_eq!(after, before, "{name} changed its arguments before running out of heap (limit {})", used + extra);
                }
                Err(Exn::Heap(e)) => panic!("{name}: unexpected {e:?}"),
                _ => break,
            }
        }
    }
}
