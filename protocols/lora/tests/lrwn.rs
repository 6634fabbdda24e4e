//! Differential test against lrwn 4.13 (ChirpStack's LoRaWAN codec, an independent
//! implementation): frames we build must parse, verify and decrypt the same in lrwn, and
//! frames lrwn builds must in ours. Covers data frames both ways (random keys, ports, FOpts,
//! directions, counters above 2^16), Join-Request/Join-Accept (with and without CFList),
//! 1.0.x session keys, MAC commands and the EU868/US915 region tables.

mod common;

use common::{data_case, join_case, Rng};
use fieldgate_lora::lorawan::mac::{parse_commands, MacCommand};
use fieldgate_lora::lorawan::{EncryptedJoinAccept, PhyPayload};
use fieldgate_lora::region::{Modulation, Region};
use fieldgate_lora::{AesKey, Direction};
use lrwn::{AES128Key, FRMPayload, MACVersion, Payload};

const CASES: u64 = 3000;

fn lk(k: &AesKey) -> AES128Key {
    AES128Key::from_bytes(k.0)
}

fn lrwn_mac_bytes(set: &lrwn::MACCommandSet) -> Vec<u8> {
    set.to_vec().expect("lrwn re-encodes what it decoded")
}

/// Compares lrwn's decoded MAC commands with ours, field by field for the ones we decode.
fn same_commands(ours: &[MacCommand], theirs: &lrwn::MACCommandSet, case: u64) {
    assert_eq!(ours.len(), theirs.len(), "case {case}: command count");
    for (o, t) in ours.iter().zip(theirs.iter()) {
        match (o, t) {
            (MacCommand::LinkCheckReq, lrwn::MACCommand::LinkCheckReq)
            | (MacCommand::DevStatusReq, lrwn::MACCommand::DevStatusReq) => {}
            (MacCommand::LinkCheckAns { margin, gw_cnt }, lrwn::MACCommand::LinkCheckAns(p)) => {
                assert_eq!((*margin, *gw_cnt), (p.margin, p.gw_cnt), "case {case}")
            }
            (MacCommand::DevStatusAns { battery, margin }, lrwn::MACCommand::DevStatusAns(p)) => {
                assert_eq!((*battery, *margin), (p.battery, p.margin), "case {case}")
            }
            (MacCommand::Other { cid, .. }, t) => assert_eq!(*cid, t.cid().to_u8(), "case {case}"),
            (o, t) => panic!("case {case}: ours {o:?}, lrwn {t:?}"),
        }
    }
}

#[test]
fn data_frames_we_build_read_the_same_in_lrwn() {
    let mut rng = Rng::new(0x10ad_f00d);
    for case in 0..CASES {
        let c = data_case(&mut rng);
        let mut phy =
            lrwn::PhyPayload::from_slice(&c.wire).unwrap_or_else(|e| panic!("case {case}: {e}"));
        let Payload::MACPayload(pl) = &mut phy.payload else {
            panic!("case {case}: not data")
        };
        assert_eq!(
            pl.fhdr.devaddr.to_be_bytes(),
            c.msg.dev_addr.0.to_be_bytes(),
            "case {case}"
        );
        assert_eq!(pl.fhdr.f_cnt, c.msg.fcnt & 0xffff, "case {case}");
        let fc = &pl.fhdr.f_ctrl;
        assert_eq!(
            (fc.adr, fc.adr_ack_req, fc.ack, fc.f_pending),
            (
                c.msg.fctrl.adr,
                c.msg.fctrl.adr_ack_req,
                c.msg.fctrl.ack,
                c.msg.fctrl.f_pending
            ),
            "case {case}"
        );
        assert_eq!(pl.f_port, c.msg.fport, "case {case}");
        // lrwn needs the full counter in the frame before checking the MIC.
        pl.fhdr.f_cnt = c.msg.fcnt;
        let nwk = lk(&c.keys.nwk_s_key);
        let mic_ok = match c.msg.direction {
            Direction::Uplink => {
                phy.validate_uplink_data_mic(MACVersion::LoRaWAN1_0, 0, 0, 0, &nwk, &nwk)
            }
            Direction::Downlink => phy.validate_downlink_data_mic(MACVersion::LoRaWAN1_0, 0, &nwk),
        };
        assert!(mic_ok.unwrap(), "case {case}: lrwn refuses our MIC");
        phy.decode_f_opts_to_mac_commands().unwrap();
        let key = lk(c.keys.payload_key(c.msg.fport.unwrap_or(1)));
        phy.decrypt_frm_payload(&key).unwrap();
        let Payload::MACPayload(pl) = &phy.payload else {
            unreachable!()
        };
        assert_eq!(lrwn_mac_bytes(&pl.fhdr.f_opts), c.msg.fopts, "case {case}");
        same_commands(
            &parse_commands(c.msg.direction, &c.msg.fopts).unwrap(),
            &pl.fhdr.f_opts,
            case,
        );
        match &pl.frm_payload {
            None => assert!(c.msg.payload.is_empty(), "case {case}"),
            Some(FRMPayload::Raw(p)) => assert_eq!(p, &c.msg.payload, "case {case}"),
            Some(FRMPayload::MACCommandSet(set)) => {
                assert_eq!(c.msg.fport, Some(0));
                assert_eq!(lrwn_mac_bytes(set), c.msg.payload, "case {case}");
                same_commands(
                    &parse_commands(c.msg.direction, &c.msg.payload).unwrap(),
                    set,
                    case,
                );
            }
            Some(other) => panic!("case {case}: {other:?}"),
        }
    }
}

