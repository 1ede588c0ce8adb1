//! `tern fmt` (`tern_compiler::fmt`): every Tern program of the repository is formatted
//! already; formatting is idempotent, keeps every comment and never changes the
//! bytecode (line numbers aside); and a program with its layout thrown away (indentation
//! and spaces within lines) comes back as it was.

use std::path::{Path, PathBuf};

use tern_compiler::fmt::format_source;
use tern_compiler::lexer::{lex, TokenKind};
use tern_vm::bytecode::Module;

/// The directories (from the repository root) whose `.tern` files are Tern programs.
const DIRS: &[&str] = &["examples", "examples/mesh", "bench/programs", "bench/mesh", "stdlib/lib"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every Tern program of the repository: its path from the root and its source.
fn programs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for dir in DIRS {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join(dir)).unwrap().map(|e| e.unwrap().path()).collect();
        paths.sort();
        for path in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "tern")) {
            let name = format!("{dir}/{}", path.file_name().unwrap().to_string_lossy());
            out.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
    assert!(out.len() > 40, "found only {} programs", out.len());
    out
}

fn format(name: &str, src: &str) -> String {
    format_source(name, src).unwrap_or_else(|e| panic!("{name} does not format:\n{e}"))
}

/// The comments of `src`, in order, found in the gaps between its tokens (so `//`
/// inside a string is not one).
fn comments(src: &str) -> Vec<String> {
    let (tokens, diags) = lex(src);
    assert!(diags.is_empty(), "{diags:?}");
    let mut out = Vec::new();
    let mut prev_end = 0;
    for tok in &tokens {
        let gap = &src[prev_end..tok.span.start as usize];
        let mut rest = gap;
        while let Some(at) = rest.find("//") {
            let len = rest[at..].find('\n').unwrap_or(rest.len() - at);
            out.push(rest[at..at + len].trim_end().to_string());
            rest = &rest[at + len..];
        }
        prev_end = tok.span.end as usize;
    }
    out
}

/// `src` with its layout thrown away: no indentation, and one or three spaces between
/// tokens on a line (alternating, so that no rule can rely on what the source had);
/// line breaks, blank lines and comments stay.
fn unformat(src: &str) -> String {
    let (tokens, _) = lex(src);
    let mut out = String::new();
    let mut prev_end = 0;
    for (i, tok) in tokens.iter().enumerate() {
        let gap = &src[prev_end..tok.span.start as usize];
        if gap.contains("//") || gap.contains('\n') {
            // Each line of the gap without its indentation; a comment's own text stays.
            let lines: Vec<&str> = gap.split('\n').map(str::trim_start).collect();
            out.push_str(&lines.join("\n"));
            if !gap.ends_with('\n') && !lines.last().unwrap().is_empty() {
                out.push('\n');
            }
        } else if prev_end > 0 {
            out.push_str(if i % 2 == 0 { " " } else { "   " });
        }
        if tok.kind == TokenKind::Eof {
            break;
        }
        out.push_str(&src[tok.span.start as usize..tok.span.end as usize]);
        prev_end = tok.span.end as usize;
    }
    out
}

/// `src` with each run of spaces inside a line (not its indentation) made one space:
/// comments at the end of lines keep their column, which `unformat` moves.
fn squeeze(src: &str) -> String {
    let mut out = String::new();
    for line in src.lines() {
        let body = line.trim_start();
        out.push_str(&line[..line.len() - body.len()]);
        let mut space = false;
        for c in body.chars() {
            if c == ' ' {
                if !space {
                    out.push(c);
                }
                space = true;
            } else {
                out.push(c);
                space = false;
            }
        }
        out.push('\n');
    }
    out
}

/// Asserts that `actual` is `expected`, showing the first line where they differ.
fn assert_same(actual: &str, expected: &str, what: &str) {
    if actual != expected {
        let a: Vec<&str> = actual.split('\n').collect();
        let e: Vec<&str> = expected.split('\n').collect();
        let at = a.iter().zip(&e).position(|(a, e)| a != e).unwrap_or(a.len().min(e.len()));
        let from = at.saturating_sub(3);
        panic!(
            "{what}: line {} differs\n--- got:\n{}\n--- expected:\n{}",
            at + 1,
            a[from..(at + 3).min(a.len())].join("\n"),
            e[from..(at + 3).min(e.len())].join("\n")
        );
    }
}

