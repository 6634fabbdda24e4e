//! RAK3172 (STM32WL, RUI3 firmware) AT dialogue in LoRa P2P mode, as pure lines:
//! `Command::line` builds what to write, `AtParser` turns the bytes read back into events.
//!
//! The module answers every command with a status line (`OK`, `AT_ERROR`, `AT_PARAM_ERROR`,
//! `AT_BUSY_ERROR`, `AT_NO_NETWORK_JOINED`, ...) and reports radio activity with unsolicited
//! `+EVT:` lines. A received frame comes in one of two shapes, both handled:
//! - RUI3: `+EVT:RXP2P:<rssi>:<snr>:<hex>` (parsed leniently: the last field is the payload,
//!   the first two numbers in between are RSSI and SNR, so a firmware that adds a length
//!   field or writes `RSSI -52` still parses);
//! - pre-RUI3 RAK3172 firmware: `+EVT:RXP2P, RSSI -60, SNR 11` then `+EVT:<hex>`.
//!
//! A reset prints a banner (`RAKwireless RAK3172...`, dashes, `Version: ...`,
//! `Current Work Mode: LoRa P2P.`); the driver uses it to re-probe.
//!
//! P2P encryption (RUI3 4.0.6 and later, RUI3 AT command manual, "P2P Instructions"):
//! `AT+ENCRY=<0|1>` (read back with `AT+ENCRY=?`, answered `AT+ENCRY=1`), `AT+ENCKEY=<32 hex>`
//! and `AT+CRYPIV=<32 hex>` (16 bytes each; older RUI3 took an 8-byte key). A firmware that
//! lacks them answers `AT_COMMAND_NOT_FOUND` (or `AT_ERROR`). The key and IV are secrets:
//! [`Command`]'s `Debug` hides them, and [`redact`] masks them in any line before it is
//! logged (a module with echo on sends the command back). Lines end in CR, LF or
//! both. Bytes that are not printable ASCII, and lines longer than `MAX_LINE`, are dropped
//! and reported as `Event::Garbage` so the driver can count them; the parser then resyncs
//! at the next line end. Owns no timing or request matching (that is the driver's session).

use crate::types::{hex_decode, hex_encode};

/// Longest line kept: a 256-byte payload is 512 hex digits plus the event prefix.
pub const MAX_LINE: usize = 600;

/// Junk without a line end is reported every this many bytes: a modem (or a wrong
/// device) that never sends one is seen, not waited on.
pub const JUNK_REPORT: usize = 4096;

/// What the module reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `OK`: the last command succeeded (for PSEND/PRECV: it started).
    Ok,
    /// An `AT_...` status: the last command failed.
    Error(StatusError),
    /// A received P2P frame.
    RxP2p {
        rssi: i16,
        snr: i16,
        payload: Vec<u8>,
    },
    /// `+EVT:RXP2P RECEIVE TIMEOUT`: an RX window closed with nothing heard.
    RxTimeout,
    /// `+EVT:RXP2P RECEIVE ERROR`: a frame was heard but failed (CRC, header).
    RxError,
    /// `+EVT:TXP2P DONE`: PSEND finished transmitting.
    TxDone,
    /// Another `+EVT:` line, without the prefix.
    OtherEvent(String),
    /// A line starting with `AT`: a query answer (`AT+P2P=868000000:7:125:0:10:14`) or the echo
    /// of a command.
    Reply(String),
    /// A reset banner line (`RAKwireless ...`, dashes, `Version: ...`).
    Banner(String),
    /// `Current Work Mode: ...`, the banner's last line.
    WorkMode(WorkMode),
    /// Any other printable line (old firmware answers a query with the bare value).
    Text(String),
    /// Bytes dropped while resyncing: non-printable bytes, an overlong line, or a P2P
    /// header line whose payload line never came.
    Garbage { bytes: usize },
}

