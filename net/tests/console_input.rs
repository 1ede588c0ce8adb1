//! Console input (`read_line()` with no argument), on real nodes (each `tern node` its
//! own OS process) and in `tern run`: a program reads the stdin of the `tern ctl spawn
//! --attach` (or `tern run`) that started it — through a pipe and through a terminal (a
//! pty made by `script`) — while it is moved, blocked in the read, under every
//! mechanism: each line typed after a move reaches it where it now runs, exactly once,
//! and the end of the input gives `nil`.

#[path = "common/nodes.rs"]
mod nodes;

use nodes::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const READER: &str = r#"
println("waiting ${self()} on ${node()}");
let n = 0;
let line = read_line();
while line != nil {
    n += 1;
    println("got ${line} on ${node()}");
    line = read_line();
}
println("end after ${n} lines on ${node()}");
"#;

/// Lines of a child's stdout, as they come, on a thread.
fn lines_of(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line with `f`, keeping every line seen in `seen`.
fn wait_for(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>, what: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            let l = l.replace('\r', "");
            seen.push(l.clone());
            if f(&l) {
                return l;
            }
        }
    }
    panic!("no line {what} within 60 s; seen:\n{}", seen.join("\n"));
}

/// The program reads its console through `tern ctl spawn --attach` (`pty`: run in a
/// terminal by `script`); it is moved while it waits for a line, under each mechanism
/// in turn, and each line typed after a move is read at the new node, once.
fn attach_and_move(pty: bool) {
    let mut mesh = RealMesh::start(3, "");
    mesh.wait_all_up(Duration::from_secs(30));
    let prog = mesh.write("reader.tern", READER);
    let ctl_args = ["ctl", "--config", mesh.cfg(), "--node", "a", "spawn", prog.to_str().unwrap(), "--attach"];
    let mut cmd = if pty {
        // `script` gives the command a terminal; what it is sent goes in as typed, and
        // Ctrl-D at the start of a line is the end of the input.
        let line = std::iter::once(env!("CARGO_BIN_EXE_tern").to_string())
            .chain(ctl_args.iter().map(|a| format!("'{a}'")))
            .collect::<Vec<_>>()
            .join(" ");
        let mut c = Command::new("script");
        c.args(["-qefc", &line, "/dev/null"]);
        c
    } else {
        let mut c = tern();
        c.args(ctl_args);
        c
    };
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut g = Guard::spawn("tern ctl spawn --attach", &mut cmd);
    let child = g.child.as_mut().expect("running");
    let mut stdin = child.stdin.take().expect("stdin");
    let rx = lines_of(child.stdout.take().expect("stdout"));
    let _err = lines_of(child.stderr.take().expect("stderr"));
    let mut seen = Vec::new();
    let first = wait_for(&rx, &mut seen, "waiting", |l| l.starts_with("waiting <pid "));
    let pid = first.split("<pid ").nth(1).and_then(|t| t.split('>').next()).expect("a pid").to_string();
    assert!(first.ends_with(" on a"), "{first}");
    let mechanisms = ["freeze", "precopy", "lazy", "hybrid"];
    let places = ["b", "c", "a", "b"];
    for (i, (mech, to)) in mechanisms.iter().zip(places).enumerate() {
        // It is blocked in read_line(): moved at once, and its read asked again there.
        let out = mesh.migrate(Some("a"), &pid, to, mech);
        assert!(out.ok() && out.json()["ok"] == true, "{mech} -> {to}: {out:?}\n{}", mesh.all_logs());
        writeln!(stdin, "line{i}").expect("typed");
        stdin.flush().expect("flushed");
        let want = format!("got line{i} on {to}");
        wait_for(&rx, &mut seen, &want, |l| l == want);
    }
    if pty {
        stdin.write_all(b"\x04").expect("Ctrl-D");
        stdin.flush().expect("flushed");
    } else {
        drop(stdin);
    }
    wait_for(&rx, &mut seen, "the end", |l| l.starts_with("end after"));
    let status = g.wait(Duration::from_secs(30)).expect("tern ctl ends with the program");
    assert!(status.success(), "{status:?}\n{}", seen.join("\n"));
    // Every line read once, where the process was.
    for (i, to) in places.iter().enumerate() {
        let want = format!("got line{i} on {to}");
        assert_eq!(seen.iter().filter(|l| **l == want).count(), 1, "{want}:\n{}", seen.join("\n"));
    }
    assert!(seen.iter().any(|l| l == "end after 4 lines on b"), "{}", seen.join("\n"));
}

#[test]
fn a_program_reads_the_stdin_of_ctl_attach_through_a_pipe_while_it_moves() {
    attach_and_move(false);
}

#[test]
fn a_program_reads_the_terminal_of_ctl_attach_while_it_moves() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED: `script` (util-linux) is not installed: no pty to test with");
        return;
    }
    attach_and_move(true);
}

/// `tern run` reads its stdin; moved between its two VM instances (`--migrate-every`)
/// while it waits for a line, it reads each line once.
#[test]
fn tern_run_reads_its_stdin_while_it_moves() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let prog = dir.path().join("reader.tern");
    std::fs::write(&prog, READER).expect("written");
    let mut g = Guard::spawn(
        "tern run",
        tern().args(["run", prog.to_str().unwrap(), "--migrate-every", "50"]).stdin(Stdio::piped()).stdout(Stdio::piped()),
    );
    let child = g.child.as_mut().expect("running");
    let mut stdin = child.stdin.take().expect("stdin");
    let rx = lines_of(child.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    wait_for(&rx, &mut seen, "waiting", |l| l.starts_with("waiting "));
    for i in 0..20 {
        writeln!(stdin, "line{i}").expect("typed");
        stdin.flush().expect("flushed");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    wait_for(&rx, &mut seen, "the end", |l| l.starts_with("end after"));
    assert!(g.wait(Duration::from_secs(30)).expect("it ends").success());
    let got: Vec<&String> = seen.iter().filter(|l| l.starts_with("got ")).collect();
    assert_eq!(got.len(), 20, "{}", seen.join("\n"));
    for (i, l) in got.iter().enumerate() {
        assert!(l.starts_with(&format!("got line{i} on ")), "{}", seen.join("\n"));
    }
    assert!(seen.iter().any(|l| l.starts_with("end after 20 lines")), "{}", seen.join("\n"));
    // With its stdin at its end before the program reads it: nil at once.
    let out = Command::new(env!("CARGO_BIN_EXE_tern")).args(["run", prog.to_str().unwrap()]).stdin(Stdio::null()).output().expect("ran");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("end after 0 lines on local"), "{text}");
}
