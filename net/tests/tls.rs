//! Mutual TLS between real quinn endpoints on 127.0.0.1: who gets a connection and who
//! is refused. Certificates come from `cluster_init` in a temporary directory; the bad
//! ones are made here with rcgen.

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Connection, ConnectionError, Endpoint};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tern_net::certs::{self, CertKind};
use tern_net::config::MeshConfig;
use tern_net::tls::{self, Peer, Role, ALPN_CTL, ALPN_MESH};
use tokio::sync::mpsc;

const MESH: &str = r#"
[limits]
heartbeat_ms = 100
node_down_ms = 1000

[[node]]
name = "a"
addr = "127.0.0.1:7401"

[[node]]
name = "b"
addr = "127.0.0.1:7402"

[[node]]
name = "node_3"
addr = "127.0.0.1:7403"
"#;

/// Everything logged by every test of this binary (they run in parallel, so look for
/// messages only one test can cause).
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned()
}

/// Runs a test on its own tokio runtime, failing it if it takes more than 10 s.
fn bounded<F: Future<Output = ()>>(f: F) {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).with_ansi(false).with_writer(|| LogWriter).try_init();
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), f).await.expect("test timed out after 10 s");
    });
}

/// A mesh config in a fresh directory, with `cluster init` done.
fn cluster() -> (tempfile::TempDir, MeshConfig) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = MeshConfig::parse(MESH, dir.path()).unwrap();
    certs::cluster_init(&cfg, false).unwrap();
    (dir, cfg)
}

/// Node `me`'s server on 127.0.0.1:0; every accepted connection (or handshake failure) is sent to the channel.
fn serve(cfg: &MeshConfig, me: &str) -> (Endpoint, SocketAddr, mpsc::UnboundedReceiver<Result<Connection, ConnectionError>>) {
    let sc = tls::server_config(cfg, me).unwrap();
    let ep = Endpoint::server(sc, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = ep.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let accept = ep.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accept.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(incoming.await);
            });
        }
    });
    (ep, addr, rx)
}

async fn dial(cc: quinn::ClientConfig, addr: SocketAddr, server_name: &str) -> Result<Connection, ConnectionError> {
    let ep = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.connect_with(cc, addr, server_name).unwrap().await
}

/// A client config trusting `ca`, presenting `identity` (or no certificate), offering ALPN_MESH.
fn manual_client(
    ca: CertificateDer<'static>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> quinn::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut tls = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN_MESH.to_vec()];
    quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()))
}

fn leaf_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p
}

fn der_key(k: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(k.serialize_der()))
}

