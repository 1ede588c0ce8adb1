//! The editor support in `editors/`, checked against the lexer.
//!
//! The TextMate grammar (`editors/vscode/syntaxes/tern.tmLanguage.json`) is run by a small
//! TextMate interpreter below over every example: each character outside whitespace must
//! get a scope, none `invalid.illegal`, and each token of the lexer a scope of its kind.
//! Its keywords and the Vim syntax file's must be the lexer's [`KEYWORDS`], and the
//! builtins of both the standard library's natives. Snippets the lexer rejects must be
//! marked `invalid.illegal`, and those it accepts must not.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use fancy_regex::Regex;
use serde_json::Value;
use tern_compiler::lexer::{lex, InterpPart, Token, TokenKind, KEYWORDS};

// ---- A TextMate grammar interpreter ----
//
// What the grammar uses and no more: top-level `patterns`; `match` with `name` and
// `captures`; `begin`/`end` with `name`, `contentName`, `beginCaptures`/`endCaptures` (or
// `captures` for both) and nested `patterns`; `include` of `#name` and `$self`. Any other
// key is refused, so a grammar that starts relying on more fails here first. Lines are
// matched one at a time, a `begin`/`end` region carrying over to the next line. At each
// step the match starting leftmost wins, ties going to the earlier pattern, and inside a
// region its `end` comes before its patterns (TextMate's rules).

type RuleId = usize;

enum Rule {
    Match {
        regex: Regex,
        name: Option<String>,
        captures: Vec<(usize, String)>,
    },
    Region(Box<Region>),
    /// A rule with only `patterns`.
    Group(Vec<RuleId>),
    /// `#name` or `$self`, resolved when patterns are expanded.
    Include(String),
}

struct Region {
    begin: Regex,
    end: Regex,
    name: Option<String>,
    content_name: Option<String>,
    begin_captures: Vec<(usize, String)>,
    end_captures: Vec<(usize, String)>,
    patterns: Vec<RuleId>,
}

struct Grammar {
    rules: Vec<Rule>,
    repository: HashMap<String, RuleId>,
    root: Vec<RuleId>,
    json: Value,
}

/// One line's open region: its rule and the scopes of its end (`outer`) and content.
#[derive(Clone)]
struct Frame<'g> {
    rule: RuleId,
    outer: Vec<&'g str>,
    inner: Vec<&'g str>,
}

/// The match chosen at a step: start, end, the rule (`None`: the open region's end), and
/// each group's range.
type Found = (usize, usize, Option<RuleId>, Vec<Option<(usize, usize)>>);

/// The scopes of each byte of each line (`source.tern` left out).
type Scopes<'g> = Vec<Vec<Vec<&'g str>>>;

fn regex(source: &str) -> Regex {
    Regex::new(source).unwrap_or_else(|e| panic!("bad pattern {source:?}: {e}"))
}

fn captures(v: Option<&Value>) -> Vec<(usize, String)> {
    let Some(v) = v else { return Vec::new() };
    let mut out: Vec<(usize, String)> = v
        .as_object()
        .expect("captures is an object")
        .iter()
        .map(|(k, c)| {
            let c = c.as_object().expect("a capture is an object");
            assert!(c.keys().all(|k| k == "name"), "a capture with more than a name (patterns?) is not supported: {c:?}");
            (k.parse().expect("capture numbers"), c["name"].as_str().expect("capture name").to_string())
        })
        .collect();
    out.sort();
    out
}

impl Grammar {
    fn load(path: &Path) -> Grammar {
        let json: Value = serde_json::from_str(&read(path)).expect("the grammar is JSON");
        let top = json.as_object().expect("the grammar is an object");
        for k in top.keys() {
            assert!(
                ["$schema", "name", "scopeName", "fileTypes", "comment", "patterns", "repository"].contains(&k.as_str()),
                "unsupported top-level key {k}"
            );
        }
        let mut g = Grammar { rules: Vec::new(), repository: HashMap::new(), root: Vec::new(), json: Value::Null };
        for (name, rule) in top["repository"].as_object().expect("repository") {
            let id = g.compile(rule);
            g.repository.insert(name.clone(), id);
        }
        g.root = g.compile_list(&top["patterns"]);
        g.json = json;
        g
    }

