//! Mutual TLS for the mesh's QUIC connections (quinn + rustls with the *ring* provider).
//!
//! Every connection is TLS 1.3 with a certificate on both sides, each chaining to the
//! cluster CA (`<cert_dir>/ca.pem`, made by `tern cluster init`):
//!
//! - A node serves its own certificate ([`server_config`]). It requires a client
//!   certificate from the cluster CA whose DNS name is a node of the config or a
//!   control certificate's ([`control_role`]: `ctl` and `PERSON.operator` for operators,
//!   `PERSON.observer` for observers, made by `tern cluster init` and `tern cluster
//!   cert`); any other peer fails the handshake, so the accepting side never gets a
//!   connection. Each handshake gets a server config of its own
//!   ([`ServerConfigs::make`]) whose verifier writes why it refused a certificate, in
//!   words, to a [`RefusalSlot`] the accepting node logs (the peer gets only the TLS
//!   alert); a peer with no certificate at all fails inside rustls
//!   (`NoCertificatesPresented`, in the error of the accept). The verifier cannot see
//!   the ALPN protocol, so after the handshake the accepting node calls
//!   [`identify_peer`]: on [`ALPN_MESH`] the peer must be a node, on [`ALPN_CTL`] an
//!   operator or an observer, whose role the node's control server enforces.
//! - A dialer ([`client_config`]) presents its certificate and checks that the server's
//!   chains to the cluster CA and is valid for the node name it dials (pass the node's
//!   name as the server name to `quinn::Endpoint::connect`). [`handshake_refusal`]
//!   says in words what a failed handshake means to it.
//! - The protocol version is the ALPN protocol: a peer that offers only another version
//!   fails the handshake (`no_application_protocol`).

use crate::certs::{self, Identity};
use crate::config::{MeshConfig, CTL_NAME};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;

/// ALPN protocol (and version) of node-to-node connections.
pub const ALPN_MESH: &[u8] = b"tern-mesh/1";
/// ALPN protocol (and version) of operator connections (`tern ctl`, `tern repl`).
pub const ALPN_CTL: &[u8] = b"tern-ctl/1";

/// Concurrent bidirectional and unidirectional streams a peer may open.
pub const MAX_STREAMS: u32 = 64;

/// The QUIC idle timeout is at least this long (and at least twice the sessions' idle
/// probe, `MeshConfig::idle_probe_ms`, plus `node_down_ms`), so the sessions, not the
/// transport, decide when a peer is down.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs *ring* as the process-wide rustls crypto provider. Idempotent; the configs
/// made here name their provider explicitly, so this only matters to other rustls users.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Who is at the other end of an accepted connection, by certificate and ALPN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A node of the config (on [`ALPN_MESH`]).
    Node { id: u16, name: String },
    /// An operator or observer (on [`ALPN_CTL`]), by its certificate's name.
    Ctl { name: String, role: Role },
}

/// What a control certificate lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything: spawn, kill, migrate, policy, drain, the REPL, and all an observer may.
    Operator,
    /// Look only: nodes, processes, top, the policy and its decisions, reports.
    Observer,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Observer => "observer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "operator" => Some(Role::Operator),
            "observer" => Some(Role::Observer),
            _ => None,
        }
    }
}

/// The certificate name of person `person` in `role`: `PERSON.ROLE` (a node's name has
/// no dot, so the two never meet).
pub fn control_name(person: &str, role: Role) -> String {
    format!("{person}.{}", role.name())
}

/// The role a control certificate's name gives: `ctl` (made by `tern cluster init`) and
/// `PERSON.operator` are operators, `PERSON.observer` observers, where PERSON is a name
/// as a node's (`[a-z0-9_-]{1,32}`); `None` for any other name.
pub fn control_role(name: &str) -> Option<Role> {
    if name == CTL_NAME {
        return Some(Role::Operator);
    }
    let (person, role) = name.split_once('.')?;
    let role = Role::parse(role)?;
    crate::config::check_node_name(person).ok()?;
    Some(role)
}

