//! One-call decoding of a PHYPayload given as hex, with whatever keys the technician has,
//! into a serializable report, for the `fieldgate decode lora` CLI ([`decode_to_json`]).
//! Builds on [`crate::lorawan`] and [`crate::lpp`]; adds no layouts.
//!
//! Without keys it shows what travels in clear: MHDR, DevAddr, FCtrl, FCnt, FOpts and
//! their MAC commands, FPort, the MIC, the EUIs of a Join-Request. With the session keys
//! of a data frame it says whether the MIC verifies (at the 32-bit counter rebuilt from
//! `fcnt_msb`) and shows the decrypted FRMPayload, as Cayenne LPP readings when it parses
//! as such; with the AppKey it verifies a Join-Request and decrypts a Join-Accept. A MIC
//! that does not verify is reported, not an error. Keys are never part of the report, and
//! the errors about a key describe it without quoting it.

use serde::Serialize;

use crate::lorawan::crypto::xor_frm_payload;
use crate::lorawan::{
    mac, CfList, DataFrame, DlSettings, EncryptedJoinAccept, FCtrl, FrameError, JoinRequest, MType,
    MacCommand, PhyPayload,
};
use crate::lpp::{self, LppReading};
use crate::types::{hex_decode, AesKey, DevAddr, DevNonce, Direction, Eui64, JoinNonce, NetId};

/// The keys given, as text (`None` = not given).
#[derive(Clone, Copy, Default)]
pub struct KeysText<'a> {
    pub nwk_s_key: Option<&'a str>,
    pub app_s_key: Option<&'a str>,
    pub app_key: Option<&'a str>,
}

/// Keys in their parsed form. `AesKey`'s `Debug` is redacted.
#[derive(Debug, Clone, Copy, Default)]
struct Keys {
    nwk_s_key: Option<AesKey>,
    app_s_key: Option<AesKey>,
    app_key: Option<AesKey>,
}

/// Why [`decode_to_json`] has nothing to print but an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeFailure {
    /// An argument that does not parse or does not fit the frame; the message names it.
    #[error("{0}")]
    Input(String),
    /// The bytes are not a LoRaWAN 1.0.x frame.
    #[error("not a LoRaWAN frame: {0}")]
    Frame(#[from] FrameError),
}

fn input(msg: String) -> DecodeFailure {
    DecodeFailure::Input(msg)
}

/// Parses hex text, ignoring whitespace, `:`/`-` separators and a `0x` prefix.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, DecodeFailure> {
    let cleaned: String = text
        .split(|c: char| c.is_whitespace() || matches!(c, ':' | '-'))
        .map(|tok| {
            tok.strip_prefix("0x")
                .or_else(|| tok.strip_prefix("0X"))
                .unwrap_or(tok)
        })
        .collect();
    let bytes = hex_decode(&cleaned).map_err(|e| input(format!("invalid hex input: {e}")))?;
    if bytes.is_empty() {
        return Err(input("no input bytes".into()));
    }
    Ok(bytes)
}

fn parse_key(flag: &str, text: Option<&str>) -> Result<Option<AesKey>, DecodeFailure> {
    let Some(text) = text else { return Ok(None) };
    let digits = text.trim();
    let ok = digits.len() == 32 && digits.bytes().all(|b| b.is_ascii_hexdigit());
    match digits.parse::<AesKey>() {
        Ok(key) if ok => Ok(Some(key)),
        // Describe the key, never quote it.
        _ if !digits.bytes().all(|b| b.is_ascii_hexdigit()) => Err(input(format!(
            "{flag}: not a key: an AES-128 key is 32 hex digits, and this has other characters"
        ))),
        _ => Err(input(format!(
            "{flag}: not a key: an AES-128 key is 32 hex digits (16 bytes), got {} digits",
            digits.len()
        ))),
    }
}

/// MHDR: the byte and its fields.
#[derive(Debug, Clone, Serialize)]
pub struct MhdrReport {
    pub mtype: MType,
    /// Always 0 (LoRaWAN R1); anything else is refused before a report exists.
    pub major: u8,
    pub rfu: u8,
}

