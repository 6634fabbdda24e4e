//! The LoRaWAN devices this gateway owns and their sessions: provisioned keys (OTAA or
//! ABP), the active session (DevAddr, session keys, frame counters) and every DevNonce an
//! OTAA device has used. Pure state, no IO: the driver loads it from the credentials table,
//! asks it what a frame means, and persists [`SessionState`] before it acts on the answer.
//!
//! Refusals are typed ([`Refusal`]) so the driver can count them and have the hub audit
//! them; nothing here panics on a frame.

use std::collections::{BTreeSet, HashMap};

use fieldgate_lora::lorawan::{
    reconstruct_fcnt, DataFrame, DataMessage, DlSettings, EncryptedJoinAccept, FcntError,
    FcntVerdict, JoinAccept, JoinRequest, SessionKeys, MAX_FCNT_GAP,
};
use fieldgate_lora::types::hex_encode;
use fieldgate_lora::{AesKey, DevAddr, DevNonce, Eui64, JoinNonce, NetId};
use serde::{Deserialize, Serialize};

use super::options::Decoder;

/// Credential kind of a device's session state (owner `lora:<DevEUI>`), sealed like every
/// credential: it holds the session keys.
pub const SESSION_KIND: &str = "lorawan_session";

/// OTAA keys as provisioned (credential `lorawan_otaa`, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtaaCredential {
    pub join_eui: String,
    pub app_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<Decoder>,
}

/// An ABP session as provisioned (credential `lorawan_abp`, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbpCredential {
    pub dev_addr: String,
    pub nwk_s_key: String,
    pub app_s_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<Decoder>,
}

/// What survives a restart (credential [`SESSION_KIND`], JSON): the session and its
/// counters, and the DevNonces already used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nwk_s_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_s_key: Option<String>,
    /// The last accepted uplink counter (32 bits).
    #[serde(default)]
    pub fcnt_up: Option<u32>,
    #[serde(default)]
    pub fcnt_down: u32,
    #[serde(default)]
    pub dev_nonces: BTreeSet<u16>,
    #[serde(default)]
    pub join_nonce: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub dev_addr: DevAddr,
    pub keys: SessionKeys,
    pub fcnt_up: Option<u32>,
    pub fcnt_down: u32,
}

#[derive(Debug, Clone)]
pub struct Device {
    pub dev_eui: Eui64,
    pub otaa: Option<(Eui64, AesKey)>,
    pub session: Option<Session>,
    pub dev_nonces: BTreeSet<u16>,
    pub join_nonce: u32,
    pub decoder: Option<Decoder>,
}

impl Device {
    fn new(dev_eui: Eui64) -> Device {
        Device {
            dev_eui,
            otaa: None,
            session: None,
            dev_nonces: BTreeSet::new(),
            join_nonce: 0,
            decoder: None,
        }
    }

    /// What to persist for it now.
    pub fn state(&self) -> SessionState {
        SessionState {
            dev_addr: self.session.map(|s| s.dev_addr.to_string()),
            nwk_s_key: self
                .session
                .map(|s| hex_encode(s.keys.nwk_s_key.as_bytes())),
            app_s_key: self
                .session
                .map(|s| hex_encode(s.keys.app_s_key.as_bytes())),
            fcnt_up: self.session.and_then(|s| s.fcnt_up),
            fcnt_down: self.session.map_or(0, |s| s.fcnt_down),
            dev_nonces: self.dev_nonces.clone(),
            join_nonce: self.join_nonce,
        }
    }
}

/// Why a frame was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no device of this gateway has DevAddr {0}")]
    UnknownDevAddr(DevAddr),
    #[error("no device of this gateway has DevEUI {0}")]
    UnknownDevEui(Eui64),
    #[error("Join-Request from a device whose keys were removed: add them again to let it join")]
    NoKeys { dev_eui: Eui64 },
    #[error("Join-Request MIC does not match the provisioned AppKey")]
    JoinBadMic { dev_eui: Eui64 },
    #[error("Join-Request for JoinEUI {got}, provisioned with {expected}")]
    WrongJoinEui {
        dev_eui: Eui64,
        got: Eui64,
        expected: Eui64,
    },
    #[error("Join-Request from a new device outside a join window: open one (`fieldgate pair <radio>`) for its first join")]
    JoinWindowClosed { dev_eui: Eui64 },
    #[error("DevNonce {nonce} was used before: a replayed Join-Request")]
    DevNonceReused { dev_eui: Eui64, nonce: DevNonce },
    #[error("MIC does not match the session keys (FCnt {fcnt})")]
    BadMic { dev_eui: Eui64, fcnt: u32 },
    #[error("frame counter {fcnt} was already accepted: a replayed uplink")]
    Replay { dev_eui: Eui64, fcnt: u32 },
    #[error("{detail}")]
    Counter { dev_eui: Eui64, detail: String },
}

