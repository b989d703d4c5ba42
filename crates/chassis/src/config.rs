//! One typed configuration per binary, layered: built-in defaults, then an
//! optional TOML file, then `AGENTMESH_*` environment variables, then flags.
//!
//! Settings shared by every service sit at the top level; a service's own
//! settings sit in a table named after it (`[registry]` in the file,
//! `AGENTMESH_REGISTRY__LIVENESS_TTL_SECS` in the environment).

use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment, Provider,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::auth::AuthConfig;

const ENV_PREFIX: &str = "AGENTMESH_";

/// Flags every binary accepts. Flags win over the environment, which wins
/// over the file, which wins over the defaults.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to serve gRPC on (env: AGENTMESH_LISTEN).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Store URL: `sqlite://path` or `postgres://…` (env: AGENTMESH_DATABASE_URL).
    /// Defaults to an SQLite file under the data directory.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Directory for the embedded store and generated credentials (env: AGENTMESH_DATA_DIR).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Ask the server running with this configuration whether it is SERVING
    /// (grpc.health.v1 on its listen address) and exit 0 if it is, 1 if not:
    /// the probe of container health checks.
    #[arg(long, conflicts_with = "print_config")]
    pub health_check: bool,
}

/// TLS for the gRPC listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// Settings every service shares. Unknown top-level keys are refused by the
/// loader, which also knows the service's own table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ServerConfig {
    /// Address the gRPC server binds.
    pub listen: SocketAddr,
    /// Where the embedded store and generated credentials live.
    pub data_dir: PathBuf,
    /// Store URL; empty means an SQLite file under `data_dir`.
    pub database_url: Option<String>,
    /// Log filter in `tracing_subscriber::EnvFilter` syntax; `RUST_LOG` wins.
    pub log: String,
    /// Log lines as JSON objects instead of text.
    pub log_json: bool,
    /// OTLP/gRPC endpoint for traces; `OTEL_EXPORTER_OTLP_ENDPOINT` wins.
    pub otlp_endpoint: Option<String>,
    /// Address of the HTTP listener serving Prometheus metrics at
    /// `/metrics`; empty means no metrics are served.
    pub metrics_listen: String,
    /// This replica's name in log lines (a pod or container name, say);
    /// empty names only the service.
    pub replica: String,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_grace_secs: u64,
    /// How often dependencies are checked for the health status, in ms.
    pub readiness_interval_ms: u64,
    /// Who may call what.
    pub auth: AuthConfig,
    /// Serve over TLS when set.
    pub tls: Option<TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            log: "info".to_owned(),
            log_json: false,
            otlp_endpoint: None,
            metrics_listen: String::new(),
            replica: String::new(),
            shutdown_grace_secs: 10,
            readiness_interval_ms: 5_000,
            auth: AuthConfig::default(),
            tls: None,
        }
    }
}

