//! Running a child process with a wall-clock limit, and finding programs on `PATH`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How one run of a child process ended.
pub enum Outcome {
    /// The process exited on its own. `peak_rss` is its peak resident set size in bytes
    /// (the largest of it and its waited-for descendants, from `wait4`), where known.
    Exited { status: ExitStatus, stdout: String, stderr: String, wall: Duration, peak_rss: Option<u64> },
    /// The process was still running at the limit and was killed.
    TimedOut,
}

/// Runs `cmd` (stdin closed, stdout and stderr captured) and measures its wall time
/// from spawn to exit. A process still running after `limit` is killed.
pub fn run_timed(cmd: &mut Command, limit: Duration) -> Result<Outcome> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let ended = wait_with_limit(&mut child, start, limit).with_context(|| format!("cannot wait for {cmd:?}"))?;
    let wall = start.elapsed();
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Ok(match ended {
        Some((status, peak_rss)) => Outcome::Exited { status, stdout, stderr, wall, peak_rss },
        None => Outcome::TimedOut,
    })
}

/// Waits for `child` to exit, killing it once `limit` has passed since `start`.
/// Returns its exit status and peak RSS, or `None` if it was killed at the limit.
///
/// Polls rather than blocks so the limit can be enforced without a second thread; the
/// short sleep keeps the timing error well under a millisecond. On Unix the child is
/// reaped with `wait4`, which also reports its resource usage (`ru_maxrss`).
#[cfg(unix)]
fn wait_with_limit(child: &mut Child, start: Instant, limit: Duration) -> Result<Option<(ExitStatus, Option<u64>)>> {
    use std::os::unix::process::ExitStatusExt;

    let pid = libc::pid_t::try_from(child.id()).context("child pid out of range")?;
    loop {
        let timed_out = start.elapsed() >= limit;
        if timed_out {
            // Not reaped yet, so the pid is still this child's (a zombie if it has just
            // exited, which the signal does not disturb).
            let _ = child.kill();
        }
        let mut status: libc::c_int = 0;
        // SAFETY: `rusage` is a plain C struct of integers, for which all-zero bytes are
        // a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let flags = if timed_out { 0 } else { libc::WNOHANG };
        // SAFETY: `pid` is our own child, not reaped yet (std's `Child` only reaps in
        // `wait`/`try_wait`, which are not called); `status` and `usage` are valid for
        // writes for the duration of the call.
        let reaped = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if reaped == pid {
            if timed_out {
                return Ok(None);
            }
            // Linux reports ru_maxrss in KiB, macOS in bytes.
            let unit = if cfg!(target_os = "macos") { 1 } else { 1024 };
            let peak = u64::try_from(usage.ru_maxrss).ok().filter(|&kib| kib > 0).map(|v| v * unit);
            return Ok(Some((ExitStatus::from_raw(status), peak)));
        }
        if reaped < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err.into());
            }
        }
        thread::sleep(Duration::from_micros(200));
    }
}

/// Waits for `child` to exit, killing it once `limit` has passed since `start`.
/// Returns its exit status (the peak RSS is unknown here), or `None` if it was killed.
#[cfg(not(unix))]
fn wait_with_limit(child: &mut Child, start: Instant, limit: Duration) -> Result<Option<(ExitStatus, Option<u64>)>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some((status, None)));
        }
        if start.elapsed() >= limit {
            // The process may exit between the check and the kill; either is fine.
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        thread::sleep(Duration::from_micros(200));
    }
}

/// Reads a child's pipe to the end on its own thread (so neither pipe can fill up and
/// stall the child).
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A child process that is killed (SIGKILL) and reaped when this is dropped: on every
/// path out of its owner's scope, an early return, an error or a panic alike.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The full path of the executable `name` on `PATH`, if any.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

/// Whether `path` is an existing, executable regular file.
pub fn is_executable(path: &Path) -> bool {
    let Ok(meta) = path.metadata() else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// The first non-empty line a command prints (stdout, then stderr), e.g. a version
/// banner; `None` if it cannot be run.
pub fn first_line_of(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output().ok()?;
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    text.lines().map(str::trim).find(|line| !line.is_empty()).map(str::to_string)
}
