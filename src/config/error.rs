//! Configuration errors located in their file: the line, the column and the dotted
//! key of a mistake, found from a TOML span or from the parser's message.

use std::fmt;
use std::path::{Path, PathBuf};

use toml::Spanned;

/// A configuration error, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Line/column (1-based) of a byte offset in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// The dotted key defined on the line holding `offset`: the nearest table header
/// above it plus the `key =` on that line (or the header alone).
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text.get(..offset)?.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = text[line_start..]
        .find('\n')
        .map(|i| line_start + i)
        .unwrap_or(text.len());
    let line = text[line_start..line_end].trim();
    let header = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| h.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    if line.starts_with('[') {
        return Some(
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string(),
        );
    }
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.contains(char::is_whitespace));
    match (header, key) {
        (Some(h), Some(k)) => Some(format!("{h}.{k}")),
        (None, Some(k)) => Some(k),
        (h, None) => h,
    }
}

/// Pulls the field name out of serde messages such as "missing field `id`".
pub(super) fn key_in_message(msg: &str) -> Option<String> {
    for prefix in ["missing field `", "unknown field `", "duplicate key `"] {
        if let Some(rest) = msg.split(prefix).nth(1) {
            return rest.split('`').next().map(str::to_string);
        }
    }
    None
}

pub(super) struct Locator<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
}

impl Locator<'_> {
    pub(super) fn at<T>(
        &self,
        spanned: &Spanned<T>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        let span = spanned.span();
        let located = !(span.start == 0 && span.end == 0);
        let (line, column) = if located {
            let (l, c) = line_col(self.text, span.start);
            (Some(l), Some(c))
        } else {
            (None, None)
        };
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    /// An error about `[radio.options]` key `key`: located at the key's line inside
    /// the options table when it can be found, else at the table.
    pub(super) fn option(
        &self,
        table: &Spanned<toml::Table>,
        key: &str,
        message: String,
    ) -> ConfigError {
        let span = table.span();
        let found = (!key.is_empty())
            .then(|| {
                // A `[radio.options]` table's span is its header: read on to the
                // next header. An inline table's span is the table itself.
                let inline = self.text.get(span.clone())?.trim_start().starts_with('{');
                let end = if inline { span.end } else { self.text.len() };
                let body = self.text.get(span.start..end)?;
                let mut at = 0;
                for (n, line) in body.split_inclusive('\n').enumerate() {
                    let trimmed = line.trim_start();
                    if n > 0 && !inline && trimmed.starts_with('[') {
                        break;
                    }
                    let name = trimmed
                        .split_once('=')
                        .map(|(k, _)| k.trim().trim_matches('"'));
                    if name == Some(key) {
                        return Some(span.start + at + (line.len() - trimmed.len()));
                    }
                    at += line.len();
                }
                None
            })
            .flatten();
        let mut e = match found {
            Some(offset) => self.at(&Spanned::new(offset..offset + 1, ()), "", message),
            None => self.at(table, "", message),
        };
        e.key = Some(format!("radio.options.{key}"));
        e
    }

    /// An error at `key` for a value parsed without a span (a duration, say): located
    /// at the line that sets it when the text has one (`linger = ...` under `[store]`),
    /// else with no position (a default, or a key set inline).
    pub(super) fn nowhere(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let (line, column) = match find_key(self.text, key) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key: Some(key.to_string()),
            message: message.into(),
        }
    }
}

/// The line and column (1-based) where dotted `key` (`store.linger`,
/// `upstream.outbox.max_age`) is set in `text`: the line `name = ...` under the
/// table header `[section]`.
fn find_key(text: &str, key: &str) -> Option<(usize, usize)> {
    let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current = String::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            current = trimmed
                .trim_end()
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
            continue;
        }
        let set = trimmed
            .split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"'));
        if current == section && set == Some(name) {
            return Some((n + 1, line.len() - trimmed.len() + 1));
        }
    }
    None
}

/// The key a serde error names (`colour`, from "unknown field `colour`"), qualified
/// with the table it is in when the error's position says which (`api.colour`; a
/// missing field is reported at its table's header: `gateway.state_dir`). `whole`:
/// the error is about the document itself (a missing top-level table).
pub(super) fn qualified_key(
    text: &str,
    message: &str,
    offset: usize,
    whole: bool,
) -> Option<String> {
    let named = key_in_message(message);
    let at = key_at(text, offset);
    match (named, at) {
        (Some(k), _) if whole => Some(k),
        (Some(k), Some(at)) if at == k || at.ends_with(&format!(".{k}")) => Some(at),
        (Some(k), Some(at)) if message.contains("missing field") => Some(format!("{at}.{k}")),
        (Some(k), Some(at)) => match at.rsplit_once('.') {
            // The error is at a sibling key's line: the same table.
            Some((table, _)) => Some(format!("{table}.{k}")),
            None => Some(k),
        },
        (named, at) => named.or(at),
    }
}
