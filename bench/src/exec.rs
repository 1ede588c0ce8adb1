//! Running a child process with a wall-clock limit, and finding programs on `PATH`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How one run of a child process ended.
pub enum Outcome {
    /// The process exited on its own.
    Exited { status: ExitStatus, stdout: String, stderr: String, wall: Duration },
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

    // Poll rather than block so the limit can be enforced without extra dependencies;
    // the short sleep keeps the timing error well under a millisecond.
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() >= limit {
            // The process may exit between the check and the kill; either is fine.
            let _ = child.kill();
            child.wait()?;
            break None;
        }
        thread::sleep(Duration::from_micros(200));
    };
    let wall = start.elapsed();
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Ok(match status {
        Some(status) => Outcome::Exited { status, stdout, stderr, wall },
        None => Outcome::TimedOut,
    })
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
