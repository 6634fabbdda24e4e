//! `[radio.options]` of a LoRa radio: the region, the network id given to devices that join
//! here, the downlink power and the default payload decoder. Unknown keys and values out of
//! range are refused with the key named.

use fieldgate_lora::region::Region;
use fieldgate_lora::NetId;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraOptions {
    pub region: Region,
    /// NetID written into the Join-Accepts this gateway sends (0x000000: experimental/private).
    pub net_id: NetId,
    /// Downlink TX power, dBm.
    pub tx_power: u8,
    /// The decoder for devices added without one.
    pub decoder: Decoder,
}

impl Default for LoraOptions {
    fn default() -> Self {
        LoraOptions {
            region: Region::Eu868,
            net_id: NetId(0),
            tx_power: 14,
            decoder: Decoder::Lpp,
        }
    }
}

const KEYS: [&str; 4] = ["region", "net_id", "tx_power", "decoder"];

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
