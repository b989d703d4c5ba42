//! Test support shared by the services' integration tests.

pub mod a2a;
pub mod binary;
pub mod engines;
pub mod grpc;
pub mod images;
pub mod kube;
pub mod metrics;
pub mod otlp;
pub mod postgres;
pub mod prometheus;
pub mod python;
pub mod tls;

use std::time::Duration;

/// Polls `check` every 20 ms until it returns `Some`, for state that has no
/// event to await (an agent's received list), failing after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "condition not reached within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A local port free now, for a listener the code under test binds itself
/// from its configuration (another process could take it first: rare).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}
