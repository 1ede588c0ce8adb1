//! The files of `examples/deploy/`: the systemd unit passes `systemd-analyze verify`
//! (where systemd is installed), the compose mesh's config loads and agrees with the
//! compose file's addresses and commands, and the container image builds (where a
//! container engine answers; skipped loudly otherwise).

use std::path::{Path, PathBuf};
use std::process::Command;
use tern_net::config::MeshConfig;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/deploy")
}

#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    let unit = std::fs::read_to_string(deploy().join("tern-node@.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/tern node --config /etc/tern/mesh.toml --name %i"), "{unit}");
    assert!(unit.contains("KillSignal=SIGTERM") && unit.contains("--drain-on-stop"), "{unit}");
    // The unit as installed, but starting this build's `tern` (verify checks it exists).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tern-node@a.service");
    std::fs::write(&file, unit.replace("/usr/local/bin/tern", env!("CARGO_BIN_EXE_tern"))).unwrap();
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&file).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !said.contains("tern-node@a.service"), "systemd-analyze verify:\n{said}");
}

#[test]
fn the_compose_mesh_config_loads_and_matches_the_compose_file() {
    let cfg = MeshConfig::load(&deploy().join("mesh.toml")).unwrap_or_else(|e| panic!("{e}"));
    let compose = std::fs::read_to_string(deploy().join("compose.yaml")).unwrap();
    assert_eq!(cfg.nodes.len(), 3);
    for n in &cfg.nodes {
        let ip = n.addr.ip().to_string();
        assert!(compose.contains(&format!("ipv4_address: {ip}")), "compose.yaml gives node {} no address {ip}", n.name);
        assert!(
            compose.contains(&format!("\"--name\", \"{}\", \"--drain-on-stop\"", n.name)),
            "compose.yaml runs no `tern node --name {}`",
            n.name
        );
        assert!(n.metrics.is_some_and(|m| m.ip() == n.addr.ip()), "node {} serves no metrics on its address", n.name);
    }
    let a = cfg.node("a").unwrap();
    let dash = a.dashboard.expect("node a serves the dashboard");
    assert!(compose.contains(&format!("\"127.0.0.1:{0}:{0}\"", dash.port())), "compose.yaml does not publish the dashboard");
    // The image runs what the config names.
    let file = std::fs::read_to_string(deploy().join("Containerfile")).unwrap();
    assert!(file.contains("/etc/tern/mesh.toml") && file.contains("cargo build --release --locked --bin tern"), "{file}");
}

#[test]
fn the_container_image_builds_where_an_engine_answers() {
    let engine = ["docker", "podman"].into_iter().find(|e| Command::new(e).arg("info").output().is_ok_and(|o| o.status.success()));
    let Some(engine) = engine else {
        eprintln!("SKIPPED: no container engine answers here (docker info, podman info): the image is not built");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(engine)
        .args(["build", "-f", "examples/deploy/Containerfile", "-t", "tern:test", "."])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{engine} build failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(engine).args(["run", "--rm", "tern:test", "--version"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("tern"), "{out:?}");
}
