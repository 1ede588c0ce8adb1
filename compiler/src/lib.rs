//! The Tern compiler: source text to verified bytecode modules.
//!
//! Pipeline: [`lexer`] → [`parser`] (an AST with spans, recovering from errors so one run
//! reports every syntax error) → [`resolve`] (which locals closures capture) →
//! [`codegen`] (register allocation, emitting `tern_vm::bytecode`). Compilation is
//! deterministic: the same source gives byte-identical modules, so a module's hash
//! names its code.
//!
//! ```
//! let out = tern_compiler::compile_source("hello.tern", "let x = 1 + 2;", None, &["println"], &|_| None).unwrap();
//! assert_eq!(out.modules.len(), 1);
//! ```

pub mod ast;
pub mod codegen;
pub mod diag;
pub mod fmt;
pub mod lexer;
pub mod parser;
pub mod resolve;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tern_vm::bytecode::{Module, ModuleHash};

/// A compiled program: its modules, dependencies before the modules that import them,
/// and the hash of the main one.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub main: ModuleHash,
    pub modules: Vec<Module>,
}

/// Compile errors of a program, rendered for a terminal (every error of every file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub rendered: String,
    pub count: usize,
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.rendered)
    }
}

impl std::error::Error for CompileError {}

/// Looks up the source of a standard-library module by name.
pub type StdlibSource<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The language reference (LANGUAGE.md), for tools that show parts of it (`:doc` at the
/// REPL).
pub const LANGUAGE_MD: &str = include_str!("../LANGUAGE.md");

/// Largest source file accepted.
pub const MAX_SOURCE_BYTES: u64 = 16 << 20;

/// Reads a source file, refusing anything larger than [`MAX_SOURCE_BYTES`].
fn read_source(path: &Path) -> Result<String, String> {
    let len = std::fs::metadata(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?.len();
    if len > MAX_SOURCE_BYTES {
        return Err(format!("{}: source file of {len} bytes exceeds the {MAX_SOURCE_BYTES}-byte limit", path.display()));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

/// Compiles the file at `path` and everything it imports.
pub fn compile_file(path: &Path, natives: &[&str], stdlib: StdlibSource<'_>) -> Result<Compiled, CompileError> {
    let source = read_source(path).map_err(|e| CompileError { rendered: format!("error: {e}\n"), count: 1 })?;
    compile_source(&path.display().to_string(), &source, path.parent(), natives, stdlib)
}

/// Compiles `source` (named `name` in messages); imports of files are looked up in `dir`.
pub fn compile_source(
    name: &str,
    source: &str,
    dir: Option<&Path>,
    natives: &[&str],
    stdlib: StdlibSource<'_>,
) -> Result<Compiled, CompileError> {
    let mut d = Driver::new(natives, stdlib);
    let key = dir.map_or_else(|| name.to_string(), |d| d.join(Path::new(name).file_name().unwrap_or_default()).display().to_string());
    match d.compile(&key, name, source, dir.map(Path::to_path_buf)) {
        Some(main) if d.count == 0 => Ok(Compiled { main, modules: d.modules }),
        _ => Err(CompileError { rendered: d.errors, count: d.count.max(1) }),
    }
}

/// [`compile_source`], but the errors of `source` itself come back as diagnostics (spans
/// into `source`) for the caller to place and render — a REPL compiles what was typed
/// inside text of its own and shows the errors against what was typed. Errors of
/// modules it imports come rendered, as the second part.
pub fn compile_source_diagnostics(
    name: &str,
    source: &str,
    natives: &[&str],
    stdlib: StdlibSource<'_>,
) -> Result<Compiled, (Vec<diag::Diagnostic>, String)> {
    let mut d = Driver::new(natives, stdlib);
    d.raw = Some(Vec::new());
    match d.compile(name, name, source, None) {
        Some(main) if d.count == 0 => Ok(Compiled { main, modules: d.modules }),
        _ => Err((d.raw.unwrap_or_default(), d.errors)),
    }
}

struct Driver<'a> {
    natives: &'a [&'a str],
    stdlib: StdlibSource<'a>,
    modules: Vec<Module>,
    done: HashMap<String, ModuleHash>,
    in_progress: Vec<String>,
    errors: String,
    count: usize,
    /// Keep the first module's (the main one's) diagnostics here instead of rendering them.
    raw: Option<Vec<diag::Diagnostic>>,
}

impl<'a> Driver<'a> {
    fn new(natives: &'a [&'a str], stdlib: StdlibSource<'a>) -> Driver<'a> {
        Driver {
            natives,
            stdlib,
            modules: Vec::new(),
            done: HashMap::new(),
            in_progress: Vec::new(),
            errors: String::new(),
            count: 0,
            raw: None,
        }
    }

    fn compile(&mut self, key: &str, name: &str, source: &str, dir: Option<PathBuf>) -> Option<ModuleHash> {
        let (prog, diags) = parser::parse(source);
        if !diags.is_empty() {
            self.report(name, source, diags);
            return None;
        }
        let caps = resolve::captures(&prog);
        self.in_progress.push(key.to_string());
        let natives = self.natives;
        let mut imports = Imports { driver: self, dir };
        let result = codegen::Codegen::new(name, source, natives, caps, &mut imports).module(&prog);
        self.in_progress.pop();
        match result {
            Ok(m) => {
                let h = m.hash();
                self.modules.push(m);
                self.done.insert(key.to_string(), h);
                Some(h)
            }
            Err(diags) => {
                self.report(name, source, diags);
                None
            }
        }
    }

    /// Counts a file's diagnostics and adds them to the rendered errors (a blank line
    /// after the last file's) — or, for the main module when asked, keeps them raw.
    fn report(&mut self, name: &str, source: &str, diags: Vec<diag::Diagnostic>) {
        self.count += diags.len();
        // The main module is the one compiled when nothing else is in progress.
        if let Some(raw) = self.raw.as_mut().filter(|_| self.in_progress.is_empty()) {
            raw.extend(diags);
            return;
        }
        if !self.errors.is_empty() {
            self.errors.push('\n');
        }
        self.errors.push_str(&diag::render(name, source, &diags));
    }
}

struct Imports<'d, 'a> {
    driver: &'d mut Driver<'a>,
    dir: Option<PathBuf>,
}

impl codegen::ImportResolver for Imports<'_, '_> {
    fn resolve(&mut self, name: &str) -> Result<ModuleHash, String> {
        let file = self.dir.as_ref().map(|d| d.join(format!("{name}.tern")));
        let (key, display, source, dir) = match file.filter(|f| f.is_file()) {
            Some(f) => {
                let source = read_source(&f)?;
                (f.display().to_string(), f.display().to_string(), source, f.parent().map(Path::to_path_buf))
            }
            None => match (self.driver.stdlib)(name) {
                Some(src) => (format!("<std>/{name}"), format!("<std>/{name}.tern"), src, None),
                None => {
                    return Err(format!("no module named `{name}` (looked for {name}.tern next to this file and in the standard library)"))
                }
            },
        };
        if self.driver.in_progress.contains(&key) {
            return Err(format!("circular import of `{name}`"));
        }
        if let Some(h) = self.driver.done.get(&key) {
            return Ok(*h);
        }
        self.driver.compile(&key, &display, &source, dir).ok_or_else(|| format!("module `{name}` has errors"))
    }
}