impl ServerConfig {
    /// The defaults of a service that listens on `listen` unless told otherwise.
    pub fn listening_on(listen: SocketAddr) -> Self {
        Self { listen, ..Self::default() }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn readiness_interval(&self) -> Duration {
        Duration::from_millis(self.readiness_interval_ms)
    }

    /// Where metrics are served, if anywhere; `validate` has refused a
    /// value that is not an address.
    pub fn metrics_listen(&self) -> Option<SocketAddr> {
        self.metrics_listen.trim().parse().ok()
    }

    /// The store URL, defaulting to `<data_dir>/<file_stem>.db`.
    pub fn database_url_or_default(&self, file_stem: &str) -> String {
        match &self.database_url {
            Some(url) if !url.trim().is_empty() => url.clone(),
            _ => format!("sqlite://{}", self.data_dir.join(format!("{file_stem}.db")).display()),
        }
    }

    fn validate(&self, errors: &mut Vec<String>) {
        if self.shutdown_grace_secs == 0 || self.shutdown_grace_secs > 3600 {
            errors.push("shutdown_grace_secs: must be between 1 and 3600".to_owned());
        }
        if !(100..=600_000).contains(&self.readiness_interval_ms) {
            errors.push("readiness_interval_ms: must be between 100 and 600000".to_owned());
        }
        let metrics_listen = self.metrics_listen.trim();
        if !metrics_listen.is_empty() && metrics_listen.parse::<SocketAddr>().is_err() {
            errors.push("metrics_listen: must be an address like 0.0.0.0:9090, or empty for no metrics".to_owned());
        }
        if self.data_dir.as_os_str().is_empty() {
            errors.push("data_dir: must not be empty".to_owned());
        }
        if let Some(url) = &self.database_url {
            let url = url.trim();
            let known = ["sqlite:", "postgres://", "postgresql://"];
            if !url.is_empty() && !known.iter().any(|p| url.starts_with(p)) {
                errors.push("database_url: must start with sqlite:, postgres:// or postgresql://".to_owned());
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            errors.push(format!("log: {e}"));
        }
        self.auth.validate(errors);
    }
}

/// A service's own settings: defaults, validation, and a table name.
pub trait ServiceSettings: Default + Serialize + DeserializeOwned + Clone + std::fmt::Debug {
    /// The table (and environment infix) the settings live under.
    const SECTION: &'static str;

    /// Pushes one `field: problem` line per invalid setting.
    fn validate(&self, errors: &mut Vec<String>);

    /// A copy fit for printing: settings that hold secrets replaced.
    fn redacted(&self) -> Self {
        self.clone()
    }

    /// Fills in the token presented to other services where the settings
    /// name none, with the installation's service token (see
    /// [`crate::AuthConfig::service_token`]).
    fn default_service_token(&mut self, _token: &str) {}
}

/// The effective configuration of one binary.
#[derive(Debug, Clone, PartialEq)]
pub struct Config<S> {
    pub server: ServerConfig,
    pub service: S,
    /// `AGENTMESH_*` variables that name no setting of this binary. They are
    /// ignored rather than refused, because agentmesh binaries and the
    /// agents they start share the prefix; the binary logs them at start.
    pub ignored_env: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Each problem on a line of its own, naming the key as it was written
    /// and where.
    #[error("configuration could not be read: {}", .0.join("; "))]
    Read(Vec<String>),
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("unknown configuration key(s): {0}")]
    UnknownKeys(String),
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

impl<S: ServiceSettings> Config<S> {
    /// Loads the configuration from the process environment and `args`.
    pub fn load(defaults: ServerConfig, args: &CommonArgs) -> Result<Self, ConfigError> {
        let known = Self::known_keys()?;
        let (figment, ignored_env) = Self::figment(defaults, args, &known)?;
        Self::from_figment(figment, ignored_env, &known)
    }

    fn known_keys() -> Result<BTreeSet<String>, ConfigError> {
        Ok(Figment::from(Serialized::defaults(ServerConfig::default()))
            .data()
            .map_err(|error| read_error(error, S::SECTION))?
            .into_values()
            .flat_map(|dict| dict.into_keys())
            .chain([S::SECTION.to_owned()])
            .collect())
    }

    fn figment(
        defaults: ServerConfig,
        args: &CommonArgs,
        known: &BTreeSet<String>,
    ) -> Result<(Figment, Vec<String>), ConfigError> {
        let mut figment =
            Figment::new().merge(Serialized::defaults(defaults)).merge(Serialized::default(S::SECTION, S::default()));
        if let Some(path) = &args.config {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.clone()));
            }
            figment = figment.merge(Toml::file(path));
        }
        let top_level = |key: &str| key.split('.').next().unwrap_or_default().to_ascii_lowercase();
        let ignored_env = std::env::vars()
            .filter_map(|(name, _)| {
                let key = name.strip_prefix(ENV_PREFIX)?.replace("__", ".");
                (!known.contains(&top_level(&key))).then_some(name)
            })
            .collect();
        let settings = known.clone();
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX).split("__").filter(move |key| settings.contains(&top_level(key.as_str()))),
        );
        // The OpenTelemetry variable is the one every operator already knows.
        if let Ok(endpoint) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            figment = figment.merge(Serialized::default("otlp_endpoint", endpoint));
        }
        if let Some(listen) = args.listen {
            figment = figment.merge(Serialized::default("listen", listen));
        }
        if let Some(url) = &args.database_url {
            figment = figment.merge(Serialized::default("database_url", url));
        }
        if let Some(dir) = &args.data_dir {
            figment = figment.merge(Serialized::default("data_dir", dir));
        }
        Ok((figment, ignored_env))
    }

    fn from_figment(figment: Figment, ignored_env: Vec<String>, known: &BTreeSet<String>) -> Result<Self, ConfigError> {
        let unknown: Vec<String> = figment
            .data()
            .map_err(|error| read_error(error, S::SECTION))?
            .into_values()
            .flat_map(|dict| dict.into_keys())
            .filter(|key| !known.contains(key))
            .collect();
        if !unknown.is_empty() {
            return Err(ConfigError::UnknownKeys(unknown.join(", ")));
        }
        let server: ServerConfig = figment.extract().map_err(|error| read_error(error, S::SECTION))?;
        let service: S = figment.extract_inner(S::SECTION).map_err(|error| read_error(error, S::SECTION))?;
        let mut errors = Vec::new();
        server.validate(&mut errors);
        service.validate(&mut errors);
        if errors.is_empty() { Ok(Self { server, service, ignored_env }) } else { Err(ConfigError::Invalid(errors)) }
    }

    /// The configuration as TOML, with every secret replaced.
    pub fn to_redacted_toml(&self) -> String {
        let mut server = self.server.clone();
        server.auth = server.auth.redacted();
        if let Some(url) = &server.database_url {
            server.database_url = Some(redact_url_password(url));
        }
        let mut table = toml::Table::try_from(&server).unwrap_or_default();
        if let Ok(service) = toml::Value::try_from(self.service.redacted()) {
            table.insert(S::SECTION.to_owned(), service);
        }
        toml::to_string_pretty(&table).unwrap_or_default()
    }
}

