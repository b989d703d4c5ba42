//! Test support shared by the services' integration tests.

pub mod images;