    fn compile_list(&mut self, v: &Value) -> Vec<RuleId> {
        v.as_array().expect("patterns is an array").iter().map(|r| self.compile(r)).collect()
    }

    fn compile(&mut self, v: &Value) -> RuleId {
        let o = v.as_object().expect("a rule is an object");
        const KEYS: &[&str] =
            &["name", "contentName", "match", "begin", "end", "captures", "beginCaptures", "endCaptures", "patterns", "include", "comment"];
        for k in o.keys() {
            assert!(KEYS.contains(&k.as_str()), "unsupported rule key {k} in {v}");
        }
        let name = o.get("name").map(|n| n.as_str().expect("name").to_string());
        let rule = if let Some(target) = o.get("include") {
            Rule::Include(target.as_str().expect("include").to_string())
        } else if let Some(m) = o.get("match") {
            Rule::Match { regex: regex(m.as_str().expect("match")), name, captures: captures(o.get("captures")) }
        } else if let Some(b) = o.get("begin") {
            let end = o["end"].as_str().expect("a begin rule has an end");
            assert!(!end.chars().zip(end.chars().skip(1)).any(|(a, b)| a == '\\' && b.is_ascii_digit()), "back-references in end");
            let both = o.get("captures");
            Rule::Region(Box::new(Region {
                begin: regex(b.as_str().expect("begin")),
                end: regex(end),
                name,
                content_name: o.get("contentName").map(|n| n.as_str().expect("contentName").to_string()),
                begin_captures: captures(o.get("beginCaptures").or(both)),
                end_captures: captures(o.get("endCaptures").or(both)),
                patterns: match o.get("patterns") {
                    Some(p) => self.compile_list(p),
                    None => Vec::new(),
                },
            }))
        } else {
            assert!(name.is_none(), "a rule with a name and no match: {v}");
            let p = self.compile_list(o.get("patterns").expect("a rule has match, begin, include or patterns"));
            Rule::Group(p)
        };
        self.rules.push(rule);
        self.rules.len() - 1
    }

    /// The `match` and `begin` rules of `patterns`, includes expanded, in order.
    fn expand(&self, patterns: &[RuleId], out: &mut Vec<RuleId>, seen: &mut Vec<RuleId>) {
        for &id in patterns {
            match &self.rules[id] {
                Rule::Match { .. } | Rule::Region(_) => out.push(id),
                Rule::Group(p) => {
                    if !seen.contains(&id) {
                        seen.push(id);
                        self.expand(p, out, seen);
                    }
                }
                Rule::Include(target) => {
                    if target == "$self" {
                        // usize::MAX stands for the root list in `seen`.
                        if !seen.contains(&usize::MAX) {
                            seen.push(usize::MAX);
                            self.expand(&self.root, out, seen);
                        }
                    } else {
                        let name = target.strip_prefix('#').unwrap_or_else(|| panic!("unsupported include {target}"));
                        let target = *self.repository.get(name).unwrap_or_else(|| panic!("no repository item {name}"));
                        self.expand(&[target], out, seen);
                    }
                }
            }
        }
    }