#[test]
fn data_frames_lrwn_builds_read_the_same_in_ours() {
    let mut rng = Rng::new(0xbeef);
    for case in 0..CASES {
        // Our generator picks the fields; lrwn encodes, encrypts and signs them.
        let c = data_case(&mut rng);
        let m = &c.msg;
        let f_type = match (m.direction, m.confirmed) {
            (Direction::Uplink, false) => lrwn::FType::UnconfirmedDataUp,
            (Direction::Uplink, true) => lrwn::FType::ConfirmedDataUp,
            (Direction::Downlink, false) => lrwn::FType::UnconfirmedDataDown,
            (Direction::Downlink, true) => lrwn::FType::ConfirmedDataDown,
        };
        let mut phy = lrwn::PhyPayload {
            mhdr: lrwn::MHDR {
                f_type,
                major: lrwn::Major::LoRaWANR1,
            },
            payload: Payload::MACPayload(lrwn::MACPayload {
                fhdr: lrwn::FHDR {
                    devaddr: lrwn::DevAddr::from_be_bytes(m.dev_addr.0.to_be_bytes()),
                    f_ctrl: lrwn::FCtrl {
                        adr: m.fctrl.adr,
                        adr_ack_req: m.fctrl.adr_ack_req,
                        ack: m.fctrl.ack,
                        f_pending: m.fctrl.f_pending,
                        class_b: m.fctrl.f_pending,
                        f_opts_len: 0,
                    },
                    f_cnt: m.fcnt,
                    f_opts: lrwn::MACCommandSet::new(if m.fopts.is_empty() {
                        vec![]
                    } else {
                        vec![lrwn::MACCommand::Raw(m.fopts.clone())]
                    }),
                },
                f_port: m.fport,
                frm_payload: (m.fport.is_some() && !m.payload.is_empty())
                    .then(|| FRMPayload::Raw(m.payload.clone())),
            }),
            mic: None,
        };
        let key = lk(c.keys.payload_key(m.fport.unwrap_or(1)));
        phy.encrypt_frm_payload(&key).unwrap();
        let nwk = lk(&c.keys.nwk_s_key);
        match m.direction {
            Direction::Uplink => phy
                .set_uplink_data_mic(MACVersion::LoRaWAN1_0, 0, 0, 0, &nwk, &nwk)
                .unwrap(),
            Direction::Downlink => phy
                .set_downlink_data_mic(MACVersion::LoRaWAN1_0, 0, &nwk)
                .unwrap(),
        }
        let wire = phy.to_vec().unwrap();
        assert_eq!(
            wire, c.wire,
            "case {case}: lrwn and we build different bytes"
        );
        let PhyPayload::Data(frame) = PhyPayload::parse(&wire).unwrap() else {
            panic!("case {case}")
        };
        assert_eq!(&frame.open(&c.keys, m.fcnt).unwrap(), m, "case {case}");
    }
}

