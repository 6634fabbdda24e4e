//! Log lines for the systemd journal, sent over its native protocol.
//!
//! Each event becomes one journal entry whose `MESSAGE` is the event's message followed
//! by its fields as `key=value` (what `journalctl -u fieldgate` and `systemctl status`
//! show, so "radio down" says which radio and why), with the fields also as their own
//! journal fields, `F_<NAME>` (for `journalctl F_RADIO=zigbee0`), and the level as
//! `PRIORITY`.

use std::fmt::{self, Write as _};
use std::os::unix::net::UnixDatagram;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

/// Where journald listens for native-protocol datagrams.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Longest `MESSAGE` sent; longer ones are cut (a datagram has to fit).
const MAX_MESSAGE: usize = 16 * 1024;

pub struct JournalLayer {
    socket: UnixDatagram,
    identifier: String,
}

impl JournalLayer {
    /// A layer sending to the journal; fails when the journal's socket cannot be used.
    pub fn new(identifier: &str) -> std::io::Result<JournalLayer> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(JOURNAL_SOCKET)?;
        Ok(JournalLayer {
            socket,
            identifier: identifier.to_string(),
        })
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let entry = entry(event, &self.identifier);
        // Nothing to tell if the journal is gone: the process goes on.
        let _ = self.socket.send(&entry);
    }
}

/// The journal entry for `event`, in the native protocol's length-prefixed form.
fn entry(event: &Event<'_>, identifier: &str) -> Vec<u8> {
    let mut fields = Fields::default();
    event.record(&mut fields);
    let meta = event.metadata();
    let mut out = Vec::with_capacity(256);
    put(&mut out, "PRIORITY", priority(*meta.level()));
    put(&mut out, "SYSLOG_IDENTIFIER", identifier);
    put(&mut out, "TARGET", meta.target());
    put(&mut out, "MESSAGE", &message_line(&fields));
    for (name, value) in &fields.pairs {
        put(&mut out, &format!("F_{}", name.to_ascii_uppercase()), value);
    }
    out
}

/// The message, then each field as `key=value` (quoted when it has spaces).
fn message_line(fields: &Fields) -> String {
    let mut line = fields.message.clone();
    for (name, value) in &fields.pairs {
        let quote = value.is_empty() || value.contains(char::is_whitespace);
        let _ = if quote {
            write!(line, " {name}={value:?}")
        } else {
            write!(line, " {name}={value}")
        };
    }
    if line.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

fn priority(level: Level) -> &'static str {
    match level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "6",
        Level::DEBUG | Level::TRACE => "7",
    }
}

/// One field in the native protocol's binary-safe form: the name, a newline, the
/// value's length as a little-endian u64, the value, a newline.
fn put(out: &mut Vec<u8>, name: &str, value: &str) {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

#[derive(Default)]
struct Fields {
    message: String,
    pairs: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.pairs
                .push((field.name().to_string(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.pairs.push((field.name().to_string(), text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::prelude::*;

    /// Captures the entries a layer would send.
    struct Capture(Arc<Mutex<Vec<Vec<u8>>>>);

    impl<S: Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            self.0.lock().unwrap().push(entry(event, "fieldgate"));
        }
    }

    /// Decodes an entry back into (name, value) pairs.
    fn decode(mut b: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Some(nl) = b.iter().position(|c| *c == b'\n') {
            let name = String::from_utf8(b[..nl].to_vec()).unwrap();
            let len = u64::from_le_bytes(b[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let value = String::from_utf8(b[nl + 9..nl + 9 + len].to_vec()).unwrap();
            assert_eq!(b[nl + 9 + len], b'\n');
            out.push((name, value));
            b = &b[nl + 10 + len..];
        }
        out
    }

    #[test]
    fn the_message_names_its_subject_and_the_fields_stay_fields() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(got.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let radio = "zigbee0";
            let error = "cannot open serial port /dev/ttyUSB0: No such file or directory";
            tracing::warn!(radio = %radio, error = %error, attempt = 3, "radio down");
        });
        let entries = got.lock().unwrap();
        let fields = decode(&entries[0]);
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("PRIORITY").as_deref(), Some("4"));
        assert_eq!(get("SYSLOG_IDENTIFIER").as_deref(), Some("fieldgate"));
        assert_eq!(
            get("MESSAGE").as_deref(),
            Some(
                "radio down radio=zigbee0 error=\"cannot open serial port /dev/ttyUSB0: No such file or directory\" attempt=3"
            )
        );
        assert_eq!(get("F_RADIO").as_deref(), Some("zigbee0"));
        assert_eq!(get("F_ATTEMPT").as_deref(), Some("3"));
    }

    #[test]
    fn a_value_with_a_newline_stays_one_field() {
        let mut out = Vec::new();
        put(&mut out, "MESSAGE", "two\nlines");
        assert_eq!(
            decode(&out),
            [("MESSAGE".to_string(), "two\nlines".to_string())]
        );
    }
}
