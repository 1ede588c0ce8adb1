//! The raw transport ceilings the migration bench compares with, each measured between
//! two OS processes: this one sends, a `tern-bench ceiling-sink` child receives.
//!
//! - QUIC: one stream between two quinn endpoints on loopback with the mesh's TLS and
//!   transport configs and a node's socket (`tern_net::tls`, the cluster certificates of
//!   a loopback mesh, the sink as node a and the sender as node b), each endpoint on a
//!   1-thread tokio runtime as in a node.
//! - TCP: one loopback connection (no TLS), blocking reads and writes of 1 MiB.
//!
//! Each transfer is timed from its first byte written to the sink's answer that it has
//! read every byte (8 bytes: the count), so both ceilings include one round trip, as a
//! migration's report does.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tern_net::config::MeshConfig;

use crate::exec::KillOnDrop;

/// A transport's best transfers.
pub struct Ceiling {
    pub bytes: u64,
    /// Seconds of each transfer.
    pub times: Vec<f64>,
}

impl Ceiling {
    pub fn best_s(&self) -> f64 {
        self.times.iter().copied().fold(f64::INFINITY, f64::min)
    }
    /// Bytes per second of the best transfer.
    pub fn rate(&self) -> f64 {
        self.bytes as f64 / self.best_s()
    }
    pub fn mib_s(&self) -> f64 {
        self.rate() / (1 << 20) as f64
    }
    pub fn times_text(&self) -> String {
        self.times.iter().map(|t| format!("{t:.3} s")).collect::<Vec<_>>().join(", ")
    }
}

#[derive(clap::Args)]
pub struct SinkArgs {
    /// Receive QUIC as node a of this loopback mesh config.
    #[arg(long, value_name = "FILE", conflicts_with = "tcp")]
    quic: Option<PathBuf>,
    /// Receive TCP on this address (port 0: any; the port is printed).
    #[arg(long, value_name = "ADDR")]
    tcp: Option<SocketAddr>,
}

/// Starts `tern-bench ceiling-sink ARGS` and waits for its `ready` line (its rest: what
/// it said). The sink is killed when the guard is dropped.
fn start_sink(args: &[&str]) -> Result<(KillOnDrop, String)> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut child = Command::new(exe)
        .arg("ceiling-sink")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the ceiling sink")?;
    let out = child.stdout.take().ok_or_else(|| anyhow!("the sink has no stdout"))?;
    let sink = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).context("reading the sink's first line")?;
    match line.trim().strip_prefix("ready") {
        Some(rest) => Ok((sink, rest.trim().to_string())),
        None => bail!("the sink said {line:?}, not ready"),
    }
}

/// The sink's side (`tern-bench ceiling-sink`): receives until the sender goes.
pub fn sink(args: &SinkArgs) -> Result<bool> {
    match (&args.quic, args.tcp) {
        (Some(config), None) => quic_sink(config),
        (None, Some(addr)) => tcp_sink(addr),
        _ => bail!("ceiling-sink: give --quic CONFIG or --tcp ADDR"),
    }
}

fn runtime(name: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")
}