impl Refusal {
    /// The device it concerns, when the frame named one of ours.
    pub fn device(&self) -> Option<Eui64> {
        match self {
            Refusal::UnknownDevAddr(_) | Refusal::UnknownDevEui(_) => None,
            Refusal::NoKeys { dev_eui }
            | Refusal::JoinWindowClosed { dev_eui }
            | Refusal::JoinBadMic { dev_eui }
            | Refusal::WrongJoinEui { dev_eui, .. }
            | Refusal::DevNonceReused { dev_eui, .. }
            | Refusal::BadMic { dev_eui, .. }
            | Refusal::Replay { dev_eui, .. }
            | Refusal::Counter { dev_eui, .. } => Some(*dev_eui),
        }
    }

    /// A short stable name for the audit record.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownDevAddr(_) | Refusal::UnknownDevEui(_) => "unknown_device",
            Refusal::NoKeys { .. } => "no_keys",
            Refusal::JoinWindowClosed { .. } => "join_window_closed",
            Refusal::JoinBadMic { .. } | Refusal::BadMic { .. } => "bad_mic",
            Refusal::WrongJoinEui { .. } => "wrong_join_eui",
            Refusal::DevNonceReused { .. } => "dev_nonce_reused",
            Refusal::Replay { .. } => "replayed_counter",
            Refusal::Counter { .. } => "counter_out_of_window",
        }
    }
}

/// A Join-Request answered: the encrypted Join-Accept to send.
#[derive(Debug)]
pub struct Joined {
    pub dev_eui: Eui64,
    pub dev_addr: DevAddr,
    pub accept: EncryptedJoinAccept,
}

/// An uplink accepted: the opened message and its device.
#[derive(Debug)]
pub struct Accepted {
    pub dev_eui: Eui64,
    pub msg: DataMessage,
    pub lost: u32,
    /// The first frame of its session.
    pub first: bool,
}

#[derive(Debug, Default)]
pub struct Sessions {
    devices: HashMap<Eui64, Device>,
}

fn key(s: &str) -> Result<AesKey, String> {
    s.parse::<AesKey>().map_err(|e| e.to_string())
}

impl Sessions {
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn get(&self, dev_eui: Eui64) -> Option<&Device> {
        self.devices.get(&dev_eui)
    }

    /// Ends the device's session (it must join again; an ABP device is heard no more until
    /// provisioned again). Its DevNonces stay on record.
    pub fn end_session(&mut self, dev_eui: Eui64) {
        if let Some(d) = self.devices.get_mut(&dev_eui) {
            d.session = None;
        }
    }

    /// Drops the device's keys and session (decommissioned) but keeps its record: the
    /// DevNonces it used still refuse a replayed Join-Request once it is given keys again,
    /// and a Join-Request from it is refused as [`Refusal::NoKeys`] (it was ours) rather
    /// than passed over as a stranger's.
    pub fn revoke(&mut self, dev_eui: Eui64) {
        if let Some(d) = self.devices.get_mut(&dev_eui) {
            d.otaa = None;
            d.session = None;
        }
    }

    /// Takes OTAA keys for `dev_eui` (a new or replaced key set: a running session stays
    /// until the device joins again).
    pub fn provision_otaa(&mut self, dev_eui: Eui64, c: &OtaaCredential) -> Result<(), String> {
        let join_eui: Eui64 = c.join_eui.parse().map_err(|e| format!("join_eui: {e}"))?;
        let app_key = key(&c.app_key).map_err(|e| format!("app_key: {e}"))?;
        let d = self
            .devices
            .entry(dev_eui)
            .or_insert_with(|| Device::new(dev_eui));
        d.otaa = Some((join_eui, app_key));
        d.decoder = c.decoder;
        Ok(())
    }

