//! Device-side LoRaWAN emulator (feature `emulator`): end devices that build the frames a
//! real one sends (Join-Requests, data uplinks with Cayenne LPP payloads) and read what a
//! network answers (Join-Accepts, downlinks), plus the packet forwarder's side of GWMP
//! (PUSH_DATA with an `rxpk`, PULL_DATA, TX_ACK). Pure: no IO and no clock; the caller
//! sends the bytes and supplies the concentrator time.
//!
//! Faults a test can ask for: a frame with a wrong MIC, a replayed frame counter, a
//! Join-Request that reuses an earlier DevNonce.

use crate::gwmp::{
    CrcStatus, DataRate, Modulation, Packet, Payload, PullResp, PushData, RxPk, TxAck, TxAckError,
    TxPkAck,
};
use crate::lorawan::{DataFrame, DataMessage, FCtrl, FrameError, PhyPayload, SessionKeys};
use crate::{AesKey, DevAddr, DevNonce, Direction, Eui64};

/// How an emulated device is activated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// Over the air: it must join before it sends data.
    Otaa { join_eui: Eui64, app_key: AesKey },
    /// By personalization: it has a session from the start.
    Abp {
        dev_addr: DevAddr,
        keys: SessionKeys,
    },
}

/// One end device.
#[derive(Debug, Clone)]
pub struct EmulatedDevice {
    pub dev_eui: Eui64,
    pub activation: Activation,
    /// The session, once joined (OTAA) or from the start (ABP).
    pub session: Option<(DevAddr, SessionKeys)>,
    /// The next uplink frame counter (32 bits; 16 go on air).
    pub fcnt_up: u32,
    /// The next DevNonce a Join-Request uses.
    pub next_dev_nonce: u16,
    /// The DevNonce of the last Join-Request sent (to open its Join-Accept).
    pub last_dev_nonce: Option<DevNonce>,
    /// The last uplink sent, for [`EmulatedDevice::replay_last`].
    last_uplink: Option<Vec<u8>>,
}

/// What a device made of a downlink addressed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A Join-Accept that opened with its AppKey: it now has a session.
    Joined { dev_addr: DevAddr },
    /// A data downlink for its session.
    Data(DataMessage),
    /// Not for this device, or not readable with its keys.
    NotForMe,
}

impl EmulatedDevice {
    pub fn otaa(dev_eui: Eui64, join_eui: Eui64, app_key: AesKey) -> EmulatedDevice {
        EmulatedDevice {
            dev_eui,
            activation: Activation::Otaa { join_eui, app_key },
            session: None,
            fcnt_up: 0,
            next_dev_nonce: 1,
            last_dev_nonce: None,
            last_uplink: None,
        }
    }

    pub fn abp(dev_eui: Eui64, dev_addr: DevAddr, keys: SessionKeys) -> EmulatedDevice {
        EmulatedDevice {
            dev_eui,
            activation: Activation::Abp { dev_addr, keys },
            session: Some((dev_addr, keys)),
            fcnt_up: 0,
            next_dev_nonce: 0,
            last_dev_nonce: None,
            last_uplink: None,
        }
    }

    /// A Join-Request with a fresh DevNonce (OTAA devices only).
    pub fn join_request(&mut self) -> Option<Vec<u8>> {
        let nonce = DevNonce(self.next_dev_nonce);
        self.next_dev_nonce = self.next_dev_nonce.wrapping_add(1);
        self.join_request_with(nonce)
    }

    /// Fault: a Join-Request that reuses the DevNonce of the previous one.
    pub fn join_request_reusing_nonce(&mut self) -> Option<Vec<u8>> {
        let nonce = self.last_dev_nonce?;
        self.join_request_with(nonce)
    }

    fn join_request_with(&mut self, nonce: DevNonce) -> Option<Vec<u8>> {
        let Activation::Otaa { join_eui, app_key } = &self.activation else {
            return None;
        };
        self.last_dev_nonce = Some(nonce);
        let req = crate::lorawan::JoinRequest::new_signed(*join_eui, self.dev_eui, nonce, app_key);
        Some(req.to_bytes())
    }

