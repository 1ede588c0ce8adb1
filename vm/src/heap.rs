//! A process's paged heap: its address space, allocator and garbage collector.
//!
//! The heap is one array of 64-bit words, cut into pages of a fixed power-of-two size
//! (4 KiB by default). An address is a word index, so `page = addr >> page_shift`; it
//! means the same thing in every copy of the process, on every machine. Each page has
//! a *dirty* bit, set by every store (the write barrier pre-copy migration reads), and
//! a *present* bit: touching an absent page returns [`HeapError::Fault`] instead of
//! data, and the interpreter turns that into "blocked on page fault" and restarts the
//! instruction once the page has been supplied.
//!
//! Every object starts with a header word (`kind | size_in_words << 8`); free space
//! carries `FREE` headers, so the heap below `top` can be walked from word 1 (word 0 is
//! reserved so that address 0 can mean "none"). The collector is a non-moving
//! mark-sweep: mark bits live in a side table, and the sweep writes a header only at the
//! start of each newly freed gap. A collection therefore dirties only pages where
//! garbage died — which matters because pre-copy resends every dirty page.
//!
//! Memory for the heap (and for the collector's tables, which its size sets) is asked
//! for fallibly: when the machine refuses it, the allocation fails with
//! [`HeapError::OutOfMemory`], which ends that one process with a Tern error like the
//! heap limit's, never the whole node with an allocation-failure abort.

use crate::pagebits::PageBits;
use crate::value::{Addr, Value};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest heap limit: addresses are 32-bit word indices, so no heap can be larger.
pub const MAX_LIMIT_BYTES: usize = 1 << 35;

/// Object kinds, the low byte of a header.
pub mod kind {
    pub const FREE: u64 = 1;
    /// `[hdr, byte_len, hash, bytes...]`
    pub const STR: u64 = 2;
    /// `[hdr, len, data_addr]`
    pub const ARRAY: u64 = 3;
    /// `[hdr, (tag, payload) * cap]`
    pub const ARRDATA: u64 = 4;
    /// `[hdr, live_count, entries_addr, used, index_addr]`
    pub const MAP: u64 = 5;
    /// `[hdr, (ktag, kpay, vtag, vpay) * cap]`
    pub const MAPENTRIES: u64 = 6;
    /// `[hdr, slot * cap]`; a slot is 0 (empty) or entry index + 1.
    pub const MAPINDEX: u64 = 7;
    /// `[hdr, fnref, box_addr...]`
    pub const CLOSURE: u64 = 8;
    /// `[hdr, tag, payload]`
    pub const BOX: u64 = 9;
}

#[inline]
pub fn header(kind: u64, size: usize) -> u64 {
    kind | ((size as u64) << 8)
}
#[inline]
pub fn header_kind(h: u64) -> u64 {
    h & 0xff
}
#[inline]
pub fn header_size(h: u64) -> usize {
    (h >> 8) as usize
}

/// Why a heap access did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapError {
    /// The page is not present here (it is still on another node). The access must be
    /// retried after the page has been supplied.
    Fault(u32),
    /// The allocation would exceed the heap limit. The interpreter collects and retries
    /// once before reporting it.
    Limit,
    /// A reference or header that cannot be valid: only reachable through a damaged
    /// image, which restore validates against, so seeing it is a VM bug or hostile data.
    Corrupt,
    /// The machine refused the memory: the heap could not grow to this many bytes (0:
    /// the collector could not get room for its own tables). Treated like `Limit`: the
    /// interpreter collects and retries once before reporting it to the process alone.
    OutOfMemory(u64),
}

impl HeapError {
    /// The heap is full: its limit is reached or the machine refused it more memory.
    pub fn is_full(self) -> bool {
        matches!(self, HeapError::Limit | HeapError::OutOfMemory(_))
    }
}

impl std::fmt::Display for HeapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeapError::Fault(p) => write!(f, "heap page {p} is not here"),
            HeapError::Limit => write!(f, "heap limit exceeded"),
            HeapError::Corrupt => write!(f, "damaged heap reference"),
            HeapError::OutOfMemory(0) => write!(f, "out of memory: no room to collect the heap's garbage"),
            HeapError::OutOfMemory(n) => write!(f, "out of memory: the heap could not grow to {n} bytes ({} MiB)", n >> 20),
        }
    }
}

/// A heap may not grow past this many bytes, as if the machine had no more memory: a
/// seam for tests of running out of memory (`usize::MAX`, no ceiling, unless a test
/// sets one). It applies to every heap of the OS process.
static GROWTH_CEILING: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Makes every heap's growth past `bytes` fail as the allocator refusing would
/// ([`HeapError::OutOfMemory`]); `usize::MAX` lifts it. For tests only.
#[doc(hidden)]
pub fn set_growth_ceiling_for_tests(bytes: usize) {
    GROWTH_CEILING.store(bytes, Ordering::SeqCst);
}

