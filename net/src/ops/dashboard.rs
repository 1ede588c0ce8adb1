//! `tern dashboard`: a web page of the mesh, live. An HTTP server (axum, HTTP/1, bound
//! to loopback unless told otherwise) that is an operator client of the mesh
//! ([`CtlClient`], with an operator's or an observer's certificate): a poller asks
//! the mesh once a second for its nodes, processes, metrics and policy, and sends each
//! snapshot to every open page as a server-sent event. The page's assets are in the
//! binary (`dashboard/`: one HTML file, one script, one style sheet, no libraries).
//!
//! Routes: `/` (the page), `/app.js`, `/app.css`, `/api/state` (the newest snapshot),
//! `/events` (snapshots as they come), `/metrics` (every node's, in Prometheus' text
//! format), and, for an operator only, `POST /api/migrate`, `/api/drain` and
//! `/api/policy`: each is the same request `tern ctl` makes, checked by the node as
//! `tern ctl`'s is (an observer's is refused here first, and would be there too).

use crate::config::MeshConfig;
use crate::ops::cmd::parse_pid;
use crate::ops::ctl::CtlClient;
use crate::ops::prom;
use crate::ops::report::{nodes_json, policy_json};
use crate::proto::mechanism::How;
use crate::proto::wire::{CtlReply, CtlRequest, MetricsView, MigReport, PolicyChange, PsRow};
use crate::tls::Role;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_vm::value::name_text;
use tokio::sync::broadcast;

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

/// The most processes a snapshot lists (the busiest, when there are more).
const PAGE_ROWS: usize = 2000;

/// How often the mesh is asked.
const POLL: Duration = Duration::from_secs(1);

/// What `tern dashboard` is given.
#[derive(Debug, Clone)]
pub struct DashOpts {
    pub listen: SocketAddr,
    /// The control certificate: `ctl`, `PERSON.operator` or `PERSON.observer`.
    pub identity: String,
    /// The node to talk to (default: the first that answers).
    pub node: Option<String>,
    pub timeout: Duration,
}

struct Dash {
    cfg: MeshConfig,
    opts: DashOpts,
    role: Role,
    client: Mutex<Option<Arc<CtlClient>>>,
    latest: Mutex<Value>,
    /// The last metrics, for `/metrics` (and the names of the nodes that did not answer).
    metrics: Mutex<(Vec<MetricsView>, Vec<String>)>,
    events: broadcast::Sender<Arc<String>>,
}

impl Dash {
    /// The connection to the mesh, made again if it was lost.
    fn client(&self) -> Result<Arc<CtlClient>, String> {
        if let Some(c) = self.client.lock().clone() {
            return Ok(c);
        }
        let c = Arc::new(CtlClient::connect_as(&self.cfg, self.opts.node.as_deref(), &self.opts.identity, self.opts.timeout)?);
        *self.client.lock() = Some(c.clone());
        Ok(c)
    }

    /// One request, one reply; a lost connection is dropped (made again next time).
    fn call(&self, req: &CtlRequest) -> Result<CtlReply, String> {
        let c = self.client()?;
        match c.call(req) {
            Ok(CtlReply::Error(e)) => Err(e),
            Ok(r) => Ok(r),
            Err(e) => {
                *self.client.lock() = None;
                Err(e)
            }
        }
    }
}

/// An HTTP server of this module (the dashboard, or a node's `/metrics`): it stops
/// when dropped.
pub struct HttpServer {
    rt: Option<tokio::runtime::Runtime>,
    stop: Arc<AtomicBool>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Serves `app` on `listen`, on a runtime of its own.
fn serve_app(listen: SocketAddr, app: impl FnOnce() -> Router, what: &'static str) -> Result<HttpServer, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tern-http")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(listen)).map_err(|e| format!("{what}: cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = app();
    rt.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("error: the {what}'s server stopped: {e}");
        }
    });
    Ok(HttpServer { rt: Some(rt), stop: Arc::new(AtomicBool::new(false)), addr })
}

/// `tern dashboard`: serves until SIGTERM or Ctrl-C.
pub fn dashboard(cfg: &MeshConfig, opts: DashOpts) -> Result<(), String> {
    let server = serve(cfg, opts.clone())?;
    let role = crate::tls::control_role(&opts.identity).map_or("?", Role::name);
    println!("dashboard of {} on http://{}/ (as {}, {role})", cfg.file_label(), server.addr, opts.identity);
    if !server.addr.ip().is_loopback() {
        println!("warning: {} is reachable from other machines; the page has no login of its own", server.addr);
    }
    crate::ops::cmd::wait_for_signal()?;
    drop(server);
    Ok(())
}