/// FCtrl with the FOpts length its low nibble carries.
#[derive(Debug, Clone, Serialize)]
pub struct FCtrlReport {
    #[serde(flatten)]
    pub flags: FCtrl,
    pub fopts_len: usize,
}

/// A data frame.
#[derive(Debug, Clone, Serialize)]
pub struct DataReport {
    pub direction: Direction,
    pub confirmed: bool,
    pub dev_addr: DevAddr,
    pub fctrl: FCtrlReport,
    /// The 16 bits on air.
    pub fcnt: u16,
    #[serde(serialize_with = "crate::types::serde_hex")]
    pub fopts: Vec<u8>,
    /// From FOpts (plaintext in 1.0.x) and, once decrypted, from an FPort 0 payload.
    pub mac_commands: Vec<MacCommand>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_commands_error: Option<String>,
    pub fport: Option<u8>,
    /// As on air (encrypted).
    #[serde(serialize_with = "crate::types::serde_hex")]
    pub frm_payload: Vec<u8>,
    #[serde(serialize_with = "crate::types::serde_hex")]
    pub mic: [u8; 4],
    /// The 32-bit counter the MIC and the cipher were computed with, when keys were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fcnt_full: Option<u32>,
    /// Present when the NwkSKey was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mic_verified: Option<bool>,
    /// The decrypted FRMPayload, when the key for its port was given.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_hex")]
    pub frm_payload_plaintext: Option<Vec<u8>>,
    /// The plaintext read as Cayenne LPP, when it parses as such (FPort 1 and up). LPP
    /// carries no marker: a payload in another format that happens to parse shows here too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lpp: Option<Vec<LppReading>>,
}

fn opt_hex<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => crate::types::serde_hex(b, s),
        None => s.serialize_none(),
    }
}

/// A Join-Request.
#[derive(Debug, Clone, Serialize)]
pub struct JoinRequestReport {
    pub join_eui: Eui64,
    pub dev_eui: Eui64,
    pub dev_nonce: DevNonce,
    #[serde(serialize_with = "crate::types::serde_hex")]
    pub mic: [u8; 4],
    /// Present when the AppKey was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mic_verified: Option<bool>,
}

/// The optional channel list of a Join-Accept.
#[derive(Debug, Clone, Serialize)]
pub struct CfListReport {
    pub cf_list_type: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequencies_hz: Option<[u32; 5]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_masks: Option<[u16; 5]>,
    #[serde(serialize_with = "crate::types::serde_hex")]
    pub raw: [u8; 16],
}

impl From<CfList> for CfListReport {
    fn from(c: CfList) -> Self {
        CfListReport {
            cf_list_type: c.list_type(),
            frequencies_hz: c.frequencies(),
            channel_masks: c.channel_masks(),
            raw: c.0,
        }
    }
}

/// A Join-Accept decrypted with the AppKey.
#[derive(Debug, Clone, Serialize)]
pub struct JoinAcceptFields {
    /// AppNonce in 1.0.x.
    pub join_nonce: JoinNonce,
    pub net_id: NetId,
    pub dev_addr: DevAddr,
    pub dl_settings: DlSettings,
    pub rx_delay: u8,
    pub rx1_delay_secs: u8,
    pub cf_list: Option<CfListReport>,
    /// The MIC found inside the decrypted body.
    #[serde(serialize_with = "crate::types::serde_hex")]
    pub mic: [u8; 4],
    pub mic_verified: bool,
}

/// A Join-Accept: encrypted on air; its fields when the AppKey was given.
#[derive(Debug, Clone, Serialize)]
pub struct JoinAcceptReport {
    #[serde(serialize_with = "crate::types::serde_hex")]
    pub encrypted: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decrypted: Option<JoinAcceptFields>,
}

/// What follows the MHDR.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum BodyReport {
    Data(DataReport),
    JoinRequest(JoinRequestReport),
    JoinAccept(JoinAcceptReport),
    /// RFU and proprietary frames: carried, not interpreted.
    Opaque {
        #[serde(serialize_with = "crate::types::serde_hex")]
        body: Vec<u8>,
    },
}

