//! `[radio.options]` of a LoRa P2P modem: the radio settings written with `AT+P2P` (and
//! `AT+SYNCWORD`), how a frame names its sender, the payload decoder, the P2P encryption
//! key file and the timing of the dialogue. Unknown keys and values out of range are
//! refused with the key named. The key file is only named here; it is read by
//! `super::key` (at `config check` and when the link opens), never parsed into the config.

use std::path::PathBuf;
use std::time::Duration;

use fieldgate_lora::rak3172::P2pConfig;

use crate::radio::lora::Decoder;
use crate::radio::OptionError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P2pOptions {
    /// Frequency, SF, bandwidth, coding rate, preamble and TX power (`AT+P2P`).
    pub radio: P2pConfig,
    /// `AT+SYNCWORD` when set (0x3444 hears LoRaWAN's public sync word); the module's own
    /// otherwise (0x1234 on a RAK3172 from the factory).
    pub sync_word: Option<u16>,
    /// The first `id_bytes` bytes of every frame are its sender's id (the device's native
    /// address, in hex); the rest is the payload.
    pub id_bytes: usize,
    /// How the payload after the id becomes readings (always with `payload_hex`).
    pub decoder: Decoder,
    /// How long a command may wait for its status line.
    pub command_timeout: Duration,
    /// How long a transmission may take until `+EVT:TXP2P DONE`.
    pub tx_timeout: Duration,
    /// With nothing heard for this long, the modem is asked `AT` to prove it is alive.
    pub keepalive: Duration,
    /// The file holding the P2P encryption key and IV (`AT+ENCRY=1`); encryption is turned
    /// off (`AT+ENCRY=0`) when `None`.
    pub encryption_key_file: Option<PathBuf>,
}

impl Default for P2pOptions {
    fn default() -> Self {
        P2pOptions {
            radio: P2pConfig {
                freq_hz: 868_000_000,
                sf: 7,
                bw_khz: 125,
                cr: 0,
                preamble: 8,
                tx_power_dbm: 14,
            },
            sync_word: None,
            id_bytes: 4,
            decoder: Decoder::Lpp,
            command_timeout: Duration::from_secs(2),
            tx_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(60),
            encryption_key_file: None,
        }
    }
}

const KEYS: [&str; 12] = [
    "frequency",
    "spreading_factor",
    "bandwidth",
    "coding_rate",
    "preamble",
    "tx_power",
    "sync_word",
    "id_bytes",
    "decoder",
    "command_timeout",
    "keepalive",
    "encryption_key_file",
];

fn err(key: &str, message: impl Into<String>) -> OptionError {
    OptionError {
        key: key.into(),
        message: message.into(),
    }
}

fn int_in(
    table: &toml::Table,
    key: &str,
    range: std::ops::RangeInclusive<i64>,
    what: &str,
) -> Result<Option<i64>, OptionError> {
    match table.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_integer()
            .filter(|n| range.contains(n))
            .map(Some)
            .ok_or_else(|| err(key, format!("`{key}` must be {what}"))),
    }
}

fn duration_in(
    table: &toml::Table,
    key: &str,
    lo: Duration,
    hi: Duration,
) -> Result<Option<Duration>, OptionError> {
    let Some(v) = table.get(key) else {
        return Ok(None);
    };
    let d = v
        .as_str()
        .and_then(|s| humantime::parse_duration(s).ok())
        .filter(|d| (lo..=hi).contains(d))
        .ok_or_else(|| {
            err(
                key,
                format!(
                    "`{key}` must be a duration from {} to {}, e.g. \"{}\"",
                    humantime::format_duration(lo),
                    humantime::format_duration(hi),
                    humantime::format_duration(hi / 4)
                ),
            )
        })?;
    Ok(Some(d))
}

