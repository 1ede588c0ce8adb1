//! How a live migration moves a process's address space: the one [`Mechanism`] type
//! that mesh.toml (`mesh.migration`), `tern ctl migrate --mechanism`, the REPL's
//! `:migrate`, the wire (operator requests, questions between nodes, reports) and the
//! migration machines (`migrate.rs`) all carry.
//!
//! Its names are written out once, in [`Mechanism::name`]: parsing ([`FromStr`]),
//! printing ([`Display`]), serde (the lowercase variant name, the same word: a unit
//! test holds them together) and every help text or error listing them derive from it.
//! A name is parsed once, where it comes in (command line, config file, REPL line);
//! everything after that carries the enum.

use serde::{Deserialize, Serialize};
use std::fmt::{self, Display};
use std::str::FromStr;
pub use tern_vm::node::Forwarding;

/// How one migration moves a process: how its address space travels and how messages
/// find it afterwards (`None`: the mesh's default, `mesh.migration`/`mesh.forwarding`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct How {
    pub mechanism: Option<Choice>,
    pub forwarding: Option<Forwarding>,
    /// Move the process's whole coprocess group (every member, in one migration).
    pub group: bool,
    /// A load policy's move: the destination takes the process only if that leaves it
    /// no busier than the source ([`Admit`]).
    pub admit: Option<Admit>,
}

/// What a load policy's move asks of its destination: to take the process only if, with
/// it, the destination's run queue per worker stays at most this (for balance, the
/// source's without it: `proto::policy::Policy::admit`). So two nodes that move work to
/// one idle node at once do not both send it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admit {
    /// The most CPU demand per worker the destination may have with the process, times
    /// 100.
    pub max_load_x100: u32,
    /// The process's own demand (the fraction of a worker it would use alone), times 100.
    pub demand_x100: u32,
}

impl How {
    pub fn mechanism(m: Option<Choice>) -> How {
        How { mechanism: m, ..How::default() }
    }

    /// Parses the optional names a command line or a REPL line gives.
    pub fn parse(mechanism: Option<&str>, forwarding: Option<&str>) -> Result<How, String> {
        Ok(How { mechanism: mechanism.map(str::parse).transpose()?, forwarding: forwarding.map(str::parse).transpose()?, ..How::default() })
    }
}

/// How the address space moves.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    /// Freeze, send everything with the state, resume at the dest.
    Freeze,
    /// Rounds of (dirty) pages while running, then freeze and send the rest.
    #[default]
    Precopy,
    /// Freeze, send the state only, resume at once; pages fetched on fault and pushed.
    Lazy,
    /// Precopy rounds, then lazy for what remains.
    Hybrid,
}

impl Mechanism {
    pub const ALL: [Mechanism; 4] = [Mechanism::Freeze, Mechanism::Precopy, Mechanism::Lazy, Mechanism::Hybrid];

    /// Its name, as people type it and as it is printed.
    pub const fn name(self) -> &'static str {
        match self {
            Mechanism::Freeze => "freeze",
            Mechanism::Precopy => "precopy",
            Mechanism::Lazy => "lazy",
            Mechanism::Hybrid => "hybrid",
        }
    }

    /// Every name joined by `sep`, in [`Mechanism::ALL`] order (for usage lines).
    pub fn names(sep: &str) -> String {
        Mechanism::ALL.map(Mechanism::name).join(sep)
    }

    /// Every name as a sentence lists them: `a, b, c or d`.
    pub fn listed() -> String {
        let names = Mechanism::ALL.map(Mechanism::name);
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }

    /// Whether it sends pages in rounds while the process runs.
    pub(crate) fn rounds(self) -> bool {
        matches!(self, Mechanism::Precopy | Mechanism::Hybrid)
    }

    /// Whether the process may resume with pages still on the source.
    pub(crate) fn lazy(self) -> bool {
        matches!(self, Mechanism::Lazy | Mechanism::Hybrid)
    }
}

impl FromStr for Mechanism {
    type Err = String;

    fn from_str(s: &str) -> Result<Mechanism, String> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown migration mechanism {s:?} (expected {})", Mechanism::listed()))
    }
}

impl Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a migration asks for: a mechanism by name, or `auto` — the source picks one
/// for each move from what it measures ([`choose`]). The default of every migration
/// (`mesh.migration`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Choice {
    #[default]
    Auto,
    Use(Mechanism),
}

impl Choice {
    /// Every name as a sentence lists them: `auto, a, b, c or d`.
    pub fn listed() -> String {
        format!("auto, {}", Mechanism::listed())
    }

    /// Every name joined by `sep` (for usage lines).
    pub fn names(sep: &str) -> String {
        format!("auto{sep}{}", Mechanism::names(sep))
    }
}

impl From<Mechanism> for Choice {
    fn from(m: Mechanism) -> Choice {
        Choice::Use(m)
    }
}

impl FromStr for Choice {
    type Err = String;

