//! Over-the-air activation frames: Join-Request (device -> network) and Join-Accept
//! (network -> device), with their MICs, the join-accept cipher and the 1.0.x session keys.
//!
//! Join-Request: `MHDR | AppEUI(8) | DevEUI(8) | DevNonce(2) | MIC`, MIC = CMAC(AppKey, all before).
//! Join-Accept: `MHDR | AppNonce(3) | NetID(3) | DevAddr(4) | DLSettings | RxDelay | [CFList(16)] | MIC`,
//! MIC = CMAC(AppKey, all before), then everything after MHDR is passed through AES-ECB
//! *decrypt* under the AppKey; the device undoes it with AES-ECB *encrypt*.
//!
//! Answering a join locally (the driver checks the DevEUI is admitted, that the DevNonce
//! was not used before, and picks the DevAddr and AppNonce):
//!
//! ```
//! use fieldgate_lora::lorawan::{DlSettings, JoinAccept, PhyPayload};
//! use fieldgate_lora::{AesKey, DevAddr, JoinNonce, NetId};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let app_key: AesKey = "00112233445566778899aabbccddeeff".parse()?;
//! let wire = fieldgate_lora::types::hex_decode("000807060504030201a8a7a6a5a4a3a2a1ccdd07449f28")?;
//! let PhyPayload::JoinRequest(req) = PhyPayload::parse(&wire)? else { return Ok(()) };
//! assert!(req.verify_mic(&app_key));
//! let accept = JoinAccept::new(
//!     JoinNonce(0x00_0001),
//!     NetId(0x00_0013),
//!     DevAddr(0x2601_1234),
//!     DlSettings { rfu: false, rx1_dr_offset: 0, rx2_data_rate: 0 },
//!     1,    // RX1 delay, s
//!     None, // CFList
//! );
//! let downlink = accept.encrypt(&app_key).to_bytes(); // 17 bytes for RX1 at JOIN_ACCEPT_DELAY1
//! assert_eq!(downlink.len(), 17);
//! let session = accept.session_keys(&app_key, req.dev_nonce); // keep with DevAddr, FCnt = none yet
//! # let _ = session;
//! # Ok(()) }
//! ```

use super::crypto::{
    cmac4, constant_time_eq, join_accept_decrypt, join_accept_encrypt, Mic, SessionKeys,
};
use super::{FrameError, MType, Mhdr};
use crate::types::{AesKey, DevAddr, DevNonce, Eui64, JoinNonce, NetId};

/// A Join-Request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinRequest {
    pub mhdr: Mhdr,
    /// AppEUI in 1.0.x, JoinEUI in 1.1.
    pub join_eui: Eui64,
    pub dev_eui: Eui64,
    pub dev_nonce: DevNonce,
    pub mic: Mic,
}

impl JoinRequest {
    /// Total length on air.
    pub const LEN: usize = 23;

    pub(super) fn parse(mhdr: Mhdr, body: &[u8]) -> Result<JoinRequest, FrameError> {
        if body.len() != Self::LEN - 1 {
            return Err(FrameError::JoinRequestLength(body.len() + 1));
        }
        Ok(JoinRequest {
            mhdr,
            join_eui: Eui64::from_le_slice(&body[0..8]),
            dev_eui: Eui64::from_le_slice(&body[8..16]),
            dev_nonce: DevNonce::from_le_slice(&body[16..18]),
            mic: [body[18], body[19], body[20], body[21]],
        })
    }

    /// A Join-Request signed with `app_key`.
    pub fn new_signed(
        join_eui: Eui64,
        dev_eui: Eui64,
        dev_nonce: DevNonce,
        app_key: &AesKey,
    ) -> JoinRequest {
        let mut j = JoinRequest {
            mhdr: Mhdr::new(MType::JoinRequest),
            join_eui,
            dev_eui,
            dev_nonce,
            mic: [0; 4],
        };
        j.mic = j.compute_mic(app_key);
        j
    }

    fn msg(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::LEN);
        v.push(self.mhdr.byte());
        self.join_eui.write_le(&mut v);
        self.dev_eui.write_le(&mut v);
        self.dev_nonce.write_le(&mut v);
        v
    }

    pub fn compute_mic(&self, app_key: &AesKey) -> Mic {
        cmac4(app_key, &[&self.msg()])
    }

    pub fn verify_mic(&self, app_key: &AesKey) -> bool {
        constant_time_eq(&self.compute_mic(app_key), &self.mic)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = self.msg();
        v.extend_from_slice(&self.mic);
        v
    }
}

