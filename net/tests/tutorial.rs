//! docs/tutorial.md, followed as a reader follows it.
//!
//! - Every program it shows (a ```tern or ```toml block whose first line is `// file:
//!   NAME` or `# file: NAME`) is, to the byte, the file `docs/tutorial/NAME`, and every
//!   file there is shown; the programs are in Tern's one style (`tern fmt --check`).
//! - Every line of its ```sh blocks runs, in order, with the test's `tern` binary, in a
//!   scratch copy of `docs/tutorial/` (its mesh's ports moved to free ones), and
//!   succeeds; `tern mesh up` runs in the background for the lines after it, and the
//!   pid the tutorial shows a `spawn` printing (`started <pid 1.3> ...`) stands, in the
//!   lines after, for the pid the real one printed. The few lines that set up the
//!   reader's machine (building, `PATH`, the directory) are listed in [`NOT_RUN`]; any
//!   other line must be a `tern` command.
//! - What it shows them printing is what they print. A ```text block right after an
//!   ```sh block is the output of that block's last command: after `tern run`, exactly
//!   its stdout (so every program that finishes is checked against what the tutorial
//!   says it prints); after another command, each line it shows, in order, is a line of
//!   the output, numbers aside (digits, sizes and a process's status may differ between
//!   runs; `…` stands for anything, and a line of only `…` for lines left out). A
//!   ```text block of node log lines (`a| ...`) is what the mesh's terminal shows by
//!   then: each line must turn up in `tern mesh up`'s output. A ```text block that is a
//!   compile error is reproduced from the source lines it shows with `tern check`. The
//!   ```text block that shows `tern dashboard` is run too, until it serves its page.
//!
//! Every command has a deadline and every child is killed when the test ends
//! (`common/doc_commands.rs`, shared with `readme.rs`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/doc_commands.rs"]
mod doc_commands;

use doc_commands::{blocks, copy_dir, move_ports, run, sh_command, Block, Guard, Output, Session, COMMAND_TIMEOUT};

const TUTORIAL: &str = include_str!("../../docs/tutorial.md");

/// Lines of the tutorial's `sh` blocks that prepare the reader's machine: the test has
/// its own build of `tern` and its own scratch directory, so it does not run them.
const NOT_RUN: &[&str] = &[
    "cargo build --release",
    "export PATH=\"$PWD/target/release:$PATH\"",
    "cargo install --path net",
    "mkdir ~/tern-tutorial && cd ~/tern-tutorial",
];

/// How long the mesh's output may take to show what the tutorial says it shows.
const LOG_TIMEOUT: Duration = Duration::from_secs(20);

fn files_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/tutorial")
}

/// The file a block shows (`// file: NAME` or `# file: NAME` on its first line).
fn shown_file(b: &Block) -> Option<&str> {
    let first = b.lines.first()?.trim();
    first.strip_prefix("// file:").or_else(|| first.strip_prefix("# file:")).map(str::trim)
}

/// Every file of `docs/tutorial/`, sorted.
fn tutorial_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(files_dir())
        .expect("docs/tutorial/")
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_programs_shown_are_the_files() {
    let mut shown = Vec::new();
    for b in blocks(TUTORIAL) {
        if b.lang != "tern" && b.lang != "toml" {
            continue;
        }
        let name = shown_file(&b).unwrap_or_else(|| {
            panic!("docs/tutorial.md:{}: a ```{} block without a `file: NAME` first line, so nothing checks it", b.line, b.lang)
        });
        let file = std::fs::read_to_string(files_dir().join(name))
            .unwrap_or_else(|e| panic!("docs/tutorial.md:{} shows docs/tutorial/{name}, which cannot be read: {e}", b.line));
        assert_eq!(b.text(), file, "docs/tutorial.md:{} shows docs/tutorial/{name} otherwise than it is", b.line);
        shown.push(name.to_string());
    }
    shown.sort();
    assert_eq!(shown, tutorial_files(), "the files of docs/tutorial/ and those the tutorial shows differ");
}

#[test]
fn the_programs_are_formatted() {
    let files: Vec<String> = tutorial_files().into_iter().filter(|f| f.ends_with(".tern")).collect();
    assert!(files.len() >= 4, "{files:?}");
    let mut args = vec!["fmt".to_string(), "--check".to_string()];
    args.extend(files.iter().cloned());
    let (code, out, err) = run(&files_dir(), &args, "", COMMAND_TIMEOUT);
    assert_eq!(code, Some(0), "not in Tern's style (run `tern fmt` on them):\n{out}{err}");
}

