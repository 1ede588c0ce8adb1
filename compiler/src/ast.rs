//! The syntax tree the parser produces. Every node that can be named in a diagnostic
//! carries its byte span in the source file.

/// A byte range `start..end` in the source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start: start as u32, end: end as u32 }
    }
    pub fn to(self, other: Span) -> Span {
        Span { start: self.start.min(other.start), end: self.end.max(other.end) }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// `let name = init;` / `let name;`
    Let {
        name: Ident,
        init: Option<Expr>,
        span: Span,
    },
    /// `fn name(params) { body }`
    Fn(FnDecl),
    /// `import name;` / `import name as alias;`
    Import {
        module: Ident,
        alias: Option<Ident>,
        span: Span,
    },
    /// `target = value;` and compound forms (`op` is the arithmetic operator of `+=` etc.).
    Assign {
        target: Expr,
        op: Option<BinOp>,
        value: Expr,
        span: Span,
    },
    While {
        cond: Expr,
        body: Block,
        span: Span,
    },
    /// `for a in iter {}` / `for a, b in iter {}`; `iter` may be a `Range`.
    For {
        first: Ident,
        second: Option<Ident>,
        iter: ForIter,
        body: Block,
        span: Span,
    },
    Break(Span),
    Continue(Span),
    Return {
        value: Option<Expr>,
        span: Span,
    },
    /// An expression used as a statement (its value is dropped, unless it is the last
    /// statement of a block without a trailing `;`, see `Block::tail`).
    Expr(Expr),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ForIter {
    /// `start..end` (end exclusive)
    Range {
        start: Expr,
        end: Expr,
    },
    Expr(Expr),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FnDecl {
    pub name: Option<Ident>,
    pub params: Vec<Ident>,
    pub body: Block,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    /// The block's value: a final expression without a trailing `;`.
    pub tail: Option<Box<Expr>>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    /// `&`
    BitAnd,
    /// `|`
    BitOr,
    /// `^`
    BitXor,
    /// `<<`
    Shl,
    /// `>>` (arithmetic: the sign bit is copied in)
    Shr,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
    /// `~`
    BitNot,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StrPart {
    Lit(String),
    Expr(Expr),
}

#[derive(Debug, Clone, PartialEq)]
pub enum MapKey {
    /// `name:` or `"str":` — a string key.
    Str(String),
    /// `[expr]:` or a number literal key.
    Expr(Expr),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A string with `${...}` interpolation.
    Interp(Vec<StrPart>),
    Var(String),
    Array(Vec<Expr>),
    Map(Vec<(MapKey, Expr)>),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Call(Box<Expr>, Vec<Expr>),
    Index(Box<Expr>, Box<Expr>),
    /// `obj.name`
    Field(Box<Expr>, String),
    If {
        cond: Box<Expr>,
        then: Block,
        els: Option<Box<Expr>>,
    },
    /// A block in expression position (only produced as an `if`/`else` body).
    Block(Block),
    Fn(Box<FnDecl>),
    Try {
        body: Block,
        var: Ident,
        handler: Block,
    },
    /// Produced by error recovery; never reaches codegen.
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

/// A parsed source file.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    pub stmts: Vec<Stmt>,
}