/// DLSettings: RX1 data-rate offset (bits 6..4) and RX2 data rate (bits 3..0). Bit 7 is
/// RFU in 1.0.x (OptNeg in 1.1) and kept because the MIC covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, serde::Serialize)]
pub struct DlSettings {
    pub rfu: bool,
    pub rx1_dr_offset: u8,
    pub rx2_data_rate: u8,
}

impl DlSettings {
    pub fn from_byte(b: u8) -> DlSettings {
        DlSettings {
            rfu: b & 0x80 != 0,
            rx1_dr_offset: (b >> 4) & 0x07,
            rx2_data_rate: b & 0x0f,
        }
    }

    pub fn byte(&self) -> u8 {
        u8::from(self.rfu) << 7 | (self.rx1_dr_offset & 0x07) << 4 | (self.rx2_data_rate & 0x0f)
    }
}

/// The optional 16-byte channel list of a Join-Accept. Byte 15 is the CFListType:
/// 0 = five extra channel frequencies (EU868 and other dynamic-plan regions),
/// 1 = channel mask (US915, AU915, CN470).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CfList(pub [u8; 16]);

impl CfList {
    /// Type 0: channels 3..=7 as frequencies in Hz (0 = channel unused). Frequencies travel
    /// in units of 100 Hz, 24 bits each.
    pub fn from_frequencies(hz: [u32; 5]) -> CfList {
        let mut b = [0u8; 16];
        for (i, f) in hz.iter().enumerate() {
            b[i * 3..i * 3 + 3].copy_from_slice(&(f / 100).to_le_bytes()[..3]);
        }
        CfList(b)
    }

    /// Type 1: channel mask blocks ChMask0..ChMask4 (16 channels each, LSB = lowest).
    pub fn from_channel_masks(masks: [u16; 5]) -> CfList {
        let mut b = [0u8; 16];
        for (i, m) in masks.iter().enumerate() {
            b[i * 2..i * 2 + 2].copy_from_slice(&m.to_le_bytes());
        }
        b[15] = 1;
        CfList(b)
    }

    pub fn list_type(&self) -> u8 {
        self.0[15]
    }

    /// The five frequencies (Hz) of a type-0 list.
    pub fn frequencies(&self) -> Option<[u32; 5]> {
        (self.list_type() == 0).then(|| {
            let mut out = [0u32; 5];
            for (i, f) in out.iter_mut().enumerate() {
                let c = &self.0[i * 3..i * 3 + 3];
                *f = u32::from_le_bytes([c[0], c[1], c[2], 0]) * 100;
            }
            out
        })
    }

    /// The channel masks of a type-1 list.
    pub fn channel_masks(&self) -> Option<[u16; 5]> {
        (self.list_type() == 1).then(|| {
            let mut out = [0u16; 5];
            for (i, m) in out.iter_mut().enumerate() {
                *m = u16::from_le_bytes([self.0[i * 2], self.0[i * 2 + 1]]);
            }
            out
        })
    }
}

/// A Join-Accept in plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinAccept {
    pub mhdr: Mhdr,
    /// AppNonce (JoinNonce in 1.1).
    pub join_nonce: JoinNonce,
    pub net_id: NetId,
    pub dev_addr: DevAddr,
    pub dl_settings: DlSettings,
    /// RxDelay byte: Del in bits 3..0 (0 and 1 both mean 1 s), upper bits RFU.
    pub rx_delay: u8,
    pub cf_list: Option<CfList>,
}

impl JoinAccept {
    /// A Join-Accept with a zero MHDR RFU field.
    pub fn new(
        join_nonce: JoinNonce,
        net_id: NetId,
        dev_addr: DevAddr,
        dl_settings: DlSettings,
        rx_delay: u8,
        cf_list: Option<CfList>,
    ) -> JoinAccept {
        JoinAccept {
            mhdr: Mhdr::new(MType::JoinAccept),
            join_nonce,
            net_id,
            dev_addr,
            dl_settings,
            rx_delay,
            cf_list,
        }
    }