/// Starts a dashboard of the mesh of `cfg` (see the module's documentation).
pub fn serve(cfg: &MeshConfig, opts: DashOpts) -> Result<HttpServer, String> {
    let role = crate::tls::control_role(&opts.identity)
        .ok_or_else(|| format!("--as {:?}: not a control certificate's name (ctl, PERSON.operator or PERSON.observer)", opts.identity))?;
    crate::tls::install_provider();
    let (events, _) = broadcast::channel(16);
    let dash = Arc::new(Dash {
        cfg: cfg.clone(),
        opts: opts.clone(),
        role,
        client: Mutex::new(None),
        latest: Mutex::new(json!({"connected": false})),
        metrics: Mutex::new((Vec::new(), Vec::new())),
        events,
    });
    let d2 = dash.clone();
    let server = serve_app(opts.listen, move || router(d2), "dashboard")?;
    let stop = server.stop.clone();
    std::thread::Builder::new().name("tern-dashboard-poll".into()).spawn(move || poll(&dash, &stop)).map_err(|e| e.to_string())?;
    Ok(server)
}

/// Serves one node's `/metrics` (Prometheus' text format) on `listen`: `view` reads
/// them.
pub fn serve_metrics(listen: SocketAddr, view: Arc<dyn Fn() -> MetricsView + Send + Sync>) -> Result<HttpServer, String> {
    serve_app(
        listen,
        move || {
            Router::new().route(
                "/metrics",
                get(move || {
                    let view = view.clone();
                    async move {
                        let v = tokio::task::spawn_blocking(move || view()).await.unwrap_or_default();
                        ([(header::CONTENT_TYPE, prom::CONTENT_TYPE)], prom::render(&[v], &[]))
                    }
                }),
            )
        },
        "metrics",
    )
}

/// What `tern node` serves over HTTP as its config asks (`metrics`, `dashboard`).
pub fn serve_node_http(cfg: &MeshConfig, node: &crate::node::MeshNode) -> Result<Vec<HttpServer>, String> {
    let me = cfg.node(node.name()).ok_or("not a node of the config")?.clone();
    let mut servers = Vec::new();
    if let Some(addr) = me.metrics {
        let s = serve_metrics(addr, node.metrics_source())?;
        node.log(&format!("metrics on http://{}/metrics", s.addr));
        servers.push(s);
    }
    if let Some(addr) = me.dashboard {
        let opts =
            DashOpts { listen: addr, identity: me.dashboard_as.clone(), node: Some(me.name.clone()), timeout: Duration::from_secs(10) };
        let s = serve(cfg, opts)?;
        node.log(&format!("dashboard on http://{}/ (as {})", s.addr, me.dashboard_as));
        servers.push(s);
    }
    Ok(servers)
}

fn router(dash: Arc<Dash>) -> Router {
    let asset = |ty: &'static str, body: &'static str| get(move || async move { ([(header::CONTENT_TYPE, ty)], body) });
    Router::new()
        .route("/", asset("text/html; charset=utf-8", INDEX))
        .route("/app.js", asset("text/javascript; charset=utf-8", APP_JS))
        .route("/app.css", asset("text/css; charset=utf-8", APP_CSS))
        .route("/api/state", get(state))
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .route("/api/migrate", post(migrate))
        .route("/api/drain", post(drain))
        .route("/api/policy", post(policy))
        .with_state(dash)
}

async fn state(State(d): State<Arc<Dash>>) -> Json<Value> {
    Json(d.latest.lock().clone())
}