    /// Tokenizes `text` line by line; each byte's scopes, innermost last.
    fn tokenize<'g>(&'g self, text: &str) -> Scopes<'g> {
        let mut stack: Vec<Frame<'g>> = Vec::new();
        let mut candidates: HashMap<Option<RuleId>, Vec<RuleId>> = HashMap::new();
        let mut out = Vec::new();
        for raw in text.split('\n') {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            let mut scopes: Vec<Vec<&str>> = vec![Vec::new(); line.len()];
            let mut pos = 0;
            let mut idle = 0;
            loop {
                let frame = stack.last().cloned();
                let base: Vec<&str> = frame.as_ref().map(|f| f.inner.clone()).unwrap_or_default();
                let region = frame.as_ref().map(|f| match &self.rules[f.rule] {
                    Rule::Region(r) => r,
                    _ => unreachable!(),
                });
                let rules = candidates.entry(frame.as_ref().map(|f| f.rule)).or_insert_with(|| {
                    let mut v = Vec::new();
                    self.expand(region.map_or(&self.root, |r| &r.patterns), &mut v, &mut Vec::new());
                    v
                });
                let mut best: Option<Found> = None;
                let mut consider = |re: &Regex, rule: Option<RuleId>| {
                    if let Some(c) = re.captures_from_pos(line, pos).expect("regex runs") {
                        let m = c.get(0).unwrap();
                        if best.as_ref().is_none_or(|b| m.start() < b.0) {
                            let groups = (0..c.len()).map(|i| c.get(i).map(|g| (g.start(), g.end()))).collect();
                            best = Some((m.start(), m.end(), rule, groups));
                        }
                    }
                };
                if let Some(r) = region {
                    consider(&r.end, None);
                }
                for &id in rules.iter() {
                    match &self.rules[id] {
                        Rule::Match { regex, .. } => consider(regex, Some(id)),
                        Rule::Region(r) => consider(&r.begin, Some(id)),
                        _ => unreachable!(),
                    }
                }
                let Some((start, end, rule, groups)) = best else {
                    scopes[pos..].iter_mut().for_each(|s| *s = base.clone());
                    break;
                };
                scopes[pos..start].iter_mut().for_each(|s| *s = base.clone());
                let paint = |scopes: &mut Vec<Vec<&'g str>>, outer: &[&'g str], caps: &'g [(usize, String)]| {
                    for (i, s) in scopes.iter_mut().enumerate().take(end).skip(start) {
                        *s = outer.to_vec();
                        for (g, name) in caps {
                            if groups.get(*g).copied().flatten().is_some_and(|(a, b)| a <= i && i < b) {
                                s.push(name);
                            }
                        }
                    }
                };
                let with = |mut v: Vec<&'g str>, name: &'g Option<String>| {
                    v.extend(name.as_deref());
                    v
                };
                match rule.map(|id| (id, &self.rules[id])) {
                    None => {
                        let f = stack.pop().unwrap();
                        paint(&mut scopes, &f.outer, &region.unwrap().end_captures);
                    }
                    Some((_, Rule::Match { name, captures, .. })) => {
                        assert!(end > start, "the pattern for {name:?} matched nothing at {pos} of {line:?}");
                        paint(&mut scopes, &with(base.clone(), name), captures);
                    }
                    Some((id, Rule::Region(r))) => {
                        let outer = with(base.clone(), &r.name);
                        paint(&mut scopes, &outer, &r.begin_captures);
                        let inner = with(outer.clone(), &r.content_name);
                        stack.push(Frame { rule: id, outer, inner });
                    }
                    _ => unreachable!(),
                }
                idle = if end == pos { idle + 1 } else { 0 };
                assert!(idle < 100, "the grammar loops without moving at {pos} of {line:?}");
                pos = end;
            }
            scopes.resize(raw.len(), Vec::new()); // the '\r' if any
            out.push(scopes);
        }
        out
    }
}

// ---- Files ----

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn grammar() -> Grammar {
    Grammar::load(&root().join("editors/vscode/syntaxes/tern.tmLanguage.json"))
}

/// Every Tern source file of the repository: the examples and the library modules.
fn tern_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["examples", "examples/mesh", "stdlib/lib"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "tern") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() > 30, "examples not found: {files:?}");
    files
}

fn lexer_keywords() -> BTreeSet<String> {
    KEYWORDS.iter().map(|k| k.to_string()).collect()
}

