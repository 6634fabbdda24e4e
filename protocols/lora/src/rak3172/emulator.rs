//! Device-side RAK3172 emulator (feature `emulator`): the module's side of the RUI3 AT
//! dialogue in LoRa P2P mode, with P2P sensors on the air around it. Pure: bytes and the
//! time in, bytes out; the caller pumps a link (PTY, TCP, in-process pipe) and a clock.
//!
//! What it does as the module does (RUI3 AT manual, the RAK3172 P2P quick start):
//! - every command is answered with a status line; queries first with `AT+...=<value>`;
//! - `AT+NWM=<n>` that changes the work mode restarts the module; `ATZ` restarts it; a
//!   restart prints the boot banner after a short silence, and receiving stops (the work
//!   mode and the P2P settings are kept, as RUI3 keeps them in flash);
//! - P2P commands in LoRaWAN mode answer `AT_MODE_NO_SUPPORT`;
//! - while receiving (`AT+PRECV` not 0) or transmitting, settings and `AT+PSEND` answer
//!   `AT_BUSY_ERROR`; `AT+PRECV=0` stops receiving;
//! - `AT+PSEND` answers `OK`, then `+EVT:TXP2P DONE` after the air time;
//! - a frame on the air is heard only while receiving on its frequency, spreading factor
//!   and bandwidth; it is printed in the RUI3 format or the pre-RUI3 two-line format.
//!
//! - P2P encryption (`AT+ENCRY`, `AT+ENCKEY`, `AT+CRYPIV`, RUI3 4.0.6+): with it on, what
//!   the module transmits is enciphered with its key and IV, and what it hears is
//!   deciphered with them before it is printed, whoever sent it: a frame sent in the clear
//!   or under another key comes out as the bytes the module made of it. A firmware without
//!   these commands ([`EmulatorConfig::encryption_commands`] false) answers
//!   `AT_COMMAND_NOT_FOUND`. Settings change only while not receiving (`AT_BUSY_ERROR`).
//!
//! RUI3 does not document its P2P cipher; this emulator stands in for it with AES-128-CTR
//! (the key, the IV as the initial counter block), which keeps a payload's length as the
//! module does. Only the emulated senders and the emulated module have to agree on it; the
//! gateway never sees the cipher, only what the module hands up.
//!
//! Faults a test can inject: the next commands answered `AT_BUSY_ERROR` whatever they are,
//! a spontaneous restart (brown-out, watchdog), and a restart that loses the P2P settings
//! (encryption included), as after a firmware update.

use std::time::Duration;

use aes::cipher::{KeyIvInit, StreamCipher};

use super::P2pConfig;
use crate::types::{hex_decode, hex_encode};

/// A P2P encryption key and IV (`AT+ENCKEY`, `AT+CRYPIV`), as an emulated sender or the
/// emulated module holds them.
#[derive(Clone, PartialEq, Eq)]
pub struct P2pCipher {
    pub key: [u8; 16],
    pub iv: [u8; 16],
}

impl std::fmt::Debug for P2pCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("P2pCipher(<redacted>)")
    }
}

impl P2pCipher {
    /// Enciphers or deciphers `data` in place (the stand-in for the module's cipher:
    /// AES-128-CTR, the IV as the initial counter block; the same operation both ways).
    pub fn apply(&self, data: &mut [u8]) {
        let mut c = ctr::Ctr128BE::<aes::Aes128>::new(&self.key.into(), &self.iv.into());
        c.apply_keystream(data);
    }
}

/// Which firmware's output to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// `+EVT:RXP2P:<rssi>:<snr>:<hex>`.
    Rui3,
    /// `+EVT:RXP2P, RSSI <rssi>, SNR <snr>` then `+EVT:<hex>`.
    Legacy,
}

/// A P2P sensor near the module: it sends `id` (4 bytes, big-endian) followed by a
/// Cayenne LPP temperature (channel 1) and humidity (channel 2) every `interval`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    pub id: u32,
    pub freq_hz: u32,
    pub sf: u8,
    pub bw_khz: u16,
    pub interval: Duration,
    pub rssi: i16,
    pub snr: i16,
    /// The key it enciphers its frames with; in the clear when `None`.
    pub cipher: Option<P2pCipher>,
}

