//! The expectations of the programs in `examples/` (see `examples.rs` for the
//! directives), shared by the golden-output tests.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub const EXAMPLES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

/// What one program must do, read from its comments.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The file name, e.g. `closures.tern`.
    pub name: String,
    pub path: PathBuf,
    pub lines: Vec<String>,
    pub error: Option<String>,
    pub error_line: Option<u32>,
    pub heap_limit_mib: Option<usize>,
}

pub fn directive<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(name)?;
    let rest = &line[at + name.len()..];
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

/// Reads a program's expectations; `None` for a helper module (no `// expect` at all).
pub fn parse_spec(path: &Path) -> Result<Option<Spec>, String> {
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let source = std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    if !source.contains("// expect") {
        return Ok(None);
    }
    let mut spec =
        Spec { name: name.clone(), path: path.to_path_buf(), lines: Vec::new(), error: None, error_line: None, heap_limit_mib: None };
    for (i, line) in source.lines().enumerate() {
        let where_ = || format!("{name}:{}", i + 1);
        if let Some(text) = directive(line, "// expect:") {
            spec.lines.push(text.to_string());
        } else if let Some(text) = directive(line, "// expect error:") {
            if spec.error.is_some() {
                return Err(format!("{}: a second `// expect error:`", where_()));
            }
            if text.trim().is_empty() {
                return Err(format!("{}: `// expect error:` needs a message", where_()));
            }
            spec.error = Some(text.to_string());
        } else if let Some(text) = directive(line, "// error-line:") {
            let n = text.trim().parse().map_err(|_| format!("{}: bad `// error-line:` {text:?}", where_()))?;
            spec.error_line = Some(n);
        } else if let Some(text) = directive(line, "// heap-limit-mib:") {
            let n = text.trim().parse().map_err(|_| format!("{}: bad `// heap-limit-mib:` {text:?}", where_()))?;
            spec.heap_limit_mib = Some(n);
        } else if line.contains("// expect") {
            return Err(format!("{}: unknown directive: {}", where_(), line.trim()));
        }
    }
    if spec.error_line.is_some() && spec.error.is_none() {
        return Err(format!("{name}: `// error-line:` without `// expect error:`"));
    }
    Ok(Some(spec))
}

pub fn discover() -> Vec<Spec> {
    let dir = Path::new(EXAMPLES_DIR).canonicalize().unwrap_or_else(|e| panic!("cannot find {EXAMPLES_DIR}: {e}"));
    let dir = dir.as_path();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "tern") && p.is_file())
        .collect();
    paths.sort();
    let mut specs = Vec::new();
    let mut problems = Vec::new();
    for p in &paths {
        match parse_spec(p) {
            Ok(Some(s)) => specs.push(s),
            Ok(None) => {}
            Err(e) => problems.push(e),
        }
    }
    assert!(problems.is_empty(), "bad expectations in examples/:\n{}", problems.join("\n"));
    assert!(specs.len() >= 14, "expected at least 14 example programs in {}, found {}", dir.display(), specs.len());
    specs
}

pub fn split_lines(out: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = out.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    lines
}

/// A line diff of expected against actual output (`-` expected only, `+` actual only).
pub fn diff(expected: &[String], actual: &[&str]) -> String {
    let (n, m) = (expected.len(), actual.len());
    // lcs[i][j]: longest common subsequence of expected[i..] and actual[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            let _ = writeln!(out, "        {}", actual[j]);
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "      - {:?}   (expected, line {})", expected[i], i + 1);
            i += 1;
        } else {
            let _ = writeln!(out, "      + {:?}   (actual, line {})", actual[j], j + 1);
            j += 1;
        }
    }
    out
}