/// `len` zero words, or `None` if the allocator refuses them. Zeroed by the allocator,
/// so for a large heap the OS supplies zero pages on first touch and pages never
/// touched cost no memory.
fn zeroed_words(len: usize) -> Option<Vec<u64>> {
    if len == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<u64>(len).ok()?;
    // SAFETY: `layout` has a non-zero size. A non-null result is a block for `len`
    // `u64`s, all zero (a valid `u64`), from the global allocator with exactly the
    // layout a `Vec<u64>` of capacity `len` uses, so the `Vec` may own and free it.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout).cast::<u64>();
        if p.is_null() {
            return None;
        }
        Some(Vec::from_raw_parts(p, len, len))
    }
}

/// Makes room in `v` for `additional` more elements without aborting on a refusal.
fn try_room<T>(v: &mut Vec<T>, additional: usize) -> Result<(), HeapError> {
    v.try_reserve(additional).map_err(|_| HeapError::OutOfMemory(0))
}

/// Size and behaviour settings of a heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeapConfig {
    pub page_size_bytes: usize,
    pub limit_bytes: usize,
    /// The collector runs when this much has been allocated since the last collection
    /// (or as much as was live after it, whichever is more).
    pub gc_min_bytes: usize,
}

impl Default for HeapConfig {
    fn default() -> Self {
        HeapConfig { page_size_bytes: 4096, limit_bytes: 256 << 20, gc_min_bytes: 4 << 20 }
    }
}

impl HeapConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !self.page_size_bytes.is_power_of_two() || self.page_size_bytes < 64 || self.page_size_bytes > (1 << 24) {
            return Err(format!("page size {} must be a power of two between 64 bytes and 16 MiB", self.page_size_bytes));
        }
        if self.limit_bytes < self.page_size_bytes * 2 || self.limit_bytes > MAX_LIMIT_BYTES {
            return Err(format!("heap limit {} must be between two pages and 32 GiB", self.limit_bytes));
        }
        Ok(())
    }
}

/// See [`Heap::raw_view`].
#[derive(Debug, Clone, Copy)]
pub struct RawView {
    pub words: *mut u64,
    pub len: u64,
    pub dirty: *mut u8,
    pub page_shift: u32,
    pub absent_pages: u32,
}

/// What the collector has done, for tests and migration reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcStats {
    pub collections: u64,
    pub last_live_words: u64,
    pub last_freed_words: u64,
    /// Pages the last collection wrote to (and so dirtied).
    pub last_pages_dirtied: u64,
    pub total_pages_dirtied: u64,
}

/// Pages whose dirty flags [`Heap::take_dirty`] and [`Heap::sample_dirty`] look at
/// together, passing over a block with none set.
const DIRTY_BLOCK: usize = 64;

/// Whether any flag of `b` is set (an OR of them all, which the compiler does a vector
/// at a time, not a search that stops at the first).
#[inline]
fn any_set(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, &x| a | x) != 0
}

/// Largest object size (in words) with its own exact-size free list.
const SMALL_MAX: usize = 64;

/// The paged heap of one process.
#[derive(Debug, Clone)]
pub struct Heap {
    words: Vec<u64>,
    page_shift: u32,
    /// A bit per page: set when the page's words are here ([`PageBits`], so that marking
    /// a 1 GiB heap's 262,144 pages absent is a fill of 4,096 words).
    present: PageBits,
    absent_pages: u32,
    /// A byte per page, 1 once written (a byte, not a bit: the write barrier is one
    /// plain store, from the interpreter and from compiled code).
    dirty: Vec<u8>,
    /// Pages written before the last [`Heap::sample_dirty`] and not yet taken by
    /// [`Heap::take_dirty`] (the write-rate sample moves them here from `dirty`).
    dirty_held: Vec<u8>,
    /// End of the walkable part of the heap.
    top: usize,
    /// Current bump region `[bump, bump_end)`; `bump_end == usize::MAX` means "the top of
    /// the heap, growing as needed".
    bump: usize,
    bump_end: usize,
    /// Free blocks and the collector's figures: out of line, made when the first block
    /// is freed or the first collection runs (most processes do neither, and every
    /// process carries a heap).
    free: Option<Box<FreeSpace>>,
    limit_words: usize,
    gc_min_words: usize,
    allocated_since_gc: usize,
    gc_threshold: usize,
    /// Set when enough has been allocated that a collection is due at the next safepoint.
    pub gc_wanted: bool,
}

