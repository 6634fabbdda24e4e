//! A toy line protocol for the session's tests: `R...` lines are replies, anything else is
//! unsolicited; a line longer than 16 bytes, or one cut off by a quiet line, is a line error.

use std::time::Duration;

use super::{Expect, Frame, FrameParser};

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Line(pub(super) String);

impl Frame for Line {
    fn is_reply(&self) -> bool {
        self.0.starts_with('R')
    }
    fn describe(&self) -> String {
        self.0.clone()
    }
}

#[derive(Default)]
pub(super) struct Lines {
    buf: Vec<u8>,
    errors: u64,
}

impl FrameParser for Lines {
    type Frame = Line;
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
    fn next_frame(&mut self) -> Option<Line> {
        loop {
            let end = self.buf.iter().position(|b| *b == b'\n')?;
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            if line.len() > 17 {
                self.errors += 1;
                continue;
            }
            return Some(Line(String::from_utf8_lossy(&line[..end]).into_owned()));
        }
    }
    fn buffered(&self) -> usize {
        self.buf.len()
    }
    fn flush_stalled(&mut self) -> Vec<Line> {
        self.errors += 1;
        self.buf.clear();
        Vec::new()
    }
    fn line_errors(&self) -> u64 {
        self.errors
    }
}

pub(super) fn line(s: &str) -> Line {
    Line(s.to_string())
}

pub(super) const SECOND: Duration = Duration::from_secs(1);

pub(super) fn reply_to(name: &'static str) -> Expect<Line> {
    Expect::reply(SECOND, move |f: &Line| f.0 == format!("R{name}"))
}