/// Failure statuses of RUI3 (and of the older RAK3172 firmware).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusError {
    /// `AT_ERROR`
    Generic,
    /// `AT_PARAM_ERROR`
    Param,
    /// `AT_BUSY_ERROR`: e.g. TX or a setting while in RX; send `AT+PRECV=0` first.
    Busy,
    /// `AT_TEST_PARAM_OVERFLOW`
    ParamOverflow,
    /// `AT_NO_CLASSB_ENABLE`
    NoClassB,
    /// `AT_NO_NETWORK_JOINED`
    NoNetworkJoined,
    /// `AT_RX_ERROR`
    Rx,
    /// `AT_MODE_NO_SUPPORT`: the command does not exist in the current work mode.
    ModeNotSupported,
    /// `AT_DUTYCYCLE_RESTRICTED`
    DutyCycle,
    /// `AT_CRYPTO_ERROR`
    Crypto,
    /// `AT_COMMAND_NOT_FOUND`: the firmware has no such command.
    CommandNotFound,
    /// Any other `AT_...ERROR` / `AT_...` status.
    Other(String),
}

/// The module's network work mode (`AT+NWM`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkMode {
    P2p,
    LoRaWan,
    Fsk,
    Other(String),
}

/// A command to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `AT`: is the module there?
    Ping,
    /// `AT+VER=?`
    Version,
    /// `ATZ`: reset (answered by a banner, not a status).
    Reset,
    /// `AT+NWM=0|1|2`: the module restarts when the mode changes.
    NetworkMode(NetworkMode),
    /// `AT+NWM=?`: answered `AT+NWM=<n>` then `OK`.
    QueryNetworkMode,
    /// `AT+P2P=freq:sf:bw:cr:preamble:power`.
    P2p(P2pConfig),
    /// `AT+P2P=?`
    QueryP2p,
    /// `AT+PRECV=...`
    Receive(RxMode),
    /// `AT+PSEND=<hex>`: 1..=256 bytes.
    Send(Vec<u8>),
    /// `AT+SYNCWORD=<hex4>`: 0x3444 hears LoRaWAN (public network), 0x1234 is the P2P default.
    SyncWord(u16),
    /// `AT+ENCRY=0|1`: P2P encryption off or on.
    Encryption(bool),
    /// `AT+ENCRY=?`: answered `AT+ENCRY=<0|1>` then `OK`.
    QueryEncryption,
    /// `AT+ENCKEY=<32 hex>`: the P2P encryption key.
    EncryptionKey(Secret16),
    /// `AT+CRYPIV=<32 hex>`: the P2P encryption IV.
    EncryptionIv(Secret16),
}

/// 16 secret bytes (a P2P key or IV): compared and cloned like bytes, never shown by
/// `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret16(pub [u8; 16]);

impl std::fmt::Debug for Secret16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret16(<redacted>)")
    }
}

/// The commands whose value is a secret.
const SECRET_COMMANDS: [&str; 2] = ["AT+ENCKEY=", "AT+CRYPIV="];

/// `line` with the value of a secret-bearing command (`AT+ENCKEY=`, `AT+CRYPIV=`, in a
/// command, its echo or a query's answer) replaced by `<redacted>`; any other line as it is.
/// A query (`=?`) is kept: it holds nothing.
pub fn redact(line: &str) -> std::borrow::Cow<'_, str> {
    let upper = line.trim_start().to_ascii_uppercase();
    for prefix in SECRET_COMMANDS {
        if let Some(value) = upper.strip_prefix(prefix) {
            if value.trim() != "?" && !value.trim().is_empty() {
                return format!("{prefix}<redacted>").into();
            }
        }
    }
    line.into()
}

/// `AT+NWM` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    P2p = 0,
    LoRaWan = 1,
    Fsk = 2,
}

/// LoRa P2P radio settings (RUI3 `AT+P2P`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct P2pConfig {
    /// 150 MHz..=960 MHz.
    pub freq_hz: u32,
    /// Spreading factor 5..=12.
    pub sf: u8,
    /// Bandwidth in kHz: 125, 250 or 500 (RUI3 takes kHz; some old firmware took an index).
    pub bw_khz: u16,
    /// Coding rate 0..=3 for 4/5..4/8.
    pub cr: u8,
    /// Preamble length in symbols, 2..=65535.
    pub preamble: u16,
    /// TX power in dBm, 5..=22.
    pub tx_power_dbm: u8,
}

