//! TLS on the API listener: a PEM certificate chain and key (`EDICT_TLS_CERT`, `EDICT_TLS_KEY`) loaded
//! into a rustls server configuration, reloaded on SIGHUP and when either file changes, and an
//! [`Acceptor`] that wraps poem's TCP acceptor with it.
//!
//! Why not poem's own `RustlsListener`: it builds its configuration with the aws-lc provider, a C build
//! the rest of Edict does not need (reqwest and tokio-tungstenite use ring). The acceptor here is the
//! same idea: each new connection takes the configuration current at its accept, and the handshake runs
//! lazily on the connection's own task (so one slow client cannot hold up the accept loop). A reload
//! that fails (unreadable file, garbage, a key that does not match the certificate) is logged and the
//! previous configuration stays in force: a half-written file never takes the API down.

use anyhow::{Context, Result, anyhow};
use edict_infrastructure::settings::TlsSettings;
use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

/// How often the certificate and key files are checked for a change (a stat each, cheap).
const FILE_POLL: Duration = Duration::from_secs(1);

/// Reads and checks the certificate chain and key into a server configuration.
///
/// # Errors
/// When a file cannot be read, holds no certificate or key, or the key does not match the certificate.
pub fn load(settings: &TlsSettings) -> Result<Arc<ServerConfig>> {
    let cert_pem = std::fs::read(&settings.cert).with_context(|| {
        format!(
            "cannot read the TLS certificate {}",
            settings.cert.display()
        )
    })?;
    let key_pem = std::fs::read(&settings.key)
        .with_context(|| format!("cannot read the TLS key {}", settings.key.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| anyhow!("{}: {error}", settings.cert.display()))?;
    if chain.is_empty() {
        return Err(anyhow!("{} holds no certificate", settings.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|error| anyhow!("{}: {error}", settings.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // `with_single_cert` also checks that the key matches the certificate (a mismatched pair would
    // otherwise be taken and fail every handshake).
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("invalid TLS certificate or key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The files' modification times and sizes: a change in either means a reload.
fn stamp(settings: &TlsSettings) -> Option<[(SystemTime, u64); 2]> {
    let one = |path: &std::path::Path| {
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    Some([one(&settings.cert)?, one(&settings.key)?])
}

/// Loads the configuration and keeps it current: a task reloads it on SIGHUP and when the files change,
/// until `stopped` turns `true`.
///
/// # Errors
/// When the first load fails (so a bad setting fails the start).
pub fn reloading(
    settings: TlsSettings,
    mut stopped: watch::Receiver<bool>,
) -> Result<watch::Receiver<Arc<ServerConfig>>> {
    let first = load(&settings)?;
    let (sender, receiver) = watch::channel(first);
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut last = stamp(&settings);
        let mut poll = tokio::time::interval(FILE_POLL);
        loop {
            #[cfg(unix)]
            let signal = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await.map(|()| "SIGHUP"),
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let signal = std::future::pending::<Option<&str>>();
            let cause = tokio::select! {
                cause = signal => cause.unwrap_or("SIGHUP"),
                _ = poll.tick() => {
                    let now = stamp(&settings);
                    if now == last {
                        continue;
                    }
                    last = now;
                    "file change"
                }
                _ = stopped.wait_for(|stop| *stop) => break,
            };
            match load(&settings) {
                Ok(config) => {
                    tracing::info!(cause, cert = %settings.cert.display(), "TLS certificate reloaded");
                    if sender.send(config).is_err() {
                        break;
                    }
                }
                Err(error) => tracing::error!(
                    cause,
                    error = format!("{error:#}"),
                    "TLS certificate not reloaded; the previous one stays in force"
                ),
            }
        }
    });
    Ok(receiver)
}

/// How long a client may take over its TLS handshake before its connection is dropped (one that
/// connects and sends nothing would otherwise hold a task for ever).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Wraps an acceptor with TLS, using the configuration current at each accept.
pub struct TlsAcceptor<A> {
    inner: A,
    config: watch::Receiver<Arc<ServerConfig>>,
    handshake_timeout: Duration,
}

impl<A> TlsAcceptor<A> {
    /// `inner` with TLS from `config`.
    pub fn new(inner: A, config: watch::Receiver<Arc<ServerConfig>>) -> Self {
        TlsAcceptor {
            inner,
            config,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

impl<A: Acceptor> Acceptor for TlsAcceptor<A> {
    type Io = TlsIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, _) = self.inner.accept().await?;
        let config = self.config.borrow().clone();
        let handshake = tokio_rustls::TlsAcceptor::from(config).accept(io);
        Ok((
            TlsIo {
                state: State::Handshake(Box::new(handshake)),
                deadline: Box::pin(tokio::time::sleep(self.handshake_timeout)),
            },
            local,
            remote,
            Scheme::HTTPS,
        ))
    }
}

enum State<IO> {
    Handshake(Box<tokio_rustls::Accept<IO>>),
    Ready(Box<TlsStream<IO>>),
    Failed,
}

/// A server-side TLS connection whose handshake runs on the first read or write.
pub struct TlsIo<IO> {
    state: State<IO>,
    /// When the handshake must be done by.
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsIo<IO> {
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        if let State::Handshake(handshake) = &mut self.state {
            match Pin::new(handshake.as_mut()).poll(cx) {
                Poll::Pending => {
                    if self.deadline.as_mut().poll(cx).is_ready() {
                        self.state = State::Failed;
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the TLS handshake took too long",
                        )));
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(stream)) => self.state = State::Ready(Box::new(stream)),
                Poll::Ready(Err(error)) => {
                    self.state = State::Failed;
                    return Poll::Ready(Err(error));
                }
            }
        }
        match self.state {
            State::Ready(_) => Poll::Ready(Ok(())),
            _ => Poll::Ready(Err(io::Error::other("the TLS handshake failed"))),
        }
    }

    fn stream(&mut self) -> Option<Pin<&mut TlsStream<IO>>> {
        match &mut self.state {
            State::Ready(stream) => Some(Pin::new(stream.as_mut())),
            _ => None,
        }
    }
}

/// Drives the handshake, then runs `op` on the established stream.
macro_rules! ready_stream {
    ($this:expr, $cx:expr) => {{
        match $this.poll_ready($cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Ready(Ok(())) => {}
        }
        match $this.stream() {
            Some(stream) => stream,
            None => return Poll::Ready(Err(io::Error::other("the TLS handshake failed"))),
        }
    }};
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready_stream!(this, cx).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready_stream!(this, cx).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready_stream!(this, cx).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready_stream!(this, cx).poll_shutdown(cx)
    }
}

/// How long a gateway client may take over its TLS handshake.
const BRIDGE_HANDSHAKE: Duration = Duration::from_secs(10);

/// Terminates TLS for the agents' gateway: accepts `wss://` connections on `listener` and carries each
/// one, decrypted, to the gateway's own listener at `gateway` (on loopback), until `stopped`.
///
/// The gateway writes frames straight into its sockets from a fan-out thread (ADR 0013); a TLS
/// session per socket under that lock is future work, so TLS is ended one hop before it, in this
/// process. Each connection costs a task, its rustls session and two 8 KiB copy buffers.
pub async fn bridge(
    listener: tokio::net::TcpListener,
    gateway: std::net::SocketAddr,
    config: watch::Receiver<Arc<ServerConfig>>,
    stopped: impl Future<Output = ()>,
) {
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    // WebSocket upgrades are HTTP/1.1: never offer h2 here.
                    let mut server_config = ServerConfig::clone(&config.borrow());
                    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
                    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
                    connections.spawn(async move {
                        let Ok(Ok(mut tls)) =
                            tokio::time::timeout(BRIDGE_HANDSHAKE, acceptor.accept(stream)).await
                        else {
                            return;
                        };
                        let Ok(mut plain) = tokio::net::TcpStream::connect(gateway).await else {
                            tracing::warn!(%gateway, "the TLS gateway cannot reach the gateway");
                            return;
                        };
                        let _ = plain.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(%error, "cannot accept a gateway connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // The gateway closes its side on shutdown, which ends each copy; whatever is left goes now.
    connections.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::listener::{Listener, TcpListener};
    use tokio::io::AsyncReadExt;

    fn settings(dir: &std::path::Path) -> TlsSettings {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        TlsSettings {
            cert: cert_path,
            key: key_path,
        }
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = settings(dir.path());
        assert!(load(&good).is_ok());
        std::fs::write(
            &good.key,
            rcgen::KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        let error = format!("{:#}", load(&good).unwrap_err());
        assert!(error.contains("KeyMismatch"), "{error}");
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_handshake_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (_stop, stopped) = watch::channel(false);
        let config = reloading(settings(dir.path()), stopped).unwrap();
        let inner = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let address = inner.local_addr()[0].as_socket_addr().copied().unwrap();
        let mut acceptor = TlsAcceptor::new(inner, config);
        acceptor.handshake_timeout = Duration::from_millis(200);
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        let (mut io, ..) = acceptor.accept().await.unwrap();
        // The server side reads (as poem's connection task does) while the client sends nothing.
        let server = tokio::spawn(async move {
            let mut buf = [0_u8; 1];
            io.read(&mut buf).await
        });
        let result = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the handshake was not abandoned")
            .unwrap();
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        // And the client sees its connection closed.
        let mut buf = [0_u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("the connection was not closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
}
