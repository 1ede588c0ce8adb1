//! Whether a migration's frames of pages go compressed (lz4 blocks, `wire::lz4_frame`),
//! decided frame by frame from what this migration measures: how fast its frames
//! compress, how much, and the link's speed ([`Compressor`]). Sans-IO: the host
//! compresses and times, the machine here decides.
//!
//! A frame is sent compressed when doing so shortens the time it takes even if the
//! compressing did not overlap the sending at all: compressing `n` bytes at `c` bytes/s
//! then sending `r·n` at the link's `L` must beat sending `n` at `L`, that is
//! `c·(1 − r) > L`, with `c` and `r` this migration's running figures. A heap of
//! repeated values (`r` near 0, `c` of gigabytes a second) goes compressed on any link;
//! random contents (`r` ≥ 1) or text on a fast link (`c` of a few hundred MB/s, `r` about
//! 0.6, against a loopback link of 600 MB/s) go as they are. A frame that did not pay
//! makes the next ones go uncompressed without trying, 1, 2, 4, … up to
//! [`MAX_BACKOFF`] frames, then one is tried again: contents change along a heap.

/// The most frames sent without trying to compress them after a frame that did not pay.
pub const MAX_BACKOFF: u32 = 64;

/// A frame that shrinks by less than this share (1/8) is sent as it is whatever the speeds.
const MIN_SAVING_DIV: usize = 8;

/// The running figures of one migration's compression, and the decision.
#[derive(Debug, Clone)]
pub struct Compressor {
    enabled: bool,
    /// The link's speed, bytes/s (measured by the last migration to that node, the
    /// bandwidth cap, or assumed: `Host::link_speed`).
    link_bytes_s: u64,
    /// Compression speed, bytes/s, and the compressed share (after / before): running
    /// averages over the frames tried, each new frame weighing 1/4.
    speed_bytes_s: f64,
    ratio: f64,
    tried: u64,
    skip: u32,
    backoff: u32,
    /// What went compressed: the frames' bytes before and after.
    pub raw_bytes: u64,
    pub sent_bytes: u64,
    /// Frames tried that went as they were.
    pub refused: u64,
}

impl Compressor {
    pub fn new(enabled: bool, link_bytes_s: u64) -> Compressor {
        Compressor {
            enabled,
            link_bytes_s: link_bytes_s.max(1),
            speed_bytes_s: 0.0,
            ratio: 1.0,
            tried: 0,
            skip: 0,
            backoff: 0,
            raw_bytes: 0,
            sent_bytes: 0,
            refused: 0,
        }
    }

    /// Whether to try compressing the next frame.
    pub fn wants(&mut self) -> bool {
        if !self.enabled {
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// A frame of `raw` bytes compressed to `out` bytes in `nanos` ns: whether it goes
    /// compressed (see the module's rule).
    pub fn compressed(&mut self, raw: usize, out: usize, nanos: u64) -> bool {
        if raw == 0 {
            return false;
        }
        let speed = raw as f64 * 1e9 / nanos.max(1) as f64;
        let ratio = out as f64 / raw as f64;
        if self.tried == 0 {
            (self.speed_bytes_s, self.ratio) = (speed, ratio);
        } else {
            self.speed_bytes_s += (speed - self.speed_bytes_s) / 4.0;
            self.ratio += (ratio - self.ratio) / 4.0;
        }
        self.tried += 1;
        let saves = out <= raw - raw / MIN_SAVING_DIV;
        let pays = saves && self.speed_bytes_s * (1.0 - self.ratio.min(1.0)) > self.link_bytes_s as f64;
        if pays {
            self.backoff = 0;
            self.raw_bytes += raw as u64;
            self.sent_bytes += out as u64;
        } else {
            self.backoff = (self.backoff * 2).clamp(1, MAX_BACKOFF);
            self.skip = self.backoff;
            self.refused += 1;
        }
        pays
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    #[test]
    fn repeated_contents_go_compressed_on_a_fast_link() {
        let mut c = Compressor::new(true, 600 * MB);
        // 256 KiB to 1 KiB in 50 µs: 5 GB/s, a ratio of 1/256.
        for _ in 0..10 {
            assert!(c.wants());
            assert!(c.compressed(256 << 10, 1 << 10, 50_000));
        }
        assert_eq!(c.refused, 0);
        assert_eq!(c.raw_bytes, 10 * (256 << 10));
        assert_eq!(c.sent_bytes, 10 * (1 << 10));
    }

    #[test]
    fn text_goes_compressed_on_a_slow_link_only() {
        // 300 MB/s, ratio 0.6: it pays when the link is below 120 MB/s.
        let mut slow = Compressor::new(true, 100 * MB);
        assert!(slow.compressed(300_000, 180_000, 1_000_000));
        let mut fast = Compressor::new(true, 600 * MB);
        assert!(!fast.compressed(300_000, 180_000, 1_000_000));
    }

    #[test]
    fn a_frame_that_does_not_pay_backs_off_then_tries_again() {
        let mut c = Compressor::new(true, 100 * MB);
        // Random contents: they grow.
        assert!(c.wants());
        assert!(!c.compressed(1000, 1004, 100));
        let mut skipped = 0;
        while !c.wants() {
            skipped += 1;
        }
        assert_eq!(skipped, 1);
        assert!(!c.compressed(1000, 1004, 100));
        skipped = 0;
        while !c.wants() {
            skipped += 1;
        }
        assert_eq!(skipped, 2);
        // Backing off stops doubling at the most.
        for _ in 0..20 {
            assert!(!c.compressed(1000, 1004, 100));
            while !c.wants() {}
        }
        assert!(!c.compressed(1000, 1004, 100));
        skipped = 0;
        while !c.wants() {
            skipped += 1;
        }
        assert_eq!(skipped, MAX_BACKOFF);
        // Contents that compress again are taken up again (the running ratio follows).
        let mut taken = false;
        for _ in 0..8 {
            while !c.wants() {}
            taken |= c.compressed(1000, 10, 100);
        }
        assert!(taken);
    }

    #[test]
    fn a_small_saving_is_not_taken_and_off_is_off() {
        let mut c = Compressor::new(true, 1);
        assert!(!c.compressed(1000, 900, 1));
        let mut off = Compressor::new(false, 1);
        assert!(!off.wants());
    }
}