/// `AT+PRECV` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxMode {
    /// 0: stop receiving, back to TX mode.
    Stop,
    /// 1..=65533 ms: one window, ended by a frame or `+EVT:RXP2P RECEIVE TIMEOUT`.
    Window(u16),
    /// 65534: receive until `AT+PRECV=0`.
    Continuous,
    /// 65535: receive until one frame arrives.
    UntilPacket,
}

/// A command that cannot be sent as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("{field} = {value} is outside {range}")]
    OutOfRange {
        field: &'static str,
        value: u32,
        range: &'static str,
    },
    #[error("PSEND payload of {0} bytes: 1..=256 allowed")]
    PayloadLength(usize),
}

fn check(
    field: &'static str,
    value: u32,
    ok: bool,
    range: &'static str,
) -> Result<(), CommandError> {
    if ok {
        Ok(())
    } else {
        Err(CommandError::OutOfRange {
            field,
            value,
            range,
        })
    }
}

impl Command {
    /// The line to write, CR LF included.
    pub fn line(&self) -> Result<String, CommandError> {
        let body = match self {
            Command::Ping => "AT".to_string(),
            Command::Version => "AT+VER=?".to_string(),
            Command::Reset => "ATZ".to_string(),
            Command::NetworkMode(m) => format!("AT+NWM={}", *m as u8),
            Command::QueryNetworkMode => "AT+NWM=?".to_string(),
            Command::P2p(c) => {
                check(
                    "freq_hz",
                    c.freq_hz,
                    (150_000_000..=960_000_000).contains(&c.freq_hz),
                    "150..=960 MHz",
                )?;
                check("sf", c.sf.into(), (5..=12).contains(&c.sf), "5..=12")?;
                check(
                    "bw_khz",
                    c.bw_khz.into(),
                    matches!(c.bw_khz, 125 | 250 | 500),
                    "125, 250, 500",
                )?;
                check("cr", c.cr.into(), c.cr <= 3, "0..=3")?;
                check("preamble", c.preamble.into(), c.preamble >= 2, "2..=65535")?;
                check(
                    "tx_power_dbm",
                    c.tx_power_dbm.into(),
                    (5..=22).contains(&c.tx_power_dbm),
                    "5..=22",
                )?;
                format!(
                    "AT+P2P={}:{}:{}:{}:{}:{}",
                    c.freq_hz, c.sf, c.bw_khz, c.cr, c.preamble, c.tx_power_dbm
                )
            }
            Command::QueryP2p => "AT+P2P=?".to_string(),
            Command::Receive(mode) => {
                let ms = match *mode {
                    RxMode::Stop => 0,
                    RxMode::Window(ms) => {
                        check(
                            "rx window ms",
                            ms.into(),
                            (1..=65533).contains(&ms),
                            "1..=65533",
                        )?;
                        ms
                    }
                    RxMode::Continuous => 65534,
                    RxMode::UntilPacket => 65535,
                };
                format!("AT+PRECV={ms}")
            }
            Command::Send(payload) => {
                if payload.is_empty() || payload.len() > 256 {
                    return Err(CommandError::PayloadLength(payload.len()));
                }
                format!("AT+PSEND={}", hex_encode(payload).to_ascii_uppercase())
            }
            Command::SyncWord(w) => format!("AT+SYNCWORD={w:04X}"),
            Command::Encryption(on) => format!("AT+ENCRY={}", u8::from(*on)),
            Command::QueryEncryption => "AT+ENCRY=?".to_string(),
            Command::EncryptionKey(k) => {
                format!("AT+ENCKEY={}", hex_encode(&k.0).to_ascii_uppercase())
            }
            Command::EncryptionIv(iv) => {
                format!("AT+CRYPIV={}", hex_encode(&iv.0).to_ascii_uppercase())
            }
        };
        Ok(body + "\r\n")
    }

    /// The line without its end, secrets masked ([`redact`]): what logs and errors show.
    pub fn shown(&self) -> String {
        match self.line() {
            Ok(line) => redact(line.trim_end()).into_owned(),
            Err(e) => format!("<{e}>"),
        }
    }
}