/// A line as the check compares it: every number (digits, with `.` or `,` inside, a
/// list of them, or a size with its unit) is `#`, a process's status is `<status>`,
/// and spaces are single.
fn shape(line: &str) -> String {
    let mut s = String::new();
    for c in line.chars() {
        if !c.is_ascii_digit() {
            s.push(c);
        } else if !s.ends_with('#') {
            s.push('#');
        }
    }
    loop {
        let t = s.replace("#.#", "#").replace("#,#", "#").replace("#, #", "#");
        if t == s {
            break;
        }
        s = t;
    }
    let mut out: Vec<&str> = Vec::new();
    for w in s.split_whitespace() {
        if ["B", "KiB", "MiB", "GiB"].contains(&w) && out.last().is_some_and(|p| p.ends_with('#')) {
            continue;
        }
        out.push(if ["running", "waiting", "io", "frozen"].contains(&w) { "<status>" } else { w });
    }
    out.join(" ")
}

/// Whether `line` has the shape of the shown `pattern` (both through [`shape`]), where
/// `…` in the pattern stands for anything.
fn matches(pattern: &str, line: &str) -> bool {
    let (pattern, line) = (shape(pattern), shape(line));
    let parts: Vec<&str> = pattern.split('…').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == line;
    }
    if line.len() < first.len() + last.len() || !line.starts_with(first) || !line.ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

/// A shown line that only says lines were left out.
fn is_omission(line: &str) -> bool {
    matches!(line.trim(), "…" | "...")
}

/// The first shown line (of those not left out) that is not, in order, a line of
/// `actual`.
fn first_missing<'a>(shown: &'a [String], actual: &str) -> Option<&'a str> {
    let actual: Vec<&str> = actual.lines().collect();
    let mut at = 0;
    for s in shown.iter().filter(|s| !is_omission(s)) {
        match actual[at..].iter().position(|a| matches(s, a)) {
            Some(i) => at += i + 1,
            None => return Some(s),
        }
    }
    None
}

#[test]
fn shapes_are_compared_as_the_tutorial_says() {
    assert!(matches("1.3          a          waiting          4006        391        0", "1.12 a running 80 391 0"));
    assert!(matches("  pre-copy rounds (pages)   391", "  pre-copy rounds (pages) 391, 12, 2"));
    assert!(matches("1.3 b waiting 0% 2002 1.5 MiB 1.5 MiB 0 4", "1.2 b io 12% 2 1.5 MiB 20.0 KiB 0 1"));
    assert!(matches("  …/certs/ca.pem", "  /tmp/x/tern-tutorial/certs/ca.pem"));
    assert!(matches("a| node a (id 1) listening on 127.0.0.1:7401", "a| node a (id 1) listening on 127.0.0.1:40123"));
    assert!(!matches("a| tick 7 on node b", "a| tick 7 on node a"));
    assert!(!matches("  outcome committed", "  outcome aborted"));
    assert!(!matches("  …/certs/ca.pem", "  /tmp/x/certs/ca.key"));
    let shown: Vec<String> = ["x 1", "…", "z 3"].map(String::from).to_vec();
    assert_eq!(first_missing(&shown, "x 10\ny 2\nz 30\n"), None);
    assert_eq!(first_missing(&shown, "z 3\nx 1\n"), Some("z 3"));
    // Log lines: each node's in order, each shown line a line of its own.
    let nodes: Vec<String> = ["a", "b"].map(String::from).to_vec();
    let b =
        Block { lang: "text".into(), lines: ["a| tick 1 on node a", "b| up", "a| tick 2 on node a"].map(String::from).to_vec(), line: 1 };
    assert_eq!(first_missing_in_log(&b, &nodes, "b| up\na| tick 1 on node a\na| tick 2 on node a\n"), None);
    assert_eq!(first_missing_in_log(&b, &nodes, "a| tick 1 on node a\nb| up\n"), Some("a| tick 2 on node a"));
}

/// Whether `cmd` only asks the mesh something, so that running it again changes
/// nothing.
fn only_asks(cmd: &str) -> bool {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    matches!(words.as_slice(), ["tern", "ctl", "--config", _, "nodes" | "ps" | "policy"] | ["tern", "ctl", "--config", _, "top", "--once"])
}

