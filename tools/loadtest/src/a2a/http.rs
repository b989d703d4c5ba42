//! One keep-alive connection per load task: hyper's bare client
//! connection, so that a run uses exactly the connections it asks for and
//! the client spends as little CPU per request as it can. HTTP/1.1 or
//! HTTP/2 (one stream at a time, to compare like with like), in the clear
//! or over TLS.

use std::{path::Path, sync::Arc};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, client::conn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

/// Where requests go: a URL taken apart once. `http://` and `https://`
/// speak HTTP/1.1; `h2c://` speaks HTTP/2 in the clear (prior knowledge)
/// and `h2://` HTTP/2 over TLS, as every A2A front and proxy measured here
/// serves them.
#[derive(Clone)]
pub struct Endpoint {
    /// `host:port`, for connecting and for the Host header.
    authority: String,
    /// The path (and query) every JSON-RPC request is posted to.
    path: String,
    http2: bool,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Endpoint {
    /// An endpoint in the clear (`http://` or `h2c://`).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        Self::trusting(url, None)
    }

    /// An endpoint whose TLS certificate (for `https://` and `h2://`) is
    /// issued by the authority in the PEM file `ca_file`.
    pub fn trusting(url: &str, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("{url} is not a URL"))?;
        let (http2, tls, default_port) = match uri.scheme_str() {
            Some("http") => (false, false, 80),
            Some("h2c") => (true, false, 80),
            Some("https") => (false, true, 443),
            Some("h2") => (true, true, 443),
            _ => bail!("{url}: only http://, https://, h2c:// and h2:// URLs are supported"),
        };
        let authority = uri.authority().with_context(|| format!("{url} names no host"))?;
        let port = authority.port_u16().unwrap_or(default_port);
        let path = uri.path_and_query().map(|p| p.as_str()).filter(|p| !p.is_empty()).unwrap_or("/");
        let tls = if tls {
            let ca_file = ca_file.with_context(|| format!("{url}: --ca-file names who issued its certificate"))?;
            let name = ServerName::try_from(authority.host().to_owned())?;
            Some((connector(ca_file, if http2 { b"h2" } else { b"http/1.1" })?, name))
        } else {
            None
        };
        Ok(Self { authority: format!("{}:{port}", authority.host()), path: path.to_owned(), http2, tls })
    }
}

/// A TLS client trusting only the authorities in `ca_file`, offering `alpn`.
fn connector(ca_file: &Path, alpn: &[u8]) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca_file).with_context(|| format!("{}", ca_file.display()))? {
        roots.add(certificate?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// What came back for one request.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

enum Sender {
    Http1(conn::http1::SendRequest<Full<Bytes>>),
    Http2(conn::http2::SendRequest<Full<Bytes>>),
}

/// A kept-alive connection; requests on it go one at a time.
pub struct Connection {
    sender: Sender,
    endpoint: Endpoint,
    authorization: Option<HeaderValue>,
}

impl Connection {
    /// Connects to `endpoint`; every request carries `authorization` when given.
    pub async fn open(endpoint: &Endpoint, authorization: Option<HeaderValue>) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(&endpoint.authority)
            .await
            .with_context(|| format!("cannot connect to {}", endpoint.authority))?;
        // Small requests and replies: Nagle would add delay to each one.
        stream.set_nodelay(true)?;
        let sender = match &endpoint.tls {
            Some((connector, name)) => {
                let stream = connector.connect(name.clone(), stream).await.context("TLS handshake")?;
                handshake(stream, endpoint.http2).await?
            }
            None => handshake(stream, endpoint.http2).await?,
        };
        Ok(Self { sender, endpoint: endpoint.clone(), authorization })
    }

    /// Posts a JSON body to the endpoint's path.
    pub async fn post_json(&mut self, body: Bytes) -> anyhow::Result<Reply> {
        let path = self.endpoint.path.clone();
        self.exchange(Method::POST, &path, body).await
    }

    /// One request on this connection, waiting for the whole reply.
    pub async fn exchange(&mut self, method: Method, path: &str, body: Bytes) -> anyhow::Result<Reply> {
        let scheme = if self.endpoint.tls.is_some() { "https" } else { "http" };
        // HTTP/2 names the target in pseudo-header fields; HTTP/1.1 in the
        // request line and Host.
        let target =
            if self.endpoint.http2 { format!("{scheme}://{}{path}", self.endpoint.authority) } else { path.to_owned() };
        let mut request = Request::builder()
            .method(method)
            .uri(target)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json");
        if !self.endpoint.http2 {
            request = request.header(header::HOST, &self.endpoint.authority);
        }
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let request = request.body(Full::new(body))?;
        let response: Response<Incoming> = match &mut self.sender {
            Sender::Http1(sender) => {
                sender.ready().await.context("the connection closed")?;
                sender.send_request(request).await?
            }
            Sender::Http2(sender) => {
                sender.ready().await.context("the connection closed")?;
                sender.send_request(request).await?
            }
        };
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply { status, body })
    }
}

async fn handshake<S>(stream: S, http2: bool) -> anyhow::Result<Sender>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    // Each connection task ends once its sender is dropped and nothing is
    // in flight.
    Ok(if http2 {
        let (sender, connection) = conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(connection);
        Sender::Http2(sender)
    } else {
        let (sender, connection) = conn::http1::handshake(io).await?;
        tokio::spawn(connection);
        Sender::Http1(sender)
    })
}

/// `Bearer <token>` as a header value.
pub fn bearer(token: &str) -> anyhow::Result<HeaderValue> {
    HeaderValue::try_from(format!("Bearer {token}")).context("the token is not a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_their_path_and_default_the_port() {
        let e = Endpoint::parse("http://127.0.0.1:8173/a2a/abc").unwrap();
        assert_eq!((e.authority.as_str(), e.path.as_str()), ("127.0.0.1:8173", "/a2a/abc"));
        let e = Endpoint::parse("http://localhost").unwrap();
        assert_eq!((e.authority.as_str(), e.path.as_str()), ("localhost:80", "/"));
        let e = Endpoint::parse("h2c://127.0.0.1:8173/a2a/abc").unwrap();
        assert!(e.http2 && e.tls.is_none());
        // TLS needs to know whom to trust.
        assert!(Endpoint::parse("https://127.0.0.1/").is_err());
        assert!(Endpoint::parse("127.0.0.1:80").is_err());
        assert!(Endpoint::parse("ftp://127.0.0.1/").is_err());
    }
}
