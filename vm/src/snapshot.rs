//! Process images: a process at a safepoint, serialised to bytes and restored into a
//! fresh VM instance.
//!
//! An image is `magic, version, postcard(body)`. Heap pages whose words are all zero are
//! not stored. Restoring treats the bytes as hostile: sizes are capped before anything
//! is allocated, and every reference in the image (registers, globals, frames, heap
//! objects) is checked to point at an object of the right kind, so that a damaged image
//! is refused with an error instead of misbehaving later.

use crate::heap::{header_kind, header_size, kind, GcStats, Heap, HeapConfig, HeapError};
use crate::message::{Message, Origin};
use crate::process::{Frame, Handler, ModuleInstance, ModuleState, ProcSys, Process, NOT_INIT};
use crate::runtime::Vm;
use crate::value::{tag, Addr, FnRef, Value};
use serde::{Deserialize, Serialize};

pub const IMAGE_MAGIC: [u8; 4] = *b"TRNP";
pub const IMAGE_VERSION: u16 = 10;

#[derive(Serialize, Deserialize)]
struct PageImage {
    index: u32,
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct HeapImage {
    config: HeapConfig,
    page_count: u32,
    top: u64,
    stats: GcStats,
    pages: Vec<PageImage>,
}

/// What a node keeps about a process outside the process itself, carried in its image:
/// its mailbox (the inbox and the queue of every channel whose receive end it holds),
/// its links and monitors, and the signals and timers pending for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlotImage {
    pub inbox: Vec<Message>,
    /// Held receive ends, each with its queued messages.
    pub chans: Vec<(u64, Vec<Message>)>,
    pub links: Vec<u64>,
    /// Processes monitoring this one.
    pub watchers: Vec<u64>,
    pub trap_exits: bool,
    /// A kill that arrived while the process was frozen.
    pub kill: Option<String>,
    /// Time left on the blocking call's timeout, in µs (the deadline itself is a
    /// node-local clock reading).
    pub timeout_left_us: Option<u64>,
    /// The process's clock (`mono_us`) when the image was made: it goes on from there.
    pub clock_us: Option<u64>,
    /// Times the process has moved between nodes (the version of its pid's routes).
    pub moves: u32,
    /// Numbered inbox messages (see `node/remote.rs`, "Order"): per origin, the
    /// number of the next one expected from it ...
    pub inbox_expect: Vec<(Origin, u64)>,
    /// ... and those that arrived ahead of their turn: (origin, number, message; `None`:
    /// a skip notice, that number was lost on its way).
    pub inbox_held: Vec<(Origin, u64, Option<Message>)>,
}

#[derive(Serialize, Deserialize)]
struct Image {
    pid: u64,
    frames: Vec<Frame>,
    regs: Vec<Value>,
    globals: Vec<Value>,
    modules: Vec<ModuleInstance>,
    handlers: Vec<Handler>,
    reductions: u64,
    rng: u64,
    max_frames: u32,
    sys: ProcSys,
    slot: SlotImage,
    heap: HeapImage,
}

/// Why an image could not be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    TooLarge(usize),
    BadMagic,
    WrongVersion(u16),
    Malformed(String),
    /// The image refers to a module this VM does not have.
    MissingModule(String),
    /// The image decodes but its contents are inconsistent.
    Invalid(String),
}

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageError::TooLarge(n) => write!(f, "process image of {n} bytes exceeds the limit"),
            ImageError::BadMagic => write!(f, "not a Tern process image"),
            ImageError::WrongVersion(v) => write!(f, "process image version {v}, this VM reads version {IMAGE_VERSION}"),
            ImageError::Malformed(e) => write!(f, "malformed process image: {e}"),
            ImageError::MissingModule(m) => write!(f, "process image needs {m}"),
            ImageError::Invalid(e) => write!(f, "inconsistent process image: {e}"),
        }
    }
}

impl std::error::Error for ImageError {}

/// The largest image accepted for a heap limit: the heap plus generous room for the
/// rest of the state.
pub fn max_image_bytes(config: &HeapConfig) -> usize {
    config.limit_bytes + (64 << 20)
}

