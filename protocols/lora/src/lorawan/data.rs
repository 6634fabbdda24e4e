//! Data frames (MType 010..101): `MHDR | DevAddr | FCtrl | FCnt | FOpts | [FPort | FRMPayload] | MIC`.
//!
//! `DataFrame` is the frame as on air (FRMPayload encrypted, 16-bit FCnt); `DataMessage` is
//! its plaintext content with the full 32-bit counter. `DataFrame::seal` goes from the
//! second to the first, `DataFrame::open` back (MIC checked before anything is decrypted).

use super::crypto::{constant_time_eq, data_mic, xor_frm_payload, Mic, SessionKeys};
use super::mac::{self, MacCommand, MacError};
use super::{FrameError, MType, Mhdr};
use crate::types::{AesKey, DevAddr, Direction};

/// Frame control flags (FOptsLen is derived from `fopts`).
///
/// Bit 6 is ADRACKReq in an uplink and RFU in a downlink; bit 4 is FPending in a downlink
/// and ClassB in an uplink (1.0.2 and later). The fields are named for their common use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, serde::Serialize)]
pub struct FCtrl {
    pub adr: bool,
    pub adr_ack_req: bool,
    pub ack: bool,
    pub f_pending: bool,
}

impl FCtrl {
    /// Reads the flag bits; the low nibble (FOptsLen) is the caller's.
    pub fn from_byte(b: u8) -> FCtrl {
        FCtrl {
            adr: b & 0x80 != 0,
            adr_ack_req: b & 0x40 != 0,
            ack: b & 0x20 != 0,
            f_pending: b & 0x10 != 0,
        }
    }

    /// The FCtrl byte with `fopts_len` (0..=15) in the low nibble.
    pub fn byte(&self, fopts_len: u8) -> u8 {
        u8::from(self.adr) << 7
            | u8::from(self.adr_ack_req) << 6
            | u8::from(self.ack) << 5
            | u8::from(self.f_pending) << 4
            | (fopts_len & 0x0f)
    }

    /// Bit 4 read as an uplink's ClassB flag.
    pub fn class_b(&self) -> bool {
        self.f_pending
    }
}

/// A data frame as on air.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFrame {
    /// One of the four data MTypes.
    pub mhdr: Mhdr,
    pub dev_addr: DevAddr,
    pub fctrl: FCtrl,
    /// The 16 low bits of the frame counter, as sent.
    pub fcnt: u16,
    /// Piggybacked MAC commands (0..=15 bytes, plaintext in 1.0.x).
    pub fopts: Vec<u8>,
    pub fport: Option<u8>,
    /// Encrypted application data (or MAC commands on FPort 0).
    pub frm_payload: Vec<u8>,
    pub mic: Mic,
}

/// The plaintext content of a data frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataMessage {
    pub direction: Direction,
    pub confirmed: bool,
    pub dev_addr: DevAddr,
    pub fctrl: FCtrl,
    /// The full 32-bit frame counter (only its 16 low bits travel).
    pub fcnt: u32,
    pub fopts: Vec<u8>,
    pub fport: Option<u8>,
    /// Decrypted FRMPayload.
    pub payload: Vec<u8>,
}

impl DataMessage {
    /// The MAC commands this message carries: FOpts, or the payload when FPort is 0.
    pub fn mac_commands(&self) -> Result<Vec<MacCommand>, MacError> {
        let mut out = mac::parse_commands(self.direction, &self.fopts)?;
        if self.fport == Some(0) {
            out.extend(mac::parse_commands(self.direction, &self.payload)?);
        }
        Ok(out)
    }
}

impl DataFrame {
    pub(super) fn parse(mhdr: Mhdr, body: &[u8]) -> Result<DataFrame, FrameError> {
        // DevAddr(4) FCtrl(1) FCnt(2) ... MIC(4)
        const MIN: usize = 4 + 1 + 2 + 4;
        if body.len() < MIN {
            return Err(FrameError::Truncated {
                what: "data frame",
                need: MIN + 1,
                got: body.len() + 1,
            });
        }
        let (mac_payload, mic) = body.split_at(body.len() - 4);
        let fctrl_byte = mac_payload[4];
        let fopts_len = usize::from(fctrl_byte & 0x0f);
        let fhdr_len = 7 + fopts_len;
        if mac_payload.len() < fhdr_len {
            return Err(FrameError::Truncated {
                what: "FHDR with its FOpts",
                need: 1 + fhdr_len + 4,
                got: 1 + body.len(),
            });
        }
        let rest = &mac_payload[fhdr_len..];
        let (fport, frm_payload) = match rest.split_first() {
            Some((&port, payload)) => (Some(port), payload.to_vec()),
            None => (None, Vec::new()),
        };
        Ok(DataFrame {
            mhdr,
            dev_addr: DevAddr::from_le_slice(&mac_payload[0..4]),
            fctrl: FCtrl::from_byte(fctrl_byte),
            fcnt: u16::from_le_bytes([mac_payload[5], mac_payload[6]]),
            fopts: mac_payload[7..fhdr_len].to_vec(),
            fport,
            frm_payload,
            mic: [mic[0], mic[1], mic[2], mic[3]],
        })
    }