#[test]
fn joins_agree_with_lrwn_both_ways() {
    let mut rng = Rng::new(0x70_1234);
    for case in 0..CASES {
        let c = join_case(&mut rng);
        let app = lk(&c.app_key);
        let jr = lrwn::PhyPayload::from_slice(&c.request_wire).unwrap();
        assert!(jr.validate_join_request_mic(&app).unwrap(), "case {case}");
        let Payload::JoinRequest(p) = &jr.payload else {
            panic!()
        };
        assert_eq!(p.join_eui.to_be_bytes(), c.request.join_eui.0.to_be_bytes());
        assert_eq!(p.dev_eui.to_be_bytes(), c.request.dev_eui.0.to_be_bytes());
        assert_eq!(p.dev_nonce, c.request.dev_nonce.0);

        let mut ja = lrwn::PhyPayload::from_slice(&c.accept_wire).unwrap();
        ja.decrypt_join_accept_payload(&app).unwrap();
        assert!(
            ja.validate_join_accept_mic(lrwn::JoinType::Join, &p.join_eui, p.dev_nonce, &app)
                .unwrap(),
            "case {case}: lrwn refuses our Join-Accept MIC"
        );
        let Payload::JoinAccept(a) = ja.payload.clone() else {
            panic!()
        };
        assert_eq!(a.join_nonce, c.accept.join_nonce.0, "case {case}");
        assert_eq!(
            a.home_netid.to_le_bytes(),
            c.accept.net_id.0.to_le_bytes()[..3]
        );
        assert_eq!(a.devaddr.to_be_bytes(), c.accept.dev_addr.0.to_be_bytes());
        assert_eq!(
            a.dl_settings.rx1_dr_offset,
            c.accept.dl_settings.rx1_dr_offset
        );
        assert_eq!(a.dl_settings.rx2_dr, c.accept.dl_settings.rx2_data_rate);
        assert_eq!(a.rx_delay, c.accept.rx_delay);
        assert_eq!(
            a.cflist.as_ref().map(|cf| cf.to_bytes().unwrap()),
            c.accept.cf_list.map(|cf| cf.0),
            "case {case}"
        );
        // And back: lrwn re-encrypts the accept it decrypted; ours opens it.
        ja.encrypt_join_accept_payload(&app).unwrap();
        let wire = ja.to_vec().unwrap();
        assert_eq!(wire, c.accept_wire, "case {case}");
        let PhyPayload::JoinAccept(enc) = PhyPayload::parse(&wire).unwrap() else {
            panic!()
        };
        assert_eq!(enc.open(&c.app_key).unwrap(), c.accept);
        assert_eq!(
            EncryptedJoinAccept {
                mhdr: enc.mhdr,
                body: enc.body.clone()
            },
            enc
        );

        // 1.0.x session keys (opt_neg false: NwkSKey = FNwkSIntKey, same derivation).
        let net_id =
            lrwn::NetID::from_be_bytes(c.accept.net_id.0.to_be_bytes()[1..].try_into().unwrap());
        let nwk = lrwn::keys::get_f_nwk_s_int_key(
            false,
            &app,
            &net_id,
            &p.join_eui,
            a.join_nonce,
            p.dev_nonce,
        )
        .unwrap();
        let appk =
            lrwn::keys::get_app_s_key(false, &app, &net_id, &p.join_eui, a.join_nonce, p.dev_nonce)
                .unwrap();
        assert_eq!(nwk.to_bytes(), c.keys.nwk_s_key.0, "case {case}: NwkSKey");
        assert_eq!(appk.to_bytes(), c.keys.app_s_key.0, "case {case}: AppSKey");
    }
}