/// Serialises a process (which must be at a safepoint: between two [`crate::run`] calls).
pub fn snapshot(p: &Process) -> Vec<u8> {
    snapshot_full(p, &SlotImage::default())
}

/// Restores a process image made by [`snapshot`].
pub fn restore(bytes: &[u8], vm: &Vm) -> Result<Process, ImageError> {
    restore_full(bytes, vm).map(|(p, _)| p)
}

/// Serialises a process with what its node keeps about it.
pub fn snapshot_full(p: &Process, slot: &SlotImage) -> Vec<u8> {
    snapshot_with(p, slot, true)
}

/// Serialises a process's state without its heap pages (their number and layout are in
/// it): the image a live migration sends, the pages going separately
/// ([`restore_state`] puts them back).
pub fn snapshot_state(p: &Process, slot: &SlotImage) -> Vec<u8> {
    snapshot_with(p, slot, false)
}

fn snapshot_with(p: &Process, slot: &SlotImage, with_pages: bool) -> Vec<u8> {
    let h = &p.heap;
    let mut pages = Vec::new();
    for i in 0..h.page_count() as u32 {
        if !with_pages {
            break;
        }
        let words = h.page(i);
        if words.iter().any(|&w| w != 0) {
            let mut bytes = Vec::with_capacity(words.len() * 8);
            for w in words {
                bytes.extend_from_slice(&w.to_le_bytes());
            }
            pages.push(PageImage { index: i, bytes });
        }
    }
    let image = Image {
        pid: p.pid,
        frames: p.frames.clone(),
        regs: p.regs[..p.regs_top()].to_vec(),
        globals: p.globals.clone(),
        modules: p.modules.clone(),
        handlers: p.handlers.clone(),
        reductions: p.reductions,
        rng: p.rng,
        max_frames: p.max_frames,
        sys: ProcSys { deadline_us: None, ..p.sys.clone() },
        slot: slot.clone(),
        heap: HeapImage { config: h.config(), page_count: h.page_count() as u32, top: h.top() as u64, stats: h.stats(), pages },
    };
    let mut out = Vec::new();
    out.extend_from_slice(&IMAGE_MAGIC);
    out.extend_from_slice(&IMAGE_VERSION.to_le_bytes());
    // Serialising plain data into a Vec cannot fail.
    out.extend_from_slice(&postcard::to_allocvec(&image).unwrap_or_default());
    out
}

/// Restores a process and its node-kept state from an image into `vm`, which must hold
/// its modules. The blocking call's deadline is left unset: the node re-arms it from
/// [`SlotImage::timeout_left_us`] on its own clock.
pub fn restore_full(bytes: &[u8], vm: &Vm) -> Result<(Process, SlotImage), ImageError> {
    restore_with(bytes, vm, Vec::new(), &[], &mut None)
}

/// Restores a process from an image made by [`snapshot_state`] and its pages, which came
/// separately: `pages` (index, words) are put in (pages of the image left out are all
/// zero), and the `absent` ones (ranges of pages, the end excluded) are marked absent —
/// touching one is a page fault, which
/// the node serves from where the page still is (transfer on reference).
///
/// With every page present the image is checked as [`restore_full`] checks it. With
/// pages absent the heap cannot be walked yet: registers, globals and frames are checked
/// to point inside the heap, functions and modules to exist; every heap access stays
/// bounds- and presence-checked, so a damaged page later ends the process with an error.
pub fn restore_state(
    bytes: &[u8],
    vm: &Vm,
    pages: Vec<(u32, Vec<u64>)>,
    absent: &[(u32, u32)],
) -> Result<(Process, SlotImage), ImageError> {
    restore_with(bytes, vm, pages, absent, &mut None)
}

