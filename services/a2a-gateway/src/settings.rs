//! The gateway's own settings (the `[gateway]` table).

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use agentmesh_chassis::{ServiceSettings, config::TlsConfig};
use agentmesh_netguard::{CachingResolver, NetworkMode, Resolve, SystemResolver, UrlGuard};
use serde::{Deserialize, Serialize};

use crate::agent_client::{AgentTls, TlsSetupError};

/// The port of the A2A front when `a2a_listen` is unset.
pub const DEFAULT_A2A_PORT: u16 = 8053;

/// The idle timeout when none is configured (GW-4).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// Where the A2A front (JSON-RPC over HTTP, one path per workspace)
    /// listens; unset means the host of the gRPC `listen` address, port
    /// [`DEFAULT_A2A_PORT`] (so a gateway serving gRPC on every interface,
    /// as in a container, serves A2A there too).
    pub a2a_listen: Option<SocketAddr>,
    /// Serve the A2A front over TLS (HTTP/2 or HTTP/1.1, as the caller
    /// chooses by ALPN) with this certificate and key; unset serves it in
    /// the clear (HTTP/1.1, or HTTP/2 to callers that start with it).
    pub a2a_tls: Option<TlsConfig>,
    /// The base URL callers reach the A2A front under, written into the
    /// agent cards the gateway serves; empty means `http(s)://<a2a_listen>`.
    pub public_url: String,
    /// The `host:port` callers reach the gRPC A2A binding under, written into
    /// the agent cards; empty means the gRPC listen address.
    pub public_grpc_address: String,
    /// Where the gateway reaches the registry.
    pub registry_address: String,
    /// Where the gateway reaches the provisioner to wake hibernated
    /// workspaces; empty means hibernated targets are queued but not woken.
    pub provisioner_address: String,
    /// The service token presented to the registry and the provisioner.
    pub service_token: String,
    /// Which agent URLs may be dialled: strict (public only), cluster (also
    /// private ranges) or dev (also loopback). Checked at every dispatch.
    pub network_mode: String,
    /// How long the addresses an agent's host name resolved to are used
    /// before it is resolved again; 0 resolves at every dispatch. Either
    /// way the gateway connects only to addresses the network mode allows.
    pub agent_dns_cache_secs: u64,
    /// A PEM file of certificate authorities trusted for agents with https
    /// URLs, besides the system's; none means the system's only.
    pub agent_ca_file: Option<PathBuf>,
    /// Seconds without any event from the target before a dispatch is given
    /// up. Only a positive integer is accepted: anything else is reported at
    /// start and the default (300) is used, since refusing to start over a
    /// typo would take every dispatch down.
    pub idle_timeout_secs: toml::Value,
    /// What `idle_timeout_secs` was called before every duration key ended
    /// in `_secs`: still read, with a warning, unless the new name is set.
    pub idle_timeout_seconds: Option<toml::Value>,
    /// Delivery attempts before a queued message becomes a dead letter.
    pub max_attempts: u32,
    /// The first retry delay after a failed delivery; it doubles per attempt.
    pub retry_backoff_initial_ms: u64,
    /// The longest retry delay.
    pub retry_backoff_max_ms: u64,
    /// How long a replica holds a queue item (or a workspace's drain) before
    /// another replica may take it over; renewed while the work goes on.
    pub lease_secs: u64,
    /// How often the queue is scanned for due work that no event announced
    /// (retries after a backoff, a crashed replica's items, expiries).
    pub scan_interval_ms: u64,
    /// How long delivered and dropped items stay inspectable.
    pub retention_secs: u64,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            a2a_listen: None,
            a2a_tls: None,
            public_url: String::new(),
            public_grpc_address: String::new(),
            registry_address: "http://127.0.0.1:50051".to_owned(),
            provisioner_address: String::new(),
            service_token: String::new(),
            network_mode: NetworkMode::Strict.to_string(),
            agent_dns_cache_secs: 5,
            agent_ca_file: None,
            idle_timeout_secs: toml::Value::Integer(DEFAULT_IDLE_TIMEOUT.as_secs() as i64),
            idle_timeout_seconds: None,
            max_attempts: 5,
            retry_backoff_initial_ms: 1_000,
            retry_backoff_max_ms: 60_000,
            lease_secs: 30,
            scan_interval_ms: 2_000,
            retention_secs: 7 * 24 * 3600,
        }
    }
}