/// Bytes from the module in, events out. Keeps only the partial line and a pending
/// two-line RX header between calls.
#[derive(Debug, Default)]
pub struct AtParser {
    line: Vec<u8>,
    /// Non-printable bytes dropped since the last line end.
    noise: usize,
    /// The current line grew past MAX_LINE: it is dropped whole at its end.
    overlong: usize,
    /// Junk already reported (a line that never ends): the rest up to the next line end
    /// is dropped, its bytes counted here.
    skipping: Option<usize>,
    /// Old-firmware RX header waiting for its payload line.
    pending_rx: Option<(i16, i16)>,
}

impl AtParser {
    pub fn new() -> AtParser {
        AtParser::default()
    }

    /// Bytes of a line not ended yet.
    pub fn buffered(&self) -> usize {
        self.line.len() + self.overlong + self.noise + self.skipping.unwrap_or(0)
    }

    /// The line went quiet half-way: drops the partial line and says how many bytes were
    /// dropped.
    pub fn drop_partial(&mut self) -> usize {
        let dropped = self.buffered();
        self.line.clear();
        self.overlong = 0;
        self.noise = 0;
        self.skipping = None;
        dropped
    }

    /// Feeds bytes as they arrive (any chunking) and returns the events completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                b'\r' | b'\n' => self.end_line(&mut out),
                _ if self.skipping.is_some() => {
                    if let Some(n) = self.skipping.as_mut() {
                        *n += 1;
                        // A line that never ends is reported as it goes, not only at an
                        // end that may never come.
                        if *n >= JUNK_REPORT {
                            out.push(Event::Garbage { bytes: *n });
                            *n = 0;
                        }
                    }
                }
                0x20..=0x7e if self.line.len() < MAX_LINE => self.line.push(b),
                0x20..=0x7e => self.overlong += 1,
                // Noise (a reset glitch, a wrong baud rate): drop what the line had so far
                // and start again after it, so a status right after noise still parses.
                _ => {
                    self.noise += self.line.len() + self.overlong + 1;
                    self.line.clear();
                    self.overlong = 0;
                }
            }
            if self.noise + self.overlong >= JUNK_REPORT {
                out.push(Event::Garbage {
                    bytes: self.noise + self.overlong + self.line.len(),
                });
                self.line.clear();
                self.noise = 0;
                self.overlong = 0;
                self.pending_rx = None;
                self.skipping = Some(0);
            }
        }
        out
    }

    fn end_line(&mut self, out: &mut Vec<Event>) {
        if let Some(rest) = self.skipping.take() {
            if rest > 0 {
                out.push(Event::Garbage { bytes: rest });
            }
            return;
        }
        let noise = std::mem::take(&mut self.noise);
        let overlong = std::mem::take(&mut self.overlong);
        let line = std::mem::take(&mut self.line);
        if overlong > 0 {
            // An overlong line is refused whole.
            out.push(Event::Garbage {
                bytes: noise + line.len() + overlong,
            });
            self.pending_rx = None;
            return;
        }
        if noise > 0 {
            out.push(Event::Garbage { bytes: noise });
        }
        // Only printable ASCII was kept, so this cannot fail.
        let Ok(text) = std::str::from_utf8(&line) else {
            return;
        };
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        if let Some((rssi, snr)) = self.pending_rx.take() {
            if let Some(hex) = text.strip_prefix("+EVT:") {
                if let Ok(payload) = hex_decode(hex) {
                    out.push(Event::RxP2p { rssi, snr, payload });
                    return;
                }
            }
            // The payload line never came; report the header as lost and go on.
            out.push(Event::Garbage { bytes: 0 });
        }
        match parse_line(text) {
            LineKind::Event(e) => out.push(e),
            LineKind::RxHeader { rssi, snr } => self.pending_rx = Some((rssi, snr)),
        }
    }
}

enum LineKind {
    Event(Event),
    /// Old-firmware `+EVT:RXP2P, RSSI x, SNR y`, payload on the next line.
    RxHeader {
        rssi: i16,
        snr: i16,
    },
}