/// Restores a process from an image made by [`snapshot_state`] into `staged`, a heap
/// whose pages arrived before the image (a live migration installs them as they come,
/// so that nothing is copied while the process is frozen); the `absent` pages (ranges,
/// the end excluded: nothing per page while it is frozen) are left to fault in.
///
/// The heap is not walked (that would cost time proportional to its size while the
/// process is stopped): as with absent pages, registers, globals and frames are checked
/// to point inside it and every heap access stays checked, so damaged heap contents end
/// the process with an error rather than misbehaving. The free lists are rebuilt by the
/// next collection. (A migration image comes from an authenticated cluster node; images
/// from anywhere else go through [`restore_full`].)
pub fn restore_into(bytes: &[u8], vm: &Vm, staged: Heap, absent: &[(u32, u32)]) -> Result<(Process, SlotImage), ImageError> {
    restore_with(bytes, vm, Vec::new(), absent, &mut Some(staged))
}

/// [`restore_into`] with the process's own heap, handed over whole (`--migrate-every`
/// moves a process between two VMs of one OS process so: its pages are not copied):
/// taken from `heap` when the image is restored, left there when it is refused (the
/// process can then go on with it where it was).
pub fn restore_with_heap(bytes: &[u8], vm: &Vm, heap: &mut Option<Heap>) -> Result<(Process, SlotImage), ImageError> {
    if heap.is_none() {
        return Err(ImageError::Invalid("no heap to restore into".into()));
    }
    restore_with(bytes, vm, Vec::new(), &[], heap)
}

