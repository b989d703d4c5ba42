//! Bearer tokens on the gRPC calls the load tools make as operator or as a
//! workspace.

use anyhow::Context;
use tonic::{
    Request,
    metadata::{AsciiMetadataValue, MetadataValue},
};

/// The `authorization` value for `token`.
pub fn bearer(token: &str) -> anyhow::Result<AsciiMetadataValue> {
    MetadataValue::try_from(format!("Bearer {token}")).context("the token is not a valid header value")
}

/// `message` as a request carrying `authorization`.
pub fn authorised<T>(message: T, authorization: &AsciiMetadataValue) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", authorization.clone());
    request
}