fn parse_line(text: &str) -> LineKind {
    use LineKind::Event as E;
    if text == "OK" {
        return E(Event::Ok);
    }
    if text.starts_with("AT_") {
        return E(Event::Error(status_error(text)));
    }
    if let Some(evt) = text.strip_prefix("+EVT:") {
        return parse_event(evt);
    }
    if text.starts_with("AT") {
        return E(Event::Reply(text.to_string()));
    }
    if let Some(mode) = text.strip_prefix("Current Work Mode:") {
        let mode = mode.trim().trim_end_matches('.');
        return E(Event::WorkMode(match mode {
            "LoRa P2P" => WorkMode::P2p,
            "LoRaWAN" => WorkMode::LoRaWan,
            "FSK" | "LoRa FSK" => WorkMode::Fsk,
            other => WorkMode::Other(other.to_string()),
        }));
    }
    let is_rule = text.len() >= 8 && text.bytes().all(|b| matches!(b, b'-' | b'='));
    if text.starts_with("RAKwireless") || text.starts_with("Version:") || is_rule {
        return E(Event::Banner(text.to_string()));
    }
    E(Event::Text(text.to_string()))
}

fn status_error(text: &str) -> StatusError {
    match text {
        "AT_ERROR" => StatusError::Generic,
        "AT_PARAM_ERROR" => StatusError::Param,
        "AT_BUSY_ERROR" => StatusError::Busy,
        "AT_TEST_PARAM_OVERFLOW" => StatusError::ParamOverflow,
        "AT_NO_CLASSB_ENABLE" | "AT_NO_CLASS_B_ENABLE" => StatusError::NoClassB,
        "AT_NO_NETWORK_JOINED" => StatusError::NoNetworkJoined,
        "AT_RX_ERROR" => StatusError::Rx,
        "AT_MODE_NO_SUPPORT" => StatusError::ModeNotSupported,
        "AT_DUTYCYCLE_RESTRICTED" => StatusError::DutyCycle,
        "AT_CRYPTO_ERROR" => StatusError::Crypto,
        "AT_COMMAND_NOT_FOUND" => StatusError::CommandNotFound,
        other => StatusError::Other(other.to_string()),
    }
}

fn parse_event(evt: &str) -> LineKind {
    use LineKind::Event as E;
    match evt {
        "TXP2P DONE" => return E(Event::TxDone),
        "RXP2P RECEIVE TIMEOUT" => return E(Event::RxTimeout),
        "RXP2P RECEIVE ERROR" => return E(Event::RxError),
        _ => {}
    }
    if let Some(rest) = evt.strip_prefix("RXP2P") {
        if let Some(fields) = rest.strip_prefix(':') {
            // RUI3: fields separated by ':', payload last.
            if let Some((numbers, hex)) = fields.rsplit_once(':') {
                let mut nums = numbers.split(':').filter_map(first_int);
                if let (Some(rssi), Some(snr), Ok(payload)) =
                    (nums.next(), nums.next(), hex_decode(hex))
                {
                    return E(Event::RxP2p { rssi, snr, payload });
                }
            }
        } else if rest.starts_with(',') || rest.starts_with(' ') {
            // Old firmware: ", RSSI -60, SNR 11", payload on the next line.
            let mut nums = rest.split(',').filter_map(first_int);
            if let (Some(rssi), Some(snr)) = (nums.next(), nums.next()) {
                return LineKind::RxHeader { rssi, snr };
            }
        }
    }
    E(Event::OtherEvent(evt.to_string()))
}

/// The first signed integer in `s` ("RSSI -52" -> -52, "-40" -> -40).
fn first_int(s: &str) -> Option<i16> {
    let start = s.find(|c: char| c.is_ascii_digit() || c == '-')?;
    let tail = &s[start..];
    let end = tail
        .char_indices()
        .skip(1)
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(tail.len(), |(i, _)| i);
    tail[..end].parse().ok()
}

#[cfg(feature = "emulator")]
pub mod emulator;
#[cfg(test)]
mod tests;
