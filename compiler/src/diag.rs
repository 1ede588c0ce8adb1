//! Compile-time diagnostics: an error with a span, rendered in rustc's form: `error:
//! message`, then `--> file:line:col`, the source line and carets under the span.

use crate::ast::Span;

/// One compile error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    pub span: Span,
    /// Optional extra explanation shown under the caret.
    pub label: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>, span: Span) -> Diagnostic {
        Diagnostic { message: message.into(), span, label: None }
    }
    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..floor_char_boundary(source, offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Renders diagnostics as text, each in rustc's form:
///
/// ```text
/// error: expected expression, found `;`
///  --> bad.tern:2:12
///   |
/// 2 | let y = x +;
///   |            ^ expected expression, found `;`
/// ```
///
/// Diagnostics are separated by a blank line. The carets cover the span's part of its first line (at least one character); the
/// label is the diagnostic's own, else its message. Tabs show as four spaces.
pub fn render(file: &str, source: &str, diags: &[Diagnostic]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for d in diags {
        if !out.is_empty() {
            out.push('\n');
        }
        let start = floor_char_boundary(source, (d.span.start as usize).min(source.len()));
        let (line, col) = line_col(source, start);
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..].find('\n').map_or(source.len(), |i| start + i);
        let text = source[line_start..line_end].trim_end_matches('\r');
        let end = floor_char_boundary(source, (d.span.end as usize).clamp(start, line_end));
        let shown = |s: &str| s.replace('\t', "    ");
        let before = shown(&source[line_start..start.min(line_start + text.len())]).chars().count();
        let width = shown(source.get(start..end).unwrap_or("")).chars().count().max(1);
        let gutter = " ".repeat(line.to_string().len());
        let label = d.label.as_deref().unwrap_or(&d.message);
        let _ = writeln!(out, "error: {}", d.message);
        let _ = writeln!(out, "{gutter}--> {file}:{line}:{col}");
        let _ = writeln!(out, "{gutter} |");
        let _ = writeln!(out, "{line} | {}", shown(text));
        let _ = writeln!(out, "{gutter} | {}{} {label}", " ".repeat(before), "^".repeat(width));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_in_rustcs_form() {
        let src = "let x = 1;\nlet y = x +;\n";
        let d = Diagnostic::new("expected expression, found `;`", Span::new(22, 23));
        assert_eq!(
            render("bad.tern", src, &[d]),
            "error: expected expression, found `;`\n \
             --> bad.tern:2:12\n  \
             |\n\
             2 | let y = x +;\n  \
             |            ^ expected expression, found `;`\n"
        );
    }

    #[test]
    fn carets_span_the_first_line_and_labels_replace_the_message() {
        let src = format!("{}\tlet é = @@@ + 1;\r\nnext\n", "\n".repeat(9));
        let at = src.find("@@@").unwrap();
        let d = Diagnostic::new("unexpected characters `@@@`", Span::new(at, at + 3)).with_label("here");
        let whole = Diagnostic::new("unclosed", Span::new(at, src.len()));
        assert_eq!(
            render("t.tern", &src, &[d, whole]),
            "error: unexpected characters `@@@`\n  \
             --> t.tern:10:10\n   \
             |\n\
             10 |     let é = @@@ + 1;\n   \
             |             ^^^ here\n\
             \n\
             error: unclosed\n  \
             --> t.tern:10:10\n   \
             |\n\
             10 |     let é = @@@ + 1;\n   \
             |             ^^^^^^^^^ unclosed\n"
        );
    }

    #[test]
    fn an_error_at_the_end_of_the_file_points_past_its_last_character() {
        let d = Diagnostic::new("expected `}`", Span::new(5, 5));
        assert_eq!(render("e.tern", "f() {", &[d]), "error: expected `}`\n --> e.tern:1:6\n  |\n1 | f() {\n  |      ^ expected `}`\n");
    }
}
