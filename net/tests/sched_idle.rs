//! Idle workers sleep. (Its own test binary, so that no other test's threads are
//! counted in this OS process's CPU time.)

use std::sync::Arc;
use std::time::Duration;
use tern_net::runner::new_vm;
use tern_vm::node::{Console, Node, Pid};
use tern_vm::VmConfig;

struct Discard;

impl Console for Discard {
    fn write(&self, _: Pid, _: &str) {}
}

/// User + system CPU time of this OS process, in clock ticks (from /proc).
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit(')').next()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based).
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[test]
fn idle_workers_use_no_cpu() {
    let sched = Node::local(Arc::new(new_vm(VmConfig::default())), Arc::new(Discard), 2);
    std::thread::sleep(Duration::from_millis(100));
    let Some(before) = cpu_ticks() else {
        eprintln!("skipped: /proc/self/stat is not readable here");
        return;
    };
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks().unwrap() - before;
    sched.shutdown();
    // Clock ticks are usually 10 ms: a busy worker would use ~100 per second.
    assert!(used <= 3, "idle scheduler used {used} ticks of CPU in one second");
}
