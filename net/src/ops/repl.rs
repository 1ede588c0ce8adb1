//! `tern repl`: Tern statements and expressions, and mesh commands, against a node.
//!
//! The REPL is a process on the node, as Erlang's and Elixir's shells are: one shell
//! process per session runs every line you type (so `self()` is the same on every line,
//! and messages sent to it wait in its mailbox until a line receives them or `flush()`
//! prints them). Each line is compiled as a module (`snippet.rs`: its errors quote what
//! you typed) and run in the shell (`tern_vm::node` `shell.rs`); a line ending in an
//! expression prints it. Names a line binds (`let`, `fn`) keep their values for later
//! lines: the shell keeps each line's globals, and later lines read them from there, so a
//! binding is evaluated once. Ctrl-C while a line runs ends that line with the error
//! `interrupted` (where it was); the shell process, its mailbox and bindings stay. Should
//! the shell process itself end (`exit()`, killed), a new one starts. Output from
//! processes (the shell's, and those started from here anywhere in the mesh) is printed
//! above the prompt.

use crate::config::MeshConfig;
use crate::ops::cmd::{parse_pid, program_request};
use crate::ops::ctl::{ConnectOpts, CtlClient};
use crate::ops::report::{nodes_table, ps_table, report_table};
use crate::ops::snippet::{relabel, Snippet};
use crate::proto::mechanism::{Choice, Forwarding, How};
use crate::proto::wire::{CtlReply, CtlRequest, LineOutcome};
use crate::runner::compile_text;
use parking_lot::Mutex;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{ExternalPrinter, Helper};
use std::io::Write;
use std::sync::Arc;
use tern_vm::value::name_text;

const COMMANDS: &[(&str, &str)] = &[
    (":help", "this list"),
    (":load FILE", "bind the functions, imports and one-line lets of FILE for later lines (its other statements do not run)"),
    (":spawn FILE [--on NODE]", "start FILE as a process (on NODE, default the least loaded node)"),
    (":ps [NODE]", "processes: pid, node, status, reductions, heap pages, mailbox length"),
    (":nodes", "nodes: name, address, up/down, processes, load"),
    (":kill PID", "end a process"),
    (":top [N]", "each node's load and the N busiest processes (default 20)"),
    (":policy [on|off|set KEY VALUE]", "the load policy on every node and its recent decisions; on, off and set change it everywhere"),
    (":drain NODE", "move every movable process off NODE; it then takes no new processes (pinned ones stay)"),
    (":undrain NODE", "have a drained NODE take new processes again"),
    (
        ":migrate PID NODE [--mechanism M] [--forwarding F] [--group]",
        "move a running process (--group: with its coprocess group) to NODE (M: {mechanisms}; F: {forwardings}) and show what it did",
    ),
    (":send PID VALUE", "send VALUE (a Tern expression) to a process"),
    (":input TEXT", "a line of console input for the programs started here (their read_line())"),
    (":eof", "end their console input (read_line() gives nil)"),
    (":self", "the shell process's pid (what self() gives on every line)"),
    (":flush", "print and empty the shell's mailbox (as flush())"),
    (":doc NAME", "what a native, a function or module.member does"),
    (":quit", "leave (or Ctrl-D)"),
];

/// What the line editor completes from: the REPL's commands, the names in scope and the
/// members of imported modules.
#[derive(Default)]
struct Names {
    /// Natives, the REPL's own functions, and every binding made so far.
    names: Vec<String>,
    /// Imported modules and their members.
    modules: Vec<(String, Vec<String>)>,
}

struct ReplHelper {
    names: Arc<Mutex<Names>>,
}

