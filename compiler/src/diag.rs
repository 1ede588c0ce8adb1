//! Compile-time diagnostics: an error with a span, rendered as `file:line:col`, the
//! source line and a caret (via `ariadne`).

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

/// Renders diagnostics as text: for each, a `file:line:col: error: message` header
/// followed by ariadne's source excerpt with a caret.
pub fn render(file: &str, source: &str, diags: &[Diagnostic]) -> String {
    use ariadne::{Config, Label, Report, ReportKind, Source};
    let mut out = Vec::new();
    for d in diags {
        let (line, col) = line_col(source, d.span.start as usize);
        let start = char_index(source, d.span.start as usize);
        let end = char_index(source, (d.span.end as usize).max(d.span.start as usize + 1)).max(start + 1);
        let label = d.label.clone().unwrap_or_else(|| d.message.clone());
        let header = format!("{file}:{line}:{col}: {}", d.message);
        let report = Report::build(ReportKind::Error, (file, start..end))
            .with_config(Config::default().with_color(false))
            .with_message(header)
            .with_label(Label::new((file, start..end)).with_message(label))
            .finish();
        let _ = report.write((file, Source::from(source)), &mut out);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// ariadne counts spans in characters, not bytes.
fn char_index(source: &str, byte: usize) -> usize {
    let byte = floor_char_boundary(source, byte.min(source.len()));
    source[..byte].chars().count()
}