    /// Takes an ABP session for `dev_eui`. Different keys than the running session start a
    /// new one (counters from zero); the same keys keep the counters.
    pub fn provision_abp(&mut self, dev_eui: Eui64, c: &AbpCredential) -> Result<(), String> {
        let dev_addr: DevAddr = c.dev_addr.parse().map_err(|e| format!("dev_addr: {e}"))?;
        let keys = SessionKeys {
            nwk_s_key: key(&c.nwk_s_key).map_err(|e| format!("nwk_s_key: {e}"))?,
            app_s_key: key(&c.app_s_key).map_err(|e| format!("app_s_key: {e}"))?,
        };
        if let Some(other) = self.by_addr(dev_addr).filter(|d| d.dev_eui != dev_eui) {
            return Err(format!(
                "DevAddr {dev_addr} is already the session of {}",
                other.dev_eui
            ));
        }
        let d = self
            .devices
            .entry(dev_eui)
            .or_insert_with(|| Device::new(dev_eui));
        d.decoder = c.decoder;
        match &mut d.session {
            Some(s) if s.dev_addr == dev_addr && s.keys == keys => {}
            slot => {
                *slot = Some(Session {
                    dev_addr,
                    keys,
                    fcnt_up: None,
                    fcnt_down: 0,
                })
            }
        }
        Ok(())
    }

    /// Restores what was persisted (after the provisioned keys were taken).
    pub fn restore(&mut self, dev_eui: Eui64, st: &SessionState) -> Result<(), String> {
        let d = self
            .devices
            .entry(dev_eui)
            .or_insert_with(|| Device::new(dev_eui));
        d.dev_nonces = st.dev_nonces.clone();
        d.join_nonce = st.join_nonce;
        if let (Some(a), Some(n), Some(k)) = (&st.dev_addr, &st.nwk_s_key, &st.app_s_key) {
            let s = Session {
                dev_addr: a.parse().map_err(|e| format!("dev_addr: {e}"))?,
                keys: SessionKeys {
                    nwk_s_key: key(n)?,
                    app_s_key: key(k)?,
                },
                fcnt_up: st.fcnt_up,
                fcnt_down: st.fcnt_down,
            };
            // An ABP session provisioned with other keys since wins (a key rotation).
            match &d.session {
                Some(cur) if cur.keys != s.keys || cur.dev_addr != s.dev_addr => {}
                _ => d.session = Some(s),
            }
        }
        Ok(())
    }

    fn by_addr(&self, addr: DevAddr) -> Option<&Device> {
        self.devices
            .values()
            .find(|d| d.session.is_some_and(|s| s.dev_addr == addr))
    }

    fn by_addr_mut(&mut self, addr: DevAddr) -> Option<&mut Device> {
        self.devices
            .values_mut()
            .find(|d| d.session.is_some_and(|s| s.dev_addr == addr))
    }

    /// A DevAddr in the NetID's NwkID prefix (type 0 NetIDs: 7 bits of NwkID) that no
    /// session uses, derived from the DevEUI so a device tends to keep its address.
    fn allocate_addr(&self, net_id: NetId, dev_eui: Eui64, join_nonce: u32) -> DevAddr {
        let prefix = (net_id.0 & 0x7f) << 25;
        let mut x = dev_eui.0 ^ u64::from(join_nonce).rotate_left(32);
        loop {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let addr = DevAddr(prefix | (x as u32 & 0x01ff_ffff));
            if self.by_addr(addr).is_none() {
                return addr;
            }
        }
    }

    /// Answers a Join-Request: MIC checked with the device's AppKey, DevNonce never
    /// accepted twice, a new session (counters from zero) and its Join-Accept.
    pub fn join(
        &mut self,
        req: &JoinRequest,
        net_id: NetId,
        dl: DlSettings,
    ) -> Result<Joined, Refusal> {
        let dev_eui = req.dev_eui;
        let Some(d) = self.devices.get(&dev_eui) else {
            return Err(Refusal::UnknownDevEui(dev_eui));
        };
        let Some((join_eui, app_key)) = d.otaa else {
            return Err(Refusal::NoKeys { dev_eui });
        };
        if !req.verify_mic(&app_key) {
            return Err(Refusal::JoinBadMic { dev_eui });
        }
        if req.join_eui != join_eui {
            return Err(Refusal::WrongJoinEui {
                dev_eui,
                got: req.join_eui,
                expected: join_eui,
            });
        }
        let (used, join_nonce) = {
            let d = &self.devices[&dev_eui];
            (d.dev_nonces.contains(&req.dev_nonce.0), d.join_nonce)
        };
        if used {
            return Err(Refusal::DevNonceReused {
                dev_eui,
                nonce: req.dev_nonce,
            });
        }
        let join_nonce = (join_nonce + 1) & 0x00ff_ffff;
        let dev_addr = self.allocate_addr(net_id, dev_eui, join_nonce);
        let accept = JoinAccept::new(JoinNonce(join_nonce), net_id, dev_addr, dl, 1, None);
        let keys = accept.session_keys(&app_key, req.dev_nonce);
        let Some(d) = self.devices.get_mut(&dev_eui) else {
            return Err(Refusal::UnknownDevEui(dev_eui));
        };
        d.dev_nonces.insert(req.dev_nonce.0);
        d.join_nonce = join_nonce;
        d.session = Some(Session {
            dev_addr,
            keys,
            fcnt_up: None,
            fcnt_down: 0,
        });
        Ok(Joined {
            dev_eui,
            dev_addr,
            accept: accept.encrypt(&app_key),
        })
    }

