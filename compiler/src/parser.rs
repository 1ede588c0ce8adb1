//! Tokens to syntax tree: recursive descent for statements, precedence climbing for
//! binary operators (see the operator table in `LANGUAGE.md`).
//!
//! Error recovery: the first syntax error in a statement is reported, later ones in the
//! same statement are suppressed (they are usually consequences of the first), and the
//! parser skips to a point where parsing can sensibly resume: the end of the statement,
//! the closing bracket of a list, or the `{` of an expected block. So one run reports
//! every independent mistake once. The depth of the tree is bounded by [`MAX_DEPTH`] so
//! that neither this parser nor the passes after it can overflow the stack.

use crate::ast::*;
use crate::diag::Diagnostic;
use crate::lexer::{self, InterpPart, Token, TokenKind as T};

/// How deeply the syntax tree may nest. Each bracket, block and unary operator is a level,
/// and so is each link of a left-associative chain (`a + b + c`, `f(x).y[z]`, `else if`),
/// since those deepen the tree as much as explicit nesting does. Deeper input gets one
/// "nesting too deep" diagnostic, after which the rest of the file is not parsed. Passes
/// that walk the tree recursively may rely on this bound.
pub const MAX_DEPTH: usize = 128;

/// Parses a whole source file. The program is complete only when there are no
/// diagnostics; otherwise it may contain [`ExprKind::Error`] placeholders. Diagnostics
/// (the lexer's and the parser's) are sorted by position.
pub fn parse(source: &str) -> (Program, Vec<Diagnostic>) {
    let lexed = lexer::lex_source(source);
    let mut parser = Parser {
        source,
        tokens: &lexed.tokens,
        pos: 0,
        prev_end: 0,
        diags: Vec::new(),
        depth: 0,
        recovering: false,
        aborted: false,
        lex_truncated: lexed.truncated,
        reported_unclosed: false,
        in_interp: false,
    };
    let (stmts, _) = parser.stmts(true);
    let mut diags = lexed.diags;
    diags.append(&mut parser.diags);
    diags.sort_by_key(|d| d.span.start);
    (Program { stmts }, diags)
}

/// Returned for reads past the end of a token list (which always ends with `Eof`, so
/// this only happens after an abort).
static EOF: Token = Token { kind: T::Eof, span: Span { start: 0, end: 0 } };

// Binding powers, lowest first. `not` is a prefix operator between `and` and comparison.
// The bitwise operators sit between comparison and `+ -` in Rust's order, so
// `a & mask == 0` is `(a & mask) == 0`.
const OR: u8 = 1;
const AND: u8 = 2;
const NOT: u8 = 3;
const CMP: u8 = 4;
const BIT_OR: u8 = 5;
const BIT_XOR: u8 = 6;
const BIT_AND: u8 = 7;
const SHIFT: u8 = 8;
const ADD: u8 = 9;
const MUL: u8 = 10;

fn binary_op(kind: &T) -> Option<(BinOp, u8)> {
    Some(match kind {
        T::Or => (BinOp::Or, OR),
        T::And => (BinOp::And, AND),
        T::EqEq => (BinOp::Eq, CMP),
        T::NotEq => (BinOp::Ne, CMP),
        T::Lt => (BinOp::Lt, CMP),
        T::Le => (BinOp::Le, CMP),
        T::Gt => (BinOp::Gt, CMP),
        T::Ge => (BinOp::Ge, CMP),
        T::Pipe => (BinOp::BitOr, BIT_OR),
        T::Caret => (BinOp::BitXor, BIT_XOR),
        T::Amp => (BinOp::BitAnd, BIT_AND),
        T::Shl => (BinOp::Shl, SHIFT),
        T::Shr => (BinOp::Shr, SHIFT),
        T::Plus => (BinOp::Add, ADD),
        T::Minus => (BinOp::Sub, ADD),
        T::Star => (BinOp::Mul, MUL),
        T::Slash => (BinOp::Div, MUL),
        T::Percent => (BinOp::Mod, MUL),
        _ => return None,
    })
}

