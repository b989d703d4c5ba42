use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use url::{Host, Url};

use crate::{NetworkMode, Resolve, SystemResolver, UrlRejected, inspect};

/// Longest URL accepted, in bytes. Agent URLs are short; anything longer is a
/// mistake or an attempt to stuff something into logs and storage.
pub const MAX_URL_LEN: usize = 2048;

/// How long [`UrlGuard::check`] waits for the resolver before refusing the URL.
/// A hung resolver must not hang a registration or a dispatch.
pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A URL that passed [`UrlGuard::check`], with the addresses that were checked.
///
/// Connect to [`socket_addrs`](Self::socket_addrs) (for example by pinning
/// them in the HTTP client's resolver) rather than resolving the host again:
/// a second lookup could return a different, unchecked address (DNS
/// rebinding). Keep the host name for TLS (SNI and certificate checks) and the
/// `Host` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedUrl {
    url: Url,
    port: u16,
    addrs: Vec<IpAddr>,
}

impl CheckedUrl {
    /// The parsed, normalised URL. Store and use this rather than the raw
    /// input: the parser may have rewritten the host (`0xA9FEA9FE` →
    /// `169.254.169.254`, IDNA to punycode) and dropped whitespace.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL as a string (normalised).
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The host: a name, an IPv4 address, or an IPv6 address in brackets.
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// The port, explicit or the scheme's default (80 or 443).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The checked addresses, in resolver order, without duplicates; never
    /// empty. For an IP-literal host, just that address.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    /// The checked addresses paired with the port.
    pub fn socket_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.iter().map(|ip| SocketAddr::new(*ip, self.port)).collect()
    }

    /// Takes the URL out.
    pub fn into_url(self) -> Url {
        self.url
    }
}

/// Checks agent URLs against the SSRF rules (SEC-3) for one [`NetworkMode`].
///
/// Cheap to clone; share one per process.
#[derive(Clone)]
pub struct UrlGuard {
    mode: NetworkMode,
    resolver: Arc<dyn Resolve>,
    resolve_timeout: Duration,
}

impl fmt::Debug for UrlGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlGuard")
            .field("mode", &self.mode)
            .field("resolve_timeout", &self.resolve_timeout)
            .finish_non_exhaustive()
    }
}

impl UrlGuard {
    /// A guard that resolves names with the [`SystemResolver`].
    pub fn new(mode: NetworkMode) -> Self {
        Self::with_resolver(mode, Arc::new(SystemResolver))
    }

    /// A guard that resolves names with `resolver`.
    pub fn with_resolver(mode: NetworkMode, resolver: Arc<dyn Resolve>) -> Self {
        Self { mode, resolver, resolve_timeout: DEFAULT_RESOLVE_TIMEOUT }
    }

    /// Replaces the resolution timeout ([`DEFAULT_RESOLVE_TIMEOUT`]).
    pub fn with_resolve_timeout(mut self, timeout: Duration) -> Self {
        self.resolve_timeout = timeout;
        self
    }

    /// The mode this guard enforces.
    pub fn mode(&self) -> NetworkMode {
        self.mode
    }

    /// Whether this guard's mode allows connecting to `ip`. For callers that
    /// check addresses at connect time (e.g. a connector that re-verifies the
    /// peer address).
    pub fn permits(&self, ip: IpAddr) -> bool {
        inspect(ip).class.allowed_in(self.mode)
    }

    /// Checks `raw` and returns it parsed, with the addresses it may be
    /// contacted at.
    ///
    /// In order: non-empty; at most [`MAX_URL_LEN`] bytes; parses; scheme
    /// http or https; no user name or password; has a host. An IP-literal
    /// host (in any spelling the URL parser accepts, such as `2852039166` or
    /// `0xA9FEA9FE` for 169.254.169.254, or bracketed IPv6) is classified
    /// directly. A name is resolved and every address it resolves to must be
    /// allowed: one internal address among public ones is enough to refuse,
    /// because the client may connect to any of them. A resolution error,
    /// timeout or empty answer is a refusal too.
    pub async fn check(&self, raw: &str) -> Result<CheckedUrl, UrlRejected> {
        if raw.trim().is_empty() {
            return Err(UrlRejected::Empty);
        }
        if raw.len() > MAX_URL_LEN {
            return Err(UrlRejected::TooLong { len: raw.len(), max: MAX_URL_LEN });
        }
        let url = Url::parse(raw).map_err(|reason| UrlRejected::Malformed { reason })?;
        let (port, addrs) = self.check_parsed(&url).await?;
        Ok(CheckedUrl { url, port, addrs })
    }

    /// The checks of [`UrlGuard::check`] after parsing, for a URL parsed
    /// once and checked at every use (a dispatcher re-checks an agent's URL
    /// on each call; parsing it each time would be wasted): its port and
    /// the allowed addresses it may be reached at.
    pub async fn check_parsed(&self, url: &Url) -> Result<(u16, Vec<IpAddr>), UrlRejected> {
        if url.as_str().len() > MAX_URL_LEN {
            return Err(UrlRejected::TooLong { len: url.as_str().len(), max: MAX_URL_LEN });
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlRejected::Scheme { scheme: url.scheme().to_owned() });
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRejected::Credentials);
        }
        // http and https always have a known default port.
        let port = url.port_or_known_default().ok_or(UrlRejected::MissingHost)?;
        let host_str = url.host_str().unwrap_or_default();
        let addrs = match url.host() {
            None => return Err(UrlRejected::MissingHost),
            Some(Host::Domain("")) => return Err(UrlRejected::MissingHost),
            Some(Host::Ipv4(v4)) => {
                self.check_literal(host_str, IpAddr::V4(v4))?;
                vec![IpAddr::V4(v4)]
            }
            Some(Host::Ipv6(v6)) => {
                self.check_literal(host_str, IpAddr::V6(v6))?;
                vec![IpAddr::V6(v6)]
            }
            Some(Host::Domain(name)) => self.check_name(name, port).await?,
        };
        Ok((port, addrs))
    }

    fn check_literal(&self, host: &str, addr: IpAddr) -> Result<(), UrlRejected> {
        let c = inspect(addr);
        if c.class.allowed_in(self.mode) {
            Ok(())
        } else {
            Err(UrlRejected::ForbiddenAddress { host: host.to_owned(), addr, class: c.class, embedded: c.embedded })
        }
    }

    async fn check_name(&self, name: &str, port: u16) -> Result<Vec<IpAddr>, UrlRejected> {
        let answer = tokio::time::timeout(self.resolve_timeout, self.resolver.resolve(name, port))
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {:?}", self.resolve_timeout)))
            })
            .map_err(|reason| UrlRejected::Unresolvable { host: name.to_owned(), reason })?;
        let mut addrs: Vec<IpAddr> = Vec::with_capacity(answer.len());
        for addr in answer {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        if addrs.is_empty() {
            return Err(UrlRejected::NoAddresses { host: name.to_owned() });
        }
        for &addr in &addrs {
            let c = inspect(addr);
            if !c.class.allowed_in(self.mode) {
                return Err(UrlRejected::ForbiddenResolvedAddress {
                    host: name.to_owned(),
                    addr,
                    class: c.class,
                    embedded: c.embedded,
                });
            }
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests;