/// The words of a pattern `(?<![A-Za-z0-9_])(?:w1|w2|...)(?...)`, each once.
fn word_list(pattern: &str) -> Vec<String> {
    let rest = pattern
        .strip_prefix("(?<![A-Za-z0-9_])(?:")
        .unwrap_or_else(|| panic!("a word list must read (?<![A-Za-z0-9_])(?:w1|w2|...), not {pattern:?}"));
    let (words, after) = rest.split_once(')').unwrap();
    assert!(after.starts_with("(?!") || after.starts_with("(?="), "{pattern:?}: a lookahead must follow the words");
    let words: Vec<String> = words.split('|').map(str::to_string).collect();
    for w in &words {
        assert!(!w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{w:?} in {pattern:?} is not a name");
    }
    words
}

fn unique(words: Vec<String>, what: &str) -> BTreeSet<String> {
    let set: BTreeSet<String> = words.iter().cloned().collect();
    assert_eq!(set.len(), words.len(), "{what} names a word twice: {words:?}");
    set
}

/// The standard library's natives a program can call (not the shell's internal ones).
fn natives() -> BTreeSet<String> {
    tern_stdlib::natives().names().into_iter().filter(|n| !n.starts_with("__")).map(str::to_string).collect()
}

fn vim_syntax() -> String {
    read(&root().join("editors/vim/syntax/tern.vim"))
}

// ---- Scopes ----

/// The scopes that tell what a character is: past the innermost embedded code (`${...}`)
/// if any, and not `meta.*`, which says where it is but not what.
fn own_scopes<'a>(scopes: &'a [&'a str]) -> impl Iterator<Item = &'a str> {
    let from = scopes.iter().rposition(|s| s.starts_with("meta.embedded")).map_or(0, |i| i + 1);
    scopes[from..].iter().copied().filter(|s| !s.starts_with("meta."))
}

/// Every character of `text` that is left unscoped or marked invalid, as "line:col ...".
fn problems(g: &Grammar, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (n, (line, scopes)) in text.split('\n').zip(g.tokenize(text)).enumerate() {
        for (col, (i, c)) in line.char_indices().enumerate() {
            if matches!(c, ' ' | '\t' | '\r') {
                continue;
            }
            let s = &scopes[i];
            if own_scopes(s).next().is_none() {
                out.push(format!("{}:{}: {c:?} has no scope ({s:?})", n + 1, col + 1));
            } else if s.iter().any(|s| s.starts_with("invalid")) {
                out.push(format!("{}:{}: {c:?} is marked invalid ({s:?})", n + 1, col + 1));
            }
        }
    }
    out
}

/// The scopes of the first character of `needle` in `text`.
fn scopes_at<'g>(g: &'g Grammar, text: &str, needle: &str) -> Vec<&'g str> {
    let at = text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in {text:?}"));
    let line = text[..at].matches('\n').count();
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1);
    g.tokenize(text)[line][col].clone()
}

fn has_invalid(g: &Grammar, text: &str) -> bool {
    g.tokenize(text).iter().flatten().flatten().any(|s| s.starts_with("invalid.illegal"))
}

/// Where the grammar disagrees with the lexer about `text`: each token must start with a
/// scope of its kind (a string's quotes and each `${`...`}` included), and whatever lies
/// between tokens that is not whitespace must be a comment.
fn disagreements(g: &Grammar, text: &str) -> Vec<String> {
    let scopes: Vec<Vec<&str>> = g
        .tokenize(text)
        .into_iter()
        .flat_map(|mut line| {
            line.push(Vec::new()); // the '\n'
            line
        })
        .collect();
    let line_col = |at: usize| {
        let line = text[..at].matches('\n').count() + 1;
        format!("{line}:{}", text[..at].rsplit('\n').next().unwrap().chars().count() + 1)
    };
    let mut out = Vec::new();
    let mut expect = |at: usize, prefixes: &[&str], what: &str| {
        let own: Vec<&str> = own_scopes(&scopes[at]).collect();
        if !own.last().is_some_and(|s| prefixes.iter().any(|p| s.starts_with(p))) {
            out.push(format!("{}: {what} is scoped {:?}", line_col(at), scopes[at]));
        }
    };
    let (tokens, _) = lex(text);
    let mut covered = vec![false; text.len()];
    let mut stack: Vec<&[Token]> = vec![&tokens];
    while let Some(tokens) = stack.pop() {
        for t in tokens {
            let (start, end) = (t.span.start as usize, t.span.end as usize);
            covered[start..end].iter_mut().for_each(|c| *c = true);
            let what = format!("{:?}", t.kind);
            match &t.kind {
                TokenKind::Eof => {}
                TokenKind::Ident(_) => expect(start, &["variable.", "entity.name.", "support.function."], &what),
                TokenKind::Int(_) | TokenKind::Float(_) => expect(start, &["constant.numeric."], &what),
                TokenKind::Str(_) | TokenKind::Interp(_) => {
                    expect(start, &["punctuation.definition.string.begin"], &what);
                    expect(end - 1, &["punctuation.definition.string.end"], &what);
                    if let TokenKind::Interp(parts) = &t.kind {
                        for part in parts {
                            if let InterpPart::Code(code, span) = part {
                                expect(span.start as usize, &["punctuation.section.interpolation.begin"], "`${`");
                                expect(span.end as usize - 1, &["punctuation.section.interpolation.end"], "`}`");
                                stack.push(code);
                            }
                        }
                    }
                }
                TokenKind::Error => expect(start, &["invalid.illegal."], &what),
                k if k.is_keyword() => expect(start, &["keyword.", "storage.", "constant.language."], &what),
                _ => expect(start, &["punctuation.", "keyword.operator."], &what),
            }
        }
    }
    for (at, c) in text.char_indices() {
        if !covered[at] && !c.is_ascii_whitespace() && c != '\u{FEFF}' {
            expect(at, &["comment.", "punctuation.definition.comment"], "text between tokens");
        }
    }
    out
}

