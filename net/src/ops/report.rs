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

/// Prints a report as a table.
pub fn report_table(r: &MigReport) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("process", tern_vm::value::name_text(r.pid)),
        ("from → to", format!("{} → {}", r.from, r.to)),
        ("mechanism", r.mechanism.to_string()),
        ("forwarding", r.forwarding.to_string()),
        ("home (calls made there)", format!("{} ({})", r.home, r.home_calls)),
        ("outcome", r.outcome.clone()),
        ("heap pages", r.heap_pages.to_string()),
    ];
    if !r.members.is_empty() {
        let names: Vec<String> = r.members.iter().map(|&p| tern_vm::value::name_text(p)).collect();
        rows.insert(1, ("group (moved as one)", format!("{} members: {}", names.len(), names.join(", "))));
    }
    if !r.rounds.is_empty() {
        rows.push(("pre-copy rounds (pages)", r.rounds.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")));
        rows.push(("rounds stopped", r.stop_reason.clone()));
        rows.push(("throttle level", r.throttle_level.to_string()));
        rows.push(("reductions during rounds", r.reductions_during_rounds.to_string()));
    }
    rows.extend([
        ("final pages (frozen)", r.final_pages.to_string()),
        ("redundant pages", r.redundant_pages.to_string()),
        ("zero pages skipped", r.zero_pages_skipped.to_string()),
        ("freeze time", format!("{} µs", r.freeze_time_us)),
        ("total time", format!("{} µs", r.total_time_us)),
        ("bytes on the wire", r.bytes_sent.to_string()),
    ]);
    if r.absent_pages_at_resume > 0 {
        rows.push(("absent pages at resume", r.absent_pages_at_resume.to_string()));
        rows.push(("page faults", r.page_faults.to_string()));
        rows.push((
            "fault latency p50/p99/max",
            format!("{}/{}/{} µs", r.fault_latency_p50_us, r.fault_latency_p99_us, r.fault_latency_max_us),
        ));
        rows.push(("pages pushed", r.pages_pushed.to_string()));
    }
    rows.extend([
        ("source dependency ended", format!("{} µs after start", r.dependency_ended_us)),
        ("messages held", r.messages_held.to_string()),
        ("link updates", r.link_updates.to_string()),
        ("modules sent", r.modules_sent.to_string()),
    ]);
    let w = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("  {k:<w$}  {v}\n")).collect()
}