    /// Uplink or downlink, from the MType.
    pub fn direction(&self) -> Direction {
        self.mhdr
            .mtype
            .data_direction()
            .unwrap_or(Direction::Uplink)
    }

    pub fn confirmed(&self) -> bool {
        matches!(
            self.mhdr.mtype,
            MType::ConfirmedDataUp | MType::ConfirmedDataDown
        )
    }

    /// `MHDR | FHDR | FPort | FRMPayload`: what the MIC covers.
    fn msg(&self) -> Result<Vec<u8>, FrameError> {
        if self.mhdr.mtype.data_direction().is_none() {
            return Err(FrameError::NotDataType(self.mhdr.mtype));
        }
        if self.fopts.len() > 15 {
            return Err(FrameError::FOptsTooLong(self.fopts.len()));
        }
        if self.fport.is_none() && !self.frm_payload.is_empty() {
            return Err(FrameError::PayloadWithoutPort);
        }
        let mut v = Vec::with_capacity(12 + self.fopts.len() + self.frm_payload.len() + 4);
        v.push(self.mhdr.byte());
        self.dev_addr.write_le(&mut v);
        v.push(self.fctrl.byte(self.fopts.len() as u8));
        v.extend_from_slice(&self.fcnt.to_le_bytes());
        v.extend_from_slice(&self.fopts);
        if let Some(port) = self.fport {
            v.push(port);
            v.extend_from_slice(&self.frm_payload);
        }
        Ok(v)
    }