/// figment's errors rendered for a person: once each (figment's message
/// repeats itself through the error's chain), the key as it was written (a
/// service section's keys come back from figment with the section last),
/// where it was written, and for a key that names nothing, the one meant.
fn read_error(error: figment::Error, section: &str) -> ConfigError {
    let mut lines: Vec<String> = Vec::new();
    for error in error {
        let mut path = error.path.clone();
        if path.len() > 1 && path.last().is_some_and(|last| last == section) {
            path.rotate_right(1);
        }
        let from_env = error.metadata.as_ref().is_some_and(|md| md.name.contains("environment"));
        let written = |path: &[String]| {
            if from_env {
                let keys: Vec<String> = path.iter().map(|key| key.to_ascii_uppercase()).collect();
                format!("{ENV_PREFIX}{}", keys.join("__"))
            } else {
                path.join(".")
            }
        };
        let key = written(&path);
        let place = match error.metadata.as_ref().and_then(|md| md.source.as_ref()) {
            Some(source) => format!(" (in {source})"),
            None => String::new(),
        };
        let problem = match &error.kind {
            figment::error::Kind::UnknownField(_, expected) => {
                let found = path.last().map(String::as_str).unwrap_or_default();
                let meant = expected
                    .iter()
                    .max_by(|a, b| strsim::jaro_winkler(found, a).total_cmp(&strsim::jaro_winkler(found, b)));
                match meant.filter(|meant| strsim::jaro_winkler(found, meant) > 0.8) {
                    Some(meant) => {
                        let mut meant_path = path.clone();
                        if let Some(last) = meant_path.last_mut() {
                            (*meant).clone_into(last);
                        }
                        format!("unknown key; did you mean {}?", written(&meant_path))
                    }
                    None => format!("unknown key; the keys here are {}", expected.join(", ")),
                }
            }
            other => other.to_string(),
        };
        let line = if key.is_empty() { format!("{problem}{place}") } else { format!("{key}{place}: {problem}") };
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    ConfigError::Read(lines)
}

/// Replaces the password of a URL such as `postgres://user:secret@host/db`.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:<redacted>@{host}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
// figment's Jail fixes the closure's error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        ttl_secs: u64,
    }

    impl ServiceSettings for Demo {
        const SECTION: &'static str = "demo";
        fn validate(&self, errors: &mut Vec<String>) {
            if self.ttl_secs > 100 {
                errors.push("demo.ttl_secs: at most 100".to_owned());
            }
        }
    }

    fn load(args: &CommonArgs) -> Result<Config<Demo>, ConfigError> {
        Config::<Demo>::load(ServerConfig::listening_on("127.0.0.1:7000".parse().unwrap()), args)
    }

    #[test]
    fn layers_apply_in_order_defaults_file_env_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("agentmesh.toml", "listen = \"127.0.0.1:7001\"\nlog = \"debug\"\n[demo]\nttl_secs = 5\n")?;
            let mut args = CommonArgs { config: Some("agentmesh.toml".into()), ..Default::default() };
            let config = load(&args).unwrap();
            assert_eq!(config.server.listen.port(), 7001);
            assert_eq!(config.service.ttl_secs, 5);

            jail.set_env("AGENTMESH_LISTEN", "127.0.0.1:7002");
            jail.set_env("AGENTMESH_DEMO__TTL_SECS", "7");
            let config = load(&args).unwrap();
            assert_eq!(config.server.listen.port(), 7002);
            assert_eq!(config.service.ttl_secs, 7);
            assert_eq!(config.server.log, "debug");

            args.listen = Some("127.0.0.1:7003".parse().unwrap());
            let config = load(&args).unwrap();
            assert_eq!(config.server.listen.port(), 7003);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_invalid_values_are_reported_by_name() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("agentmesh.toml", "listn = \"127.0.0.1:1\"\n")?;
            let args = CommonArgs { config: Some("agentmesh.toml".into()), ..Default::default() };
            let err = load(&args).unwrap_err();
            assert!(matches!(&err, ConfigError::UnknownKeys(keys) if keys == "listn"), "{err}");
            // A variable naming no setting is set aside, not applied.
            jail.set_env("AGENTMESH_LISTN", "127.0.0.1:1");
            let config = load(&CommonArgs::default()).unwrap();
            assert!(config.ignored_env.contains(&"AGENTMESH_LISTN".to_owned()), "{:?}", config.ignored_env);
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("AGENTMESH_DEMO__TTL_SECS", "1000");
            jail.set_env("AGENTMESH_SHUTDOWN_GRACE_SECS", "0");
            let err = load(&CommonArgs::default()).unwrap_err();
            let ConfigError::Invalid(lines) = &err else { panic!("{err}") };
            assert_eq!(lines.len(), 2, "{lines:?}");
            assert!(lines.iter().any(|l| l.starts_with("demo.ttl_secs")));
            assert!(lines.iter().any(|l| l.starts_with("shutdown_grace_secs")));
            Ok(())
        });
    }

    #[test]
    fn a_mistyped_key_is_reported_once_as_it_was_written() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("agentmesh.toml", "[demo]\nttl_secz = 5\n")?;
            let args = CommonArgs { config: Some("agentmesh.toml".into()), ..Default::default() };
            let err = load(&args).unwrap_err();
            let ConfigError::Read(lines) = &err else { panic!("{err}") };
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(lines[0].starts_with("demo.ttl_secz (in "), "{err}");
            assert!(lines[0].ends_with("agentmesh.toml): unknown key; did you mean demo.ttl_secs?"), "{err}");

            jail.create_file("agentmesh.toml", "shutdown_grace_secs = \"soon\"\n")?;
            let err = load(&args).unwrap_err().to_string();
            assert!(err.contains(": shutdown_grace_secs (in "), "{err}");
            assert!(err.ends_with(r#"agentmesh.toml): invalid type: found string "soon", expected u64"#), "{err}");
            assert_eq!(err.matches("shutdown_grace_secs").count(), 1, "once: {err}");

            jail.create_file("agentmesh.toml", "")?;
            jail.set_env("AGENTMESH_DEMO__TTL_SECZ", "5");
            let err = load(&args).unwrap_err().to_string();
            assert!(
                err.ends_with("AGENTMESH_DEMO__TTL_SECZ: unknown key; did you mean AGENTMESH_DEMO__TTL_SECS?"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn printed_config_hides_secrets() {
        let mut server =
            ServerConfig { database_url: Some("postgres://mesh:hunter2@db/agentmesh".into()), ..Default::default() };
        server.auth.operator_tokens = vec!["operator-secret".into()];
        let printed = Config { server, service: Demo::default(), ignored_env: vec![] }.to_redacted_toml();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("operator-secret"), "{printed}");
        assert!(printed.contains("[demo]"), "{printed}");
    }

    #[test]
    fn database_url_defaults_to_sqlite_under_data_dir() {
        let server = ServerConfig { data_dir: "/var/lib/mesh".into(), ..Default::default() };
        assert_eq!(server.database_url_or_default("registry"), "sqlite:///var/lib/mesh/registry.db");
    }
}
