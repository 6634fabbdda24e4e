//! `fieldgate decode`: the radios' codecs on a captured frame, as JSON, for a
//! technician looking at a capture (no daemon, no radio).

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum DecodeCommand {
    /// Z-Stack MT frames (hex, separators allowed), or with --zcl a bare ZCL payload.
    Zigbee {
        #[arg(required = true, num_args = 1..)]
        hex: Vec<String>,
        /// The bytes are a ZCL frame, not MT frames.
        #[arg(long, requires = "cluster")]
        zcl: bool,
        /// Cluster id of the ZCL frame (e.g. 0x0402 or 1026).
        #[arg(long, value_parser = parse_u16)]
        cluster: Option<u16>,
    },
    /// A captured Z-Wave Serial API byte stream (hex, separators allowed): one or several
    /// frames, ACK/NAK/CAN bytes included; bad checksums and noise are reported.
    Zwave {
        #[arg(required = true, num_args = 1..)]
        hex: Vec<String>,
        /// Who sent the REQ frames: `auto` tells a host request from a controller callback
        /// by its layout; `host` or `controller` for a capture of one side of the line.
        #[arg(long, value_enum, default_value_t = ZwaveSender::Auto)]
        from: ZwaveSender,
    },
    /// A BLE advertisement (BTHome v2, Xiaomi custom firmware, Ruuvi, iBeacon, Eddystone).
    Ble {
        /// Service data, e.g. `fcd2=4002c40903bf13` (16-bit, 32-bit or 128-bit UUID).
        #[arg(long, value_name = "UUID=HEX", num_args = 1..)]
        service_data: Vec<String>,
        /// Manufacturer data, company id in hex, e.g. `0x0499=0512fc53...`.
        #[arg(long, value_name = "ID=HEX", num_args = 1..)]
        manufacturer_data: Vec<String>,
        /// The advertiser's address (needed for encrypted BTHome unless the payload has it).
        #[arg(long, value_name = "AA:BB:CC:DD:EE:FF")]
        mac: Option<String>,
        /// The device's BTHome key, 32 hex digits; `-` reads it from standard input (out of
        /// the shell history and process list). Never printed.
        #[arg(long, value_name = "HEX")]
        bindkey: Option<String>,
        /// The advertised local name.
        #[arg(long)]
        name: Option<String>,
        /// Received signal strength, dBm.
        #[arg(long, value_name = "DBM", allow_hyphen_values = true)]
        rssi: Option<String>,
        /// The last BTHome counter accepted from the device: one not above it is refused as
        /// a replay, as the driver would.
        #[arg(long, value_name = "N")]
        last_counter: Option<String>,
    },
    /// A LoRaWAN 1.0.x PHYPayload (hex); with keys, the MIC is checked and the payload
    /// decrypted (and read as Cayenne LPP when it is). Keys are never printed; `-` reads
    /// one from standard input.
    Lora {
        #[arg(required = true, num_args = 1..)]
        hex: Vec<String>,
        /// Network session key (data frames: MIC, FPort 0).
        #[arg(long, value_name = "HEX")]
        nwkskey: Option<String>,
        /// Application session key (data frames: FPort 1-255).
        #[arg(long, value_name = "HEX")]
        appskey: Option<String>,
        /// Application key (Join-Request MIC, Join-Accept decryption).
        #[arg(long, value_name = "HEX")]
        appkey: Option<String>,
        /// Upper 16 bits of the 32-bit frame counter (default 0).
        #[arg(long, value_name = "N")]
        fcnt_msb: Option<String>,
    },
}

/// `fieldgate decode zwave --from`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ZwaveSender {
    Auto,
    Host,
    Controller,
}

impl From<ZwaveSender> for fieldgate_zwave::decode::Sender {
    fn from(s: ZwaveSender) -> Self {
        match s {
            ZwaveSender::Auto => Self::Auto,
            ZwaveSender::Host => Self::Host,
            ZwaveSender::Controller => Self::Controller,
        }
    }
}

fn parse_u16(s: &str) -> Result<u16, String> {
    let t = s.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => t.parse(),
    }
    .map_err(|e| format!("{s:?} is not a 16-bit number: {e}"))
}

/// Runs `fieldgate decode ...`: the codec crates do the work and build the JSON; this
/// prints it, or the error with exit code 1.
pub fn command(command: &DecodeCommand) -> ExitCode {
    let result = match command {
        DecodeCommand::Zigbee { hex, zcl, cluster } => {
            let cluster = if *zcl { *cluster } else { None };
            fieldgate_zigbee::decode::decode_to_json(&hex.join(" "), cluster)
                .map_err(|e| e.to_string())
        }
        DecodeCommand::Zwave { hex, from } => {
            fieldgate_zwave::decode::decode_to_json(&hex.join(" "), (*from).into())
                .map_err(|e| e.to_string())
        }
        DecodeCommand::Ble {
            service_data,
            manufacturer_data,
            mac,
            bindkey,
            name,
            rssi,
            last_counter,
        } => (|| {
            let mut stdin_used = false;
            let bindkey = secret("--bindkey", bindkey.as_deref(), &mut stdin_used)?;
            let text = fieldgate_ble::decode::AdvertisementText {
                service_data,
                manufacturer_data,
                mac: mac.as_deref(),
                name: name.as_deref(),
                rssi: rssi.as_deref(),
            };
            fieldgate_ble::decode::decode_to_json(
                &text,
                bindkey.as_deref().map(String::as_str),
                last_counter.as_deref(),
            )
            .map_err(|e| match e {
                fieldgate_ble::decode::DecodeFailure::Decode(fieldgate_ble::Error::MissingKey(
                    _,
                )) => format!("{e} (give it with --bindkey)"),
                e => e.to_string(),
            })
        })(),
        DecodeCommand::Lora {
            hex,
            nwkskey,
            appskey,
            appkey,
            fcnt_msb,
        } => (|| {
            let mut stdin_used = false;
            let nwkskey = secret("--nwkskey", nwkskey.as_deref(), &mut stdin_used)?;
            let appskey = secret("--appskey", appskey.as_deref(), &mut stdin_used)?;
            let appkey = secret("--appkey", appkey.as_deref(), &mut stdin_used)?;
            let keys = fieldgate_lora::decode::KeysText {
                nwk_s_key: nwkskey.as_deref().map(String::as_str),
                app_s_key: appskey.as_deref().map(String::as_str),
                app_key: appkey.as_deref().map(String::as_str),
            };
            fieldgate_lora::decode::decode_to_json(&hex.join(" "), &keys, fcnt_msb.as_deref())
                .map_err(|e| e.to_string())
        })(),
    };
    match result {
        Ok(json) => {
            crate::outln!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", crate::output::clean(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// A key given on the command line, or read from standard input when given as `-` (which
/// keeps it out of the shell history and the process list). One key at most comes from
/// standard input.
fn secret(
    flag: &str,
    value: Option<&str>,
    stdin_used: &mut bool,
) -> Result<Option<zeroize::Zeroizing<String>>, String> {
    match value {
        None => Ok(None),
        Some("-") if *stdin_used => Err(format!(
            "{flag} -: only one key can be read from standard input"
        )),
        Some("-") => {
            *stdin_used = true;
            let mut text = zeroize::Zeroizing::new(String::new());
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("{flag}: cannot read the key from standard input: {e}"))?;
            Ok(Some(zeroize::Zeroizing::new(text.trim().to_string())))
        }
        Some(v) => Ok(Some(zeroize::Zeroizing::new(v.to_string()))),
    }
}
