//! Running the commands a document shows, as a reader would type them: its fenced
//! blocks, the `tern` binary under test run in a scratch directory with a deadline for
//! every command, `tern mesh up` in the background until the [`Session`] ends, and a
//! pid a command printed (`started <pid 1.3> ...`) put in place of the document's
//! placeholder for it in the lines after. Used by `readme.rs` (README.md) and
//! `tutorial.rs` (docs/tutorial.md). Every child is killed when its guard is dropped,
//! also when a test fails.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long one command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a mesh may take to come up (every node seeing every other).
pub const MESH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// A fenced block of a Markdown document.
#[derive(Debug, Clone)]
pub struct Block {
    /// What follows the opening fence (`sh`, `text`, `tern`, ...; empty for none).
    pub lang: String,
    /// The lines between the fences, as written.
    pub lines: Vec<String>,
    /// The 1-based line of the document its opening fence is on.
    pub line: usize,
}

impl Block {
    /// Its text: its lines, each ended by a newline.
    pub fn text(&self) -> String {
        self.lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// The fenced blocks of `doc`, in order.
pub fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in doc.lines().enumerate() {
        let t = line.trim();
        if t.starts_with("```") {
            match open.take() {
                Some(b) => out.push(b),
                None => open = Some(Block { lang: t.trim_start_matches('`').trim().to_string(), lines: Vec::new(), line: i + 1 }),
            }
        } else if let Some(b) = open.as_mut() {
            b.lines.push(line.to_string());
        }
    }
    out
}

/// The command of one line of an `sh` block: trimmed, its ` # ` comment cut; `None`
/// for a blank line.
pub fn sh_command(line: &str) -> Option<String> {
    let cmd = line.trim().split(" # ").next().unwrap_or("").trim();
    (!cmd.is_empty()).then(|| cmd.to_string())
}

/// Every command of the `sh` blocks of `doc`, in order (comments cut).
pub fn sh_commands(doc: &str) -> Vec<String> {
    blocks(doc).iter().filter(|b| b.lang == "sh").flat_map(|b| b.lines.iter().filter_map(|l| sh_command(l))).collect()
}

/// Kills (and reaps) a child when dropped.
pub struct Guard(pub Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Copies a directory tree, leaving out any `certs` directory: certificates a reader
/// made are not the document's to use.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
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

/// Runs `tern` with `args` in `dir` with `stdin`, up to `timeout` (then kills it and
/// fails the test): exit code, stdout, stderr.
pub fn run(dir: &Path, args: &[String], stdin: &str, timeout: Duration) -> (Option<i32>, String, String) {
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
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Moves the mesh of the config at `cfg` off `ports` (each must be there, as
/// `127.0.0.1:PORT`) to free ones, so that nothing else on the machine is touched.
/// `name` is how a failure names the file.
pub fn move_ports(cfg: &Path, name: &str, ports: &[&str]) {
    let mut text = std::fs::read_to_string(cfg).unwrap();
    for port in ports {
        assert!(text.contains(port), "{name} no longer uses port {port}");
        text = text.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{}", free_port()));
    }
    std::fs::write(cfg, text).unwrap();
}

/// What a command printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: Option<i32>,
    pub out: String,
    pub err: String,
}

/// A reader's session: commands run one after the other in `dir`, as the document
/// shows them.
pub struct Session {
    /// Where the commands run (a scratch copy of what the document needs).
    pub dir: PathBuf,
    /// Where `tern mesh up` writes its output.
    pub mesh_log: PathBuf,
    /// How failures name the document: "the README".
    pub what: String,
    /// Arguments that stand for the pid a line before printed (`1.N`).
    pub placeholders: Vec<String>,
    /// `tern mesh up`, once started.
    pub mesh: Option<Guard>,
    pub last_pid: Option<String>,
    /// Every command run so far and what it printed.
    pub log: String,
}

impl Session {
    pub fn new(dir: &Path, mesh_log: &Path, what: &str, placeholders: &[&str]) -> Session {
        Session {
            dir: dir.to_path_buf(),
            mesh_log: mesh_log.to_path_buf(),
            what: what.to_string(),
            placeholders: placeholders.iter().map(|p| p.to_string()).collect(),
            mesh: None,
            last_pid: None,
            log: String::new(),
        }
    }

    /// The arguments of `cmd` (`tern ...`, as typed), placeholders replaced by the pid
    /// printed last.
    pub fn args(&self, cmd: &str) -> Vec<String> {
        let mut args: Vec<String> = cmd.split_whitespace().skip(1).map(str::to_string).collect();
        for a in args.iter_mut() {
            if self.placeholders.contains(a) {
                *a = self.last_pid.clone().unwrap_or_else(|| panic!("`{cmd}` needs the pid a line before printed:\n{}", self.log));
            }
        }
        args
    }

    /// Runs `cmd` (`tern ...`), which must succeed, with `stdin` as its input, and
    /// returns what it printed; `tern mesh up` instead starts in the background, is
    /// waited for until every node sees every other, and gives `None`.
    pub fn step(&mut self, cmd: &str, stdin: &str) -> Option<Output> {
        let args = self.args(cmd);
        if args.first().map(String::as_str) == Some("mesh") {
            self.mesh_up(cmd, &args);
            return None;
        }
        let (code, out, err) = run(&self.dir, &args, stdin, COMMAND_TIMEOUT);
        self.log.push_str(&format!("$ {cmd}\n{out}{err}"));
        assert_eq!(code, Some(0), "`{cmd}` failed:\n{}", self.log);
        if let Some(p) = out.split("started <pid ").nth(1).and_then(|s| s.split('>').next()) {
            self.last_pid = Some(p.to_string());
        }
        Some(Output { code, out, err })
    }

    fn mesh_up(&mut self, cmd: &str, args: &[String]) {
        let config = args.iter().position(|a| a == "--config").and_then(|i| args.get(i + 1)).expect("`tern mesh up --config FILE`");
        let names: Vec<String> = tern_net::config::MeshConfig::load(&self.dir.join(config))
            .unwrap_or_else(|e| panic!("`{cmd}`: {e}"))
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .collect();
        let out = std::fs::File::create(&self.mesh_log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("tern mesh up starts");
        self.mesh = Some(Guard(Some(child)));
        // Up when each node sees all of them.
        let deadline = Instant::now() + MESH_UP_TIMEOUT;
        let ask = |n: &str| {
            let a: Vec<String> = ["ctl", "--config", config, "--node", n, "--json", "nodes"].map(String::from).to_vec();
            run(&self.dir, &a, "", Duration::from_secs(20))
        };
        while !names.iter().all(|n| {
            let (code, out, _) = ask(n);
            code == Some(0) && out.matches("\"up\"").count() == names.len()
        }) {
            assert!(Instant::now() < deadline, "{}'s mesh did not come up:\n{}", self.what, self.mesh_log_text());
            std::thread::sleep(Duration::from_millis(200));
        }
        self.log.push_str(&format!("$ {cmd} (in the background)\n"));
    }

    /// What `tern mesh up` has printed so far.
    pub fn mesh_log_text(&self) -> String {
        std::fs::read_to_string(&self.mesh_log).unwrap_or_default()
    }
}
