//! What each forwarding mechanism costs when a node is lost, shown on real nodes (every
//! node its own OS process, killed with `kill -9`), as the seed predicts:
//!
//! - `origin-site`: the birth node is a residual dependency: once it is lost, a message
//!   to a process born there fails with an error naming it, while the process itself
//!   runs on (a message from its own node still reaches it).
//! - `link-traversal`: a node holding a link of the chain is one too: a message that
//!   would follow the lost link fails, naming it; a sender whose node was told the place
//!   by path shortening still reaches the process directly.
//! - `resend`: the nodes a process left keep nothing: losing one costs nothing; the
//!   sender's node locates the process and its message gets there.

#[path = "common/nodes.rs"]
mod nodes;

use nodes::{wait_until, RealMesh};
use std::time::Duration;

/// Prints every message it receives with the node it is on.
const WORKER: &str = "println(\"worker ready on ${node()}\");\n\
                      while true {\n\
                        let m = recv();\n\
                        println(\"worker got ${m} on ${node()}\");\n\
                      }\n";

/// Moves `pid` (asked of node `via`) to `to` with forwarding `fwd`.
#[track_caller]
fn migrate(mesh: &RealMesh, via: &str, pid: &str, to: &str, fwd: &str) {
    let out = mesh.ctl_on(Some(via), &["--json", "migrate", pid, to, "--mechanism", "precopy", "--forwarding", fwd]);
    assert!(out.ok() && out.json()["ok"] == true && out.json()["forwarding"] == fwd, "{out:?}\n{}", mesh.all_logs());
}

/// Sends `value` to `pid` from a program on node `from`, and waits until the worker says
/// it got it on node `on` (in the log of node `console`, where it was started from).
#[track_caller]
fn reaches(mesh: &RealMesh, from: &str, pid: &str, value: &str, on: &str, console: &str) {
    let out = mesh.ctl_on(Some(from), &["send", pid, &format!("\"{value}\"")]);
    assert!(out.ok(), "send from {from} failed: {out:?}\n{}", mesh.all_logs());
    let want = format!("worker got {value} on {on}");
    let ok = wait_until(Duration::from_secs(30), || mesh.log(console).contains(&want));
    assert!(ok, "{value:?} sent from node {from} never reached {pid} on node {on}:\n{}", mesh.all_logs());
}

/// Waits until node `from` sees node `down` down.
#[track_caller]
fn sees_down(mesh: &RealMesh, from: &str, down: &str) {
    let ok = wait_until(Duration::from_secs(30), || {
        mesh.nodes_seen_by(from).is_some_and(|rows| rows.iter().any(|(n, s)| n == down && s == "down"))
    });
    assert!(ok, "node {from} never saw {down} down:\n{}", mesh.all_logs());
}

#[test]
fn origin_site_loses_messages_when_the_birth_node_is_lost() {
    let mut mesh = RealMesh::start(3, "");
    mesh.wait_all_up(Duration::from_secs(30));
    // Born on a, its output on b's console.
    let pid = mesh.spawn_via("b", "worker.tern", WORKER, "a");
    assert!(wait_until(Duration::from_secs(30), || mesh.log("b").contains("worker ready on a")), "{}", mesh.all_logs());
    migrate(&mesh, "a", &pid, "b", "origin-site");
    // From c, through a.
    reaches(&mesh, "c", &pid, "one", "b", "b");
    mesh.kill9("a");
    sees_down(&mesh, "c", "a");
    let out = mesh.ctl_on(Some("c"), &["send", &pid, "\"two\""]);
    assert!(!out.ok(), "a send through a lost birth node went through: {out:?}");
    assert!(
        out.stderr.contains("origin-site") && out.stderr.contains("node a") && out.stderr.contains("down"),
        "the error names the birth node and the mechanism: {out:?}"
    );
    // Nothing else about the process is affected.
    reaches(&mesh, "b", &pid, "three", "b", "b");
}

#[test]
fn link_traversal_reports_a_lost_link_and_a_shortened_sender_goes_direct() {
    let mut mesh = RealMesh::start(4, "");
    mesh.wait_all_up(Duration::from_secs(30));
    let pid = mesh.spawn_via("d", "worker.tern", WORKER, "a");
    assert!(wait_until(Duration::from_secs(30), || mesh.log("d").contains("worker ready on a")), "{}", mesh.all_logs());
    migrate(&mesh, "a", &pid, "b", "link-traversal");
    migrate(&mesh, "b", &pid, "c", "link-traversal");
    // d knows nothing: by a, then the chain a -> b -> c; c tells d where it is.
    reaches(&mesh, "d", &pid, "one", "c", "d");
    mesh.kill9("b");
    sees_down(&mesh, "a", "b");
    sees_down(&mesh, "d", "b");
    // From a, whose link points at the lost b: reported as such.
    let out = mesh.ctl_on(Some("a"), &["send", &pid, "\"two\""]);
    assert!(!out.ok(), "a send along a lost link went through: {out:?}");
    assert!(
        out.stderr.contains("node b") && out.stderr.contains("link-traversal") && out.stderr.contains("down"),
        "the error names the lost link: {out:?}"
    );
    // d was told the place by path shortening: it goes straight to c.
    reaches(&mesh, "d", &pid, "three", "c", "d");
}

#[test]
fn resend_survives_the_loss_of_a_node_the_process_left() {
    let mut mesh = RealMesh::start(3, "");
    mesh.wait_all_up(Duration::from_secs(30));
    let pid = mesh.spawn_via("c", "worker.tern", WORKER, "a");
    assert!(wait_until(Duration::from_secs(30), || mesh.log("c").contains("worker ready on a")), "{}", mesh.all_logs());
    migrate(&mesh, "a", &pid, "b", "resend");
    reaches(&mesh, "a", &pid, "one", "b", "c");
    migrate(&mesh, "b", &pid, "c", "resend");
    mesh.kill9("b");
    sees_down(&mesh, "a", "b");
    // a (its birth node, which knows only that it lives) locates it on c.
    reaches(&mesh, "a", &pid, "two", "c", "c");
    reaches(&mesh, "c", &pid, "three", "c", "c");
}
