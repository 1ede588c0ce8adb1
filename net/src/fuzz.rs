//! Fuzz targets: every decoder of outside input, fed arbitrary bytes.
//!
//! Each target must return for any input without panicking. Where a second
//! implementation or a round trip exists, it also checks that they agree, and panics
//! when they do not (that is a finding too):
//! - a program the compiler accepts gives modules the verifier accepts, that load, and
//!   that disassemble;
//! - a module that decodes encodes to the same module;
//! - an image that restores snapshots to bytes that restore again to the same snapshot;
//! - a frame that decodes encodes to bytes that decode to the same frame;
//! - a message that rebuilds flattens back to a message that rebuilds and flattens to
//!   itself;
//! - the migration machines never change an outcome once they have one.
//!
//! `fuzz/` runs them under libFuzzer (`cargo fuzz`, see `fuzz/README.md`); the test
//! command runs each over its checked-in corpus (`fuzz/corpus/TARGET/`) and a bounded
//! number of mutations of it (`net/tests/fuzz_smoke.rs`).

use crate::config::MeshConfig;
use crate::proto::migrate::{
    Action, Dest, DestOutcome, Forwarding, Mechanism, MigConfig, MigMsg, PageNo, RefuseReason, Source, SourceInit, SourceOutcome,
};
use crate::proto::session::NodeId;
use crate::proto::wire::{self, CtlReply, CtlRequest, Frame, MigWire};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tern_vm::bytecode::{disassemble, Module};
use tern_vm::heap::{Heap, HeapConfig};
use tern_vm::message::Message;
use tern_vm::{Vm, VmConfig};

/// A fuzz target: returns for any input, or panics with a finding.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("source", source),
    ("bytecode", bytecode),
    ("image", image),
    ("restore_into", restore_into),
    ("frame", frame),
    ("ctl", ctl),
    ("config", config),
    ("message", message),
    ("migration", migration),
];

/// The largest input a target looks at (libFuzzer's default is 4 KiB; seeds are larger).
pub const MAX_INPUT: usize = 1 << 20;

/// A frame's size limit here (a node's default is larger; this keeps runs fast).
const FRAME_MAX: usize = 1 << 20;

/// A small heap limit: inputs may ask for any size, and a run must stay fast.
fn heap_config() -> HeapConfig {
    HeapConfig { page_size_bytes: 4096, limit_bytes: 16 << 20, gc_min_bytes: 1 << 20 }
}

/// A VM with the standard natives, no JIT, the small heap.
pub fn vm() -> Vm {
    crate::runner::new_vm(VmConfig { heap: heap_config(), jit: tern_vm::jit::JitMode::Off, ..VmConfig::default() })
}

/// Lexer, parser and compiler, from bytes (as UTF-8, lossily).
pub fn source(data: &[u8]) {
    let text = String::from_utf8_lossy(&data[..data.len().min(MAX_INPUT)]);
    let Ok(compiled) = crate::runner::compile_text("fuzz.tern", &text) else { return };
    let mut vm = vm();
    for m in &compiled.modules {
        if let Err(e) = tern_vm::verify::verify(m) {
            panic!("the compiler made a module the verifier refuses: {e}\n{}", disassemble(m));
        }
        let _ = disassemble(m);
        let bytes = m.encode();
        let again = Module::decode(&bytes).unwrap_or_else(|e| panic!("a compiled module does not decode: {e}"));
        assert!(again.encode() == bytes, "a compiled module is not the same after encoding and decoding");
    }
    if let Err(e) = crate::runner::load(&mut vm, &compiled) {
        panic!("a compiled program does not load: {e}");
    }
}

/// The module decoder, the verifier and the loader, from bytes.
pub fn bytecode(data: &[u8]) {
    let Ok(m) = Module::decode(data) else { return };
    let bytes = m.encode();
    let again = Module::decode(&bytes).unwrap_or_else(|e| panic!("a decoded module does not decode again: {e}"));
    assert!(again.encode() == bytes, "a module is not the same after encoding and decoding");
    if tern_vm::verify::verify(&m).is_err() {
        return;
    }
    let _ = disassemble(&m);
    let vm = vm();
    let _ = vm.load(m);
}

/// The process-image decoder and `restore_full`: a restored image snapshots to bytes
/// that restore to the same snapshot.
pub fn image(data: &[u8]) {
    let vm = vm();
    let Ok((p, slot)) = tern_vm::snapshot::restore_full(data, &vm) else { return };
    let first = tern_vm::snapshot::snapshot_full(&p, &slot);
    let (p2, slot2) =
        tern_vm::snapshot::restore_full(&first, &vm).unwrap_or_else(|e| panic!("a snapshot of a restored image does not restore: {e}"));
    assert!(tern_vm::snapshot::snapshot_full(&p2, &slot2) == first, "snapshot → restore → snapshot changed the bytes");
}