impl Sensor {
    /// The payload of its `n`-th frame: 21.0 °C + n/10 (wrapping every 10 °C), 40 % + n.
    pub fn payload(&self, n: u32) -> Vec<u8> {
        let mut p = self.id.to_be_bytes().to_vec();
        let deci = 210 + (n % 100) as i16;
        p.extend_from_slice(&[0x01, 0x67]);
        p.extend_from_slice(&deci.to_be_bytes());
        p.extend_from_slice(&[0x02, 0x68, (80 + (n % 40) * 2) as u8]);
        p
    }
}

#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub firmware: Firmware,
    pub sensors: Vec<Sensor>,
    /// How long a PSEND takes on air before `+EVT:TXP2P DONE`.
    pub airtime: Duration,
    /// How long a restart stays silent before the banner.
    pub boot_time: Duration,
    /// The module's settings at power-up.
    pub p2p: P2pConfig,
    /// Work mode at power-up (`AT+NWM`): 0 P2P, 1 LoRaWAN.
    pub work_mode: u8,
    /// Whether the firmware has `AT+ENCRY`, `AT+ENCKEY` and `AT+CRYPIV` (RUI3 4.0.6+).
    pub encryption_commands: bool,
    /// Command echo (`ATE`): every command line is sent back before its answer.
    pub echo: bool,
}

/// 868.0 MHz, SF7, 125 kHz, 4/5, preamble 8, 14 dBm: the P2P settings of the examples.
pub const DEFAULT_P2P: P2pConfig = P2pConfig {
    freq_hz: 868_000_000,
    sf: 7,
    bw_khz: 125,
    cr: 0,
    preamble: 8,
    tx_power_dbm: 14,
};

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            firmware: Firmware::Rui3,
            sensors: vec![Sensor {
                id: 0x0a0b_0c01,
                freq_hz: DEFAULT_P2P.freq_hz,
                sf: DEFAULT_P2P.sf,
                bw_khz: DEFAULT_P2P.bw_khz,
                interval: Duration::from_secs(5),
                rssi: -71,
                snr: 9,
                cipher: None,
            }],
            airtime: Duration::from_millis(60),
            boot_time: Duration::from_millis(150),
            p2p: DEFAULT_P2P,
            // A module from the factory is in LoRaWAN mode.
            work_mode: 1,
            encryption_commands: true,
            echo: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rx {
    Off,
    /// A window ending at this time.
    Until(Duration),
    Continuous,
    UntilPacket,
}

/// Faults to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The next `n` commands (other than `AT` and `ATZ`) answer `AT_BUSY_ERROR`.
    Busy(u32),
    /// The module restarts on its own.
    Reset,
    /// The module restarts with its P2P settings back at their power-up values and
    /// encryption off (a firmware update, `ATR` typed by someone).
    SettingsLost,
}

/// What happened, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub commands: u64,
    /// Frames printed to the host.
    pub heard: u64,
    /// Frames on the air the module did not hear (not receiving, or other settings).
    pub missed: u64,
    pub busy_answers: u64,
    pub restarts: u64,
    /// Payloads transmitted with `AT+PSEND`, in order, as the host gave them.
    pub sent: Vec<Vec<u8>>,
    /// The same payloads as they went on the air (enciphered when encryption was on).
    pub sent_on_air: Vec<Vec<u8>>,
    /// `AT+ENCKEY=` commands taken.
    pub key_writes: u64,
}

pub struct Emulator {
    config: EmulatorConfig,
    work_mode: u8,
    p2p: P2pConfig,
    sync_word: u16,
    /// `AT+ENCRY`.
    encrypt: bool,
    /// `AT+ENCKEY` and `AT+CRYPIV` (zeros until set).
    cipher: P2pCipher,
    rx: Rx,
    tx_done_at: Option<Duration>,
    booting_until: Option<Duration>,
    busy_left: u32,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Per sensor: its next frame's time and number.
    schedule: Vec<(Duration, u32)>,
    stats: Stats,
}

const BANNER_VERSION: &str = "RUI_4.0.6_RAK3172-E";

