//! Test support shared by the services' integration tests.

pub mod binary;
pub mod images;
pub mod python;
