//! The `tern` command: exit codes, messages, and its subcommands.

use std::io::Write;
use std::process::{Command, Output};

fn tern(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tern")).args(args).output().expect("tern runs")
}

fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
    // Under the target directory (not the system's temporary one, where it was left behind).
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
    path
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn run_prints_output_and_exits_zero() {
    let f = write_temp("ok.tern", "println(\"hello\", 1 + 2);\n");
    let out = tern(&["run", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "hello 3\n");
}

#[test]
fn runtime_error_exits_one_with_file_line_and_backtrace() {
    let f = write_temp("bad.tern", "fn f(x) {\n  x / 0\n}\nprintln(\"before\");\nf(1);\n");
    let out = tern(&["run", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "before\n");
    let err = text(&out.stderr);
    assert!(err.contains("bad.tern:2: error: division by zero"), "{err}");
    assert!(err.contains("at f (") && err.contains("bad.tern:5)"), "{err}");
}

#[test]
fn compile_errors_exit_two_and_report_every_error_with_a_caret() {
    let f = write_temp("syntax.tern", "let x = ;\nlet y = 1\nprintln(x y);\nlet z = (1 + ;\n");
    let out = tern(&["run", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let path = f.display();
    assert!(err.starts_with(&format!("error: expected expression, found `;`\n --> {path}:1:9\n")), "{err}");
    assert!(err.contains(&format!(" --> {path}:3:")), "{err}");
    assert!(err.contains(&format!(" --> {path}:4:")), "{err}");
    assert!(err.contains("1 | let x = ;\n  |         ^ "), "no caret: {err}");
    // Each error in the same form: every header line is `error: ...`.
    let headers: Vec<_> = err.lines().filter(|l| !l.starts_with(' ') && !l.is_empty() && !l.starts_with(char::is_numeric)).collect();
    assert!(headers.len() >= 3 && headers.iter().all(|l| l.starts_with("error: ")), "{err}");
    let check = tern(&["check", f.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(2));
    assert_eq!(text(&check.stderr), err);
    let disasm = tern(&["disasm", f.to_str().unwrap()]);
    assert_eq!(disasm.status.code(), Some(2));
    assert_eq!(text(&disasm.stderr), err);
}

/// Compile errors print in rustc's form: `error: message`, then ` --> file:line:col`, the
/// line and a caret under the column (not ariadne's `Error: file:line:col: message`).
#[test]
fn compile_errors_are_in_rustcs_form() {
    let f = write_temp("form.tern", "let a = 1;\nprintln(a & );\n");
    let out = tern(&["run", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: expected expression, found `)`\n --> {}:2:13\n  |\n2 | println(a & );\n  |             ^ expected expression, found `)`\n",
            f.display()
        )
    );
    // An error in an imported file names that file.
    write_temp("broken_dep.tern", "let x = 1 +;\n");
    let main = write_temp("imports_broken.tern", "import broken_dep;\n");
    let out = tern(&["check", main.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.starts_with("error: expected expression, found `;`\n"), "{err}");
    assert!(err.contains("broken_dep.tern:1:12\n"), "{err}");
}

/// Every other error of the `tern` command starts with `error: ` too (it said `tern: `
/// for some, nothing for an unreadable source file).
#[test]
fn other_errors_start_with_error() {
    let missing = tern(&["run", "/nonexistent/file.tern"]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(text(&missing.stderr), "error: /nonexistent/file.tern: cannot read: No such file or directory (os error 2)\n");
    let out = tern(&["repl", "--config", "/nonexistent/mesh.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("error: /nonexistent/mesh.toml: cannot read"), "{}", text(&out.stderr));
    let f = write_temp("w2.tern", "println(1);\n");
    let out = tern(&["run", f.to_str().unwrap(), "--workers", "0"]);
    assert_eq!(text(&out.stderr), "error: --workers must be between 1 and 1024\n");
    // `tern node --stop-timeout`: checked before the config is read.
    for bad in ["--stop-timeout=-1", "--stop-timeout=NaN", "--stop-timeout=inf", "--stop-timeout=86401"] {
        let out = tern(&["node", "--config", "/nonexistent/mesh.toml", "--name", "a", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert_eq!(text(&out.stderr), "error: --stop-timeout must be between 0 and 86400 seconds\n", "{bad}");
    }
    let out = tern(&["node", "--config", "/nonexistent/mesh.toml", "--name", "a", "--stop-timeout", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--stop-timeout") && text(&out.stderr).contains("soon"), "{}", text(&out.stderr));
}

#[test]
fn undefined_variable_is_a_compile_error() {
    let f = write_temp("undef.tern", "println(nope);\n");
    let out = tern(&["check", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("undefined variable `nope`"));
}

#[test]
fn usage_errors_exit_two() {
    assert_eq!(tern(&[]).status.code(), Some(2));
    assert_eq!(tern(&["run"]).status.code(), Some(2));
    assert_eq!(tern(&["frobnicate"]).status.code(), Some(2));
    let f = write_temp("u.tern", "1;\n");
    assert_eq!(tern(&["run", f.to_str().unwrap(), "--page-size", "1000"]).status.code(), Some(2));
    assert_eq!(tern(&["run", f.to_str().unwrap(), "--migrate-every", "0"]).status.code(), Some(2));
    assert_eq!(tern(&["run", f.to_str().unwrap(), "--max-heap", "x"]).status.code(), Some(2));
    for bad in ["0", "16385", "x"] {
        let out = tern(&["run", f.to_str().unwrap(), "--jit-cache-mib", bad]);
        assert_eq!(out.status.code(), Some(2), "--jit-cache-mib {bad}");
        assert!(text(&out.stderr).contains("--jit-cache-mib"), "{}", text(&out.stderr));
    }
    assert_eq!(tern(&["run", f.to_str().unwrap(), "--jit-cache-mib", "1"]).status.code(), Some(0));
    let missing = tern(&["run", "/nonexistent/file.tern"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot read"));
}

#[test]
fn help_describes_every_command() {
    let out = tern(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for cmd in ["run", "check", "disasm"] {
        assert!(help.contains(cmd), "{help}");
    }
    let run_help = text(&tern(&["run", "--help"]).stdout);
    assert!(run_help.contains("--migrate-every") && run_help.contains("--seed"), "{run_help}");
}

#[test]
fn check_and_disasm() {
    let f = write_temp("d.tern", "fn add(a, b) { a + b }\nprintln(add(1, 2));\n");
    let out = tern(&["check", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("ok"));
    let dis = text(&tern(&["disasm", f.to_str().unwrap()]).stdout);
    assert!(dis.contains("fn #1 add (arity 2"), "{dis}");
    assert!(dis.contains("Add") && dis.contains("Return"), "{dis}");
}

#[test]
fn migrate_every_gives_the_same_output() {
    let f =
        write_temp("m.tern", "let a = [];\nfor i in 0..200 { push(a, i * i); }\nlet s = 0;\nfor x in a { s += x; }\nprintln(s, len(a));\n");
    let plain = tern(&["run", f.to_str().unwrap()]);
    for seed in ["1", "2", "3"] {
        let moved = tern(&["run", f.to_str().unwrap(), "--migrate-every", "10", "--seed", seed, "--stats"]);
        assert_eq!(moved.status.code(), Some(0));
        assert_eq!(moved.stdout, plain.stdout);
        assert!(text(&moved.stderr).contains("moves: "), "{}", text(&moved.stderr));
    }
}

#[test]
fn oversized_and_unreadable_sources_are_clear_errors() {
    let big = write_temp("big.tern", &" ".repeat(17 << 20));
    let out = tern(&["check", big.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("exceeds the 16777216-byte limit"), "{}", text(&out.stderr));
    std::fs::remove_file(&big).unwrap();
    let bin = write_temp("bin.tern", "");
    std::fs::write(&bin, [0xff, 0xfe, 0x00]).unwrap();
    let out = tern(&["run", bin.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("valid UTF-8"), "{}", text(&out.stderr));
}

#[test]
fn demo_runs_a_three_node_mesh_and_shuts_it_down() {
    let out = tern(&["demo"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for node in ["a", "b", "c"] {
        assert!(stdout.contains(&format!("is running on node {node}")), "{stdout}");
        assert_eq!(stdout.matches(&format!("computed on {node}, read on b")).count(), 3, "{stdout}");
    }
    assert!(stdout.contains("done: 9 jobs on 3 nodes"), "{stdout}");
    assert_eq!(stdout.matches("ended: normal").count(), 3, "{stdout}");
    assert!(stdout.contains("the mesh shut down cleanly."), "{stdout}");
    assert!(stdout.contains("the array agrees"), "{stdout}");
    demo_reports_are_explained(&stdout);
    // The load policy spreads the work piled on node a, each move with its reason.
    let moves: Vec<&str> = stdout.lines().filter(|l| l.starts_with("  node a: moving ")).collect();
    assert!(moves.len() >= 2, "{stdout}");
    assert!(moves.iter().all(|l| l.contains("node a is busy")), "{stdout}");
    assert!(stdout.contains("stopped: 6 of 6 results right"), "{stdout}");
}

/// The demo's migration reports: one per move, each line a newcomer would not know
/// explained, and pre-copy shown at its best first (a light writer: most pages copied
/// once), then at its worst (labelled).
fn demo_reports_are_explained(stdout: &str) {
    // (mechanism, heap pages, redundant pages) of each report, in order.
    let value = |line: &str, key: &str| line.strip_prefix("  ").and_then(|l| l.strip_prefix(key)).map(|v| v.trim().to_string());
    let mut reports: Vec<(String, u64, u64)> = Vec::new();
    for line in stdout.lines() {
        if let Some(m) = value(line, "mechanism ") {
            reports.push((m, 0, 0));
        } else if let (Some(v), Some(r)) = (value(line, "heap pages "), reports.last_mut()) {
            r.1 = v.parse().unwrap_or_else(|_| panic!("heap pages: {line}"));
        } else if let (Some(v), Some(r)) = (value(line, "redundant pages "), reports.last_mut()) {
            r.2 = v.parse().unwrap_or_else(|_| panic!("redundant pages: {line}"));
        }
    }
    let mechanisms: Vec<&str> = reports.iter().map(|r| r.0.as_str()).collect();
    // Each mechanism, then `auto` for a process writing all over its heap: not pre-copy.
    assert_eq!(mechanisms[..4], ["freeze", "precopy", "lazy", "hybrid"], "{stdout}");
    assert!(mechanisms.len() == 5 && ["lazy", "hybrid"].contains(&mechanisms[4]), "{stdout}");
    assert!(stdout.contains("picked by auto"), "{stdout}");
    // No pre-copy of the demo's ends without converging (a hybrid's rounds stop when
    // they gain nothing more: that is where it hands over to post-copy).
    assert!(!stdout.contains("for such a process lazy or hybrid is the choice"), "{stdout}");
    assert!(!stdout.contains("even with the process slowed down"), "{stdout}");
    let (_, heap, redundant) = reports[1];
    assert!(heap >= 1024, "{stdout}");
    assert!(redundant * 10 < heap, "pre-copy of a light writer sent {redundant} of {heap} pages twice: {stdout}");
    assert!(stdout.contains("pre-copy's worst case"), "{stdout}");
    for said in [
        "↳ pages copied in each round while the process kept running",
        "↳ pages sent more than once: pre-copy sends a page again when the running process wrote to it after it was copied",
        "↳ how long the process was stopped",
        "rounds stopped",
        "In short: most of the heap was copied once while the process ran",
    ] {
        // (Explanations are cut into lines.)
        let flat = stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains(said), "{said:?} is not in: {stdout}");
    }
    // Why the rounds stopped, in words, not the names of the code.
    for name in ["NotShrinking", "Converged", "RoundLimit", "NoRounds"] {
        assert!(!stdout.contains(name), "{name} in: {stdout}");
    }
}

#[test]
fn local_demo_moves_workers_and_loses_nothing() {
    let out = tern(&["demo", "--local", "--seed", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("every worker's total is the same, as it should be"), "{stdout}");
    assert_eq!(stdout.matches(" of 6 on ").count(), 24, "{stdout}");
    let moves: u64 = stdout.rsplit_once("\n\n").and_then(|(_, l)| l.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(moves > 0, "{stdout}");
}

#[test]
fn a_program_where_everyone_waits_is_reported_as_a_deadlock() {
    let f = write_temp("dead.tern", "fn w() { recv(); }\nspawn(w);\nrecv();\n");
    let out = tern(&["run", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    // Where the main process waits, as a runtime error names its line.
    let err = text(&out.stderr);
    assert!(err.starts_with(&format!("{}", f.display())) || err.starts_with("dead.tern"), "{err}");
    assert!(err.contains(":3: error: deadlock: the main process waits here"), "{err}");
    assert!(err.contains("\n    at <top level> ("), "{err}");
}

#[test]
fn bad_workers_and_root_are_usage_errors() {
    let f = write_temp("w.tern", "println(1);\n");
    for args in [vec!["--workers", "0"], vec!["--root", "/nonexistent/dir/x"]] {
        let mut all = vec!["run", f.to_str().unwrap()];
        all.extend(args);
        let out = tern(&all);
        assert_eq!(out.status.code(), Some(2), "{all:?}");
        assert!(text(&out.stderr).contains("error:"), "{all:?}");
    }
}

#[test]
fn cluster_init_writes_certificates_and_refuses_to_overwrite_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mesh.toml");
    std::fs::write(
        &config,
        "[mesh]\ncert_dir = \"pki\"\n[[node]]\nname = \"a\"\naddr = \"127.0.0.1:7401\"\n[[node]]\nname = \"b\"\naddr = \"127.0.0.1:7402\"\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let pki = dir.path().join("pki");

    let out = tern(&["cluster", "init", "--config", cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    for f in ["ca.pem", "ca.key", "a.pem", "a.key", "b.pem", "b.key", "ctl.pem", "ctl.key"] {
        let path = pki.join(f);
        assert!(path.is_file(), "{f} missing");
        assert!(said.contains(&path.display().to_string()), "{f} not reported: {said}");
    }
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["ca.key", "a.key", "b.key", "ctl.key"] {
            let mode = std::fs::metadata(pki.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }
    let ca_key = std::fs::read(pki.join("ca.key")).unwrap();

    let again = tern(&["cluster", "init", "--config", cfg]);
    assert_eq!(again.status.code(), Some(2));
    let err = text(&again.stderr);
    assert!(err.starts_with(&format!("error: {} already exists", pki.join("ca.key").display())), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(pki.join("ca.key")).unwrap(), ca_key, "a refused init changed the CA key");

    let forced = tern(&["cluster", "init", "--config", cfg, "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced.stderr));
    assert_ne!(std::fs::read(pki.join("ca.key")).unwrap(), ca_key, "--force kept the old CA key");
}

#[test]
fn cluster_init_reports_config_errors_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mesh.toml");
    std::fs::write(&config, "[[node]]\nname = \"a\"\naddr = \"127.0.0.1\"\n").unwrap();
    let out = tern(&["cluster", "init", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(
        err.trim_end(),
        format!("error: {}: node[1].addr: \"127.0.0.1\" is not a socket address (expected host:port)", config.display())
    );
    assert!(!dir.path().join("certs").exists());

    let missing = dir.path().join("nope.toml");
    let out = tern(&["cluster", "init", "--config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with(&format!("error: {}: cannot read", missing.display())));
}