#[test]
fn every_program_is_formatted() {
    let unformatted: Vec<String> = programs().into_iter().filter(|(name, src)| format(name, src) != *src).map(|(name, _)| name).collect();
    assert!(unformatted.is_empty(), "not formatted (run `tern fmt` on them): {unformatted:?}");
}

#[test]
fn formatting_is_idempotent() {
    for (name, src) in programs() {
        for src in [src.clone(), unformat(&src)] {
            let once = format(&name, &src);
            assert_same(&format(&name, &once), &once, &format!("{name}: formatting twice differs from once"));
        }
    }
}

#[test]
fn formatting_keeps_every_comment() {
    for (name, src) in programs() {
        let before = comments(&src);
        assert_eq!(comments(&unformat(&src)), before, "{name}: unformat lost a comment");
        assert_eq!(comments(&format(&name, &unformat(&src))), before, "{name}");
    }
}

#[test]
fn a_program_without_its_layout_comes_back_as_it_was() {
    for (name, src) in programs() {
        let formatted = format(&name, &unformat(&src));
        if squeeze(&formatted) != squeeze(&src) {
            let first = formatted.lines().zip(src.lines()).position(|(a, b)| squeeze(a) != squeeze(b)).unwrap_or(0);
            panic!(
                "{name}: line {} comes back as\n{:?}\ninstead of\n{:?}",
                first + 1,
                formatted.lines().nth(first).unwrap_or(""),
                src.lines().nth(first).unwrap_or("")
            );
        }
    }
}

/// The modules of a program, with each function's line table emptied.
fn compile_without_lines(name: &str, src: &str, dir: &Path) -> Vec<Module> {
    // Every name in any of the programs may be a native (so that those of the standard
    // library's modules are found too): natives come after a program's own names, so
    // the extra ones change nothing.
    let mut names = Vec::new();
    for (_, text) in programs().iter().chain([&(String::new(), src.to_string())]) {
        let (tokens, _) = lex(text);
        names.extend(tokens.into_iter().filter_map(|t| if let TokenKind::Ident(n) = t.kind { Some(n) } else { None }));
    }
    let natives: Vec<&str> = names.iter().map(String::as_str).collect();
    let stdlib = |module: &str| std::fs::read_to_string(root().join("stdlib/lib").join(format!("{module}.tern"))).ok();
    let file = Path::new(name).file_name().unwrap().to_string_lossy().into_owned();
    let compiled = tern_compiler::compile_source(&file, src, Some(dir), &natives, &stdlib).unwrap_or_else(|e| panic!("{name}:\n{e}"));
    let mut modules = compiled.modules;
    for f in modules.iter_mut().flat_map(|m| m.functions.iter_mut()) {
        f.lines.clear();
    }
    modules
}

#[test]
fn formatting_does_not_change_the_bytecode() {
    for (name, src) in programs() {
        let dir = root().join(Path::new(&name).parent().unwrap());
        let original = compile_without_lines(&name, &src, &dir);
        for variant in [unformat(&src), format(&name, &unformat(&src))] {
            assert!(compile_without_lines(&name, &variant, &dir) == original, "{name}: the bytecode changed");
        }
    }
}

/// `src` with each run of whitespace between tokens and comments replaced by a
/// pseudo-random choice of spaces, tabs and line breaks (one with a line break where
/// the run has one): the program stays the same, since line breaks never change what a
/// program means, and so do its comments, though one at the end of a line may come to
/// stand on a line of its own.
fn scramble(src: &str, seed: u64) -> String {
    const LAYOUTS: &[&str] = &["\n", "\n  ", "\n\n\n\t", " \n ", " ", " ", "   ", "\t ", ""];
    const WITH_BREAK: usize = 4;
    let mut state = seed;
    let mut pick = |gap: &str| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let choices = if gap.contains('\n') { WITH_BREAK } else { LAYOUTS.len() };
        LAYOUTS[(state >> 33) as usize % choices]
    };
    let (tokens, _) = lex(src);
    let mut out = String::new();
    let mut prev_end = 0;
    for tok in &tokens {
        let mut gap = &src[prev_end..tok.span.start as usize];
        if prev_end == 0 {
            out.push_str(gap);
        } else {
            while !gap.is_empty() {
                let comment = gap.find("//").unwrap_or(gap.len());
                let (space, rest) = gap.split_at(comment);
                // Two tokens need something between them; a comment needs the end of its line.
                let layout = match pick(space) {
                    "" if rest.is_empty() || space.is_empty() => space,
                    layout => layout,
                };
                out.push_str(layout);
                let len = rest.find('\n').unwrap_or(rest.len());
                out.push_str(&rest[..len]);
                gap = &rest[len..];
            }
        }
        out.push_str(&src[tok.span.start as usize..tok.span.end as usize]);
        prev_end = tok.span.end as usize;
    }
    out
}