/// Checks a command's output against the ```text block shown after it.
fn check_output(session: &Session, cmd: &str, output: &Output, b: &Block) {
    if cmd.starts_with("tern run ") {
        assert_eq!(output.out, b.text(), "docs/tutorial.md:{}: `{cmd}` does not print what the tutorial shows", b.line);
        return;
    }
    let mut actual = format!("{}{}", output.out, output.err);
    // A table of a running mesh may show a moment the tutorial's does not (a process
    // caught running): ask again, a few times, for a command that only asks.
    let mut tries = 1;
    while first_missing(&b.lines, &actual).is_some() && only_asks(cmd) && tries < 5 {
        std::thread::sleep(Duration::from_millis(500));
        let (code, out, err) = run(&session.dir, &session.args(cmd), "", COMMAND_TIMEOUT);
        assert_eq!(code, Some(0), "`{cmd}` failed when asked again:\n{out}{err}");
        actual = format!("{out}{err}");
        tries += 1;
    }
    if let Some(line) = first_missing(&b.lines, &actual) {
        panic!("docs/tutorial.md:{}: `{cmd}` printed no line like {line:?} (in the order shown):\n{actual}", b.line);
    }
}

/// Whether every line of a block (but those left out) is a node's log line: `a| ...`.
fn is_mesh_log(b: &Block, nodes: &[String]) -> bool {
    let lines: Vec<&String> = b.lines.iter().filter(|l| !is_omission(l)).collect();
    !lines.is_empty() && lines.iter().all(|l| nodes.iter().any(|n| l.starts_with(&format!("{n}| "))))
}

/// The first line of a block of node log lines that has not turned up in the mesh's
/// output `log`: each node's lines in the order shown (a node writes its log in order;
/// the nodes write at once, so lines of different nodes may come in any order).
fn first_missing_in_log<'a>(b: &'a Block, nodes: &[String], log: &str) -> Option<&'a str> {
    nodes.iter().find_map(|n| {
        let prefix = format!("{n}| ");
        let shown: Vec<String> = b.lines.iter().filter(|l| l.starts_with(&prefix)).cloned().collect();
        let logged: String = log.lines().filter(|l| l.starts_with(&prefix)).map(|l| format!("{l}\n")).collect();
        let missing = first_missing(&shown, &logged)?;
        b.lines.iter().find(|l| l.as_str() == missing).map(String::as_str)
    })
}

