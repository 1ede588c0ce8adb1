//! The results table of the `procs` and `remote` suites: one row per measure with
//! Tern's value, Erlang's, their ratio (`tern/erlang`) and, for some rows, a target on
//! that ratio that is met (`pass`) or not (`FAIL`).

use crate::report;

/// The languages compared, one column each.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Lang {
    Tern,
    Erlang,
}

impl Lang {
    pub fn name(self) -> &'static str {
        match self {
            Lang::Tern => "tern",
            Lang::Erlang => "erlang",
        }
    }
}

/// Why a program's runs under one language gave no value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Failure {
    Failed,
    Timeout,
}

/// A value in the table, or why there is none.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Cell {
    Value(f64),
    Failed,
    Timeout,
    /// The language is not installed.
    Skipped,
    /// Not measured (e.g. the peak RSS is unknown on this OS).
    Unknown,
}

impl Cell {
    /// The cell of a (program, language) whose runs stopped with `failure`.
    pub fn failed(failure: Failure) -> Cell {
        match failure {
            Failure::Failed => Cell::Failed,
            Failure::Timeout => Cell::Timeout,
        }
    }

    fn label(self, decimals: usize) -> String {
        match self {
            Cell::Value(v) => format!("{v:.decimals$}"),
            Cell::Failed => "FAILED".into(),
            Cell::Timeout => "TIMEOUT".into(),
            Cell::Skipped => "skipped".into(),
            Cell::Unknown => "unknown".into(),
        }
    }
}

/// Which way a measure is better, and the target on Tern's value divided by Erlang's.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Target {
    /// Lower is better (a time, a size): the ratio must be at most this.
    AtMost(f64),
    /// Higher is better (a rate): the ratio must be at least this.
    AtLeast(f64),
}

impl Target {
    fn met(self, ratio: f64) -> bool {
        match self {
            Target::AtMost(t) => ratio <= t,
            Target::AtLeast(t) => ratio >= t,
        }
    }

    /// `≤ 2×`, `≥ 1×`.
    fn label(self) -> String {
        match self {
            Target::AtMost(t) => format!("≤ {t}×"),
            Target::AtLeast(t) => format!("≥ {t}×"),
        }
    }
}

/// One row of the table: a measure, its value under each language, how many decimals
/// they are shown with, and the target on their ratio, if there is one.
pub struct Row {
    pub label: String,
    pub tern: Cell,
    pub erlang: Cell,
    pub decimals: usize,
    pub target: Option<Target>,
}

impl Row {
    /// Tern's value divided by Erlang's, when both are there.
    pub fn ratio(&self) -> Option<f64> {
        match (self.tern, self.erlang) {
            (Cell::Value(t), Cell::Value(e)) if e > 0.0 => Some(t / e),
            _ => None,
        }
    }

    pub fn ratio_label(&self) -> String {
        self.ratio().map_or_else(|| "-".to_string(), |r| format!("{r:.2}"))
    }

    pub fn target_label(&self) -> String {
        self.target.map_or_else(String::new, Target::label)
    }

    /// Whether the target is met; `None` without a target or a ratio.
    pub fn verdict(&self) -> Option<bool> {
        Some(self.target?.met(self.ratio()?))
    }

    /// The `met` column: `pass`, `FAIL`, `-` (no ratio) or nothing (no target).
    fn met_label(&self) -> String {
        match (self.target, self.verdict()) {
            (None, _) => String::new(),
            (Some(_), Some(true)) => "pass".into(),
            (Some(_), Some(false)) => "FAIL".into(),
            (Some(_), None) => "-".into(),
        }
    }
}

/// The markdown table: one row per measure.
pub fn render(rows: &[Row]) -> String {
    let headers: Vec<String> = ["measure", "tern", "erlang", "tern/erlang", "target", "met"].iter().map(|h| h.to_string()).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.label.clone(),
                row.tern.label(row.decimals),
                row.erlang.label(row.decimals),
                row.ratio_label(),
                row.target_label(),
                row.met_label(),
            ]
        })
        .collect();
    report::markdown_table(&headers, &body)
}

/// Lists the rows whose target is missed on stderr (a missed target does not fail the
/// run).
pub fn report_missed(rows: &[Row]) {
    let missed: Vec<&Row> = rows.iter().filter(|r| r.verdict() == Some(false)).collect();
    if !missed.is_empty() {
        eprintln!("\ntarget(s) missed:");
        for row in missed {
            eprintln!("- {}: tern/erlang {}, target {}", row.label, row.ratio_label(), row.target_label());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tern: Cell, erlang: Cell, decimals: usize, target: Option<Target>) -> Row {
        Row { label: "m".into(), tern, erlang, decimals, target }
    }

    #[test]
    fn verdicts_go_both_ways() {
        let v = |t, e, target| row(Cell::Value(t), Cell::Value(e), 2, target).verdict();
        assert_eq!(v(1.0, 1.0, Some(Target::AtMost(1.0))), Some(true));
        assert_eq!(v(2.0, 1.0, Some(Target::AtMost(2.0))), Some(true));
        assert_eq!(v(2.1, 1.0, Some(Target::AtMost(2.0))), Some(false));
        assert_eq!(v(0.9, 1.0, Some(Target::AtLeast(1.0))), Some(false));
        assert_eq!(v(1.2, 1.0, Some(Target::AtLeast(1.0))), Some(true));
        assert_eq!(v(1.2, 1.0, None), None);
        assert_eq!(row(Cell::Timeout, Cell::Value(1.0), 2, Some(Target::AtMost(2.0))).verdict(), None);
        assert_eq!(row(Cell::Value(1.0), Cell::Value(0.0), 2, Some(Target::AtMost(2.0))).verdict(), None);
    }

    #[test]
    fn cells_of_failures() {
        assert_eq!(Cell::failed(Failure::Failed), Cell::Failed);
        assert_eq!(Cell::failed(Failure::Timeout), Cell::Timeout);
    }

    #[test]
    fn table_renders_every_cell_state() {
        let rows = [
            row(Cell::Value(41.614), Cell::Value(14.16), 2, Some(Target::AtMost(2.0))),
            row(Cell::Value(823631.0), Cell::Value(809169.0), 0, Some(Target::AtLeast(1.0))),
            row(Cell::Value(3.8), Cell::Unknown, 1, None),
            row(Cell::Failed, Cell::Skipped, 3, Some(Target::AtMost(1.0))),
            row(Cell::Timeout, Cell::Value(1.0), 3, None),
        ];
        let expected = "\
| measure |    tern |  erlang | tern/erlang | target |  met |
|---------|--------:|--------:|------------:|-------:|-----:|
| m       |   41.61 |   14.16 |        2.94 |   ≤ 2× | FAIL |
| m       |  823631 |  809169 |        1.02 |   ≥ 1× | pass |
| m       |     3.8 | unknown |           - |        |      |
| m       |  FAILED | skipped |           - |   ≤ 1× |    - |
| m       | TIMEOUT |   1.000 |           - |        |      |
";
        assert_eq!(render(&rows), expected);
    }
}