impl Completer for ReplHelper {
    type Candidate = Pair;
    fn complete(&self, line: &str, pos: usize, _: &rustyline::Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        if head.starts_with(':') && !head.contains(' ') {
            let c = COMMANDS
                .iter()
                .map(|(c, _)| c.split(' ').next().unwrap_or(c))
                .filter(|c| c.starts_with(head))
                .map(|c| Pair { display: c.to_string(), replacement: format!("{c} ") })
                .collect();
            return Ok((0, c));
        }
        // The word before the cursor: a name, or `module.` and the start of a member.
        let start = head.rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')).map_or(0, |i| i + 1);
        let word = &head[start..];
        let names = self.names.lock();
        let mut out: Vec<Pair> = match word.split_once('.') {
            Some((module, member)) => names
                .modules
                .iter()
                .filter(|(m, _)| m == module)
                .flat_map(|(_, ms)| ms.iter())
                .filter(|m| m.starts_with(member))
                .map(|m| Pair { display: m.clone(), replacement: m.clone() })
                .collect(),
            None if word.is_empty() && !head.starts_with(':') => Vec::new(),
            None => names
                .names
                .iter()
                .chain(names.modules.iter().map(|(m, _)| m))
                .filter(|n| n.starts_with(word))
                .map(|n| Pair { display: n.clone(), replacement: n.clone() })
                .collect(),
        };
        out.sort_by(|a, b| a.display.cmp(&b.display));
        out.dedup_by(|a, b| a.display == b.display);
        let at = match word.rfind('.') {
            Some(i) => start + i + 1,
            None => start,
        };
        Ok((at, out))
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
    let keep = declaration_lines(source);
    let mut out = String::new();
    for (i, line) in source.lines().enumerate() {
        if keep.contains(&i) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The (0-based) numbers of the lines [`declarations`] keeps.
fn declaration_lines(source: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut depth: i64 = 0;
    let mut in_fn = false;
    for (i, line) in source.lines().enumerate() {
        if in_fn {
            out.push(i);
            depth += braces(line);
            if depth <= 0 {
                in_fn = false;
            }
            continue;
        }
        if line.starts_with("fn ") {
            out.push(i);
            depth = braces(line);
            in_fn = depth > 0;
        } else if line.starts_with("import ") || (line.starts_with("let ") && line.trim_end().ends_with(';')) {
            out.push(i);
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

/// The shell process's loop (see `tern_vm::node` `shell.rs`): each line's globals are
/// kept in `__env`.
const SHELL_LOOP: &str = "let __env = {};
while true {
    try {
        let m = __shell_next();
        for k in keys(m) { __env[k] = m[k]; }
    } catch e {
        __shell_failed(e);
    }
}
";

/// Functions of the REPL's own, before every line.
const BUILTINS: &str = "fn flush() {
    let n = 0;
    while true {
        let m = recv(0);
        if is_timeout(m) { break; }
        println(m);
        n += 1;
    }
    n
}
";

/// The words that begin a statement (else a typed line ends with an expression, printed).
const STATEMENT_WORDS: &[&str] = &["let", "fn", "import", "if", "while", "for", "return", "break", "continue", "try", "throw"];

/// Whether a piece of a typed line (after its last top-level `;`) is a statement: it
/// begins with a statement's word, is a block-ending construct, or assigns.
fn is_statement(piece: &str) -> bool {
    let t = piece.trim();
    let first = t.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or("");
    STATEMENT_WORDS.contains(&first) || (t.ends_with('}') && !t.starts_with('{')) || assigns(t)
}

/// Whether text has an assignment (`=`, `+=`, ...) outside brackets and strings.
fn assigns(t: &str) -> bool {
    let b = t.as_bytes();
    let mut depth = 0i32;
    let mut in_str = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            _ if in_str => {}
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b'=' if depth == 0 => {
                let prev = if i > 0 { b[i - 1] } else { b' ' };
                let next = b.get(i + 1).copied().unwrap_or(b' ');
                if next != b'=' && next != b'>' && !matches!(prev, b'=' | b'!' | b'<' | b'>') {
                    return true;
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// Where the expression a typed line ends with begins (it is printed), or `None` when
/// the line is all statements: the text after its last top-level `;`.
fn final_expression(line: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut in_str = false;
    let mut esc = false;
    let mut last = None;
    let mut chars = line.char_indices().peekable();
    let mut end = line.len();
    while let Some((i, ch)) = chars.next() {
        match ch {
            _ if esc => esc = false,
            '\\' if in_str => esc = true,
            '"' => in_str = !in_str,
            _ if in_str => {}
            '/' if chars.peek().map(|p| p.1) == Some('/') => {
                end = i;
                break;
            }
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ';' if depth == 0 => last = Some(i),
            _ => {}
        }
    }
    let from = last.map_or(0, |i| i + 1);
    let piece = &line[from..end];
    if piece.trim().is_empty() || is_statement(piece) {
        return None;
    }
    Some(from + (piece.len() - piece.trim_start().len()))
}

/// The top-level names a source text defines (`fn` and `let` at the start of a line, as
/// [`declarations`] finds them, and every `let`/`fn` of a one-line text).
fn module_members(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in declarations(source).lines() {
        for kw in ["fn ", "let "] {
            if let Some(rest) = line.strip_prefix(kw) {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && !name.starts_with('_') {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// The comment lines just above `fn name` in a source text, without their `//`.
fn doc_comment(source: &str, name: &str) -> Option<String> {
    let lines: Vec<&str> = source.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.strip_prefix("fn ").is_some_and(|r| r.starts_with(name) && r[name.len()..].trim_start().starts_with('(')))?;
    let mut doc: Vec<&str> = lines[..at].iter().rev().take_while(|l| l.trim_start().starts_with("//")).copied().collect();
    doc.reverse();
    let sig = lines[at].trim_end().trim_end_matches('{').trim_end();
    let text: Vec<String> = doc.iter().map(|l| l.trim_start().trim_start_matches('/').trim().to_string()).collect();
    Some(if text.is_empty() { format!("{sig}\n  (no doc comment)") } else { format!("{sig}\n  {}", text.join("\n  ")) })
}

/// What LANGUAGE.md says of native `name`: the paragraph that shows `` `name(`` first.
fn native_doc(name: &str) -> Option<String> {
    let want = format!("`{name}(");
    tern_compiler::LANGUAGE_MD.split("\n\n").find(|p| p.contains(&want) && !p.trim_start().starts_with("```")).map(|p| p.trim().to_string())
}

struct Session {
    client: CtlClient,
    /// The mesh (a drain connects to the node drained).
    cfg: MeshConfig,
    connect: ConnectOpts,
    /// The shell process lines run in.
    shell: u64,
    /// The number of the next line typed (the REPL's own numbering, in its prompt).
    line_no: usize,
    /// `import` lines kept, with the names they bind.
    imports: Vec<String>,
    /// Names bound so far (their values are in the shell's `__env`).
    bound: Vec<String>,
    /// Each line's module name and where its source lines came from, for runtime errors.
    labels: Vec<(String, Vec<String>)>,
    /// Doc comments of functions from files loaded with `:load`.
    docs: Vec<(String, String)>,
    names: Arc<Mutex<Names>>,
}

impl Session {
    /// Starts a shell process (the first, or one after the last ended).
    fn start_shell(client: &CtlClient) -> Result<u64, String> {
        let p = compile_text("<shell>", SHELL_LOOP).map_err(|e| e.rendered)?;
        let req = CtlRequest::Shell { modules: p.modules.iter().map(|m| m.encode()).collect(), main: p.main };
        match client.call(&req)? {
            CtlReply::Spawned { pid, .. } => Ok(pid),
            CtlReply::Error(e) => Err(format!("cannot start the shell process: {e}")),
            other => Err(format!("cannot start the shell process: unexpected reply {other:?}")),
        }
    }

    /// A module for the shell: the REPL's functions, what earlier lines bound, and
    /// `body` (which adds the user's text).
    fn module(&self, body: impl FnOnce(&mut Snippet)) -> Snippet {
        let mut s = Snippet::new();
        s.ours(BUILTINS);
        for i in &self.imports {
            s.ours(i);
            s.ours("\n");
        }
        for n in &self.bound {
            s.ours(&format!("let {n} = __shell_env()[\"{n}\"];\n"));
        }
        body(&mut s);
        s
    }

    /// Runs a module in the shell process; on success keeps what it bound.
    fn run_in_shell(&mut self, s: &Snippet) -> Result<(), String> {
        let name = format!("repl#{}", self.labels.len() + 1);
        let p = s.compile(&name)?;
        self.labels.push((name.clone(), s.line_labels()));
        let req = CtlRequest::Eval { shell: self.shell, modules: p.modules.iter().map(|m| m.encode()).collect(), main: p.main };
        let shell = self.shell;
        let reply = self.client.call_interruptible(&req, || CtlRequest::Interrupt { shell })?;
        match reply {
            CtlReply::LineEnded { outcome, lines } => {
                // Output travels on its own stream: wait for all that came before the answer.
                self.client.await_console(lines);
                match outcome {
                    LineOutcome::Done => {
                        self.keep(&p, s.source());
                        Ok(())
                    }
                    LineOutcome::Failed(e) => Err(self.labels.iter().fold(e, |e, (module, labels)| relabel(&e, module, labels))),
                    LineOutcome::ShellEnded(reason) => {
                        // Its bindings' values went with it.
                        let old = self.shell;
                        self.shell = Session::start_shell(&self.client)?;
                        let gone = std::mem::take(&mut self.bound);
                        self.names.lock().names.retain(|n| !gone.contains(n) || n == "flush");
                        Err(format!(
                            "the shell process <pid {}> ended ({reason}), and with it its mailbox and bindings; the shell is now <pid {}>",
                            name_text(old),
                            name_text(self.shell)
                        ))
                    }
                }
            }
            CtlReply::Error(e) => Err(e),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    /// After a line ran: the names its module binds (its globals) are kept, and its
    /// imports.
    fn keep(&mut self, p: &tern_compiler::Compiled, source: &str) {
        let Some(m) = p.modules.iter().find(|m| m.hash() == p.main) else { return };
        let mut names = self.names.lock();
        for g in &m.globals {
            if g.starts_with("__") || self.bound.contains(g) {
                continue;
            }
            self.bound.push(g.clone());
            names.names.push(g.clone());
        }
        for line in source.lines() {
            let t = line.trim();
            if let Some(module) = t.strip_prefix("import ").map(|r| r.trim_end_matches(';').trim()) {
                if !self.imports.iter().any(|i| i == t) {
                    self.imports.push(t.to_string());
                    let members = tern_stdlib::module_source(module).map(|src| module_members(&src)).unwrap_or_default();
                    names.modules.push((module.to_string(), members));
                }
            }
        }
    }

    /// A typed line: statements run; a final expression is printed.
    fn eval(&mut self, line: &str) -> Result<(), String> {
        let n = self.line_no;
        let text = format!("{}{line}", "\n".repeat(n - 1));
        let at = n - 1;
        let s = self.module(|s| {
            let f = s.file("repl", &text);
            match final_expression(line) {
                Some(e) => {
                    if e > 0 {
                        s.theirs(f, at, e);
                        s.ours("\n");
                    }
                    s.ours("println(\n");
                    s.theirs(f, at + e, line.len() - e);
                    s.ours("\n);\n");
                }
                None => {
                    s.theirs(f, at, line.len());
                    let t = line.trim_end();
                    s.ours(if t.ends_with(';') || t.ends_with('}') { "\n" } else { ";\n" });
                }
            }
        });
        self.run_in_shell(&s)
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
                        what.replace("{mechanisms}", &Choice::names(", ")).replace("{forwardings}", &Forwarding::names(", "))
                    );
                }
                println!("  anything else is Tern: a statement runs, an expression is printed; flush() prints and empties the mailbox");
            }
            ":quit" | ":q" | ":exit" => return Ok(false),
            ":self" => println!("<pid {}>", name_text(self.shell)),
            ":flush" => self.eval("flush()")?,
            ":doc" => {
                let [name] = rest[..] else { return Err("usage: :doc NAME (a function, a native, or module.member)".into()) };
                println!("{}", self.doc(name)?);
            }
            ":load" => {
                let [file] = rest[..] else { return Err("usage: :load FILE".into()) };
                let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
                let mut fns = 0;
                let s = self.module(|s| {
                    let f = s.file(file, &text);
                    let mut off = 0;
                    for l in text.split_inclusive('\n') {
                        if declaration_offsets(&text).contains(&off) {
                            s.theirs(f, off, l.len());
                            if !l.ends_with('\n') {
                                s.ours("\n");
                            }
                            fns += usize::from(l.starts_with("fn "));
                        }
                        off += l.len();
                    }
                });
                self.run_in_shell(&s)?;
                for name in module_members(&text) {
                    if let Some(d) = doc_comment(&text, &name) {
                        self.docs.push((name, d));
                    }
                }
                println!("loaded {fns} function{} from {file}", if fns == 1 { "" } else { "s" });
            }
            ":spawn" => {
                let (file, on) = match rest[..] {
                    [f] => (f, Some("any".to_string())),
                    [f, "--on", n] => (f, Some(n.to_string())),
                    _ => return Err("usage: :spawn FILE [--on NODE]".into()),
                };
                let req = program_request(std::path::Path::new(file), on, false)?;
                match self.client.call(&req)? {
                    CtlReply::Spawned { pid, node } => println!("started <pid {}> on node {node}", name_text(pid)),
                    CtlReply::Error(e) => return Err(e),
                    other => return Err(format!("unexpected reply {other:?}")),
                }
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
                    Choice::names("|"),
                    Forwarding::names("|")
                );
                let (mut pos, mut how, mut json, mut metrics) = (Vec::new(), How::default(), false, None);
                let mut it = rest.iter();
                while let Some(a) = it.next() {
                    match *a {
                        "--mechanism" => how.mechanism = Some(it.next().ok_or(usage.as_str())?.parse::<Choice>()?),
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
            ":top" => {
                let n = match rest[..] {
                    [] => 20,
                    [n] => n.parse().map_err(|_| "usage: :top [N]".to_string())?,
                    _ => return Err("usage: :top [N]".into()),
                };
                let nodes = crate::ops::cmd::top(&self.client, n)?;
                print!("{}", crate::ops::report::top_table(&nodes, n as usize));
            }
            ":policy" => {
                let change = crate::ops::cmd::policy_change(&rest).map_err(|e| format!("{e} (as :policy)"))?;
                let (views, errors) = crate::ops::cmd::policy(&self.client, change, 20)?;
                print!("{}", crate::ops::report::policy_text(&views, &errors));
            }
            ":drain" | ":undrain" => {
                let [node] = rest[..] else { return Err(format!("usage: {cmd} NODE")) };
                let on = cmd == ":drain";
                let client = if node == self.client.node {
                    None
                } else {
                    Some(CtlClient::connect_as(&self.cfg, Some(node), &self.connect.identity, self.connect.timeout)?)
                };
                let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
                let r = crate::ops::cmd::drain(client.as_ref().unwrap_or(&self.client), on, tty);
                if let Some(c) = client {
                    c.close();
                }
                match r? {
                    Some(r) => print!("{}", crate::ops::report::drain_text(&r)),
                    None => println!("node {node} takes new processes again"),
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
                if let CtlReply::Error(e) = self.client.call(&CtlRequest::Kill { pid: parse_pid(pid)? })? {
                    return Err(e);
                }
            }
            ":send" => {
                if rest.len() < 2 {
                    return Err("usage: :send PID VALUE".into());
                }
                let pid = parse_pid(rest[0])?;
                // The value as typed: the rest of the line after the pid.
                let after_cmd = line.trim_start()[":send".len()..].trim_start();
                let value = after_cmd[rest[0].len()..].trim();
                let n = self.line_no;
                let text = format!("{}{value}", "\n".repeat(n - 1));
                let s = self.module(|s| {
                    let f = s.file("repl", &text);
                    s.ours(&format!("send(pid(\"{}\"), (\n", name_text(pid)));
                    s.theirs(f, n - 1, value.len());
                    s.ours("\n));\n");
                });
                self.run_in_shell(&s)?;
            }
            other => return Err(format!("unknown command {other} (:help lists them)")),
        }
        Ok(true)
    }

    /// `:doc NAME`.
    fn doc(&self, name: &str) -> Result<String, String> {
        if let Some((module, member)) = name.split_once('.') {
            let src = tern_stdlib::module_source(module).ok_or_else(|| format!("no standard module {module}"))?;
            return doc_comment(&src, member).ok_or_else(|| format!("{module} has no function {member}"));
        }
        if let Some((_, d)) = self.docs.iter().rev().find(|(n, _)| n == name) {
            return Ok(d.clone());
        }
        if self.bound.iter().any(|b| b == name) {
            return Ok(format!("{name}: bound at this REPL (no doc comment; `:load` a file to keep its functions' comments)"));
        }
        if let Some(d) = native_doc(name) {
            return Ok(d);
        }
        Err(format!("no doc for {name}: not a native, a function bound here, or module.member"))
    }
}

/// Byte offsets of the lines of a source text [`declarations`] keeps.
fn declaration_offsets(source: &str) -> Vec<usize> {
    let keep = declaration_lines(source);
    let mut out = Vec::new();
    let mut off = 0;
    for (i, l) in source.split_inclusive('\n').enumerate() {
        if keep.contains(&i) {
            out.push(off);
        }
        off += l.len();
    }
    out
}

/// Prints output from processes on the console above the prompt (when there is a
/// terminal and a prompt), else straight to stdout.
type Printer = Arc<Mutex<Option<Box<dyn ExternalPrinter + Send>>>>;

fn print_out(printer: &Printer, text: String) {
    if let Some(p) = printer.lock().as_mut() {
        if p.print(text.clone()).is_ok() {
            return;
        }
    }
    print!("{text}");
    let _ = std::io::stdout().flush();
}

/// `tern repl --config C [--node N] [--connect-timeout S]`.
pub fn repl(cfg: &MeshConfig, node: Option<&str>, connect: &ConnectOpts) -> Result<(), String> {
    let client = CtlClient::connect_as(cfg, node, &connect.identity, connect.timeout)?;
    client.catch_interrupts()?;
    let mut rl: rustyline::Editor<ReplHelper, rustyline::history::DefaultHistory> =
        rustyline::Editor::new().map_err(|e| format!("cannot start the line editor: {e}"))?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdin()) && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let printer: Printer = Arc::new(Mutex::new(None));
    if tty {
        if let Ok(p) = rl.create_external_printer() {
            *printer.lock() = Some(Box::new(p));
        }
    }
    let out = printer.clone();
    client.open_console(move |pid, text, failed| {
        if failed {
            let line = format!("<pid {}> failed: {}\n", name_text(pid), text.trim_end());
            let printed = out.lock().as_mut().is_some_and(|p| p.print(line.clone()).is_ok());
            if !printed {
                eprint!("{line}");
            }
        } else {
            print_out(&out, text);
        }
    })?;
    let shell = Session::start_shell(&client)?;
    println!(
        "tern repl: connected to node {}; this shell is <pid {}> (:help for commands, Ctrl-C interrupts a line, Ctrl-D leaves)",
        client.node,
        name_text(shell)
    );
    let mut natives: Vec<String> = tern_stdlib::natives().names().iter().filter(|n| !n.starts_with("__")).map(|n| n.to_string()).collect();
    natives.push("flush".into());
    let names = Arc::new(Mutex::new(Names { names: natives, modules: Vec::new() }));
    rl.set_helper(Some(ReplHelper { names: names.clone() }));
    let node_name = client.node.clone();
    let mut s = Session {
        client,
        cfg: cfg.clone(),
        connect: connect.clone(),
        shell,
        line_no: 1,
        imports: Vec::new(),
        bound: Vec::new(),
        labels: Vec::new(),
        docs: Vec::new(),
        names,
    };
    let history = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".tern_history"));
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    // A Ctrl-C at the prompt clears the line; a second in a row asks before leaving.
    let mut interrupted = false;
    loop {
        let prompt = format!("{node_name}({})> ", s.line_no);
        match rl.readline(&prompt) {
            Ok(line) => {
                interrupted = false;
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let _ = rl.add_history_entry(line);
                let r = if line.starts_with(':') { s.command(line) } else { s.eval(line).map(|()| true) };
                s.line_no += 1;
                match r {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => eprintln!("{}", crate::ops::cmd::error_text(&e)),
                }
            }
            Err(ReadlineError::Interrupted) if !interrupted => {
                interrupted = true;
                println!("(Ctrl-C again to leave; Ctrl-D leaves too)");
            }
            Err(ReadlineError::Interrupted) => match rl.readline("leave tern repl? (y/n) ") {
                Ok(a) if !a.trim().to_lowercase().starts_with('y') => interrupted = false,
                _ => break,
            },
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(format!("cannot read a line: {e}")),
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    *printer.lock() = None;
    // The shell ends with the session (the node also ends it when the connection goes,
    // which may take its idle timeout if the REPL dies without a word).
    let _ = s.client.call(&CtlRequest::Kill { pid: s.shell });
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
        assert!(is_statement("let x = 1"));
        assert!(is_statement("fn f() { 1 }"));
        assert!(is_statement("x = f(1)"));
        assert!(is_statement("m.k += 2"));
        assert!(!is_statement("1 + 2"));
        assert!(!is_statement("f(3)"));
        assert!(!is_statement("x == 3 and y <= 2"));
        assert!(!is_statement("{a: 1}"));
        // The expression a line ends with, printed; none when it is all statements.
        assert_eq!(final_expression("print(1);"), None);
        assert_eq!(final_expression("let x = 1; x = 2"), None);
        assert_eq!(final_expression("push(xs, 4); len(xs)"), Some(13));
        assert_eq!(final_expression("f(\"a;b\")"), Some(0));
        assert_eq!(final_expression("if x { 1 } else { 2 }"), None);
        assert_eq!(final_expression("1 + 2 // three; or not"), Some(0));
    }
}
