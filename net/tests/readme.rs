//! The README's commands, taken literally and in order, succeed: every `tern ...` line of
//! its `sh` blocks (and `cargo run --release --bin tern -- demo`, as `tern demo`), run
//! with the test's `tern` binary in a copy of the repository's `examples/` (the mesh's
//! ports moved to free ones, so that nothing else on the machine is touched). `tern mesh
//! up` runs in the background for the lines after it; `1.N` is the pid the line before
//! printed, as the README says; `tern repl` gets `:nodes` and `:quit` on its stdin. Every
//! child has a deadline and is killed when the test ends (`common/doc_commands.rs`).

use std::path::{Path, PathBuf};

#[path = "common/doc_commands.rs"]
mod doc_commands;

use doc_commands::{copy_dir, move_ports, sh_commands, Session};

const README: &str = include_str!("../../README.md");

/// The commands of the README's `sh` blocks that run `tern`, as typed (comments cut).
fn readme_commands() -> Vec<String> {
    sh_commands(README)
        .into_iter()
        .filter_map(|cmd| {
            if cmd == "cargo run --release --bin tern -- demo" {
                Some("tern demo".to_string())
            } else {
                cmd.starts_with("tern ").then_some(cmd)
            }
        })
        .collect()
}

#[test]
fn the_readme_commands_work_as_written() {
    let cmds = readme_commands();
    for must in ["tern demo", "tern cluster init", "tern mesh up", "tern repl", "tern ctl", "migrate 1.N b"] {
        assert!(cmds.iter().any(|c| c.contains(must)), "the README no longer shows {must:?}: {cmds:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    copy_dir(&root.join("examples"), &dir.path().join("examples"));
    move_ports(&dir.path().join("examples/mesh.toml"), "examples/mesh.toml", &["7401", "7402", "7403"]);

    let mut session = Session::new(dir.path(), &dir.path().join("mesh.log"), "the README", &["1.N"]);
    for cmd in &cmds {
        // `tern check examples/fail_divide.tern` compiles a program that fails when run:
        // the check itself succeeds.
        let stdin = if cmd.starts_with("tern repl") { ":nodes\n:quit\n" } else { "" };
        session.step(cmd, stdin);
    }
    let log = &session.log;
    eprintln!("{log}");
    assert!(session.mesh.is_some(), "the README starts no mesh");
    assert!(log.contains("migration") || log.contains("lazy"), "{log}");
}
