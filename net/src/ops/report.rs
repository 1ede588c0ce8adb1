//! How the operator's commands print what nodes answer: the `nodes`, `ps`, `top`,
//! `policy` and `drain` tables (and their JSON), a migration's report as a table.

use crate::proto::wire::{DrainReport, MigReport, NodeRow, PolicyView, PsRow, TopNode};
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
            "heap_pages": r.heap_pages, "mailbox": r.mailbox, "function": r.function}))
        .collect::<Vec<_>>())
}

pub fn nodes_json(rows: &[NodeRow]) -> serde_json::Value {
    json!(rows
        .iter()
        .map(|r| json!({"name": r.name, "addr": r.addr, "status": r.status, "processes": r.processes, "load": r.load,
            "migrations": r.migrations}))
        .collect::<Vec<_>>())
}

/// Bytes as people read them: `512 B`, `12.0 KiB`, `3.5 MiB`.
fn bytes_text(b: u64) -> String {
    match b {
        b if b < 1 << 10 => format!("{b} B"),
        b if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        b if b < 1 << 30 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        b => format!("{:.1} GiB", b as f64 / (1 << 30) as f64),
    }
}

/// `top`: each node's load, then the busiest processes of the mesh.
pub fn top_table(nodes: &[TopNode], procs: usize) -> String {
    let mut s = format!(
        "{:<10} {:>7} {:>6} {:>9} {:>9} {:>12} {:>10} {:<9}\n",
        "NODE", "WORKERS", "UTIL", "LOAD", "PROCESSES", "REDUCTIONS/S", "MIGRATING", "TAKES NEW"
    );
    for n in nodes {
        let l = &n.load;
        s += &format!(
            "{:<10} {:>7} {:>5}% {:>9.2} {:>9} {:>12} {:>10} {:<9}\n",
            n.node,
            l.workers,
            l.utilization_pm / 10,
            // What balance compares: CPU demand, or without it (the policy off) the run queue.
            f64::from(if l.demand_x100 > 0 { l.demand_x100 } else { l.runnable_x100 }) / 100.0 / f64::from(l.workers.max(1)),
            l.processes,
            l.reductions_per_s,
            l.migrations,
            if l.accepting { "yes" } else { "no (drained)" }
        );
    }
    let mut all: Vec<_> = nodes.iter().flat_map(|n| n.procs.iter().map(move |p| (n.node.as_str(), p))).collect();
    all.sort_by(|a, b| b.1.cpu_pm.cmp(&a.1.cpu_pm).then(b.1.reductions_per_s.cmp(&a.1.reductions_per_s)));
    s += &format!(
        "\n{:<12} {:<10} {:<8} {:>5} {:>12} {:>10} {:>10} {:>7} {:>6}  {}\n",
        "PID", "NODE", "STATUS", "CPU", "REDUCTIONS/S", "HEAP", "WRITES/S", "MAILBOX", "MOVES", "STAYS"
    );
    for (node, p) in all.into_iter().take(procs) {
        s += &format!(
            "{:<12} {:<10} {:<8} {:>4}% {:>12} {:>10} {:>10} {:>7} {:>6}  {}\n",
            name_text(p.pid),
            node,
            p.status,
            p.cpu_pm / 10,
            p.reductions_per_s,
            bytes_text(p.heap_bytes),
            bytes_text(p.dirty_bytes_s),
            p.mailbox,
            p.moves,
            p.unmovable.as_deref().unwrap_or("")
        );
    }
    if nodes.iter().any(|n| !n.measured) {
        s += "(processes are measured over the policy's window from the first question on, with the policy off: ask again for them all)\n";
    }
    s
}

pub fn top_json(nodes: &[TopNode]) -> serde_json::Value {
    json!(nodes
        .iter()
        .map(|n| json!({"node": n.node, "load": n.load, "measured": n.measured,
            "procs": n.procs.iter().map(|p| json!({"pid": name_text(p.pid), "status": p.status, "cpu_pm": p.cpu_pm,
                "reductions_per_s": p.reductions_per_s, "heap_bytes": p.heap_bytes, "dirty_bytes_s": p.dirty_bytes_s,
                "mailbox": p.mailbox, "resident_ms": p.resident_ms, "moves": p.moves, "unmovable": p.unmovable}))
                .collect::<Vec<_>>()}))
        .collect::<Vec<_>>())
}

/// `tern ctl policy`: the settings (once if every node has the same), each node's
/// state, then the decisions, oldest first.
pub fn policy_text(views: &[PolicyView], errors: &[String]) -> String {
    let mut s = String::new();
    let same = views.windows(2).all(|w| w[0].conf == w[1].conf);
    for (i, v) in views.iter().enumerate() {
        if i == 0 || !same {
            let c = &v.conf;
            s += &format!(
                "policy{}: mode {}; high {} low {} min_cpu {}; hysteresis {} ms, residence {} ms; in flight {} per node, {} per mesh; bandwidth {}; interval {} ms, gossip {} ms, window {} ms; affinity above {} B/s\n",
                if same { String::new() } else { format!(" on {}", v.node) },
                c.mode, c.high, c.low, c.min_cpu, c.hysteresis_ms, c.residence_ms, c.max_in_flight, c.max_in_flight_mesh,
                if c.bandwidth_mib_s == 0 { "not capped".to_string() } else { format!("{} MiB/s", c.bandwidth_mib_s) },
                c.interval_ms, c.gossip_ms, c.window_ms, c.affinity_bytes_s
            );
        }
    }
    for v in views.iter().filter(|v| !v.accepting) {
        s += &format!("node {} is drained: it takes no new processes\n", v.node);
    }
    let mut rows: Vec<_> = views.iter().flat_map(|v| v.decisions.iter().map(move |d| (v.node.as_str(), d))).collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.ago_ms));
    if rows.is_empty() {
        s += "no decisions yet\n";
    }
    for (node, d) in rows {
        let what = match &d.moved {
            Some((pid, to)) => format!("moved {} to {to}", name_text(*pid)),
            None => "declined".to_string(),
        };
        let loads: Vec<String> = d.loads.iter().map(|(n, l, u)| format!("{n} {l:.2}/{}%", u / 10)).collect();
        s += &format!("{:>8.1} s ago  {node:<8} {:<8} {what}: {}  [loads {}]\n", d.ago_ms as f64 / 1000.0, d.rule, d.why, loads.join(", "));
    }
    for e in errors {
        s += &format!("warning: {e}\n");
    }
    s
}

