//! What the end-to-end tests drive: the Compose stack of `deploy/compose`
//! ([`compose`]), the four services' gRPC APIs as an operator reaches them
//! ([`mesh`]), and the echo agent's record of what it received ([`agent`]).
//! Everything runs as it would on a user's machine: the images that
//! `deploy/images/build.sh` builds, the static binaries inside them.

pub mod agent;
pub mod compose;
pub mod docker;
pub mod mesh;

/// Prints a measured figure the way `docs/benchmarks.md` quotes it: speed is
/// measured and reported by the tests, never asserted.
pub fn report_figure(name: &str, value: std::time::Duration) {
    println!("e2e figure: {name}: {:.2} s", value.as_secs_f64());
}
