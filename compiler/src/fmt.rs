//! `tern fmt`: Tern source in one style, the one the examples are written in.
//!
//! The formatter works on the token stream, with a few facts taken from the syntax tree,
//! and keeps the source's line structure: a line break between two tokens stays one,
//! tokens on one line stay on one line (so a one-line block stays one line and an
//! `else` may start a line). What it decides:
//!
//! - indentation: four spaces for each line that opened a bracket (`{`, `(`, `[`) not
//!   yet closed (several opened on one line count once), a line that starts with a
//!   closing bracket at its opener's line's level, and one more level for a line that
//!   continues an expression (after a line ending with a binary operator, `=`, `.` or
//!   `:`, or starting with a binary operator or `.`);
//! - spaces within a line: around binary and assignment operators, after `,`, `;`
//!   and `:`, inside a one-line block (`{ x }`) but not inside brackets or a map
//!   (`f(a, [1], {k: v})`), none after a prefix `-` or `~` (but `- -x`), around `.`
//!   and `..`, or before the `(` of a call or parameter list and the `[` of an index,
//!   and an empty block is `{}`;
//! - blank lines: a run of them becomes one, and none is kept at the start or end of
//!   the file or of a bracket's contents;
//! - a trailing comma right before a closing bracket on the same line goes.
//!
//! Every comment is kept. Comments are not in the token stream, so they are read from
//! the gaps between tokens: a comment with code before it on its line stays at the end
//! of that line, at its column if the code still ends before it (comments aligned
//! across lines stay aligned) and one space after the code otherwise; a comment on a
//! line of its own stays there, indented as a line of code there would be. Tokens are
//! written as they are spelled in the source, so string literals, with whatever their
//! `${...}` hold, and numbers come out unchanged.
//!
//! The syntax tree tells which `{` opens a block and which a map, which `-` is a prefix
//! operator and which `(`/`[` calls or indexes: the formatter only formats programs that
//! parse, and gives the parser's diagnostics otherwise.

use std::collections::HashSet;

use crate::ast::*;
use crate::lexer::{self, Token, TokenKind as T};
use crate::{diag, parser, CompileError};

const INDENT: usize = 4;

/// Formats `source` (named `name` in error messages). A program that does not parse
/// gets the parser's diagnostics, rendered.
pub fn format_source(name: &str, source: &str) -> Result<String, CompileError> {
    let (program, diags) = parser::parse(source);
    if !diags.is_empty() {
        return Err(CompileError { rendered: diag::render(name, source, &diags), count: diags.len() });
    }
    let mut roles = Roles::default();
    for stmt in &program.stmts {
        roles.stmt(stmt);
    }
    let (tokens, _) = lexer::lex(source);
    let printer = Printer { source, roles, lines: Vec::new(), stack: Vec::new(), prev: None, last_opens: false };
    Ok(printer.print(&tokens))
}

/// What the syntax tree tells about tokens, by their byte offsets.
#[derive(Default)]
struct Roles {
    /// Where each block's `{` starts.
    blocks: HashSet<u32>,
    /// Where the operand of each prefix operator starts (the `-` or `~` right before it
    /// is that operator).
    unary_operands: HashSet<u32>,
    /// Where each called or indexed expression, function name or parameterless `fn`
    /// ends (the `(` or `[` right after it belongs to it).
    glued_after: HashSet<u32>,
}

impl Roles {
    fn stmt(&mut self, stmt: &Stmt) {
        match stmt {
            Stmt::Let { init, .. } => self.opt_expr(init.as_ref()),
            Stmt::Fn(decl) => self.fn_decl(decl),
            Stmt::Import { .. } | Stmt::Break(_) | Stmt::Continue(_) => {}
            Stmt::Assign { target, value, .. } => {
                self.expr(target);
                self.expr(value);
            }
            Stmt::While { cond, body, .. } => {
                self.expr(cond);
                self.block(body);
            }
            Stmt::For { iter, body, .. } => {
                match iter {
                    ForIter::Range { start, end } => {
                        self.expr(start);
                        self.expr(end);
                    }
                    ForIter::Expr(e) => self.expr(e),
                }
                self.block(body);
            }
            Stmt::Return { value, .. } => self.opt_expr(value.as_ref()),
            Stmt::Expr(e) => self.expr(e),
        }
    }