impl Emulator {
    pub fn new(config: EmulatorConfig) -> Emulator {
        let schedule = config.sensors.iter().map(|s| (s.interval, 0)).collect();
        Emulator {
            work_mode: config.work_mode,
            p2p: config.p2p,
            sync_word: 0x1234,
            encrypt: false,
            cipher: P2pCipher {
                key: [0; 16],
                iv: [0; 16],
            },
            rx: Rx::Off,
            tx_done_at: None,
            booting_until: None,
            busy_left: 0,
            input: Vec::new(),
            output: Vec::new(),
            schedule,
            stats: Stats::default(),
            config,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The P2P settings now.
    pub fn p2p(&self) -> P2pConfig {
        self.p2p
    }

    pub fn work_mode(&self) -> u8 {
        self.work_mode
    }

    pub fn sync_word(&self) -> u16 {
        self.sync_word
    }

    /// `AT+ENCRY` now, and whether the module's key and IV are `cipher`.
    pub fn encryption(&self, cipher: &P2pCipher) -> (bool, bool) {
        (self.encrypt, self.cipher == *cipher)
    }

    /// Whether the radio is listening now.
    pub fn receiving(&self) -> bool {
        self.rx != Rx::Off
    }

    /// Receiving until told to stop (`AT+PRECV=65534`).
    pub fn receiving_continuously(&self) -> bool {
        self.rx == Rx::Continuous
    }

    /// Bytes to send to the host.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// The next time [`tick`](Emulator::tick) has something to do.
    pub fn next_deadline(&self) -> Option<Duration> {
        let rx = match self.rx {
            Rx::Until(t) => Some(t),
            _ => None,
        };
        let sensors = self.schedule.iter().map(|(t, _)| *t).min();
        [self.tx_done_at, self.booting_until, rx, sensors]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn inject(&mut self, now: Duration, fault: Fault) {
        match fault {
            Fault::Busy(n) => self.busy_left = self.busy_left.saturating_add(n),
            Fault::Reset => self.restart(now),
            Fault::SettingsLost => {
                self.p2p = self.config.p2p;
                self.sync_word = 0x1234;
                self.encrypt = false;
                self.cipher = P2pCipher {
                    key: [0; 16],
                    iv: [0; 16],
                };
                self.restart(now);
            }
        }
    }

    /// A frame on the air now: printed if the module hears it. Returns whether it did.
    pub fn air_frame(&mut self, freq_hz: u32, sf: u8, bw_khz: u16, frame: AirFrame) -> bool {
        let tuned = self.p2p.freq_hz == freq_hz && self.p2p.sf == sf && self.p2p.bw_khz == bw_khz;
        let listening = self.booting_until.is_none()
            && self.work_mode == 0
            && self.tx_done_at.is_none()
            && self.rx != Rx::Off;
        if !(tuned && listening) {
            self.stats.missed += 1;
            return false;
        }
        self.stats.heard += 1;
        let mut payload = frame.payload;
        if self.encrypt {
            // Deciphered with the module's key, whatever the sender used.
            self.cipher.apply(&mut payload);
        }
        let hex = hex_encode(&payload).to_ascii_uppercase();
        match self.config.firmware {
            Firmware::Rui3 => self.line(&format!("+EVT:RXP2P:{}:{}:{hex}", frame.rssi, frame.snr)),
            Firmware::Legacy => {
                self.line(&format!(
                    "+EVT:RXP2P, RSSI {}, SNR {}",
                    frame.rssi, frame.snr
                ));
                self.line(&format!("+EVT:{hex}"));
            }
        }
        if self.rx == Rx::UntilPacket || matches!(self.rx, Rx::Until(_)) {
            self.rx = Rx::Off;
        }
        true
    }

    /// Time passes: restarts finish, transmissions end, RX windows close, sensors send.
    pub fn tick(&mut self, now: Duration) {
        if self.booting_until.is_some_and(|t| now >= t) {
            self.booting_until = None;
            self.line("RAKwireless RAK3172-E Example");
            self.line("------------------------------------------------------");
            self.line(&format!("Version: {BANNER_VERSION}"));
            let mode = match self.work_mode {
                0 => "LoRa P2P",
                1 => "LoRaWAN",
                _ => "LoRa FSK",
            };
            self.line(&format!("Current Work Mode: {mode}."));
        }
        if self.tx_done_at.is_some_and(|t| now >= t) {
            self.tx_done_at = None;
            self.line("+EVT:TXP2P DONE");
        }
        if let Rx::Until(t) = self.rx {
            if now >= t {
                self.rx = Rx::Off;
                self.line("+EVT:RXP2P RECEIVE TIMEOUT");
            }
        }
        let mut on_air = Vec::new();
        for (s, (due, n)) in self.config.sensors.iter().zip(self.schedule.iter_mut()) {
            if now >= *due {
                *due = now + s.interval;
                let mut payload = s.payload(*n);
                if let Some(c) = &s.cipher {
                    c.apply(&mut payload);
                }
                let frame = AirFrame {
                    rssi: s.rssi,
                    snr: s.snr,
                    payload,
                };
                on_air.push((s.freq_hz, s.sf, s.bw_khz, frame));
                *n = n.wrapping_add(1);
            }
        }
        for (freq_hz, sf, bw_khz, frame) in on_air {
            self.air_frame(freq_hz, sf, bw_khz, frame);
        }
    }

    /// Bytes from the host.
    pub fn receive(&mut self, now: Duration, bytes: &[u8]) {
        self.tick(now);
        for &b in bytes {
            match b {
                b'\r' | b'\n' => {
                    let line = std::mem::take(&mut self.input);
                    if let Ok(text) = std::str::from_utf8(&line) {
                        let text = text.trim().to_string();
                        if !text.is_empty() {
                            self.command(now, &text);
                        }
                    }
                }
                _ if self.input.len() < 1024 => self.input.push(b),
                _ => {}
            }
        }
    }

    fn line(&mut self, text: &str) {
        self.output.extend_from_slice(text.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    fn restart(&mut self, now: Duration) {
        self.stats.restarts += 1;
        self.rx = Rx::Off;
        self.tx_done_at = None;
        self.busy_left = 0;
        self.booting_until = Some(now + self.config.boot_time);
    }

    fn busy(&self) -> bool {
        self.rx != Rx::Off || self.tx_done_at.is_some()
    }

    fn command(&mut self, now: Duration, text: &str) {
        if self.booting_until.is_some() {
            // Nobody listens while the module boots.
            return;
        }
        self.stats.commands += 1;
        if self.config.echo {
            self.line(text);
        }
        let upper = text.to_ascii_uppercase();
        if upper == "AT" {
            return self.line("OK");
        }
        if upper == "ATZ" {
            return self.restart(now);
        }
        if self.busy_left > 0 && upper.starts_with("AT") {
            self.busy_left -= 1;
            self.stats.busy_answers += 1;
            return self.line("AT_BUSY_ERROR");
        }
        let (name, arg) = match upper.split_once('=') {
            Some((n, a)) => (n, Some(a)),
            None => (upper.as_str(), None),
        };
        let status = match (name, arg) {
            ("AT+VER", Some("?")) => {
                self.line(&format!("AT+VER={BANNER_VERSION}"));
                Ok(())
            }
            ("AT+NWM", Some("?")) => {
                let m = self.work_mode;
                self.line(&format!("AT+NWM={m}"));
                Ok(())
            }
            ("AT+NWM", Some(v)) => self.set_work_mode(now, v),
            (enc, _) if ENCRYPTION_COMMANDS.contains(&enc) && !self.config.encryption_commands => {
                Err("AT_COMMAND_NOT_FOUND")
            }
            (p2p, _) if P2P_COMMANDS.contains(&p2p) && self.work_mode != 0 => {
                Err("AT_MODE_NO_SUPPORT")
            }
            ("AT+P2P", Some("?")) => {
                let c = self.p2p;
                self.line(&format!(
                    "AT+P2P={}:{}:{}:{}:{}:{}",
                    c.freq_hz, c.sf, c.bw_khz, c.cr, c.preamble, c.tx_power_dbm
                ));
                Ok(())
            }
            ("AT+P2P", Some(v)) => self.set_p2p(v),
            ("AT+SYNCWORD", Some("?")) => {
                let w = self.sync_word;
                self.line(&format!("AT+SYNCWORD={w:04X}"));
                Ok(())
            }
            ("AT+SYNCWORD", Some(v)) => {
                if self.busy() {
                    Err("AT_BUSY_ERROR")
                } else {
                    match u16::from_str_radix(v, 16) {
                        Ok(w) if v.len() == 4 => {
                            self.sync_word = w;
                            Ok(())
                        }
                        _ => Err("AT_PARAM_ERROR"),
                    }
                }
            }
            ("AT+ENCRY", Some("?")) => {
                let on = u8::from(self.encrypt);
                self.line(&format!("AT+ENCRY={on}"));
                Ok(())
            }
            ("AT+ENCRY", Some(v)) => match v {
                _ if self.busy() => Err("AT_BUSY_ERROR"),
                "0" | "1" => {
                    self.encrypt = v == "1";
                    Ok(())
                }
                _ => Err("AT_PARAM_ERROR"),
            },
            ("AT+ENCKEY", Some("?")) => {
                let k = hex_encode(&self.cipher.key).to_ascii_uppercase();
                self.line(&format!("AT+ENCKEY={k}"));
                Ok(())
            }
            ("AT+CRYPIV", Some("?")) => {
                let iv = hex_encode(&self.cipher.iv).to_ascii_uppercase();
                self.line(&format!("AT+CRYPIV={iv}"));
                Ok(())
            }
            ("AT+ENCKEY", Some(v)) => self.set_secret(v, true),
            ("AT+CRYPIV", Some(v)) => self.set_secret(v, false),
            ("AT+PRECV", Some(v)) => self.precv(now, v),
            ("AT+PSEND", Some(v)) => self.psend(now, v),
            _ => Err("AT_ERROR"),
        };
        match status {
            Ok(()) => self.line("OK"),
            // Answered already (a mode change: OK, then the restart).
            Err("") => {}
            Err(e) => {
                if e == "AT_BUSY_ERROR" {
                    self.stats.busy_answers += 1;
                }
                self.line(e)
            }
        }
    }

    fn set_work_mode(&mut self, now: Duration, v: &str) -> Result<(), &'static str> {
        let m: u8 = v.parse().map_err(|_| "AT_PARAM_ERROR")?;
        if m > 2 {
            return Err("AT_PARAM_ERROR");
        }
        if self.busy() {
            return Err("AT_BUSY_ERROR");
        }
        if m != self.work_mode {
            self.work_mode = m;
            // OK first, then the restart.
            self.line("OK");
            self.restart(now);
            return Err("");
        }
        Ok(())
    }

    /// `AT+ENCKEY=` (`key`) or `AT+CRYPIV=`: exactly 16 bytes in hex.
    fn set_secret(&mut self, v: &str, key: bool) -> Result<(), &'static str> {
        if self.busy() {
            return Err("AT_BUSY_ERROR");
        }
        let bytes: [u8; 16] = hex_decode(v)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("AT_PARAM_ERROR")?;
        if key {
            self.cipher.key = bytes;
            self.stats.key_writes += 1;
        } else {
            self.cipher.iv = bytes;
        }
        Ok(())
    }

    fn set_p2p(&mut self, v: &str) -> Result<(), &'static str> {
        if self.busy() {
            return Err("AT_BUSY_ERROR");
        }
        let f: Vec<&str> = v.split(':').collect();
        let [freq, sf, bw, cr, pre, pw] = f.as_slice() else {
            return Err("AT_PARAM_ERROR");
        };
        let p = |s: &str| s.parse::<u32>().map_err(|_| "AT_PARAM_ERROR");
        let (freq, sf, bw, cr, pre, pw) = (p(freq)?, p(sf)?, p(bw)?, p(cr)?, p(pre)?, p(pw)?);
        let ok = (150_000_000..=960_000_000).contains(&freq)
            && (5..=12).contains(&sf)
            && matches!(bw, 125 | 250 | 500)
            && cr <= 3
            && (2..=65535).contains(&pre)
            && (5..=22).contains(&pw);
        if !ok {
            return Err("AT_PARAM_ERROR");
        }
        self.p2p = P2pConfig {
            freq_hz: freq,
            sf: sf as u8,
            bw_khz: bw as u16,
            cr: cr as u8,
            preamble: pre as u16,
            tx_power_dbm: pw as u8,
        };
        Ok(())
    }

    fn precv(&mut self, now: Duration, v: &str) -> Result<(), &'static str> {
        let ms: u32 = v.parse().map_err(|_| "AT_PARAM_ERROR")?;
        if ms == 0 {
            self.rx = Rx::Off;
            return Ok(());
        }
        if ms > 65535 {
            return Err("AT_PARAM_ERROR");
        }
        if self.busy() {
            return Err("AT_BUSY_ERROR");
        }
        self.rx = match ms {
            65534 => Rx::Continuous,
            65535 => Rx::UntilPacket,
            ms => Rx::Until(now + Duration::from_millis(ms.into())),
        };
        Ok(())
    }

    fn psend(&mut self, now: Duration, v: &str) -> Result<(), &'static str> {
        if self.busy() {
            return Err("AT_BUSY_ERROR");
        }
        let payload = hex_decode(v).map_err(|_| "AT_PARAM_ERROR")?;
        if payload.is_empty() || payload.len() > 256 {
            return Err("AT_PARAM_ERROR");
        }
        let mut on_air = payload.clone();
        if self.encrypt {
            self.cipher.apply(&mut on_air);
        }
        self.stats.sent.push(payload);
        self.stats.sent_on_air.push(on_air);
        self.tx_done_at = Some(now + self.config.airtime);
        Ok(())
    }
}