impl ServiceSettings for GatewaySettings {
    const SECTION: &'static str = "gateway";

    fn validate(&self, errors: &mut Vec<String>) {
        if self.registry_address.trim().is_empty() {
            errors.push("gateway.registry_address: must not be empty".to_owned());
        }
        if let Err(e) = self.network_mode.parse::<NetworkMode>() {
            errors.push(format!("gateway.network_mode: {e}"));
        }
        if self.agent_dns_cache_secs > 3600 {
            errors.push("gateway.agent_dns_cache_secs: must be at most 3600".to_owned());
        }
        if !(1..=100).contains(&self.max_attempts) {
            errors.push("gateway.max_attempts: must be between 1 and 100".to_owned());
        }
        if self.retry_backoff_initial_ms == 0 || self.retry_backoff_initial_ms > self.retry_backoff_max_ms {
            errors
                .push("gateway.retry_backoff_initial_ms: must be positive and at most retry_backoff_max_ms".to_owned());
        }
        if !(2..=3600).contains(&self.lease_secs) {
            errors.push("gateway.lease_secs: must be between 2 and 3600".to_owned());
        }
        if !(50..=600_000).contains(&self.scan_interval_ms) {
            errors.push("gateway.scan_interval_ms: must be between 50 and 600000".to_owned());
        }
        if !self.public_url.is_empty() && url::Url::parse(&self.public_url).is_err() {
            errors.push("gateway.public_url: must be an absolute URL".to_owned());
        }
    }

    fn redacted(&self) -> Self {
        let service_token = if self.service_token.is_empty() { String::new() } else { "<redacted>".to_owned() };
        Self { service_token, ..self.clone() }
    }
    fn default_service_token(&mut self, token: &str) {
        if self.service_token.is_empty() {
            token.clone_into(&mut self.service_token);
        }
    }
}

impl GatewaySettings {
    /// Where the A2A front listens, for a gateway serving gRPC on `listen`.
    pub fn a2a_listen(&self, listen: SocketAddr) -> SocketAddr {
        self.a2a_listen.unwrap_or_else(|| SocketAddr::new(listen.ip(), DEFAULT_A2A_PORT))
    }

    pub fn network(&self) -> NetworkMode {
        self.network_mode.parse().unwrap_or(NetworkMode::Strict)
    }

    /// The check every dispatch passes (GW-3), resolving host names at most
    /// once per `agent_dns_cache_secs`.
    pub fn dispatch_guard(&self) -> UrlGuard {
        let resolver: Arc<dyn Resolve> = match self.agent_dns_cache_secs {
            0 => Arc::new(SystemResolver),
            secs => Arc::new(CachingResolver::new(Arc::new(SystemResolver), Duration::from_secs(secs))),
        };
        UrlGuard::with_resolver(self.network(), resolver)
    }

    /// Whom https agents must be certified by; fails when `agent_ca_file`
    /// cannot be read or holds no CA certificate.
    pub fn agent_tls(&self) -> Result<AgentTls, TlsSetupError> {
        AgentTls::new(self.agent_ca_file.as_deref())
    }

