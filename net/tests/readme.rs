//! The README's commands, taken literally and in order, succeed: every `tern ...` line of
//! its `sh` blocks (and `cargo run --release --bin tern -- demo`, as `tern demo`), run
//! with the test's `tern` binary in a copy of the repository's `examples/` (the mesh's
//! ports moved to free ones, so that nothing else on the machine is touched). `tern mesh
//! up` runs in the background for the lines after it; `1.N` is the pid the line before
//! printed, as the README says; `tern repl` gets `:nodes` and `:quit` on its stdin. Every
//! child has a deadline and is killed when the test ends.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const README: &str = include_str!("../../README.md");

/// The commands of the README's `sh` blocks that run `tern`, as typed (comments cut).
fn readme_commands() -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in README.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_sh = !in_sh && t == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let cmd = t.split(" # ").next().unwrap_or("").trim();
        if cmd == "cargo run --release --bin tern -- demo" {
            out.push("tern demo".to_string());
        } else if cmd.starts_with("tern ") {
            out.push(cmd.to_string());
        }
    }
    out
}

/// Kills (and reaps) a child when dropped.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        // Certificates the reader made are not the README's to use.
        if name == "certs" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// Runs `args` in `dir` with `stdin`, up to `timeout`: exit code, stdout, stderr.
fn run(dir: &Path, args: &[String], stdin: &str, timeout: Duration) -> (Option<i32>, String, String) {
    let mut child = Guard(Some(
        Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tern starts"),
    ));
    let c = child.0.as_mut().unwrap();
    let mut input = c.stdin.take().unwrap();
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    let mut so = c.stdout.take().unwrap();
    let mut se = c.stderr.take().unwrap();
    let r1 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let r2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.0.as_mut().unwrap().try_wait().unwrap() {
            Some(s) => break Some(s),
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            None => break None,
        }
    };
    if status.is_none() {
        drop(child);
        panic!("`tern {}` did not finish within {timeout:?}: {}\n{}", args.join(" "), r1.join().unwrap(), r2.join().unwrap());
    }
    child.0 = None;
    (status.and_then(|s| s.code()), r1.join().unwrap(), r2.join().unwrap())
}

/// A free loopback UDP port.
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_readme_commands_work_as_written() {
    let cmds = readme_commands();
    for must in ["tern demo", "tern cluster init", "tern mesh up", "tern repl", "tern ctl", "migrate 1.N b"] {
        assert!(cmds.iter().any(|c| c.contains(must)), "the README no longer shows {must:?}: {cmds:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    copy_dir(&root.join("examples"), &dir.path().join("examples"));
    let cfg = dir.path().join("examples/mesh.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    for port in ["7401", "7402", "7403"] {
        assert!(text.contains(port), "examples/mesh.toml no longer uses port {port}");
        text = text.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{}", free_port()));
    }
    std::fs::write(&cfg, text).unwrap();

    let mut mesh: Option<Guard> = None;
    let mut last_pid: Option<String> = None;
    let mut log = String::new();
    for cmd in &cmds {
        let mut args: Vec<String> = cmd.split_whitespace().skip(1).map(str::to_string).collect();
        if let Some(a) = args.iter_mut().find(|a| a.as_str() == "1.N") {
            *a = last_pid.clone().unwrap_or_else(|| panic!("`{cmd}` needs the pid a line before printed:\n{log}"));
        }
        if args.first().map(String::as_str) == Some("mesh") {
            let out = std::fs::File::create(dir.path().join("mesh.log")).unwrap();
            let err = out.try_clone().unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_tern"))
                .args(&args)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("tern mesh up starts");
            mesh = Some(Guard(Some(child)));
            // Up when each node sees the other two.
            let deadline = Instant::now() + Duration::from_secs(30);
            let ask = |n: &str| {
                let a: Vec<String> = ["ctl", "--config", "examples/mesh.toml", "--node", n, "--json", "nodes"].map(String::from).to_vec();
                run(dir.path(), &a, "", Duration::from_secs(20))
            };
            while !["a", "b", "c"].iter().all(|n| {
                let (code, out, _) = ask(n);
                code == Some(0) && out.matches("\"up\"").count() == 3
            }) {
                assert!(
                    Instant::now() < deadline,
                    "the README's mesh did not come up:\n{}",
                    std::fs::read_to_string(dir.path().join("mesh.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            log.push_str(&format!("$ {cmd} (in the background)\n"));
            continue;
        }
        let stdin = if args.first().map(String::as_str) == Some("repl") { ":nodes\n:quit\n" } else { "" };
        let (code, out, err) = run(dir.path(), &args, stdin, Duration::from_secs(120));
        log.push_str(&format!("$ {cmd}\n{out}{err}"));
        // `tern check examples/fail_divide.tern` compiles a program that fails when run:
        // the check itself succeeds.
        assert_eq!(code, Some(0), "`{cmd}` failed:\n{log}");
        if let Some(p) = out.split("started <pid ").nth(1).and_then(|s| s.split('>').next()) {
            last_pid = Some(p.to_string());
        }
    }
    eprintln!("{log}");
    assert!(mesh.is_some(), "the README starts no mesh");
    assert!(log.contains("migration") || log.contains("lazy"), "{log}");
}
