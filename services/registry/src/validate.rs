//! Edge validation (SEC-2): every field of every request, before anything
//! is read or written.

use std::collections::BTreeMap;

use agentmesh_chassis::status::echo;
use uuid::Uuid;

use crate::{
    error::{RegistryError, Result},
    model::Capabilities,
    store::LabelTerm,
};
use agentmesh_proto::registry::v1 as pb;

pub const MAX_NAME: usize = 128;
pub const MAX_ROLE: usize = 1024;
pub const MAX_DESCRIPTION: usize = 4096;
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_KEY: usize = 63;
pub const MAX_LABEL_VALUE: usize = 256;
pub const MAX_RUNTIME_INSTANCE: usize = 256;
pub const MAX_AGENT_RUNTIME: usize = 64;
pub const MAX_CONCURRENT_TASKS: u32 = 10_000;
pub const MAX_AGENT_CARD: usize = 64 * 1024;
pub const MAX_SAMPLE_ERROR: usize = 4096;
pub const MAX_CURRENT_TASK: usize = 1024;
pub const MAX_RUNTIME_STATE: usize = 64;
pub const MAX_REASON: usize = 1024;
pub const MAX_IDLE_TIMEOUT: u32 = 86_400;
pub const MAX_CAPABILITIES: usize = 64;
pub const MAX_QUERY: usize = 256;
pub const MAX_PAGE: u32 = 1000;
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_WATCH_IDS: usize = 1000;
/// Issued tokens are 64 characters; the cap only bounds what we hash.
pub const MAX_TOKEN: usize = 512;

pub fn uuid(field: &'static str, value: &str) -> Result<Uuid> {
    Uuid::parse_str(value).map_err(|_| RegistryError::invalid(field, format!("{} is not a UUID", echo(value))))
}

/// Free text: bounded, no control characters but newlines and tabs.
pub fn text(field: &'static str, value: &str, max: usize) -> Result<String> {
    if value.chars().count() > max {
        return Err(RegistryError::invalid(field, format!("at most {max} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(RegistryError::invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// A required single-line text.
pub fn required_line(field: &'static str, value: &str, max: usize) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(RegistryError::invalid(field, "is required"));
    }
    if value.contains(['\n', '\t']) {
        return Err(RegistryError::invalid(field, "must be a single line"));
    }
    text(field, value, max)
}

/// An identifier-like name: lower-case letters, digits, `_`, `.`, `-`.
pub fn slug(field: &'static str, value: &str, max: usize, required: bool) -> Result<String> {
    if value.is_empty() && !required {
        return Ok(String::new());
    }
    let ok = !value.is_empty()
        && value.len() <= max
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        return Err(RegistryError::invalid(field, format!("1-{max} characters of [a-z0-9_.-]")));
    }
    Ok(value.to_owned())
}

fn label_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= MAX_LABEL_KEY
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::invalid(
            "labels",
            format!("key {} must be 1-{MAX_LABEL_KEY} characters of [a-zA-Z0-9._/-]", echo(key)),
        ))
    }
}

pub fn labels(labels: impl IntoIterator<Item = (String, String)>) -> Result<BTreeMap<String, String>> {
    let labels: BTreeMap<String, String> = labels.into_iter().collect();
    if labels.len() > MAX_LABELS {
        return Err(RegistryError::invalid("labels", format!("at most {MAX_LABELS} labels")));
    }
    for (key, value) in &labels {
        label_key(key)?;
        text("labels", value, MAX_LABEL_VALUE)?;
        if value.contains('\n') {
            return Err(RegistryError::invalid("labels", format!("value of {} must be a single line", echo(key))));
        }
    }
    Ok(labels)
}

