//! Contexts, like kubectl's: named meshes with the addresses of their four
//! services and the credentials to present, kept in one TOML file
//! (`$XDG_CONFIG_HOME/agentmesh/config.toml` unless `--config` or
//! `AGENTMESH_CONFIG` names another), one of them current.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{args::Global, failure::Failure};

/// The default ports, for a context given one host.
pub const REGISTRY_PORT: u16 = 50051;
pub const PROVISIONER_PORT: u16 = 50052;
pub const GATEWAY_PORT: u16 = 50053;
pub const SCHEDULER_PORT: u16 = 50054;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// One mesh: where its services answer and how to authenticate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    pub registry: String,
    pub provisioner: String,
    pub gateway: String,
    pub scheduler: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Read at every command, so a rotated token needs no edit here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Authorities trusted for https addresses, besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Context {
    /// A context whose four services share one host, on their default ports.
    pub fn on_host(host: &str) -> Self {
        let address = |port: u16| format!("http://{host}:{port}");
        Self {
            registry: address(REGISTRY_PORT),
            provisioner: address(PROVISIONER_PORT),
            gateway: address(GATEWAY_PORT),
            scheduler: address(SCHEDULER_PORT),
            ..Self::default()
        }
    }
}

/// The mesh a command talks to, settled from the file, the environment
/// and the flags.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub name: String,
    pub context: Context,
    pub token: String,
}

/// Where the configuration file is.
pub fn path(global: &Global) -> PathBuf {
    global.config.clone().unwrap_or_else(|| {
        dirs::config_dir().unwrap_or_else(|| PathBuf::from(".")).join("agentmesh").join("config.toml")
    })
}

impl ConfigFile {
    /// The file at `path`; an empty configuration when there is none yet.
    pub fn load(path: &Path) -> Result<Self, Failure> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| Failure::Config(format!("{}: {}", path.display(), e.message())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Failure::Config(format!("{}: {e}", path.display()))),
        }
    }

    /// Writes the file (private: it may hold tokens).
    pub fn save(&self, path: &Path) -> Result<(), Failure> {
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let text = toml::to_string_pretty(self).map_err(std::io::Error::other)?;
            let staging = path.with_extension("toml.tmp");
            std::fs::write(&staging, text)?;
            std::fs::set_permissions(&staging, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            std::fs::rename(&staging, path)
        };
        write().map_err(|e| Failure::Config(format!("cannot write {}: {e}", path.display())))
    }

    /// The context the command uses: `--context` / `AGENTMESH_CONTEXT`, else
    /// the current one; its token from `--token` / `AGENTMESH_TOKEN`, else
    /// the context's.
    pub fn resolve(&self, global: &Global) -> Result<Resolved, Failure> {
        let name = match global.context.clone().or_else(|| self.current_context.clone()) {
            Some(name) => name,
            None => {
                return Err(Failure::Config(
                    "no context: start a mesh with `agentmesh dev`, or add one with `agentmesh config set-context`"
                        .to_owned(),
                ));
            }
        };
        let context = self.contexts.get(&name).cloned().ok_or_else(|| {
            let known: Vec<&str> = self.contexts.keys().map(String::as_str).collect();
            Failure::Config(format!("no context named {name:?} (known: {})", known.join(", ")))
        })?;
        let token = match (&global.token, &context.token, &context.token_file) {
            (Some(token), _, _) | (None, Some(token), _) => token.clone(),
            (None, None, Some(file)) => std::fs::read_to_string(file)
                .map(|token| token.trim().to_owned())
                .map_err(|e| Failure::Config(format!("context {name:?}: token_file {}: {e}", file.display())))?,
            (None, None, None) => String::new(),
        };
        Ok(Resolved { name, context, token })
    }

    /// The file as it may be shown: tokens replaced.
    pub fn redacted(&self) -> Self {
        let mut shown = self.clone();
        for context in shown.contexts.values_mut() {
            if context.token.is_some() {
                context.token = Some("<redacted>".to_owned());
            }
        }
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Format;

    fn global(context: Option<&str>, token: Option<&str>) -> Global {
        Global {
            context: context.map(str::to_owned),
            token: token.map(str::to_owned),
            config: None,
            output: Format::Table,
        }
    }

    #[test]
    fn the_flag_wins_over_the_current_context_and_the_token_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "from-file\n").unwrap();
        let mut file = ConfigFile { current_context: Some("a".into()), ..ConfigFile::default() };
        file.contexts.insert("a".into(), Context { token_file: Some(token_file), ..Context::on_host("a.example") });
        file.contexts.insert("b".into(), Context { token: Some("from-b".into()), ..Context::on_host("b.example") });

        let current = file.resolve(&global(None, None)).unwrap();
        assert_eq!((current.name.as_str(), current.token.as_str()), ("a", "from-file"));
        assert_eq!(current.context.gateway, "http://a.example:50053");
        let chosen = file.resolve(&global(Some("b"), None)).unwrap();
        assert_eq!(chosen.token, "from-b");
        assert_eq!(file.resolve(&global(Some("b"), Some("flag"))).unwrap().token, "flag");
        let unknown = file.resolve(&global(Some("c"), None)).unwrap_err().to_string();
        assert!(unknown.contains("no context named \"c\"") && unknown.contains("a, b"), "{unknown}");
    }

    #[test]
    fn a_saved_file_is_private_reads_back_the_same_and_shows_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/config.toml");
        let mut file = ConfigFile { current_context: Some("dev".into()), ..ConfigFile::default() };
        file.contexts.insert("dev".into(), Context { token: Some("secret".into()), ..Context::on_host("127.0.0.1") });
        file.save(&path).unwrap();
        assert_eq!(ConfigFile::load(&path).unwrap(), file);
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let shown = toml::to_string(&file.redacted()).unwrap();
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn a_broken_file_is_one_line_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[contexts.dev]\nregistry = 3\n").unwrap();
        let error = ConfigFile::load(&path).unwrap_err().to_string();
        assert!(error.starts_with(&path.display().to_string()), "{error}");
        assert!(!error.trim().contains('\n'), "{error}");
    }
}
