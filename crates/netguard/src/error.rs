use std::io;
use std::net::IpAddr;

use crate::{AddressClass, EmbeddedIpv4};

/// Why [`UrlGuard::check`](crate::UrlGuard::check) refused a URL.
///
/// The Display text is meant to be shown to whoever registered the URL as-is:
/// it names the offending host, address and class, and which mode (if any)
/// would allow it. It never repeats credentials found in the URL.
#[derive(Debug, thiserror::Error)]
pub enum UrlRejected {
    /// The input was empty or only whitespace.
    #[error("url is empty")]
    Empty,

    /// The input is longer than [`MAX_URL_LEN`](crate::MAX_URL_LEN) bytes.
    #[error("url is {len} bytes long, over the limit of {max} bytes")]
    TooLong {
        /// Length of the input in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// The url crate could not parse the input.
    #[error("url is not valid: {reason}")]
    Malformed {
        /// The parser's reason.
        reason: url::ParseError,
    },

    /// A scheme other than http or https.
    #[error("url scheme {scheme} is not allowed: use http or https")]
    Scheme {
        /// The (lower-cased) scheme that was given.
        scheme: String,
    },

    /// The URL carries a user name or password (`user:pass@host`). Refused
    /// because credentials in a stored URL leak through logs and listings,
    /// and `trusted.example@evil.example` is a classic disguise.
    #[error("url must not contain a user name or password (user:password@host)")]
    Credentials,

    /// The URL has no host (only reachable for unusual inputs; the parser
    /// already refuses `http://` without one).
    #[error("url has no host")]
    MissingHost,

    /// The host is an IP literal of a class the mode refuses.
    #[error("url host {host} is {}", describe(*.class, .embedded))]
    ForbiddenAddress {
        /// The host as the parsed URL spells it (IPv6 in brackets; odd IPv4
        /// spellings such as `0xA9FEA9FE` already normalised).
        host: String,
        /// The address.
        addr: IpAddr,
        /// Its class.
        class: AddressClass,
        /// The embedded IPv4 address that decided the class, if any.
        embedded: Option<EmbeddedIpv4>,
    },

    /// The host is a name and (at least) one of its addresses is of a class
    /// the mode refuses. The first such address in the resolver's answer is
    /// reported.
    #[error("url host {host} resolves to {addr}, {}", describe(*.class, .embedded))]
    ForbiddenResolvedAddress {
        /// The name.
        host: String,
        /// The refused address.
        addr: IpAddr,
        /// Its class.
        class: AddressClass,
        /// The embedded IPv4 address that decided the class, if any.
        embedded: Option<EmbeddedIpv4>,
    },

    /// The name could not be resolved (or resolution timed out). Refused,
    /// because an address that cannot be checked cannot be trusted.
    #[error("could not resolve url host {host}: {reason}")]
    Unresolvable {
        /// The name.
        host: String,
        /// The resolver's error.
        reason: io::Error,
    },

    /// The resolver answered with no addresses at all.
    #[error("could not resolve url host {host}: the name has no addresses")]
    NoAddresses {
        /// The name.
        host: String,
    },
}

impl UrlRejected {
    /// The refused address and its class, for the two address variants.
    pub fn address(&self) -> Option<(IpAddr, AddressClass)> {
        match self {
            UrlRejected::ForbiddenAddress { addr, class, .. }
            | UrlRejected::ForbiddenResolvedAddress { addr, class, .. } => Some((*addr, *class)),
            _ => None,
        }
    }

    /// True when the refusal comes from name resolution failing rather than
    /// from the URL itself (a caller may want to report it as a transient
    /// condition and let the client retry).
    pub fn is_resolution_failure(&self) -> bool {
        matches!(self, UrlRejected::Unresolvable { .. } | UrlRejected::NoAddresses { .. })
    }
}

/// `a link-local/metadata address (169.254.169.254 in IPv4-mapped form), which is never allowed`
fn describe(class: AddressClass, embedded: &Option<EmbeddedIpv4>) -> String {
    let mut out = class.description().to_owned();
    if let Some(embedded) = embedded {
        out.push_str(&format!(" ({embedded})"));
    }
    let policy = class.policy();
    if !policy.is_empty() {
        out.push_str(", ");
        out.push_str(&policy);
    }
    out
}