// ---- Tests ----

#[test]
fn every_example_is_scoped_and_nothing_is_invalid() {
    let g = grammar();
    let mut failures = Vec::new();
    for path in tern_files() {
        let text = read(&path);
        let (_, diags) = lex(&text);
        assert!(diags.is_empty(), "{}: the lexer rejects it: {diags:?}", path.display());
        for p in problems(&g, &text).into_iter().chain(disagreements(&g, &text)) {
            failures.push(format!("{}:{p}", path.strip_prefix(root()).unwrap().display()));
        }
    }
    let shown: Vec<_> = failures.iter().take(30).collect();
    assert!(failures.is_empty(), "{} characters badly scoped, the first:\n{shown:#?}", failures.len());
}

#[test]
fn grammar_keywords_are_the_lexers() {
    let g = grammar();
    let patterns = g.json["repository"]["keywords"]["patterns"].as_array().expect("repository.keywords.patterns");
    let words = patterns.iter().flat_map(|p| word_list(p["match"].as_str().expect("a keyword pattern has a match"))).collect();
    assert_eq!(unique(words, "repository.keywords"), lexer_keywords(), "the grammar's keywords (left) are not the lexer's (right)");
    // And the grammar treats them as keywords where they stand, and only whole words.
    for k in KEYWORDS {
        let s = scopes_at(&g, k, k);
        assert!(
            s.iter().any(|s| s.starts_with("keyword.") || s.starts_with("storage.") || s.starts_with("constant.language.")),
            "{k} is scoped {s:?}"
        );
        assert_eq!(scopes_at(&g, &format!("{k}_x"), k), ["variable.other.tern"], "{k}_x");
    }
}

#[test]
fn vim_keywords_are_the_lexers() {
    let mut words = Vec::new();
    for line in vim_syntax().lines() {
        let mut parts = line.split_whitespace();
        if !matches!(parts.next(), Some("syn" | "synt" | "synta" | "syntax")) || parts.next() != Some("keyword") {
            continue;
        }
        let _group = parts.next();
        words.extend(
            parts
                .filter(|w| !w.contains('=') && !["contained", "transparent", "skipwhite", "skipnl", "skipempty"].contains(w))
                .map(str::to_string),
        );
    }
    assert_eq!(
        unique(words, "the Vim syntax's keywords"),
        lexer_keywords(),
        "Vim's `syn keyword` words (left) are not the lexer's keywords (right)"
    );
}

#[test]
fn builtins_are_the_standard_librarys_natives() {
    let g = grammar();
    let pattern = g.json["repository"]["builtin-call"]["match"].as_str().expect("repository.builtin-call.match");
    assert_eq!(unique(word_list(pattern), "builtin-call"), natives(), "the grammar's builtins (left) are not the natives (right)");

    let vim = vim_syntax();
    let line = vim.lines().find(|l| l.starts_with("syn match ternBuiltin ")).expect("a ternBuiltin line in tern.vim");
    let list = line.split_once(r"\<\%(").and_then(|(_, r)| r.split_once(r"\)")).expect(r"ternBuiltin reads \<\%(a\|b\|...\)").0;
    let words = list.split(r"\|").map(str::to_string).collect();
    assert_eq!(unique(words, "ternBuiltin"), natives(), "Vim's builtins (left) are not the natives (right)");
}