fn restore_with(
    bytes: &[u8],
    vm: &Vm,
    extra: Vec<(u32, Vec<u64>)>,
    absent: &[(u32, u32)],
    staged: &mut Option<Heap>,
) -> Result<(Process, SlotImage), ImageError> {
    let cap = max_image_bytes(&vm.config.heap);
    if bytes.len() > cap {
        return Err(ImageError::TooLarge(bytes.len()));
    }
    if bytes.len() < 6 || bytes[..4] != IMAGE_MAGIC {
        return Err(ImageError::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != IMAGE_VERSION {
        return Err(ImageError::WrongVersion(version));
    }
    let (img, rest): (Image, &[u8]) = postcard::take_from_bytes(&bytes[6..]).map_err(|e| ImageError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ImageError::Malformed(format!("{} trailing bytes", rest.len())));
    }
    let invalid = |m: &str| ImageError::Invalid(m.to_string());

    let hc = img.heap.config;
    hc.validate().map_err(ImageError::Invalid)?;
    if hc.limit_bytes > vm.config.heap.limit_bytes {
        return Err(ImageError::Invalid(format!(
            "the process's heap limit ({} MiB) exceeds this VM's ({} MiB)",
            hc.limit_bytes >> 20,
            vm.config.heap.limit_bytes >> 20
        )));
    }
    let page_bytes = hc.page_size_bytes;
    if img.heap.page_count as usize > hc.limit_bytes / page_bytes + 1 {
        return Err(invalid("more pages than the heap limit allows"));
    }
    let deferred = staged.is_some();
    // A heap the machine has no memory for is refused, not an abort of the node.
    let layout_err = |e: HeapError| match e {
        HeapError::OutOfMemory(_) => ImageError::Invalid(e.to_string()),
        _ => invalid("heap layout"),
    };
    let heap = match staged.take() {
        Some(mut h) => match h.adopt_layout(hc, img.heap.page_count as usize, img.heap.top as usize) {
            Ok(()) => h,
            Err(e) => {
                *staged = Some(h);
                return Err(layout_err(e));
            }
        },
        None => Heap::with_layout(hc, img.heap.page_count as usize, img.heap.top as usize).map_err(layout_err)?,
    };
    // Refused from here on, a staged heap goes back to the caller.
    fill(img, heap, vm, extra, absent, deferred).map_err(|(e, heap)| {
        if deferred {
            *staged = Some(*heap);
        }
        e
    })
}

/// Puts an image's pages, `extra` pages and `absent` ranges into `heap`, then makes and
/// checks the process; refused, the heap comes back with the error.
fn fill(
    img: Image,
    mut heap: Heap,
    vm: &Vm,
    extra: Vec<(u32, Vec<u64>)>,
    absent: &[(u32, u32)],
    deferred: bool,
) -> Result<(Process, SlotImage), (ImageError, Box<Heap>)> {
    let invalid = |m: &str| ImageError::Invalid(m.to_string());
    let page_bytes = img.heap.config.page_size_bytes;
    let pages = |heap: &mut Heap| -> Result<(), ImageError> {
        let count = img.heap.page_count as usize;
        // (Made only for an image that carries pages: a migration's image carries none,
        // and at 1 GiB the map alone took a tenth of the freeze's reinstatement.)
        let mut seen = crate::pagebits::PageBits::new(if img.heap.pages.is_empty() { 0 } else { count }, false);
        let mut words = vec![0u64; page_bytes / 8];
        for pg in &img.heap.pages {
            let i = pg.index as usize;
            if seen.set(i, true) != Some(false) || pg.bytes.len() != page_bytes {
                return Err(invalid("bad page record"));
            }
            for (w, chunk) in words.iter_mut().zip(pg.bytes.chunks_exact(8)) {
                *w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            }
            heap.supply_page(pg.index, &words).map_err(|_| invalid("bad page record"))?;
        }
        let pw = page_bytes / 8;
        for (index, data) in extra {
            if index as usize >= count || data.len() != pw {
                return Err(invalid("bad page record"));
            }
            heap.supply_page(index, &data).map_err(|_| invalid("bad page record"))?;
        }
        for &(from, to) in absent {
            if from > to || to as usize > count {
                return Err(invalid("absent page outside the heap"));
            }
            heap.mark_absent_range(from, to);
        }
        Ok(())
    };
    if let Err(e) = pages(&mut heap) {
        return Err((e, Box::new(heap)));
    }
    let lazy = deferred || !heap.all_present();
    heap.set_stats(img.heap.stats);

    let mut p = Process {
        pid: img.pid,
        frames: img.frames,
        regs: img.regs,
        heap,
        globals: img.globals,
        modules: img.modules,
        handlers: img.handlers,
        reductions: img.reductions,
        rng: img.rng,
        max_frames: img.max_frames.clamp(1, 10_000_000),
        sys: img.sys,
        linked: Vec::new(),
        jit_rest: Default::default(),
    };
    let check = |p: &mut Process| -> Result<(), ImageError> {
        p.relink(vm).map_err(|e| ImageError::MissingModule(e.to_string()))?;
        validate(p, vm, lazy).map_err(ImageError::Invalid)?;
        if !lazy {
            // With pages absent the free lists stay empty until the next collection.
            p.heap.rebuild_free_lists().map_err(|_| invalid("heap walk"))?;
        }
        if p.sys.files.len() > 1 << 16 {
            return Err(invalid("too many open files"));
        }
        Ok(())
    };
    match check(&mut p) {
        Ok(()) => Ok((p, img.slot)),
        Err(e) => Err((e, Box::new(p.heap))),
    }
}

/// Checks every reference of a restored process.
fn validate(p: &Process, vm: &Vm, lazy: bool) -> Result<(), String> {
    let heap = &p.heap;
    let starts = if lazy { Vec::new() } else { heap.object_starts().map_err(|_| "heap objects do not walk".to_string())? };
    let v = Validator { p, vm, heap, starts, lazy };
    v.all().map_err(|e| e.0)
}

struct Bad(String);

impl From<HeapError> for Bad {
    fn from(e: HeapError) -> Self {
        Bad(format!("heap access failed: {e:?}"))
    }
}

fn bad<T>(m: impl Into<String>) -> Result<T, Bad> {
    Err(Bad(m.into()))
}

struct Validator<'a> {
    p: &'a Process,
    vm: &'a Vm,
    heap: &'a Heap,
    starts: Vec<u64>,
    /// Pages are absent: references are only checked to be inside the heap.
    lazy: bool,
}

