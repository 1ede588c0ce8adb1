//! [`PageBits`]: one bit per page of a heap (present here, sent, asked for), 64 to a
//! word. A 1 GiB heap has 262,144 pages: what the freeze does with such a map (fill the
//! absent ranges, count them, find them again as ranges) is done a word at a time, so it
//! costs microseconds, not a pass over a flag per page. The heap's own presence map
//! ([`crate::heap::Heap`]) and the migration machines' maps are this one type.
//!
//! (No crate here: the bit-set crates fill and count ranges, but none finds the runs of
//! a value as ranges a word at a time, which is what absence kept as ranges needs.)

/// A page index in a heap.
pub type PageNo = u32;
/// Pages `from..to`.
pub type PageRange = (PageNo, PageNo);

/// A fixed-size map of pages to bits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageBits {
    /// (A boxed slice, not a `Vec`: every process's heap carries one, and this keeps
    /// the map the 24 bytes a `Vec<bool>` took.)
    words: Box<[u64]>,
    len: usize,
}

impl PageBits {
    /// `len` pages, each `value`.
    pub fn new(len: usize, value: bool) -> PageBits {
        let mut b = PageBits { words: vec![if value { u64::MAX } else { 0 }; len.div_ceil(64)].into_boxed_slice(), len };
        b.trim();
        b
    }

    /// The bits of the last word that are pages.
    fn tail_mask(&self) -> u64 {
        match self.len % 64 {
            0 => u64::MAX,
            r => (1u64 << r) - 1,
        }
    }

    /// Clears the bits past `len` in the last word (every count and search relies on it).
    fn trim(&mut self) {
        let mask = self.tail_mask();
        if let Some(w) = self.words.last_mut() {
            *w &= mask;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Page `p`'s bit; `None` past the end.
    pub fn get(&self, p: usize) -> Option<bool> {
        (p < self.len).then(|| self.words[p / 64] >> (p % 64) & 1 == 1)
    }

    /// Sets page `p`'s bit to `value`; its value before (`None` past the end: nothing set).
    pub fn set(&mut self, p: usize, value: bool) -> Option<bool> {
        let was = self.get(p)?;
        let bit = 1u64 << (p % 64);
        if value {
            self.words[p / 64] |= bit;
        } else {
            self.words[p / 64] &= !bit;
        }
        Some(was)
    }

    /// Sets the bits of pages `a..b` (clamped to the end) to `value`.
    pub fn fill(&mut self, a: usize, b: usize, value: bool) {
        let b = b.min(self.len);
        if a >= b {
            return;
        }
        let (wa, wb) = (a / 64, (b - 1) / 64);
        let (head, tail) = (u64::MAX << (a % 64), u64::MAX >> (63 - (b - 1) % 64));
        let set = |w: &mut u64, mask: u64| {
            if value {
                *w |= mask
            } else {
                *w &= !mask
            }
        };
        if wa == wb {
            set(&mut self.words[wa], head & tail);
            return;
        }
        set(&mut self.words[wa], head);
        // The whole words between: a memset.
        self.words[wa + 1..wb].fill(if value { u64::MAX } else { 0 });
        set(&mut self.words[wb], tail);
    }

    /// Makes the map `len` pages long: pages past the old end get `value`, pages past
    /// the new end go. Memory is asked for fallibly (`Err` leaves the map as it was).
    pub fn try_resize(&mut self, len: usize, value: bool) -> Result<(), std::collections::TryReserveError> {
        let words = len.div_ceil(64);
        if words != self.words.len() {
            let mut v = std::mem::take(&mut self.words).into_vec();
            if words > v.len() {
                if let Err(e) = v.try_reserve_exact(words - v.len()) {
                    self.words = v.into_boxed_slice();
                    return Err(e);
                }
            }
            v.resize(words, 0);
            self.words = v.into_boxed_slice();
        }
        let old = self.len;
        self.len = len;
        if len > old {
            // The old last word's bits past `old` are clear (trimmed); fill them too.
            self.fill(old, len, value);
        }
        self.trim();
        Ok(())
    }

    /// How many pages of `a..b` (clamped to the end) have the bit `value`.
    pub fn count_in(&self, a: usize, b: usize, value: bool) -> usize {
        let b = b.min(self.len);
        if a >= b {
            return 0;
        }
        let (wa, wb) = (a / 64, (b - 1) / 64);
        let (head, tail) = (u64::MAX << (a % 64), u64::MAX >> (63 - (b - 1) % 64));
        let ones = if wa == wb {
            (self.words[wa] & head & tail).count_ones() as usize
        } else {
            let mid: u32 = self.words[wa + 1..wb].iter().map(|w| w.count_ones()).sum();
            (self.words[wa] & head).count_ones() as usize + mid as usize + (self.words[wb] & tail).count_ones() as usize
        };
        if value {
            ones
        } else {
            (b - a) - ones
        }
    }

    /// How many pages have the bit `value`.
    pub fn count(&self, value: bool) -> usize {
        let ones: usize = self.words.iter().map(|w| w.count_ones() as usize).sum();
        if value {
            ones
        } else {
            self.len - ones
        }
    }

    /// The word of pages `w*64..` with the bits of pages whose bit is `value` set (those
    /// past the end clear).
    fn word(&self, w: usize, value: bool) -> u64 {
        let x = if value { self.words[w] } else { !self.words[w] };
        if w + 1 == self.words.len() {
            x & self.tail_mask()
        } else {
            x
        }
    }

    /// The first page at or after `from` whose bit is `value`.
    pub fn next(&self, from: usize, value: bool) -> Option<usize> {
        if from >= self.len {
            return None;
        }
        let mut w = from / 64;
        let mut x = self.word(w, value) & (u64::MAX << (from % 64));
        loop {
            if x != 0 {
                let p = w * 64 + x.trailing_zeros() as usize;
                return (p < self.len).then_some(p);
            }
            w += 1;
            if w >= self.words.len() {
                return None;
            }
            x = self.word(w, value);
        }
    }

    /// The pages of `from..to` (clamped to the end) whose bit is `value`, as ranges in
    /// order: found a word at a time.
    pub fn runs(&self, from: usize, to: usize, value: bool) -> Vec<PageRange> {
        let to = to.min(self.len);
        let mut out = Vec::new();
        let mut p = from;
        while p < to {
            let Some(a) = self.next(p, value).filter(|&a| a < to) else { break };
            let b = self.next(a, !value).map_or(to, |b| b.min(to));
            out.push((a as PageNo, b as PageNo));
            p = b;
        }
        out
    }

    /// The pages whose bit is `value`, in order.
    pub fn pages(&self, value: bool) -> impl Iterator<Item = PageNo> + '_ {
        let mut p = 0;
        std::iter::from_fn(move || {
            let q = self.next(p, value)?;
            p = q + 1;
            Some(q as PageNo)
        })
    }

    /// Every bit turned over.
    pub fn not(&self) -> PageBits {
        let mut b = PageBits { words: self.words.iter().map(|w| !w).collect(), len: self.len };
        b.trim();
        b
    }
}

#[cfg(test)]
mod tests {
    use super::PageBits;
    use proptest::prelude::*;