#[test]
fn any_layout_formats_stably_to_the_same_program() {
    for (name, src) in programs() {
        let dir = root().join(Path::new(&name).parent().unwrap());
        let original = compile_without_lines(&name, &src, &dir);
        for seed in 0..3 {
            let scrambled = scramble(&src, seed);
            let once = format(&name, &scrambled);
            assert_same(&format(&name, &once), &once, &format!("{name}, seed {seed}: formatting twice differs from once"));
            assert_eq!(comments(&once), comments(&src), "{name}, seed {seed}");
            assert!(compile_without_lines(&name, &once, &dir) == original, "{name}, seed {seed}: the bytecode changed");
        }
    }
}

// ---- Cases ----

fn fmt(src: &str) -> String {
    format(".tern", src)
}

#[test]
fn indentation_follows_brackets() {
    assert_eq!(fmt("fn f(x) {\nif x {\nreturn 1;\n}\n  x\n}\n"), "fn f(x) {\n    if x {\n        return 1;\n    }\n    x\n}\n");
    // Brackets opened on one line indent the next once; the closers go back together.
    assert_eq!(fmt("list.map(xs, fn(x) {\nx + 1\n});\n"), "list.map(xs, fn(x) {\n    x + 1\n});\n");
    assert_eq!(fmt("let a = [\n1,\n[2,\n3],\n];\n"), "let a = [\n    1,\n    [2,\n        3],\n];\n");
    // A line that continues an expression is indented once more, however many follow.
    assert_eq!(fmt("let x = 1 +\n2 +\n3;\nlet y = a\n.b\n.c;\n"), "let x = 1 +\n    2 +\n    3;\nlet y = a\n    .b\n    .c;\n");
    // An `else` may start a line.
    assert_eq!(fmt("if a { 1 }\n  else { 2 }\n"), "if a { 1 }\nelse { 2 }\n");
}

#[test]
fn spaces_within_a_line() {
    assert_eq!(fmt("let  x=-a+b*(c-d)   ;"), "let x = -a + b * (c - d);\n");
    assert_eq!(fmt("f( a ,b,[ 1,2 ] , { k : 1 , \"s\":2 } )[ 0 ].y ( ) ;"), "f(a, b, [1, 2], {k: 1, \"s\": 2})[0].y();\n");
    assert_eq!(fmt("for i in 0 .. n - 1 { }"), "for i in 0..n - 1 {}\n");
    assert_eq!(fmt("let g=fn ( a,b ){a};fn h (){}"), "let g = fn(a, b) { a }; fn h() {}\n");
    assert_eq!(fmt("let m={};let e=[ ];x+=~y<<2;"), "let m = {}; let e = []; x += ~y << 2;\n");
    // A prefix operator is told from a binary one by the syntax tree, not by what is
    // before it; `- -x` keeps its space so that it does not read as `--x`.
    assert_eq!(fmt("if a {} -b;\nlet c = - - d;\nlet e = (-f) - -g;"), "if a {} -b;\nlet c = - -d;\nlet e = (-f) - -g;\n");
    assert_eq!(fmt("let z = not(a and b) or not c;"), "let z = not (a and b) or not c;\n");
    // A map or block in parentheses, and calls of what is not a name.
    assert_eq!(fmt("(fn(){1})( );x={a:1}[ \"a\" ];"), "(fn() { 1 })(); x = {a: 1}[\"a\"];\n");
    assert_eq!(fmt("let t = try{f()}catch e{e};"), "let t = try { f() } catch e { e };\n");
}

#[test]
fn nested_closures() {
    let src = "let curried = fn(a) {fn(b) {fn(c) {a*100+b*10+c}}};\nlet f = fn() {\nfn() {\nfn() {\n1\n}\n}\n};\n";
    assert_eq!(
        fmt(src),
        "let curried = fn(a) { fn(b) { fn(c) { a * 100 + b * 10 + c } } };\nlet f = fn() {\n    fn() {\n        fn() {\n            1\n        }\n    }\n};\n"
    );
}

#[test]
fn empty_blocks_and_maps() {
    assert_eq!(fmt("fn f() { }\nwhile x {\n}\nlet m = { };"), "fn f() {}\nwhile x {\n}\nlet m = {};\n");
}