    /// Checks a data uplink: the device by DevAddr, the 32-bit counter after the last one
    /// accepted (a repeat or a jump back is refused), the MIC; then decrypts it and
    /// advances the counter.
    pub fn uplink(&mut self, frame: &DataFrame) -> Result<Accepted, Refusal> {
        let Some(d) = self.by_addr_mut(frame.dev_addr) else {
            return Err(Refusal::UnknownDevAddr(frame.dev_addr));
        };
        let dev_eui = d.dev_eui;
        let Some(s) = d.session.as_mut() else {
            return Err(Refusal::UnknownDevAddr(frame.dev_addr));
        };
        let verdict = match reconstruct_fcnt(s.fcnt_up, frame.fcnt, MAX_FCNT_GAP) {
            Ok(v) => v,
            Err(e @ (FcntError::OutOfWindow { .. } | FcntError::Exhausted)) => {
                return Err(Refusal::Counter {
                    dev_eui,
                    detail: e.to_string(),
                })
            }
        };
        let msg = frame
            .open(&s.keys, verdict.fcnt())
            .map_err(|_| Refusal::BadMic {
                dev_eui,
                fcnt: verdict.fcnt(),
            })?;
        match verdict {
            FcntVerdict::Repeat { fcnt } => Err(Refusal::Replay { dev_eui, fcnt }),
            FcntVerdict::Next { fcnt, lost } => {
                let first = s.fcnt_up.is_none();
                s.fcnt_up = Some(fcnt);
                Ok(Accepted {
                    dev_eui,
                    msg,
                    lost,
                    first,
                })
            }
        }
    }

