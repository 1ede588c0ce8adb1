//! Source text to tokens.
//!
//! The lexer never stops at an error: bad characters, malformed numbers and unterminated
//! strings become diagnostics, and lexing goes on so that the parser still sees the rest
//! of the file. A string with `${...}` interpolation is one token holding the tokens of
//! each interpolated piece of code, so the parser handles interpolation without knowing
//! about string syntax.

use crate::ast::Span;
use crate::diag::Diagnostic;

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TokenKind {
    Ident(String),
    Int(i64),
    Float(f64),
    /// A string literal without interpolation, escapes decoded.
    Str(String),
    /// A string literal with at least one `${...}`.
    Interp(Vec<InterpPart>),

    // Keywords.
    Let,
    Fn,
    If,
    Else,
    While,
    For,
    In,
    Break,
    Continue,
    Return,
    Import,
    As,
    Try,
    Catch,
    Nil,
    True,
    False,
    And,
    Or,
    Not,

    // Punctuation.
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Semi,
    Colon,
    Dot,
    DotDot,
    /// `=`
    Assign,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    PlusAssign,
    MinusAssign,
    StarAssign,
    SlashAssign,
    PercentAssign,
    /// `&` (bitwise and)
    Amp,
    /// `|` (bitwise or)
    Pipe,
    /// `^` (bitwise xor)
    Caret,
    /// `~` (bitwise not)
    Tilde,
    /// `<<`
    Shl,
    /// `>>`
    Shr,
    AmpAssign,
    PipeAssign,
    CaretAssign,
    ShlAssign,
    ShrAssign,

    /// A run of characters that start no token. Already reported by the lexer, so the
    /// parser skips it without a second diagnostic.
    Error,
    /// End of the file; inside [`InterpPart::Code`], the interpolation's closing `}`.
    Eof,
}

impl TokenKind {
    pub fn is_keyword(&self) -> bool {
        use TokenKind::*;
        matches!(
            self,
            Let | Fn
                | If
                | Else
                | While
                | For
                | In
                | Break
                | Continue
                | Return
                | Import
                | As
                | Try
                | Catch
                | Nil
                | True
                | False
                | And
                | Or
                | Not
        )
    }
}

/// Every keyword, as written. The lexer recognises keywords from this list (the editor
/// grammars in `editors/` are tested against it).
pub const KEYWORDS: &[&str] = &[
    "let", "fn", "if", "else", "while", "for", "in", "break", "continue", "return", "import", "as", "try", "catch", "nil", "true", "false",
    "and", "or", "not",
];

/// The token of each of [`KEYWORDS`], in the same order.
const KEYWORD_KINDS: [TokenKind; KEYWORDS.len()] = {
    use TokenKind::*;
    [Let, Fn, If, Else, While, For, In, Break, Continue, Return, Import, As, Try, Catch, Nil, True, False, And, Or, Not]
};

#[derive(Debug, Clone, PartialEq)]
pub enum InterpPart {
    /// Literal text, escapes decoded.
    Lit(String),
    /// The tokens of one `${...}`, always ending with an [`TokenKind::Eof`]. The span
    /// covers the whole `${...}`, delimiters included.
    Code(Vec<Token>, Span),
}

/// Interpolations nested inside strings inside interpolations recurse in the lexer;
/// past this depth the rest of the file is skipped with a diagnostic instead.
const MAX_INTERP_DEPTH: usize = 64;

/// Splits `source` into tokens ending with [`TokenKind::Eof`], plus the diagnostics for
/// anything malformed.
pub fn lex(source: &str) -> (Vec<Token>, Vec<Diagnostic>) {
    let lexed = lex_source(source);
    (lexed.tokens, lexed.diags)
}

pub(crate) struct Lexed {
    pub tokens: Vec<Token>,
    pub diags: Vec<Diagnostic>,
    /// A string or interpolation ran to the end of the file. The parser uses this to
    /// stay quiet about the end of file it then finds, since that is the same mistake.
    pub truncated: bool,
}

