//! Golden files: the bytecode of `golden/*.tern` must equal `golden/*.disasm`.
//! Run with `UPDATE_GOLDEN=1` to rewrite the expectations after an intended change.

use std::path::Path;
use tern_compiler::compile_source;
use tern_vm::bytecode::disassemble;

#[test]
fn codegen_matches_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for src in entries.iter().filter(|p| p.extension().is_some_and(|e| e == "tern")) {
        let text = std::fs::read_to_string(src).unwrap();
        let name = src.file_name().unwrap().to_string_lossy().into_owned();
        let compiled = compile_source(&name, &text, None, &["println", "len"], &|_| None).unwrap();
        let actual: String = compiled.modules.iter().map(disassemble).collect();
        let expected_path = src.with_extension("disasm");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!("{name}: bytecode differs from {}:\n{actual}", expected_path.display()));
        }
    }
    assert!(failures.is_empty(), "{}\n(run with UPDATE_GOLDEN=1 to accept)", failures.join("\n"));
}
