//! Printing for people and for scripts: tables (colour and status emoji
//! only on a terminal, never with `NO_COLOR`), or the same records as JSON
//! or YAML with stable field names.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, SystemTime},
};

use anstyle::{AnsiColor, Style};
use comfy_table::{Table, presets};
use serde::Serialize;

use crate::{args::Format, failure::Failure};

/// Where and how a command prints.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub format: Format,
    /// Colour and emoji: stdout is a terminal and `NO_COLOR` is unset.
    pub styled: bool,
}

impl Printer {
    pub fn new(format: Format) -> Self {
        let styled = anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never;
        Self { format, styled }
    }

    pub fn wide(&self) -> bool {
        self.format == Format::Wide
    }

    /// Whether records print as JSON or YAML rather than a table.
    pub fn structured(&self) -> bool {
        matches!(self.format, Format::Json | Format::Yaml)
    }

    /// Prints `value` as JSON or YAML.
    pub fn record<T: Serialize>(&self, value: &T) -> Result<(), Failure> {
        let text = match self.format {
            Format::Yaml => serde_yaml_ng::to_string(value).map_err(|e| Failure::Failed(e.to_string()))?,
            _ => serde_json::to_string_pretty(value).map_err(|e| Failure::Failed(e.to_string()))? + "\n",
        };
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        Ok(())
    }

    /// One JSON object per line (or a YAML document each), for streams.
    pub fn stream_record<T: Serialize>(&self, value: &T) -> Result<(), Failure> {
        let text = match self.format {
            Format::Yaml => {
                format!("---\n{}", serde_yaml_ng::to_string(value).map_err(|e| Failure::Failed(e.to_string()))?)
            }
            _ => serde_json::to_string(value).map_err(|e| Failure::Failed(e.to_string()))? + "\n",
        };
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
        Ok(())
    }

    /// Prints rows under `header` as aligned columns.
    pub fn table(&self, header: &[&str], rows: Vec<Vec<String>>) -> Result<(), Failure> {
        let mut table = Table::new();
        table.load_preset(presets::NOTHING).set_header(header.to_vec());
        for row in rows {
            table.add_row(row);
        }
        let mut text = String::new();
        for line in table.lines() {
            // The preset pads both sides; people expect the first column flush left.
            text.push_str(line.strip_prefix(' ').unwrap_or(&line).trim_end());
            text.push('\n');
        }
        anstream::stdout().write_all(text.as_bytes())?;
        Ok(())
    }

    /// `text` in `style`, when styling.
    pub fn paint(&self, text: &str, style: Style) -> String {
        if self.styled { format!("{style}{text}{style:#}") } else { text.to_owned() }
    }

    /// A workspace status for a table: its emoji and colour on a terminal.
    pub fn status(&self, status: &str) -> String {
        let (emoji, color) = match status {
            "online" => ("🟢", AnsiColor::Green),
            "degraded" => ("🟡", AnsiColor::Yellow),
            "provisioning" | "awaiting_agent" => ("⏳", AnsiColor::Cyan),
            "offline" => ("⚪", AnsiColor::Red),
            "failed" => ("❌", AnsiColor::Red),
            "stopping" | "stopped" => ("⏹️", AnsiColor::BrightBlack),
            "policy_stopped" => ("🚫", AnsiColor::Magenta),
            "hibernated" => ("💤", AnsiColor::Blue),
            "removed" => ("🗑️", AnsiColor::BrightBlack),
            _ => ("❔", AnsiColor::White),
        };
        if self.styled { format!("{emoji} {}", self.paint(status, color.on_default())) } else { status.to_owned() }
    }
}

/// Prints a line on stdout. A reader that went away (`agentmesh events |
/// head`) ends the command quietly, as SIGPIPE ends other Unix tools: Rust
/// ignores SIGPIPE, so `println!` would panic instead.
pub fn say(line: std::fmt::Arguments) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        std::process::exit(if error.kind() == std::io::ErrorKind::BrokenPipe { 0 } else { 1 });
    }
}

/// `println!` that ends quietly when stdout's reader went away; see [`say`].
macro_rules! say {
    ($($arg:tt)*) => { $crate::output::say(format_args!($($arg)*)) };
}

/// Whether people (not scripts) read stderr: where progress is drawn.
pub fn person_on_stderr() -> bool {
    std::io::stderr().is_terminal()
}

/// How long ago `time` was, as people say it: 5s, 3m, 2h, 4d.
pub fn age(time: Option<&prost_types::Timestamp>) -> String {
    let Some(time) = time.and_then(system_time) else { return "-".to_owned() };
    let seconds = SystemTime::now().duration_since(time).unwrap_or(Duration::ZERO).as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86_400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}

fn system_time(time: &prost_types::Timestamp) -> Option<SystemTime> {
    let seconds = u64::try_from(time.seconds).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(seconds, u32::try_from(time.nanos).unwrap_or(0)))
}

/// A timestamp as RFC 3339, for records.
pub fn rfc3339(time: Option<&prost_types::Timestamp>) -> Option<String> {
    time.map(|t| t.to_string())
}

/// The first eight characters of an id: enough to tell rows apart.
pub fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_people_say_them() {
        let ago = |seconds: i64| {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
            age(Some(&prost_types::Timestamp { seconds: now - seconds, nanos: 0 }))
        };
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(180), "3m");
        assert_eq!(ago(7_300), "2h");
        assert_eq!(ago(4 * 86_400 + 5), "4d");
        assert_eq!(age(None), "-");
    }

    #[test]
    fn unstyled_statuses_are_the_bare_words() {
        let plain = Printer { format: Format::Table, styled: false };
        assert_eq!(plain.status("policy_stopped"), "policy_stopped");
        let styled = Printer { format: Format::Table, styled: true };
        let shown = styled.status("policy_stopped");
        assert!(shown.starts_with("🚫 ") && shown.contains("\u{1b}[") && shown.contains("policy_stopped"), "{shown}");
    }
}