/// Waits until every line of a block of node log lines has turned up in the mesh's
/// output.
fn wait_for_log(session: &Session, b: &Block, nodes: &[String]) {
    assert!(session.mesh.is_some(), "docs/tutorial.md:{}: node log lines before `tern mesh up`", b.line);
    let deadline = Instant::now() + LOG_TIMEOUT;
    loop {
        let log = session.mesh_log_text();
        let Some(missing) = first_missing_in_log(b, nodes, &log) else { return };
        assert!(
            Instant::now() < deadline,
            "docs/tutorial.md:{}: the mesh's output shows no line like {missing:?} (in the order shown) within {LOG_TIMEOUT:?}:\n{log}\n{}",
            b.line,
            session.log
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A compile error as `tern check` prints it: `error: ...`, then ` --> FILE:LINE:COL`.
fn diagnostic_file(b: &Block) -> Option<String> {
    let at = b.lines.get(1)?.trim().strip_prefix("--> ")?;
    (b.lines[0].starts_with("error: ")).then(|| at.split(':').next().unwrap_or("").to_string())
}

/// Writes the source lines a compile error shows (`2 | ...`) at their lines of its
/// file, the others empty, and checks that `tern check` says exactly that.
fn check_diagnostic(session: &Session, name: &str, b: &Block) {
    let mut source: Vec<String> = Vec::new();
    for l in &b.lines {
        if let Some((n, text)) = l.split_once(" | ") {
            if let Ok(n) = n.trim().parse::<usize>() {
                if source.len() < n {
                    source.resize(n, String::new());
                }
                source[n - 1] = text.to_string();
            }
        }
    }
    assert!(!source.is_empty(), "docs/tutorial.md:{}: a compile error that shows no source line", b.line);
    let path = session.dir.join(name);
    assert!(!path.exists(), "docs/tutorial.md:{}: {name} is one of the tutorial's files", b.line);
    std::fs::write(&path, source.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let (code, out, err) = run(&session.dir, &["check".to_string(), name.to_string()], "", COMMAND_TIMEOUT);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(code, Some(2), "docs/tutorial.md:{}: `tern check {name}` should fail to compile:\n{out}{err}", b.line);
    assert_eq!(err, b.text(), "docs/tutorial.md:{}: `tern check {name}` says otherwise", b.line);
}

/// Runs `tern dashboard ...` as shown, on a free port, until it serves its page.
fn check_dashboard(session: &Session, cmd: &str, b: &Block) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut args = session.args(cmd);
    args.extend(["--listen".to_string(), format!("127.0.0.1:{port}")]);
    let log = session.dir.join("../dashboard.log");
    let out = std::fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let _dashboard = Guard(Some(
        Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(&args)
            .current_dir(&session.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("tern dashboard starts"),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = std::net::TcpStream::connect(("127.0.0.1", port)).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
            let mut r = String::new();
            s.read_to_string(&mut r).ok()?;
            Some(r)
        });
        if page.as_deref().is_some_and(|p| p.starts_with("HTTP/1.1 200")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "docs/tutorial.md:{}: `{cmd}` served no page on port {port}: {page:?}\n{}",
            b.line,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_tutorial_commands_work_as_written() {
    let all = blocks(TUTORIAL);
    // The pids the tutorial shows `spawn` printing stand for the real ones.
    let shown_pids: Vec<&str> = all
        .iter()
        .filter(|b| b.lang == "text")
        .flat_map(|b| b.lines.iter())
        .filter_map(|l| l.split("started <pid ").nth(1).and_then(|s| s.split('>').next()))
        .collect();
    assert!(!shown_pids.is_empty(), "the tutorial shows no `tern ctl spawn`");

    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("tern-tutorial");
    copy_dir(&files_dir(), &work);
    move_ports(&work.join("mesh.toml"), "docs/tutorial/mesh.toml", &["7401", "7402", "7403"]);
    let nodes: Vec<String> =
        tern_net::config::MeshConfig::load(&work.join("mesh.toml")).unwrap().nodes.iter().map(|n| n.name.clone()).collect();

    let mut session = Session::new(&work, &dir.path().join("mesh.log"), "the tutorial", &shown_pids);
    // The last command of the block just before, and its output (none for `mesh up`).
    let mut before: Option<(String, Option<Output>)> = None;
    let mut checked = Vec::new();
    let mut unchecked = Vec::new();
    let mut run_files = Vec::new();
    let mut spawned_files = Vec::new();
    for b in &all {
        match b.lang.as_str() {
            "sh" => {
                before = None;
                for cmd in b.lines.iter().filter_map(|l| sh_command(l)) {
                    if NOT_RUN.contains(&cmd.as_str()) {
                        before = None;
                        continue;
                    }
                    assert!(cmd.starts_with("tern "), "docs/tutorial.md:{}: `{cmd}` is neither a tern command nor in NOT_RUN", b.line);
                    let words: Vec<&str> = cmd.split_whitespace().collect();
                    if words[1] == "run" {
                        run_files.push(words[2].to_string());
                    } else if words.get(1..3) == Some(&["ctl", "--config"][..]) && words.get(4) == Some(&"spawn") {
                        spawned_files.push(words[5].to_string());
                    }
                    let out = session.step(&cmd, "");
                    before = Some((cmd, out));
                }
                continue;
            }
            "text" => {
                if is_mesh_log(b, &nodes) {
                    wait_for_log(&session, b, &nodes);
                    checked.push(format!("{}: the mesh's output", b.line));
                } else if let Some(name) = diagnostic_file(b) {
                    check_diagnostic(&session, &name, b);
                    checked.push(format!("{}: `tern check {name}`", b.line));
                } else if b.lines.len() == 1 && b.lines[0].starts_with("tern dashboard ") {
                    check_dashboard(&session, &b.lines[0], b);
                    checked.push(format!("{}: `{}` serves its page", b.line, b.lines[0]));
                } else if let Some((cmd, out)) = &before {
                    let out = out.as_ref().unwrap_or_else(|| panic!("docs/tutorial.md:{}: `{cmd}` prints nothing here", b.line));
                    check_output(&session, cmd, out, b);
                    if cmd.starts_with("tern run ") {
                        run_files.retain(|f| !cmd.ends_with(f.as_str()));
                        checked.push(format!("{}: `{cmd}` exactly", b.line));
                    } else {
                        checked.push(format!("{}: `{cmd}`", b.line));
                    }
                } else {
                    unchecked.push(b.line);
                }
            }
            _ => {}
        }
        before = None;
    }
    eprintln!("{}\nchecked what the tutorial shows at lines:\n  {}", session.log, checked.join("\n  "));
    assert!(unchecked.is_empty(), "```text blocks at lines {unchecked:?} of docs/tutorial.md are checked by nothing");
    assert!(run_files.is_empty(), "`tern run` of {run_files:?} is not followed by the output it prints");
    // Every program is either run, and its output checked, or spawned on the mesh.
    for f in tutorial_files().iter().filter(|f| f.ends_with(".tern")) {
        let run = checked.iter().any(|c| c.contains(&format!("`tern run {f}` exactly")));
        assert!(run || spawned_files.contains(f), "docs/tutorial/{f} is neither run with its output shown nor spawned");
    }
    assert!(session.mesh.is_some(), "the tutorial starts no mesh");
    assert!(session.log.contains("outcome") && session.log.contains("committed"), "no migration committed:\n{}", session.log);
}