/// `restore_into` (a migration's image, its pages staged apart, some absent): the first
/// eight bytes give two absent ranges, the rest is the image.
pub fn restore_into(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let n = |i: usize| u32::from(u16::from_le_bytes([data[i], data[i + 1]]));
    let mut absent: Vec<(u32, u32)> = vec![(n(0), n(0) + n(2)), (n(4), n(4) + n(6))];
    absent.retain(|&(a, b)| a < b);
    absent.sort_unstable();
    if absent.len() == 2 && absent[0].1 >= absent[1].0 {
        absent.pop();
    }
    let vm = vm();
    let staged = Heap::new(heap_config());
    let _ = tern_vm::snapshot::restore_into(&data[8..], &vm, staged, &absent);
}

/// Every node-to-node frame: a frame that decodes encodes to bytes that decode to it.
pub fn frame(data: &[u8]) {
    round_trip::<Frame>(data);
    round_trip::<MigWire>(data);
    // A compressed frame: what it decompresses to compresses back to a frame that
    // decompresses to the same bytes; and the input itself, compressed, comes back whole.
    let mut out = Vec::new();
    if wire::unlz4(data, FRAME_MAX, &mut out).is_ok() {
        let again = wire::lz4_frame(Vec::new(), &out);
        let mut back = Vec::new();
        wire::unlz4(&again[4..], FRAME_MAX.max(again.len()), &mut back)
            .unwrap_or_else(|e| panic!("a frame compressed again does not decompress: {e}"));
        assert!(back == out, "not the same after compressing and decompressing again");
    }
    if !wire::is_lz4_frame(data) {
        let c = wire::lz4_frame(Vec::new(), data);
        let mut back = Vec::new();
        wire::unlz4(&c[4..], FRAME_MAX.max(c.len()).max(data.len()), &mut back)
            .unwrap_or_else(|e| panic!("a compressed frame does not decompress: {e}"));
        assert!(back == data, "not the same after compressing and decompressing");
    }
}

/// The control connection's requests and replies.
pub fn ctl(data: &[u8]) {
    round_trip::<CtlRequest>(data);
    round_trip::<CtlReply>(data);
}

fn round_trip<T>(data: &[u8])
where
    T: serde::Serialize + for<'de> Deserialize<'de> + std::fmt::Debug,
{
    let Ok(v) = wire::decode::<T>(data, FRAME_MAX) else { return };
    let bytes = wire::encode(&v);
    // Compared as bytes: a float NaN is not equal to itself.
    match wire::decode::<T>(&bytes, FRAME_MAX.max(bytes.len())) {
        Ok(again) => assert!(wire::encode(&again) == bytes, "not the same after encoding and decoding: {v:?} then {again:?}"),
        Err(e) => panic!("a decoded value does not decode again: {e}: {v:?}"),
    }
}

/// The mesh config parser (as UTF-8, lossily).
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(&data[..data.len().min(MAX_INPUT)]);
    let _ = MeshConfig::parse(&text, Path::new("/nonexistent/tern-fuzz"));
}

/// `message::rebuild` from a message as it comes on the wire, into a fresh process;
/// what it rebuilds flattens to a message that rebuilds and flattens to itself.
pub fn message(data: &[u8]) {
    let Ok(msg) = wire::decode::<Message>(data, FRAME_MAX) else { return };
    let vm = vm();
    let Some(mut p) = empty_process(&vm) else { return };
    let Ok(v) = tern_vm::flatten::rebuild(&msg, &mut p, &vm) else { return };
    let limit = FRAME_MAX * 4;
    let Ok(flat) = tern_vm::flatten::flatten(&p, &vm, v, limit) else { return };
    let v2 = tern_vm::flatten::rebuild(&flat, &mut p, &vm).unwrap_or_else(|e| panic!("a flattened message does not rebuild: {e}"));
    let flat2 = tern_vm::flatten::flatten(&p, &vm, v2, limit).unwrap_or_else(|e| panic!("a rebuilt message does not flatten again: {e}"));
    // Compared as bytes: a float NaN is not equal to itself.
    assert!(wire::encode(&flat2) == wire::encode(&flat), "flatten → rebuild → flatten changed the message:\n{flat:?}\n{flat2:?}");
}

