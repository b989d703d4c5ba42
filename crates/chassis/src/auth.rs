//! Who is calling (SEC-1).
//!
//! Every request passes through one interceptor that classifies the bearer
//! token it carries: an operator, another agentmesh service, or some other
//! bearer (perhaps a workspace token, which only the owning service can
//! verify against its store). Handlers then demand what they need. Health
//! and reflection stay open so that probes and `grpcurl list` work.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::{Request, Status, metadata::MetadataMap};

/// Credentials accepted by a service.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens granting operator access. When none is configured, one
    /// is generated at first start into `<data_dir>/operator.token` (mode 0600).
    pub operator_tokens: Vec<String>,
    /// Bearer tokens that agentmesh services present to each other. When
    /// none is configured, one is generated at first start into
    /// `<data_dir>/service.token` (mode 0600).
    pub service_tokens: Vec<String>,
}

const MIN_TOKEN_LEN: usize = 16;

impl AuthConfig {
    pub(crate) fn validate(&self, errors: &mut Vec<String>) {
        let short = |tokens: &[String]| tokens.iter().any(|t| t.len() < MIN_TOKEN_LEN);
        if short(&self.operator_tokens) {
            errors.push(format!("auth.operator_tokens: each token needs at least {MIN_TOKEN_LEN} characters"));
        }
        if short(&self.service_tokens) {
            errors.push(format!("auth.service_tokens: each token needs at least {MIN_TOKEN_LEN} characters"));
        }
    }

    pub(crate) fn redacted(&self) -> Self {
        let hide = |tokens: &[String]| tokens.iter().map(|_| "<redacted>".to_owned()).collect();
        Self { operator_tokens: hide(&self.operator_tokens), service_tokens: hide(&self.service_tokens) }
    }

    /// Builds the authenticator. Where no operator token is configured, one
    /// is generated at first start into `<data_dir>/operator.token` (mode
    /// 0600), and where no service token is, one into
    /// `<data_dir>/service.token`, so that services sharing a data
    /// directory trust each other with nothing configured. Returns where the
    /// operator token file is, if used.
    pub fn authenticator(&self, data_dir: &Path) -> std::io::Result<(Authenticator, Option<PathBuf>)> {
        let mut operator = self.operator_tokens.clone();
        let mut token_file = None;
        if operator.is_empty() {
            let path = data_dir.join(OPERATOR_TOKEN_FILE);
            operator.push(load_or_create_token(&path)?);
            token_file = Some(path);
        }
        let service = match self.service_tokens.is_empty() {
            true => vec![load_or_create_token(&data_dir.join(SERVICE_TOKEN_FILE))?],
            false => self.service_tokens.clone(),
        };
        let digest = |tokens: &[String]| tokens.iter().map(|t| token_digest(t)).collect();
        let inner = Inner { operator: digest(&operator), service: digest(&service) };
        Ok((Authenticator(Arc::new(inner)), token_file))
    }

    /// The service token this service presents to the others when its own
    /// settings name none: the first configured service token, else the one
    /// kept in `<data_dir>/service.token` (generated at first start).
    pub fn service_token(&self, data_dir: &Path) -> std::io::Result<String> {
        match self.service_tokens.first() {
            Some(token) => Ok(token.clone()),
            None => load_or_create_token(&data_dir.join(SERVICE_TOKEN_FILE)),
        }
    }
}

/// Where a generated operator token is kept, under the data directory.
pub const OPERATOR_TOKEN_FILE: &str = "operator.token";
/// Where a generated service token is kept, under the data directory.
pub const SERVICE_TOKEN_FILE: &str = "service.token";

fn load_or_create_token(path: &Path) -> std::io::Result<String> {
    crate::installation::load_or_create(path, generate_token, |token| token.len() >= MIN_TOKEN_LEN)
}

/// A fresh random bearer token: 256 bits, hex encoded.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The SHA-256 digest under which a token is stored and compared. Tokens are
/// 256 random bits, so a fast hash is as safe as a slow one and keeps
/// heartbeats cheap.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

struct Inner {
    operator: Vec<[u8; 32]>,
    service: Vec<[u8; 32]>,
}

/// Classifies callers by their bearer token.
#[derive(Clone)]
pub struct Authenticator(Arc<Inner>);

impl Authenticator {
    /// Classifies the caller of a request's metadata.
    pub fn classify(&self, metadata: &MetadataMap) -> Caller {
        self.classify_authorization(metadata.get("authorization").and_then(|v| v.to_str().ok()))
    }