    /// The runs of `value` in a flag per page, the obvious way.
    fn model_runs(flags: &[bool], from: usize, to: usize, value: bool) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = Vec::new();
        for (p, &f) in flags.iter().enumerate().take(to.min(flags.len())).skip(from) {
            if f == value {
                match out.last_mut() {
                    Some(last) if last.1 as usize == p => last.1 += 1,
                    _ => out.push((p as u32, p as u32 + 1)),
                }
            }
        }
        out
    }

    #[test]
    fn a_map_of_pages_fills_counts_and_finds_runs_across_word_edges() {
        let mut b = PageBits::new(200, false);
        b.fill(60, 130, true);
        assert_eq!(b.count(true), 70);
        assert_eq!(b.count(false), 130);
        assert_eq!(b.runs(0, 200, true), vec![(60, 130)]);
        assert_eq!(b.runs(0, 200, false), vec![(0, 60), (130, 200)]);
        assert_eq!(b.runs(64, 100, true), vec![(64, 100)]);
        assert_eq!(b.set(64, false), Some(true));
        assert_eq!(b.runs(0, 200, true), vec![(60, 64), (65, 130)]);
        assert_eq!(b.get(200), None);
        assert_eq!(b.set(200, true), None);
        assert_eq!(PageBits::new(130, true).count(true), 130);
        assert_eq!(PageBits::new(130, true).not().count(true), 0);
        assert_eq!(PageBits::new(0, true).runs(0, 10, true), vec![]);
    }

    proptest! {
        /// Against a flag per page: whatever fills and sets came before, the counts, the
        /// runs of either value over any window and the pages in order agree.
        #[test]
        fn a_map_of_pages_agrees_with_a_flag_per_page(
            len in 0usize..300,
            start in any::<bool>(),
            ops in prop::collection::vec((0usize..320, 0usize..320, any::<bool>(), any::<bool>()), 0..20),
            window in (0usize..320, 0usize..320),
        ) {
            let mut b = PageBits::new(len, start);
            let mut m = vec![start; len];
            for (x, y, value, one) in ops {
                if one {
                    prop_assert_eq!(b.set(x, value), m.get(x).copied());
                    if let Some(f) = m.get_mut(x) {
                        *f = value;
                    }
                } else {
                    b.fill(x.min(y), x.max(y), value);
                    for f in m.iter_mut().take(x.max(y)).skip(x.min(y)) {
                        *f = value;
                    }
                }
            }
            for value in [false, true] {
                prop_assert_eq!(b.count(value), m.iter().filter(|&&f| f == value).count());
                prop_assert_eq!(b.runs(window.0, window.1, value), model_runs(&m, window.0, window.1, value));
                let pages: Vec<u32> = b.pages(value).collect();
                let want: Vec<u32> = (0..len).filter(|&p| m[p] == value).map(|p| p as u32).collect();
                prop_assert_eq!(pages, want);
            }
            let n = b.not();
            prop_assert_eq!(n.count(true), m.iter().filter(|&&f| !f).count());
            let (x, y) = (window.0.min(window.1), window.0.max(window.1));
            for value in [false, true] {
                let want = m.iter().take(y).skip(x).filter(|&&f| f == value).count();
                prop_assert_eq!(b.count_in(x, y, value), want);
            }
            // Grown or shrunk, the pages kept keep their bits and new ones get the value.
            let mut r = b.clone();
            r.try_resize(window.0, !start).unwrap();
            let mut rm = m.clone();
            rm.resize(window.0, !start);
            let got: Vec<bool> = (0..window.0).map(|p| r.get(p).unwrap()).collect();
            prop_assert_eq!(got, rm.clone());
            prop_assert_eq!(r.count(true), rm.iter().filter(|&&f| f).count());
        }
    }
}
