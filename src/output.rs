//! Writing to standard output the way Unix tools do: when the reader goes away
//! (`fieldgate status | head -1`), the command stops quietly instead of
//! panicking on the broken pipe. Commands print through [`outln!`] / [`out!`];
//! the demo, which has a daemon to stop first, asks [`try_line`] instead.
//!
//! What they print is cleaned of control characters ([`clean`]): device names,
//! models and the daemon's messages come from outside (a BLE advertiser names
//! itself), and an escape sequence among them would be run by the technician's
//! terminal. A command that means to move the cursor says so with [`control`].

use std::fmt;
use std::io::{self, Write};

/// Writes `args` (and a newline when `newline`) to stdout and flushes. A closed
/// stdout ends the process with exit code 0: whoever read it has what it wanted.
pub fn write(args: fmt::Arguments<'_>, newline: bool) {
    if let Err(e) = try_write(args, newline) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        // Anything else (a full disk behind a redirect) is worth saying once.
        let _ = writeln!(io::stderr(), "error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Whether standard output is a pipe whose reader has gone (`fieldgate pair | head -1`
/// once `head` has its line). A command that waits between lines asks this, so that it
/// stops when nobody reads it any more rather than at its next line.
pub fn reader_gone() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the length given, and a zero timeout.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n == 1 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// Writes `text` as it is and flushes, handing any error back (a closed stdout too).
pub fn try_write_all(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Like [`write`] with a newline, but hands the error back.
pub fn try_line(args: fmt::Arguments<'_>) -> io::Result<()> {
    try_write(args, true)
}

/// `text` with every control character but newline and tab shown as its JSON escape
/// (`\u001b`), so that printing it cannot drive the terminal. The escape is JSON's so
/// that `--json` output stays JSON: serde_json leaves DEL and the C1 controls (U+0085,
/// U+009B: a CSI on some terminals) raw inside strings, and `\u0085` there means the
/// same character.
pub fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    escape(text, |c| c.is_control() && c != '\n' && c != '\t')
}

/// [`clean`] for one field of a line (a table cell, a value after its key): newlines
/// and tabs are escaped too, so a device's name cannot start a line of its own, and a
/// backslash is doubled, so a device cannot write `\u000a` to look like an escape.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('\\') {
        return escape(text, char::is_control);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

fn escape(text: &str, unwanted: impl Fn(char) -> bool) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(&unwanted) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unwanted(c) {
            // Every control character is in the Basic Multilingual Plane.
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Writes a terminal control sequence of the command's own (a progress line's
/// carriage return and erase), uncleaned; a closed stdout ends the process as
/// [`write`] does.
pub fn control(sequence: &str) {
    if let Err(e) = try_write_all(sequence) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

fn try_write(args: fmt::Arguments<'_>, newline: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match args.as_str() {
        Some(text) => out.write_all(clean(text).as_bytes())?,
        None => out.write_all(clean(&args.to_string()).as_bytes())?,
    }
    if newline {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// `println!` that ends the command quietly when stdout is closed.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::write(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::output::write(format_args!($($arg)*), true) };
}

/// `print!` that ends the command quietly when stdout is closed.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write(format_args!($($arg)*), false) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(clean("plain, with\ttab"), "plain, with\ttab");
        assert_eq!(
            clean("name\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}x\u{7f}"),
            "name\\u001b[2J\\u001b]0;pwned\\u0007\\u009bx\\u007f"
        );
        assert_eq!(clean("a\rb\nc"), "a\\u000db\nc");
        assert_eq!(one_line("a\rb\nc\td"), "a\\u000db\\u000ac\\u0009d");
        // A device's own backslash cannot pass for an escape.
        assert_eq!(one_line("x\\u000a\n"), "x\\\\u000a\\u000a");
        assert_eq!(one_line("C:\\dir"), "C:\\\\dir");
    }

    /// JSON printed through [`clean`] is still JSON, with the same strings: serde_json
    /// leaves DEL and the C1 controls raw, and their escapes here are JSON's.
    #[test]
    fn cleaned_json_is_the_same_json() {
        let v = serde_json::json!({"name": "bt\u{85}nel\u{7f}\u{9b}2J\u{1b}", "n": [1, "\n"]});
        for text in [v.to_string(), serde_json::to_string_pretty(&v).unwrap()] {
            let cleaned = clean(&text);
            assert!(
                !cleaned.chars().any(|c| c.is_control() && c != '\n'),
                "{cleaned}"
            );
            let back: serde_json::Value = serde_json::from_str(&cleaned).unwrap();
            assert_eq!(back, v);
        }
    }
}
