//! Tern text someone typed (a REPL line, the value of `tern ctl send`), compiled inside
//! source of our own, with its errors shown against what was typed — never against the
//! wrapper around it — and its runtime errors' lines named in the typist's terms.

use crate::runner::compile_text_diagnostics;
use tern_compiler::diag::{self, Diagnostic};
use tern_compiler::Compiled;

/// A part of the source that came from a file the user knows (a typed line, a loaded file).
#[derive(Debug, Clone)]
struct Seg {
    /// Byte offset in the source.
    at: usize,
    len: usize,
    file: usize,
    /// Byte offset in the file's text.
    file_at: usize,
}

/// Source being put together: parts of our own and parts the user typed.
#[derive(Debug, Clone, Default)]
pub struct Snippet {
    src: String,
    segs: Vec<Seg>,
    /// The user's files: a label (`repl`, a path) and the whole text.
    files: Vec<(String, String)>,
}

impl Snippet {
    pub fn new() -> Snippet {
        Snippet::default()
    }

    /// A file of the user's, for [`Snippet::theirs`]: its label and text. A line typed at
    /// a REPL is the file `repl` whose text is that line preceded by `line - 1` empty
    /// lines, so that messages give it the REPL's line number.
    pub fn file(&mut self, label: &str, text: &str) -> usize {
        self.files.push((label.to_string(), text.to_string()));
        self.files.len() - 1
    }

    /// Text of our own.
    pub fn ours(&mut self, text: &str) {
        self.src.push_str(text);
    }

    /// The text of `file` from byte `from`, `len` bytes.
    pub fn theirs(&mut self, file: usize, from: usize, len: usize) {
        let text = &self.files[file].1[from..from + len];
        self.segs.push(Seg { at: self.src.len(), len, file, file_at: from });
        let t = text.to_string();
        self.src.push_str(&t);
    }

    pub fn source(&self) -> &str {
        &self.src
    }

    /// Where each line of the source comes from, as `label:line` (`<repl>` for ours).
    pub fn line_labels(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut off = 0;
        for line in self.src.split('\n') {
            let label = match self.segs.iter().find(|s| off >= s.at && off < s.at + s.len.max(1)) {
                Some(s) => {
                    let (label, text) = &self.files[s.file];
                    let (l, _) = diag::line_col(text, s.file_at + (off - s.at));
                    format!("{label}:{l}")
                }
                None => "<repl>".to_string(),
            };
            out.push(label);
            off += line.len() + 1;
        }
        out
    }

    /// Compiles the source as module `name`; errors are rendered against the user's
    /// files.
    pub fn compile(&self, name: &str) -> Result<Compiled, String> {
        match compile_text_diagnostics(name, &self.src) {
            Ok(c) => Ok(c),
            Err((diags, imported)) => {
                let mut by_file: Vec<Vec<Diagnostic>> = vec![Vec::new(); self.files.len()];
                let mut ours = Vec::new();
                for d in diags {
                    match self.place(d.span.start as usize, d.span.end as usize) {
                        Some((file, start, end, inside)) => {
                            let mut d = d;
                            d.span.start = start as u32;
                            d.span.end = end as u32;
                            if !inside {
                                // What was found is ours (a closing bracket, say): for
                                // the user, the text ended there.
                                if let Some(i) = d.message.find(", found ") {
                                    d.message.truncate(i);
                                    d.message.push_str(", found the end of the text");
                                }
                                d.label = None;
                            }
                            by_file[file].push(d);
                        }
                        None => ours.push(d),
                    }
                }
                let mut out = String::new();
                for (i, ds) in by_file.iter().enumerate() {
                    if !ds.is_empty() {
                        out.push_str(&diag::render(&self.files[i].0, &self.files[i].1, ds));
                    }
                }
                if !ours.is_empty() {
                    out.push_str(&diag::render("<repl>", &self.src, &ours));
                }
                out.push_str(&imported);
                Err(out)
            }
        }
    }

    /// A span of the source in the user's terms: the file, the span there, and whether
    /// it was inside the user's text. A span in text of our own (an unclosed `{` found at
    /// our closing `)`) goes to the last character of the user's text before it.
    fn place(&self, start: usize, end: usize) -> Option<(usize, usize, usize, bool)> {
        // Inside the user's text, before its trailing blanks (a span after them is at
        // something of ours that follows).
        let used = |s: &Seg| self.files[s.file].1[s.file_at..s.file_at + s.len].trim_end().len();
        if let Some(s) = self.segs.iter().find(|s| start >= s.at && start < s.at + used(s)) {
            let a = s.file_at + (start - s.at);
            let b = s.file_at + (end.min(s.at + s.len).max(start) - s.at);
            return Some((s.file, a, b, true));
        }
        let s = self.segs.iter().rev().find(|s| s.at + used(s) <= start).or(self.segs.first())?;
        let text = &self.files[s.file].1[s.file_at..s.file_at + s.len];
        let last = text.trim_end().char_indices().last().map_or(0, |(i, _)| i);
        let at = s.file_at + last;
        Some((s.file, at, at + text[last..].chars().next().map_or(0, char::len_utf8), false))
    }
}

/// Rewrites the positions `module:L` of a runtime error of module `module` (a line's
/// unique name) into `labels[L - 1]`.
pub fn relabel(text: &str, module: &str, labels: &[String]) -> String {
    let pat = format!("{module}:");
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(&pat) {
        out.push_str(&rest[..i]);
        let after = &rest[i + pat.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after[..digits].parse::<usize>().ok().and_then(|l| labels.get(l.wrapping_sub(1))) {
            Some(label) => out.push_str(label),
            None => out.push_str(&rest[i..i + pat.len() + digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_quote_what_was_typed_not_the_wrapper() {
        let mut s = Snippet::new();
        let typed = "{a: ";
        let f = s.file("value", typed);
        s.ours("send(pid(\"1.12\"), (\n");
        s.theirs(f, 0, typed.len());
        s.ours("\n));\n");
        let e = s.compile("send").unwrap_err();
        assert!(e.contains("value:1:"), "{e}");
        assert!(!e.contains("send(pid"), "the wrapper is quoted: {e}");
    }

    #[test]
    fn a_typed_line_keeps_its_repl_number() {
        let mut s = Snippet::new();
        let line = "let y = nosuch + 1;";
        let f = s.file("repl", &format!("{}{line}", "\n".repeat(6)));
        s.ours("let z = 1;\n");
        s.theirs(f, 6, line.len());
        s.ours("\n");
        let e = s.compile("repl#7").unwrap_err();
        assert!(e.contains("repl:7:"), "{e}");
        assert!(!e.contains("let z"), "{e}");
        assert_eq!(s.line_labels()[..2], ["<repl>".to_string(), "repl:7".to_string()]);
    }

    #[test]
    fn runtime_positions_are_relabelled() {
        let labels = vec!["<repl>".to_string(), "repl:4".to_string(), "f.tern:9".to_string()];
        let t = "repl#4:2: error: boom\n    at f (repl#4:3)\n    at g (repl#41:2)";
        assert_eq!(relabel(t, "repl#4", &labels), "repl:4: error: boom\n    at f (f.tern:9)\n    at g (repl#41:2)");
    }
}
