//! `[radio.options]` of a LoRa radio: the region, the network id given to devices that join
//! here, the downlink power, the default payload decoder and the ChirpStack bridge. Unknown
//! keys and values out of range are refused with the key named.

use fieldgate_lora::region::Region;
use fieldgate_lora::{Eui64, NetId};

use crate::radio::OptionError;

/// How uplink payloads become readings (always with the raw hex as `payload_hex`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decoder {
    /// Cayenne LPP: named readings with units.
    Lpp,
    /// Only the raw payload (`payload_hex`, `fport`).
    Raw,
}

impl Decoder {
    pub fn parse(s: &str) -> Option<Decoder> {
        match s {
            "lpp" | "cayenne_lpp" => Some(Decoder::Lpp),
            "raw" => Some(Decoder::Raw),
            _ => None,
        }
    }
}

/// Whether frames also go to a network server (ChirpStack) over MQTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeMode {
    /// The gateway alone answers its devices; nothing is bridged.
    Off,
    /// The gateway answers its own devices and every frame is also bridged.
    Also,
    /// Every frame is bridged and none is handled here: the network server owns them all.
    Only,
}

impl BridgeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BridgeMode::Off => "off",
            BridgeMode::Also => "also",
            BridgeMode::Only => "only",
        }
    }
}

/// The ChirpStack bridge's settings (`bridge*` options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeOptions {
    pub mode: BridgeMode,
    /// The first topic levels, as the ChirpStack MQTT forwarder's `topic_prefix`
    /// (default: the region in lower case, e.g. `eu868`). Not under the gateway's own prefix.
    pub topic_prefix: String,
    /// The gateway id ChirpStack knows this gateway by; `None`: the packet forwarder's
    /// own gateway EUI (from its datagrams).
    pub gateway_id: Option<Eui64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraOptions {
    pub region: Region,
    /// NetID written into the Join-Accepts this gateway sends (0x000000: experimental/private).
    pub net_id: NetId,
    /// Downlink TX power, dBm.
    pub tx_power: u8,
    /// The decoder for devices added without one.
    pub decoder: Decoder,
    pub bridge: BridgeOptions,
    /// A packet forwarder heard once and then silent this long (no PULL_DATA keep-alive,
    /// no PUSH_DATA) is taken as gone: the radio shows down and is re-opened.
    pub forwarder_timeout: std::time::Duration,
}

impl Default for LoraOptions {
    fn default() -> Self {
        LoraOptions {
            region: Region::Eu868,
            net_id: NetId(0),
            tx_power: 14,
            decoder: Decoder::Lpp,
            bridge: BridgeOptions {
                mode: BridgeMode::Off,
                topic_prefix: "eu868".into(),
                gateway_id: None,
            },
            forwarder_timeout: DEFAULT_FORWARDER_TIMEOUT,
        }
    }
}

/// Three of the Semtech packet forwarder's default keep-alives (`keepalive_interval`, 10 s).
pub const DEFAULT_FORWARDER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

const KEYS: [&str; 8] = [
    "region",
    "net_id",
    "tx_power",
    "decoder",
    "bridge",
    "bridge_topic_prefix",
    "bridge_gateway_id",
    "forwarder_timeout",
];

/// A topic prefix is one or more non-empty levels with no wildcard.
fn valid_topic_prefix(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 128
        && p.split('/').all(|l| !l.is_empty())
        && !p.contains(['+', '#', '\0'])
}

fn err(key: &str, message: impl Into<String>) -> OptionError {
    OptionError {
        key: key.into(),
        message: message.into(),
    }
}