/// A process of an empty program, to rebuild messages into.
fn empty_process(vm: &Vm) -> Option<tern_vm::process::Process> {
    use std::sync::OnceLock;
    static PROGRAM: OnceLock<Option<tern_compiler::Compiled>> = OnceLock::new();
    let program = PROGRAM.get_or_init(|| crate::runner::compile_text("empty.tern", "").ok()).as_ref()?;
    for m in &program.modules {
        vm.load(m.clone()).ok()?;
    }
    tern_vm::process::Process::new(1, program.main, vm).ok()
}

/// What drives a migration machine, one step at a time.
#[derive(Debug, Serialize, Deserialize)]
enum Step {
    /// A message from node `from`.
    Msg(NodeId, MigMsg),
    /// Time passes (µs), and the machine's timer fires if due.
    Wait(u32),
    PeerDown(NodeId),
    PeerUp(NodeId),
    PeerRestarted(NodeId),
    /// Source: the process froze with these pages dirty; dest: it faulted on a page.
    Frozen(Vec<PageNo>),
    Fault(PageNo),
    /// Source: the pages dirtied since the last round.
    Dirtied(Vec<PageNo>),
    PushRoom(u32),
    Reinstated,
    ReinstateFailed,
    LateArrived,
    Resync,
    ProcessEnded,
}

/// The pages a fuzzed migration may offer (the node refuses more: its heap limit).
const MAX_PAGES: u32 = 1 << 16;

/// The migration protocol's machines (`Source`, `Dest`) fed an arbitrary sequence of
/// messages, timers and host events: the first byte picks the machine and its
/// mechanism, the rest is a postcard list of steps. Checked: no panic, an outcome once
/// reached never changes (but a destination's `Committed` for a process lost after it),
/// and a source that sent `Commit` resumes the process only if
/// its destination answered `Aborted`.
pub fn migration(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else { return };
    let Ok(steps) = postcard::from_bytes::<Vec<Step>>(rest) else { return };
    let mechanism = [Mechanism::Freeze, Mechanism::Precopy, Mechanism::Lazy, Mechanism::Hybrid][usize::from(pick >> 1) % 4];
    let cfg = MigConfig { readahead: u32::from(pick >> 3) % 64, fetch_quiet_us: 2_000, ..MigConfig::default() };
    let mut now = 0u64;
    if pick & 1 == 0 {
        let init = SourceInit {
            mid: 7,
            pid: 42,
            me: 0,
            dest: 1,
            size_pages: u32::from(pick >> 5) * 3 + 1,
            mechanism,
            fallback: pick & 2 != 0,
            forwarding: Forwarding::LinkUpdate,
            partners: vec![0, 1, 2],
            members: Vec::new(),
            admit: None,
        };
        let mut s = Source::new(now, cfg, init);
        let mut outcome: Option<SourceOutcome> = None;
        let mut commit_sent = false;
        let mut dest_aborted = false;
        for step in steps {
            match step {
                Step::Msg(from, m) => {
                    // The one answer to `Commit` that gives the process back.
                    dest_aborted |= from == 1 && m == MigMsg::Aborted { mid: 7 };
                    s.handle(now, from, m)
                }
                Step::Wait(us) => {
                    now += u64::from(us);
                    if s.poll_timeout().is_some_and(|t| t <= now) {
                        s.handle_timeout(now);
                    }
                }
                Step::PeerDown(n) => s.peer_down(now, n),
                Step::PeerRestarted(n) => s.peer_restarted(now, n),
                Step::Frozen(d) => s.frozen(now, &d, 100),
                Step::Dirtied(d) => s.pages_dirtied(now, &d),
                Step::PushRoom(r) => s.set_push_room(r),
                _ => {}
            }
            while s.poll_transmit().is_some() {}
            while let Some(a) = s.poll_action() {
                assert!(
                    !(commit_sent && !dest_aborted && a == Action::Unfreeze),
                    "the source resumed the process after it sent Commit, and the destination did not say Aborted"
                );
            }
            commit_sent |= s.commit_sent();
            if let Some(o) = &outcome {
                assert!(s.outcome() == Some(o), "the source's outcome changed from {o:?} to {:?}", s.outcome());
            }
            outcome = s.outcome().cloned();
        }
    } else {
        let Some((first, steps)) = steps.split_first() else { return };
        let Step::Msg(from, offer) = first else { return };
        let refuse = match offer {
            MigMsg::Offer { size_pages, .. } if *size_pages > MAX_PAGES => Some(RefuseReason::OverLimits),
            _ => None,
        };
        let Some(mut d) = Dest::new(now, cfg, 1, *from, offer, refuse) else { return };
        let mut outcome = d.outcome().cloned();
        for step in steps {
            match step {
                Step::Msg(from, m) => d.handle(now, *from, m.clone()),
                Step::Wait(us) => {
                    now += u64::from(*us);
                    if d.poll_timeout().is_some_and(|t| t <= now) {
                        d.handle_timeout(now);
                    }
                }
                Step::PeerDown(n) => d.peer_down(now, *n),
                Step::PeerUp(n) => d.peer_up(now, *n),
                Step::PeerRestarted(n) => d.peer_restarted(now, *n),
                Step::Fault(p) => {
                    let _ = d.page_fault(now, *p);
                }
                Step::Reinstated => d.reinstated(now),
                Step::ReinstateFailed => d.reinstate_failed(now),
                Step::LateArrived => d.late_arrived(now),
                Step::Resync => d.resync(now),
                Step::ProcessEnded => d.process_ended(now),
                _ => {}
            }
            while d.poll_transmit().is_some() {}
            while d.poll_action().is_some() {}
            if let Some(o) = &outcome {
                // A committed process may still be lost afterwards (its late messages
                // never came); nothing else changes once decided.
                let lost_after = *o == DestOutcome::Committed && matches!(d.outcome(), Some(DestOutcome::ProcessLost(_)));
                assert!(d.outcome() == Some(o) || lost_after, "the destination's outcome changed from {o:?} to {:?}", d.outcome());
            }
            outcome = d.outcome().cloned();
        }
    }
}

