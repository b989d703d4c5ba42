//! Who is calling (SEC-1).
//!
//! Every request passes through one interceptor that classifies the bearer
//! token it carries: an operator, another agentmesh service, or some other
//! bearer (perhaps a workspace token, which only the owning service can
//! verify against its store). Handlers then demand what they need. Health
//! and reflection stay open so that probes and `grpcurl list` work.

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
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
    /// Bearer tokens that agentmesh services present to each other.
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

    /// Builds the authenticator, generating the operator token file if no
    /// operator token is configured. Returns where that file is, if used.
    pub fn authenticator(&self, data_dir: &Path) -> std::io::Result<(Authenticator, Option<PathBuf>)> {
        let mut operator = self.operator_tokens.clone();
        let mut token_file = None;
        if operator.is_empty() {
            let path = data_dir.join("operator.token");
            operator.push(load_or_create_token(&path)?);
            token_file = Some(path);
        }
        let digest = |tokens: &[String]| tokens.iter().map(|t| token_digest(t)).collect();
        let inner = Inner { operator: digest(&operator), service: digest(&self.service_tokens) };
        Ok((Authenticator(Arc::new(inner)), token_file))
    }
}

fn load_or_create_token(path: &Path) -> std::io::Result<String> {
    match fs::read_to_string(path) {
        Ok(token) if token.trim().len() >= MIN_TOKEN_LEN => return Ok(token.trim().to_owned()),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} holds no usable token", path.display()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let token = generate_token();
    // create_new: two services sharing a data directory must not overwrite
    // each other's freshly written token.
    match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut file) => {
            file.write_all(token.as_bytes())?;
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(fs::read_to_string(path)?.trim().to_owned()),
        Err(e) => Err(e),
    }
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
}