#[test]
fn vscode_manifest_points_at_the_grammar() {
    let dir = root().join("editors/vscode");
    let manifest: Value = serde_json::from_str(&read(&dir.join("package.json"))).expect("package.json is JSON");
    let language = &manifest["contributes"]["languages"][0];
    assert_eq!(language["id"], "tern");
    assert!(language["extensions"].as_array().unwrap().contains(&Value::from(".tern")));
    let config: Value = serde_json::from_str(&read(&dir.join(language["configuration"].as_str().unwrap()))).expect("configuration is JSON");
    assert_eq!(config["comments"]["lineComment"], "//");
    let entry = &manifest["contributes"]["grammars"][0];
    assert_eq!(entry["language"], "tern");
    assert_eq!(entry["scopeName"], "source.tern");
    let g = Grammar::load(&dir.join(entry["path"].as_str().unwrap()));
    assert_eq!(g.json["scopeName"], "source.tern");
}

#[test]
fn hand_written_lines() {
    let g = grammar();
    let cases: &[(&str, &str, &[&str])] = &[
        ("let x = 1;", "let", &["storage.type.tern"]),
        ("let x = 1;", "x", &["variable.other.tern"]),
        ("let x = 1;", "=", &["keyword.operator.assignment.tern"]),
        ("let x = 1;", "1", &["constant.numeric.integer.decimal.tern"]),
        ("let x = 1;", ";", &["punctuation.terminator.statement.tern"]),
        ("while not done and ok {", "not", &["keyword.operator.logical.tern"]),
        ("x = nil; y = true", "nil", &["constant.language.nil.tern"]),
        ("x = 0xFF_FF + 1_000", "0x", &["constant.numeric.integer.hexadecimal.tern"]),
        ("x = 6.02e23", "6", &["constant.numeric.float.tern"]),
        ("for i in 0..10 {", "..", &["keyword.operator.range.tern"]),
        ("a <<= 2", "<<=", &["keyword.operator.assignment.compound.tern"]),
        ("x // a note", "//", &["comment.line.double-slash.tern", "punctuation.definition.comment.tern"]),
        ("x // a note", "note", &["comment.line.double-slash.tern"]),
        (r#"s = "a\tb""#, "a", &["string.quoted.double.tern"]),
        (r#"s = "a\tb""#, r"\t", &["string.quoted.double.tern", "constant.character.escape.tern"]),
        (r#"s = "\u{1F600}""#, r"\u", &["string.quoted.double.tern", "constant.character.escape.unicode.tern"]),
        (r#"s = "\q""#, r"\q", &["string.quoted.double.tern", "invalid.illegal.unknown-escape.tern"]),
        (r#"s = "a // b""#, "//", &["string.quoted.double.tern"]),
        ("x = a @ b", "@", &["invalid.illegal.character.tern"]),
        ("if a && b {", "&&", &["invalid.illegal.operator.tern"]),
        ("x = 123abc", "123", &["invalid.illegal.numeric.suffix.tern"]),
        ("fn add(a, b) {", "fn", &["meta.function.tern", "storage.type.function.tern"]),
        ("fn add(a, b) {", "add", &["meta.function.tern", "entity.name.function.tern"]),
        ("fn add(a, b) {", "b", &["meta.function.tern", "variable.parameter.tern"]),
        ("let f = fn(x) { x };", "x)", &["meta.function.tern", "variable.parameter.tern"]),
        ("total(xs)", "total", &["meta.function-call.tern", "entity.name.function.tern"]),
        ("println(x)", "println", &["support.function.builtin.tern"]),
        ("let node = m.node;", "node =", &["variable.other.tern"]),
        ("let node = m.node;", "node;", &["variable.other.property.tern"]),
        ("list.map(a, f)", "map", &["entity.name.function.tern"]),
        ("send(boss, {id: id})", "id:", &["variable.other.property.tern"]),
        ("import list as l;", "list", &["entity.name.namespace.tern"]),
        ("try { f() } catch e {", "e {", &["variable.parameter.tern"]),
        ("let PI = 3.14;", "PI", &["variable.other.constant.tern"]),
        (
            r#"s = "n=${n + 1}!""#,
            "${",
            &["string.quoted.double.tern", "meta.interpolation.tern", "punctuation.section.interpolation.begin.tern"],
        ),
        (
            r#"s = "n=${n + 1}!""#,
            "n +",
            &["string.quoted.double.tern", "meta.interpolation.tern", "meta.embedded.line.tern", "variable.other.tern"],
        ),
        (r#"s = "n=${n + 1}!""#, "!", &["string.quoted.double.tern"]),
        // Braces nest in an interpolation; a `}` in a string there does not close it.
        (r#"s = "${ {k: "}"}["k"] } after""#, "after", &["string.quoted.double.tern"]),
        (
            r#"s = "${ {k: "}"}["k"] } after""#,
            r#"["k"]"#,
            &["string.quoted.double.tern", "meta.interpolation.tern", "meta.embedded.line.tern", "punctuation.section.brackets.begin.tern"],
        ),
        // A string goes on over lines; so does the state.
        ("let s = \"one\ntwo\" + x;", "two", &["string.quoted.double.tern"]),
        ("let s = \"one\ntwo\" + x;", "x;", &["variable.other.tern"]),
        (
            "let s = \"${\nx}\" + y;",
            "x}",
            &["string.quoted.double.tern", "meta.interpolation.tern", "meta.embedded.line.tern", "variable.other.tern"],
        ),
        ("let s = \"${\nx}\" + y;", "y;", &["variable.other.tern"]),
    ];
    for (text, needle, expected) in cases {
        assert_eq!(scopes_at(&g, text, needle), *expected, "{needle:?} in {text:?}");
    }
}

/// What the lexer rejects the grammar marks invalid, and what it accepts it does not.
/// Two rejections a line-by-line grammar cannot see are left out: a string or `${` open at
/// the end of the file, and a float literal out of range (`1e999`).
#[test]
fn invalid_exactly_where_the_lexer_says() {
    let g = grammar();
    let accepted = [
        "x = 0 + 42 + 1_000_000 + 0xff + 0XFF + 0x_1 + 0x7fff_ffff_ffff_ffff + 9223372036854775807 + 0009223372036854775807",
        "x = 1.5 + 2.0 + 1e-9 + 6.02e23 + 1.5e3 + 1E+2 + 1_0.2_5 + 1e-99999",
        "x = 1..5; y = 1.x; z = x.5; w = a.b.c",
        "a & b | c ^ ~d << 1 >> 2; a &= 1; a |= 2; a ^= 3; a <<= 4; a >>= 5; a != b; a == b; a <= b; a >= b",
        "a += 1; a -= 1; a *= 2; a /= 2; a %= 3; x = -a * b / c % d",
        r#"s = "\n\t\r\0\\\"\$ \u{0} \u{41} \u{D7FF} \u{E000} \u{10FFFF} \u{000041} $5 $ {}""#,
        r#"s = "${ "${x}" } ${ {a: 1}["a"] }""#,
        "m = {a: 1, \"b\": 2, 3: 4, [k]: 5};",
        "x = m[0](1)[2]; _ = _x1;",
        "\t// ! @ # $ ' é",
    ];
    for text in accepted {
        let (_, diags) = lex(text);
        assert!(diags.is_empty(), "the lexer rejects {text:?}: {diags:?}");
        assert_eq!(problems(&g, text), Vec::<String>::new(), "{text:?}");
        assert_eq!(disagreements(&g, text), Vec::<String>::new(), "{text:?}");
    }
    let rejected = [
        "123abc",
        "0xfg",
        "1e",
        "1.5e",
        "0b101",
        "1_000x",
        "0x",
        "0x_",
        "9223372036854775808",
        "9_223_372_036_854_775_808",
        "99999999999999999999",
        "00000000000000000000009999999999999999999",
        "0x8000000000000000",
        "0x1_0000_0000_0000_0000",
        r#""\q""#,
        r#""\u{110000}""#,
        r#""\u{D800}""#,
        r#""\u{dfff}""#,
        r#""\u{}""#,
        r#""\u{1234567}""#,
        r#""\u41""#,
        "\"a\\\nb\"",
        "a && b",
        "a || b",
        "!a",
        "a = @b",
        "#x",
        "'a'",
        "é",
        "x = $y",
        "a ? b : c",
        "`x`",
        "a\u{a0}b",
    ];
    for text in rejected {
        let (_, diags) = lex(text);
        assert!(!diags.is_empty(), "the lexer accepts {text:?}");
        assert!(has_invalid(&g, text), "the grammar does not mark {text:?} invalid: {:?}", g.tokenize(text));
    }
}
