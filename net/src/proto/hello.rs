//! What two nodes say first on a new connection, before any session packet: the
//! versions of what they will say after it and the features they have. Its layout is
//! fixed (16 bytes: `TERN`, then the wire, frame and image versions and a feature set),
//! the same in every version of Tern, so that any two nodes can read each other's and a
//! node of an incompatible version is refused with a message naming both versions,
//! instead of failing on its first packet.

use crate::proto::session::WIRE_VERSION;
use crate::proto::wire::FRAME_VERSION;
use tern_vm::snapshot::IMAGE_VERSION;

/// The hello's length, in bytes.
pub const HELLO_LEN: usize = 16;

const MAGIC: [u8; 4] = *b"TERN";

/// What this version has beyond what its versions say, one bit each, with names for
/// messages. A node takes every feature set: a feature one side lacks is left unused
/// between the two (none is required yet).
pub const FEATURES: &[(u64, &str)] = &[
    (1 << 0, "link-update"),
    (1 << 1, "resend"),
    (1 << 2, "origin-site"),
    (1 << 3, "link-traversal"),
    (1 << 4, "coprocess-groups"),
    (1 << 5, "read-ahead"),
    (1 << 6, "console-input"),
];

/// A node's versions and features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The session packets' version (`session::WIRE_VERSION`).
    pub wire: u8,
    /// The frames' version (`wire::FRAME_VERSION`).
    pub frame: u8,
    /// The process images' version (`tern_vm::snapshot::IMAGE_VERSION`).
    pub image: u16,
    /// Bits of [`FEATURES`] (and perhaps others, of a newer version).
    pub features: u64,
}

impl Hello {
    /// This node's.
    pub fn ours() -> Hello {
        Hello { wire: WIRE_VERSION, frame: FRAME_VERSION, image: IMAGE_VERSION, features: FEATURES.iter().fold(0, |a, (bit, _)| a | bit) }
    }

    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = self.wire;
        b[5] = self.frame;
        b[6..8].copy_from_slice(&self.image.to_le_bytes());
        b[8..].copy_from_slice(&self.features.to_le_bytes());
        b
    }

    /// A hello from its bytes; an error if they are not one (not a Tern node, or one
    /// older than hellos).
    pub fn decode(b: &[u8; HELLO_LEN]) -> Result<Hello, String> {
        if b[..4] != MAGIC {
            return Err("it did not open with a Tern hello (not a Tern node, or one of a version older than hellos)".into());
        }
        Ok(Hello {
            wire: b[4],
            frame: b[5],
            image: u16::from_le_bytes([b[6], b[7]]),
            features: u64::from_le_bytes(b[8..].try_into().expect("8 bytes")),
        })
    }

    /// Whether a node with this hello can talk with one with `theirs`: the same wire,
    /// frame and image versions (each side's decoders take their own version only).
    pub fn compatible(&self, theirs: &Hello) -> bool {
        (self.wire, self.frame, self.image) == (theirs.wire, theirs.frame, theirs.image)
    }

    /// Its versions and features, in words: `wire 2, frame 16, image 10 (features:
    /// link-update, ...)`.
    pub fn text(&self) -> String {
        let mut names: Vec<String> = FEATURES.iter().filter(|(bit, _)| self.features & bit != 0).map(|(_, n)| n.to_string()).collect();
        let unknown = self.features & !FEATURES.iter().fold(0, |a, (bit, _)| a | bit);
        if unknown != 0 {
            names.push(format!("others unknown here: {unknown:#x}"));
        }
        format!("wire {}, frame {}, image {} (features: {})", self.wire, self.frame, self.image, names.join(", "))
    }
}

/// Why two nodes cannot talk, naming both versions.
pub fn incompatible(me: &str, ours: &Hello, peer: &str, theirs: &Hello) -> String {
    format!("node {peer} speaks {}; node {me} speaks {}: they are of incompatible Tern versions", theirs.text(), ours.text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_round_trips_and_a_future_one_is_read_but_not_compatible() {
        let ours = Hello::ours();
        assert_eq!(Hello::decode(&ours.encode()), Ok(ours));
        assert!(ours.compatible(&ours));
        let future = Hello { wire: ours.wire + 1, features: ours.features | 1 << 40, ..ours };
        let back = Hello::decode(&future.encode()).unwrap();
        assert_eq!(back, future);
        assert!(!ours.compatible(&back));
        let why = incompatible("a", &ours, "b", &back);
        assert!(why.starts_with(&format!("node b speaks wire {}, frame {FRAME_VERSION}", WIRE_VERSION + 1)), "{why}");
        assert!(why.contains(&format!("; node a speaks wire {WIRE_VERSION}, frame {FRAME_VERSION}, image {IMAGE_VERSION}")), "{why}");
        assert!(why.contains("others unknown here: 0x10000000000"), "{why}");
        let mut junk = ours.encode();
        junk[0] = b'X';
        assert!(Hello::decode(&junk).unwrap_err().contains("did not open with a Tern hello"));
    }
}