/// See [`Heap::free`].
#[derive(Debug, Clone, Default)]
struct FreeSpace {
    /// Exact-size free lists, by size in words (`SMALL_MAX + 1` of them once there are any).
    small: Vec<Vec<Addr>>,
    large: Vec<(Addr, usize)>,
    stats: GcStats,
}

impl Heap {
    pub fn new(config: HeapConfig) -> Heap {
        let page_words = config.page_size_bytes / 8;
        let heap = Heap {
            words: Vec::new(),
            page_shift: page_words.trailing_zeros(),
            present: PageBits::default(),
            absent_pages: 0,
            dirty: Vec::new(),
            dirty_held: Vec::new(),
            top: 1,
            bump: 1,
            bump_end: usize::MAX,
            free: None,
            limit_words: config.limit_bytes / 8,
            gc_min_words: config.gc_min_bytes / 8,
            allocated_since_gc: 0,
            gc_threshold: config.gc_min_bytes / 8,
            gc_wanted: false,
        };
        // No page until the first allocation: a process that allocates nothing (a
        // waiting process, say) costs no heap memory.
        heap
    }

    /// The Tern error for an allocation that found this heap full (`e` is `Limit` or
    /// `OutOfMemory`).
    pub fn full_error(&self, e: HeapError) -> String {
        match e {
            HeapError::OutOfMemory(_) => e.to_string(),
            _ => format!("heap limit of {} MiB exceeded", (self.limit_words * 8) >> 20),
        }
    }

    pub fn config(&self) -> HeapConfig {
        HeapConfig { page_size_bytes: self.page_words() * 8, limit_bytes: self.limit_words * 8, gc_min_bytes: self.gc_min_words * 8 }
    }

    #[inline]
    pub fn page_words(&self) -> usize {
        1 << self.page_shift
    }
    #[inline]
    pub fn page_shift(&self) -> u32 {
        self.page_shift
    }
    pub fn page_count(&self) -> usize {
        self.present.len()
    }
    pub fn top(&self) -> usize {
        self.top
    }
    pub fn size_bytes(&self) -> usize {
        self.words.len() * 8
    }

    /// Grows the heap to hold at least `words` words (new pages zero, present and
    /// dirty). Memory is asked for fallibly: a refusal (or the test ceiling) is
    /// [`HeapError::OutOfMemory`] and leaves the heap as it was, never an abort of the
    /// whole node.
    fn grow_to(&mut self, words: usize) -> Result<(), HeapError> {
        let pw = self.page_words();
        let pages = words.div_ceil(pw);
        let have = self.present.len();
        if pages <= have {
            return Ok(());
        }
        let len = pages.saturating_mul(pw);
        let oom = HeapError::OutOfMemory((len as u64).saturating_mul(8));
        if len.saturating_mul(8) > GROWTH_CEILING.load(Ordering::Relaxed) {
            return Err(oom);
        }
        // Everything is reserved before anything changes, so a refusal changes nothing.
        self.dirty.try_reserve(pages - have).map_err(|_| oom)?;
        self.dirty_held.try_reserve(pages - have).map_err(|_| oom)?;
        // The present map grows first (it cannot reserve apart from growing) and is put
        // back if the words are refused.
        self.present.try_resize(pages, true).map_err(|_| oom)?;
        if let Err(e) = self.grow_words(len) {
            let _ = self.present.try_resize(have, true);
            return Err(e);
        }
        self.dirty.resize(pages, 1);
        self.dirty_held.resize(pages, 0);
        Ok(())
    }

    /// The words grown to `len` (see [`Heap::grow_to`]); refused, they are as they were.
    fn grow_words(&mut self, len: usize) -> Result<(), HeapError> {
        let pw = self.page_words();
        let oom = HeapError::OutOfMemory((len as u64).saturating_mul(8));
        if self.words.is_empty() {
            self.words = zeroed_words(len).ok_or(oom)?;
            // Word 0 is never an object: address 0 means "none".
            self.words[0] = header(kind::FREE, 1);
        } else {
            // Room to double (as `Vec` would), but not past the limit; if that much is
            // refused, exactly what is needed.
            let most = self.limit_words.saturating_add(pw).div_ceil(pw).saturating_mul(pw).max(len);
            let roomy = len.max(self.words.len().saturating_mul(2)).min(most);
            let cur = self.words.len();
            if self.words.try_reserve_exact(roomy - cur).is_err() {
                self.words.try_reserve_exact(len - cur).map_err(|_| oom)?;
            }
            self.words.resize(len, 0);
        }
        Ok(())
    }