    /// The wire bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FrameError> {
        let mut v = self.msg()?;
        v.extend_from_slice(&self.mic);
        Ok(v)
    }

    /// The MIC this frame should carry under `nwk_s_key` at the full counter `fcnt`.
    pub fn compute_mic(&self, nwk_s_key: &AesKey, fcnt: u32) -> Result<Mic, FrameError> {
        self.check_counter(fcnt)?;
        Ok(data_mic(
            nwk_s_key,
            self.direction(),
            self.dev_addr,
            fcnt,
            &self.msg()?,
        ))
    }

    /// True when the MIC is right for `nwk_s_key` and the full counter `fcnt`.
    pub fn verify_mic(&self, nwk_s_key: &AesKey, fcnt: u32) -> bool {
        self.compute_mic(nwk_s_key, fcnt)
            .is_ok_and(|m| constant_time_eq(&m, &self.mic))
    }

    /// The decrypted FRMPayload (no MIC check: see `open`).
    pub fn decrypt_payload(&self, keys: &SessionKeys, fcnt: u32) -> Vec<u8> {
        let mut data = self.frm_payload.clone();
        if let Some(port) = self.fport {
            xor_frm_payload(
                keys.payload_key(port),
                self.direction(),
                self.dev_addr,
                fcnt,
                &mut data,
            );
        }
        data
    }

    /// Checks the MIC, then decrypts. Refuses a frame with MAC commands in both FOpts
    /// and an FPort 0 payload, as the spec requires.
    pub fn open(&self, keys: &SessionKeys, fcnt: u32) -> Result<DataMessage, FrameError> {
        let mic = self.compute_mic(&keys.nwk_s_key, fcnt)?;
        if !constant_time_eq(&mic, &self.mic) {
            return Err(FrameError::MicMismatch);
        }
        if self.fport == Some(0) && !self.fopts.is_empty() {
            return Err(FrameError::FOptsWithPortZero);
        }
        Ok(DataMessage {
            direction: self.direction(),
            confirmed: self.confirmed(),
            dev_addr: self.dev_addr,
            fctrl: self.fctrl,
            fcnt,
            fopts: self.fopts.clone(),
            fport: self.fport,
            payload: self.decrypt_payload(keys, fcnt),
        })
    }

    /// Encrypts and signs a message into a frame.
    pub fn seal(msg: &DataMessage, keys: &SessionKeys) -> Result<DataFrame, FrameError> {
        if msg.fport == Some(0) && !msg.fopts.is_empty() {
            return Err(FrameError::FOptsWithPortZero);
        }
        let mut frame = DataFrame {
            mhdr: Mhdr::new(MType::data(msg.direction, msg.confirmed)),
            dev_addr: msg.dev_addr,
            fctrl: msg.fctrl,
            fcnt: msg.fcnt as u16,
            fopts: msg.fopts.clone(),
            fport: msg.fport,
            frm_payload: msg.payload.clone(),
            mic: [0; 4],
        };
        if let Some(port) = msg.fport {
            xor_frm_payload(
                keys.payload_key(port),
                msg.direction,
                msg.dev_addr,
                msg.fcnt,
                &mut frame.frm_payload,
            );
        }
        let len = frame.msg()?.len() + 4;
        if len > super::MAX_PHY_PAYLOAD {
            return Err(FrameError::TooLong(len));
        }
        frame.mic = frame.compute_mic(&keys.nwk_s_key, msg.fcnt)?;
        Ok(frame)
    }

    fn check_counter(&self, fcnt: u32) -> Result<(), FrameError> {
        if fcnt as u16 != self.fcnt {
            return Err(FrameError::CounterMismatch {
                full: fcnt,
                on_air: self.fcnt,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::PhyPayload;
    use super::*;
    use crate::types::hex_decode;

    fn keys() -> SessionKeys {
        SessionKeys {
            nwk_s_key: "44024241ed4ce9a68c6a8bc055233fd3".parse().unwrap(),
            app_s_key: "ec925802ae430ca77fd3dd73cb2cc588".parse().unwrap(),
        }
    }

    /// The lora-packet README uplink (reference §5; lora-packet 0.9.3, lorawan 0.9.0 and
    /// lrwn 4.13.0 agree on it): DevAddr 49be7df1, FCnt 2, FPort 1, MIC 2b11ff0d, "test".
    #[test]
    fn lora_packet_readme_uplink() {
        let wire = hex_decode("40F17DBE4900020001954378762B11FF0D").unwrap();
        let PhyPayload::Data(frame) = PhyPayload::parse(&wire).unwrap() else {
            panic!("not a data frame");
        };
        assert_eq!(frame.dev_addr, DevAddr(0x49be7df1));
        assert_eq!(frame.fcnt, 2);
        assert_eq!(frame.fport, Some(1));
        assert_eq!(frame.mic, [0x2b, 0x11, 0xff, 0x0d]);
        assert_eq!(frame.direction(), Direction::Uplink);
        assert!(frame.verify_mic(&keys().nwk_s_key, 2));
        assert!(!frame.verify_mic(&keys().nwk_s_key, 0x1_0002));
        assert!(!frame.verify_mic(&keys().app_s_key, 2));
        let msg = frame.open(&keys(), 2).unwrap();
        assert_eq!(msg.payload, b"test");
        assert_eq!(DataFrame::seal(&msg, &keys()).unwrap(), frame);
        assert_eq!(frame.to_bytes().unwrap(), wire);
        assert_eq!(
            frame.open(&keys(), 3),
            Err(FrameError::CounterMismatch { full: 3, on_air: 2 })
        );
    }

    #[test]
    fn frames_without_port_and_with_fopts() {
        let msg = DataMessage {
            direction: Direction::Downlink,
            confirmed: true,
            dev_addr: DevAddr(0x0102_0304),
            fctrl: FCtrl {
                adr: true,
                ack: true,
                f_pending: true,
                adr_ack_req: false,
            },
            fcnt: 0x0003_ffff,
            fopts: vec![0x02, 7, 1],
            fport: None,
            payload: vec![],
        };
        let frame = DataFrame::seal(&msg, &keys()).unwrap();
        let wire = frame.to_bytes().unwrap();
        assert_eq!(wire[0], 0xa0);
        assert_eq!(wire[5], 0x80 | 0x20 | 0x10 | 3);
        let PhyPayload::Data(back) = PhyPayload::parse(&wire).unwrap() else {
            panic!()
        };
        assert_eq!(back.open(&keys(), 0x0003_ffff).unwrap(), msg);
        assert_eq!(
            back.open(&keys(), 0x0002_ffff),
            Err(FrameError::MicMismatch)
        );
    }

    #[test]
    fn mac_commands_in_two_places_are_refused() {
        let mut msg = DataMessage {
            direction: Direction::Uplink,
            confirmed: false,
            dev_addr: DevAddr(1),
            fctrl: FCtrl::default(),
            fcnt: 1,
            fopts: vec![0x02],
            fport: Some(0),
            payload: vec![0x02],
        };
        assert_eq!(
            DataFrame::seal(&msg, &keys()),
            Err(FrameError::FOptsWithPortZero)
        );
        msg.fopts.clear();
        let f = DataFrame::seal(&msg, &keys()).unwrap();
        assert_eq!(f.open(&keys(), 1).unwrap().mac_commands().unwrap().len(), 1);
    }
}