    /// A data uplink on `fport` carrying `payload` (encrypted, MIC'd); `None` before a join.
    pub fn uplink(&mut self, fport: u8, payload: &[u8], confirmed: bool) -> Option<Vec<u8>> {
        self.uplink_with(fport, payload, confirmed, Vec::new())
    }

    /// A data uplink carrying MAC commands in FOpts (e.g. LinkCheckReq `[0x02]`).
    pub fn uplink_with(
        &mut self,
        fport: u8,
        payload: &[u8],
        confirmed: bool,
        fopts: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let (dev_addr, keys) = self.session?;
        let msg = DataMessage {
            direction: Direction::Uplink,
            confirmed,
            dev_addr,
            fctrl: FCtrl::default(),
            fcnt: self.fcnt_up,
            fopts,
            fport: Some(fport),
            payload: payload.to_vec(),
        };
        let bytes = DataFrame::seal(&msg, &keys).ok()?.to_bytes().ok()?;
        self.fcnt_up = self.fcnt_up.wrapping_add(1);
        self.last_uplink = Some(bytes.clone());
        Some(bytes)
    }

    /// Fault: the next uplink with its MIC flipped (the counter still advances).
    pub fn uplink_bad_mic(&mut self, fport: u8, payload: &[u8]) -> Option<Vec<u8>> {
        let previous = self.last_uplink.take();
        let mut bytes = self.uplink(fport, payload, false)?;
        // A frame the network never accepted is not something to replay.
        self.last_uplink = previous;
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        Some(bytes)
    }

    /// Fault: the last uplink again, byte for byte (a replay).
    pub fn replay_last(&self) -> Option<Vec<u8>> {
        self.last_uplink.clone()
    }

    /// Reads a downlink PHYPayload: a Join-Accept (taking the session it gives) or a data
    /// downlink for this device's session.
    pub fn hear(&mut self, phy: &[u8]) -> Result<Heard, FrameError> {
        match PhyPayload::parse(phy)? {
            PhyPayload::JoinAccept(enc) => {
                let (Activation::Otaa { app_key, .. }, Some(nonce)) =
                    (&self.activation, self.last_dev_nonce)
                else {
                    return Ok(Heard::NotForMe);
                };
                let Ok(accept) = enc.open(app_key) else {
                    return Ok(Heard::NotForMe);
                };
                let keys = accept.session_keys(app_key, nonce);
                self.session = Some((accept.dev_addr, keys));
                self.fcnt_up = 0;
                Ok(Heard::Joined {
                    dev_addr: accept.dev_addr,
                })
            }
            PhyPayload::Data(frame) if frame.direction() == Direction::Downlink => {
                let Some((addr, keys)) = self.session else {
                    return Ok(Heard::NotForMe);
                };
                if frame.dev_addr != addr {
                    return Ok(Heard::NotForMe);
                }
                // Downlink counters are small in an emulation: the 16 bits are the counter.
                match frame.open(&keys, u32::from(frame.fcnt)) {
                    Ok(msg) => Ok(Heard::Data(msg)),
                    Err(_) => Ok(Heard::NotForMe),
                }
            }
            _ => Ok(Heard::NotForMe),
        }
    }
}

/// The packet forwarder's side of GWMP for an emulated concentrator.
#[derive(Debug, Clone)]
pub struct Forwarder {
    pub gateway: Eui64,
    token: u16,
    /// Concentrator clock, µs (wraps like the real one).
    pub tmst: u32,
}

impl Forwarder {
    pub fn new(gateway: Eui64) -> Forwarder {
        Forwarder {
            gateway,
            token: 0x1000,
            tmst: 1_000_000,
        }
    }

    fn next_token(&mut self) -> u16 {
        self.token = self.token.wrapping_add(1);
        self.token
    }

    /// PULL_DATA: the keep-alive that opens the downlink path.
    pub fn pull_data(&mut self) -> Vec<u8> {
        Packet::PullData {
            token: self.next_token(),
            gateway: self.gateway,
        }
        .to_bytes()
    }

