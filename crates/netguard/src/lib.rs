//! SSRF guard for agent URLs (SPEC rule SEC-3).
//!
//! The registry checks an agent's URL when the agent registers, and the
//! gateway checks it again right before dispatching to it (GW-3): a DNS name
//! that was harmless at registration can point somewhere else later.
//!
//! The pieces:
//! - [`classify`] / [`inspect`] put an [`IpAddr`](std::net::IpAddr) into an
//!   [`AddressClass`], looking through the IPv6 forms that embed an IPv4
//!   address (IPv4-mapped, IPv4-compatible, NAT64, 6to4) so that an internal
//!   IPv4 target cannot be smuggled in as IPv6.
//! - [`NetworkMode`] says which of the "sometimes allowed" classes (loopback,
//!   private) a deployment accepts; everything else that is not public is
//!   refused in every mode.
//! - [`Resolve`] is the DNS seam: [`SystemResolver`] for production,
//!   [`StaticResolver`] for tests and pinned names, [`CachingResolver`] to
//!   keep another's answers for a while.
//! - [`UrlGuard::check`] ties it together and returns a [`CheckedUrl`] that
//!   carries the exact addresses it approved, so a caller can connect to those
//!   and not re-resolve (which would reopen the DNS-rebinding window).

mod class;
mod error;
mod guard;
mod mode;
mod resolve;

pub use class::{AddressClass, Classification, EmbeddedIpv4, Ipv4Embedding, classify, embedded_ipv4, inspect};
pub use error::UrlRejected;
pub use guard::{CheckedUrl, DEFAULT_RESOLVE_TIMEOUT, MAX_URL_LEN, UrlGuard};
pub use mode::{NetworkMode, ParseNetworkModeError};
pub use resolve::{CachingResolver, Resolve, StaticResolver, SystemResolver};