pub fn policy_json(views: &[PolicyView], errors: &[String]) -> serde_json::Value {
    json!({"nodes": views.iter().map(|v| json!({"node": v.node, "conf": v.conf, "accepting": v.accepting,
        "decisions": v.decisions.iter().map(|d| json!({"ago_ms": d.ago_ms, "rule": d.rule,
            "moved": d.moved.as_ref().map(|(p, to)| json!({"pid": name_text(*p), "to": to})), "why": d.why,
            "loads": d.loads, "candidates": d.candidates.iter().map(|(p, sc)| json!([name_text(*p), sc])).collect::<Vec<_>>()}))
            .collect::<Vec<_>>()}))
        .collect::<Vec<_>>(), "errors": errors})
}

/// What a drain did.
pub fn drain_text(r: &DrainReport) -> String {
    let mut s = format!(
        "node {} drained: {} moved, {} stayed, {} failed; it takes no new processes (tern ctl undrain {} to take them again)\n",
        r.node,
        r.moved.len(),
        r.stayed.len(),
        r.failed.len(),
        r.node
    );
    for (pid, to, mech, freeze) in &r.moved {
        s += &format!("  moved  {:<12} to {to} ({mech}, frozen {freeze} µs)\n", name_text(*pid));
    }
    for (pid, why) in &r.stayed {
        s += &format!("  stayed {:<12} {why}\n", name_text(*pid));
    }
    for (pid, why) in &r.failed {
        s += &format!("  failed {:<12} {why}\n", name_text(*pid));
    }
    s
}

pub fn drain_json(r: &DrainReport) -> serde_json::Value {
    json!({"node": r.node,
        "moved": r.moved.iter().map(|(p, to, m, f)| json!({"pid": name_text(*p), "to": to, "mechanism": m, "freeze_time_us": f})).collect::<Vec<_>>(),
        "stayed": r.stayed.iter().map(|(p, why)| json!({"pid": name_text(*p), "why": why})).collect::<Vec<_>>(),
        "failed": r.failed.iter().map(|(p, why)| json!({"pid": name_text(*p), "why": why})).collect::<Vec<_>>()})
}

/// Why the pre-copy rounds stopped, in plain words, from the report's `stop_reason`
/// (the name of `proto::migrate::StopReason` it carries, as in `--json`) and whether the
/// process was slowed down (`throttled`: pre-copy's rounds slow it; hybrid's do not).
pub fn stop_reason_text(reason: &str, throttled: bool) -> String {
    match reason {
        "Converged" => "converged: what was still dirty fit in the freeze-time budget".into(),
        "NotShrinking" if throttled => "the dirty set stopped shrinking, even with the process slowed down".into(),
        "NotShrinking" => "the dirty set stopped shrinking".into(),
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
            stop_reason_text(&r.stop_reason, r.throttle_level > 0),
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
            if r.freeze_error_us > 0 {
                format!("{} µs (± {} µs)", r.freeze_time_us, r.freeze_error_us)
            } else {
                format!("{} µs", r.freeze_time_us)
            },
            Some("how long the process was stopped: the pause that whoever talks to it can notice".into()),
        ),
    ]);
    if r.late_wait_us > 0 {
        rows.push((
            "late messages",
            format!("{} µs after the resume", r.late_wait_us),
            Some("what reached it at the old node during the move, with its links: it computed meanwhile, and a system call it made waited for them".into()),
        ));
    }
    rows.extend([("total time", format!("{} µs", r.total_time_us), None), ("bytes on the wire", r.bytes_sent.to_string(), None)]);
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
            "pages read ahead",
            r.pages_read_ahead.to_string(),
            Some("asked for ahead of page faults that came in order (the process read its heap through)".into()),
        ));
        rows.push((
            "fault latency p50/p99/max",
            format!("{}/{}/{} µs", r.fault_latency_p50_us, r.fault_latency_p99_us, r.fault_latency_max_us),
            Some("from the request for a faulting page (and its prefetch) to the page here".into()),
        ));
        rows.push((
            "fault wait p50/p99",
            format!("{}/{} µs", r.fault_wait_p50_us, r.fault_wait_p99_us),
            Some("what the process waited at a fault, from touching the page to running again".into()),
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
        assert!(!plain.contains("late messages"), "{plain}");
        let late = report_table(&MigReport { late_wait_us: 250, ..r.clone() });
        assert!(late.contains("250 µs after the resume"), "{late}");
        let explained = report_table_explained(&r);
        assert!(explained.contains("↳ pages sent more than once"), "{explained}");
        assert!(explained.lines().all(|l| l.chars().count() < 110), "{explained}");
    }
}