    /// The next downlink counter of `dev_eui`'s session (advanced).
    pub fn next_fcnt_down(&mut self, dev_eui: Eui64) -> Option<(DevAddr, SessionKeys, u32)> {
        let s = self.devices.get_mut(&dev_eui)?.session.as_mut()?;
        let f = s.fcnt_down;
        s.fcnt_down = s.fcnt_down.wrapping_add(1);
        Some((s.dev_addr, s.keys, f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldgate_lora::emulator::{EmulatedDevice, Heard};
    use fieldgate_lora::lorawan::PhyPayload;

    const APP_KEY: &str = "00112233445566778899aabbccddeeff";

    fn otaa() -> (Sessions, EmulatedDevice) {
        let mut s = Sessions::default();
        s.provision_otaa(
            Eui64(0xa1),
            &OtaaCredential {
                join_eui: "0000000000000001".into(),
                app_key: APP_KEY.into(),
                decoder: None,
            },
        )
        .unwrap();
        let dev = EmulatedDevice::otaa(Eui64(0xa1), Eui64(1), APP_KEY.parse().unwrap());
        (s, dev)
    }

    fn join_req(bytes: &[u8]) -> JoinRequest {
        match PhyPayload::parse(bytes).unwrap() {
            PhyPayload::JoinRequest(j) => j,
            _ => panic!("not a join request"),
        }
    }

    fn data(bytes: &[u8]) -> DataFrame {
        match PhyPayload::parse(bytes).unwrap() {
            PhyPayload::Data(f) => f,
            _ => panic!("not data"),
        }
    }

    #[test]
    fn otaa_join_then_uplinks_with_replays_regressions_and_bad_mics_refused() {
        let (mut s, mut dev) = otaa();
        let j = s
            .join(
                &join_req(&dev.join_request().unwrap()),
                NetId(0x13),
                DlSettings::from_byte(0),
            )
            .unwrap();
        assert_eq!(j.dev_addr.0 >> 25, 0x13);
        assert!(matches!(
            dev.hear(&j.accept.to_bytes()).unwrap(),
            Heard::Joined { .. }
        ));
        let up = dev.uplink(1, b"hi", false).unwrap();
        let a = s.uplink(&data(&up)).unwrap();
        assert_eq!(a.msg.payload, b"hi");
        assert_eq!(
            s.uplink(&data(&up)).unwrap_err(),
            Refusal::Replay {
                dev_eui: Eui64(0xa1),
                fcnt: 0
            }
        );
        let bad = dev.uplink_bad_mic(1, b"x").unwrap();
        assert_eq!(s.uplink(&data(&bad)).unwrap_err().code(), "bad_mic");
        // The bad frame did not move the counter: frame 2 is still accepted.
        let ok = dev.uplink(1, b"y", false).unwrap();
        assert_eq!(s.uplink(&data(&ok)).unwrap().msg.fcnt, 2);
        // The DevNonce of the join cannot be used again.
        let again = dev.join_request_reusing_nonce().unwrap();
        assert_eq!(
            s.join(&join_req(&again), NetId(0x13), DlSettings::from_byte(0))
                .unwrap_err()
                .code(),
            "dev_nonce_reused"
        );
    }

    #[test]
    fn state_survives_a_round_trip_and_keeps_nonces_and_counters() {
        let (mut s, mut dev) = otaa();
        let j = s
            .join(
                &join_req(&dev.join_request().unwrap()),
                NetId(0),
                DlSettings::from_byte(0),
            )
            .unwrap();
        dev.hear(&j.accept.to_bytes()).unwrap();
        let up = dev.uplink(1, b"a", false).unwrap();
        s.uplink(&data(&up)).unwrap();
        let st = s.get(Eui64(0xa1)).unwrap().state();
        let json = serde_json::to_string(&st).unwrap();
        let (mut fresh, _) = otaa();
        fresh
            .restore(Eui64(0xa1), &serde_json::from_str(&json).unwrap())
            .unwrap();
        assert_eq!(
            fresh.uplink(&data(&up)).unwrap_err().code(),
            "replayed_counter"
        );
        let again = dev.join_request_reusing_nonce().unwrap();
        assert!(fresh
            .join(&join_req(&again), NetId(0), DlSettings::from_byte(0))
            .is_err());
    }

    #[test]
    fn a_revoked_device_is_refused_by_name_and_its_dev_nonces_outlive_new_keys() {
        let (mut s, mut dev) = otaa();
        let first = dev.join_request().unwrap();
        let j = s
            .join(&join_req(&first), NetId(0), DlSettings::from_byte(0))
            .unwrap();
        dev.hear(&j.accept.to_bytes()).unwrap();
        s.revoke(Eui64(0xa1));
        let up = dev.uplink(1, b"a", false).unwrap();
        assert_eq!(s.uplink(&data(&up)).unwrap_err().device(), None);
        let next = dev.join_request().unwrap();
        let e = s
            .join(&join_req(&next), NetId(0), DlSettings::from_byte(0))
            .unwrap_err();
        assert_eq!((e.code(), e.device()), ("no_keys", Some(Eui64(0xa1))));
        // Given its keys again (re-admitted), it joins with a fresh DevNonce, and the
        // Join-Request it sent before it was removed is still a replay.
        s.provision_otaa(
            Eui64(0xa1),
            &OtaaCredential {
                join_eui: "0000000000000001".into(),
                app_key: APP_KEY.into(),
                decoder: None,
            },
        )
        .unwrap();
        assert_eq!(
            s.join(&join_req(&first), NetId(0), DlSettings::from_byte(0))
                .unwrap_err()
                .code(),
            "dev_nonce_reused"
        );
        assert!(s
            .join(&join_req(&next), NetId(0), DlSettings::from_byte(0))
            .is_ok());
    }

    #[test]
    fn unknown_devices_are_refused_without_naming_one_of_ours() {
        let mut s = Sessions::default();
        let mut stranger = EmulatedDevice::otaa(Eui64(9), Eui64(1), APP_KEY.parse().unwrap());
        let e = s
            .join(
                &join_req(&stranger.join_request().unwrap()),
                NetId(0),
                DlSettings::from_byte(0),
            )
            .unwrap_err();
        assert_eq!(e.device(), None);
    }
}
