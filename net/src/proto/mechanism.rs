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
    pub mechanism: Option<Mechanism>,
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
    pub fn mechanism(m: Option<Mechanism>) -> How {
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
    /// Rounds of (dirty) pages while running, then freeze and send the rest. The default
    /// of a mesh whose mesh.toml names none.
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

#[cfg(test)]
mod tests {
    use super::*;

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