/// A decoded PHYPayload.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeReport {
    pub mhdr: MhdrReport,
    #[serde(flatten)]
    pub body: BodyReport,
}

impl DecodeReport {
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

fn data_report(frame: &DataFrame, keys: &Keys, fcnt_msb: Option<u16>) -> DataReport {
    let direction = frame.direction();
    let keyed = keys.nwk_s_key.is_some() || keys.app_s_key.is_some();
    let fcnt_full = (keyed || fcnt_msb.is_some())
        .then(|| u32::from(fcnt_msb.unwrap_or(0)) << 16 | u32::from(frame.fcnt));
    let fcnt = fcnt_full.unwrap_or(u32::from(frame.fcnt));
    let mic_verified = keys.nwk_s_key.map(|k| frame.verify_mic(&k, fcnt));
    let payload_key = match frame.fport {
        Some(0) => keys.nwk_s_key,
        Some(_) => keys.app_s_key,
        None => None,
    };
    let plaintext = payload_key.map(|k| {
        let mut data = frame.frm_payload.clone();
        xor_frm_payload(&k, direction, frame.dev_addr, fcnt, &mut data);
        data
    });
    let mut mac_commands_error = None;
    let mut mac_commands = mac::parse_commands(direction, &frame.fopts).unwrap_or_else(|e| {
        mac_commands_error = Some(format!("FOpts: {e}"));
        Vec::new()
    });
    let mut lpp_readings = None;
    match (frame.fport, &plaintext) {
        (Some(0), Some(p)) => match mac::parse_commands(direction, p) {
            Ok(cmds) => mac_commands.extend(cmds),
            Err(e) => mac_commands_error = Some(format!("FPort 0 payload: {e}")),
        },
        (Some(_), Some(p)) if !p.is_empty() => lpp_readings = lpp::decode(p).ok(),
        _ => {}
    }
    DataReport {
        direction,
        confirmed: frame.confirmed(),
        dev_addr: frame.dev_addr,
        fctrl: FCtrlReport {
            flags: frame.fctrl,
            fopts_len: frame.fopts.len(),
        },
        fcnt: frame.fcnt,
        fopts: frame.fopts.clone(),
        mac_commands,
        mac_commands_error,
        fport: frame.fport,
        frm_payload: frame.frm_payload.clone(),
        mic: frame.mic,
        fcnt_full,
        mic_verified,
        frm_payload_plaintext: plaintext,
        lpp: lpp_readings,
    }
}

fn join_request_report(j: &JoinRequest, app_key: Option<AesKey>) -> JoinRequestReport {
    JoinRequestReport {
        join_eui: j.join_eui,
        dev_eui: j.dev_eui,
        dev_nonce: j.dev_nonce,
        mic: j.mic,
        mic_verified: app_key.map(|k| j.verify_mic(&k)),
    }
}

fn join_accept_report(j: &EncryptedJoinAccept, app_key: Option<AesKey>) -> JoinAcceptReport {
    let decrypted = app_key.and_then(|k| {
        let (accept, mic) = j.decrypt(&k).ok()?;
        Some(JoinAcceptFields {
            join_nonce: accept.join_nonce,
            net_id: accept.net_id,
            dev_addr: accept.dev_addr,
            dl_settings: accept.dl_settings,
            rx_delay: accept.rx_delay,
            rx1_delay_secs: accept.rx1_delay_secs(),
            cf_list: accept.cf_list.map(CfListReport::from),
            mic,
            mic_verified: j.open(&k).is_ok(),
        })
    });
    JoinAcceptReport {
        encrypted: j.body.clone(),
        decrypted,
    }
}

/// Decodes a PHYPayload with the keys given. `fcnt_msb` is the upper 16 bits of the frame
/// counter (0 when `None`), which the MIC and the cipher need and the air does not carry.
pub fn decode_phy_payload(
    bytes: &[u8],
    keys: &KeysText<'_>,
    fcnt_msb: Option<u16>,
) -> Result<DecodeReport, DecodeFailure> {
    let keys = Keys {
        nwk_s_key: parse_key("--nwkskey", keys.nwk_s_key)?,
        app_s_key: parse_key("--appskey", keys.app_s_key)?,
        app_key: parse_key("--appkey", keys.app_key)?,
    };
    let phy = PhyPayload::parse(bytes)?;
    let session_keys = keys.nwk_s_key.is_some() || keys.app_s_key.is_some();
    let mhdr = phy.mhdr();
    let body = match &phy {
        PhyPayload::Data(frame) => {
            if keys.app_key.is_some() {
                return Err(input(
                    "--appkey is for Join-Request and Join-Accept frames; a data frame takes \
                     --nwkskey and --appskey"
                        .into(),
                ));
            }
            BodyReport::Data(data_report(frame, &keys, fcnt_msb))
        }
        PhyPayload::JoinRequest(_) | PhyPayload::JoinAccept(_) if session_keys => {
            return Err(input(
                "--nwkskey and --appskey are for data frames; a join frame takes --appkey".into(),
            ))
        }
        PhyPayload::JoinRequest(j) => BodyReport::JoinRequest(join_request_report(j, keys.app_key)),
        PhyPayload::JoinAccept(j) => BodyReport::JoinAccept(join_accept_report(j, keys.app_key)),
        PhyPayload::Rfu { body, .. } | PhyPayload::Proprietary { body, .. } => {
            BodyReport::Opaque { body: body.clone() }
        }
    };
    Ok(DecodeReport {
        mhdr: MhdrReport {
            mtype: mhdr.mtype,
            major: 0,
            rfu: mhdr.rfu,
        },
        body,
    })
}

/// Parses `--fcnt-msb`: the upper 16 bits of the 32-bit frame counter.
pub fn parse_fcnt_msb(text: &str) -> Result<u16, DecodeFailure> {
    let t = text.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => t.parse(),
    }
    .map_err(|_| {
        input(format!(
            "--fcnt-msb {text:?}: the upper 16 bits of the frame counter, 0 to 65535"
        ))
    })
}