#[test]
fn our_parser_refuses_what_lrwn_refuses_and_keeps_what_it_keeps() {
    // Random bytes with a data MHDR: whenever both parse, they agree on the fields.
    let mut rng = Rng::new(7);
    for _ in 0..CASES {
        let len = rng.below(40) as usize;
        let mut b = rng.bytes(len);
        if let Some(first) = b.first_mut() {
            *first = [0x40, 0x60, 0x80, 0xa0][rng.below(4) as usize];
        }
        let ours = PhyPayload::parse(&b);
        let theirs = lrwn::PhyPayload::from_slice(&b);
        if let (Ok(PhyPayload::Data(o)), Ok(t)) = (&ours, &theirs) {
            let Payload::MACPayload(pl) = &t.payload else {
                panic!()
            };
            assert_eq!(pl.fhdr.devaddr.to_be_bytes(), o.dev_addr.0.to_be_bytes());
            assert_eq!(pl.f_port, o.fport);
            assert_eq!(pl.fhdr.f_cnt, u32::from(o.fcnt));
        }
        if ours.is_ok() != theirs.is_ok() {
            // lrwn refuses an FOptsLen that leaves no room; so do we. Anything else is a bug.
            panic!("{b:02x?}: ours {ours:?}, lrwn ok = {}", theirs.is_ok());
        }
        // Everything we accept re-encodes to the same bytes.
        if let Ok(p) = ours {
            assert_eq!(p.to_bytes().unwrap(), b);
        }
    }
}

#[test]
fn region_tables_match_lrwn() {
    let regions: [(Region, Box<dyn lrwn::region::Region>); 2] = [
        (
            Region::Eu868,
            Box::new(lrwn::region::eu868::Configuration::new(false)),
        ),
        (
            Region::Us915,
            Box::new(lrwn::region::us915::Configuration::new(false)),
        ),
    ];
    for (ours, theirs) in &regions {
        let d = theirs.get_defaults();
        assert_eq!(
            (ours.rx2().freq_hz, ours.rx2().dr),
            (d.rx2_frequency, d.rx2_dr),
            "{}",
            ours.name()
        );
        assert_eq!(ours.receive_delay1(), d.rx1_delay);
        assert_eq!(ours.receive_delay2(), d.rx2_delay);
        assert_eq!(ours.join_accept_delay1(), d.join_accept_delay1);
        assert_eq!(ours.join_accept_delay2(), d.join_accept_delay2);
        for dr in ours.data_rates() {
            let m = theirs.get_data_rate(dr.dr).unwrap();
            match (dr.modulation, m) {
                (Modulation::Lora { sf, bw_khz }, lrwn::region::DataRateModulation::Lora(l)) => {
                    assert_eq!(
                        (sf, u32::from(bw_khz) * 1000),
                        (l.spreading_factor, l.bandwidth),
                        "DR{}",
                        dr.dr
                    )
                }
                (Modulation::Fsk { bps }, lrwn::region::DataRateModulation::Fsk(f)) => {
                    assert_eq!(bps, f.bitrate)
                }
                (
                    Modulation::LrFhss { ocw_khz, .. },
                    lrwn::region::DataRateModulation::LrFhss(f),
                ) => {
                    assert_eq!(ocw_khz * 1000, f.occupied_channel_width, "DR{}", dr.dr)
                }
                (o, t) => panic!("{} DR{}: ours {o:?}, lrwn {t:?}", ours.name(), dr.dr),
            }
            if dr.uplink {
                for offset in 0..=ours.max_rx1_dr_offset() {
                    assert_eq!(
                        ours.rx1_data_rate(dr.dr, offset).unwrap(),
                        theirs
                            .get_rx1_data_rate_index(dr.dr, usize::from(offset))
                            .unwrap(),
                        "{} DR{} offset {offset}",
                        ours.name(),
                        dr.dr
                    );
                }
            }
        }
        for (i, ch) in ours.default_channels().iter().enumerate() {
            let up = theirs.get_uplink_channel(i).unwrap();
            assert_eq!(
                (ch.freq_hz, ch.min_dr, ch.max_dr),
                (up.frequency, up.min_dr, up.max_dr)
            );
            assert_eq!(
                ours.rx1_frequency(ch.freq_hz).unwrap(),
                theirs
                    .get_rx1_frequency_for_uplink_frequency(ch.freq_hz)
                    .unwrap(),
                "{} channel {i}",
                ours.name()
            );
        }
    }
}
