//! Test support shared by the services' integration tests.

pub mod binary;
pub mod engines;
pub mod grpc;
pub mod images;
pub mod postgres;
pub mod python;
pub mod tls;