/// `Some(op)` for an assignment token: `None` for plain `=`, `Some(Add)` for `+=`, ...
fn assign_op(kind: &T) -> Option<Option<BinOp>> {
    Some(match kind {
        T::Assign => None,
        T::PlusAssign => Some(BinOp::Add),
        T::MinusAssign => Some(BinOp::Sub),
        T::StarAssign => Some(BinOp::Mul),
        T::SlashAssign => Some(BinOp::Div),
        T::PercentAssign => Some(BinOp::Mod),
        T::AmpAssign => Some(BinOp::BitAnd),
        T::PipeAssign => Some(BinOp::BitOr),
        T::CaretAssign => Some(BinOp::BitXor),
        T::ShlAssign => Some(BinOp::Shl),
        T::ShrAssign => Some(BinOp::Shr),
        _ => return None,
    })
}

/// Keywords that begin a statement: after an error, parsing resumes at one of these.
fn starts_statement(kind: &T) -> bool {
    matches!(kind, T::Let | T::Fn | T::If | T::While | T::For | T::Return | T::Break | T::Continue | T::Import | T::Try)
}

/// One `if cond { ... }` of an `if`/`else if` chain.
struct IfArm {
    start: u32,
    cond: Expr,
    then: Block,
}

/// What a statement in a block turned out to be.
#[allow(clippy::large_enum_variant, reason = "a short-lived return value; boxing would allocate for every statement")]
enum Item {
    Stmt(Stmt),
    /// The block's final expression, without a trailing `;`.
    Tail(Expr),
}

struct Parser<'a> {
    source: &'a str,
    /// The token list being parsed: the file's, or an interpolation's while parsing one.
    tokens: &'a [Token],
    pos: usize,
    /// End of the last consumed token, where spans of finished nodes end.
    prev_end: u32,
    diags: Vec<Diagnostic>,
    depth: usize,
    /// A syntax error was reported in the current statement and not yet recovered from;
    /// further syntax errors are suppressed until then.
    recovering: bool,
    /// Nesting got too deep: every read now sees `Eof`, ending the parse.
    aborted: bool,
    /// The lexer swallowed the rest of the file into an unterminated string.
    lex_truncated: bool,
    /// An unclosed `{` was reported. Blocks around it are unclosed too, but saying so
    /// for each would only repeat the one mistake.
    reported_unclosed: bool,
    /// Parsing an interpolation's tokens, whose `Eof` stands for the closing `}`.
    in_interp: bool,
}

impl<'a> Parser<'a> {
    // ---- Token access ----

