use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

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

/// Another resolver's answers, kept for a while.
///
/// The gateway checks an agent's URL at every dispatch, and resolving a name
/// each time (a blocking getaddrinfo on a thread pool, often a round trip to
/// the cluster's DNS server) costs more than forwarding the message. A kept
/// answer is as safe as a fresh one: the caller connects to exactly the
/// addresses that were checked. Failures are not kept, so a name that starts
/// to resolve is used at once.
pub struct CachingResolver {
    inner: Arc<dyn Resolve>,
    keep_for: Duration,
    answers: Mutex<HashMap<String, (Vec<IpAddr>, Instant)>>,
}

/// Names whose answers are kept at once; beyond it, expired answers are
/// forgotten first, then all (a new round of lookups is cheaper than
/// unbounded memory).
const MAX_KEPT_NAMES: usize = 4096;

impl CachingResolver {
    /// Keeps each answer of `inner` for `keep_for` after it came.
    pub fn new(inner: Arc<dyn Resolve>, keep_for: Duration) -> Self {
        Self { inner, keep_for, answers: Mutex::default() }
    }
}

impl fmt::Debug for CachingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingResolver").field("keep_for", &self.keep_for).finish_non_exhaustive()
    }
}

#[async_trait]
impl Resolve for CachingResolver {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<IpAddr>> {
        let name = normalise(host);
        if let Some((addrs, at)) = self.answers.lock().expect("answers lock").get(&name)
            && at.elapsed() < self.keep_for
        {
            return Ok(addrs.clone());
        }
        let addrs = self.inner.resolve(host, port).await?;
        let mut answers = self.answers.lock().expect("answers lock");
        if answers.len() >= MAX_KEPT_NAMES {
            answers.retain(|_, (_, at)| at.elapsed() < self.keep_for);
            if answers.len() >= MAX_KEPT_NAMES {
                answers.clear();
            }
        }
        answers.insert(name, (addrs.clone(), Instant::now()));
        Ok(addrs)
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

    /// 10.0.0.1 until `switched`, then 10.0.0.2; `down.example` fails; counts lookups.
    struct Changing {
        lookups: std::sync::atomic::AtomicUsize,
        switched: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Resolve for Changing {
        async fn resolve(&self, host: &str, _port: u16) -> io::Result<Vec<IpAddr>> {
            use std::sync::atomic::Ordering::SeqCst;
            self.lookups.fetch_add(1, SeqCst);
            match (host, self.switched.load(SeqCst)) {
                ("down.example", _) => Err(io::Error::new(io::ErrorKind::NotFound, "no such name")),
                (_, false) => Ok(vec![ip("10.0.0.1")]),
                (_, true) => Ok(vec![ip("10.0.0.2")]),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn caching_resolver_keeps_an_answer_for_its_time_then_asks_again() {
        use std::sync::atomic::Ordering::SeqCst;
        let inner = Arc::new(Changing { lookups: Default::default(), switched: Default::default() });
        let cache = CachingResolver::new(inner.clone(), Duration::from_secs(5));
        assert_eq!(cache.resolve("agent.example", 80).await.unwrap(), vec![ip("10.0.0.1")]);
        inner.switched.store(true, SeqCst);
        tokio::time::advance(Duration::from_millis(4_900)).await;
        // Same name however spelled, any port: still the kept answer.
        assert_eq!(cache.resolve("AGENT.example.", 8080).await.unwrap(), vec![ip("10.0.0.1")]);
        assert_eq!(inner.lookups.load(SeqCst), 1);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(cache.resolve("agent.example", 80).await.unwrap(), vec![ip("10.0.0.2")]);
        assert_eq!(inner.lookups.load(SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn caching_resolver_does_not_keep_failures() {
        use std::sync::atomic::Ordering::SeqCst;
        let inner = Arc::new(Changing { lookups: Default::default(), switched: Default::default() });
        let cache = CachingResolver::new(inner.clone(), Duration::from_secs(5));
        assert!(cache.resolve("down.example", 80).await.is_err());
        assert!(cache.resolve("down.example", 80).await.is_err());
        assert_eq!(inner.lookups.load(SeqCst), 2);
    }

    #[tokio::test]
    async fn system_resolver_answers_ip_literals_without_dns() {
        let got = SystemResolver.resolve("192.0.2.1", 443).await.unwrap();
        assert_eq!(got, vec![ip("192.0.2.1")]);
    }
}