/// Seed inputs for `target`: the examples (`examples`: the directory of `.tern` files),
/// what the compiler makes of them, images of their processes part of the way through,
/// and frames, messages and migration runs as the nodes make them.
pub fn seeds(target: &str, examples: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(examples)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "tern")).collect())
        .unwrap_or_default();
    files.sort();
    let sources: Vec<(String, String)> =
        files.iter().filter_map(|p| Some((p.file_name()?.to_string_lossy().into_owned(), std::fs::read_to_string(p).ok()?))).collect();
    let compiled = || sources.iter().filter_map(|(name, text)| crate::runner::compile_text(name, text).ok());
    match target {
        "source" => sources.iter().map(|(_, t)| t.as_bytes().to_vec()).collect(),
        "bytecode" => {
            let mut out: Vec<Vec<u8>> = compiled().flat_map(|c| c.modules.into_iter().map(|m| m.encode())).collect();
            out.sort();
            out.dedup();
            out
        }
        "image" => images(compiled()),
        "restore_into" => images(compiled()).into_iter().map(|i| [vec![1, 0, 2, 0, 0, 0, 0, 0], i].concat()).collect(),
        "frame" => sample_frames().iter().map(wire::encode).chain(sample_mig().iter().map(wire::encode)).collect(),
        "ctl" => sample_ctl(),
        "config" => vec![
            SAMPLE_CONFIG.as_bytes().to_vec(),
            format!("{SAMPLE_CONFIG}\n[policy]\nmode = \"balance\"\nbandwidth_mib_s = 100\n").into_bytes(),
        ],
        "message" => sample_messages().iter().map(wire::encode).collect(),
        "migration" => sample_migrations(),
        _ => Vec::new(),
    }
}

/// Images of each program's main process after a few slices.
fn images(programs: impl Iterator<Item = tern_compiler::Compiled>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for program in programs {
        let mut vm = vm();
        if crate::runner::load(&mut vm, &program).is_err() {
            continue;
        }
        let Ok(mut p) = tern_vm::process::Process::new(1, program.main, &vm) else { continue };
        let mut host = crate::runner::BufferHost::new();
        for _ in 0..3 {
            if tern_vm::run(&mut p, &vm, &mut host, 2_000) != tern_vm::Outcome::Yielded {
                break;
            }
        }
        let image = tern_vm::snapshot::snapshot(&p);
        // Small ones only: the corpus is checked in, and a fuzzer mutates small inputs best.
        if image.len() <= MAX_SEED_IMAGE {
            out.push(image);
        }
    }
    out
}

/// The largest image seed.
const MAX_SEED_IMAGE: usize = 48 << 10;

const SAMPLE_CONFIG: &str = "[mesh]\ncert_dir = \"certs\"\nreadahead = 64\n\n[limits]\nheartbeat_ms = 100\nnode_down_ms = 1000\n\n\
     [[node]]\nname = \"a\"\naddr = \"127.0.0.1:47101\"\nworkers = 2\n\n[[node]]\nname = \"b\"\naddr = \"[::1]:47102\"\n";