    /// PUSH_DATA carrying one frame heard at `freq_hz`, SF`sf`/125 kHz, at concentrator time
    /// `tmst`.
    pub fn push_frame(&mut self, phy: &[u8], tmst: u32, freq_hz: u32, sf: u8) -> Vec<u8> {
        let rxpk = RxPk {
            time: None,
            tmms: None,
            tmst,
            freq: crate::gwmp::hz_to_mhz(freq_hz),
            chan: 0,
            rfch: 0,
            stat: CrcStatus::Ok,
            modu: Modulation::Lora,
            datr: DataRate::Lora { sf, bw_khz: 125 },
            codr: Some("4/5".into()),
            rssi: -57,
            lsnr: Some(9.5),
            size: phy.len() as u16,
            data: Payload(phy.to_vec()),
        };
        Packet::PushData {
            token: self.next_token(),
            gateway: self.gateway,
            data: PushData {
                rxpk: vec![rxpk],
                ..PushData::default()
            },
        }
        .to_bytes()
    }

    /// TX_ACK for a PULL_RESP with `token`: accepted, or the error a real forwarder reports.
    pub fn tx_ack(&self, token: u16, error: Option<TxAckError>) -> Vec<u8> {
        Packet::TxAck {
            token,
            gateway: self.gateway,
            ack: Some(TxAck {
                txpk_ack: TxPkAck { error },
            }),
        }
        .to_bytes()
    }

    /// A PULL_RESP's token and downlink, if `datagram` is one.
    pub fn pull_resp(datagram: &[u8]) -> Option<(u16, PullResp)> {
        match Packet::parse(datagram).ok()? {
            Packet::PullResp { token, data } => Some((token, data)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lorawan::{DlSettings, JoinAccept};
    use crate::{JoinNonce, NetId};

    fn key(b: u8) -> AesKey {
        AesKey([b; 16])
    }

    #[test]
    fn otaa_device_joins_with_the_accept_it_is_sent_and_uplinks_open_with_derived_keys() {
        let mut dev = EmulatedDevice::otaa(Eui64(0xa1), Eui64(0x01), key(7));
        let req = dev.join_request().unwrap();
        let PhyPayload::JoinRequest(jr) = PhyPayload::parse(&req).unwrap() else {
            panic!("not a join request")
        };
        assert!(jr.verify_mic(&key(7)));
        let accept = JoinAccept::new(
            JoinNonce(5),
            NetId(0x13),
            DevAddr(0x2600_0001),
            DlSettings::from_byte(0),
            1,
            None,
        );
        let heard = dev.hear(&accept.encrypt(&key(7)).to_bytes()).unwrap();
        assert_eq!(
            heard,
            Heard::Joined {
                dev_addr: DevAddr(0x2600_0001)
            }
        );
        let keys = accept.session_keys(&key(7), jr.dev_nonce);
        let up = dev.uplink(2, &[0x01, 0x67, 0x00, 0xd2], false).unwrap();
        let PhyPayload::Data(f) = PhyPayload::parse(&up).unwrap() else {
            panic!()
        };
        assert_eq!(f.open(&keys, 0).unwrap().payload, [0x01, 0x67, 0x00, 0xd2]);
        assert_eq!(dev.replay_last().unwrap(), up);
        let bad = dev.uplink_bad_mic(2, &[1]).unwrap();
        assert_eq!(dev.replay_last().unwrap(), up);
        let PhyPayload::Data(f) = PhyPayload::parse(&bad).unwrap() else {
            panic!()
        };
        assert!(!f.verify_mic(&keys.nwk_s_key, 1));
        let again = dev.join_request_reusing_nonce().unwrap();
        assert_eq!(&again[17..19], &req[17..19]);
    }

    #[test]
    fn forwarder_datagrams_parse_as_gwmp() {
        let mut fwd = Forwarder::new(Eui64(0x0102_0304_0506_0708));
        assert!(matches!(
            Packet::parse(&fwd.pull_data()).unwrap(),
            Packet::PullData { .. }
        ));
        let p = Packet::parse(&fwd.push_frame(&[0x40, 1, 2], 42, 868_100_000, 7)).unwrap();
        let Packet::PushData { data, .. } = p else {
            panic!()
        };
        assert_eq!(data.rxpk[0].tmst, 42);
        assert_eq!(data.rxpk[0].freq_hz(), 868_100_000);
    }
}