async fn events(State(d): State<Arc<Dash>>) -> impl IntoResponse {
    let first = Arc::new(d.latest.lock().to_string());
    let rx = d.events.subscribe();
    let stream = futures_util::stream::unfold((Some(first), rx), |(first, mut rx)| async move {
        if let Some(f) = first {
            return Some((Ok::<_, std::convert::Infallible>(Event::default().data(f.as_str())), (None, rx)));
        }
        loop {
            match rx.recv().await {
                Ok(s) => return Some((Ok(Event::default().data(s.as_str())), (None, rx))),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(State(d): State<Arc<Dash>>) -> Response {
    let (views, down) = d.metrics.lock().clone();
    ([(header::CONTENT_TYPE, prom::CONTENT_TYPE)], prom::render(&views, &down)).into_response()
}

/// An error as the page shows it.
fn refusal(code: StatusCode, msg: String) -> Response {
    (code, Json(json!({"ok": false, "error": msg}))).into_response()
}

/// Refuses an observer's request to change something (the node would refuse it too).
fn operator_only(d: &Dash, what: &str) -> Option<Response> {
    (d.role != Role::Operator).then(|| {
        refusal(
            StatusCode::FORBIDDEN,
            format!("{} is an observer's certificate: it may only look, not {what}; ask an operator", d.opts.identity),
        )
    })
}

/// Runs a blocking request off the server's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(|e| refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn migrate(State(d): State<Arc<Dash>>, Json(body): Json<Value>) -> Response {
    if let Some(r) = operator_only(&d, "migrate processes") {
        return r;
    }
    let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(pid), Some(to)) = (s("pid"), s("to")) else {
        return refusal(StatusCode::BAD_REQUEST, "give pid and to".into());
    };
    let pid = match parse_pid(&pid) {
        Ok(p) => p,
        Err(e) => return refusal(StatusCode::BAD_REQUEST, e),
    };
    let how = match How::parse(s("mechanism").as_deref().filter(|m| !m.is_empty()), None) {
        Ok(h) => h,
        Err(e) => return refusal(StatusCode::BAD_REQUEST, e),
    };
    let r = blocking(move || {
        let c = d.client()?;
        crate::ops::cmd::migrate(&c, pid, &to, how, false, None)
    })
    .await;
    match r {
        Ok(Ok(rep)) => Json(json!({"ok": rep.ok, "report": report_json(&rep)})).into_response(),
        Ok(Err(e)) => refusal(StatusCode::BAD_GATEWAY, e),
        Err(resp) => resp,
    }
}

async fn drain(State(d): State<Arc<Dash>>, Json(body): Json<Value>) -> Response {
    if let Some(r) = operator_only(&d, "drain nodes") {
        return r;
    }
    let Some(node) = body.get("node").and_then(Value::as_str).map(str::to_string) else {
        return refusal(StatusCode::BAD_REQUEST, "give node".into());
    };
    let on = body.get("on").and_then(Value::as_bool).unwrap_or(true);
    let r = blocking(move || {
        // A drain is asked of the node drained.
        let c = CtlClient::connect_as(&d.cfg, Some(&node), &d.opts.identity, d.opts.timeout)?;
        let r = crate::ops::cmd::drain(&c, on, false);
        c.close();
        r
    })
    .await;
    match r {
        Ok(Ok(Some(rep))) => Json(json!({"ok": true, "report": crate::ops::report::drain_json(&rep)})).into_response(),
        Ok(Ok(None)) => Json(json!({"ok": true})).into_response(),
        Ok(Err(e)) => refusal(StatusCode::BAD_GATEWAY, e),
        Err(resp) => resp,
    }
}

async fn policy(State(d): State<Arc<Dash>>, Json(body): Json<Value>) -> Response {
    if let Some(r) = operator_only(&d, "change the policy") {
        return r;
    }
    let change = match body.get("action").and_then(Value::as_str) {
        Some("on") => PolicyChange::On,
        Some("off") => PolicyChange::Off,
        _ => return refusal(StatusCode::BAD_REQUEST, "action: on or off".into()),
    };
    let r = blocking(move || d.call(&CtlRequest::Policy { change: Some(change), decisions: 0 })).await;
    match r {
        Ok(Ok(CtlReply::Policy { errors, .. })) => Json(json!({"ok": errors.is_empty(), "errors": errors})).into_response(),
        Ok(Ok(other)) => refusal(StatusCode::BAD_GATEWAY, format!("unexpected reply {other:?}")),
        Ok(Err(e)) => refusal(StatusCode::BAD_GATEWAY, e),
        Err(resp) => resp,
    }
}

/// The rows of `ps` for the page (the busiest [`PAGE_ROWS`]), and how many processes
/// there are; `last` is each process as seen at the poll before.
fn process_rows(d: &Dash, procs: &[PsRow], last: &mut HashMap<u64, Seen>) -> (Vec<Value>, usize) {
    let now = Instant::now();
    let mut seen = HashMap::new();
    let procs_total = procs.iter().filter(|r| r.status != "exited").count();
    let mut procs_json: Vec<Value> = procs
        .iter()
        .filter(|r| r.status != "exited")
        .map(|r| {
            let before = last.get(&r.pid);
            let rate = match before {
                Some(&(red, at, _)) if r.reductions >= red && now > at => {
                    ((r.reductions - red) as f64 / now.duration_since(at).as_secs_f64()) as u64
                }
                _ => 0,
            };
            let function = if r.function.is_empty() { before.map(|b| b.2.clone()).unwrap_or_default() } else { r.function.clone() };
            seen.insert(r.pid, (r.reductions, now, function.clone()));
            json!({"pid": name_text(r.pid), "node": r.node, "status": r.status, "reductions": r.reductions,
                "reductions_per_s": rate, "heap_bytes": r.heap_pages * d.cfg.page_size as u64, "mailbox": r.mailbox,
                "function": function})
        })
        .collect();
    *last = seen;
    // The page gets the busiest ones only (a table of a million rows helps no one).
    if procs_json.len() > PAGE_ROWS {
        procs_json.sort_by_key(|p| std::cmp::Reverse(p["reductions_per_s"].as_u64().unwrap_or(0)));
        procs_json.truncate(PAGE_ROWS);
    }
    (procs_json, procs_total)
}

/// A report for the page: pids as printed (`2.15`; JavaScript's numbers cannot hold them).
pub fn report_json(r: &MigReport) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    v["pid"] = json!(name_text(r.pid));
    v["members"] = json!(r.members.iter().map(|p| name_text(*p)).collect::<Vec<_>>());
    v["mechanism"] = json!(r.mechanism.name());
    v
}

/// Asks the mesh for a snapshot once a second, until `stop`.
fn poll(d: &Dash, stop: &AtomicBool) {
    let mut table = Table::default();
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let snap = snapshot(d, &mut table);
        let text = Arc::new(snap.to_string());
        *d.latest.lock() = snap;
        let _ = d.events.send(text);
        std::thread::sleep(POLL.saturating_sub(started.elapsed()));
    }
}

/// A process at the last poll: its reductions then, and the function it was started
/// with, as last seen (a process running on a worker at the poll shows none).
type Seen = (u64, Instant, String);

/// The process table across polls: each process as last seen (for its rate), and the
/// rows last sent, when, and how many processes there were.
#[derive(Default)]
struct Table {
    last: HashMap<u64, Seen>,
    rows: Option<(Instant, Vec<Value>, usize)>,
}

/// Over this many processes in the mesh, the table is asked for every [`SLOW_PS`] only:
/// every node lists every process for it.
const MANY: u64 = 20_000;
const SLOW_PS: Duration = Duration::from_secs(10);

fn snapshot(d: &Dash, table: &mut Table) -> Value {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_millis() as u64);
    let mut errors = Vec::new();
    let nodes = match d.call(&CtlRequest::Nodes) {
        Ok(CtlReply::Nodes(rows)) => rows,
        Ok(_) => Vec::new(),
        Err(e) => {
            return json!({"connected": false, "error": e, "time_ms": now_ms, "role": d.role.name(), "identity": d.opts.identity});
        }
    };
    let (views, down) = match d.call(&CtlRequest::Metrics) {
        Ok(CtlReply::Metrics { views, errors: errs }) => {
            errors.extend(errs.iter().filter(|e| !e.ends_with("is down")).cloned());
            let down: Vec<String> = d.cfg.nodes.iter().map(|n| n.name.clone()).filter(|n| !views.iter().any(|v| &v.node == n)).collect();
            (views, down)
        }
        Ok(_) => (Vec::new(), Vec::new()),
        Err(e) => {
            errors.push(format!("metrics: {e}"));
            (Vec::new(), Vec::new())
        }
    };
    let policy = match d.call(&CtlRequest::Policy { change: None, decisions: 20 }) {
        Ok(CtlReply::Policy { views, errors: errs }) => policy_json(&views, &errs),
        Ok(_) => Value::Null,
        Err(e) => {
            errors.push(format!("policy: {e}"));
            Value::Null
        }
    };
    let total: u64 = views.iter().map(|v| v.processes).sum();
    let due = total <= MANY || table.rows.as_ref().is_none_or(|(at, _, _)| at.elapsed() >= SLOW_PS);
    if due {
        match d.call(&CtlRequest::Ps { node: None }) {
            Ok(CtlReply::Ps(rows)) => {
                let (json, n) = process_rows(d, &rows, &mut table.last);
                table.rows = Some((Instant::now(), json, n));
            }
            Ok(_) => {}
            Err(e) => errors.push(format!("ps: {e}")),
        }
    }
    let (procs_json, procs_total) = table.rows.as_ref().map(|(_, j, n)| (j.clone(), *n)).unwrap_or_default();
    let metrics_json: Vec<Value> = views
        .iter()
        .map(|v| {
            let mut m = serde_json::to_value(v).unwrap_or(Value::Null);
            m["in_flight"] = json!(v
                .in_flight
                .iter()
                .map(|l| {
                    let mut x = serde_json::to_value(l).unwrap_or(Value::Null);
                    x["pid"] = json!(name_text(l.pid));
                    x["mid"] = json!(format!("{:x}", l.mid));
                    x
                })
                .collect::<Vec<_>>());
            m["reports"] = json!(v.reports.iter().map(report_json).collect::<Vec<_>>());
            m
        })
        .collect();
    *d.metrics.lock() = (views, down);
    json!({
        "connected": true,
        "via": d.client.lock().as_ref().map(|c| c.node.clone()),
        "time_ms": now_ms,
        "role": d.role.name(),
        "identity": d.opts.identity,
        "mechanisms": crate::proto::mechanism::Mechanism::ALL.map(|m| m.name()),
        "nodes": nodes_json(&nodes),
        "procs": procs_json,
        "procs_total": procs_total,
        "metrics": metrics_json,
        "policy": policy,
        "errors": errors,
    })
}