    #[inline]
    fn check(&self, a: usize) -> Result<(), HeapError> {
        if self.absent_pages != 0 {
            let p = a >> self.page_shift;
            if !self.present.get(p).ok_or(HeapError::Corrupt)? {
                return Err(HeapError::Fault(p as u32));
            }
        }
        Ok(())
    }

    /// The heap's words and dirty bits as raw memory, for compiled code that reads and
    /// writes array elements in place (only while no page is absent, and every address
    /// checked against `len`). Valid until the heap next grows.
    pub fn raw_view(&mut self) -> RawView {
        RawView {
            words: self.words.as_mut_ptr(),
            len: self.words.len() as u64,
            dirty: self.dirty.as_mut_ptr(),
            page_shift: self.page_shift,
            absent_pages: self.absent_pages,
        }
    }

    /// Reads one word.
    #[inline]
    pub fn load(&self, addr: usize) -> Result<u64, HeapError> {
        self.check(addr)?;
        self.words.get(addr).copied().ok_or(HeapError::Corrupt)
    }

    /// Writes one word, marking its page dirty.
    #[inline]
    pub fn store(&mut self, addr: usize, w: u64) -> Result<(), HeapError> {
        self.check(addr)?;
        let slot = self.words.get_mut(addr).ok_or(HeapError::Corrupt)?;
        *slot = w;
        self.dirty[addr >> self.page_shift] = 1;
        Ok(())
    }

    #[inline(always)]
    pub fn load_value(&self, addr: usize) -> Result<Value, HeapError> {
        let w = self.slice(addr, 2)?;
        Value::decode(w[0], w[1]).ok_or(HeapError::Corrupt)
    }

    #[inline]
    pub fn store_value(&mut self, addr: usize, v: Value) -> Result<(), HeapError> {
        let (t, p) = v.encode();
        if self.absent_pages != 0 {
            self.check(addr)?;
            self.check(addr + 1)?;
        }
        let slot = self.words.get_mut(addr..addr + 2).ok_or(HeapError::Corrupt)?;
        slot[0] = t;
        slot[1] = p;
        self.dirty[addr >> self.page_shift] = 1;
        self.dirty[(addr + 1) >> self.page_shift] = 1;
        Ok(())
    }

    /// Reads an object's header, checking that it has the expected kind.
    #[inline]
    pub fn header_of(&self, addr: Addr, expect: u64) -> Result<usize, HeapError> {
        let h = self.load(addr as usize)?;
        if header_kind(h) != expect {
            return Err(HeapError::Corrupt);
        }
        Ok(header_size(h))
    }

    /// Checks that every page of `[addr, addr + len)` is present.
    pub fn check_range(&self, addr: usize, len: usize) -> Result<(), HeapError> {
        if len == 0 {
            return Ok(());
        }
        if addr + len > self.words.len() {
            return Err(HeapError::Corrupt);
        }
        if self.absent_pages != 0 {
            let first = addr >> self.page_shift;
            let last = (addr + len - 1) >> self.page_shift;
            for p in first..=last {
                if self.present.get(p) != Some(true) {
                    return Err(HeapError::Fault(p as u32));
                }
            }
        }
        Ok(())
    }

    /// The words `[addr, addr + len)`, all of whose pages must be present.
    #[inline(always)]
    pub fn slice(&self, addr: usize, len: usize) -> Result<&[u64], HeapError> {
        if self.absent_pages != 0 {
            self.check_range(addr, len)?;
        }
        self.words.get(addr..addr + len).ok_or(HeapError::Corrupt)
    }