    /// Classifies the caller of an `authorization` header value (for the
    /// HTTP fronts, which have no gRPC metadata).
    pub fn classify_authorization(&self, authorization: Option<&str>) -> Caller {
        let Some(token) = authorization.and_then(bearer_token) else {
            return Caller::Anonymous;
        };
        let digest = token_digest(token);
        if self.0.operator.contains(&digest) {
            Caller::Operator
        } else if self.0.service.contains(&digest) {
            Caller::Service
        } else {
            Caller::Bearer(token.to_owned())
        }
    }

    /// The interceptor that stores a [`Caller`] in every request's extensions.
    pub fn interceptor(&self) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let auth = self.clone();
        move |mut request: Request<()>| {
            let caller = auth.classify(request.metadata());
            request.extensions_mut().insert(caller);
            Ok(request)
        }
    }
}

fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Who made a request, as far as the chassis can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Holds an operator token.
    Operator,
    /// Holds a service token.
    Service,
    /// Holds some other bearer token, for the service to verify.
    Bearer(String),
    /// Sent no bearer token.
    Anonymous,
}

impl Caller {
    /// The caller recorded by the chassis's interceptor.
    pub fn of<T>(request: &Request<T>) -> Caller {
        request.extensions().get::<Caller>().cloned().unwrap_or(Caller::Anonymous)
    }

    /// Management calls need an operator or a service token.
    pub fn require_management(&self) -> Result<(), Status> {
        match self {
            Caller::Operator | Caller::Service => Ok(()),
            Caller::Bearer(_) => Err(Status::permission_denied(
                "this call needs an operator or service token; the token given is neither",
            )),
            Caller::Anonymous => {
                Err(Status::unauthenticated("this call needs `authorization: Bearer <operator or service token>`"))
            }
        }
    }

    /// The bearer token of a caller that is neither operator nor service.
    pub fn bearer(&self) -> Option<&str> {
        match self {
            Caller::Bearer(token) => Some(token),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value.parse().unwrap());
        map
    }

    #[test]
    fn classifies_operator_service_other_and_missing_tokens() {
        let config = AuthConfig {
            operator_tokens: vec!["operator-token-0123456789".into()],
            service_tokens: vec!["service-token-0123456789".into()],
        };
        let dir = std::env::temp_dir();
        let (auth, file) = config.authenticator(&dir).unwrap();
        assert!(file.is_none());
        assert_eq!(auth.classify(&metadata("Bearer operator-token-0123456789")), Caller::Operator);
        assert_eq!(auth.classify(&metadata("bearer service-token-0123456789")), Caller::Service);
        assert_eq!(auth.classify(&metadata("Bearer something-else")), Caller::Bearer("something-else".into()));
        assert_eq!(auth.classify(&metadata("Basic abc")), Caller::Anonymous);
        assert_eq!(auth.classify(&MetadataMap::new()), Caller::Anonymous);
    }

    #[test]
    fn generated_operator_token_is_private_and_stable() {
        let dir = std::env::temp_dir().join(format!("agentmesh-auth-{}", generate_token()));
        let (auth, file) = AuthConfig::default().authenticator(&dir).unwrap();
        let path = file.unwrap();
        let token = fs::read_to_string(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        assert_eq!(auth.classify(&metadata(&format!("Bearer {token}"))), Caller::Operator);
        let (again, _) = AuthConfig::default().authenticator(&dir).unwrap();
        assert_eq!(again.classify(&metadata(&format!("Bearer {token}"))), Caller::Operator);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn services_sharing_a_data_directory_share_a_generated_service_token() {
        let dir = std::env::temp_dir().join(format!("agentmesh-auth-{}", generate_token()));
        let (registry, _) = AuthConfig::default().authenticator(&dir).unwrap();
        let presented = AuthConfig::default().service_token(&dir).unwrap();
        assert_eq!(presented, fs::read_to_string(dir.join(SERVICE_TOKEN_FILE)).unwrap());
        assert_eq!(registry.classify(&metadata(&format!("Bearer {presented}"))), Caller::Service);

        // Configured tokens win over the file, on both sides.
        let configured = AuthConfig { service_tokens: vec!["configured-service-token".into()], ..Default::default() };
        assert_eq!(configured.service_token(&dir).unwrap(), "configured-service-token");
        let (strict, _) = configured.authenticator(&dir).unwrap();
        assert_eq!(strict.classify(&metadata(&format!("Bearer {presented}"))), Caller::Bearer(presented.clone()));
        fs::remove_dir_all(dir).unwrap();
    }
}
