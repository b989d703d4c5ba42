//! The byte stream under a connection: plain TCP or TLS over it, kept
//! apart so that the HTTP/1.1 code above never cares which.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
};

use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::client::TlsStream;

use super::{AgentEndpoint, AgentTls, Failure};

/// The byte stream to an agent: TCP, with TLS on top for https URLs.
pub(super) enum AgentSocket {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AgentSocket {
    /// Connects to one checked address of the URL's host. A failure to reach
    /// it is [`Failure::Unreachable`] (the next address may do); a TLS
    /// handshake the gateway rejects is [`Failure::Refused`], since trying
    /// again cannot mend a certificate.
    pub(super) async fn connect(
        address: SocketAddr,
        endpoint: &AgentEndpoint,
        tls: &AgentTls,
    ) -> Result<Self, Failure> {
        let stream = TcpStream::connect(address).await.map_err(|e| Failure::Unreachable(e.to_string()))?;
        // Requests are small and answered at once: waiting to coalesce them
        // only adds latency.
        let _ = stream.set_nodelay(true);
        if endpoint.url.scheme() != "https" {
            return Ok(Self::Plain(stream));
        }
        let name = server_name(endpoint)?;
        match tls.connector.connect(name, stream).await {
            Ok(stream) => Ok(Self::Tls(Box::new(stream))),
            Err(e) => match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                Some(rejected) => Err(Failure::Refused(format!(
                    "{}: the TLS handshake with the agent failed: {rejected}",
                    endpoint.url.as_str()
                ))),
                None => Err(Failure::Unreachable(format!("TLS handshake: {e}"))),
            },
        }
    }
}

/// The name the agent's certificate must carry: the URL's host name, or its
/// IP address when the URL names none.
fn server_name(endpoint: &AgentEndpoint) -> Result<ServerName<'static>, Failure> {
    let invalid = || Failure::Refused(format!("{}: the host is not a valid TLS server name", endpoint.url.as_str()));
    match endpoint.url.host() {
        Some(url::Host::Domain(name)) => ServerName::try_from(name.to_owned()).map_err(|_| invalid()),
        Some(url::Host::Ipv4(ip)) => Ok(ServerName::IpAddress(IpAddr::V4(ip).into())),
        Some(url::Host::Ipv6(ip)) => Ok(ServerName::IpAddress(IpAddr::V6(ip).into())),
        None => Err(invalid()),
    }
}

impl AsyncRead for AgentSocket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AgentSocket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}