/// A frame as the module's radio receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AirFrame {
    pub rssi: i16,
    pub snr: i16,
    pub payload: Vec<u8>,
}

const P2P_COMMANDS: [&str; 7] = [
    "AT+P2P",
    "AT+PRECV",
    "AT+PSEND",
    "AT+SYNCWORD",
    "AT+ENCRY",
    "AT+ENCKEY",
    "AT+CRYPIV",
];

/// The P2P encryption commands (RUI3 4.0.6 and later).
const ENCRYPTION_COMMANDS: [&str; 3] = ["AT+ENCRY", "AT+ENCKEY", "AT+CRYPIV"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rak3172::{AtParser, Event};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn say(e: &mut Emulator, now: Duration, line: &str) -> Vec<Event> {
        e.receive(now, format!("{line}\r\n").as_bytes());
        AtParser::new().feed(&e.take_output())
    }

    #[test]
    fn configures_receives_busies_and_transmits_like_the_module() {
        let mut e = Emulator::new(EmulatorConfig {
            sensors: vec![],
            ..EmulatorConfig::default()
        });
        // Factory LoRaWAN mode: P2P commands are refused until the mode changes.
        assert_eq!(
            say(&mut e, ms(0), "AT+PRECV=65534"),
            [Event::Error(super::super::StatusError::ModeNotSupported)]
        );
        assert_eq!(say(&mut e, ms(0), "AT+NWM=0"), [Event::Ok]);
        assert_eq!(say(&mut e, ms(10), "AT"), []); // booting: silent
        e.tick(ms(200));
        let banner = AtParser::new().feed(&e.take_output());
        assert_eq!(
            banner.last(),
            Some(&Event::WorkMode(super::super::WorkMode::P2p))
        );
        assert_eq!(
            say(&mut e, ms(200), "AT+P2P=869525000:9:125:1:8:20"),
            [Event::Ok]
        );
        assert_eq!(say(&mut e, ms(200), "AT+PRECV=65534"), [Event::Ok]);
        // Receiving: TX and settings are busy.
        assert_eq!(
            say(&mut e, ms(200), "AT+PSEND=0102"),
            [Event::Error(super::super::StatusError::Busy)]
        );
        let heard = e.air_frame(
            869_525_000,
            9,
            125,
            AirFrame {
                rssi: -60,
                snr: 11,
                payload: vec![0xaa, 0xbb],
            },
        );
        assert!(heard);
        assert!(!e.air_frame(
            868_100_000,
            9,
            125,
            AirFrame {
                rssi: -60,
                snr: 11,
                payload: vec![1]
            }
        ));
        assert_eq!(
            AtParser::new().feed(&e.take_output()),
            [Event::RxP2p {
                rssi: -60,
                snr: 11,
                payload: vec![0xaa, 0xbb]
            }]
        );
        assert_eq!(say(&mut e, ms(300), "AT+PRECV=0"), [Event::Ok]);
        assert_eq!(say(&mut e, ms(300), "AT+PSEND=0102"), [Event::Ok]);
        e.tick(ms(400));
        assert_eq!(AtParser::new().feed(&e.take_output()), [Event::TxDone]);
        assert_eq!(e.stats().sent, [vec![1, 2]]);
        e.inject(ms(400), Fault::Busy(1));
        assert_eq!(
            say(&mut e, ms(400), "AT+PRECV=65534"),
            [Event::Error(super::super::StatusError::Busy)]
        );
        assert_eq!(say(&mut e, ms(400), "AT+PRECV=65534"), [Event::Ok]);
        assert_eq!(e.stats().missed, 1);
    }

    #[test]
    fn legacy_firmware_prints_two_lines_and_sensors_send_lpp() {
        let mut e = Emulator::new(EmulatorConfig {
            firmware: Firmware::Legacy,
            work_mode: 0,
            ..EmulatorConfig::default()
        });
        say(&mut e, ms(0), "AT+PRECV=65534");
        e.tick(ms(5000));
        let got = AtParser::new().feed(&e.take_output());
        let sensor = &EmulatorConfig::default().sensors[0];
        assert_eq!(
            got,
            [Event::RxP2p {
                rssi: -71,
                snr: 9,
                payload: sensor.payload(0)
            }]
        );
        let lpp = crate::lpp::decode(&sensor.payload(0)[4..]).unwrap();
        assert_eq!(lpp[0].name(), "temperature");
        assert_eq!(e.next_deadline(), Some(ms(10_000)));
    }

    #[test]
    fn encryption_deciphers_with_the_modules_key_and_old_firmware_lacks_it() {
        let site = P2pCipher {
            key: [0x2b; 16],
            iv: [0x01; 16],
        };
        let sensor = Sensor {
            cipher: Some(site.clone()),
            ..EmulatorConfig::default().sensors[0].clone()
        };
        let mut e = Emulator::new(EmulatorConfig {
            work_mode: 0,
            sensors: vec![sensor.clone()],
            ..EmulatorConfig::default()
        });
        assert_eq!(
            say(&mut e, ms(0), "AT+ENCRY=?"),
            [Event::Reply("AT+ENCRY=0".into()), Event::Ok]
        );
        let key = format!("AT+ENCKEY={}", hex_encode(&site.key));
        assert_eq!(say(&mut e, ms(0), &key), [Event::Ok]);
        assert_eq!(
            say(&mut e, ms(0), "AT+CRYPIV=0101"),
            [Event::Error(super::super::StatusError::Param)],
            "16 bytes or nothing"
        );
        let iv = format!("AT+CRYPIV={}", hex_encode(&site.iv));
        assert_eq!(say(&mut e, ms(0), &iv), [Event::Ok]);
        assert_eq!(say(&mut e, ms(0), "AT+ENCRY=1"), [Event::Ok]);
        assert_eq!(e.encryption(&site), (true, true));
        say(&mut e, ms(0), "AT+PRECV=65534");
        assert_eq!(
            say(&mut e, ms(0), "AT+ENCRY=0"),
            [Event::Error(super::super::StatusError::Busy)]
        );
        // The sensor's frame is ciphertext on the air and plaintext from the module.
        e.tick(ms(5000));
        let heard = AtParser::new().feed(&e.take_output());
        assert!(
            matches!(&heard[..], [Event::RxP2p { payload, .. }] if *payload == sensor.payload(0))
        );
        // Sent in the clear while the module deciphers: what comes out is not the frame.
        e.air_frame(
            868_000_000,
            7,
            125,
            AirFrame {
                rssi: -50,
                snr: 5,
                payload: vec![1, 2, 3],
            },
        );
        let heard = AtParser::new().feed(&e.take_output());
        assert!(
            matches!(&heard[..], [Event::RxP2p { payload, .. }] if payload.len() == 3 && *payload != [1, 2, 3])
        );
        // What the module transmits is enciphered on the air.
        say(&mut e, ms(6000), "AT+PRECV=0");
        say(&mut e, ms(6000), "AT+PSEND=0102");
        let mut plain = e.stats().sent_on_air[0].clone();
        site.apply(&mut plain);
        assert_eq!(plain, [1, 2]);
        // A restart that loses the settings turns encryption off.
        e.inject(ms(7000), Fault::SettingsLost);
        e.tick(ms(8000));
        assert_eq!(e.encryption(&site), (false, false));
        assert_eq!(e.stats().key_writes, 1);

        let mut old = Emulator::new(EmulatorConfig {
            work_mode: 0,
            encryption_commands: false,
            echo: true,
            ..EmulatorConfig::default()
        });
        assert_eq!(
            say(&mut old, ms(0), "AT+ENCRY=1"),
            [
                Event::Reply("AT+ENCRY=1".into()),
                Event::Error(super::super::StatusError::CommandNotFound)
            ]
        );
    }
}
