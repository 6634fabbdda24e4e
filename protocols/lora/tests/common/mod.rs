//! Frame generators shared by the differential tests: a seeded PRNG (so a failure names a
//! case that can be replayed) and random LoRaWAN 1.0.x cases built with our codec.

#![allow(dead_code)]

use fieldgate_lora::lorawan::mac::{encode_commands, MacCommand};
use fieldgate_lora::lorawan::{
    CfList, DataFrame, DataMessage, DlSettings, FCtrl, JoinAccept, JoinRequest, SessionKeys,
};
use fieldgate_lora::{AesKey, DevAddr, DevNonce, Direction, Eui64, JoinNonce, NetId};

/// splitmix64: small, seedable, good enough to spread test cases.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn bool(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    pub fn key(&mut self) -> AesKey {
        let mut k = [0u8; 16];
        k.copy_from_slice(&self.bytes(16));
        AesKey(k)
    }
}

/// A data frame case: keys, the plaintext message, and the wire bytes we built.
pub struct DataCase {
    pub keys: SessionKeys,
    pub msg: DataMessage,
    pub wire: Vec<u8>,
}

/// A join case: Join-Request and the Join-Accept answering it.
pub struct JoinCase {
    pub app_key: AesKey,
    pub request: JoinRequest,
    pub accept: JoinAccept,
    pub request_wire: Vec<u8>,
    pub accept_wire: Vec<u8>,
    pub keys: SessionKeys,
}

/// MAC commands whose payloads every codec reads the same way (no RFU bits a decoder
/// might drop): LinkCheck and DevStatus, and answers/requests with small status fields.
pub fn mac_commands(rng: &mut Rng, dir: Direction, max_bytes: usize) -> Vec<MacCommand> {
    let mut out = Vec::new();
    let mut len = 0;
    loop {
        let c = match (dir, rng.below(6)) {
            (Direction::Uplink, 0 | 1) => MacCommand::LinkCheckReq,
            (Direction::Uplink, 2 | 3) => MacCommand::DevStatusAns {
                battery: rng.next_u64() as u8,
                margin: rng.below(64) as i8 - 32,
            },
            (Direction::Uplink, 4) => MacCommand::Other {
                cid: 0x03,
                payload: vec![rng.below(8) as u8],
            },
            (Direction::Uplink, _) => MacCommand::Other {
                cid: 0x04,
                payload: vec![],
            },
            (Direction::Downlink, 0 | 1) => MacCommand::DevStatusReq,
            (Direction::Downlink, 2 | 3) => MacCommand::LinkCheckAns {
                margin: rng.below(255) as u8,
                gw_cnt: rng.next_u64() as u8,
            },
            (Direction::Downlink, 4) => MacCommand::Other {
                cid: 0x04,
                payload: vec![rng.below(16) as u8],
            },
            (Direction::Downlink, _) => MacCommand::Other {
                cid: 0x08,
                payload: vec![rng.below(16) as u8],
            },
        };
        let n = encode_commands(dir, std::slice::from_ref(&c))
            .expect("valid command")
            .len();
        if len + n > max_bytes || (len > 0 && rng.below(3) == 0) {
            return out;
        }
        len += n;
        out.push(c);
    }
}

/// A frame counter that is often above 2^16 and often near a 16-bit rollover.
pub fn fcnt(rng: &mut Rng) -> u32 {
    match rng.below(4) {
        0 => rng.below(0x1_0000) as u32,
        1 => ((rng.below(0x1_0000) as u32) << 16) | ((0xfff0 + rng.below(0x20) as u32) % 0x1_0000),
        _ => rng.next_u64() as u32,
    }
}

pub fn data_case(rng: &mut Rng) -> DataCase {
    let keys = SessionKeys {
        nwk_s_key: rng.key(),
        app_s_key: rng.key(),
    };
    let direction = if rng.bool() {
        Direction::Uplink
    } else {
        Direction::Downlink
    };
    let (fport, fopts, payload) = match rng.below(6) {
        0 => (
            None,
            encode_commands(direction, &mac_commands(rng, direction, 15)).unwrap(),
            vec![],
        ),
        1 => (
            Some(0),
            vec![],
            encode_commands(direction, &mac_commands(rng, direction, 40)).unwrap(),
        ),
        _ => {
            let fopts = if rng.bool() {
                encode_commands(direction, &mac_commands(rng, direction, 15)).unwrap()
            } else {
                vec![]
            };
            // Application ports (1..=223) and the test port 224.
            let port = 1 + rng.below(224) as u8;
            let len = rng.below(120) as usize;
            (Some(port), fopts, rng.bytes(len))
        }
    };
    let msg = DataMessage {
        direction,
        confirmed: rng.bool(),
        dev_addr: DevAddr(rng.next_u64() as u32),
        fctrl: FCtrl {
            adr: rng.bool(),
            adr_ack_req: rng.bool(),
            ack: rng.bool(),
            f_pending: rng.bool(),
        },
        fcnt: fcnt(rng),
        fopts,
        fport,
        payload,
    };
    let wire = DataFrame::seal(&msg, &keys)
        .expect("valid message")
        .to_bytes()
        .expect("encodable");
    DataCase { keys, msg, wire }
}

pub fn join_case(rng: &mut Rng) -> JoinCase {
    let app_key = rng.key();
    let request = JoinRequest::new_signed(
        Eui64(rng.next_u64()),
        Eui64(rng.next_u64()),
        DevNonce(rng.next_u64() as u16),
        &app_key,
    );
    let cf_list = match rng.below(3) {
        0 => None,
        1 => Some(CfList::from_frequencies(std::array::from_fn(|_| {
            // 100 Hz steps, 24 bits: up to 1677.7215 MHz; 0 = unused.
            if rng.below(5) == 0 {
                0
            } else {
                (rng.below(1 << 24) as u32) * 100
            }
        }))),
        _ => Some(CfList::from_channel_masks(std::array::from_fn(|_| {
            rng.next_u64() as u16
        }))),
    };
    let accept = JoinAccept::new(
        JoinNonce(rng.below(1 << 24) as u32),
        NetId(rng.below(1 << 24) as u32),
        DevAddr(rng.next_u64() as u32),
        DlSettings {
            rfu: false,
            rx1_dr_offset: rng.below(8) as u8,
            rx2_data_rate: rng.below(16) as u8,
        },
        rng.below(16) as u8,
        cf_list,
    );
    let keys = accept.session_keys(&app_key, request.dev_nonce);
    JoinCase {
        app_key,
        request_wire: request.to_bytes(),
        accept_wire: accept.encrypt(&app_key).to_bytes(),
        request,
        accept,
        keys,
    }
}
