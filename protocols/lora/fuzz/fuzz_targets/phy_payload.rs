//! Feeds arbitrary bytes to the LoRaWAN PHYPayload parser and runs every keyed step on
//! what parses (MIC checks, payload decryption, join-accept decryption, MAC commands), and
//! the same bytes to the Cayenne LPP decoder. Run with `cargo fuzz run phy_payload` from
//! protocols/lora. Nothing may panic, and whatever parses must re-encode to the same bytes.
#![no_main]

use fieldgate_lora::lorawan::{reconstruct_fcnt, PhyPayload, SessionKeys, MAX_FCNT_GAP};
use fieldgate_lora::{lpp, AesKey};
use libfuzzer_sys::fuzz_target;

const KEY: AesKey = AesKey([0x2b; 16]);

fuzz_target!(|data: &[u8]| {
    let _ = lpp::decode(data);
    let Ok(phy) = PhyPayload::parse(data) else {
        return;
    };
    assert_eq!(phy.to_bytes().as_deref(), Ok(data));
    let keys = SessionKeys {
        nwk_s_key: KEY,
        app_s_key: AesKey([0x7e; 16]),
    };
    match &phy {
        PhyPayload::Data(frame) => {
            let fcnt = reconstruct_fcnt(Some(0x1_fff0), frame.fcnt, MAX_FCNT_GAP)
                .map(|v| v.fcnt())
                .unwrap_or(u32::from(frame.fcnt));
            let _ = frame.verify_mic(&keys.nwk_s_key, fcnt);
            let plain = frame.decrypt_payload(&keys, fcnt);
            assert_eq!(plain.len(), frame.frm_payload.len());
            if let Ok(msg) = frame.open(&keys, fcnt) {
                let _ = msg.mac_commands();
            }
        }
        PhyPayload::JoinRequest(jr) => {
            let _ = jr.verify_mic(&KEY);
        }
        PhyPayload::JoinAccept(ja) => {
            if let Ok((accept, _mic)) = ja.decrypt(&KEY) {
                let _ = accept.session_keys(&KEY, fieldgate_lora::DevNonce(1));
                let _ = accept.cf_list.map(|c| (c.frequencies(), c.channel_masks()));
            }
            let _ = ja.open(&KEY);
        }
        PhyPayload::Rfu { .. } | PhyPayload::Proprietary { .. } => {}
    }
});