/// Parses `key=value,key!=value,key,!key`.
pub fn label_selector(selector: &str) -> Result<Vec<LabelTerm>> {
    let mut terms = Vec::new();
    for raw in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let term = if let Some((key, value)) = raw.split_once("!=") {
            LabelTerm::NotEquals(key.trim().to_owned(), value.trim().to_owned())
        } else if let Some((key, value)) = raw.split_once('=') {
            LabelTerm::Equals(key.trim().to_owned(), value.trim().to_owned())
        } else if let Some(key) = raw.strip_prefix('!') {
            LabelTerm::Absent(key.trim().to_owned())
        } else {
            LabelTerm::Exists(raw.to_owned())
        };
        let (LabelTerm::Equals(key, _)
        | LabelTerm::NotEquals(key, _)
        | LabelTerm::Exists(key)
        | LabelTerm::Absent(key)) = &term;
        label_key(key)
            .map_err(|_| RegistryError::invalid("label_selector", format!("bad label key in {}", echo(raw))))?;
        terms.push(term);
    }
    if terms.len() > MAX_LABELS {
        return Err(RegistryError::invalid("label_selector", format!("at most {MAX_LABELS} terms")));
    }
    Ok(terms)
}

pub fn agent_card(json: &str) -> Result<String> {
    if json.is_empty() {
        return Ok(String::new());
    }
    if json.len() > MAX_AGENT_CARD {
        return Err(RegistryError::invalid("agent_card_json", format!("at most {MAX_AGENT_CARD} bytes")));
    }
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(_)) => Ok(json.to_owned()),
        Ok(_) => Err(RegistryError::invalid("agent_card_json", "must be a JSON object")),
        Err(e) => Err(RegistryError::invalid("agent_card_json", format!("not valid JSON: {e}"))),
    }
}

pub fn capabilities(c: pb::Capabilities) -> Result<Capabilities> {
    if c.extra.len() > MAX_CAPABILITIES {
        return Err(RegistryError::invalid("capabilities.extra", format!("at most {MAX_CAPABILITIES} entries")));
    }
    for key in c.extra.keys() {
        slug("capabilities.extra", key, 64, true)?;
    }
    Ok(Capabilities {
        native_scheduler: c.native_scheduler,
        native_session: c.native_session,
        native_status_mgmt: c.native_status_mgmt,
        extra: c.extra.into_iter().collect(),
    })
}

pub fn runtime_metadata(metadata: Option<pb::RuntimeMetadata>) -> Result<crate::registry::RuntimeMetadata> {
    let Some(metadata) = metadata else {
        return Ok(Default::default());
    };
    let idle_timeout_seconds = match metadata.idle_timeout_seconds {
        None => None,
        Some(0) => Some(None),
        Some(secs) if secs <= MAX_IDLE_TIMEOUT => Some(Some(secs)),
        Some(_) => {
            return Err(RegistryError::invalid(
                "runtime_metadata.idle_timeout_seconds",
                format!("1-{MAX_IDLE_TIMEOUT} seconds, or 0 to clear"),
            ));
        }
    };
    Ok(crate::registry::RuntimeMetadata {
        capabilities: metadata.capabilities.map(capabilities).transpose()?,
        idle_timeout_seconds,
    })
}

pub fn error_rate(value: f64) -> Result<f64> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(RegistryError::invalid("error_rate", "must be between 0 and 1"))
    }
}

/// `(created_at, id)` encoded as an opaque page token.
pub fn page_token(token: &str) -> Result<Option<(i64, Uuid)>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || RegistryError::invalid("page_token", "not a token this registry issued");
    let (created, id) = token.split_once('.').ok_or_else(bad)?;
    Ok(Some((created.parse().map_err(|_| bad())?, Uuid::parse_str(id).map_err(|_| bad())?)))
}

pub fn encode_page_token((created_at, id): (i64, Uuid)) -> String {
    format!("{created_at}.{id}")
}

pub fn page_size(size: u32) -> Result<u32> {
    match size {
        0 => Ok(DEFAULT_PAGE),
        1..=MAX_PAGE => Ok(size),
        _ => Err(RegistryError::invalid("page_size", format!("at most {MAX_PAGE}"))),
    }
}
