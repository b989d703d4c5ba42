//! Recognising a workspace by its bearer token (SEC-1). Only the registry
//! can verify a workspace token; the services that accept them (gateway,
//! scheduler) ask it once per token and reuse the answer for a while, so a
//! busy workspace does not cost a registry call per request.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use agentmesh_proto::registry::v1::{AuthenticateWorkspaceRequest, registry_service_client::RegistryServiceClient};
use tonic::Code;
use uuid::Uuid;

use crate::{auth::token_digest, client::ServiceChannel};

/// How long a token's workspace is reused before the registry is asked again.
const CREDENTIAL_TTL: Duration = Duration::from_secs(30);

/// Why a bearer token is not taken as a workspace's.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The registry knows no workspace by this token.
    #[error("the bearer token is not a workspace token")]
    NotAWorkspaceToken,
    /// The registry could not be asked, or refused this service's own token.
    #[error(transparent)]
    Registry(tonic::Status),
    /// The registry accepted the token but sent no usable workspace with it.
    #[error("the registry sent a malformed workspace")]
    Malformed,
}

/// Workspace tokens recently confirmed by the registry, by their digest.
pub struct WorkspaceCredentials {
    registry: RegistryServiceClient<ServiceChannel>,
    cache: Mutex<HashMap<[u8; 32], (Uuid, Instant)>>,
}

impl WorkspaceCredentials {
    pub fn new(registry: RegistryServiceClient<ServiceChannel>) -> Self {
        Self { registry, cache: Mutex::default() }
    }

    /// The workspace whose bearer token this is.
    pub async fn authenticate(&self, token: &str) -> Result<Uuid, CredentialError> {
        let digest = token_digest(token);
        if let Some((id, at)) = self.cache.lock().expect("credentials lock").get(&digest)
            && at.elapsed() < CREDENTIAL_TTL
        {
            return Ok(*id);
        }
        let request = AuthenticateWorkspaceRequest { token: token.to_owned() };
        let record = match self.registry.clone().authenticate_workspace(request).await {
            Ok(reply) => reply.into_inner().workspace,
            Err(status) if matches!(status.code(), Code::Unauthenticated | Code::InvalidArgument) => {
                return Err(CredentialError::NotAWorkspaceToken);
            }
            Err(status) => return Err(CredentialError::Registry(status)),
        };
        let id = record.and_then(|record| record.id.parse().ok()).ok_or(CredentialError::Malformed)?;
        self.cache.lock().expect("credentials lock").insert(digest, (id, Instant::now()));
        Ok(id)
    }

    /// Drops what is known of `workspace`'s tokens (it was removed), so the
    /// next request with one of them asks the registry.
    pub fn forget(&self, workspace: Uuid) {
        self.cache.lock().expect("credentials lock").retain(|_, (owner, _)| *owner != workspace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::service_channel;

    /// Credentials over a registry nobody listens at: any answer that is not
    /// a `Registry` error came from the cache.
    fn unreachable_registry() -> WorkspaceCredentials {
        let channel = service_channel("http://127.0.0.1:1", "", Some(Duration::from_secs(5))).expect("a channel");
        WorkspaceCredentials::new(RegistryServiceClient::new(channel))
    }

    fn remember(credentials: &WorkspaceCredentials, token: &str, id: Uuid, at: Instant) {
        credentials.cache.lock().expect("credentials lock").insert(token_digest(token), (id, at));
    }

    #[tokio::test]
    async fn a_fresh_token_is_answered_without_the_registry() {
        let credentials = unreachable_registry();
        let id = Uuid::from_u128(1);
        remember(&credentials, "token-one", id, Instant::now());
        assert_eq!(credentials.authenticate("token-one").await.expect("a cached workspace"), id);
        let other = credentials.authenticate("token-two").await;
        assert!(matches!(other, Err(CredentialError::Registry(_))), "{other:?}");
    }

    #[tokio::test]
    async fn an_expired_or_forgotten_token_is_asked_about_again() {
        let credentials = unreachable_registry();
        let (removed, kept) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let expired = Instant::now().checked_sub(CREDENTIAL_TTL).expect("a monotonic clock older than the TTL");
        remember(&credentials, "expired", kept, expired);
        remember(&credentials, "removed", removed, Instant::now());
        remember(&credentials, "kept", kept, Instant::now());
        credentials.forget(removed);
        for token in ["expired", "removed"] {
            let answer = credentials.authenticate(token).await;
            assert!(matches!(answer, Err(CredentialError::Registry(_))), "{token}: {answer:?}");
        }
        assert_eq!(credentials.authenticate("kept").await.expect("another workspace's token stays"), kept);
    }
}
