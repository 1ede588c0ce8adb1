//! `tern dashboard` on a real mesh (every node its own `tern node`), looked at by a real
//! browser: headless Chromium driven over WebDriver (`chromedriver`, Debian's
//! `chromium` and `chromium-driver`, which `.ci/run` installs). The page shows the nodes
//! and a spawned process; a migration asked from the page completes, in the page and in
//! `tern ctl ps`; a screenshot of its chart is written to the tests' directory. An
//! observer's page offers no migrate action, and its dashboard refuses one sent by hand.
//! `/metrics` is Prometheus' text format, on the dashboard and on a node. Without
//! Chromium the browser part is skipped, loudly; the rest runs.

#[path = "common/nodes.rs"]
mod nodes;

use nodes::{path, run_for, tern, wait_until, Guard, RealMesh};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

/// One HTTP/1.1 request on a connection of its own: (status, body).
fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    // The head, then as many bytes as it says (a server may keep the connection open).
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status: u16 = head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("no status: {head:?}"))?;
    let lower = head.to_ascii_lowercase();
    let length = lower.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|n| n.trim().parse::<usize>().ok());
    let mut raw = Vec::new();
    match length {
        Some(n) => {
            raw.resize(n, 0);
            r.read_exact(&mut raw).map_err(|e| e.to_string())?;
        }
        None if lower.contains("transfer-encoding: chunked") => loop {
            let mut size = String::new();
            r.read_line(&mut size).map_err(|e| e.to_string())?;
            let n = usize::from_str_radix(size.trim(), 16).map_err(|e| format!("chunk size {size:?}: {e}"))?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..n]);
        },
        None => {
            r.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        }
    }
    Ok((status, String::from_utf8_lossy(&raw).to_string()))
}

fn get_json(addr: &str, path: &str) -> Value {
    let (code, body) = http(addr, "GET", path, None).unwrap();
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"))
}

/// `tern dashboard` on a free loopback port: its guard and address.
fn start_dashboard(mesh: &RealMesh, identity: &str) -> (Guard, String) {
    let mut g = Guard::spawn(
        "tern dashboard",
        tern()
            .args(["dashboard", "--config", mesh.cfg(), "--listen", "127.0.0.1:0", "--as", identity])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let out = g.child.as_mut().unwrap().stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let addr = line.split("http://").nth(1).and_then(|r| r.split('/').next()).unwrap_or_else(|| panic!("no address in {line:?}"));
    assert!(addr.starts_with("127.0.0.1:"), "{line}");
    (g, addr.to_string())
}

/// Waits until the dashboard is connected and sees `n` nodes up.
fn wait_connected(addr: &str, n: usize) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(30), || {
        last = get_json(addr, "/api/state");
        last["connected"] == true && last["nodes"].as_array().is_some_and(|a| a.iter().filter(|x| x["status"] == "up").count() == n)
    });
    assert!(ok, "the dashboard did not see the mesh: {last}");
    last
}

/// A process with a heap of about `kib` KiB that runs until told to stop, writing a
/// little as it goes.
fn keeper(kib: u32) -> String {
    format!(
        "let pad = \"................................................................................................\";\n\
         let big = [];\nfor i in 0..{} {{ push(big, \"row ${{i}} ${{pad}}\"); }}\nprintln(\"keeper up on ${{node()}}\");\nlet k = 0;\n\
         while true {{\n  let m = recv(20);\n  if m == \"stop\" {{ break; }}\n  big[k % len(big)] = \"new ${{k}} ${{pad}}\";\n  k += 1;\n}}\n",
        kib * 8
    )
}