fn quic_sink(config: &Path) -> Result<bool> {
    tern_net::tls::install_provider();
    let cfg = MeshConfig::load(config).map_err(|e| anyhow!("{e}"))?;
    let server_cfg = tern_net::tls::server_config(&cfg, "a").map_err(|e| anyhow!("{e}"))?;
    let addr = cfg.node("a").map(|n| n.addr).ok_or_else(|| anyhow!("no node a"))?;
    let rt = runtime("sink")?;
    let server = {
        let _g = rt.enter();
        // The socket a node's endpoint has (its buffers).
        tern_net::tls::endpoint(addr, Some(server_cfg)).context("cannot listen")?.0
    };
    println!("ready");
    std::io::stdout().flush()?;
    rt.block_on(async move {
        let Some(incoming) = server.accept().await else { return Ok(()) };
        let conn = incoming.await.map_err(|e| anyhow!("accept: {e}"))?;
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let mut n = 0u64;
            while let Some(chunk) = recv.read_chunk(1 << 20, true).await.map_err(|e| anyhow!("read: {e}"))? {
                n += chunk.bytes.len() as u64;
            }
            send.write_all(&n.to_le_bytes()).await.map_err(|e| anyhow!("write: {e}"))?;
            let _ = send.finish();
        }
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(true)
}

fn tcp_sink(addr: SocketAddr) -> Result<bool> {
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    println!("ready {}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let (mut conn, _) = listener.accept().context("accept")?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut len = [0u8; 8];
        if conn.read_exact(&mut len).is_err() {
            return Ok(true);
        }
        let mut left = u64::from_le_bytes(len);
        let want = left;
        while left > 0 {
            let n = conn.read(&mut buf[..left.min(1 << 20) as usize])?;
            if n == 0 {
                bail!("the sender went after {} of {want} bytes", want - left);
            }
            left -= n as u64;
        }
        conn.write_all(&want.to_le_bytes())?;
    }
}

/// `bytes` on one QUIC stream to a sink process, `runs` times (`dir`: for the mesh's
/// config and certificates).
pub fn quic(dir: &Path, bytes: u64, runs: usize) -> Result<Ceiling> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    tern_net::tls::install_provider();
    let cfg = tern_net::cmd::loopback_mesh(dir, 2, "").map_err(|e| anyhow!("cannot make a loopback mesh: {e}"))?;
    let (_sink, _) = start_sink(&["--quic", &cfg.file.to_string_lossy()])?;
    let client_cfg = tern_net::tls::client_config(&cfg, "b", tern_net::tls::ALPN_MESH).map_err(|e| anyhow!("{e}"))?;
    let addr_a = cfg.node("a").map(|n| n.addr).ok_or_else(|| anyhow!("no node a"))?;
    let addr_b = cfg.node("b").map(|n| n.addr).ok_or_else(|| anyhow!("no node b"))?;
    let rt = runtime("ceiling")?;
    let client = {
        let _g = rt.enter();
        let mut ep = tern_net::tls::endpoint(addr_b, None).context("cannot bind")?.0;
        ep.set_default_client_config(client_cfg);
        ep
    };
    let times = rt.block_on(async {
        let conn = client.connect(addr_a, "a").map_err(|e| anyhow!("connect: {e}"))?.await.map_err(|e| anyhow!("connect: {e}"))?;
        let buf = vec![0x5au8; 1 << 20];
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| anyhow!("open: {e}"))?;
            let mut left = bytes;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                send.write_all(&buf[..n]).await.map_err(|e| anyhow!("write: {e}"))?;
                left -= n as u64;
            }
            send.finish().map_err(|e| anyhow!("finish: {e}"))?;
            let mut got = [0u8; 8];
            recv.read_exact(&mut got).await.map_err(|e| anyhow!("the sink's answer: {e}"))?;
            let n = u64::from_le_bytes(got);
            if n != bytes {
                bail!("the sink got {n} bytes, not {bytes}");
            }
            times.push(t.elapsed().as_secs_f64());
        }
        conn.close(0u32.into(), b"done");
        Ok::<_, anyhow::Error>(times)
    })?;
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(1), client.wait_idle()).await;
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(Ceiling { bytes, times })
}

/// `bytes` on one TCP connection on loopback to a sink process, `runs` times.
pub fn tcp(bytes: u64, runs: usize) -> Result<Ceiling> {
    let (_sink, port) = start_sink(&["--tcp", "127.0.0.1:0"])?;
    let port: u16 = port.parse().with_context(|| format!("the sink's port {port:?}"))?;
    let mut conn = TcpStream::connect(("127.0.0.1", port)).context("cannot connect to the sink")?;
    conn.set_nodelay(true)?;
    let buf = vec![0x5au8; 1 << 20];
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        conn.write_all(&bytes.to_le_bytes())?;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            conn.write_all(&buf[..n])?;
            left -= n as u64;
        }
        let mut got = [0u8; 8];
        conn.read_exact(&mut got).context("the sink's answer")?;
        if u64::from_le_bytes(got) != bytes {
            bail!("the sink got {} bytes, not {bytes}", u64::from_le_bytes(got));
        }
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(Ceiling { bytes, times })
}