/// An idle timeout of `max(2 × idle probe + node_down_ms, 5 s)` and [`MAX_STREAMS`]
/// concurrent streams of each kind; QUIC keep-alives (every `heartbeat_ms`) only if
/// `keep_alive` (the operator's connections). Between nodes an idle connection is kept
/// open by nothing but the sessions' idle probes: no packet at all goes over an idle
/// pair for a minute at a time (ARCHITECTURE.md, "Failure detection").
pub fn transport_config(cfg: &MeshConfig, keep_alive: bool) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(keep_alive.then(|| Duration::from_millis(cfg.limits.heartbeat_ms)));
    let idle = Duration::from_millis(cfg.idle_probe_ms().saturating_mul(2).saturating_add(cfg.limits.node_down_ms)).max(MIN_IDLE_TIMEOUT);
    // An idle timeout too large for QUIC's varint (about 146 million years) means none.
    t.max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok());
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(MAX_STREAMS));
    t
}

/// The UDP socket buffers a node's endpoint asks for, each way (the kernel caps them at
/// `net.core.rmem_max` / `wmem_max`). A socket gets 208 KiB unasked on Linux: a
/// migration's burst of pages overflowed it at the receiver (a 1 GiB move lost about
/// 440 datagrams on loopback, 112 at this size), and each datagram dropped cost QUIC a
/// loss recovery and a smaller congestion window. Not larger: what waits in the buffer
/// is first in, first out, and a hybrid move's `Final` and a lazy move's fault answers
/// queue behind the pages there (2 MiB lost fewer datagrams but froze hybrid moves
/// longer and made fault p99 worse; `bench/results/migration-changes.md`).
pub const SOCKET_BUFFER_BYTES: usize = 512 << 10;

/// A UDP socket bound to `addr` for a QUIC endpoint, its buffers as large as
/// [`SOCKET_BUFFER_BYTES`] where the system allows; with the receive buffer it got.
pub fn endpoint_socket(addr: std::net::SocketAddr) -> std::io::Result<(std::net::UdpSocket, usize)> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    // Asked, not required: a smaller buffer still works.
    let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER_BYTES);
    let _ = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER_BYTES);
    let got = state.recv_buffer_size((&socket).into()).unwrap_or(0);
    Ok((socket, got))
}

/// A QUIC endpoint on [`endpoint_socket`] in the current tokio runtime: a server if
/// `server` is given (a client only otherwise).
pub fn endpoint(addr: std::net::SocketAddr, server: Option<quinn::ServerConfig>) -> std::io::Result<(quinn::Endpoint, usize)> {
    let (socket, got) = endpoint_socket(addr)?;
    let ep = quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, Arc::new(quinn::TokioRuntime))?;
    Ok((ep, got))
}

/// Certificate names refused now (`[security] revoked`), shared with the handshake's
/// verifier so that a node can change them while it runs.
pub type Revoked = Arc<parking_lot::RwLock<Vec<String>>>;

/// The server side of node `me` with the config's revoked names, fixed.
pub fn server_config(cfg: &MeshConfig, me: &str) -> Result<quinn::ServerConfig, String> {
    server_config_revoking(cfg, me, Arc::new(parking_lot::RwLock::new(cfg.revoked.clone())))
}

/// The server side of node `me`: serves `<cert_dir>/<me>.pem`, accepts [`ALPN_MESH`] and
/// [`ALPN_CTL`], and requires a client certificate from the cluster CA whose name is a
/// node of `cfg` or a control certificate's; one whose name is in `revoked` (as it is
/// at each handshake) is refused.
pub fn server_config_revoking(cfg: &MeshConfig, me: &str, revoked: Revoked) -> Result<quinn::ServerConfig, String> {
    ServerConfigs::new(cfg, me, revoked)?.make(None)
}

/// Where a handshake's verifier writes why it refused the peer, in an operator's words.
/// The words stay on this side: the peer is told only the TLS alert.
pub type RefusalSlot = Arc<parking_lot::Mutex<Option<String>>>;