/// `fieldgate decode lora`: a PHYPayload (hex) as pretty JSON.
pub fn decode_to_json(
    hex: &str,
    keys: &KeysText<'_>,
    fcnt_msb: Option<&str>,
) -> Result<String, DecodeFailure> {
    let bytes = parse_hex(hex)?;
    let fcnt_msb = fcnt_msb.map(parse_fcnt_msb).transpose()?;
    Ok(decode_phy_payload(&bytes, keys, fcnt_msb)?.to_json_pretty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const NWK: &str = "44024241ed4ce9a68c6a8bc055233fd3";
    const APP: &str = "ec925802ae430ca77fd3dd73cb2cc588";
    const APP_KEY: &str = "00112233445566778899aabbccddeeff";

    fn json(hex: &str, keys: KeysText<'_>, msb: Option<&str>) -> Value {
        let out = decode_to_json(hex, &keys, msb).unwrap();
        for k in [NWK, APP, APP_KEY] {
            assert!(!out.contains(k), "a key was printed");
        }
        serde_json::from_str(&out).unwrap()
    }

    #[test]
    fn lora_packet_readme_uplink() {
        // lora-packet README (also in lorawan/data.rs): "test" on FPort 1, FCnt 2.
        let hex = "40F17DBE4900020001954378762B11FF0D";
        let v = json(hex, KeysText::default(), None);
        assert_eq!(v["mhdr"]["mtype"], "unconfirmed_data_up");
        assert_eq!(v["dev_addr"], "49be7df1");
        assert_eq!(v["fcnt"], 2);
        assert_eq!(v["fport"], 1);
        assert_eq!(v["mic"], "2b11ff0d");
        assert!(v.get("mic_verified").is_none());
        let keys = KeysText {
            nwk_s_key: Some(NWK),
            app_s_key: Some(APP),
            app_key: None,
        };
        let v = json(hex, keys, None);
        assert_eq!(v["mic_verified"], true);
        assert_eq!(v["frm_payload_plaintext"], "74657374");
        // LPP has no marker: "test" happens to read as channel 0x74, illuminance 0x7374.
        assert_eq!(v["lpp"][0]["name"], "illuminance");
        // The wrong upper counter bits: reported, not an error.
        assert_eq!(json(hex, keys, Some("1"))["mic_verified"], false);
    }

    #[test]
    fn lpp_payload_and_fopts() {
        // Built here: DevAddr 26011234, FCnt 0x10003, FOpts DevStatusAns, LPP 27.2 °C.
        let keys = crate::lorawan::SessionKeys {
            nwk_s_key: NWK.parse().unwrap(),
            app_s_key: APP.parse().unwrap(),
        };
        let msg = crate::lorawan::DataMessage {
            direction: Direction::Uplink,
            confirmed: true,
            dev_addr: DevAddr(0x2601_1234),
            fctrl: FCtrl::default(),
            fcnt: 0x1_0003,
            fopts: vec![0x06, 0xfe, 0x07],
            fport: Some(2),
            payload: vec![0x03, 0x67, 0x01, 0x10],
        };
        let wire = DataFrame::seal(&msg, &keys).unwrap().to_bytes().unwrap();
        let hex = crate::types::hex_encode(&wire);
        let text = KeysText {
            nwk_s_key: Some(NWK),
            app_s_key: Some(APP),
            app_key: None,
        };
        let v = json(&hex, text, Some("0x0001"));
        assert_eq!(v["mhdr"]["mtype"], "confirmed_data_up");
        assert_eq!(v["fctrl"]["fopts_len"], 3);
        assert_eq!(v["mac_commands"][0]["command"], "dev_status_ans");
        assert_eq!(v["mac_commands"][0]["battery"], 254);
        assert_eq!(v["fcnt_full"], 0x1_0003);
        assert_eq!(v["mic_verified"], true);
        assert_eq!(v["lpp"][0]["name"], "temperature");
        assert_eq!(v["lpp"][0]["value"], 27.2);
        assert_eq!(v["lpp"][0]["unit"], "°C");
    }

    #[test]
    fn joins_with_the_app_key() {
        // lorawan crate docs (also in lorawan/join.rs): a Join-Accept.
        let app = KeysText {
            app_key: Some(APP_KEY),
            ..Default::default()
        };
        let v = json("20493eeb51fba2116f810edb3742975142", app, None);
        assert_eq!(v["mhdr"]["mtype"], "join_accept");
        let d = &v["decrypted"];
        assert_eq!(d["dev_addr"], "02031980");
        assert_eq!(d["net_id"], "221101");
        assert_eq!(d["join_nonce"], "570bc7");
        assert_eq!(d["mic_verified"], true);
        assert!(d["cf_list"].is_null());
        let v = json("000807060504030201a8a7a6a5a4a3a2a1ccdd07449f28", app, None);
        assert_eq!(v["join_eui"], "0102030405060708");
        assert_eq!(v["dev_eui"], "a1a2a3a4a5a6a7a8");
        assert_eq!(v["dev_nonce"], "ddcc");
        assert_eq!(v["mic_verified"], true);
    }

    #[test]
    fn bad_input_is_an_error_that_does_not_quote_keys() {
        let none = KeysText::default();
        assert!(decode_to_json("zz", &none, None)
            .unwrap_err()
            .to_string()
            .starts_with("invalid hex input"));
        assert!(decode_to_json("", &none, None).is_err());
        assert!(matches!(
            decode_to_json("40F17D", &none, None),
            Err(DecodeFailure::Frame(_))
        ));
        let short = KeysText {
            nwk_s_key: Some("44024241ed4ce9a6"),
            ..Default::default()
        };
        let e = decode_to_json("40F17DBE4900020001954378762B11FF0D", &short, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--nwkskey") && e.contains("got 16 digits"),
            "{e}"
        );
        assert!(!e.contains("44024241"));
        let wrong = KeysText {
            app_key: Some(APP_KEY),
            ..Default::default()
        };
        assert!(decode_to_json("40F17DBE4900020001954378762B11FF0D", &wrong, None).is_err());
        assert!(
            decode_to_json("40F17DBE4900020001954378762B11FF0D", &none, Some("70000")).is_err()
        );
    }
}