fn sample_messages() -> Vec<Message> {
    use tern_vm::message::{Obj, Val};
    vec![
        Message { root: Val::Int(7), objs: Vec::new() },
        Message { root: Val::Obj(0), objs: vec![Obj::Str("hello".into())] },
        Message { root: Val::Obj(0), objs: vec![Obj::Array(vec![Val::Int(1), Val::Obj(1), Val::Float(2.5)]), Obj::Str("x".into())] },
    ]
}

fn sample_frames() -> Vec<Frame> {
    vec![
        Frame::WantModules(Vec::new()),
        Frame::Console { console: 3, pid: 1 << 40, text: "hello\n".into(), failed: false },
        Frame::ConsoleRead { console: 3, pid: 1 << 40, k: 2 },
        Frame::ConsoleLine { pid: 1 << 40, k: 2, line: Some("input".into()) },
        Frame::Suspect(2),
        Frame::Mig(MigWire::Msg(MigMsg::Fetch { mid: 9, pages: vec![3, 4], ahead: false })),
    ]
}

fn sample_mig() -> Vec<MigWire> {
    vec![
        MigWire::Msg(MigMsg::Commit { mid: 9 }),
        MigWire::Msg(MigMsg::Fetch { mid: 9, pages: (10..40).collect(), ahead: true }),
        MigWire::Pages {
            mid: 9,
            member: 0,
            pages: vec![wire::PageRec { index: 3, data: None }, wire::PageRec { index: 4, data: Some(vec![1; 4096]) }],
        },
    ]
}

fn sample_ctl() -> Vec<Vec<u8>> {
    vec![wire::encode(&CtlRequest::Nodes), wire::encode(&CtlRequest::Console), wire::encode(&CtlReply::Done)]
}

fn sample_migrations() -> Vec<Vec<u8>> {
    let offer = |mechanism| MigMsg::Offer {
        mid: 7,
        pid: 42,
        size_pages: 16,
        mechanism,
        fallback: false,
        forwarding: Forwarding::LinkUpdate,
        members: Vec::new(),
        admit: None,
    };
    let runs: Vec<(u8, Vec<Step>)> = vec![
        // A source: lazy (pick 4), accepted, frozen, ready, committed, then fetches.
        (
            4,
            vec![
                Step::Msg(1, MigMsg::Accept { mid: 7 }),
                Step::Frozen(vec![]),
                Step::Msg(1, MigMsg::Ready { mid: 7 }),
                Step::Msg(1, MigMsg::Committed { mid: 7 }),
                Step::Msg(1, MigMsg::Fetch { mid: 7, pages: vec![0, 1], ahead: false }),
                Step::Wait(5_000),
                Step::PushRoom(4),
                Step::Wait(5_000),
            ],
        ),
        // A destination of the same.
        (
            5,
            vec![
                Step::Msg(0, offer(Mechanism::Lazy)),
                Step::Msg(0, MigMsg::Final { mid: 7, image_len: 100, pages: Vec::new(), absent: vec![(0, 16)], partners: vec![0, 1] }),
                Step::Reinstated,
                Step::Msg(0, MigMsg::Commit { mid: 7 }),
                Step::Fault(3),
                Step::Fault(5),
                Step::Msg(0, MigMsg::PageData { mid: 7, pages: vec![3, 4, 5], sent: crate::proto::migrate::SentFor::Fault }),
                Step::PeerDown(0),
                Step::Wait(100_000),
                Step::PeerUp(0),
                Step::Resync,
                Step::ProcessEnded,
            ],
        ),
        // A pre-copy source through two rounds.
        (
            2,
            vec![
                Step::Msg(1, MigMsg::Accept { mid: 7 }),
                Step::Msg(1, MigMsg::RoundAck { mid: 7, round: 0 }),
                Step::Dirtied(vec![1, 2, 3]),
                Step::Msg(1, MigMsg::RoundAck { mid: 7, round: 1 }),
                Step::Dirtied(vec![2]),
                Step::Frozen(vec![2]),
                Step::Msg(1, MigMsg::Ready { mid: 7 }),
                Step::PeerDown(1),
                Step::Wait(1_000_000),
            ],
        ),
    ];
    runs.into_iter().map(|(pick, steps)| [vec![pick], postcard::to_allocvec(&steps).expect("steps encode")].concat()).collect()
}
