//! `tern repl`: Tern statements and expressions, and mesh commands, against a node.
//!
//! Each line you type runs as a process on the node (its output comes back here, also
//! from the processes it spawns anywhere in the mesh). A bare expression is printed.
//! Functions, imports and `let`s you define are kept and put before every later line,
//! so later lines can use them (a kept `let` runs again before each line).

use crate::config::MeshConfig;
use crate::ops::cmd::{parse_pid, program_request};
use crate::ops::ctl::CtlClient;
use crate::ops::report::{nodes_table, ps_table, report_table};
use crate::proto::mechanism::{Forwarding, How, Mechanism};
use crate::proto::wire::{CtlReply, CtlRequest};
use crate::runner::compile_text;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::Helper;
use std::io::Write;
use tern_vm::value::name_text;

const COMMANDS: &[(&str, &str)] = &[
    (":help", "this list"),
    (":load FILE", "keep the functions, imports and lets of FILE for later lines (without running it)"),
    (":spawn FILE [--on NODE]", "start FILE as a process (on NODE, default this one)"),
    (":ps [NODE]", "processes: pid, node, status, reductions, heap pages, mailbox length"),
    (":nodes", "nodes: name, address, up/down, processes, load"),
    (":kill PID", "end a process"),
    (
        ":migrate PID NODE [--mechanism M] [--forwarding F] [--group]",
        "move a running process (--group: with its coprocess group) to NODE (M: {mechanisms}; F: {forwardings}) and show what it did",
    ),
    (":send PID VALUE", "send VALUE (a Tern expression) to a process"),
    (":input TEXT", "a line of console input for the programs started here (their read_line())"),
    (":eof", "end their console input (read_line() gives nil)"),
    (":quit", "leave (or Ctrl-D)"),
];

struct ReplHelper;

impl Completer for ReplHelper {
    type Candidate = Pair;
    fn complete(&self, line: &str, pos: usize, _: &rustyline::Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        if !head.starts_with(':') || head.contains(' ') {
            return Ok((pos, Vec::new()));
        }
        let c = COMMANDS
            .iter()
            .map(|(c, _)| c.split(' ').next().unwrap_or(c))
            .filter(|c| c.starts_with(head))
            .map(|c| Pair { display: c.to_string(), replacement: format!("{c} ") })
            .collect();
        Ok((0, c))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}
impl Highlighter for ReplHelper {}
impl Validator for ReplHelper {}
impl Helper for ReplHelper {}

/// The declarations of a source text worth keeping: `fn` items, `import`s and one-line
/// top-level `let`s.
pub fn declarations(source: &str) -> String {
    let mut out = String::new();
    let mut depth: i64 = 0;
    let mut in_fn = false;
    for line in source.lines() {
        if in_fn {
            out.push_str(line);
            out.push('\n');
            depth += braces(line);
            if depth <= 0 {
                in_fn = false;
            }
            continue;
        }
        if line.starts_with("fn ") {
            out.push_str(line);
            out.push('\n');
            depth = braces(line);
            in_fn = depth > 0;
        } else if line.starts_with("import ") || (line.starts_with("let ") && line.trim_end().ends_with(';')) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The change in `{`/`}` nesting a line makes (outside strings, up to a `//` comment).
fn braces(line: &str) -> i64 {
    let mut d = 0;
    let mut in_str = false;
    let mut esc = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            _ if esc => esc = false,
            '\\' if in_str => esc = true,
            '"' => in_str = !in_str,
            '{' if !in_str => d += 1,
            '}' if !in_str => d -= 1,
            '/' if !in_str && chars.peek() == Some(&'/') => break,
            _ => {}
        }
    }
    d
}

/// Whether a typed line is a statement (else an expression, to print).
fn is_statement(line: &str) -> bool {
    let t = line.trim();
    let first = t.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or("");
    matches!(first, "let" | "fn" | "import" | "if" | "while" | "for" | "return" | "break" | "continue" | "try" | "throw")
        || t.ends_with(';')
        || t.ends_with('}')
}

struct Session {
    client: CtlClient,
    prelude: String,
}

impl Session {
    fn run(&self, req: &CtlRequest) -> Result<Option<(String, bool)>, String> {
        let mut out = None;
        let mut err = None;
        self.client.request(req, |r| match r {
            CtlReply::Ended { reason, failed, lines, .. } => {
                out = Some((reason, failed, lines));
                false
            }
            CtlReply::Spawned { pid, node } => {
                if !matches!(req, CtlRequest::Spawn { wait: true, .. }) {
                    println!("started <pid {}> on node {node}", name_text(pid));
                }
                true
            }
            CtlReply::Error(e) => {
                err = Some(e);
                false
            }
            _ => true,
        })?;
        match (err, out) {
            (Some(e), _) => Err(e),
            (None, Some((reason, failed, lines))) => {
                // Output travels on its own stream: wait for all that came before the answer.
                self.client.await_console(lines);
                Ok(Some((reason, failed)))
            }
            (None, None) => Ok(None),
        }
    }