#[test]
fn comments_stay_where_they_are() {
    // At the end of a block, before the closing brace: indented as the block's code.
    assert_eq!(fmt("fn f() {\nx();\n// the end\n}\n"), "fn f() {\n    x();\n    // the end\n}\n");
    // Before the code they describe, at its indentation; at the end of a line.
    assert_eq!(
        fmt("  // top\nfn f() { // opens\n      // inside\n  g(); // call\n}  // closes"),
        "// top\nfn f() { // opens\n    // inside\n    g(); // call\n}  // closes\n"
    );
    // A comment at the end of a line keeps its column while the code ends before it.
    assert_eq!(fmt("x = 1;      // one\nlonger_name = 22; // two\n"), "x = 1;      // one\nlonger_name = 22; // two\n");
    assert_eq!(fmt("    x = 1; // one\n"), "x = 1;     // one\n");
    assert_eq!(fmt("x=1;// tight\n"), "x = 1; // tight\n");
    // In a list, between `}` and `else`, and before a line that continues an expression.
    assert_eq!(fmt("let x = a +\n// why\nb\n// and\n.c;\n"), "let x = a +\n    // why\n    b\n    // and\n    .c;\n");
    assert_eq!(fmt("let a = [\n1, // one\n  // two next\n2\n];"), "let a = [\n    1, // one\n    // two next\n    2\n];\n");
    assert_eq!(fmt("if a {\n1\n}\n// or else\nelse {\n2\n}\n"), "if a {\n    1\n}\n// or else\nelse {\n    2\n}\n");
    // A file of comments only, and one without a final line break.
    assert_eq!(fmt("// a\n\n\n// b"), "// a\n\n// b\n");
    assert_eq!(fmt(""), "");
    assert_eq!(fmt("\n\n"), "");
}

#[test]
fn strings_are_left_alone() {
    assert_eq!(fmt("let s = \"a // not a comment\";  let t=\"${ x+1 }//\";"), "let s = \"a // not a comment\"; let t = \"${ x+1 }//\";\n");
    // A string over several lines keeps its lines as they are, spaces included.
    assert_eq!(fmt("let s = \"one  \n   two\";   // after\nx;"), "let s = \"one  \n   two\";   // after\nx;\n");
    assert_eq!(fmt("let n = 1_000 + 0xFF + 1.50e3;"), "let n = 1_000 + 0xFF + 1.50e3;\n");
}

#[test]
fn blank_lines() {
    // Runs become one; none at the start or end of the file or of a bracket's contents.
    assert_eq!(fmt("\n\nlet a = 1;\n\n\n\nlet b = 2;\n\n\n"), "let a = 1;\n\nlet b = 2;\n");
    assert_eq!(fmt("fn f() {\n\n  x;\n\n  y;\n\n}\n"), "fn f() {\n    x;\n\n    y;\n}\n");
    assert_eq!(fmt("fn f() {\n\n// c\n\nx;\n\n// d\n\n}\n"), "fn f() {\n    // c\n\n    x;\n\n    // d\n}\n");
}

#[test]
fn trailing_commas() {
    // Dropped before a closing bracket on the same line, kept before one on a line of
    // its own (and never added).
    assert_eq!(fmt("let m = {\n  a: [1, 2\n, ]\n, };\n"), "let m = {\n    a: [1, 2\n    ]\n};\n");
    assert_eq!(
        fmt("f(a, b,);\nlet m = {a: 1,};\nlet l = [\n1,\n2,\n];\nlet k = [\n1\n];"),
        "f(a, b);\nlet m = {a: 1};\nlet l = [\n    1,\n    2,\n];\nlet k = [\n    1\n];\n"
    );
}

#[test]
fn line_endings_and_byte_order_mark() {
    assert_eq!(fmt("let a = 1; // c\r\nlet b = 2;\r\n"), "let a = 1; // c\nlet b = 2;\n");
    assert_eq!(fmt("\u{FEFF}let a=1;"), "\u{FEFF}let a = 1;\n");
    assert_eq!(fmt("\u{FEFF}let a=1;   // c\n"), "\u{FEFF}let a = 1; // c\n");
}

#[test]
fn a_program_that_does_not_parse_gets_the_parsers_errors() {
    let err = format_source("bad.tern", "let x = 1 +;\nlet = 2;\n").unwrap_err();
    assert_eq!(err.count, 2);
    assert!(err.rendered.contains("--> bad.tern:1:12"), "{}", err.rendered);
    assert!(err.rendered.contains("--> bad.tern:2:5"), "{}", err.rendered);
}