pub(crate) fn lex_source(source: &str) -> Lexed {
    let mut lexer = Lexer { src: source, pos: 0, diags: Vec::new(), interp_depth: 0, truncated: false };
    if u32::try_from(source.len()).is_err() {
        // Spans are 32-bit; a bigger file cannot be described, so it is refused whole.
        lexer.error(Span::default(), "source file is larger than 4 GiB");
        lexer.pos = source.len();
    } else if source.starts_with('\u{FEFF}') {
        lexer.pos = '\u{FEFF}'.len_utf8();
    }
    let tokens = lexer.tokens(false);
    Lexed { tokens, diags: lexer.diags, truncated: lexer.truncated }
}

struct Lexer<'s> {
    src: &'s str,
    /// Byte offset of the next character; always on a character boundary.
    pos: usize,
    diags: Vec<Diagnostic>,
    interp_depth: usize,
    truncated: bool,
}

impl Lexer<'_> {
    fn byte(&self, ahead: usize) -> Option<u8> {
        self.src.as_bytes().get(self.pos + ahead).copied()
    }

    fn char(&self) -> Option<char> {
        self.src.get(self.pos..)?.chars().next()
    }

    fn eat_while(&mut self, pred: impl Fn(u8) -> bool) {
        while self.byte(0).is_some_and(&pred) {
            self.pos += 1;
        }
    }

    fn error(&mut self, span: Span, message: impl Into<String>) {
        self.diags.push(Diagnostic::new(message, span));
    }

    /// Lexes until the end of the file or, inside an interpolation (`in_interp`), until
    /// the `}` that closes it, which is left unconsumed. The result ends with `Eof`.
    fn tokens(&mut self, in_interp: bool) -> Vec<Token> {
        let mut out = Vec::new();
        let mut braces = 0usize;
        loop {
            self.skip_trivia();
            let start = self.pos;
            let Some(c) = self.char() else { break };
            if in_interp && c == '}' && braces == 0 {
                out.push(Token { kind: TokenKind::Eof, span: Span::new(start, start + 1) });
                return out;
            }
            let kind = self.token(c);
            match kind {
                TokenKind::LBrace => braces += 1,
                TokenKind::RBrace => braces = braces.saturating_sub(1),
                _ => {}
            }
            out.push(Token { kind, span: Span::new(start, self.pos) });
        }
        let end = self.src.len();
        out.push(Token { kind: TokenKind::Eof, span: Span::new(end, end) });
        out
    }

    fn skip_trivia(&mut self) {
        loop {
            match self.byte(0) {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.pos += 1,
                Some(b'/') if self.byte(1) == Some(b'/') => self.eat_while(|b| b != b'\n'),
                _ => return,
            }
        }
    }

    /// Lexes one token starting with `c` at `self.pos`.
    fn token(&mut self, c: char) -> TokenKind {
        use TokenKind::*;
        if c.is_ascii_alphabetic() || c == '_' {
            return self.ident_or_keyword();
        }
        if c.is_ascii_digit() {
            return self.number();
        }
        if c == '"' {
            return self.string();
        }
        let next_is_eq = self.byte(1) == Some(b'=');
        let (kind, len) = match c {
            '(' => (LParen, 1),
            ')' => (RParen, 1),
            '[' => (LBracket, 1),
            ']' => (RBracket, 1),
            '{' => (LBrace, 1),
            '}' => (RBrace, 1),
            ',' => (Comma, 1),
            ';' => (Semi, 1),
            ':' => (Colon, 1),
            '.' if self.byte(1) == Some(b'.') => (DotDot, 2),
            '.' => (Dot, 1),
            '=' if next_is_eq => (EqEq, 2),
            '=' => (Assign, 1),
            '!' if next_is_eq => (NotEq, 2),
            '<' if self.byte(1) == Some(b'<') && self.byte(2) == Some(b'=') => (ShlAssign, 3),
            '<' if self.byte(1) == Some(b'<') => (Shl, 2),
            '<' if next_is_eq => (Le, 2),
            '<' => (Lt, 1),
            '>' if self.byte(1) == Some(b'>') && self.byte(2) == Some(b'=') => (ShrAssign, 3),
            '>' if self.byte(1) == Some(b'>') => (Shr, 2),
            '>' if next_is_eq => (Ge, 2),
            '>' => (Gt, 1),
            '+' if next_is_eq => (PlusAssign, 2),
            '+' => (Plus, 1),
            '-' if next_is_eq => (MinusAssign, 2),
            '-' => (Minus, 1),
            '*' if next_is_eq => (StarAssign, 2),
            '*' => (Star, 1),
            '/' if next_is_eq => (SlashAssign, 2),
            '/' => (Slash, 1),
            '%' if next_is_eq => (PercentAssign, 2),
            '%' => (Percent, 1),
            // `&&` and `||` are not Tern's (it spells them `and`, `or`): one error for the
            // pair, not a confusing one about a missing operand of `&`.
            '&' | '|' if self.byte(1) == Some(c as u8) => {
                let (text, hint) = if c == '&' { ("&&", "use `and` for logical and") } else { ("||", "use `or` for logical or") };
                let span = Span::new(self.pos, self.pos + 2);
                self.diags.push(Diagnostic::new(format!("unexpected characters `{text}`"), span).with_label(hint));
                self.pos += 2;
                return Error;
            }
            '&' if next_is_eq => (AmpAssign, 2),
            '&' => (Amp, 1),
            '|' if next_is_eq => (PipeAssign, 2),
            '|' => (Pipe, 1),
            '^' if next_is_eq => (CaretAssign, 2),
            '^' => (Caret, 1),
            '~' => (Tilde, 1),
            _ => return self.bad_chars(),
        };
        self.pos += len;
        kind
    }

    fn ident_or_keyword(&mut self) -> TokenKind {
        let start = self.pos;
        self.eat_while(|b| b.is_ascii_alphanumeric() || b == b'_');
        let name = &self.src[start..self.pos];
        match KEYWORDS.iter().position(|&k| k == name) {
            Some(i) => KEYWORD_KINDS[i].clone(),
            None => TokenKind::Ident(name.to_string()),
        }
    }

    /// Reports a run of characters that start no token as one diagnostic.
    fn bad_chars(&mut self) -> TokenKind {
        let start = self.pos;
        while let Some(c) = self.char() {
            let starts_token = c.is_ascii_alphanumeric()
                || c.is_ascii_whitespace()
                || "_\"()[]{},;:.=<>+-*/%^~".contains(c)
                || "&|".contains(c)
                || (c == '!' && self.byte(1) == Some(b'='));
            if starts_token && self.pos > start {
                break;
            }
            self.pos += c.len_utf8();
        }
        let text = &self.src[start..self.pos];
        let message =
            if text.chars().count() == 1 { format!("unexpected character `{text}`") } else { format!("unexpected characters `{text}`") };
        let hint = match text.as_bytes()[0] {
            b'!' => Some("use `not` for logical negation"),
            b'\'' => Some("strings are written in double quotes"),
            _ => None,
        };
        let mut diag = Diagnostic::new(message, Span::new(start, self.pos));
        if let Some(hint) = hint {
            diag = diag.with_label(hint);
        }
        self.diags.push(diag);
        TokenKind::Error
    }

    fn number(&mut self) -> TokenKind {
        let start = self.pos;
        let digits = |b: u8| b.is_ascii_digit() || b == b'_';
        if self.byte(0) == Some(b'0') && matches!(self.byte(1), Some(b'x' | b'X')) {
            self.pos += 2;
            let hex_start = self.pos;
            self.eat_while(|b| b.is_ascii_hexdigit() || b == b'_');
            let hex = without_underscores(&self.src[hex_start..self.pos]);
            let kind = if hex.is_empty() {
                self.error(Span::new(start, self.pos), "expected hexadecimal digits after `0x`");
                TokenKind::Int(0)
            } else {
                match i64::from_str_radix(&hex, 16) {
                    Ok(v) => TokenKind::Int(v),
                    Err(_) => self.int_overflow(start),
                }
            };
            self.reject_suffix(start);
            return kind;
        }

        self.eat_while(digits);
        let mut is_float = false;
        // `1..5` is a range and `1.x` a field access: a `.` belongs to the number only
        // when a digit follows.
        if self.byte(0) == Some(b'.') && self.byte(1).is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
            self.eat_while(digits);
            is_float = true;
        }
        if matches!(self.byte(0), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(self.byte(1), Some(b'+' | b'-')));
            if self.byte(1 + sign).is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1 + sign;
                self.eat_while(digits);
                is_float = true;
            }
        }
        let text = without_underscores(&self.src[start..self.pos]);
        let kind = if is_float {
            match text.parse::<f64>() {
                Ok(v) if v.is_finite() => TokenKind::Float(v),
                _ => {
                    self.error(Span::new(start, self.pos), "float literal is out of range");
                    TokenKind::Float(0.0)
                }
            }
        } else {
            match text.parse::<i64>() {
                Ok(v) => TokenKind::Int(v),
                Err(_) => self.int_overflow(start),
            }
        };
        self.reject_suffix(start);
        kind
    }

    fn int_overflow(&mut self, start: usize) -> TokenKind {
        let diag = Diagnostic::new("integer literal is too large", Span::new(start, self.pos))
            .with_label(format!("the largest int is {}", i64::MAX));
        self.diags.push(diag);
        TokenKind::Int(0)
    }

    /// `123abc` or `0xfg` is one malformed literal, not a number followed by a name.
    fn reject_suffix(&mut self, start: usize) {
        let suffix_start = self.pos;
        self.eat_while(|b| b.is_ascii_alphanumeric() || b == b'_');
        if self.pos > suffix_start {
            let suffix = &self.src[suffix_start..self.pos];
            self.error(Span::new(start, self.pos), format!("invalid suffix `{suffix}` on number literal"));
        }
    }

    /// Lexes a string literal starting at its opening quote.
    fn string(&mut self) -> TokenKind {
        let open = self.pos;
        self.pos += 1;
        let mut parts = Vec::new();
        let mut text = String::new();
        loop {
            let Some(c) = self.char() else {
                let diag = Diagnostic::new("unterminated string", Span::new(open, open + 1)).with_label("this string is never closed");
                self.diags.push(diag);
                self.truncated = true;
                break;
            };
            match c {
                '"' => {
                    self.pos += 1;
                    break;
                }
                '\\' => self.escape(&mut text),
                '$' if self.byte(1) == Some(b'{') => {
                    if !text.is_empty() {
                        parts.push(InterpPart::Lit(std::mem::take(&mut text)));
                    }
                    let Some(code) = self.interpolation() else {
                        break;
                    };
                    parts.push(code);
                }
                _ => {
                    text.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
        if parts.is_empty() {
            return TokenKind::Str(text);
        }
        if !text.is_empty() {
            parts.push(InterpPart::Lit(text));
        }
        TokenKind::Interp(parts)
    }

    /// Lexes `${...}` starting at the `$`. Returns `None` when it runs to the end of the
    /// file (reported here), which also ends the enclosing string.
    fn interpolation(&mut self) -> Option<InterpPart> {
        let start = self.pos;
        self.pos += 2;
        if self.interp_depth >= MAX_INTERP_DEPTH {
            let diag = Diagnostic::new("nesting too deep", Span::new(start, self.pos))
                .with_label(format!("string interpolations nest more than {MAX_INTERP_DEPTH} levels deep here"));
            self.diags.push(diag);
            // Recovering inside such a pile of strings would only produce noise.
            self.pos = self.src.len();
            self.truncated = true;
            return None;
        }
        self.interp_depth += 1;
        let tokens = self.tokens(true);
        self.interp_depth -= 1;
        if self.byte(0) != Some(b'}') {
            // A nested string that hit the end of the file has already said so.
            if !self.truncated {
                let diag = Diagnostic::new("unterminated interpolation", Span::new(start, start + 2))
                    .with_label("this `${` is never closed with `}`");
                self.diags.push(diag);
                self.truncated = true;
            }
            return None;
        }
        self.pos += 1;
        Some(InterpPart::Code(tokens, Span::new(start, self.pos)))
    }

    /// Decodes the escape sequence at the `\` into `out`, or reports it.
    fn escape(&mut self, out: &mut String) {
        let start = self.pos;
        self.pos += 1;
        let Some(c) = self.char() else { return };
        self.pos += c.len_utf8();
        let decoded = match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            '0' => '\0',
            '\\' => '\\',
            '"' => '"',
            '$' => '$',
            'u' => return self.unicode_escape(start, out),
            _ => {
                let diag = Diagnostic::new(format!("unknown escape `\\{c}`"), Span::new(start, self.pos))
                    .with_label(r#"valid escapes are \n \t \r \0 \\ \" \$ \u{...}"#);
                self.diags.push(diag);
                return;
            }
        };
        out.push(decoded);
    }

    /// Decodes `\u{HEX}`; `self.pos` is just past the `u`.
    fn unicode_escape(&mut self, start: usize, out: &mut String) {
        let bad = |lexer: &mut Self| {
            let diag = Diagnostic::new("invalid unicode escape", Span::new(start, lexer.pos))
                .with_label(r"write it as `\u{1F600}`: 1 to 6 hex digits naming a Unicode scalar value");
            lexer.diags.push(diag);
        };
        if self.byte(0) != Some(b'{') {
            return bad(self);
        }
        self.pos += 1;
        let hex_start = self.pos;
        self.eat_while(|b| b.is_ascii_hexdigit());
        let hex = &self.src[hex_start..self.pos];
        if self.byte(0) != Some(b'}') {
            return bad(self);
        }
        self.pos += 1;
        let decoded = Some(hex).filter(|h| h.len() <= 6).and_then(|h| u32::from_str_radix(h, 16).ok()).and_then(char::from_u32);
        match decoded {
            Some(c) => out.push(c),
            None => bad(self),
        }
    }
}

fn without_underscores(s: &str) -> String {
    s.chars().filter(|&c| c != '_').collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use TokenKind::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        let (tokens, diags) = lex(src);
        assert!(diags.is_empty(), "unexpected diagnostics for {src:?}: {diags:?}");
        tokens.into_iter().map(|t| t.kind).collect()
    }

    fn errors(src: &str) -> Vec<String> {
        lex(src).1.into_iter().map(|d| d.message).collect()
    }

    fn ident(name: &str) -> TokenKind {
        Ident(name.to_string())
    }

    #[test]
    fn keywords_and_identifiers() {
        assert_eq!(
            kinds("let fn if else while for in break continue return import as try catch"),
            vec![Let, Fn, If, Else, While, For, In, Break, Continue, Return, Import, As, Try, Catch, Eof]
        );
        assert_eq!(
            kinds("nil true false and or not _x x1 letter"),
            vec![Nil, True, False, And, Or, Not, ident("_x"), ident("x1"), ident("letter"), Eof]
        );
    }

    #[test]
    fn keyword_list() {
        for &k in KEYWORDS {
            let kind = &kinds(k)[0];
            assert!(kind.is_keyword(), "{k} lexes as {kind:?}");
            assert_eq!(kinds(&format!("{k}_")), vec![ident(&format!("{k}_")), Eof]);
        }
    }

    #[test]
    fn punctuation() {
        assert_eq!(
            kinds("( ) [ ] { } , ; : . .. = == != < <= > >= + - * / % += -= *= /= %="),
            vec![
                LParen,
                RParen,
                LBracket,
                RBracket,
                LBrace,
                RBrace,
                Comma,
                Semi,
                Colon,
                Dot,
                DotDot,
                Assign,
                EqEq,
                NotEq,
                Lt,
                Le,
                Gt,
                Ge,
                Plus,
                Minus,
                Star,
                Slash,
                Percent,
                PlusAssign,
                MinusAssign,
                StarAssign,
                SlashAssign,
                PercentAssign,
                Eof
            ]
        );
        assert_eq!(kinds("a<=b"), vec![ident("a"), Le, ident("b"), Eof]);
    }

    #[test]
    fn bitwise_operators() {
        assert_eq!(
            kinds("& | ^ ~ << >> &= |= ^= <<= >>= < <= > >="),
            vec![Amp, Pipe, Caret, Tilde, Shl, Shr, AmpAssign, PipeAssign, CaretAssign, ShlAssign, ShrAssign, Lt, Le, Gt, Ge, Eof]
        );
        assert_eq!(kinds("a<<b>>c"), vec![ident("a"), Shl, ident("b"), Shr, ident("c"), Eof]);
        assert_eq!(kinds("a<<=1"), vec![ident("a"), ShlAssign, Int(1), Eof]);
        assert_eq!(kinds("a&b|c^~d"), vec![ident("a"), Amp, ident("b"), Pipe, ident("c"), Caret, Tilde, ident("d"), Eof]);
        assert_eq!(kinds("a & &b"), vec![ident("a"), Amp, Amp, ident("b"), Eof]);
        // `&&` and `||` are not operators: one error each, pointing at `and` / `or`.
        let (tokens, diags) = lex("a && b || c @|");
        let kinds: Vec<_> = tokens.into_iter().map(|t| t.kind).collect();
        assert_eq!(kinds, vec![ident("a"), Error, ident("b"), Error, ident("c"), Error, Pipe, Eof]);
        let messages: Vec<_> = diags.iter().map(|d| (d.message.as_str(), d.label.as_deref(), d.span)).collect();
        assert_eq!(
            messages,
            [
                ("unexpected characters `&&`", Some("use `and` for logical and"), Span::new(2, 4)),
                ("unexpected characters `||`", Some("use `or` for logical or"), Span::new(7, 9)),
                ("unexpected character `@`", None, Span::new(12, 13)),
            ]
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(
            kinds("0 42 1_000_000 0xff 0XFF 0x7fff_ffff_ffff_ffff 9223372036854775807"),
            vec![Int(0), Int(42), Int(1_000_000), Int(255), Int(255), Int(i64::MAX), Int(i64::MAX), Eof]
        );
        assert_eq!(
            kinds("1.5 2.0 1e-9 6.02e23 1.5e3 1E+2 1_0.2_5"),
            vec![Float(1.5), Float(2.0), Float(1e-9), Float(6.02e23), Float(1.5e3), Float(100.0), Float(10.25), Eof]
        );
        // A `.` not followed by a digit is not part of the number.
        assert_eq!(kinds("1..5"), vec![Int(1), DotDot, Int(5), Eof]);
        assert_eq!(kinds("1.x"), vec![Int(1), Dot, ident("x"), Eof]);
    }

    #[test]
    fn bad_numbers() {
        assert_eq!(errors("9223372036854775808"), ["integer literal is too large"]);
        assert_eq!(errors("0x8000000000000000"), ["integer literal is too large"]);
        assert_eq!(errors("0x"), ["expected hexadecimal digits after `0x`"]);
        assert_eq!(errors("1e999"), ["float literal is out of range"]);
        assert_eq!(errors("123abc"), ["invalid suffix `abc` on number literal"]);
        assert_eq!(errors("0xfg"), ["invalid suffix `g` on number literal"]);
        assert_eq!(errors("1e"), ["invalid suffix `e` on number literal"]);
        // The literal still becomes one token so the parser goes on undisturbed.
        let (tokens, _) = lex("x = 99999999999999999999;");
        assert_eq!(tokens[2].kind, Int(0));
        assert_eq!(tokens[3].kind, Semi);
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(kinds(r#""""#), vec![Str(String::new()), Eof]);
        assert_eq!(kinds(r#""a\n\t\r\0\\\"\$b \u{1F600}\u{41}""#), vec![Str("a\n\t\r\0\\\"$b \u{1F600}A".to_string()), Eof]);
        assert_eq!(kinds(r#""cost: $5 $""#), vec![Str("cost: $5 $".to_string()), Eof]);
        assert_eq!(kinds("\"two\nlines\""), vec![Str("two\nlines".to_string()), Eof]);
        assert_eq!(kinds(r#""// not a comment""#), vec![Str("// not a comment".to_string()), Eof]);
    }

    #[test]
    fn bad_strings() {
        assert_eq!(errors(r#""a\qb""#), ["unknown escape `\\q`"]);
        assert_eq!(errors(r#""\u{110000}""#), ["invalid unicode escape"]);
        assert_eq!(errors(r#""\u{D800}""#), ["invalid unicode escape"]);
        assert_eq!(errors(r#""\u{}""#), ["invalid unicode escape"]);
        assert_eq!(errors(r#""\u{1234567}""#), ["invalid unicode escape"]);
        assert_eq!(errors(r#""\u41""#), ["invalid unicode escape"]);
        assert_eq!(errors(r#""\u{41"#), ["invalid unicode escape", "unterminated string"]);
        assert_eq!(errors("\"abc"), ["unterminated string"]);
        // Bad escapes do not stop the string.
        let (tokens, diags) = lex(r#""a\qb\zc" x"#);
        assert_eq!(diags.len(), 2);
        assert_eq!(tokens[0].kind, Str("abc".to_string()));
        assert_eq!(tokens[1].kind, ident("x"));
    }

    #[test]
    fn interpolation() {
        let (tokens, diags) = lex(r#""a ${x + 1} b${ {k: "}"}["k"] }""#);
        assert!(diags.is_empty(), "{diags:?}");
        let Interp(parts) = &tokens[0].kind else { panic!("not an interpolation: {tokens:?}") };
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], InterpPart::Lit("a ".to_string()));
        let InterpPart::Code(code, span) = &parts[1] else { panic!("{parts:?}") };
        let code: Vec<_> = code.iter().map(|t| t.kind.clone()).collect();
        assert_eq!(code, vec![ident("x"), Plus, Int(1), Eof]);
        assert_eq!(*span, Span::new(3, 11));
        assert_eq!(parts[2], InterpPart::Lit(" b".to_string()));
        // Braces nest, and a `}` inside a nested string does not close the interpolation.
        let InterpPart::Code(code, _) = &parts[3] else { panic!("{parts:?}") };
        let code: Vec<_> = code.iter().map(|t| t.kind.clone()).collect();
        assert_eq!(code, vec![LBrace, ident("k"), Colon, Str("}".to_string()), RBrace, LBracket, Str("k".to_string()), RBracket, Eof]);
        assert_eq!(tokens[1].kind, Eof);
    }

    #[test]
    fn nested_interpolation() {
        let (tokens, diags) = lex(r#""x${ "y${z}" }""#);
        assert!(diags.is_empty(), "{diags:?}");
        let Interp(parts) = &tokens[0].kind else { panic!("{tokens:?}") };
        let InterpPart::Code(code, _) = &parts[1] else { panic!("{parts:?}") };
        let Interp(inner) = &code[0].kind else { panic!("{code:?}") };
        assert_eq!(inner[0], InterpPart::Lit("y".to_string()));
    }

    #[test]
    fn unterminated_interpolation() {
        assert_eq!(errors(r#""a ${x"#), ["unterminated interpolation"]);
        // The inner string is reported; the interpolation around it is the same mistake.
        assert_eq!(errors(r#""${""#), ["unterminated string"]);
        let deep = "\"${".repeat(1000);
        assert_eq!(errors(&deep), ["nesting too deep"]);
    }

    #[test]
    fn comments_and_spans() {
        let (tokens, diags) = lex("a // comment ( \"\n  bb//x\n");
        assert!(diags.is_empty());
        let spans: Vec<_> = tokens.iter().map(|t| (t.span.start, t.span.end)).collect();
        assert_eq!(spans, vec![(0, 1), (19, 21), (25, 25)]);
        assert_eq!(kinds("\u{FEFF}x"), vec![ident("x"), Eof]);
    }

    #[test]
    fn bad_characters() {
        let (tokens, diags) = lex("a @# b ! c && d é");
        let kinds: Vec<_> = tokens.into_iter().map(|t| t.kind).collect();
        assert_eq!(kinds, vec![ident("a"), Error, ident("b"), Error, ident("c"), Error, ident("d"), Error, Eof]);
        let messages: Vec<_> = diags.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            messages,
            ["unexpected characters `@#`", "unexpected character `!`", "unexpected characters `&&`", "unexpected character `é`"]
        );
        assert_eq!(diags[1].label.as_deref(), Some("use `not` for logical negation"));
        assert_eq!(diags[3].span, Span::new(16, 18));
    }
}