impl Validator<'_> {
    fn object(&self, a: Addr, k: u64) -> Result<usize, Bad> {
        let i = a as usize;
        if self.lazy {
            if i == 0 || i >= self.heap.top() {
                return bad(format!("reference to {a}, outside the heap"));
            }
            return Ok(1);
        }
        if i == 0 || i >= self.heap.top() || self.starts[i / 64] & (1 << (i % 64)) == 0 {
            return bad(format!("reference to {a}, which is not an object"));
        }
        let h = self.heap.raw(i).unwrap_or(0);
        if header_kind(h) != k {
            return bad(format!("object at {a} has kind {} where {k} was expected", header_kind(h)));
        }
        Ok(header_size(h))
    }

    fn function(&self, f: FnRef) -> Result<&crate::bytecode::Function, Bad> {
        match self.p.linked.get(f.module as usize).and_then(|m| m.module.functions.get(f.func as usize)) {
            Some(func) => Ok(func),
            None => bad(format!("function {}:{} does not exist", f.module, f.func)),
        }
    }

    fn value(&self, v: Value) -> Result<(), Bad> {
        match v {
            Value::Str(a) => self.object(a, kind::STR).map(|_| ()),
            Value::Array(a) => self.object(a, kind::ARRAY).map(|_| ()),
            Value::Map(a) => self.object(a, kind::MAP).map(|_| ()),
            Value::Closure(a) => self.object(a, kind::CLOSURE).map(|_| ()),
            Value::Box(a) => self.object(a, kind::BOX).map(|_| ()),
            Value::Func(f) => {
                if !self.function(f)?.upvals.is_empty() {
                    return bad("plain function value for a function that captures variables");
                }
                Ok(())
            }
            Value::Native(n) => {
                if self.vm.natives.get(n).is_none() {
                    return bad(format!("native function #{n} does not exist"));
                }
                Ok(())
            }
            Value::Nil
            | Value::Bool(_)
            | Value::Int(_)
            | Value::Float(_)
            | Value::Pid(_)
            | Value::Tx(_)
            | Value::Rx(_)
            | Value::File(_)
            | Value::Group(_)
            | Value::Timeout => Ok(()),
        }
    }

    fn heap_value(&self, at: usize) -> Result<Value, Bad> {
        let t = self.heap.raw(at).unwrap_or(u64::MAX);
        let pay = self.heap.raw(at + 1).unwrap_or(0);
        match Value::decode(t, pay) {
            Some(v) => {
                self.value(v)?;
                Ok(v)
            }
            None => bad(format!("bad value tag {t} at {at}")),
        }
    }

    fn objects(&self) -> Result<(), Bad> {
        let heap = self.heap;
        let mut a = 1usize;
        while a < heap.top() {
            let h = heap.raw(a).unwrap_or(0);
            let size = header_size(h);
            let w = |i: usize| heap.raw(a + i).unwrap_or(0) as usize;
            match header_kind(h) {
                kind::STR => {
                    let len = w(1);
                    if size < 3 || len.div_ceil(8) + 3 > size {
                        return bad("string length exceeds its object");
                    }
                    let bytes = heap.bytes(a + 3, len)?;
                    if std::str::from_utf8(bytes).is_err() {
                        return bad("string is not UTF-8");
                    }
                    if crate::object::hash_bytes(bytes) != w(2) as u64 {
                        return bad("string hash does not match its bytes");
                    }
                }
                kind::ARRAY => {
                    if size != 3 {
                        return bad("array object size");
                    }
                    let (len, data) = (w(1), w(2));
                    if data == 0 {
                        if len != 0 {
                            return bad("array without storage has elements");
                        }
                    } else {
                        let dsize = self.object(data as Addr, kind::ARRDATA)?;
                        if len > (dsize - 1) / 2 {
                            return bad("array length exceeds its storage");
                        }
                        for i in 0..len {
                            self.heap_value(data + 1 + 2 * i)?;
                        }
                    }
                }
                kind::MAP => {
                    if size != 5 {
                        return bad("map object size");
                    }
                    let (live, entries, used, index) = (w(1), w(2), w(3), w(4));
                    let esize = self.object(entries as Addr, kind::MAPENTRIES)?;
                    if used > (esize - 1) / 4 || live > used {
                        return bad("map counts exceed its storage");
                    }
                    let mut n_live = 0;
                    for i in 0..used {
                        let e = entries + 1 + 4 * i;
                        if heap.raw(e) == Some(tag::TOMBSTONE) {
                            continue;
                        }
                        let k = self.heap_value(e)?;
                        if matches!(
                            k,
                            Value::Nil
                                | Value::Array(_)
                                | Value::Map(_)
                                | Value::Closure(_)
                                | Value::Func(_)
                                | Value::Native(_)
                                | Value::Box(_)
                        ) {
                            return bad("map key of a type that cannot be a key");
                        }
                        self.heap_value(e + 2)?;
                        n_live += 1;
                    }
                    if n_live != live {
                        return bad("map live count is wrong");
                    }
                    if index != 0 {
                        let isize = self.object(index as Addr, kind::MAPINDEX)?;
                        let icap = isize - 1;
                        if !icap.is_power_of_two() {
                            return bad("map index size");
                        }
                        let mut full = 0;
                        for s in 0..icap {
                            let slot = heap.raw(index + 1 + s).unwrap_or(u64::MAX) as usize;
                            if slot > used {
                                return bad("map index slot out of range");
                            }
                            full += usize::from(slot != 0);
                        }
                        if full >= icap {
                            return bad("map index has no empty slot");
                        }
                    } else if used > 8 {
                        return bad("large map without an index");
                    }
                }
                kind::CLOSURE => {
                    if size < 2 {
                        return bad("closure object size");
                    }
                    let f = FnRef::unpack(w(1) as u64);
                    let func = self.function(f)?;
                    if size - 2 != func.upvals.len() {
                        return bad("closure captures a different number of variables than its function");
                    }
                    for i in 2..size {
                        self.object(w(i) as Addr, kind::BOX)?;
                    }
                }
                kind::BOX => {
                    if size != 3 {
                        return bad("box object size");
                    }
                    self.heap_value(a + 1)?;
                }
                kind::FREE | kind::ARRDATA | kind::MAPENTRIES | kind::MAPINDEX => {}
                k => return bad(format!("unknown object kind {k}")),
            }
            a += size;
        }
        Ok(())
    }

    fn all(&self) -> Result<(), Bad> {
        let p = self.p;
        if !self.lazy {
            self.objects()?;
        }
        for v in p.regs.iter().chain(&p.globals) {
            self.value(*v)?;
        }
        if p.frames.is_empty() {
            return bad("no frames");
        }
        if p.frames.len() > p.max_frames as usize + 1 {
            return bad("more frames than the call-depth limit");
        }
        for f in &p.frames {
            let func = self.function(FnRef { module: f.module, func: f.func })?;
            if f.pc as usize >= func.code.len() {
                return bad("frame pc outside its function");
            }
            if f.base as usize + usize::from(func.nregs) > p.regs.len() || f.ret as usize >= p.regs.len().max(1) {
                return bad("frame registers outside the register stack");
            }
            if f.closure != 0 {
                self.object(f.closure, kind::CLOSURE)?;
                let cf = FnRef::unpack(self.heap.raw(f.closure as usize + 1).unwrap_or(0));
                if !self.lazy && cf != (FnRef { module: f.module, func: f.func }) {
                    return bad("frame closure runs a different function");
                }
            } else if !func.upvals.is_empty() {
                return bad("frame of a capturing function has no closure");
            }
            if f.init_of != NOT_INIT && f.init_of as usize >= p.modules.len() {
                return bad("frame initialises a module that does not exist");
            }
        }
        for m in &p.modules {
            let lm = self.vm.module(&m.hash).ok_or_else(|| Bad("module missing".into()))?;
            if m.globals_base as usize + m.globals_len as usize > p.globals.len() || m.globals_len as usize != lm.module.globals.len() {
                return bad("module globals outside the globals table");
            }
            if m.strs.len() != lm.module.consts.len() {
                return bad("module string cache size");
            }
            for &s in &m.strs {
                if s != 0 {
                    self.object(s, kind::STR)?;
                }
            }
            if let ModuleState::Ready(v) = m.state {
                self.value(v)?;
            }
        }
        for h in &p.handlers {
            let Some(f) = p.frames.get(h.depth as usize) else {
                return bad("handler of a frame that does not exist");
            };
            let func = self.function(FnRef { module: f.module, func: f.func })?;
            if h.pc as usize >= func.code.len() || h.reg as usize >= p.regs.len() {
                return bad("handler outside its function");
            }
        }
        Ok(())
    }
}