/// Node `me`'s server configs, one made for each incoming connection
/// (`quinn::Incoming::accept_with`) so that its verifier can say, for this connection,
/// why it refused the peer ([`RefusalSlot`]).
pub struct ServerConfigs {
    provider: Arc<CryptoProvider>,
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
    file: String,
    ca_file: String,
    revoked: Revoked,
    id: Identity,
    transport: Arc<quinn::TransportConfig>,
    me: String,
    cert_file: String,
    key_file: String,
}

impl ServerConfigs {
    pub fn new(cfg: &MeshConfig, me: &str, revoked: Revoked) -> Result<ServerConfigs, String> {
        install_provider();
        if cfg.node(me).is_none() {
            return Err(format!("{me:?} is not a node of {}", cfg.file_label()));
        }
        let ca = certs::load_ca(cfg)?;
        let id = certs::load_identity(cfg, me)?;
        check_identity(cfg, me, &id, &ca, webpki::KeyUsage::server_auth())?;
        let provider = provider();
        let ca_file = certs::cert_path(cfg, "ca").display().to_string();
        let mut roots = RootCertStore::empty();
        roots.add(ca).map_err(|e| format!("{ca_file}: not a usable CA certificate: {e}"))?;
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("cannot make the client certificate verifier: {e}"))?;
        let mut names: Vec<String> = cfg.nodes.iter().map(|n| n.name.clone()).collect();
        names.push(CTL_NAME.to_string());
        let configs = ServerConfigs {
            provider,
            inner,
            names,
            file: cfg.file_label(),
            ca_file,
            revoked,
            id,
            transport: Arc::new(transport_config(cfg, false)),
            me: me.to_string(),
            cert_file: certs::cert_path(cfg, me).display().to_string(),
            key_file: certs::key_path(cfg, me).display().to_string(),
        };
        // Made once here, so that a config that cannot be made fails at startup.
        configs.make(None)?;
        Ok(configs)
    }

    /// A server config whose verifier writes why it refused a peer to `slot` (or logs
    /// it with `tracing::warn!` when there is none).
    pub fn make(&self, slot: Option<RefusalSlot>) -> Result<quinn::ServerConfig, String> {
        let verifier = Arc::new(MeshClientVerifier {
            inner: self.inner.clone(),
            names: self.names.clone(),
            file: self.file.clone(),
            ca_file: self.ca_file.clone(),
            revoked: self.revoked.clone(),
            slot,
        });
        let mut tls = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS 1.3 is not available: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.id.chain.clone(), self.id.key.clone_key())
            .map_err(|e| format!("{}: cannot be used with {}: {e}", self.key_file, self.cert_file))?;
        tls.alpn_protocols = vec![ALPN_MESH.to_vec(), ALPN_CTL.to_vec()];
        let quic = QuicServerConfig::try_from(tls).map_err(|e| format!("node {}: cannot make the QUIC server config: {e}", self.me))?;
        let mut sc = quinn::ServerConfig::with_crypto(Arc::new(quic));
        sc.transport_config(self.transport.clone());
        Ok(sc)
    }
}

/// Why a certificate failed the cluster CA's checks, in an operator's words.
fn cert_error_words(e: &rustls::Error, ca_file: &str) -> String {
    use CertificateError as C;
    let days = |t: &UnixTime, now: &UnixTime| now.as_secs().abs_diff(t.as_secs()).div_ceil(86_400);
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            format!("it is not signed by this cluster's CA ({ca_file}): a certificate of another cluster, or a self-signed one")
        }
        rustls::Error::InvalidCertificate(C::ExpiredContext { time, not_after }) => {
            format!("it expired {} day(s) ago", days(not_after, time))
        }
        rustls::Error::InvalidCertificate(C::Expired) => "it has expired".into(),
        rustls::Error::InvalidCertificate(C::NotValidYetContext { time, not_before }) => {
            format!("it is not valid for another {} day(s)", days(not_before, time))
        }
        rustls::Error::InvalidCertificate(C::NotValidYet) => "it is not valid yet".into(),
        rustls::Error::InvalidCertificate(C::InvalidPurpose | C::InvalidPurposeContext { .. }) => {
            "it is not made for this use (extended key usage)".into()
        }
        rustls::Error::InvalidCertificate(C::BadEncoding) => "it cannot be read (bad encoding)".into(),
        other => format!("it failed the cluster CA's checks ({other})"),
    }
}

