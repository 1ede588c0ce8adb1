//! Nodes' [`MetricsView`]s in Prometheus' text exposition format (version 0.0.4): what
//! `/metrics` serves, on a node (its own) and on the dashboard (every node's, each
//! series labelled with its `node`). Names and units by Prometheus' conventions:
//! `tern_` first, `_total` for counters, seconds and bytes as base units.

use crate::proto::wire::{HistView, MetricsView};
use std::fmt::Write;

/// The content type of what [`render`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value with `\`, `"` and newlines escaped.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out {
    text: String,
}

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn line(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", esc(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// One series per node of a number each view has.
    fn per_node(&mut self, views: &[MetricsView], name: &str, kind: &str, help: &str, f: impl Fn(&MetricsView) -> f64) {
        self.head(name, kind, help);
        for v in views {
            self.line(name, &[("node", &v.node)], f(v));
        }
    }

    fn histogram(&mut self, views: &[MetricsView], name: &str, help: &str, h: impl Fn(&MetricsView) -> &HistView) {
        self.head(name, "histogram", help);
        for v in views {
            let hist = h(v);
            let mut cumulative = 0u64;
            for (i, &bound) in hist.bounds_us.iter().enumerate() {
                cumulative += hist.counts.get(i).copied().unwrap_or(0);
                let le = format!("{}", bound as f64 / 1e6);
                self.line(&format!("{name}_bucket"), &[("node", &v.node), ("le", &le)], cumulative as f64);
            }
            self.line(&format!("{name}_bucket"), &[("node", &v.node), ("le", "+Inf")], hist.count as f64);
            self.line(&format!("{name}_sum"), &[("node", &v.node)], hist.sum_us as f64 / 1e6);
            self.line(&format!("{name}_count"), &[("node", &v.node)], hist.count as f64);
        }
    }
}