impl LoraOptions {
    pub fn parse(table: &toml::Table) -> Result<LoraOptions, OptionError> {
        if let Some(k) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(err(
                k,
                format!("unknown LoRa option `{k}` (known: {})", KEYS.join(", ")),
            ));
        }
        let mut o = LoraOptions::default();
        if let Some(v) = table.get("region") {
            o.region = match v.as_str() {
                Some("EU868") => Region::Eu868,
                Some("US915") => Region::Us915,
                _ => return Err(err("region", "`region` must be \"EU868\" or \"US915\"")),
            };
        }
        if let Some(v) = table.get("net_id") {
            o.net_id = v
                .as_str()
                .and_then(|s| s.parse::<NetId>().ok())
                .ok_or_else(|| err("net_id", "`net_id` must be 6 hex digits, e.g. \"000013\""))?;
        }
        if let Some(v) = table.get("tx_power") {
            o.tx_power = v
                .as_integer()
                .filter(|p| (0..=30).contains(p))
                .map(|p| p as u8)
                .ok_or_else(|| err("tx_power", "`tx_power` must be 0..=30 dBm"))?;
        }
        if let Some(v) = table.get("decoder") {
            o.decoder = v
                .as_str()
                .and_then(Decoder::parse)
                .ok_or_else(|| err("decoder", "`decoder` must be \"lpp\" or \"raw\""))?;
        }
        o.bridge.topic_prefix = o.region.name().to_ascii_lowercase();
        if let Some(v) = table.get("bridge") {
            o.bridge.mode = match v.as_str() {
                Some("off") => BridgeMode::Off,
                Some("also") => BridgeMode::Also,
                Some("only") => BridgeMode::Only,
                _ => {
                    return Err(err(
                        "bridge",
                        "`bridge` must be \"off\", \"also\" or \"only\"",
                    ))
                }
            };
        }
        if let Some(v) = table.get("bridge_topic_prefix") {
            o.bridge.topic_prefix = v
                .as_str()
                .filter(|p| valid_topic_prefix(p))
                .ok_or_else(|| {
                    err(
                        "bridge_topic_prefix",
                        "`bridge_topic_prefix` must be MQTT topic levels without wildcards, e.g. \"eu868\"",
                    )
                })?
                .to_string();
        }
        if let Some(v) = table.get("bridge_gateway_id") {
            o.bridge.gateway_id = Some(
                v.as_str()
                    .filter(|s| s.len() == 16)
                    .and_then(|s| s.parse::<Eui64>().ok())
                    .ok_or_else(|| {
                        err(
                            "bridge_gateway_id",
                            "`bridge_gateway_id` must be 16 hex digits (the gateway EUI)",
                        )
                    })?,
            );
        }
        if let Some(v) = table.get("forwarder_timeout") {
            o.forwarder_timeout = v
                .as_str()
                .and_then(|s| humantime::parse_duration(s).ok())
                .filter(|d| (std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(3600)).contains(d))
                .ok_or_else(|| {
                    err(
                        "forwarder_timeout",
                        "`forwarder_timeout` must be a duration from \"1s\" to \"1h\", e.g. \"30s\"",
                    )
                })?;
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<LoraOptions, OptionError> {
        LoraOptions::parse(&toml::from_str(s).unwrap())
    }

    #[test]
    fn options_parse_with_defaults_and_refuse_mistakes_by_key() {
        assert_eq!(parse("").unwrap(), LoraOptions::default());
        let o = parse("region = \"US915\"\nnet_id = \"000013\"\ntx_power = 20\ndecoder = \"raw\"")
            .unwrap();
        assert_eq!(
            (o.region, o.net_id, o.tx_power, o.decoder),
            (Region::Us915, NetId(0x13), 20, Decoder::Raw)
        );
        assert_eq!(parse("region = \"AS923\"").unwrap_err().key, "region");
        assert_eq!(parse("net_id = \"xyz\"").unwrap_err().key, "net_id");
        assert_eq!(parse("tx_power = 99").unwrap_err().key, "tx_power");
        assert_eq!(parse("chanel = 1").unwrap_err().key, "chanel");
        assert_eq!(
            parse("forwarder_timeout = \"3s\"")
                .unwrap()
                .forwarder_timeout,
            std::time::Duration::from_secs(3)
        );
        for bad in ["\"0s\"", "\"2h\"", "\"soon\"", "30"] {
            assert_eq!(
                parse(&format!("forwarder_timeout = {bad}"))
                    .unwrap_err()
                    .key,
                "forwarder_timeout"
            );
        }
    }

    #[test]
    fn bridge_options_default_to_off_and_the_region_as_topic_prefix() {
        let o = parse("region = \"US915\"").unwrap();
        assert_eq!(o.bridge.mode, BridgeMode::Off);
        assert_eq!(o.bridge.topic_prefix, "us915");
        let o = parse(
            "bridge = \"also\"\nbridge_topic_prefix = \"site/eu868\"\nbridge_gateway_id = \"0016C001FF100001\"",
        )
        .unwrap();
        assert_eq!(o.bridge.mode, BridgeMode::Also);
        assert_eq!(o.bridge.topic_prefix, "site/eu868");
        assert_eq!(o.bridge.gateway_id, Some(Eui64(0x0016_c001_ff10_0001)));
        assert_eq!(parse("bridge = \"on\"").unwrap_err().key, "bridge");
        for bad in ["\"eu868/#\"", "\"a//b\"", "\"\"", "\"+/x\"", "3"] {
            assert_eq!(
                parse(&format!("bridge_topic_prefix = {bad}"))
                    .unwrap_err()
                    .key,
                "bridge_topic_prefix"
            );
        }
        assert_eq!(
            parse("bridge_gateway_id = \"0016c001\"").unwrap_err().key,
            "bridge_gateway_id"
        );
    }

    #[test]
    fn the_gwmp_emulator_is_named_sim_lora_or_sim_lora_gwmp() {
        use crate::config::{parse_port, PortSpec, Protocol};
        for port in ["sim://lora", "sim://lora-gwmp"] {
            assert_eq!(
                parse_port(port, Protocol::Lora),
                Ok(PortSpec::Sim(Protocol::Lora))
            );
        }
        assert!(parse_port("sim://lora-gwmp", Protocol::Zigbee).is_err());
    }
}