    fn tok(&self) -> &'a Token {
        if self.aborted {
            return &EOF;
        }
        self.tokens.get(self.pos).unwrap_or(&EOF)
    }

    fn peek(&self) -> &'a T {
        &self.tok().kind
    }

    fn peek2(&self) -> &'a T {
        self.tokens.get(self.pos + 1).map_or(&EOF.kind, |t| &t.kind)
    }

    fn at(&self, kind: &T) -> bool {
        self.peek() == kind
    }

    fn bump(&mut self) -> &'a Token {
        let tok = self.tok();
        if tok.kind != T::Eof {
            self.pos += 1;
            self.prev_end = tok.span.end;
        }
        tok
    }

    fn eat(&mut self, kind: &T) -> bool {
        let found = self.at(kind);
        if found {
            self.bump();
        }
        found
    }

    /// The span from `start` to the end of the last consumed token.
    fn span_from(&self, start: u32) -> Span {
        Span { start, end: self.prev_end.max(start) }
    }

    /// An empty span just after the last consumed token.
    fn here(&self) -> Span {
        Span { start: self.prev_end, end: self.prev_end }
    }

    // ---- Diagnostics ----

    /// Records a syntax error and enters recovery (see [`Parser::recovering`]).
    fn syntax_error(&mut self, diag: Diagnostic) {
        if !self.recovering && !self.aborted {
            self.diags.push(diag);
        }
        self.recovering = true;
    }

    /// Records an error after which parsing continues normally, like an assignment to
    /// something that cannot be assigned to.
    fn error(&mut self, diag: Diagnostic) {
        if !self.recovering && !self.aborted {
            self.diags.push(diag);
        }
    }

    /// Whether the current token's problem is already reported by the lexer: an invalid
    /// character, or the end of a file swallowed by an unterminated string.
    fn lexer_reported(&self) -> bool {
        let tok = self.tok();
        match tok.kind {
            T::Error => true,
            T::Eof => self.lex_truncated && tok.span.start as usize == self.source.len(),
            _ => false,
        }
    }

    fn describe(&self, tok: &Token) -> String {
        match &tok.kind {
            T::Eof if self.in_interp => "`}`".to_string(),
            T::Eof => "end of file".to_string(),
            T::Str(_) | T::Interp(_) => "a string".to_string(),
            _ => {
                let text = self.source.get(tok.span.start as usize..tok.span.end as usize);
                text.map_or_else(|| "a token".to_string(), |text| format!("`{text}`"))
            }
        }
    }

    /// Reports "expected {what}, found {current token}" at the current token.
    fn expected(&mut self, what: &str) {
        self.expected_with_label(what, None);
    }

    fn expected_with_label(&mut self, what: &str, label: Option<&str>) {
        if self.lexer_reported() {
            self.recovering = true;
            return;
        }
        let tok = self.tok();
        // A token on a later line is just where parsing noticed; the mistake is usually
        // at the end of the previous line (a missing `)`, an unfinished expression).
        let span = if self.line_break_before_current() { self.here() } else { tok.span };
        let mut diag = Diagnostic::new(format!("expected {what}, found {}", self.describe(tok)), span);
        if let Some(label) = label {
            diag = diag.with_label(label);
        }
        self.syntax_error(diag);
    }

    /// Reports a missing `;`, pointing just after the previous token (the line that
    /// lacks it) rather than at the next token, and recovers.
    fn missing_semi(&mut self, after: &str) {
        let next_line = self.line_break_before_current();
        if self.lexer_reported() {
            self.recovering = true;
        } else {
            let found = self.describe(self.tok());
            let diag = Diagnostic::new(format!("expected `;` after {after}, found {found}"), self.here()).with_label("add `;` here");
            self.syntax_error(diag);
        }
        // When the next token starts a new line, the `;` was most likely just forgotten
        // and the next line is a statement of its own: skipping it would hide its errors.
        if !next_line {
            self.synchronize();
        }
    }

    /// Whether a line break separates the current token from the last consumed one.
    fn line_break_before_current(&self) -> bool {
        let between = self.source.get(self.prev_end as usize..self.tok().span.start as usize);
        self.prev_end > 0 && between.is_some_and(|text| text.contains('\n'))
    }

    /// Enters one nesting level; false (after reporting once, and aborting) when too deep.
    fn enter(&mut self) -> bool {
        if self.depth >= MAX_DEPTH {
            if !self.aborted {
                let diag = Diagnostic::new("nesting too deep", self.tok().span)
                    .with_label(format!("expressions and blocks nest more than {MAX_DEPTH} levels deep here"));
                self.diags.push(diag);
                self.aborted = true;
            }
            return false;
        }
        self.depth += 1;
        true
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    // ---- Recovery ----

    /// Skips to the end of the current statement: past the next `;`, or up to a `}`
    /// closing the enclosing block, a keyword that starts a statement, or the start of a
    /// line (brackets opened on the way are skipped whole).
    fn synchronize(&mut self) {
        let mut depth = 0usize;
        let start = self.pos;
        loop {
            let kind = self.peek();
            match kind {
                T::Eof => return,
                _ if depth == 0 && self.pos > start && self.line_break_before_current() => return,
                T::Semi if depth == 0 => {
                    self.bump();
                    return;
                }
                T::RBrace if depth == 0 => return,
                _ if depth == 0 && starts_statement(kind) => return,
                T::LParen | T::LBracket | T::LBrace => depth += 1,
                T::RParen | T::RBracket | T::RBrace => depth = depth.saturating_sub(1),
                _ => {}
            }
            self.bump();
        }
    }

    /// Skips past the `close` bracket of the list being parsed. Stops early, without
    /// consuming, at a `;` or a bracket that closes something further out, and, when a
    /// block follows the list (`block_follows`, as after parameters), at a `{`.
    fn skip_to_closer(&mut self, close: &T, block_follows: bool) {
        let mut depth = 0usize;
        loop {
            let kind = self.peek();
            match kind {
                T::Eof => return,
                T::LBrace if depth == 0 && block_follows => return,
                _ if depth == 0 && kind == close => {
                    self.bump();
                    // Back in step with the source: later errors are independent.
                    self.recovering = false;
                    return;
                }
                T::Semi | T::RParen | T::RBracket | T::RBrace if depth == 0 => return,
                T::LParen | T::LBracket | T::LBrace => depth += 1,
                T::RParen | T::RBracket | T::RBrace => depth -= 1,
                _ => {}
            }
            self.bump();
        }
    }

    /// After a missing `{`, skips to the block's `{` if it is near (before the end of
    /// the statement). Returns whether the parser is now at a `{`.
    fn skip_to_block(&mut self) -> bool {
        let mut depth = 0usize;
        loop {
            let kind = self.peek();
            match kind {
                T::LBrace if depth == 0 => return true,
                T::Eof => return false,
                T::Semi | T::RBrace if depth == 0 => return false,
                _ if depth == 0 && starts_statement(kind) => return false,
                T::LParen | T::LBracket | T::LBrace => depth += 1,
                T::RParen | T::RBracket | T::RBrace => depth = depth.saturating_sub(1),
                _ => {}
            }
            self.bump();
        }
    }

    // ---- Statements ----

    /// Parses statements up to the end of the file (`top`) or the `}` of a block, which
    /// is left unconsumed. Only a block has a tail expression.
    fn stmts(&mut self, top: bool) -> (Vec<Stmt>, Option<Expr>) {
        let mut stmts = Vec::new();
        loop {
            self.recovering = false;
            match self.peek() {
                T::Eof => break,
                T::RBrace if !top => break,
                T::RBrace => {
                    let diag = Diagnostic::new("unexpected `}`", self.tok().span).with_label("this `}` has no matching `{`");
                    self.syntax_error(diag);
                    self.bump();
                    continue;
                }
                // An empty statement, like the `;` in `while c {};`.
                T::Semi => {
                    self.bump();
                    continue;
                }
                _ => {}
            }
            let start = self.pos;
            match self.stmt(top) {
                Item::Stmt(stmt) => stmts.push(stmt),
                Item::Tail(expr) => return (stmts, Some(expr)),
            }
            // Every statement consumes a token; this guards the loop should one not.
            if self.pos == start {
                self.bump();
            }
        }
        (stmts, None)
    }

    fn stmt(&mut self, top: bool) -> Item {
        let start = self.tok().span.start;
        let stmt = match self.peek() {
            T::Let => self.let_stmt(top),
            T::Fn if matches!(self.peek2(), T::Ident(_)) => Stmt::Fn(self.fn_decl()),
            T::Import => self.import_stmt(top),
            T::While => self.while_stmt(),
            T::For => self.for_stmt(),
            T::Break => {
                self.bump();
                self.end_stmt(top, "`break`");
                Stmt::Break(self.span_from(start))
            }
            T::Continue => {
                self.bump();
                self.end_stmt(top, "`continue`");
                Stmt::Continue(self.span_from(start))
            }
            T::Return => {
                self.bump();
                let value = match self.peek() {
                    T::Semi | T::RBrace | T::Eof => None,
                    _ => Some(self.expr(false)),
                };
                self.end_stmt(top, "`return`");
                Stmt::Return { value, span: self.span_from(start) }
            }
            T::If | T::Try | T::LBrace => {
                // A block-like expression ends the statement by itself: `if c {} -x;` is
                // two statements, not a subtraction.
                let expr = self.block_like();
                if !self.eat(&T::Semi) && !top && self.at(&T::RBrace) {
                    return Item::Tail(expr);
                }
                Stmt::Expr(expr)
            }
            _ => return self.expr_stmt(top),
        };
        Item::Stmt(stmt)
    }

    /// Ends a statement that needs a `;`.
    fn end_stmt(&mut self, top: bool, after: &str) {
        if !self.eat(&T::Semi) && !self.at_block_end(top) {
            self.missing_semi(after);
        }
    }

    /// Whether a statement may end here without `;`: before the `}` that closes a block,
    /// as in `if done { break }`. A `}` at the top level, or the end of the file inside
    /// a block, is reported elsewhere as the real mistake (an unmatched `}`, an unclosed
    /// `{`), so a missing `;` is not reported there too.
    fn at_block_end(&self, top: bool) -> bool {
        self.at(&T::RBrace) || (!top && self.at(&T::Eof))
    }

    fn expr_stmt(&mut self, top: bool) -> Item {
        let target = self.expr(false);
        if let Some(op) = assign_op(self.peek()) {
            self.bump();
            if !matches!(target.kind, ExprKind::Var(_) | ExprKind::Index(..) | ExprKind::Field(..) | ExprKind::Error) {
                let diag = Diagnostic::new("cannot assign to this expression", target.span)
                    .with_label("only a variable, `a[i]` or `a.name` can be assigned to");
                self.error(diag);
            }
            let value = self.expr(false);
            self.end_stmt(top, "assignment");
            let span = self.span_from(target.span.start);
            return Item::Stmt(Stmt::Assign { target, op, value, span });
        }
        if self.eat(&T::Semi) {
            return Item::Stmt(Stmt::Expr(target));
        }
        if self.at_block_end(top) {
            return if top { Item::Stmt(Stmt::Expr(target)) } else { Item::Tail(target) };
        }
        self.missing_semi("expression");
        Item::Stmt(Stmt::Expr(target))
    }

    fn let_stmt(&mut self, top: bool) -> Stmt {
        let start = self.bump().span.start;
        let name = self.ident("a variable name after `let`");
        let init = if self.eat(&T::Assign) { Some(self.expr(false)) } else { None };
        self.end_stmt(top, "`let` statement");
        Stmt::Let { name, init, span: self.span_from(start) }
    }

    fn import_stmt(&mut self, top: bool) -> Stmt {
        let start = self.bump().span.start;
        let module = self.ident("a module name after `import`");
        let alias = if self.eat(&T::As) { Some(self.ident("a name after `as`")) } else { None };
        self.end_stmt(top, "`import` statement");
        let span = self.span_from(start);
        if !top {
            let diag = Diagnostic::new("`import` is only allowed at the top level of a file", span);
            self.error(diag);
        }
        Stmt::Import { module, alias, span }
    }

    fn while_stmt(&mut self) -> Stmt {
        let start = self.bump().span.start;
        let cond = self.expr(true);
        let body = self.expect_block("`{` after the `while` condition");
        Stmt::While { cond, body, span: self.span_from(start) }
    }

    fn for_stmt(&mut self) -> Stmt {
        let start = self.bump().span.start;
        let first = self.ident("a loop variable after `for`");
        let second = if self.eat(&T::Comma) { Some(self.ident("a second loop variable after `,`")) } else { None };
        if !self.eat(&T::In) {
            self.expected("`in` after the loop variables");
        }
        let iter_start = self.expr(true);
        let iter =
            if self.eat(&T::DotDot) { ForIter::Range { start: iter_start, end: self.expr(true) } } else { ForIter::Expr(iter_start) };
        let body = self.expect_block("`{` after the `for` loop's iterable");
        Stmt::For { first, second, iter, body, span: self.span_from(start) }
    }

    fn fn_decl(&mut self) -> FnDecl {
        let start = self.bump().span.start;
        let name = self.ident("a function name");
        self.fn_rest(start, Some(name))
    }

    /// Parses the parameters and body of a function whose `fn` (and name) are consumed.
    fn fn_rest(&mut self, start: u32, name: Option<Ident>) -> FnDecl {
        let params = if self.eat(&T::LParen) {
            self.list(&T::RParen, "`)`", true, Self::param)
        } else {
            self.expected("`(` to start the parameter list");
            Vec::new()
        };
        let body = self.expect_block("`{` to start the function body");
        FnDecl { name, params, body, span: self.span_from(start) }
    }

    fn param(&mut self) -> Option<Ident> {
        if !matches!(self.peek(), T::Ident(_)) {
            self.expected_name("a parameter name");
            return None;
        }
        Some(self.ident("a parameter name"))
    }

    /// Parses an identifier, or reports one missing and returns an empty placeholder.
    fn ident(&mut self, what: &str) -> Ident {
        let tok = self.tok();
        if let T::Ident(name) = &tok.kind {
            self.bump();
            return Ident { name: name.clone(), span: tok.span };
        }
        self.expected_name(what);
        if tok.kind.is_keyword() && !self.line_break_before_current() {
            // `let if = 1;`: the keyword was meant as the name. Taking it as one keeps
            // the rest of the statement from being misread as a new `if`.
            self.bump();
            return Ident { name: String::new(), span: tok.span };
        }
        Ident { name: String::new(), span: self.here() }
    }

    fn expected_name(&mut self, what: &str) {
        let label = self.peek().is_keyword().then_some("this is a keyword, which cannot be used as a name");
        self.expected_with_label(what, label);
    }

    // ---- Blocks ----

    /// Parses a block at a `{`.
    fn block(&mut self) -> Block {
        let open = self.bump().span;
        if !self.enter() {
            return Block { stmts: Vec::new(), tail: None, span: open };
        }
        let (stmts, tail) = self.stmts(false);
        self.leave();
        if !self.eat(&T::RBrace) && !self.lexer_reported() && !self.reported_unclosed {
            let diag = Diagnostic::new("unclosed `{`", open).with_label("this `{` has no matching `}`");
            self.syntax_error(diag);
            self.reported_unclosed = true;
        }
        Block { stmts, tail: tail.map(Box::new), span: self.span_from(open.start) }
    }

    /// Parses a block that the syntax requires here; `what` describes it for the error
    /// message if it is missing. A missing `{` is looked for a little further on, so that
    /// `while x y { ... }` still parses the body.
    fn expect_block(&mut self, what: &str) -> Block {
        if !self.at(&T::LBrace) {
            let label = self.at(&T::Assign).then_some("to compare values, use `==`");
            self.expected_with_label(what, label);
            if !self.skip_to_block() {
                return Block { stmts: Vec::new(), tail: None, span: self.here() };
            }
        }
        self.block()
    }

    /// Parses an `if`, `try` or plain block at the start of a statement.
    fn block_like(&mut self) -> Expr {
        match self.peek() {
            T::If => self.if_expr(),
            T::Try => self.try_expr(),
            _ => {
                let block = self.block();
                Expr { span: block.span, kind: ExprKind::Block(block) }
            }
        }
    }

    fn if_expr(&mut self) -> Expr {
        // `else if` chains are collected in a loop rather than by recursion, so a long
        // chain does not count as deep nesting.
        let first = self.if_arm();
        let mut chain = Vec::new();
        let mut els = None;
        while self.eat(&T::Else) {
            if self.at(&T::If) {
                if self.enter() {
                    chain.push(self.if_arm());
                }
            } else {
                let block = self.expect_block("`{` or `if` after `else`");
                els = Some(Box::new(Expr { span: block.span, kind: ExprKind::Block(block) }));
                break;
            }
        }
        self.depth -= chain.len();
        // Every `if` of the chain spans to its end.
        let end = self.prev_end;
        let make = |arm: IfArm, els: Option<Box<Expr>>| Expr {
            span: Span { start: arm.start, end },
            kind: ExprKind::If { cond: Box::new(arm.cond), then: arm.then, els },
        };
        for arm in chain.into_iter().rev() {
            els = Some(Box::new(make(arm, els)));
        }
        make(first, els)
    }

    /// Parses `if cond { ... }` at the `if`.
    fn if_arm(&mut self) -> IfArm {
        let start = self.bump().span.start;
        let cond = self.expr(true);
        let then = self.expect_block("`{` after the `if` condition");
        IfArm { start, cond, then }
    }

    fn try_expr(&mut self) -> Expr {
        let start = self.bump().span.start;
        let body = self.expect_block("`{` after `try`");
        let (var, handler) = if self.eat(&T::Catch) {
            let var = self.ident("a variable name after `catch`");
            (var, self.expect_block("`{` after the `catch` variable"))
        } else {
            self.expected("`catch` after the `try` block");
            let missing = self.here();
            (Ident { name: String::new(), span: missing }, Block { stmts: Vec::new(), tail: None, span: missing })
        };
        Expr { kind: ExprKind::Try { body, var, handler }, span: self.span_from(start) }
    }

    // ---- Expressions ----

    /// Parses an expression. With `no_map`, a `{` at this level is not a map literal but
    /// ends the expression: it is the body after an `if`/`while` condition or a `for`
    /// iterable. Brackets lift the restriction (`if x == ({a: 1}) {}`).
    fn expr(&mut self, no_map: bool) -> Expr {
        if !self.enter() {
            return Expr { kind: ExprKind::Error, span: self.tok().span };
        }
        let expr = self.binary(OR, no_map);
        self.leave();
        expr
    }

    /// Precedence climbing: parses operators binding at least as tightly as `min`.
    fn binary(&mut self, min: u8, no_map: bool) -> Expr {
        let mut lhs = if min <= NOT && self.at(&T::Not) { self.not_expr(no_map) } else { self.unary(no_map) };
        let mut lhs_is_comparison = false;
        let mut links = 0;
        while let Some((op, prec)) = binary_op(self.peek()) {
            if prec < min || !self.enter() {
                break;
            }
            links += 1;
            let op_span = self.bump().span;
            let rhs = self.binary(prec + 1, no_map);
            if prec == CMP && lhs_is_comparison {
                let diag = Diagnostic::new("comparison operators cannot be chained", op_span)
                    .with_label("use `and` to combine comparisons: `a < b and b < c`");
                self.error(diag);
            }
            lhs_is_comparison = prec == CMP;
            lhs = Expr { span: lhs.span.to(rhs.span), kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)) };
        }
        self.depth -= links;
        lhs
    }

    /// `not x`: its operand is a comparison or another `not`.
    fn not_expr(&mut self, no_map: bool) -> Expr {
        let start = self.bump().span.start;
        if !self.enter() {
            return Expr { kind: ExprKind::Error, span: self.tok().span };
        }
        let operand = self.binary(NOT, no_map);
        self.leave();
        Expr { span: self.span_from(start), kind: ExprKind::Unary(UnOp::Not, Box::new(operand)) }
    }

    fn unary(&mut self, no_map: bool) -> Expr {
        let op = match self.peek() {
            T::Minus => UnOp::Neg,
            T::Tilde => UnOp::BitNot,
            T::Not => {
                // `a == not b`: `not` binds more loosely than the operator before it.
                let diag = Diagnostic::new("`not` must be parenthesized here", self.tok().span)
                    .with_label("`not` binds more loosely than comparisons and arithmetic: write `(not x)`");
                self.error(diag);
                UnOp::Not
            }
            _ => return self.postfix(no_map),
        };
        let start = self.bump().span.start;
        if !self.enter() {
            return Expr { kind: ExprKind::Error, span: self.tok().span };
        }
        let operand = self.unary(no_map);
        self.leave();
        Expr { span: self.span_from(start), kind: ExprKind::Unary(op, Box::new(operand)) }
    }

    fn postfix(&mut self, no_map: bool) -> Expr {
        let mut expr = self.primary(no_map);
        let mut links = 0;
        while matches!(self.peek(), T::LParen | T::LBracket | T::Dot) && self.enter() {
            links += 1;
            let start = expr.span.start;
            let kind = match self.bump().kind {
                T::LParen => {
                    let args = self.list(&T::RParen, "`)`", false, |p| Some(p.expr(false)));
                    ExprKind::Call(Box::new(expr), args)
                }
                T::LBracket => {
                    let index = self.expr(false);
                    self.close(&T::RBracket, "`]` after the index");
                    ExprKind::Index(Box::new(expr), Box::new(index))
                }
                _ => {
                    let T::Ident(name) = self.peek() else {
                        self.expected_name("a field name after `.`");
                        break;
                    };
                    self.bump();
                    ExprKind::Field(Box::new(expr), name.clone())
                }
            };
            expr = Expr { kind, span: self.span_from(start) };
        }
        self.depth -= links;
        expr
    }

    fn primary(&mut self, no_map: bool) -> Expr {
        let tok = self.tok();
        let kind = match &tok.kind {
            T::Int(v) => ExprKind::Int(*v),
            T::Float(v) => ExprKind::Float(*v),
            T::Str(s) => ExprKind::Str(s.clone()),
            T::Interp(parts) => {
                self.bump();
                return self.interpolation(parts, tok.span);
            }
            T::True => ExprKind::Bool(true),
            T::False => ExprKind::Bool(false),
            T::Nil => ExprKind::Nil,
            T::Ident(name) => ExprKind::Var(name.clone()),
            T::LParen => return self.paren(),
            T::LBracket => return self.array(),
            T::LBrace if !no_map => return self.map(),
            T::Fn => return self.fn_expr(),
            T::If => return self.if_expr(),
            T::Try => return self.try_expr(),
            // The lexer reported this one.
            T::Error => {
                self.recovering = true;
                ExprKind::Error
            }
            _ => {
                self.expected("expression");
                return Expr { kind: ExprKind::Error, span: tok.span };
            }
        };
        self.bump();
        Expr { kind, span: tok.span }
    }

    /// Parses the tokens of each `${...}` as one expression.
    fn interpolation(&mut self, parts: &'a [InterpPart], span: Span) -> Expr {
        let mut out = Vec::with_capacity(parts.len());
        for part in parts {
            out.push(match part {
                InterpPart::Lit(text) => StrPart::Lit(text.clone()),
                InterpPart::Code(tokens, code_span) => StrPart::Expr(self.interpolated_code(tokens, *code_span)),
            });
        }
        Expr { kind: ExprKind::Interp(out), span }
    }

    fn interpolated_code(&mut self, tokens: &'a [Token], span: Span) -> Expr {
        // `prev_end` is restored too: the string token, already consumed, is what ends last.
        let saved = (self.tokens, self.pos, self.prev_end, self.in_interp);
        (self.tokens, self.pos, self.in_interp) = (tokens, 0, true);
        let expr = if self.at(&T::Eof) {
            if !self.lexer_reported() {
                self.syntax_error(Diagnostic::new("empty interpolation `${}`", span));
            }
            Expr { kind: ExprKind::Error, span }
        } else {
            let expr = self.expr(false);
            if !self.at(&T::Eof) {
                self.expected("`}` to end the interpolation");
            }
            expr
        };
        (self.tokens, self.pos, self.prev_end, self.in_interp) = saved;
        expr
    }

    fn paren(&mut self) -> Expr {
        let start = self.bump().span.start;
        let inner = self.expr(false);
        self.close(&T::RParen, "`)`");
        Expr { kind: inner.kind, span: self.span_from(start) }
    }

    fn array(&mut self) -> Expr {
        let start = self.bump().span.start;
        let items = self.list(&T::RBracket, "`]`", false, |p| Some(p.expr(false)));
        Expr { kind: ExprKind::Array(items), span: self.span_from(start) }
    }

    fn map(&mut self) -> Expr {
        let start = self.bump().span.start;
        let entries = self.list(&T::RBrace, "`}`", false, Self::map_entry);
        Expr { kind: ExprKind::Map(entries), span: self.span_from(start) }
    }

    fn map_entry(&mut self) -> Option<(MapKey, Expr)> {
        let key = match self.peek() {
            T::Ident(name) => {
                self.bump();
                MapKey::Str(name.clone())
            }
            T::Str(s) => {
                self.bump();
                MapKey::Str(s.clone())
            }
            T::Int(_) | T::Float(_) | T::Interp(_) => MapKey::Expr(self.primary(false)),
            T::LBracket => {
                self.bump();
                let key = self.expr(false);
                if !self.eat(&T::RBracket) {
                    self.expected("`]` after the key expression");
                    return None;
                }
                MapKey::Expr(key)
            }
            _ => {
                self.expected_with_label("a map key", Some("a key is a name, a string, a number or `[expression]`"));
                return None;
            }
        };
        if !self.eat(&T::Colon) {
            self.expected("`:` after the map key");
            return None;
        }
        Some((key, self.expr(false)))
    }

    fn fn_expr(&mut self) -> Expr {
        let start = self.bump().span.start;
        if let T::Ident(_) = self.peek() {
            let diag = Diagnostic::new("a named function cannot be used as an expression", self.tok().span)
                .with_label("remove the name, or declare the function as a statement");
            self.error(diag);
            self.bump();
        }
        let decl = self.fn_rest(start, None);
        Expr { span: decl.span, kind: ExprKind::Fn(Box::new(decl)) }
    }

    /// Parses comma-separated items up to `close` (already past the opening bracket),
    /// allowing a trailing comma. `item` returns `None` after reporting an error, which
    /// abandons the list. See [`Parser::skip_to_closer`] for `block_follows`.
    fn list<I>(&mut self, close: &T, close_text: &str, block_follows: bool, mut item: impl FnMut(&mut Self) -> Option<I>) -> Vec<I> {
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                break;
            }
            let Some(it) = item(self) else {
                self.skip_to_closer(close, block_follows);
                break;
            };
            items.push(it);
            if self.eat(&T::Comma) {
                continue;
            }
            if self.eat(close) {
                break;
            }
            self.expected(&format!("`,` or {close_text}"));
            self.skip_to_closer(close, block_follows);
            break;
        }
        items
    }

    /// Consumes the `close` bracket ending a construct, or reports it missing and skips
    /// to it.
    fn close(&mut self, close: &T, what: &str) {
        if !self.eat(close) {
            self.expected(what);
            self.skip_to_closer(close, false);
        }
    }
}