/// What a failed handshake means, in an operator's words, for a dialler (`peer` names
/// who it dialled, `ours` what it presented: "this node's certificate"); `None` when
/// `e` is not a refusal in the handshake.
///
/// A refusal by the other side comes as a TLS alert only (the refusing side keeps its
/// reasons); a refusal by this side names what was wrong with the other's certificate.
pub fn handshake_refusal(e: &quinn::ConnectionError, peer: &str, ours: &str) -> Option<String> {
    let crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code)).then(|| (u64::from(code) - 0x100) as u8);
    match e {
        quinn::ConnectionError::ConnectionClosed(c) => {
            let alert = crypto(c.error_code)?;
            let why = match alert {
                48 | 51 => format!("{ours} is not signed by its CA: the two are of different clusters"),
                45 => format!("{ours} has expired"),
                44 => format!("{ours} is revoked"),
                42 | 46 => format!("it does not take {ours} (not a name of its config, or revoked there)"),
                116 => "it wants a certificate and got none".to_string(),
                120 => "it offers none of the protocols asked for: another Tern version".to_string(),
                _ => "the handshake failed".to_string(),
            };
            Some(format!("{peer} refused the connection in the TLS handshake (alert {alert}): {why}"))
        }
        quinn::ConnectionError::TransportError(t) => {
            // This side sent the alert: what it means comes from its number (rustls maps
            // each certificate error to one), the reason text only telling apart the
            // kinds of one alert.
            let alert = crypto(t.code)?;
            let r = t.reason.as_str();
            let why = match alert {
                48 | 51 => "its certificate is not signed by this cluster's CA: the two are of different clusters".to_string(),
                45 => "its certificate has expired".to_string(),
                44 => "its certificate is revoked".to_string(),
                42 if r.contains("NotValidForName") || r.contains("not valid for name") => {
                    format!("its certificate is not one for the name {peer}")
                }
                120 => "it offers none of the protocols asked for: another Tern version".to_string(),
                _ => format!("the handshake failed (alert {alert}): {r}"),
            };
            Some(format!("refused the connection to {peer} in the TLS handshake: {why}"))
        }
        _ => None,
    }
}

/// The client side for `me` (a node, or `ctl` for the operator) offering only `alpn`:
/// presents `<cert_dir>/<me>.pem` and accepts a server whose certificate chains to the
/// cluster CA and is valid for the server name given to `connect` (the node's name).
pub fn client_config(cfg: &MeshConfig, me: &str, alpn: &[u8]) -> Result<quinn::ClientConfig, String> {
    install_provider();
    if control_role(me).is_none() && cfg.node(me).is_none() {
        return Err(format!(
            "{me:?} is neither a node of {} nor a control certificate's name ({CTL_NAME:?}, PERSON.operator or PERSON.observer)",
            cfg.file_label()
        ));
    }
    let ca = certs::load_ca(cfg)?;
    let id = certs::load_identity(cfg, me)?;
    check_identity(cfg, me, &id, &ca, webpki::KeyUsage::client_auth())?;
    let mut roots = RootCertStore::empty();
    roots.add(ca).map_err(|e| format!("{}: not a usable CA certificate: {e}", certs::cert_path(cfg, "ca").display()))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS 1.3 is not available: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(id.chain, id.key)
        .map_err(|e| format!("{}: cannot be used with {}: {e}", certs::key_path(cfg, me).display(), certs::cert_path(cfg, me).display()))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| format!("cannot make the QUIC client config: {e}"))?;
    let mut cc = quinn::ClientConfig::new(Arc::new(quic));
    cc.transport_config(Arc::new(transport_config(cfg, control_role(me).is_some())));
    Ok(cc)
}

/// The DNS name in the peer's (verified) end-entity certificate; `None` when it has no
/// certificate or not exactly one DNS name.
pub fn peer_name(conn: &quinn::Connection) -> Option<String> {
    let chain = conn.peer_identity()?.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let names = dns_names(chain.first()?)?;
    match names.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// The ALPN protocol the connection negotiated.
pub fn alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?.protocol
}

