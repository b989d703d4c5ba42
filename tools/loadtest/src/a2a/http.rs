//! One HTTP/1.1 keep-alive connection per load task: hyper's bare client
//! connection, so that a run uses exactly the connections it asks for and
//! the client spends as little CPU per request as it can.

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where requests go: an `http://host:port/path` URL taken apart once.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `host:port`, for connecting and for the Host header.
    authority: String,
    /// The path (and query) every JSON-RPC request is posted to.
    path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("{url} is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("{url}: only http:// URLs are supported");
        }
        let authority = uri.authority().with_context(|| format!("{url} names no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map(|p| p.as_str()).filter(|p| !p.is_empty()).unwrap_or("/");
        Ok(Self { authority: format!("{}:{port}", authority.host()), path: path.to_owned() })
    }
}

/// What came back for one request.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// A kept-alive HTTP/1.1 connection; requests on it go one at a time.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
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
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // Ends once the sender is dropped and nothing is in flight.
        tokio::spawn(connection);
        Ok(Self { sender, endpoint: endpoint.clone(), authorization })
    }

    /// Posts a JSON body to the endpoint's path.
    pub async fn post_json(&mut self, body: Bytes) -> anyhow::Result<Reply> {
        let path = self.endpoint.path.clone();
        self.exchange(Method::POST, &path, body).await
    }

    /// One request on this connection, waiting for the whole reply.
    pub async fn exchange(&mut self, method: Method, path: &str, body: Bytes) -> anyhow::Result<Reply> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.endpoint.authority)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let request = request.body(Full::new(body))?;
        self.sender.ready().await.context("the connection closed")?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply { status, body })
    }
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
        assert!(Endpoint::parse("https://127.0.0.1/").is_err());
        assert!(Endpoint::parse("127.0.0.1:80").is_err());
    }
}