    /// RECEIVE_DELAY1 in seconds that this Join-Accept sets for the session.
    pub fn rx1_delay_secs(&self) -> u8 {
        (self.rx_delay & 0x0f).max(1)
    }

    /// `MHDR | AppNonce | NetID | DevAddr | DLSettings | RxDelay | CFList`.
    fn msg(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(33);
        v.push(self.mhdr.byte());
        self.join_nonce.write_le(&mut v);
        self.net_id.write_le(&mut v);
        self.dev_addr.write_le(&mut v);
        v.push(self.dl_settings.byte());
        v.push(self.rx_delay);
        if let Some(cf) = &self.cf_list {
            v.extend_from_slice(&cf.0);
        }
        v
    }

    pub fn compute_mic(&self, app_key: &AesKey) -> Mic {
        cmac4(app_key, &[&self.msg()])
    }

    /// Signs and encrypts for the air.
    pub fn encrypt(&self, app_key: &AesKey) -> EncryptedJoinAccept {
        let mic = self.compute_mic(app_key);
        let mut v = self.msg();
        v.extend_from_slice(&mic);
        let mut body = v.split_off(1);
        join_accept_encrypt(app_key, &mut body);
        EncryptedJoinAccept {
            mhdr: self.mhdr,
            body,
        }
    }

    /// The session keys this Join-Accept sets up with the Join-Request's `dev_nonce`.
    pub fn session_keys(&self, app_key: &AesKey, dev_nonce: DevNonce) -> SessionKeys {
        SessionKeys::derive(app_key, self.join_nonce, self.net_id, dev_nonce)
    }

    fn from_plain(mhdr: Mhdr, plain: &[u8]) -> (JoinAccept, Mic) {
        // plain: 16 or 32 bytes, MIC last.
        let (fields, mic) = plain.split_at(plain.len() - 4);
        let cf_list = (fields.len() == 28).then(|| {
            let mut b = [0u8; 16];
            b.copy_from_slice(&fields[12..28]);
            CfList(b)
        });
        let accept = JoinAccept {
            mhdr,
            join_nonce: JoinNonce::from_le_slice(&fields[0..3]),
            net_id: NetId::from_le_slice(&fields[3..6]),
            dev_addr: DevAddr::from_le_slice(&fields[6..10]),
            dl_settings: DlSettings::from_byte(fields[10]),
            rx_delay: fields[11],
            cf_list,
        };
        (accept, [mic[0], mic[1], mic[2], mic[3]])
    }
}

/// A Join-Accept as on air (encrypted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedJoinAccept {
    pub mhdr: Mhdr,
    /// Everything after MHDR, MIC included: 16 or 32 bytes.
    pub body: Vec<u8>,
}

impl EncryptedJoinAccept {
    pub(super) fn parse(mhdr: Mhdr, body: &[u8]) -> Result<EncryptedJoinAccept, FrameError> {
        if body.len() != 16 && body.len() != 32 {
            return Err(FrameError::JoinAcceptLength(body.len() + 1));
        }
        Ok(EncryptedJoinAccept {
            mhdr,
            body: body.to_vec(),
        })
    }

    /// Decrypts without checking the MIC; returns the fields and the MIC they carried.
    pub fn decrypt(&self, app_key: &AesKey) -> Result<(JoinAccept, Mic), FrameError> {
        if self.body.len() != 16 && self.body.len() != 32 {
            return Err(FrameError::JoinAcceptLength(self.body.len() + 1));
        }
        let mut plain = self.body.clone();
        join_accept_decrypt(app_key, &mut plain);
        Ok(JoinAccept::from_plain(self.mhdr, &plain))
    }

    /// Decrypts and checks the MIC.
    pub fn open(&self, app_key: &AesKey) -> Result<JoinAccept, FrameError> {
        let (accept, mic) = self.decrypt(app_key)?;
        if !constant_time_eq(&accept.compute_mic(app_key), &mic) {
            return Err(FrameError::MicMismatch);
        }
        Ok(accept)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + self.body.len());
        v.push(self.mhdr.byte());
        v.extend_from_slice(&self.body);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::super::PhyPayload;
    use super::*;
    use crate::types::{hex_decode, hex_encode};

