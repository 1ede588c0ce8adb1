//! How the operator's commands print what nodes answer: the `nodes` and `ps` tables
//! (and their JSON), a migration's report as a table.

use crate::proto::wire::{MigReport, NodeRow, PsRow};
use serde_json::json;
use tern_vm::value::name_text;

pub fn nodes_table(rows: &[NodeRow]) -> String {
    let mut s =
        format!("{:<10} {:<22} {:<6} {:>9} {:>12} {:>10}\n", "NODE", "ADDRESS", "STATUS", "PROCESSES", "REDUCTIONS/S", "MIGRATIONS");
    for r in rows {
        s += &format!("{:<10} {:<22} {:<6} {:>9} {:>12} {:>10}\n", r.name, r.addr, r.status, r.processes, r.load, r.migrations);
    }
    s
}

pub fn ps_table(rows: &[PsRow]) -> String {
    let mut s = format!("{:<12} {:<10} {:<8} {:>12} {:>10} {:>8}\n", "PID", "NODE", "STATUS", "REDUCTIONS", "HEAP PAGES", "MAILBOX");
    for r in rows {
        s += &format!(
            "{:<12} {:<10} {:<8} {:>12} {:>10} {:>8}\n",
            name_text(r.pid),
            r.node,
            r.status,
            r.reductions,
            r.heap_pages,
            r.mailbox
        );
    }
    s
}

pub fn ps_json(rows: &[PsRow]) -> serde_json::Value {
    json!(rows
        .iter()
        .map(|r| json!({"pid": name_text(r.pid), "node": r.node, "status": r.status, "reductions": r.reductions,
            "heap_pages": r.heap_pages, "mailbox": r.mailbox}))
        .collect::<Vec<_>>())
}

pub fn nodes_json(rows: &[NodeRow]) -> serde_json::Value {
    json!(rows
        .iter()
        .map(|r| json!({"name": r.name, "addr": r.addr, "status": r.status, "processes": r.processes, "load": r.load,
            "migrations": r.migrations}))
        .collect::<Vec<_>>())
}

/// Why the pre-copy rounds stopped, in plain words, from the report's `stop_reason`
/// (the name of `proto::migrate::StopReason` it carries, as in `--json`).
pub fn stop_reason_text(reason: &str) -> String {
    match reason {
        "Converged" => "converged: what was still dirty fit in the freeze-time budget".into(),
        "NotShrinking" => "the dirty set stopped shrinking, even with the process slowed down".into(),
        "RoundLimit" => "the round limit was reached".into(),
        "NoRounds" => "there were no rounds".into(),
        other => other.into(),
    }
}

/// What `throttle_level` means, in plain words.
fn throttle_text(level: u32) -> String {
    match level {
        0 => "0 (the process ran at full speed)".into(),
        l => format!("{l} (the process was slowed to run 1/{} of the time)", 1u64 << l.min(63)),
    }
}

/// Prints a report as a table.
pub fn report_table(r: &MigReport) -> String {
    report_rows(r, false)
}

/// Prints a report as a table, with a sentence under each line a newcomer may not
/// understand (what the rounds, the throttle, redundant pages and the freeze are).
pub fn report_table_explained(r: &MigReport) -> String {
    report_rows(r, true)
}

