use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;

/// Turns a host name into addresses. The seam between [`UrlGuard`](crate::UrlGuard)
/// and DNS, so tests (and deployments that pin names) need no real resolver.
#[async_trait]
pub trait Resolve: Send + Sync {
    /// All addresses of `host`. `port` is passed along because some resolvers
    /// (getaddrinfo) want a service; the answer is only addresses.
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<IpAddr>>;
}

/// The operating system's resolver, via [`tokio::net::lookup_host`]
/// (getaddrinfo, so `/etc/hosts` and the system's DNS settings apply).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<IpAddr>> {
        let addrs = tokio::net::lookup_host((host, port)).await?;
        Ok(addrs.map(|sa| sa.ip()).collect())
    }
}

/// A fixed table of names to addresses.
///
/// Names are matched without regard to ASCII case or a trailing dot, as DNS
/// does. A name not in the table fails with [`io::ErrorKind::NotFound`],
/// unless a fallback resolver was set with [`with_fallback`](Self::with_fallback),
/// in which case the fallback answers.
#[derive(Clone, Default)]
pub struct StaticResolver {
    entries: HashMap<String, Vec<IpAddr>>,
    fallback: Option<Arc<dyn Resolve>>,
}

fn normalise(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

impl StaticResolver {
    /// An empty table: every name fails to resolve.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder form of [`insert`](Self::insert).
    pub fn with(mut self, host: &str, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.insert(host, addrs);
        self
    }

    /// Sets the addresses of `host`, replacing any earlier entry. An entry
    /// with no addresses is kept: it resolves to an empty answer.
    pub fn insert(&mut self, host: &str, addrs: impl IntoIterator<Item = IpAddr>) {
        self.entries.insert(normalise(host), addrs.into_iter().collect());
    }

    /// Resolves names missing from the table with `fallback` (e.g.
    /// [`SystemResolver`]) instead of failing.
    pub fn with_fallback(mut self, fallback: Arc<dyn Resolve>) -> Self {
        self.fallback = Some(fallback);
        self
    }
}

impl fmt::Debug for StaticResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticResolver")
            .field("entries", &self.entries)
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

#[async_trait]
impl Resolve for StaticResolver {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<IpAddr>> {
        if let Some(addrs) = self.entries.get(&normalise(host)) {
            return Ok(addrs.clone());
        }
        match &self.fallback {
            Some(fallback) => fallback.resolve(host, port).await,
            None => Err(io::Error::new(io::ErrorKind::NotFound, "name not found in the static address table")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn static_resolver_matches_case_and_trailing_dot_insensitively() {
        let r = StaticResolver::new().with("Agent.Example.COM.", [ip("8.8.8.8"), ip("2606:4700::1")]);
        for name in ["agent.example.com", "AGENT.example.com.", "agent.example.com."] {
            assert_eq!(r.resolve(name, 80).await.unwrap(), vec![ip("8.8.8.8"), ip("2606:4700::1")], "{name}");
        }
    }

    #[tokio::test]
    async fn static_resolver_unknown_name_is_not_found() {
        let r = StaticResolver::new().with("a.example", [ip("8.8.8.8")]);
        let err = r.resolve("b.example", 80).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn static_resolver_falls_back() {
        let fallback = StaticResolver::new().with("b.example", [ip("1.1.1.1")]);
        let r = StaticResolver::new().with("a.example", [ip("8.8.8.8")]).with_fallback(Arc::new(fallback));
        assert_eq!(r.resolve("a.example", 80).await.unwrap(), vec![ip("8.8.8.8")]);
        assert_eq!(r.resolve("b.example", 80).await.unwrap(), vec![ip("1.1.1.1")]);
        assert!(r.resolve("c.example", 80).await.is_err());
    }

    #[tokio::test]
    async fn system_resolver_answers_ip_literals_without_dns() {
        let got = SystemResolver.resolve("192.0.2.1", 443).await.unwrap();
        assert_eq!(got, vec![ip("192.0.2.1")]);
    }
}