    fn fn_decl(&mut self, decl: &FnDecl) {
        // The parameter list's `(` follows the name, or `fn` itself.
        let before_params = decl.name.as_ref().map_or(decl.span.start + 2, |name| name.span.end);
        self.glued_after.insert(before_params);
        self.block(&decl.body);
    }

    fn block(&mut self, block: &Block) {
        self.blocks.insert(block.span.start);
        for stmt in &block.stmts {
            self.stmt(stmt);
        }
        self.opt_expr(block.tail.as_deref());
    }

    fn opt_expr(&mut self, expr: Option<&Expr>) {
        if let Some(e) = expr {
            self.expr(e);
        }
    }

    fn expr(&mut self, expr: &Expr) {
        match &expr.kind {
            ExprKind::Nil
            | ExprKind::Bool(_)
            | ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Str(_)
            | ExprKind::Interp(_)
            | ExprKind::Var(_)
            | ExprKind::Error => {}
            ExprKind::Array(items) => items.iter().for_each(|e| self.expr(e)),
            ExprKind::Map(entries) => {
                for (key, value) in entries {
                    if let MapKey::Expr(key) = key {
                        self.expr(key);
                    }
                    self.expr(value);
                }
            }
            ExprKind::Unary(_, operand) => {
                self.unary_operands.insert(operand.span.start);
                self.expr(operand);
            }
            ExprKind::Binary(_, lhs, rhs) => {
                self.expr(lhs);
                self.expr(rhs);
            }
            ExprKind::Call(callee, args) => {
                self.glued_after.insert(callee.span.end);
                self.expr(callee);
                args.iter().for_each(|e| self.expr(e));
            }
            ExprKind::Index(target, index) => {
                self.glued_after.insert(target.span.end);
                self.expr(target);
                self.expr(index);
            }
            ExprKind::Field(target, _) => self.expr(target),
            ExprKind::If { cond, then, els } => {
                self.expr(cond);
                self.block(then);
                self.opt_expr(els.as_deref());
            }
            ExprKind::Block(block) => self.block(block),
            ExprKind::Fn(decl) => self.fn_decl(decl),
            ExprKind::Try { body, handler, .. } => {
                self.block(body);
                self.block(handler);
            }
        }
    }
}

/// What a token is, for spacing and indentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The `(` of a call or a parameter list, the `[` of an index.
    GluedOpen,
    /// Any other `(` or `[`.
    Open,
    /// `)` or `]`.
    Close,
    BlockOpen,
    BlockClose,
    MapOpen,
    MapClose,
    /// A prefix `-` or `~`.
    Prefix,
    /// A binary or assignment operator (`and`, `or` included).
    Operator,
    Comma,
    Semi,
    Colon,
    Dot,
    DotDot,
    /// Names, literals, keywords.
    Word,
}

impl Kind {
    fn opens(self) -> bool {
        matches!(self, Kind::GluedOpen | Kind::Open | Kind::BlockOpen | Kind::MapOpen)
    }

    fn closes(self) -> bool {
        matches!(self, Kind::Close | Kind::BlockClose | Kind::MapClose)
    }
}

/// Whether a space goes between two tokens on one line.
fn space_between(prev: Kind, next: Kind) -> bool {
    use Kind::*;
    !matches!(
        (prev, next),
        (_, Comma | Semi | Colon | Dot | DotDot | GluedOpen | Close | MapClose)
            | (Dot | DotDot | Prefix | GluedOpen | Open | MapOpen, _)
            | (BlockOpen, BlockClose)
    )
}