fn report_rows(r: &MigReport, explain: bool) -> String {
    let mut rows: Vec<(&str, String, Option<String>)> = vec![
        ("process", tern_vm::value::name_text(r.pid), None),
        ("from → to", format!("{} → {}", r.from, r.to), None),
        ("mechanism", r.mechanism.to_string(), None),
        ("forwarding", r.forwarding.to_string(), None),
        ("home (calls made there)", format!("{} ({})", r.home, r.home_calls), None),
        ("outcome", r.outcome.clone(), None),
        ("heap pages", r.heap_pages.to_string(), None),
    ];
    if !r.auto.is_empty() {
        rows.insert(3, ("picked by auto", r.auto.clone(), None));
    }
    if !r.members.is_empty() {
        let names: Vec<String> = r.members.iter().map(|&p| tern_vm::value::name_text(p)).collect();
        rows.insert(1, ("group (moved as one)", format!("{} members: {}", names.len(), names.join(", ")), None));
    }
    if !r.rounds.is_empty() {
        rows.push((
            "pre-copy rounds (pages)",
            r.rounds.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
            Some("pages copied in each round while the process kept running: the first round copies the heap, each later one what the process wrote to during the round before".into()),
        ));
        rows.push((
            "rounds stopped",
            stop_reason_text(&r.stop_reason),
            Some(match r.mechanism {
                _ if r.fell_back => format!(
                    "they did not converge: the process was stopped and moved, and the {} pages it had dirtied since follow after it (post-copy)",
                    r.absent_pages_at_resume
                ),
                crate::proto::mechanism::Mechanism::Hybrid => {
                    "then the process was stopped and moved; the pages it had dirtied since follow on demand".into()
                }
                _ => "then the process was stopped and the pages it had dirtied since were sent with it".into(),
            }),
        ));
        rows.push((
            "throttle level",
            throttle_text(r.throttle_level),
            (r.throttle_level > 0).then(|| {
                "when a round did not shrink the dirty set, the process was slowed down one level more (each level halves its share of time) so that the copy could catch up".into()
            }),
        ));
        rows.push((
            "reductions during rounds",
            r.reductions_during_rounds.to_string(),
            Some("the work the process did while it was being copied".into()),
        ));
    }
    rows.extend([
        ("final pages (frozen)", r.final_pages.to_string(), Some("pages sent while the process was stopped".into())),
        (
            "redundant pages",
            r.redundant_pages.to_string(),
            (r.redundant_pages > 0).then(|| {
                "pages sent more than once: pre-copy sends a page again when the running process wrote to it after it was copied".into()
            }),
        ),
        ("zero pages skipped", r.zero_pages_skipped.to_string(), None),
        (
            "freeze time",
            format!("{} µs", r.freeze_time_us),
            Some("how long the process was stopped: the pause that whoever talks to it can notice".into()),
        ),
        ("total time", format!("{} µs", r.total_time_us), None),
        ("bytes on the wire", r.bytes_sent.to_string(), None),
    ]);
    if r.absent_pages_at_resume > 0 {
        rows.push((
            "absent pages at resume",
            r.absent_pages_at_resume.to_string(),
            Some(
                "pages the process resumed without: each comes when it is first touched (a page fault) or pushed in the background".into(),
            ),
        ));
        rows.push(("page faults", r.page_faults.to_string(), None));
        rows.push((
            "fault latency p50/p99/max",
            format!("{}/{}/{} µs", r.fault_latency_p50_us, r.fault_latency_p99_us, r.fault_latency_max_us),
            None,
        ));
        rows.push(("pages pushed", r.pages_pushed.to_string(), None));
    }
    rows.extend([
        (
            "source dependency ended",
            format!("{} µs after start", r.dependency_ended_us),
            Some("from then on the old node holds nothing for the process".into()),
        ),
        ("messages held", r.messages_held.to_string(), None),
        ("link updates", r.link_updates.to_string(), None),
        ("modules sent", r.modules_sent.to_string(), None),
    ]);
    if r.jit_functions_at_source > 0 {
        rows.push((
            "compiled functions",
            format!("{} at the source, {} rebuilt here", r.jit_functions_at_source, r.jit_functions_rebuilt),
            Some(
                "machine code never moves: the destination compiled again what ran compiled at the source, starting when the offer came"
                    .into(),
            ),
        ));
        rows.push((
            "back at compiled speed",
            format!("{} µs after resuming", r.time_to_compiled_us),
            Some("0: the code was ready before the process resumed".into()),
        ));
    }
    let w = rows.iter().map(|(k, _, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v, note) in &rows {
        out += &format!("  {k:<w$}  {v}\n");
        if let (true, Some(n)) = (explain, note) {
            for (i, line) in wrap(n, 64).iter().enumerate() {
                out += &format!("  {:<w$}  {} {line}\n", "", if i == 0 { "↳" } else { " " });
            }
        }
    }
    out
}

/// `text` cut at spaces into lines of at most `width` characters (a longer word stays
/// whole, and a unit stays with its number).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for word in text.split(' ') {
        match words.last_mut() {
            Some(w) if ["µs", "ms", "s", "%", "%)"].contains(&word) || word.starts_with("µs") => {
                w.push(' ');
                w.push_str(word);
            }
            _ => words.push(word.to_string()),
        }
    }
    let mut lines: Vec<String> = Vec::new();
    for word in &words {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 1 + word.chars().count() <= width => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.clone()),
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_wrap_at_spaces() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
        assert_eq!(wrap("abcdefg hi", 3), vec!["abcdefg", "hi"]);
        assert_eq!(wrap("for 20 µs (freeze", 7), vec!["for", "20 µs", "(freeze"]);
    }

    #[test]
    fn stop_reasons_read_as_words_and_explanations_only_when_asked() {
        let r = MigReport {
            rounds: vec![1024, 9],
            stop_reason: "NotShrinking".into(),
            throttle_level: 4,
            redundant_pages: 9,
            ..MigReport::default()
        };
        let plain = report_table(&r);
        assert!(plain.contains("the dirty set stopped shrinking") && !plain.contains("NotShrinking"), "{plain}");
        assert!(plain.contains("4 (the process was slowed to run 1/16 of the time)"), "{plain}");
        assert!(!plain.contains('↳'), "{plain}");
        let explained = report_table_explained(&r);
        assert!(explained.contains("↳ pages sent more than once"), "{explained}");
        assert!(explained.lines().all(|l| l.chars().count() < 110), "{explained}");
    }
}