    fn eval(&mut self, line: &str) -> Result<(), String> {
        let stmt = is_statement(line);
        let body = if stmt { format!("{line}\n") } else { format!("println({line});\n") };
        let source = format!("{}{}", self.prelude, body);
        let p = compile_text("repl", &source).map_err(|e| e.rendered)?;
        let req = CtlRequest::Spawn { modules: p.modules.iter().map(|m| m.encode()).collect(), main: p.main, on: None, wait: true };
        let ended = self.run(&req)?;
        match ended {
            Some((_, false)) => {
                let keep = declarations(&body);
                if stmt && !keep.is_empty() {
                    self.prelude.push_str(&keep);
                }
                Ok(())
            }
            Some((reason, true)) => Err(reason),
            None => Err("the node did not say how it ended".into()),
        }
    }

    fn command(&mut self, line: &str) -> Result<bool, String> {
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or("");
        let rest: Vec<&str> = words.collect();
        match cmd {
            ":help" | ":h" => {
                for (c, what) in COMMANDS {
                    println!(
                        "  {c:<26} {}",
                        what.replace("{mechanisms}", &Mechanism::names(", ")).replace("{forwardings}", &Forwarding::names(", "))
                    );
                }
                println!("  anything else is Tern: a statement runs, an expression is printed");
            }
            ":quit" | ":q" | ":exit" => return Ok(false),
            ":load" => {
                let [file] = rest[..] else { return Err("usage: :load FILE".into()) };
                let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
                let decls = declarations(&text);
                let candidate = format!("{}{}", self.prelude, decls);
                compile_text(file, &candidate).map_err(|e| e.rendered)?;
                let fns = decls.lines().filter(|l| l.starts_with("fn ")).count();
                self.prelude = candidate;
                println!("loaded {fns} function{} from {file}", if fns == 1 { "" } else { "s" });
            }
            ":spawn" => {
                let (file, on) = match rest[..] {
                    [f] => (f, None),
                    [f, "--on", n] => (f, Some(n.to_string())),
                    _ => return Err("usage: :spawn FILE [--on NODE]".into()),
                };
                let req = program_request(std::path::Path::new(file), on, false)?;
                self.run(&req)?;
            }
            ":ps" => {
                let node = rest.first().map(|s| s.to_string());
                match self.client.call(&CtlRequest::Ps { node })? {
                    CtlReply::Ps(rows) => print!("{}", ps_table(&rows)),
                    CtlReply::Error(e) => return Err(e),
                    _ => return Err("unexpected reply".into()),
                }
            }
            ":nodes" => match self.client.call(&CtlRequest::Nodes)? {
                CtlReply::Nodes(rows) => print!("{}", nodes_table(&rows)),
                CtlReply::Error(e) => return Err(e),
                _ => return Err("unexpected reply".into()),
            },
            ":migrate" => {
                let usage = &format!(
                    "usage: :migrate PID NODE [--mechanism {}] [--forwarding {}] [--group] [--json] [--metrics-out FILE]",
                    Mechanism::names("|"),
                    Forwarding::names("|")
                );
                let (mut pos, mut how, mut json, mut metrics) = (Vec::new(), How::default(), false, None);
                let mut it = rest.iter();
                while let Some(a) = it.next() {
                    match *a {
                        "--mechanism" => how.mechanism = Some(it.next().ok_or(usage.as_str())?.parse::<Mechanism>()?),
                        "--forwarding" => how.forwarding = Some(it.next().ok_or(usage.as_str())?.parse::<Forwarding>()?),
                        "--group" => how.group = true,
                        "--json" => json = true,
                        "--metrics-out" => metrics = Some(std::path::PathBuf::from(it.next().ok_or(usage.as_str())?)),
                        a if a.starts_with("--") => return Err(format!("unknown option {a}\n{usage}")),
                        a => pos.push(a),
                    }
                }
                let [pid, node] = pos[..] else { return Err(usage.to_string()) };
                let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
                let r = crate::ops::cmd::migrate(&self.client, parse_pid(pid)?, node, how, tty && !json, metrics.as_deref())?;
                if json {
                    println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
                } else {
                    print!("{}", report_table(&r));
                }
                if !r.ok {
                    return Err(format!("migration failed: {}", r.outcome));
                }
            }
            ":input" => {
                // The rest of the line as typed (after one space), spaces kept.
                let text = line.trim_start().strip_prefix(":input").unwrap_or("");
                let text = text.strip_prefix(' ').unwrap_or(text);
                self.client.call(&CtlRequest::Input { line: Some(text.to_string()) })?;
            }
            ":eof" => {
                self.client.call(&CtlRequest::Input { line: None })?;
            }
            ":kill" => {
                let [pid] = rest[..] else { return Err("usage: :kill PID".into()) };
                self.client.call(&CtlRequest::Kill { pid: parse_pid(pid)? })?;
            }
            ":send" => {
                if rest.len() < 2 {
                    return Err("usage: :send PID VALUE".into());
                }
                let pid = parse_pid(rest[0])?;
                let value = rest[1..].join(" ");
                self.eval(&format!("send(pid(\"{}\"), ({value}));", name_text(pid)))?;
            }
            other => return Err(format!("unknown command {other} (:help lists them)")),
        }
        Ok(true)
    }
}

/// `tern repl --config C [--node N] [--connect-timeout S]`.
pub fn repl(cfg: &MeshConfig, node: Option<&str>, connect_timeout: std::time::Duration) -> Result<(), String> {
    let client = CtlClient::connect(cfg, node, connect_timeout)?;
    client.open_console(move |pid, text, failed| {
        if failed {
            eprintln!("<pid {}> failed: {}", name_text(pid), text.trim_end());
        } else {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    })?;
    println!("tern repl: connected to node {} (:help for commands, Ctrl-D to leave)", client.node);
    let prompt = format!("{}> ", client.node);
    let mut s = Session { client, prelude: String::new() };
    let mut rl: rustyline::Editor<ReplHelper, rustyline::history::DefaultHistory> =
        rustyline::Editor::new().map_err(|e| format!("cannot start the line editor: {e}"))?;
    rl.set_helper(Some(ReplHelper));
    let history = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".tern_history"));
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    loop {
        match rl.readline(&prompt) {
            Ok(line) => {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let _ = rl.add_history_entry(line);
                let r = if line.starts_with(':') { s.command(line) } else { s.eval(line).map(|()| true) };
                match r {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => eprintln!("{}", e.trim_end()),
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(format!("cannot read a line: {e}")),
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    s.client.close();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_keep_functions_imports_and_lets() {
        let src = "import math;\nlet N = 4;\nfn f(x) {\n    if x { \"}\" } // }\n    x\n}\nprint(f(1));\nfn g() { 1 }\n";
        assert_eq!(declarations(src), "import math;\nlet N = 4;\nfn f(x) {\n    if x { \"}\" } // }\n    x\n}\nfn g() { 1 }\n");
    }

    #[test]
    fn statements_and_expressions() {
        assert!(is_statement("let x = 1;"));
        assert!(is_statement("fn f() { 1 }"));
        assert!(is_statement("print(1);"));
        assert!(!is_statement("1 + 2"));
        assert!(!is_statement("f(3)"));
    }
}