/// One output line.
struct Line {
    /// Indentation, in levels.
    indent: usize,
    /// The code, or the text of a comment on a line of its own.
    code: String,
    /// A comment at the end of the line: its text and its column (in characters) in the
    /// source.
    comment: Option<(String, usize)>,
}

/// A bracket opened and not yet closed.
struct Open {
    kind: Kind,
    /// Indentation of the line it was opened on.
    indent: usize,
}

struct Printer<'s> {
    source: &'s str,
    roles: Roles,
    /// The output so far; `None` is a blank line.
    lines: Vec<Option<Line>>,
    stack: Vec<Open>,
    /// The last token written.
    prev: Option<Kind>,
    /// The last line written ends with an opening bracket.
    last_opens: bool,
}

impl Printer<'_> {
    fn print(mut self, tokens: &[Token]) -> String {
        let bom = if self.source.starts_with('\u{FEFF}') { '\u{FEFF}'.len_utf8() } else { 0 };
        let mut prev_end = bom;
        for (i, tok) in tokens.iter().enumerate() {
            let start = tok.span.start as usize;
            let kind = if tok.kind == T::Eof { Kind::Word } else { self.kind(tokens, i) };
            let newlines = self.gap(prev_end, start, kind);
            if tok.kind == T::Eof {
                break;
            }
            let text = &self.source[start..tok.span.end as usize];
            if newlines > 0 || self.lines.is_empty() {
                self.start_line(newlines >= 2 && !kind.closes(), self.line_indent(kind));
            } else if let Some(prev) = self.prev {
                let line = self.current();
                if prev == Kind::Comma && matches!(kind, Kind::Close | Kind::MapClose) {
                    line.code.pop();
                    if line.code.is_empty() {
                        // The comma started the line: now the closer does, so the line
                        // is indented as the opener's and no blank line goes before it.
                        self.lines.pop();
                        if let Some(None) = self.lines.last() {
                            self.lines.pop();
                        }
                        self.start_line(false, self.stack.last().map_or(0, |open| open.indent));
                    }
                } else if space_between(prev, kind) || (line.code.ends_with('-') && text.starts_with('-')) {
                    line.code.push(' ');
                }
            }
            self.current().code.push_str(text);
            if kind.opens() {
                let indent = self.current().indent;
                self.stack.push(Open { kind, indent });
            } else if kind.closes() {
                self.stack.pop();
            }
            self.prev = Some(kind);
            self.last_opens = kind.opens();
            prev_end = tok.span.end as usize;
        }
        self.render(bom > 0)
    }

    /// Classifies token `i`; a closing bracket by the opener it closes.
    fn kind(&self, tokens: &[Token], i: usize) -> Kind {
        let tok = &tokens[i];
        let after_glue = || i > 0 && self.roles.glued_after.contains(&tokens[i - 1].span.end);
        match &tok.kind {
            T::LParen | T::LBracket if after_glue() => Kind::GluedOpen,
            T::LParen | T::LBracket => Kind::Open,
            T::LBrace if self.roles.blocks.contains(&tok.span.start) => Kind::BlockOpen,
            T::LBrace => Kind::MapOpen,
            T::RParen | T::RBracket | T::RBrace => match self.stack.last().map(|open| open.kind) {
                Some(Kind::BlockOpen) => Kind::BlockClose,
                Some(Kind::MapOpen) => Kind::MapClose,
                _ => Kind::Close,
            },
            T::Tilde => Kind::Prefix,
            T::Minus if tokens.get(i + 1).is_some_and(|next| self.roles.unary_operands.contains(&next.span.start)) => Kind::Prefix,
            T::Comma => Kind::Comma,
            T::Semi => Kind::Semi,
            T::Colon => Kind::Colon,
            T::Dot => Kind::Dot,
            T::DotDot => Kind::DotDot,
            T::And
            | T::Or
            | T::Assign
            | T::EqEq
            | T::NotEq
            | T::Lt
            | T::Le
            | T::Gt
            | T::Ge
            | T::Plus
            | T::Minus
            | T::Star
            | T::Slash
            | T::Percent
            | T::PlusAssign
            | T::MinusAssign
            | T::StarAssign
            | T::SlashAssign
            | T::PercentAssign
            | T::Amp
            | T::Pipe
            | T::Caret
            | T::Shl
            | T::Shr
            | T::AmpAssign
            | T::PipeAssign
            | T::CaretAssign
            | T::ShlAssign
            | T::ShrAssign => Kind::Operator,
            _ => Kind::Word,
        }
    }

    /// The indentation of a line starting with a token of kind `first`.
    fn line_indent(&self, first: Kind) -> usize {
        let innermost = self.stack.last().map(|open| open.indent);
        if first.closes() {
            return innermost.unwrap_or(0);
        }
        let continues = matches!(self.prev, Some(Kind::Operator | Kind::Dot | Kind::Colon | Kind::DotDot))
            || matches!(first, Kind::Operator | Kind::Dot | Kind::DotDot);
        innermost.map_or(0, |indent| indent + 1) + usize::from(continues)
    }

    fn current(&mut self) -> &mut Line {
        match self.lines.last_mut() {
            Some(Some(line)) => line,
            _ => unreachable!("a line is started before anything is written to it"),
        }
    }

    /// Starts a line, after a blank one if `blank` (and one may go there).
    fn start_line(&mut self, blank: bool, indent: usize) {
        if blank && !self.lines.is_empty() && !self.last_opens {
            self.lines.push(None);
        }
        self.lines.push(Some(Line { indent, code: String::new(), comment: None }));
    }

    /// Writes the comments between two tokens (the source from `from` to `to`; the
    /// second is of kind `next`), and returns how many line breaks follow the last of
    /// them.
    fn gap(&mut self, from: usize, to: usize, next: Kind) -> usize {
        let mut newlines = 0;
        let mut pos = from;
        while pos < to {
            let rest = &self.source[pos..to];
            if rest.starts_with("//") {
                let len = rest.find('\n').unwrap_or(rest.len());
                self.comment(rest[..len].trim_end(), pos, newlines, next);
                newlines = 0;
                pos += len;
            } else {
                let c = rest.chars().next().unwrap_or(' ');
                newlines += usize::from(c == '\n');
                pos += c.len_utf8();
            }
        }
        newlines
    }

    /// Writes the comment `text` found at byte `at` of the source, `newlines` line
    /// breaks after what came before it and before a token of kind `next`.
    fn comment(&mut self, text: &str, at: usize, newlines: usize, next: Kind) {
        if newlines == 0 && !self.lines.is_empty() {
            let line_start = self.source[..at].rfind('\n').map_or(0, |i| i + 1);
            // (A byte order mark is not a column.)
            let column = self.source[line_start..at].trim_start_matches('\u{FEFF}').chars().count();
            self.current().comment = Some((text.to_string(), column));
        } else {
            // Indented as the code after it, or inside the bracket that code closes.
            self.start_line(newlines >= 2, self.line_indent(if next.closes() { Kind::Word } else { next }));
            self.current().code.push_str(text);
            self.last_opens = false;
        }
    }

    fn render(self, bom: bool) -> String {
        let mut out = String::new();
        if bom {
            out.push('\u{FEFF}');
        }
        for line in &self.lines {
            let Some(line) = line else {
                out.push('\n');
                continue;
            };
            let indent = " ".repeat(line.indent * INDENT);
            out.push_str(&indent);
            out.push_str(&line.code);
            if let Some((comment, column)) = &line.comment {
                // The width of the line's last row (a string may span rows).
                let width = match line.code.rfind('\n') {
                    Some(i) => line.code[i + 1..].chars().count(),
                    None => indent.len() + line.code.chars().count(),
                };
                let pad = if *column > width { column - width } else { 1 };
                out.push_str(&" ".repeat(pad));
                out.push_str(comment);
            }
            out.push('\n');
        }
        out
    }
}