/// Who an accepted connection is from: on [`ALPN_MESH`] a node of `cfg` (not `ctl`), on
/// [`ALPN_CTL`] the operator (`ctl`). An error says why the peer does not qualify.
pub fn identify_peer(cfg: &MeshConfig, conn: &quinn::Connection) -> Result<Peer, String> {
    let name = peer_name(conn).ok_or("peer certificate does not have exactly one DNS name")?;
    let proto = alpn(conn).ok_or("no ALPN protocol was negotiated")?;
    if proto == ALPN_MESH {
        match (cfg.node(&name), control_role(&name)) {
            (Some(n), _) => Ok(Peer::Node { id: n.id, name }),
            (None, Some(role)) => Err(format!("the {} certificate {name:?} cannot join the mesh", role.name())),
            (None, None) => Err(format!("certificate name {name:?} is not a node of {}", cfg.file_label())),
        }
    } else if proto == ALPN_CTL {
        match control_role(&name) {
            Some(role) => Ok(Peer::Ctl { name, role }),
            None => Err(format!(
                "certificate {name:?} is not an operator's or an observer's and cannot use {}",
                String::from_utf8_lossy(ALPN_CTL)
            )),
        }
    } else {
        Err(format!("unknown ALPN protocol {:?}", String::from_utf8_lossy(&proto)))
    }
}

/// The valid DNS names of a certificate's subject alternative names; `None` if it does not parse.
fn dns_names(cert: &CertificateDer<'_>) -> Option<Vec<String>> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    Some(ee.valid_dns_names().map(str::to_string).collect())
}

/// Our own certificate chains to the cluster CA, has the usage we need, and is valid for
/// our name: a clear error at startup instead of refused handshakes later.
fn check_identity(cfg: &MeshConfig, me: &str, id: &Identity, ca: &CertificateDer<'_>, usage: webpki::KeyUsage) -> Result<(), String> {
    let cert_file = certs::cert_path(cfg, me);
    let ca_file = certs::cert_path(cfg, "ca");
    let ee_der = id.chain.first().ok_or_else(|| format!("{}: holds no certificate", cert_file.display()))?;
    let ee = webpki::EndEntityCert::try_from(ee_der).map_err(|e| format!("{}: not a usable certificate: {e:?}", cert_file.display()))?;
    let anchor = webpki::anchor_from_trusted_cert(ca).map_err(|e| format!("{}: not a usable CA certificate: {e:?}", ca_file.display()))?;
    ee.verify_for_usage(
        rustls::crypto::ring::default_provider().signature_verification_algorithms.all,
        &[anchor],
        id.chain.get(1..).unwrap_or(&[]),
        UnixTime::now(),
        usage,
        None,
        None,
    )
    .map_err(|e| format!("{}: not valid under the cluster CA {} for this use: {e:?}", cert_file.display(), ca_file.display()))?;
    let name = ServerName::try_from(me).map_err(|_| format!("{me:?} cannot be a certificate name"))?;
    ee.verify_is_valid_for_subject_name(&name).map_err(|_| format!("{}: not a certificate for {me:?}", cert_file.display()))?;
    Ok(())
}

/// The cluster CA's client verifier, plus: the certificate's DNS name must be a node of
/// the config or a control certificate's ([`control_role`]).
#[derive(Debug)]
struct MeshClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// The node names accepted (control names are accepted by their form).
    names: Vec<String>,
    /// The config file and the CA's, for messages.
    file: String,
    ca_file: String,
    revoked: Revoked,
    /// Where to say why a peer is refused (else `tracing::warn!`).
    slot: Option<RefusalSlot>,
}