    fn app_key() -> AesKey {
        "00112233445566778899aabbccddeeff".parse().unwrap()
    }

    /// Join-Accept from the `lorawan` crate docs (reference §5, cross-checked there with
    /// lora-packet 0.9.3 and lrwn 4.13.0): decrypts to `20c70b5701112280190302000043485bbc`.
    #[test]
    fn lorawan_crate_join_accept() {
        let wire = hex_decode("20493eeb51fba2116f810edb3742975142").unwrap();
        let PhyPayload::JoinAccept(enc) = PhyPayload::parse(&wire).unwrap() else {
            panic!("not a join-accept")
        };
        let (plain, mic) = enc.decrypt(&app_key()).unwrap();
        assert_eq!(mic, [0x43, 0x48, 0x5b, 0xbc]);
        assert_eq!(plain.dev_addr, DevAddr(0x0203_1980));
        assert_eq!(plain.join_nonce, JoinNonce(0x57_0bc7));
        assert_eq!(plain.net_id, NetId(0x22_1101));
        assert_eq!(plain.cf_list, None);
        let opened = enc.open(&app_key()).unwrap();
        assert_eq!(opened, plain);
        assert_eq!(opened.encrypt(&app_key()).to_bytes(), wire);
        let mut plain_wire = opened.msg();
        plain_wire.extend_from_slice(&mic);
        assert_eq!(
            hex_encode(&plain_wire),
            "20c70b5701112280190302000043485bbc"
        );
        // Wrong key: the MIC check refuses it.
        let other: AesKey = "ffeeddccbbaa99887766554433221100".parse().unwrap();
        assert_eq!(enc.open(&other), Err(FrameError::MicMismatch));

        // Session keys with DevNonce on the wire as `cc dd` (same source).
        let keys = opened.session_keys(&app_key(), DevNonce(0xddcc));
        assert_eq!(
            keys.nwk_s_key,
            "406b1337d80753820540e280f81299e9".parse().unwrap()
        );
        assert_eq!(
            keys.app_s_key,
            "4f5c409751841b6dfecbd38402237942".parse().unwrap()
        );
    }

    /// Join-Request built in the reference (§5) and verified there with lora-packet's verifyMIC.
    #[test]
    fn reference_join_request() {
        let j = JoinRequest::new_signed(
            "0102030405060708".parse().unwrap(),
            "a1a2a3a4a5a6a7a8".parse().unwrap(),
            DevNonce(0xddcc),
            &app_key(),
        );
        let wire = j.to_bytes();
        assert_eq!(
            hex_encode(&wire),
            "000807060504030201a8a7a6a5a4a3a2a1ccdd07449f28"
        );
        let PhyPayload::JoinRequest(back) = PhyPayload::parse(&wire).unwrap() else {
            panic!()
        };
        assert_eq!(back, j);
        assert!(back.verify_mic(&app_key()));
        assert!(!back.verify_mic(&"00112233445566778899aabbccddeefe".parse().unwrap()));
    }

    #[test]
    fn join_accept_with_cflist_round_trips() {
        let cf = CfList::from_frequencies([867_100_000, 867_300_000, 867_500_000, 867_700_000, 0]);
        assert_eq!(
            cf.frequencies(),
            Some([867_100_000, 867_300_000, 867_500_000, 867_700_000, 0])
        );
        assert_eq!(cf.channel_masks(), None);
        let ja = JoinAccept::new(
            JoinNonce(0xabcdef),
            NetId(0x13),
            DevAddr(0x2601_1234),
            DlSettings {
                rfu: false,
                rx1_dr_offset: 2,
                rx2_data_rate: 3,
            },
            1,
            Some(cf),
        );
        let wire = ja.encrypt(&app_key()).to_bytes();
        assert_eq!(wire.len(), 33);
        let PhyPayload::JoinAccept(enc) = PhyPayload::parse(&wire).unwrap() else {
            panic!()
        };
        assert_eq!(enc.open(&app_key()).unwrap(), ja);
        let masks = CfList::from_channel_masks([0xff00, 0, 0, 0, 0x0001]);
        assert_eq!(masks.channel_masks(), Some([0xff00, 0, 0, 0, 1]));
        assert_eq!(masks.frequencies(), None);
    }
}