/// Every view's series. `down`: the nodes of the mesh that did not answer
/// (`tern_node_up` 0).
pub fn render(views: &[MetricsView], down: &[String]) -> String {
    let mut o = Out { text: String::new() };
    o.head("tern_node_up", "gauge", "Whether the node answered (1) or not (0).");
    for v in views {
        o.line("tern_node_up", &[("node", &v.node)], 1.0);
    }
    for n in down {
        o.line("tern_node_up", &[("node", n)], 0.0);
    }
    o.per_node(views, "tern_uptime_seconds", "gauge", "Seconds since the node started.", |v| v.uptime_s as f64);
    o.per_node(views, "tern_accepting", "gauge", "Whether the node takes new processes (0: drained or stopping).", |v| {
        f64::from(u8::from(v.accepting))
    });
    o.per_node(views, "tern_workers", "gauge", "Worker threads running processes.", |v| f64::from(v.workers));
    o.per_node(views, "tern_processes", "gauge", "Processes on the node that have not ended.", |v| v.processes as f64);
    o.per_node(views, "tern_run_queue_length", "gauge", "Processes runnable or running, averaged over the policy's window.", |v| {
        f64::from(v.run_queue_x100) / 100.0
    });
    o.per_node(views, "tern_utilization_ratio", "gauge", "Share of the workers' time spent running processes (0 to 1).", |v| {
        f64::from(v.utilization_pm) / 1000.0
    });
    o.per_node(views, "tern_reductions_total", "counter", "Reductions (instructions and calls) run.", |v| v.reductions as f64);
    o.per_node(views, "tern_messages_sent_total", "counter", "Frames sent to other nodes (messages, spawns, links, answers).", |v| {
        v.messages_out as f64
    });
    o.per_node(views, "tern_sent_bytes_total", "counter", "Bytes of frames sent to other nodes.", |v| v.bytes_out as f64);
    o.per_node(views, "tern_messages_received_total", "counter", "Frames received from other nodes.", |v| v.messages_in as f64);
    o.per_node(views, "tern_received_bytes_total", "counter", "Bytes of frames received from other nodes.", |v| v.bytes_in as f64);
    for (name, help, f) in [
        (
            "tern_peer_messages_sent_total",
            "Frames sent to one other node.",
            (|p| p.messages_out) as fn(&crate::proto::wire::PeerTraffic) -> u64,
        ),
        ("tern_peer_sent_bytes_total", "Bytes of frames sent to one other node.", |p| p.bytes_out),
        ("tern_peer_messages_received_total", "Frames received from one other node.", |p| p.messages_in),
        ("tern_peer_received_bytes_total", "Bytes of frames received from one other node.", |p| p.bytes_in),
    ] {
        o.head(name, "counter", help);
        for v in views {
            for p in &v.peers {
                o.line(name, &[("node", &v.node), ("peer", &p.peer)], f(p) as f64);
            }
        }
    }
    o.head("tern_peer_up", "gauge", "Whether the node sees the other node up.");
    for v in views {
        for p in &v.peers {
            o.line("tern_peer_up", &[("node", &v.node), ("peer", &p.peer)], f64::from(u8::from(p.up)));
        }
    }
    for (name, help, f) in [
        (
            "tern_migrations_started_total",
            "Migrations started from the node.",
            (|m| m.started) as fn(&crate::proto::wire::MechCounts) -> u64,
        ),
        ("tern_migrations_committed_total", "Migrations from the node that committed.", |m| m.committed),
        ("tern_migrations_aborted_total", "Migrations from the node that failed (the process ran on at the source).", |m| m.aborted),
    ] {
        o.head(name, "counter", help);
        for v in views {
            for m in &v.migrations {
                o.line(name, &[("node", &v.node), ("mechanism", &m.mechanism)], f(m) as f64);
            }
        }
    }
    o.per_node(views, "tern_migrations_in_flight", "gauge", "Migrations from the node under way.", |v| v.in_flight.len() as f64);
    o.per_node(views, "tern_migration_sent_bytes_total", "counter", "Bytes sent by migrations from the node.", |v| {
        v.migration_bytes_sent as f64
    });
    o.histogram(views, "tern_migration_freeze_seconds", "Committed migrations from the node: from the freeze to the resume.", |v| {
        &v.freeze_us
    });
    o.histogram(
        views,
        "tern_migration_fault_latency_seconds",
        "Page faults of processes migrated lazily to the node: each fault's wait for its page.",
        |v| &v.fault_us,
    );
    o.text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::wire::{MechCounts, PeerTraffic};

    fn view(node: &str) -> MetricsView {
        MetricsView {
            node: node.into(),
            processes: 3,
            run_queue_x100: 150,
            peers: vec![PeerTraffic { peer: "b".into(), up: true, messages_out: 7, ..PeerTraffic::default() }],
            migrations: vec![MechCounts { mechanism: "lazy".into(), started: 2, committed: 1, aborted: 1 }],
            freeze_us: HistView { bounds_us: vec![100, 1000], counts: vec![1, 2, 1], count: 4, sum_us: 2_500_000 },
            ..MetricsView::default()
        }
    }

    #[test]
    fn series_are_labelled_typed_and_histograms_cumulative() {
        let text = render(&[view("a"), view("q\"x")], &["c".into()]);
        assert!(text.contains("# TYPE tern_processes gauge\ntern_processes{node=\"a\"} 3\n"), "{text}");
        assert!(text.contains("tern_processes{node=\"q\\\"x\"} 3\n"), "label values are escaped: {text}");
        assert!(text.contains("tern_node_up{node=\"c\"} 0\n"), "{text}");
        assert!(text.contains("tern_run_queue_length{node=\"a\"} 1.5\n"), "{text}");
        assert!(text.contains("tern_peer_messages_sent_total{node=\"a\",peer=\"b\"} 7\n"), "{text}");
        assert!(text.contains("tern_migrations_aborted_total{node=\"a\",mechanism=\"lazy\"} 1\n"), "{text}");
        assert!(text.contains("tern_migration_freeze_seconds_bucket{node=\"a\",le=\"0.0001\"} 1\n"), "{text}");
        assert!(text.contains("tern_migration_freeze_seconds_bucket{node=\"a\",le=\"0.001\"} 3\n"), "cumulative: {text}");
        assert!(text.contains("tern_migration_freeze_seconds_bucket{node=\"a\",le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("tern_migration_freeze_seconds_sum{node=\"a\"} 2.5\n"), "{text}");
        // Every sample line is `name{labels} number` of a family announced with TYPE.
        let mut typed = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_string());
                continue;
            }
            if l.starts_with('#') {
                continue;
            }
            let (series, value) = l.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{l}");
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).filter(|f| typed.contains(*f));
            assert!(typed.contains(name) || family.is_some(), "{l}: no TYPE for it");
        }
    }
}
