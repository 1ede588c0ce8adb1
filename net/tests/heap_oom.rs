//! A heap the machine will not give more memory: the process that wanted it ends with a
//! Tern error (catchable, like the heap limit), everything else goes on. The machine's
//! refusal is injected with the heap's growth ceiling (`set_growth_ceiling_for_tests`),
//! which acts on every heap of this OS process: the tests here take turns
//! ([`Ceiling`]), and no other test file sets it. (`real_nodes_memory.rs` runs out of
//! real memory, under an address-space limit.)

mod common;

use common::{wait_until, TestMesh};
use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;
use tern_net::proto::mechanism::Mechanism;
use tern_net::runner::{compile_text, run_program, BufferHost, RunOptions};
use tern_vm::heap::{kind, set_growth_ceiling_for_tests, Heap, HeapConfig, HeapError};

/// While held, no heap of this OS process grows past the given size; lifted when dropped.
struct Ceiling(#[allow(dead_code)] MutexGuard<'static, ()>);

static TURN: Mutex<()> = Mutex::new(());

impl Ceiling {
    fn set(bytes: usize) -> Ceiling {
        let g = TURN.lock();
        set_growth_ceiling_for_tests(bytes);
        Ceiling(g)
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        set_growth_ceiling_for_tests(usize::MAX);
    }
}

#[test]
fn a_heap_that_cannot_grow_says_so_and_stays_as_it_was() {
    let _c = Ceiling::set(1 << 20);
    let config = HeapConfig { limit_bytes: 64 << 20, ..HeapConfig::default() };
    let mut h = Heap::new(config);
    let small = h.alloc(kind::BOX, 3).expect("a small object fits under the ceiling");
    h.store(small as usize + 1, 42).unwrap();
    let (top, size) = (h.top(), h.size_bytes());
    // 2 MiB of array data: within the heap limit, over what the "machine" gives.
    let e = h.alloc(kind::ARRDATA, 1 << 18).unwrap_err();
    assert_eq!(e, HeapError::OutOfMemory((1 << 21) + 4096), "grown to whole pages");
    assert!(e.is_full());
    assert_eq!(h.full_error(e), "out of memory: the heap could not grow to 2101248 bytes (2 MiB)");
    assert_eq!((h.top(), h.size_bytes()), (top, size), "a refused growth changes nothing");
    assert_eq!(h.load(small as usize + 1), Ok(42));
    // Small allocations still work, and so does a collection.
    let again = h.alloc(kind::BOX, 3).expect("the heap is still usable");
    assert_ne!(again, small);
    h.collect([tern_vm::value::Value::Int(0)]).unwrap();
    // Heaps made whole (a restored image, a migration's staged heap) are refused too.
    assert_eq!(Heap::with_layout(config, 1024, 1).unwrap_err(), HeapError::OutOfMemory(4 << 20));
    let mut staged = Heap::new(config);
    assert_eq!(staged.ensure_pages(1024), Err(HeapError::OutOfMemory(4 << 20)));
    assert_eq!(staged.page_count(), 0);
    // The heap limit is still the heap limit.
    assert_eq!(h.alloc(kind::ARRDATA, 65 << 17), Err(HeapError::Limit));
    drop(_c);
    h.alloc(kind::ARRDATA, 1 << 18).expect("with memory back, the same growth works");
}

/// A server answering pings, a hog whose heap cannot grow, and the main process
/// watching both.
const HOG: &str = r#"
fn server() {
    while true {
        let m = recv();
        send(m.from, {echo: m.n});
    }
}
fn hog() {
    recv();
    let big = array(1000000, 7);
    println("the hog got its array of ${len(big)}");
}
let s = spawn(server);
let h = spawn(hog);
monitor(h);
send(h, "go");
let down = recv();
println("hog ${down.event}: ${down.reason}");
for n in 1..4 {
    send(s, {from: self(), n: n});
    println("server answered ${recv().echo}");
}
let r = try { array(1000000, 0); "no error" } catch e { "caught: ${e}" };
println(r);
let small = array(1000, 3);
println("main goes on: ${len(small)}");
kill(s);
"#;

#[test]
fn a_process_whose_heap_cannot_grow_ends_alone_and_the_node_goes_on() {
    let program = compile_text("hog.tern", HOG).unwrap_or_else(|e| panic!("{}", e.rendered));
    let _c = Ceiling::set(4 << 20);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut host = BufferHost::new();
        let r = run_program(&program, &RunOptions { workers: 2, ..RunOptions::default() }, &mut host);
        let _ = tx.send((host.out, r.map(|rep| rep.result.map_err(|e| e.message)).map_err(|e| e.to_string())));
    });
    let (out, r) = rx.recv_timeout(Duration::from_secs(60)).expect("the program ends");
    assert_eq!(r, Ok(Ok(())), "output:\n{out}");
    let oom = "out of memory: the heap could not grow to 16003072 bytes (15 MiB)";
    assert_eq!(
        out,
        format!("hog down: {oom}\nserver answered 1\nserver answered 2\nserver answered 3\ncaught: {oom}\nmain goes on: 1000\n")
    );
}

/// A process with a 4 MiB heap keeps counting on node a.
const COUNTER: &str = r#"
let data = array(250000, 1);
let n = 0;
println("counting on ${node()}");
while true {
    let m = recv(5);
    if not is_timeout(m) {
        println("${m} at ${n} on ${node()}");
        if m == "stop" { break; }
    }
    n += 1;
    data[n % 250000] = n;
}
"#;

#[test]
fn a_destination_without_memory_for_the_heap_refuses_the_migration() {
    let m = TestMesh::start(2);
    let mut run = m.run("a", "counter.tern", COUNTER);
    run.wait_line(&m, "counting", |l| l.starts_with("counting on a"));
    let pid = run.pid;
    {
        // The destination cannot make the 4 MiB heap the process needs (nor can the
        // source grow its own, but it does not need to).
        let _c = Ceiling::set(1 << 20);
        for mechanism in Mechanism::ALL {
            let r = m.node("a").migrate(pid, "b", Some(mechanism.into()));
            let r = r.unwrap_or_else(|e| panic!("{mechanism}: {e}\n{}", m.log_text()));
            assert!(!r.ok, "{mechanism}: {r:?}");
            assert!(r.outcome.contains("runs on at a"), "{mechanism}: {}", r.outcome);
        }
        let text = m.log_text();
        assert!(text.contains("b| refused to take") && text.contains("out of memory: the heap could not grow to"), "{text}");
    }
    assert_eq!(m.where_is(pid).as_deref(), Some("a"));
    m.node("a").node().send_to(pid, text_message("still here")).expect("sent");
    run.wait_line(&m, "still here", |l| l.starts_with("still here") && l.ends_with("on a"));
    // With memory back, the same move works.
    let r = m.node("a").migrate(pid, "b", Some(Mechanism::Precopy.into())).unwrap_or_else(|e| panic!("{e}\n{}", m.log_text()));
    assert!(r.ok, "{r:?}\n{}", m.log_text());
    assert!(wait_until(Duration::from_secs(30), || m.where_is(pid).as_deref() == Some("b")));
    m.node("b").node().send_to(pid, text_message("stop")).expect("sent");
    run.wait_line(&m, "stop", |l| l.starts_with("stop") && l.ends_with("on b"));
}

fn text_message(s: &str) -> tern_vm::message::Message {
    use tern_vm::message::{Message, Obj, Val};
    Message { root: Val::Obj(0), objs: vec![Obj::Str(s.into())] }
}