impl P2pOptions {
    pub fn parse(table: &toml::Table) -> Result<P2pOptions, OptionError> {
        if let Some(k) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(err(
                k,
                format!("unknown LoRa P2P option `{k}` (known: {})", KEYS.join(", ")),
            ));
        }
        let mut o = P2pOptions::default();
        if let Some(f) = int_in(
            table,
            "frequency",
            150_000_000..=960_000_000,
            "a frequency in Hz from 150000000 to 960000000",
        )? {
            o.radio.freq_hz = f as u32;
        }
        if let Some(sf) = int_in(table, "spreading_factor", 5..=12, "5..=12")? {
            o.radio.sf = sf as u8;
        }
        if let Some(bw) = table.get("bandwidth") {
            o.radio.bw_khz = bw
                .as_integer()
                .filter(|b| matches!(b, 125 | 250 | 500))
                .map(|b| b as u16)
                .ok_or_else(|| err("bandwidth", "`bandwidth` must be 125, 250 or 500 (kHz)"))?;
        }
        if let Some(cr) = table.get("coding_rate") {
            o.radio.cr = match cr.as_str() {
                Some("4/5") => 0,
                Some("4/6") => 1,
                Some("4/7") => 2,
                Some("4/8") => 3,
                _ => {
                    return Err(err(
                        "coding_rate",
                        "`coding_rate` must be \"4/5\", \"4/6\", \"4/7\" or \"4/8\"",
                    ))
                }
            };
        }
        if let Some(p) = int_in(table, "preamble", 2..=65535, "2..=65535 symbols")? {
            o.radio.preamble = p as u16;
        }
        if let Some(p) = int_in(table, "tx_power", 5..=22, "5..=22 dBm")? {
            o.radio.tx_power_dbm = p as u8;
        }
        if let Some(w) = table.get("sync_word") {
            o.sync_word = Some(
                w.as_str()
                    .filter(|s| s.len() == 4)
                    .and_then(|s| u16::from_str_radix(s, 16).ok())
                    .ok_or_else(|| {
                        err(
                            "sync_word",
                            "`sync_word` must be 4 hex digits, e.g. \"3444\" (LoRaWAN public) or \"1234\"",
                        )
                    })?,
            );
        }
        if let Some(n) = int_in(table, "id_bytes", 1..=8, "1..=8 bytes")? {
            o.id_bytes = n as usize;
        }
        if let Some(v) = table.get("decoder") {
            o.decoder = v
                .as_str()
                .and_then(Decoder::parse)
                .ok_or_else(|| err("decoder", "`decoder` must be \"lpp\" or \"raw\""))?;
        }
        if let Some(d) = duration_in(
            table,
            "command_timeout",
            Duration::from_millis(200),
            Duration::from_secs(30),
        )? {
            o.command_timeout = d;
        }
        if let Some(d) = duration_in(
            table,
            "keepalive",
            Duration::from_secs(5),
            Duration::from_secs(3600),
        )? {
            o.keepalive = d;
        }
        if let Some(v) = table.get("encryption_key_file") {
            let path = v
                .as_str()
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .ok_or_else(|| {
                    err(
                        "encryption_key_file",
                        "`encryption_key_file` must be the absolute path of the key file, e.g. \"/etc/fieldgate/lora-p2p.key\" (the key itself never goes in the config)",
                    )
                })?;
            if o.decoder == Decoder::Raw {
                // Without a MIC, a frame deciphered under another key is only told apart
                // by a payload that does not decode; raw payloads always "decode".
                return Err(err(
                    "encryption_key_file",
                    "encryption needs `decoder = \"lpp\"`: RUI3 P2P frames carry no MIC, so only a payload that decodes tells a frame under our key from one under another key",
                ));
            }
            o.encryption_key_file = Some(path);
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<P2pOptions, OptionError> {
        P2pOptions::parse(&toml::from_str(s).unwrap())
    }

    #[test]
    fn options_parse_with_defaults_and_refuse_mistakes_by_key() {
        assert_eq!(parse("").unwrap(), P2pOptions::default());
        let o = parse(
            "frequency = 869525000\nspreading_factor = 9\nbandwidth = 250\ncoding_rate = \"4/6\"\n\
             preamble = 12\ntx_power = 20\nsync_word = \"3444\"\nid_bytes = 2\ndecoder = \"raw\"\n\
             command_timeout = \"1s\"\nkeepalive = \"30s\"",
        )
        .unwrap();
        assert_eq!(
            o.radio,
            P2pConfig {
                freq_hz: 869_525_000,
                sf: 9,
                bw_khz: 250,
                cr: 1,
                preamble: 12,
                tx_power_dbm: 20
            }
        );
        assert_eq!(
            (o.sync_word, o.id_bytes, o.decoder),
            (Some(0x3444), 2, Decoder::Raw)
        );
        assert_eq!(o.keepalive, Duration::from_secs(30));
        assert_eq!(o.encryption_key_file, None);
        let o = parse("encryption_key_file = \"/etc/fieldgate/p2p.key\"").unwrap();
        assert_eq!(
            o.encryption_key_file.as_deref(),
            Some(std::path::Path::new("/etc/fieldgate/p2p.key"))
        );
        for (bad, key) in [
            ("frequency = 100", "frequency"),
            ("spreading_factor = 13", "spreading_factor"),
            ("bandwidth = 0", "bandwidth"),
            ("coding_rate = 5", "coding_rate"),
            ("tx_power = 30", "tx_power"),
            ("sync_word = \"34\"", "sync_word"),
            ("id_bytes = 0", "id_bytes"),
            ("keepalive = \"1ms\"", "keepalive"),
            ("freqency = 1", "freqency"),
            ("encryption_key_file = \"p2p.key\"", "encryption_key_file"),
            ("encryption_key_file = 16", "encryption_key_file"),
            (
                "decoder = \"raw\"\nencryption_key_file = \"/etc/fieldgate/p2p.key\"",
                "encryption_key_file",
            ),
        ] {
            assert_eq!(parse(bad).unwrap_err().key, key, "{bad}");
        }
    }

    #[test]
    fn the_rak3172_emulator_and_serial_ports_are_lora_p2p_ports() {
        use crate::config::{parse_port, PortSpec, Protocol};
        for port in ["sim://lora-rak3172", "sim://lora-p2p"] {
            assert_eq!(
                parse_port(port, Protocol::LoraP2p),
                Ok(PortSpec::Sim(Protocol::LoraP2p))
            );
        }
        assert!(parse_port("sim://lora-rak3172", Protocol::Lora).is_err());
        assert!(parse_port("/dev/ttyUSB0", Protocol::LoraP2p).is_ok());
        assert!(parse_port("udp://0.0.0.0:1700", Protocol::LoraP2p).is_err());
    }
}