    /// A byte view of `[addr, addr + nbytes)`, all of whose pages must be present.
    pub fn bytes(&self, addr: usize, nbytes: usize) -> Result<&[u8], HeapError> {
        let nwords = nbytes.div_ceil(8);
        self.check_range(addr, nwords)?;
        let words = &self.words[addr..addr + nwords];
        // SAFETY: `words` is a live, initialised slice of u64; viewing its first `nbytes`
        // (<= 8 * len) bytes as u8 is in bounds, and u8 has no alignment requirement.
        Ok(unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), nbytes) })
    }

    /// Copies bytes into the heap starting at word `addr`, marking pages dirty.
    pub fn write_bytes(&mut self, addr: usize, data: &[u8]) -> Result<(), HeapError> {
        let nwords = data.len().div_ceil(8);
        self.check_range(addr, nwords)?;
        for (i, chunk) in data.chunks(8).enumerate() {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.words[addr + i] = u64::from_le_bytes(buf);
        }
        self.mark_dirty_range(addr, nwords);
        Ok(())
    }

    /// Copies `len` words from `src` to `dst` (non-overlapping or `dst < src`).
    pub fn copy_words(&mut self, src: usize, dst: usize, len: usize) -> Result<(), HeapError> {
        self.check_range(src, len)?;
        self.check_range(dst, len)?;
        self.words.copy_within(src..src + len, dst);
        self.mark_dirty_range(dst, len);
        Ok(())
    }

    fn mark_dirty_range(&mut self, addr: usize, len: usize) {
        if len == 0 {
            return;
        }
        let first = addr >> self.page_shift;
        let last = (addr + len - 1) >> self.page_shift;
        self.dirty[first..=last].fill(1);
    }

    // ---- allocation ----

    /// Allocates an object of `size` words (header included) and writes its header.
    /// The body is left as it was: callers initialise every word they later read.
    pub fn alloc(&mut self, kind: u64, size: usize) -> Result<Addr, HeapError> {
        debug_assert!(size >= 1);
        let addr = self.alloc_space(size)?;
        self.allocated_since_gc += size;
        if self.allocated_since_gc > self.gc_threshold {
            self.gc_wanted = true;
        }
        self.store(addr, header(kind, size))?;
        Ok(addr as Addr)
    }

    /// Finds space: an exact-size free block, the current region, a large free block
    /// (which becomes the region), a split larger small block, and only then new space
    /// at the top of the heap.
    fn alloc_space(&mut self, size: usize) -> Result<usize, HeapError> {
        if size <= SMALL_MAX {
            if let Some(a) = self.free.as_deref_mut().and_then(|f| f.small.get_mut(size)).and_then(Vec::pop) {
                return Ok(a as usize);
            }
        }
        if self.bump_end != usize::MAX && self.bump + size <= self.bump_end {
            return self.bump_alloc(size);
        }
        let large = self.free.as_deref_mut().and_then(|f| {
            let i = f.large.iter().position(|&(_, len)| len >= size)?;
            Some(f.large.swap_remove(i))
        });
        if let Some((a, len)) = large {
            self.retire_region();
            self.bump = a as usize;
            self.bump_end = a as usize + len;
            return self.bump_alloc(size);
        }
        if size < SMALL_MAX {
            for bigger in size + 1..=SMALL_MAX {
                if let Some(a) = self.free.as_deref_mut().and_then(|f| f.small.get_mut(bigger)).and_then(Vec::pop) {
                    let rest = a as usize + size;
                    self.store(rest, header(kind::FREE, bigger - size))?;
                    self.small_free_push(bigger - size, rest as Addr);
                    return Ok(a as usize);
                }
            }
        }
        let a = self.top;
        if (a >> self.page_shift) < self.present.len() {
            // The last page may be absent (transfer on reference): fault before changing anything.
            self.check(a)?;
        }
        self.retire_region();
        let end = a + size;
        if end > self.limit_words || end > u32::MAX as usize {
            return Err(HeapError::Limit);
        }
        self.grow_to(end)?;
        self.top = end;
        self.bump = end;
        self.bump_end = usize::MAX;
        Ok(a)
    }

    fn small_free_push(&mut self, size: usize, a: Addr) {
        let f = self.free.get_or_insert_with(Default::default);
        if f.small.is_empty() {
            f.small = vec![Vec::new(); SMALL_MAX + 1];
        }
        f.small[size].push(a);
    }

    fn large_free_push(&mut self, a: Addr, len: usize) {
        self.free.get_or_insert_with(Default::default).large.push((a, len));
    }

    /// What the collector has done so far.
    pub fn stats(&self) -> GcStats {
        self.free.as_ref().map_or_else(GcStats::default, |f| f.stats)
    }

    pub fn set_stats(&mut self, stats: GcStats) {
        if self.free.is_some() || stats != GcStats::default() {
            self.free.get_or_insert_with(Default::default).stats = stats;
        }
    }

    fn bump_alloc(&mut self, size: usize) -> Result<usize, HeapError> {
        let a = self.bump;
        self.check(a)?;
        if a + size < self.bump_end {
            self.check(a + size)?;
        }
        self.bump += size;
        if self.bump < self.bump_end {
            // Keep the rest of the region walkable.
            self.store(self.bump, header(kind::FREE, self.bump_end - self.bump))?;
        }
        Ok(a)
    }

    /// Gives the unused rest of the current region (which already carries a FREE
    /// header) back to the free lists.
    fn retire_region(&mut self) {
        if self.bump_end == usize::MAX {
            return;
        }
        let rest = self.bump_end - self.bump;
        if rest > 0 && rest <= SMALL_MAX {
            self.small_free_push(rest, self.bump as Addr);
        } else if rest > SMALL_MAX {
            self.large_free_push(self.bump as Addr, rest);
        }
        self.bump = self.top;
        self.bump_end = usize::MAX;
    }

    // ---- collection ----

    /// Collects garbage. `roots` are every value the process holds outside its heap
    /// (registers, globals, closures of frames, cached constants, ...).
    ///
    /// Must only run at a safepoint, and with every page present (a collection during a
    /// lazy migration waits until the pages have arrived; callers check
    /// [`Heap::all_present`]).
    pub fn collect(&mut self, roots: impl IntoIterator<Item = Value>) -> Result<(), HeapError> {
        if self.absent_pages != 0 {
            // Marking would fault on absent pages: wait for the next threshold.
            self.gc_wanted = false;
            self.allocated_since_gc = 0;
            return Ok(());
        }
        // The collector's tables are sized by the heap: asked for fallibly too.
        let mut marks = Vec::new();
        try_room(&mut marks, self.top.div_ceil(64))?;
        marks.resize(self.top.div_ceil(64), 0u64);
        let mut stack: Vec<Addr> = Vec::new();
        let mark = |marks: &mut Vec<u64>, stack: &mut Vec<Addr>, a: Addr| -> Result<(), HeapError> {
            let i = a as usize;
            if i == 0 || i >= self.top {
                return Ok(());
            }
            let bit = 1u64 << (i % 64);
            if marks[i / 64] & bit == 0 {
                marks[i / 64] |= bit;
                if stack.len() == stack.capacity() {
                    try_room(stack, 1)?;
                }
                stack.push(a);
            }
            Ok(())
        };
        for v in roots {
            if let Some(a) = v.heap_ref() {
                mark(&mut marks, &mut stack, a)?;
            }
        }
        while let Some(a) = stack.pop() {
            let a = a as usize;
            let h = self.words[a];
            match header_kind(h) {
                kind::ARRAY => {
                    let len = self.words[a + 1] as usize;
                    let data = self.words[a + 2] as usize;
                    if data != 0 {
                        mark(&mut marks, &mut stack, data as Addr)?;
                        for i in 0..len {
                            let v = Value::decode(self.words[data + 1 + 2 * i], self.words[data + 2 + 2 * i]);
                            if let Some(r) = v.and_then(Value::heap_ref) {
                                mark(&mut marks, &mut stack, r)?;
                            }
                        }
                    }
                }
                kind::MAP => {
                    let entries = self.words[a + 2] as usize;
                    let used = self.words[a + 3] as usize;
                    let index = self.words[a + 4] as usize;
                    if index != 0 {
                        mark(&mut marks, &mut stack, index as Addr)?;
                    }
                    if entries != 0 {
                        mark(&mut marks, &mut stack, entries as Addr)?;
                        for i in 0..used {
                            let e = entries + 1 + 4 * i;
                            for off in [0, 2] {
                                if let Some(r) = Value::decode(self.words[e + off], self.words[e + off + 1]).and_then(Value::heap_ref) {
                                    mark(&mut marks, &mut stack, r)?;
                                }
                            }
                        }
                    }
                }
                kind::CLOSURE => {
                    let size = header_size(h);
                    for i in 2..size {
                        mark(&mut marks, &mut stack, self.words[a + i] as Addr)?;
                    }
                }
                kind::BOX => {
                    if let Some(r) = Value::decode(self.words[a + 1], self.words[a + 2]).and_then(Value::heap_ref) {
                        mark(&mut marks, &mut stack, r)?;
                    }
                }
                _ => {}
            }
        }
        self.sweep(&marks)
    }

    fn sweep(&mut self, marks: &[u64]) -> Result<(), HeapError> {
        if let Some(f) = self.free.as_deref_mut() {
            for l in &mut f.small {
                l.clear();
            }
            f.large.clear();
        }
        let mut dirtied: Vec<usize> = Vec::new();
        let mut live = 0usize;
        let mut freed = 0usize;
        let mut gap_start = 0usize;
        let mut gap_len = 0usize;
        let mut a = 1usize;
        let top = self.top;
        while a < top {
            let h = self.words[a];
            let size = header_size(h);
            if size == 0 || a + size > top {
                return Err(HeapError::Corrupt);
            }
            let is_live = header_kind(h) != kind::FREE && marks[a / 64] & (1 << (a % 64)) != 0;
            if is_live {
                if gap_len > 0 {
                    self.free_gap(gap_start, gap_len, &mut dirtied);
                    gap_len = 0;
                }
                live += size;
            } else {
                if header_kind(h) != kind::FREE {
                    freed += size;
                }
                if gap_len == 0 {
                    gap_start = a;
                }
                gap_len += size;
            }
            a += size;
        }
        // A gap reaching the top lowers the top: that space becomes the growing region.
        if gap_len > 0 {
            self.top = gap_start;
        }
        self.bump = self.top;
        self.bump_end = usize::MAX;
        dirtied.sort_unstable();
        dirtied.dedup();
        let stats = &mut self.free.get_or_insert_with(Default::default).stats;
        stats.collections += 1;
        stats.last_live_words = live as u64;
        stats.last_freed_words = freed as u64;
        stats.last_pages_dirtied = dirtied.len() as u64;
        stats.total_pages_dirtied += dirtied.len() as u64;
        self.allocated_since_gc = 0;
        self.gc_threshold = self.gc_min_words.max(live);
        self.gc_wanted = false;
        Ok(())
    }

    fn free_gap(&mut self, start: usize, len: usize, dirtied: &mut Vec<usize>) {
        let h = header(kind::FREE, len);
        if self.words[start] != h {
            self.words[start] = h;
            let p = start >> self.page_shift;
            self.dirty[p] = 1;
            dirtied.push(p);
        }
        if len <= SMALL_MAX {
            self.small_free_push(len, start as Addr);
        } else {
            self.large_free_push(start as Addr, len);
        }
    }

    /// Rebuilds the free lists from the headers (after a restore): every FREE block
    /// becomes reusable.
    pub fn rebuild_free_lists(&mut self) -> Result<(), HeapError> {
        // Everything is live for this pass: only FREE headers make free space.
        let mut marks = Vec::new();
        try_room(&mut marks, self.top.div_ceil(64))?;
        marks.resize(self.top.div_ceil(64), u64::MAX);
        let saved = self.stats();
        self.sweep(&marks)?;
        self.set_stats(saved);
        Ok(())
    }

    // ---- pages: the interface migration uses ----

    /// Returns the pages dirtied since the last call and clears their dirty bits.
    /// Blocks of [`DIRTY_BLOCK`] pages with no flag set are passed over whole (a 1 GiB
    /// heap's 262,144 flags in microseconds, not a pass per page: pre-copy takes the
    /// last dirty set inside the freeze).
    pub fn take_dirty(&mut self) -> Vec<u32> {
        let mut out = Vec::new();
        let blocks = self.dirty.chunks_mut(DIRTY_BLOCK).zip(self.dirty_held.chunks_mut(DIRTY_BLOCK));
        for (b, (d, h)) in blocks.enumerate() {
            if !any_set(d) && !any_set(h) {
                continue;
            }
            for (i, (x, y)) in d.iter_mut().zip(h.iter_mut()).enumerate() {
                if *x | *y != 0 {
                    out.push((b * DIRTY_BLOCK + i) as u32);
                }
            }
            d.fill(0);
            h.fill(0);
        }
        out
    }

    /// The write rate's sample: how many pages were written since the last sample.
    /// They stay dirty for [`Heap::take_dirty`] (pre-copy sees exactly what it would
    /// have without the sample); only the count starts again.
    /// Clean blocks are passed over whole, as in [`Heap::take_dirty`].
    pub fn sample_dirty(&mut self) -> u32 {
        let mut n = 0;
        for (d, h) in self.dirty.chunks_mut(DIRTY_BLOCK).zip(self.dirty_held.chunks_mut(DIRTY_BLOCK)) {
            if !any_set(d) {
                continue;
            }
            for (x, y) in d.iter_mut().zip(h.iter_mut()) {
                n += u32::from(*x);
                *y |= *x;
                *x = 0;
            }
        }
        n
    }

    pub fn is_present(&self, page: u32) -> bool {
        self.present.get(page as usize).unwrap_or(false)
    }

    pub fn all_present(&self) -> bool {
        self.absent_pages == 0
    }

    /// The first page that is not present, if any.
    pub fn first_absent(&self) -> Option<u32> {
        if self.absent_pages == 0 {
            return None;
        }
        self.present.next(0, false).map(|p| p as u32)
    }

    /// The pages that are not present, in order (none without a pass when all are).
    pub fn absent_list(&self) -> Vec<u32> {
        if self.absent_pages == 0 {
            return Vec::new();
        }
        self.present.pages(false).collect()
    }

    /// The words of one page.
    pub fn page(&self, page: u32) -> &[u64] {
        let pw = self.page_words();
        let s = page as usize * pw;
        &self.words[s..s + pw]
    }

    /// Marks a page absent (its content is elsewhere); touching it faults until
    /// [`Heap::supply_page`] provides it. Its words are not read meanwhile.
    pub fn mark_absent(&mut self, page: u32) {
        let p = page as usize;
        if self.present.set(p, false) == Some(true) {
            self.absent_pages += 1;
        }
    }

    /// Marks pages `from..to` absent (see [`Heap::mark_absent`]), pages past the heap
    /// left out: a word of the presence map at a time, not a pass per page.
    pub fn mark_absent_range(&mut self, from: u32, to: u32) {
        let (from, to) = (from as usize, to as usize);
        self.absent_pages += self.present.count_in(from, to, true) as u32;
        self.present.fill(from, to, false);
    }

    /// Installs a page from its little-endian bytes (see [`Heap::supply_page`]).
    pub fn supply_page_bytes(&mut self, page: u32, bytes: &[u8]) -> Result<(), HeapError> {
        let p = page as usize;
        let pw = self.page_words();
        if p >= self.present.len() || bytes.len() != pw * 8 {
            return Err(HeapError::Corrupt);
        }
        for (w, c) in self.words[p * pw..(p + 1) * pw].iter_mut().zip(bytes.chunks_exact(8)) {
            *w = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        }
        if self.present.set(p, true) == Some(false) {
            self.absent_pages -= 1;
        }
        Ok(())
    }

    /// Zeroes a page (present): a page whose content became all zero.
    pub fn zero_page(&mut self, page: u32) {
        let pw = self.page_words();
        let p = page as usize;
        if p < self.present.len() {
            self.words[p * pw..(p + 1) * pw].fill(0);
        }
    }

    /// Grows a heap to at least `pages` pages (new ones zero and present).
    pub fn ensure_pages(&mut self, pages: usize) -> Result<(), HeapError> {
        if pages * self.page_words() > self.limit_words.max(self.page_words()) + self.page_words() {
            return Err(HeapError::Limit);
        }
        self.grow_to(pages * self.page_words())
    }

    /// Takes on an image's heap settings and layout (`pages` pages, `top`), keeping the
    /// words already here (pages that came before the image). The page size must match.
    pub fn adopt_layout(&mut self, config: HeapConfig, pages: usize, top: usize) -> Result<(), HeapError> {
        if config.page_size_bytes / 8 != self.page_words() || pages < self.present.len() {
            return Err(HeapError::Corrupt);
        }
        let pw = self.page_words();
        if top < 1 || (top > pages * pw && !(pages == 0 && top == 1)) || pages * pw > config.limit_bytes / 8 + pw {
            return Err(HeapError::Corrupt);
        }
        // Grown first: a refusal changes nothing.
        self.grow_to(pages * pw)?;
        self.limit_words = config.limit_bytes / 8;
        self.gc_min_words = config.gc_min_bytes / 8;
        self.gc_threshold = self.gc_threshold.max(self.gc_min_words);
        // A heap handed over mid-allocation keeps the rest of its region (free lists).
        self.retire_region();
        self.top = top;
        self.bump = top;
        self.bump_end = usize::MAX;
        Ok(())
    }

    /// Installs a page's content and marks it present. Wrong sizes are refused.
    pub fn supply_page(&mut self, page: u32, data: &[u64]) -> Result<(), HeapError> {
        let p = page as usize;
        let pw = self.page_words();
        if p >= self.present.len() || data.len() != pw {
            return Err(HeapError::Corrupt);
        }
        self.words[p * pw..(p + 1) * pw].copy_from_slice(data);
        if self.present.set(p, true) == Some(false) {
            self.absent_pages -= 1;
        }
        Ok(())
    }

    /// A heap with `pages` pages and the given top, all zero and present; filled by
    /// [`Heap::supply_page`] when an image is restored.
    pub fn with_layout(config: HeapConfig, pages: usize, top: usize) -> Result<Heap, HeapError> {
        let mut heap = Heap::new(config);
        let pw = heap.page_words();
        if top < 1 || (top > pages * pw && !(pages == 0 && top == 1)) || pages * pw > heap.limit_words.max(pw) + pw {
            return Err(HeapError::Corrupt);
        }
        heap.grow_to(pages * pw)?;
        heap.top = top;
        heap.bump = top;
        Ok(heap)
    }

    /// Walks every object below the top, checking headers are sane; returns the set of
    /// object start addresses (one bit per word) for validating references.
    pub fn object_starts(&self) -> Result<Vec<u64>, HeapError> {
        let mut starts = Vec::new();
        try_room(&mut starts, self.top.div_ceil(64).max(1))?;
        starts.resize(self.top.div_ceil(64).max(1), 0u64);
        let mut a = 1usize;
        while a < self.top {
            let h = self.words[a];
            let size = header_size(h);
            let k = header_kind(h);
            if size == 0 || a + size > self.top || !(kind::FREE..=kind::BOX).contains(&k) {
                return Err(HeapError::Corrupt);
            }
            if k != kind::FREE {
                starts[a / 64] |= 1 << (a % 64);
            }
            a += size;
        }
        Ok(starts)
    }

    /// Raw read for validation and snapshots (no presence check).
    pub fn raw(&self, addr: usize) -> Option<u64> {
        self.words.get(addr).copied()
    }
}