/// A certificate for `name` signed by a CA that is not the cluster's.
fn foreign_ca_cert(name: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name.push(DnType::CommonName, "Tern cluster CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = leaf_params(name).signed_by(&key, &ca, &ca_key).unwrap();
    (vec![cert.der().clone()], der_key(&key))
}

/// The server never gets a connection, and the client's (if its side completed) is closed by the server.
async fn assert_refused(
    client: Result<Connection, ConnectionError>,
    server: &mut mpsc::UnboundedReceiver<Result<Connection, ConnectionError>>,
) {
    if let Ok(conn) = &client {
        let reason = conn.closed().await;
        assert!(!matches!(reason, ConnectionError::LocallyClosed), "{reason}");
    }
    let accepted = server.recv().await.expect("the server saw the attempt");
    if let Ok(conn) = accepted {
        panic!("the server accepted a connection from {:?}", tls::peer_name(&conn));
    }
}

#[test]
fn nodes_connect_and_know_each_others_names() {
    bounded(async {
        let (_dir, cfg) = cluster();
        let (_ep, addr, mut rx) = serve(&cfg, "a");
        let conn = dial(tls::client_config(&cfg, "b", ALPN_MESH).unwrap(), addr, "a").await.unwrap();
        assert_eq!(tls::peer_name(&conn).as_deref(), Some("a"));
        assert_eq!(tls::alpn(&conn).as_deref(), Some(ALPN_MESH));
        let server_side = rx.recv().await.unwrap().unwrap();
        assert_eq!(tls::peer_name(&server_side).as_deref(), Some("b"));
        assert_eq!(tls::identify_peer(&cfg, &server_side), Ok(Peer::Node { id: 2, name: "b".into() }));

        // The connection carries streams both ways.
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(b"ping").await.unwrap();
        send.finish().unwrap();
        let (mut s_send, mut s_recv) = server_side.accept_bi().await.unwrap();
        assert_eq!(s_recv.read_to_end(64).await.unwrap(), b"ping");
        s_send.write_all(b"pong").await.unwrap();
        s_send.finish().unwrap();
        assert_eq!(recv.read_to_end(64).await.unwrap(), b"pong");

        // A name with an underscore works too.
        let (_ep3, addr3, mut rx3) = serve(&cfg, "node_3");
        let conn3 = dial(tls::client_config(&cfg, "a", ALPN_MESH).unwrap(), addr3, "node_3").await.unwrap();
        assert_eq!(tls::peer_name(&conn3).as_deref(), Some("node_3"));
        let s3 = rx3.recv().await.unwrap().unwrap();
        assert_eq!(tls::identify_peer(&cfg, &s3), Ok(Peer::Node { id: 1, name: "a".into() }));
    });
}

#[test]
fn the_operator_connects_on_the_ctl_protocol_only() {
    bounded(async {
        let (_dir, cfg) = cluster();
        let (_ep, addr, mut rx) = serve(&cfg, "a");
        let _c = dial(tls::client_config(&cfg, "ctl", ALPN_CTL).unwrap(), addr, "a").await.unwrap();
        let s = rx.recv().await.unwrap().unwrap();
        assert_eq!(tls::alpn(&s).as_deref(), Some(ALPN_CTL));
        assert_eq!(tls::identify_peer(&cfg, &s), Ok(Peer::Ctl { name: "ctl".into(), role: Role::Operator }));

        // ctl's certificate passes the handshake, but it is not a node.
        let _c = dial(tls::client_config(&cfg, "ctl", ALPN_MESH).unwrap(), addr, "a").await.unwrap();
        let s = rx.recv().await.unwrap().unwrap();
        let e = tls::identify_peer(&cfg, &s).unwrap_err();
        assert!(e.contains("cannot join the mesh"), "{e}");

        // And a node is not the operator.
        let _c = dial(tls::client_config(&cfg, "b", ALPN_CTL).unwrap(), addr, "a").await.unwrap();
        let s = rx.recv().await.unwrap().unwrap();
        assert!(tls::identify_peer(&cfg, &s).is_err());
    });
}

#[test]
fn a_control_certificate_carries_its_role_and_cannot_join_the_mesh() {
    bounded(async {
        let (_dir, cfg) = cluster();
        certs::issue(&cfg, &tls::control_name("olive", Role::Observer), CertKind::Operator, false).unwrap();
        certs::issue(&cfg, &tls::control_name("alice", Role::Operator), CertKind::Operator, false).unwrap();
        let (_ep, addr, mut rx) = serve(&cfg, "a");
        for (name, role) in [("olive.observer", Role::Observer), ("alice.operator", Role::Operator)] {
            let _c = dial(tls::client_config(&cfg, name, ALPN_CTL).unwrap(), addr, "a").await.unwrap();
            let s = rx.recv().await.unwrap().unwrap();
            assert_eq!(tls::identify_peer(&cfg, &s), Ok(Peer::Ctl { name: name.into(), role }));
            // Through the handshake on the mesh's protocol, but not a node.
            let _c = dial(tls::client_config(&cfg, name, ALPN_MESH).unwrap(), addr, "a").await.unwrap();
            let s = rx.recv().await.unwrap().unwrap();
            let e = tls::identify_peer(&cfg, &s).unwrap_err();
            assert!(e.contains(&format!("the {} certificate {name:?} cannot join the mesh", role.name())), "{e}");
        }
        // The role is in the name the CA signed: a name of another form is no role.
        assert_eq!(tls::control_role("olive.observer"), Some(Role::Observer));
        assert_eq!(tls::control_role("ctl"), Some(Role::Operator));
        for name in ["olive", "olive.admin", ".observer", "Olive.observer", "a.b.observer"] {
            assert_eq!(tls::control_role(name), None, "{name}");
        }
    });
}

#[test]
fn a_hand_made_client_with_a_cluster_cert_connects() {
    // The control for the refusals below: the same client, with a good certificate.
    bounded(async {
        let (_dir, cfg) = cluster();
        let (_ep, addr, mut rx) = serve(&cfg, "a");
        let b = certs::load_identity(&cfg, "b").unwrap();
        let cc = manual_client(certs::load_ca(&cfg).unwrap(), Some((b.chain, b.key)));
        let _conn = dial(cc, addr, "a").await.unwrap();
        let s = rx.recv().await.unwrap().unwrap();
        assert_eq!(tls::identify_peer(&cfg, &s), Ok(Peer::Node { id: 2, name: "b".into() }));
    });
}

#[test]
fn refused_client_cert_from_another_ca() {
    bounded(async {
        let (_dir, cfg) = cluster();
        let (_ep, addr, mut rx) = serve(&cfg, "a");
        let cc = manual_client(certs::load_ca(&cfg).unwrap(), Some(foreign_ca_cert("b")));
        let client = dial(cc, addr, "a").await;
        let seen = match &client {
            Ok(conn) => conn.closed().await,
            Err(e) => e.clone(),
        };
        assert_refused(client, &mut rx).await;
        // The server says who and why; the client is told the TLS alert only.
        let log = logged();
        assert!(log.contains(r#"refused peer: certificate "b": it is not signed by this cluster's CA"#), "{log}");
        let words = tls::handshake_refusal(&seen, "node a", "this certificate").expect("a refusal in the handshake");
        assert!(words.contains("node a refused the connection in the TLS handshake"), "{words}");
        assert!(!words.contains("mesh.toml") && !words.contains("ca.pem"), "the refusing side's reasons stay there: {words}");
    });
}

#[test]
fn refused_self_signed_client_cert() {
    bounded(async {
        let (_dir, cfg) = cluster();
        let (_ep, addr, mut rx) = serve(&cfg, "a");
        let key = KeyPair::generate().unwrap();
        let cert = leaf_params("b").self_signed(&key).unwrap();
        let cc = manual_client(certs::load_ca(&cfg).unwrap(), Some((vec![cert.der().clone()], der_key(&key))));
        assert_refused(dial(cc, addr, "a").await, &mut rx).await;
        let log = logged();
        assert!(log.contains(r#"refused peer: certificate "b": it is not signed by this cluster's CA"#), "{log}");
    });
}

#[test]
fn refused_expired_client_cert_from_the_cluster_ca() {
    bounded(async {
        let (_dir, cfg) = cluster();
        let now = time::OffsetDateTime::now_utc();
        certs::issue_valid(&cfg, "b", CertKind::Node, true, now - time::Duration::days(30), now - time::Duration::days(1)).unwrap();
        let (_ep, addr, mut rx) = serve(&cfg, "a");
        let b = certs::load_identity(&cfg, "b").unwrap();
        let cc = manual_client(certs::load_ca(&cfg).unwrap(), Some((b.chain, b.key)));
        assert_refused(dial(cc, addr, "a").await, &mut rx).await;
        let log = logged();
        assert!(log.contains(r#"refused peer: certificate "b": it expired 1 day(s) ago"#), "{log}");
        // Its own node would not start with it either.
        let e = tls::client_config(&cfg, "b", ALPN_MESH).unwrap_err();
        assert!(e.to_lowercase().contains("expired"), "{e}");
    });
}

#[test]
fn refused_without_client_cert() {
    bounded(async {
        let (_dir, cfg) = cluster();
        let (_ep, addr, mut rx) = serve(&cfg, "a");
        let cc = manual_client(certs::load_ca(&cfg).unwrap(), None);
        assert_refused(dial(cc, addr, "a").await, &mut rx).await;
    });
}

#[test]
fn refused_cluster_cert_whose_name_is_not_a_node() {
    bounded(async {
        let (_dir, cfg) = cluster();
        certs::issue(&cfg, "zed", CertKind::Node, false).unwrap();
        let (_ep, addr, mut rx) = serve(&cfg, "a");
        let zed = certs::load_identity(&cfg, "zed").unwrap();
        let cc = manual_client(certs::load_ca(&cfg).unwrap(), Some((zed.chain, zed.key)));
        assert_refused(dial(cc, addr, "a").await, &mut rx).await;
        let log = logged();
        assert!(log.contains(r#"refused peer: certificate "zed": "zed" is not a node of mesh.toml"#), "{log}");
        // Not usable through client_config either.
        let e = tls::client_config(&cfg, "zed", ALPN_MESH).unwrap_err();
        assert!(e.contains("neither a node"), "{e}");
    });
}

#[test]
fn client_refuses_server_cert_from_another_ca() {
    bounded(async {
        let (_dir, cfg) = cluster();
        let (_other_dir, other) = cluster();
        let (_ep, addr, mut rx) = serve(&other, "a");
        let client = dial(tls::client_config(&cfg, "b", ALPN_MESH).unwrap(), addr, "a").await;
        let e = client.expect_err("the client accepted a server from another CA");
        assert!(matches!(e, ConnectionError::TransportError(_)), "{e}");
        let words = tls::handshake_refusal(&e, "node a", "this node's certificate").expect("a refusal in the handshake");
        assert!(words.contains("its certificate is not signed by this cluster's CA"), "{words}");
        assert!(rx.recv().await.unwrap().is_err());
    });
}

#[test]
fn client_refuses_a_server_with_another_nodes_name() {
    bounded(async {
        let (_dir, cfg) = cluster();
        let (_ep, addr, mut rx) = serve(&cfg, "a");
        // Dialing "b" but reaching a node whose certificate says "a".
        let e = dial(tls::client_config(&cfg, "node_3", ALPN_MESH).unwrap(), addr, "b").await.unwrap_err();
        assert!(matches!(e, ConnectionError::TransportError(_)), "{e}");
        let words = tls::handshake_refusal(&e, "node b", "this node's certificate").expect("a refusal in the handshake");
        assert!(words.contains("its certificate is not one for the name node b"), "{words}");
        assert!(rx.recv().await.unwrap().is_err());
    });
}

#[test]
fn another_alpn_version_fails_the_handshake() {
    bounded(async {
        let (_dir, cfg) = cluster();
        let (_ep, addr, mut rx) = serve(&cfg, "a");
        let e = dial(tls::client_config(&cfg, "b", b"tern-mesh/2").unwrap(), addr, "a").await.unwrap_err();
        assert!(matches!(e, ConnectionError::ConnectionClosed(_) | ConnectionError::TransportError(_)), "{e}");
        assert!(rx.recv().await.unwrap().is_err());
    });
}

#[test]
fn configs_name_missing_or_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = MeshConfig::parse(MESH, dir.path()).unwrap();
    let e = tls::server_config(&cfg, "a").unwrap_err();
    assert!(e.contains("ca.pem: cannot read"), "{e}");
    certs::cluster_init(&cfg, false).unwrap();
    assert!(tls::server_config(&cfg, "zed").unwrap_err().contains("not a node"));
    assert!(tls::server_config(&cfg, "ctl").is_err(), "ctl cannot serve");
    // A node's certificate swapped for another's.
    std::fs::copy(certs::cert_path(&cfg, "b"), certs::cert_path(&cfg, "a")).unwrap();
    let e = tls::server_config(&cfg, "a").unwrap_err();
    assert!(e.contains("a.pem"), "{e}");
    // A certificate from another cluster.
    let other = tempfile::tempdir().unwrap();
    let other_cfg = MeshConfig::parse(MESH, other.path()).unwrap();
    certs::cluster_init(&other_cfg, false).unwrap();
    std::fs::copy(certs::cert_path(&other_cfg, "b"), certs::cert_path(&cfg, "b")).unwrap();
    std::fs::copy(certs::key_path(&other_cfg, "b"), certs::key_path(&cfg, "b")).unwrap();
    let e = tls::client_config(&cfg, "b", ALPN_MESH).unwrap_err();
    assert!(e.contains("b.pem: not valid under the cluster CA"), "{e}");
    // A key that does not match the certificate.
    std::fs::copy(certs::key_path(&cfg, "a"), certs::key_path(&cfg, "node_3")).unwrap();
    let e = tls::server_config(&cfg, "node_3").unwrap_err();
    assert!(e.contains("node_3.key"), "{e}");
}