    /// The configured idle timeout, or the default, and what to warn about:
    /// a value that is not usable, or the key's old name.
    pub fn idle_timeout(&self) -> (Duration, Vec<String>) {
        let default = toml::Value::Integer(DEFAULT_IDLE_TIMEOUT.as_secs() as i64);
        let (key, value, renamed) = match &self.idle_timeout_seconds {
            // The new name wins once it is set to anything but its default.
            Some(old) if self.idle_timeout_secs == default => ("idle_timeout_seconds", old, true),
            _ => ("idle_timeout_secs", &self.idle_timeout_secs, false),
        };
        let (timeout, problem) = parse_idle_timeout(key, value);
        let mut warnings: Vec<String> = problem.into_iter().collect();
        if renamed {
            warnings
                .push("gateway.idle_timeout_seconds is now gateway.idle_timeout_secs; the old name still works".into());
        }
        (timeout, warnings)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    pub fn scan_interval(&self) -> Duration {
        Duration::from_millis(self.scan_interval_ms)
    }

    /// The delay before retry number `attempts` (1 after the first failure).
    pub fn retry_backoff(&self, attempts: u32) -> Duration {
        let doubled = self.retry_backoff_initial_ms.saturating_mul(1u64 << attempts.saturating_sub(1).min(30));
        Duration::from_millis(doubled.min(self.retry_backoff_max_ms))
    }
}

/// Accepts a positive integer of seconds, as a number or a string of digits
/// (environment variables arrive as strings); anything else yields the
/// default and a description of what was wrong.
pub fn parse_idle_timeout(key: &str, value: &toml::Value) -> (Duration, Option<String>) {
    let seconds = match value {
        toml::Value::Integer(n) => Some(*n),
        toml::Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match seconds {
        Some(n) if n > 0 => (Duration::from_secs(n as u64), None),
        _ => (
            DEFAULT_IDLE_TIMEOUT,
            Some(format!(
                "gateway.{key} = {value} is not a positive integer; using the default of {} s",
                DEFAULT_IDLE_TIMEOUT.as_secs()
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_timeout_accepts_only_positive_integers() {
        let ok = |v: toml::Value| parse_idle_timeout("idle_timeout_secs", &v);
        assert_eq!(ok(toml::Value::Integer(42)), (Duration::from_secs(42), None));
        assert_eq!(ok(toml::Value::String(" 7 ".into())), (Duration::from_secs(7), None));
        for bad in [
            toml::Value::Integer(0),
            toml::Value::Integer(-30),
            toml::Value::String("foo".into()),
            toml::Value::String("1.5".into()),
            toml::Value::Float(2.5),
            toml::Value::Boolean(true),
        ] {
            let (timeout, warning) = parse_idle_timeout("idle_timeout_secs", &bad);
            assert_eq!(timeout, DEFAULT_IDLE_TIMEOUT, "{bad}");
            assert!(warning.expect("a warning").contains("idle_timeout_secs = "), "{bad}");
        }
    }

    #[test]
    fn the_idle_timeouts_old_name_is_read_with_a_warning_unless_the_new_one_is_set() {
        let old = GatewaySettings { idle_timeout_seconds: Some(toml::Value::Integer(42)), ..Default::default() };
        let (timeout, warnings) = old.idle_timeout();
        assert_eq!(timeout, Duration::from_secs(42));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("now gateway.idle_timeout_secs"), "{warnings:?}");
        let both = GatewaySettings { idle_timeout_secs: toml::Value::Integer(7), ..old };
        assert_eq!(both.idle_timeout(), (Duration::from_secs(7), vec![]));
        assert_eq!(GatewaySettings::default().idle_timeout(), (DEFAULT_IDLE_TIMEOUT, vec![]));
    }

    #[test]
    fn the_a2a_front_listens_beside_grpc_unless_told_otherwise() {
        let grpc: SocketAddr = "0.0.0.0:50053".parse().unwrap();
        assert_eq!(GatewaySettings::default().a2a_listen(grpc), "0.0.0.0:8053".parse().unwrap());
        let local: SocketAddr = "127.0.0.1:50053".parse().unwrap();
        assert_eq!(GatewaySettings::default().a2a_listen(local), "127.0.0.1:8053".parse().unwrap());
        let configured = GatewaySettings { a2a_listen: Some("10.0.0.1:9000".parse().unwrap()), ..Default::default() };
        assert_eq!(configured.a2a_listen(grpc), "10.0.0.1:9000".parse().unwrap());
    }

    #[test]
    fn an_agent_ca_file_that_is_missing_or_holds_no_certificate_is_refused() {
        let missing = GatewaySettings { agent_ca_file: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        let error = missing.agent_tls().err().expect("a missing file is refused").to_string();
        assert!(error.starts_with("/nonexistent/ca.pem: "), "{error}");

        let empty = tempfile::NamedTempFile::new().unwrap();
        let settings = GatewaySettings { agent_ca_file: Some(empty.path().to_owned()), ..Default::default() };
        let error = settings.agent_tls().err().expect("a file without certificates is refused").to_string();
        assert!(error.contains("holds no CERTIFICATE block"), "{error}");

        assert!(GatewaySettings::default().agent_tls().is_ok(), "the system's authorities alone");
    }

    #[test]
    fn retry_backoff_doubles_to_its_cap() {
        let settings =
            GatewaySettings { retry_backoff_initial_ms: 100, retry_backoff_max_ms: 1_000, ..Default::default() };
        let delays: Vec<u64> = (1..=6).map(|n| settings.retry_backoff(n).as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
    }
}