/// A WebDriver session of headless Chromium, ended (and chromedriver killed) when dropped.
struct Browser {
    _driver: Guard,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// `None` (said on stderr) when Chromium or chromedriver is not installed.
    fn start() -> Option<Browser> {
        let (chromium, driver) = ("/usr/bin/chromium", "/usr/bin/chromedriver");
        if !std::path::Path::new(chromium).exists() || !std::path::Path::new(driver).exists() {
            eprintln!("SKIPPED: the browser test needs {chromium} and {driver} (apt-get install chromium chromium-driver)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let g = Guard::spawn(
            "chromedriver",
            std::process::Command::new(driver)
                .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let base = format!("127.0.0.1:{port}");
        assert!(wait_until(Duration::from_secs(20), || http(&base, "GET", "/status", None).is_ok()), "chromedriver did not start");
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1400,1600",
                     format!("--user-data-dir={}", profile.path().display())]}}}});
        let (code, body) = http(&base, "POST", "/session", Some(&caps)).unwrap();
        assert_eq!(code, 200, "no browser session: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let session = v["value"]["sessionId"].as_str().unwrap().to_string();
        Some(Browser { _driver: g, base, session, _profile: profile })
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (code, text) = http(&self.base, method, &format!("/session/{}{path}", self.session), body.as_ref()).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(code, 200, "WebDriver {method} {path}: {text}");
        v["value"].clone()
    }

    fn open(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})));
    }

    /// Elements matching a CSS selector (their WebDriver ids).
    fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.cmd("POST", "/elements", Some(json!({"using": "css selector", "value": css})));
        v.as_array().unwrap().iter().filter_map(|e| e.as_object()?.values().next()?.as_str().map(String::from)).collect()
    }

    fn text(&self, id: &str) -> String {
        self.cmd("GET", &format!("/element/{id}/text"), None).as_str().unwrap_or("").to_string()
    }

    /// Clicks the first element matching `css`, finding it again if the page redrew it
    /// between the finding and the click (the page redraws each second).
    fn click(&self, css: &str) {
        for _ in 0..20 {
            if let Some(id) = self.find_all(css).first() {
                let (code, text) =
                    http(&self.base, "POST", &format!("/session/{}/element/{id}/click", self.session), Some(&json!({}))).unwrap();
                if code == 200 {
                    return;
                }
                assert!(text.contains("stale element"), "click {css}: {text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not click {css}");
    }

    /// Text of the first element matching `css`, or "".
    fn text_of(&self, css: &str) -> String {
        self.find_all(css).first().map(|id| self.text(id)).unwrap_or_default()
    }

    fn screenshot(&self, css: &str, file: &std::path::Path) {
        let id = self.find_all(css).into_iter().next().unwrap_or_else(|| panic!("nothing matches {css}"));
        let b64 = self.cmd("GET", &format!("/element/{id}/screenshot"), None);
        let png = base64_decode(b64.as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(file, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(&self.base, "DELETE", &format!("/session/{}", self.session), None);
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !b"=\r\n".contains(c)).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |a, (i, &c)| a | (u32::from(val(c)) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn the_dashboard_shows_the_mesh_and_migrates_from_the_page_and_an_observer_cannot() {
    let mesh = RealMesh::start(3, "");
    let pid = mesh.spawn_via("a", "keeper.tern", &keeper(2048), "a");
    assert!(wait_until(Duration::from_secs(20), || mesh.log("a").contains("keeper up on a")), "{}", mesh.all_logs());
    let (_dash, addr) = start_dashboard(&mesh, "ctl");
    let state = wait_connected(&addr, 3);
    assert_eq!(state["role"], "operator", "{state}");
    let seen = wait_until(Duration::from_secs(20), || {
        get_json(&addr, "/api/state")["procs"].as_array().is_some_and(|p| p.iter().any(|r| r["pid"] == pid.as_str() && r["node"] == "a"))
    });
    assert!(seen, "the process is not in the dashboard's state: {}", get_json(&addr, "/api/state"));
    // Named by the function it was started with (a program's main: its top level).
    let named = wait_until(Duration::from_secs(10), || {
        get_json(&addr, "/api/state")["procs"].as_array().is_some_and(|p| {
            p.iter().any(|r| r["pid"] == pid.as_str() && r["function"].as_str().unwrap_or("").starts_with("<top level> of "))
        })
    });
    assert!(named, "{}", get_json(&addr, "/api/state"));

    // /metrics: every node, in Prometheus' format.
    let (code, text) = http(&addr, "GET", "/metrics", None).unwrap();
    assert_eq!(code, 200);
    for n in ["a", "b", "c"] {
        assert!(text.contains(&format!("tern_node_up{{node=\"{n}\"}} 1\n")), "{text}");
    }
    assert!(text.contains("# TYPE tern_migration_freeze_seconds histogram"), "{text}");

    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&artifacts).unwrap();
    if let Some(b) = Browser::start() {
        b.open(&format!("http://{addr}/"));
        let shown = wait_until(Duration::from_secs(20), || {
            b.find_all(".node[data-node]").len() == 3 && !b.find_all(&format!("#procs tr[data-pid=\"{pid}\"]")).is_empty()
        });
        assert!(shown, "the page does not show 3 nodes and {pid}:\n{}", b.text_of("main"));
        assert!(b.text_of("#status").contains("connected via node"), "{}", b.text_of("#status"));
        // Choose the process (its row), the node and the mechanism, and press migrate.
        b.click(&format!("#procs tr[data-pid=\"{pid}\"]"));
        b.click("#migrate-to option[value=\"b\"]");
        b.click("#migrate-mech option[value=\"precopy\"]");
        b.click("#migrate-go");
        let done = wait_until(Duration::from_secs(60), || b.text_of("#action-result").contains(": done"));
        assert!(done, "the page's migration did not finish: {:?}\n{}", b.text_of("#action-result"), mesh.all_logs());
        let reported = wait_until(Duration::from_secs(20), || {
            b.text_of(&format!(".report[data-pid=\"{pid}\"] .outcome")) == "committed"
                && b.find_all(&format!("#procs tr[data-pid=\"{pid}\"][data-node=\"b\"]")).len() == 1
        });
        assert!(reported, "the page does not show the migration's report and the process on b:\n{}", b.text_of("main"));
        b.screenshot(&format!(".report[data-pid=\"{pid}\"]"), &artifacts.join("migration-chart.png"));
        let page = b.cmd("GET", "/screenshot", None);
        std::fs::write(artifacts.join("page.png"), base64_decode(page.as_str().unwrap())).unwrap();
        eprintln!("screenshots of the migration chart and the page: {}", artifacts.display());
    } else {
        // Without a browser, the same request the page makes.
        let (code, body) = http(&addr, "POST", "/api/migrate", Some(&json!({"pid": pid, "to": "b", "mechanism": "precopy"}))).unwrap();
        assert_eq!(code, 200, "{body}");
    }
    let on_b = wait_until(Duration::from_secs(10), || mesh.ps(None).iter().any(|(p, n, s)| *p == pid && n == "b" && s != "exited"));
    assert!(on_b, "tern ctl ps does not show {pid} on b: {:?}", mesh.ps(None));
    let (_, text) = http(&addr, "GET", "/metrics", None).unwrap();
    assert!(text.contains("tern_migrations_committed_total{node=\"a\",mechanism=\"precopy\"} 1\n"), "{text}");
    assert!(text.contains("tern_migration_freeze_seconds_count{node=\"a\"} 1\n"), "{text}");

    // An observer: no migrate action on its page, and its dashboard refuses one by hand.
    let out =
        run_for(&["cluster", "cert", "--config", mesh.cfg(), "--role", "observer", "--name", "eve"], Duration::from_secs(30)).unwrap();
    assert!(out.ok(), "{out:?}");
    let (_obs, oaddr) = start_dashboard(&mesh, "eve.observer");
    let state = wait_connected(&oaddr, 3);
    assert_eq!(state["role"], "observer", "{state}");
    let (code, body) = http(&oaddr, "POST", "/api/migrate", Some(&json!({"pid": pid, "to": "c"}))).unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("observer"), "{body}");
    let (code, _) = http(&oaddr, "POST", "/api/drain", Some(&json!({"node": "b"}))).unwrap();
    assert_eq!(code, 403);
    if let Some(b) = Browser::start() {
        b.open(&format!("http://{oaddr}/"));
        let shown = wait_until(Duration::from_secs(20), || b.find_all(".node[data-node]").len() == 3);
        assert!(shown, "the observer's page does not show the nodes:\n{}", b.text_of("main"));
        assert!(b.find_all("#migrate-go").is_empty(), "an observer's page offers a migrate button");
        assert!(b.find_all("button.drain").is_empty() && b.find_all("#policy-on").is_empty(), "an observer's page offers actions");
        assert!(b.text_of("#who").contains("observer"), "{}", b.text_of("#who"));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(mesh.ps(None).iter().any(|(p, n, s)| *p == pid && n == "b" && s != "exited"), "the observer moved it: {:?}", mesh.ps(None));

    // The operator's other actions: drain b (its process moves off), undrain it, and
    // switch the policy, each as `tern ctl` would.
    let (code, body) = http(&addr, "POST", "/api/drain", Some(&json!({"node": "b", "on": true}))).unwrap();
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["report"]["moved"].as_array().map(Vec::len), Some(1), "{v}");
    let (code, body) = http(&addr, "POST", "/api/drain", Some(&json!({"node": "b", "on": false}))).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(mesh.ps(None).iter().any(|(p, n, s)| *p == pid && n != "b" && s != "exited"), "{:?}", mesh.ps(None));
    for action in ["on", "off"] {
        let (code, body) = http(&addr, "POST", "/api/policy", Some(&json!({"action": action}))).unwrap();
        assert_eq!(code, 200, "{body}");
        let out = mesh.ctl(&["--json", "policy"]);
        assert!(out.stdout.contains(if action == "on" { "\"balance\"" } else { "\"off\"" }), "{out:?}");
    }
    let _ = path;
}

/// `metrics = ADDR` and `dashboard = ADDR` on a node of mesh.toml: `tern node` serves
/// that node's `/metrics` and the mesh's dashboard (connected to the node itself).
#[test]
fn a_node_serves_its_metrics_and_the_dashboard_when_its_config_says_so() {
    let mut mesh = RealMesh::start(3, "");
    let status = mesh.terminate("c", Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (m, d) = (free(), free());
    // c is the config's last [[node]] table: these keys are its.
    let mut text = std::fs::read_to_string(mesh.cfg()).unwrap();
    text.push_str(&format!("metrics = \"{m}\"\ndashboard = \"{d}\"\n"));
    std::fs::write(mesh.cfg(), text).unwrap();
    mesh.restart("c");
    mesh.wait_all_up(Duration::from_secs(30));
    assert!(mesh.log("c").contains(&format!("metrics on http://{m}/metrics")), "{}", mesh.log("c"));
    let addr = m.to_string();
    let (code, text) = http(&addr, "GET", "/metrics", None).unwrap();
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("tern_node_up{node=\"c\"} 1\n") && text.contains("tern_peer_up{node=\"c\",peer=\"a\"} 1\n"), "{text}");
    assert!(!text.contains("node=\"a\"}"), "a node's /metrics has only its own series: {text}");
    let state = wait_connected(&d.to_string(), 3);
    assert_eq!(state["via"], "c", "{state}");
    assert_eq!(state["role"], "operator", "{state}");
    let (code, _) = http(&d.to_string(), "GET", "/", None).unwrap();
    assert_eq!(code, 200);
}

/// The fault-latency histogram counts a lazy migration's page faults at its
/// destination (a's background push held back, so the process faults its pages in).
#[test]
fn the_metrics_count_a_lazy_migrations_page_faults_at_its_destination() {
    let mesh = RealMesh::start_with_env(2, "", &[("a", "TERN_TEST_NO_PUSH", "1")]);
    let pid = mesh.spawn_via("a", "keeper.tern", &keeper(1024), "a");
    assert!(wait_until(Duration::from_secs(20), || mesh.log("a").contains("keeper up on a")), "{}", mesh.all_logs());
    let (_dash, addr) = start_dashboard(&mesh, "ctl");
    wait_connected(&addr, 2);
    // Its report comes once every page is at b: with no push, after the process ended.
    let moving = mesh.migrate_in_background("a", &pid, "b", "lazy", Duration::from_secs(60));
    let count = |text: &str, series: &str| -> u64 {
        text.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0) as u64
    };
    let mut text = String::new();
    let faulted = wait_until(Duration::from_secs(20), || {
        text = http(&addr, "GET", "/metrics", None).unwrap().1;
        count(&text, "tern_migration_fault_latency_seconds_count{node=\"b\"}") > 0
    });
    assert!(faulted, "no page fault counted at b:\n{text}");
    assert_eq!(count(&text, "tern_migrations_started_total{node=\"a\",mechanism=\"lazy\"}"), 1, "{text}");
    assert_eq!(count(&text, "tern_migrations_in_flight{node=\"a\"}"), 1, "{text}");
    let state = get_json(&addr, "/api/state");
    let live = &state["metrics"].as_array().unwrap().iter().find(|m| m["node"] == "a").unwrap()["in_flight"][0];
    assert_eq!(live["pid"], pid.as_str(), "the dashboard shows the migration in flight: {state}");
    assert_eq!(live["mechanism"], "lazy", "{live}");
    assert!(live["pages_served"].as_u64().is_some_and(|n| n > 0), "the source served the faults: {live}");
    let out = mesh.ctl(&["kill", &pid]);
    assert!(out.ok(), "{out:?}");
    let _ = moving.join().unwrap();
    // Ended (committed, then its process killed): counted once, with what it sent.
    let ended = wait_until(Duration::from_secs(10), || {
        text = http(&addr, "GET", "/metrics", None).unwrap().1;
        count(&text, "tern_migrations_in_flight{node=\"a\"}") == 0
    });
    assert!(ended, "{text}");
    let c = |m: &str| count(&text, &format!("tern_migrations_{m}_total{{node=\"a\",mechanism=\"lazy\"}}"));
    assert_eq!(c("committed") + c("aborted"), 1, "{text}");
    assert_eq!(count(&text, "tern_migration_fault_latency_seconds_count{node=\"a\"}"), 0, "{text}");
    assert!(count(&text, "tern_migration_sent_bytes_total{node=\"a\"}") > 0, "{text}");
}

/// A mesh with more processes than a page lists: the snapshot carries the busiest 2,000
/// and says how many there are.
#[test]
fn the_page_lists_the_busiest_processes_of_many() {
    let mesh = RealMesh::start(2, "");
    mesh.spawn_via("a", "many.tern", "fn idle() { recv(); }\nfor i in 0..2500 { spawn(idle); }\nprintln(\"spawned\");\nrecv();\n", "a");
    assert!(wait_until(Duration::from_secs(20), || mesh.log("a").contains("spawned")), "{}", mesh.all_logs());
    let (_dash, addr) = start_dashboard(&mesh, "ctl");
    wait_connected(&addr, 2);
    let mut state = Value::Null;
    let ok = wait_until(Duration::from_secs(20), || {
        state = get_json(&addr, "/api/state");
        state["procs_total"].as_u64() == Some(2501)
    });
    assert!(ok, "procs_total: {}", state["procs_total"]);
    assert_eq!(state["procs"].as_array().map(Vec::len), Some(2000));
}