    fn from_str(s: &str) -> Result<Choice, String> {
        if s == "auto" {
            return Ok(Choice::Auto);
        }
        s.parse::<Mechanism>().map(Choice::Use).map_err(|_| format!("unknown migration mechanism {s:?} (expected {})", Choice::listed()))
    }
}

impl Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Choice::Auto => f.write_str("auto"),
            Choice::Use(m) => m.fmt(f),
        }
    }
}

/// What `auto` knows of a move ([`choose`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// The heap (of every process that moves), bytes.
    pub heap_bytes: u64,
    /// Bytes of pages written per second (`None`: not measured yet).
    pub write_bytes_s: Option<u64>,
    /// The link's speed to the destination, bytes per second.
    pub link_bytes_s: u64,
    /// Where that speed comes from: `measured` (the last migration there), `capped`
    /// (the migration bandwidth cap) or `assumed`.
    pub link_from: &'static str,
    /// How often the dirty pages behind `write_bytes_s` are counted, µs (0: unknown): a
    /// count sees a page once however often it was written in between.
    pub sample_us: u64,
    /// The freeze time pre-copy aims at, µs, and its most rounds.
    pub freeze_budget_us: u64,
    pub max_rounds: u32,
}

/// What `auto` picked, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picked {
    pub mechanism: Mechanism,
    /// A pre-copy that stops converging sends what is left after the resume (post-copy)
    /// instead of with the frozen process.
    pub fallback: bool,
    pub why: String,
}

/// The link speed `auto` assumes before anything was measured to a node, bytes per
/// second (low for loopback, about right for a gigabit link).
pub const ASSUMED_LINK_BYTES_S: u64 = 100 << 20;