impl MeshClientVerifier {
    /// Says why the certificate (that claims `name`, if it names one) is refused, and
    /// returns the error the handshake fails with: the peer learns only its alert.
    fn refuse(&self, claims: Option<&str>, why: String, e: rustls::Error) -> rustls::Error {
        let who = match claims {
            Some(name) => format!("certificate {name:?}"),
            None => "certificate".to_string(),
        };
        let text = format!("{who}: {why}");
        match &self.slot {
            Some(slot) => *slot.lock() = Some(text),
            None => tracing::warn!("refused peer: {text}"),
        }
        e
    }
}

impl ClientCertVerifier for MeshClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let names = dns_names(end_entity).unwrap_or_default();
        let claims = match names.as_slice() {
            [one] => Some(one.as_str()),
            _ => None,
        };
        if let Err(e) = self.inner.verify_client_cert(end_entity, intermediates, now) {
            let why = cert_error_words(&e, &self.ca_file);
            return Err(self.refuse(claims, why, e));
        }
        let not_valid = || rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        let name = match names.as_slice() {
            [one] => one,
            [] => return Err(self.refuse(None, "it has no DNS name".into(), not_valid())),
            many => return Err(self.refuse(None, format!("it has several DNS names ({})", many.join(", ")), not_valid())),
        };
        if !self.names.iter().any(|n| n == name) && control_role(name).is_none() {
            return Err(self.refuse(claims, format!("{name:?} is not a node of {}", self.file), not_valid()));
        }
        if self.revoked.read().iter().any(|r| r == name) {
            return Err(self.refuse(claims, format!("it is revoked ([security] revoked in {})", self.file), not_valid()));
        }
        // The name as webpki matches it (not only as listed).
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        let server_name =
            ServerName::try_from(name.as_str()).map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if rustls::client::verify_server_name(&parsed, &server_name).is_err() {
            return Err(self.refuse(claims, format!("it is not valid for its name {name:?}"), not_valid()));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::handshake_refusal;
    use rustls::pki_types::ServerName;
    use rustls::{AlertDescription, CertificateError};

    /// A handshake this side failed, sending `alert`, with rustls' error text `reason`.
    fn sent(alert: u8, reason: &str) -> quinn::ConnectionError {
        let mut e = quinn::ConnectionError::TransportError(quinn::TransportErrorCode::crypto(alert).into());
        if let quinn::ConnectionError::TransportError(t) = &mut e {
            t.reason = reason.to_string();
        }
        e
    }

    fn words(e: CertificateError) -> String {
        let alert = u8::from(AlertDescription::from(e.clone()));
        let reason = rustls::Error::InvalidCertificate(e).to_string();
        handshake_refusal(&sent(alert, &reason), "node b", "this node's certificate").unwrap()
    }

    /// What a refusal of the server's certificate says comes from the alert rustls sends
    /// for each certificate error (pinned here, so that a rustls that maps them otherwise
    /// fails this test, not the words), and the name mismatch from its text.
    #[test]
    fn a_refused_server_certificate_is_told_by_its_alert() {
        assert!(words(CertificateError::UnknownIssuer).ends_with("not signed by this cluster's CA: the two are of different clusters"));
        assert!(words(CertificateError::BadSignature).ends_with("not signed by this cluster's CA: the two are of different clusters"));
        assert!(words(CertificateError::Expired).ends_with("its certificate has expired"));
        assert!(words(CertificateError::Revoked).ends_with("its certificate is revoked"));
        assert!(words(CertificateError::NotValidForName).ends_with("its certificate is not one for the name node b"));
        let context = CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("b").unwrap().to_owned(),
            presented: vec!["zed".into()],
        };
        assert!(words(context).ends_with("its certificate is not one for the name node b"));
        let w = handshake_refusal(&sent(120, &rustls::Error::NoApplicationProtocol.to_string()), "node b", "x").unwrap();
        assert!(w.ends_with("another Tern version"), "{w}");
        // Anything else: the alert and rustls' words, not a guess.
        let w = handshake_refusal(&sent(40, "peer misbehaved"), "node b", "x").unwrap();
        assert!(w.ends_with("the handshake failed (alert 40): peer misbehaved"), "{w}");
        // Not a TLS alert at all: not a refusal.
        assert!(handshake_refusal(&quinn::ConnectionError::TimedOut, "node b", "x").is_none());
    }
}
