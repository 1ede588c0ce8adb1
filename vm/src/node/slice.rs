//! A short time slice for the threads a message wakes (the VM's workers, the network
//! thread, the dispatcher).
//!
//! On a machine whose cores are busy with other programs, a thread that sleeps until a
//! message comes waits, once woken, for the kernel to give it a core. Linux's EEVDF
//! scheduler (6.6 and later) picks the runnable thread with the earliest virtual
//! deadline, and a thread's deadline is its eligible time plus its slice; since 6.12 a
//! thread may ask for its own slice (`sched_setattr`'s `sched_runtime` under
//! `SCHED_OTHER`, 0.1–100 ms, no privilege needed). A thread with a short slice is
//! picked, and may preempt a CPU hog, soon after it wakes, and runs in shorter turns: its
//! share of the CPU is unchanged (that is its weight, its nice value), only its latency.
//! Where the kernel does not know the field, the call fails and nothing changes.

/// The slice the latency-sensitive threads ask for, µs.
pub const SHORT_SLICE_US: u64 = 100;

/// `struct sched_attr`, its first version (48 bytes).
#[cfg(target_os = "linux")]
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Asks for a slice of `us` microseconds for the calling thread, keeping its policy
/// (`SCHED_OTHER`) and nice value. Whether the kernel took it.
pub fn set_short_slice(us: u64) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `getpriority` reads the calling thread's nice value (who = 0: the
        // caller); it has no memory arguments. errno is cleared first, as -1 is a nice value.
        let nice = unsafe {
            *libc::__errno_location() = 0;
            libc::getpriority(libc::PRIO_PROCESS, 0)
        };
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy: libc::SCHED_OTHER as u32,
            flags: 0,
            nice,
            priority: 0,
            runtime: us.saturating_mul(1000),
            deadline: 0,
            period: 0,
        };
        // SAFETY: `sched_setattr(0, attr, 0)` reads `size` bytes of `attr`, a live
        // `repr(C)` value laid out as the kernel's `struct sched_attr` version 1.
        let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        r == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = us;
        false
    }
}

/// The calling thread's slice as the kernel reports it, µs (`None`: not known here).
pub fn current_slice_us() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let mut attr = SchedAttr::default();
        // SAFETY: `sched_getattr(0, attr, size, 0)` writes at most `size` bytes into
        // `attr`, a live `repr(C)` value of that size.
        let r =
            unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut SchedAttr, std::mem::size_of::<SchedAttr>() as u32, 0) };
        (r == 0).then_some(attr.runtime / 1000)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a kernel with custom slices the thread gets the one it asked for, and its nice
    /// value stays; elsewhere the call says it failed and changes nothing.
    #[test]
    fn a_thread_gets_the_short_slice_it_asks_for_and_keeps_its_nice_value() {
        std::thread::spawn(|| {
            // SAFETY: as in `set_short_slice`.
            let nice = |_: ()| unsafe {
                *libc::__errno_location() = 0;
                libc::getpriority(libc::PRIO_PROCESS, 0)
            };
            // SAFETY: `setpriority` of the calling thread to a higher nice value (always allowed).
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 3) };
            let before = nice(());
            if set_short_slice(SHORT_SLICE_US) {
                assert_eq!(current_slice_us(), Some(SHORT_SLICE_US));
            }
            assert_eq!(nice(()), before);
        })
        .join()
        .unwrap();
    }
}