/// Picks the mechanism of one move:
/// - **freeze** when the whole heap crosses the link within the freeze budget (nothing
///   to gain from sending it while the process runs);
/// - **precopy** when its dirty set would shrink below what the budget carries within
///   the round limit (each round lasts as long as the last one's pages take, and the
///   process dirties its write rate times that), or when the write rate is not
///   measured yet; with post-copy as the fallback when it stops converging all the
///   same;
/// - **hybrid** when it would not converge: rounds while it runs, then post-copy for
///   the pages it keeps writing;
/// - **lazy** when it writes at least twice as fast as the link: a round would be
///   written over before it ended.
pub fn choose(s: &Sizes) -> Picked {
    let link = s.link_bytes_s.max(1);
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    let budget_bytes = (u128::from(link) * u128::from(s.freeze_budget_us) / 1_000_000) as u64;
    let link_text = format!("the {} link's {:.0} MiB/s", s.link_from, mib(link));
    if s.heap_bytes <= budget_bytes {
        return Picked {
            mechanism: Mechanism::Freeze,
            fallback: false,
            why: format!(
                "a small heap: its {} KiB cross {link_text} within the {} µs freeze budget",
                s.heap_bytes / 1024,
                s.freeze_budget_us
            ),
        };
    }
    let Some(w) = s.write_bytes_s else {
        return Picked {
            mechanism: Mechanism::Precopy,
            fallback: true,
            why: format!(
                "its write rate is not measured yet: pre-copy of {:.1} MiB over {link_text}, post-copy for the rest if it stops converging",
                mib(s.heap_bytes)
            ),
        };
    };
    // Its whole heap dirtied within one count of its dirty pages: the real rate may be far
    // higher than measured, and no round would shrink what is left to send.
    if s.sample_us > 0 && u128::from(w) * u128::from(s.sample_us) >= u128::from(s.heap_bytes) * 900_000 {
        return Picked {
            mechanism: Mechanism::Hybrid,
            fallback: false,
            why: format!(
                "it writes all over its heap: nearly all of its {:.1} MiB is dirtied within one {} ms count of its dirty pages (at least {:.1} MiB/s), so pre-copy over {link_text} would not converge; hybrid sends it while it runs, and what it keeps writing after the resume",
                mib(s.heap_bytes),
                s.sample_us / 1000,
                mib(w)
            ),
        };
    }
    if w >= link.saturating_mul(2) {
        return Picked {
            mechanism: Mechanism::Lazy,
            fallback: false,
            why: format!(
                "it writes {:.1} MiB/s, at least twice {link_text}: a pre-copy round would be written over before it ended",
                mib(w)
            ),
        };
    }
    // Each round takes its pages' time on the link; the next is what the process
    // writes meanwhile (at most the heap).
    let mut dirty = s.heap_bytes as f64;
    let mut rounds = 0;
    while dirty > budget_bytes as f64 && rounds < s.max_rounds {
        dirty = (dirty * w as f64 / link as f64).min(s.heap_bytes as f64);
        rounds += 1;
    }
    if dirty <= budget_bytes as f64 {
        Picked {
            mechanism: Mechanism::Precopy,
            fallback: true,
            why: format!(
                "it writes {:.1} MiB/s against {link_text}: pre-copy of {:.1} MiB converges in about {} round(s), post-copy for the rest if it does not",
                mib(w),
                mib(s.heap_bytes),
                rounds.max(1)
            ),
        }
    } else {
        Picked {
            mechanism: Mechanism::Hybrid,
            fallback: false,
            why: format!(
                "it writes {:.1} MiB/s against {link_text}: pre-copy of {:.1} MiB would not converge within {} rounds; hybrid sends it while it runs, and what it keeps writing after the resume",
                mib(w),
                mib(s.heap_bytes),
                s.max_rounds
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(heap_bytes: u64, write: Option<u64>, link: u64) -> Sizes {
        Sizes {
            heap_bytes,
            write_bytes_s: write,
            link_bytes_s: link,
            link_from: "measured",
            sample_us: 0,
            freeze_budget_us: 1_000,
            max_rounds: 10,
        }
    }

    #[test]
    fn auto_picks_by_heap_write_rate_and_link() {
        let mib = 1u64 << 20;
        // 100 KiB at 100 MiB/s: 1 ms.
        let p = choose(&sizes(64 * 1024, Some(50 * mib), 100 * mib));
        assert_eq!((p.mechanism, p.fallback), (Mechanism::Freeze, false), "{}", p.why);
        assert!(p.why.contains("small heap"), "{}", p.why);
        let p = choose(&sizes(256 * mib, Some(0), 100 * mib));
        assert_eq!((p.mechanism, p.fallback), (Mechanism::Precopy, true), "{}", p.why);
        let p = choose(&sizes(256 * mib, None, 100 * mib));
        assert_eq!((p.mechanism, p.fallback), (Mechanism::Precopy, true), "{}", p.why);
        assert!(p.why.contains("not measured"), "{}", p.why);
        // Writes a fifth of the link: 256 MiB shrinks by 5x a round, under 100 KiB in 5.
        let p = choose(&sizes(256 * mib, Some(20 * mib), 100 * mib));
        assert_eq!(p.mechanism, Mechanism::Precopy, "{}", p.why);
        // Writes 80% of the link: never within 10 rounds.
        let p = choose(&sizes(256 * mib, Some(80 * mib), 100 * mib));
        assert_eq!(p.mechanism, Mechanism::Hybrid, "{}", p.why);
        assert!(p.why.contains("would not converge"), "{}", p.why);
        let p = choose(&sizes(256 * mib, Some(250 * mib), 100 * mib));
        assert_eq!(p.mechanism, Mechanism::Lazy, "{}", p.why);
        // A zero link speed is no division by zero.
        let p = choose(&sizes(256 * mib, Some(2), 0));
        assert_eq!(p.mechanism, Mechanism::Lazy, "{}", p.why);
        // 4 MiB all dirtied within a 20 ms count (196 MiB/s measured, the most such a
        // count can see): not pre-copy, however fast the link; the same rate over a
        // large heap is a rate like any other.
        let saturated = Sizes { sample_us: 20_000, ..sizes(4 * mib, Some(196 * mib), 295 * mib) };
        let p = choose(&saturated);
        assert_eq!(p.mechanism, Mechanism::Hybrid, "{}", p.why);
        assert!(p.why.contains("all over its heap"), "{}", p.why);
        let p = choose(&Sizes { sample_us: 20_000, ..sizes(256 * mib, Some(20 * mib), 100 * mib) });
        assert_eq!(p.mechanism, Mechanism::Precopy, "{}", p.why);
    }

    #[test]
    fn choices_parse_and_print() {
        assert_eq!("auto".parse::<Choice>(), Ok(Choice::Auto));
        for m in Mechanism::ALL {
            assert_eq!(m.name().parse::<Choice>(), Ok(Choice::Use(m)));
            assert_eq!(Choice::Use(m).to_string(), m.name());
        }
        assert_eq!(Choice::default(), Choice::Auto);
        let e = "teleport".parse::<Choice>().unwrap_err();
        assert_eq!(e, r#"unknown migration mechanism "teleport" (expected auto, freeze, precopy, lazy or hybrid)"#);
    }

    #[test]
    fn names_parse_print_and_serialise_alike() {
        for m in Mechanism::ALL {
            assert_eq!(m.name().parse::<Mechanism>(), Ok(m));
            assert_eq!(m.to_string(), m.name());
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{}\"", m.name()));
            assert_eq!(serde_json::from_str::<Mechanism>(&format!("\"{m}\"")).unwrap(), m);
        }
        assert_eq!(Mechanism::listed(), "freeze, precopy, lazy or hybrid");
        assert_eq!(Mechanism::names("|"), "freeze|precopy|lazy|hybrid");
    }

    #[test]
    fn an_unknown_name_is_a_clear_error() {
        let e = "teleport".parse::<Mechanism>().unwrap_err();
        assert_eq!(e, r#"unknown migration mechanism "teleport" (expected freeze, precopy, lazy or hybrid)"#);
        assert!("Lazy".parse::<Mechanism>().is_err());
        assert!("".parse::<Mechanism>().is_err());
    }
}
