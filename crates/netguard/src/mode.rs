use std::fmt;
use std::str::FromStr;

/// Which internal address ranges a deployment lets agent URLs point at.
///
/// Only loopback and private ranges depend on the mode; link-local/metadata,
/// CGNAT, multicast, documentation and the other special ranges are refused
/// in every mode (see [`AddressClass::allowed_in`](crate::AddressClass::allowed_in)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NetworkMode {
    /// Public addresses only. The default: a mesh reachable from outside
    /// must not become a proxy into its own network.
    #[default]
    Strict,
    /// Public and private ranges (RFC 1918, IPv6 ULA `fc00::/7`), but not
    /// loopback: for a mesh running inside a cluster whose agents live on the
    /// cluster network. Loopback stays refused because inside a pod or
    /// container it reaches the mesh service's own sidecars and admin ports.
    Cluster,
    /// Public, private and loopback: for a developer running everything on
    /// one machine.
    Dev,
}

impl NetworkMode {
    /// All modes, from the most to the least restrictive.
    pub const ALL: [NetworkMode; 3] = [NetworkMode::Strict, NetworkMode::Cluster, NetworkMode::Dev];

    /// The name accepted by [`FromStr`] and printed by [`Display`](fmt::Display).
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Strict => "strict",
            NetworkMode::Cluster => "cluster",
            NetworkMode::Dev => "dev",
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`NetworkMode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown network mode {input:?}: expected strict, cluster or dev")]
pub struct ParseNetworkModeError {
    /// What was given.
    pub input: String,
}

impl FromStr for NetworkMode {
    type Err = ParseNetworkModeError;

    /// Accepts `strict`, `cluster` and `dev`, ignoring ASCII case and
    /// surrounding whitespace (these usually come from environment variables).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        NetworkMode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| ParseNetworkModeError { input: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_every_mode() {
        for (text, mode) in [
            ("strict", NetworkMode::Strict),
            ("cluster", NetworkMode::Cluster),
            ("dev", NetworkMode::Dev),
            ("DEV", NetworkMode::Dev),
            (" Cluster\n", NetworkMode::Cluster),
        ] {
            assert_eq!(text.parse::<NetworkMode>(), Ok(mode), "{text:?}");
        }
        for mode in NetworkMode::ALL {
            assert_eq!(mode.to_string().parse::<NetworkMode>(), Ok(mode));
        }
    }

    #[test]
    fn rejects_unknown_modes() {
        for text in ["", "prod", "strict-ish", "developer"] {
            let err = text.parse::<NetworkMode>().unwrap_err();
            assert_eq!(err.input, text);
        }
        assert_eq!(
            "prod".parse::<NetworkMode>().unwrap_err().to_string(),
            "unknown network mode \"prod\": expected strict, cluster or dev"
        );
    }

    #[test]
    fn default_is_strict() {
        assert_eq!(NetworkMode::default(), NetworkMode::Strict);
    }
}
