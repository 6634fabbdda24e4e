//! Differential test against npm lora-packet 0.9.3 (and lrwn on the same frames): a few
//! thousand frames built by us (random keys, ports, FOpts, both directions, confirmed or
//! not, counters above 2^16, Join-Requests, Join-Accepts with and without CFList) must
//! parse, verify and decrypt to the same fields and plaintext in lora-packet and lrwn; and
//! frames lora-packet builds must be byte-identical to ours and open here.
//!
//! Runs with FIELDGATE_PEERS=1 after tests/peers/lora/setup.sh (node and npm needed);
//! otherwise it prints why it skipped.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{data_case, join_case, DataCase, JoinCase, Rng};
use fieldgate_lora::lorawan::PhyPayload;
use fieldgate_lora::types::hex_encode;
use fieldgate_lora::Direction;
use serde_json::{json, Value};

const DATA_CASES: u64 = 2500;
const JOIN_CASES: u64 = 600;
const BUILT_DATA: u64 = 800;
const BUILT_ACCEPTS: u64 = 300;

fn peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/lora")
}

fn run_peer(lines: &[Value]) -> Vec<Value> {
    let mut child = Command::new("node")
        .arg(peer_dir().join("lora_packet.js"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("FIELDGATE_PEERS=1 needs node on PATH");
    let mut input = String::new();
    for l in lines {
        input.push_str(&l.to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("peer ran");
    writer
        .join()
        .expect("writer thread")
        .expect("peer read its input");
    assert!(out.status.success(), "lora_packet.js failed");
    let answers: Vec<Value> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("peer prints JSON lines"))
        .collect();
    assert_eq!(answers.len(), lines.len(), "one answer per question");
    answers
}

fn be_hex(v: u64, bytes: usize) -> String {
    hex_encode(&v.to_be_bytes()[8 - bytes..])
}

fn data_question(c: &DataCase) -> Value {
    json!({"op": "data", "hex": hex_encode(&c.wire), "nwk": hex_encode(&c.keys.nwk_s_key.0),
           "app": hex_encode(&c.keys.app_s_key.0), "fcnt": c.msg.fcnt})
}

fn check_data(case: usize, c: &DataCase, a: &Value) {
    let m = &c.msg;
    let ctx = || format!("data case {case}: {a}");
    assert_eq!(a["error"], Value::Null, "{}", ctx());
    assert_eq!(a["mic_ok"], true, "{}", ctx());
    let dir = match m.direction {
        Direction::Uplink => "up",
        Direction::Downlink => "down",
    };
    assert_eq!(a["dir"], dir, "{}", ctx());
    let confirmed = a["mtype"]
        .as_str()
        .is_some_and(|s| s.starts_with("Confirmed"));
    assert_eq!(confirmed, m.confirmed, "{}", ctx());
    assert_eq!(a["devaddr"], be_hex(m.dev_addr.0.into(), 4), "{}", ctx());
    assert_eq!(a["fcnt"], m.fcnt & 0xffff, "{}", ctx());
    assert_eq!(a["fport"], json!(m.fport), "{}", ctx());
    assert_eq!(
        a["fctrl"],
        json!({"adr": m.fctrl.adr, "adr_ack_req": m.fctrl.adr_ack_req, "ack": m.fctrl.ack,
               "f_pending": m.fctrl.f_pending}),
        "{}",
        ctx()
    );
    assert_eq!(a["fopts"], hex_encode(&m.fopts), "{}", ctx());
    let payload = m.fport.map(|_| hex_encode(&m.payload));
    assert_eq!(a["payload"], json!(payload), "{}", ctx());
}

fn check_data_in_lrwn(case: usize, c: &DataCase) {
    let mut phy = lrwn::PhyPayload::from_slice(&c.wire).expect("lrwn parses");
    if let lrwn::Payload::MACPayload(pl) = &mut phy.payload {
        pl.fhdr.f_cnt = c.msg.fcnt;
    }
    let nwk = lrwn::AES128Key::from_bytes(c.keys.nwk_s_key.0);
    let ok = match c.msg.direction {
        Direction::Uplink => {
            phy.validate_uplink_data_mic(lrwn::MACVersion::LoRaWAN1_0, 0, 0, 0, &nwk, &nwk)
        }
        Direction::Downlink => {
            phy.validate_downlink_data_mic(lrwn::MACVersion::LoRaWAN1_0, 0, &nwk)
        }
    };
    assert!(ok.expect("lrwn checks"), "data case {case}: lrwn MIC");
    let key = c.keys.payload_key(c.msg.fport.unwrap_or(1));
    phy.decrypt_frm_payload(&lrwn::AES128Key::from_bytes(key.0))
        .expect("lrwn decrypts");
    let lrwn::Payload::MACPayload(pl) = &phy.payload else {
        panic!("data case {case}: lrwn sees no MACPayload")
    };
    let plain = pl
        .frm_payload
        .as_ref()
        .map(|p| p.to_vec().expect("re-encodes"))
        .unwrap_or_default();
    assert_eq!(plain, c.msg.payload, "data case {case}: lrwn plaintext");
}

fn join_questions(c: &JoinCase) -> [Value; 2] {
    let key = hex_encode(&c.app_key.0);
    [
        json!({"op": "join_request", "hex": hex_encode(&c.request_wire), "appkey": key}),
        json!({"op": "join_accept", "hex": hex_encode(&c.accept_wire), "appkey": key,
               "devnonce": be_hex(c.request.dev_nonce.0.into(), 2)}),
    ]
}

fn check_join(case: usize, c: &JoinCase, jr: &Value, ja: &Value) {
    let ctx = |a: &Value| format!("join case {case}: {a}");
    assert_eq!(jr["mic_ok"], true, "{}", ctx(jr));
    assert_eq!(jr["appeui"], be_hex(c.request.join_eui.0, 8), "{}", ctx(jr));
    assert_eq!(jr["deveui"], be_hex(c.request.dev_eui.0, 8), "{}", ctx(jr));
    assert_eq!(
        jr["devnonce"],
        be_hex(c.request.dev_nonce.0.into(), 2),
        "{}",
        ctx(jr)
    );
    let a = &c.accept;
    assert_eq!(ja["mic_ok"], true, "{}", ctx(ja));
    assert_eq!(
        ja["appnonce"],
        be_hex(a.join_nonce.0.into(), 3),
        "{}",
        ctx(ja)
    );
    assert_eq!(ja["netid"], be_hex(a.net_id.0.into(), 3), "{}", ctx(ja));
    assert_eq!(ja["devaddr"], be_hex(a.dev_addr.0.into(), 4), "{}", ctx(ja));
    assert_eq!(
        ja["dlsettings"],
        hex_encode(&[a.dl_settings.byte()]),
        "{}",
        ctx(ja)
    );
    assert_eq!(ja["rxdelay"], hex_encode(&[a.rx_delay]), "{}", ctx(ja));
    let cf = a.cf_list.map(|cf| hex_encode(&cf.0)).unwrap_or_default();
    assert_eq!(ja["cflist"], cf, "{}", ctx(ja));
    assert_eq!(
        ja["nwkskey"],
        hex_encode(&c.keys.nwk_s_key.0),
        "{}",
        ctx(ja)
    );
    assert_eq!(
        ja["appskey"],
        hex_encode(&c.keys.app_s_key.0),
        "{}",
        ctx(ja)
    );

    // lrwn on the same frames.
    let app = lrwn::AES128Key::from_bytes(c.app_key.0);
    let req = lrwn::PhyPayload::from_slice(&c.request_wire).expect("lrwn parses");
    assert!(req.validate_join_request_mic(&app).expect("lrwn checks"));
    let mut acc = lrwn::PhyPayload::from_slice(&c.accept_wire).expect("lrwn parses");
    acc.decrypt_join_accept_payload(&app)
        .expect("lrwn decrypts");
    let eui = lrwn::EUI64::from_be_bytes(c.request.join_eui.0.to_be_bytes());
    let ok = acc.validate_join_accept_mic(lrwn::JoinType::Join, &eui, c.request.dev_nonce.0, &app);
    assert!(
        ok.expect("lrwn checks"),
        "join case {case}: lrwn Join-Accept MIC"
    );
}

#[test]
fn agrees_with_lora_packet_and_lrwn() {
    if !std::env::var("FIELDGATE_PEERS").is_ok_and(|v| v == "1") {
        println!("skipped: set FIELDGATE_PEERS=1 (and run tests/peers/lora/setup.sh) to compare with lora-packet");
        return;
    }
    assert!(
        peer_dir()
            .join("node_modules/lora-packet/package.json")
            .exists(),
        "FIELDGATE_PEERS=1 but lora-packet is not installed: run tests/peers/lora/setup.sh"
    );
    let mut rng = Rng::new(0x1a2b_3c4d);
    let data: Vec<DataCase> = (0..DATA_CASES).map(|_| data_case(&mut rng)).collect();
    let joins: Vec<JoinCase> = (0..JOIN_CASES).map(|_| join_case(&mut rng)).collect();
    let built: Vec<DataCase> = (0..BUILT_DATA).map(|_| data_case(&mut rng)).collect();
    let accepts: Vec<JoinCase> = (0..BUILT_ACCEPTS).map(|_| join_case(&mut rng)).collect();

    let mut questions: Vec<Value> = data.iter().map(data_question).collect();
    questions.extend(joins.iter().flat_map(join_questions));
    questions.extend(built.iter().map(|c| {
        let m = &c.msg;
        let mtype = match (m.direction, m.confirmed) {
            (Direction::Uplink, false) => 2,
            (Direction::Downlink, false) => 3,
            (Direction::Uplink, true) => 4,
            (Direction::Downlink, true) => 5,
        };
        json!({"op": "build_data", "mtype": mtype, "devaddr": be_hex(m.dev_addr.0.into(), 4),
               "fctrl": {"adr": m.fctrl.adr, "adr_ack_req": m.fctrl.adr_ack_req,
                         "ack": m.fctrl.ack, "f_pending": m.fctrl.f_pending},
               "fcnt": m.fcnt, "fopts": hex_encode(&m.fopts), "fport": m.fport,
               "payload": hex_encode(&m.payload), "nwk": hex_encode(&c.keys.nwk_s_key.0),
               "app": hex_encode(&c.keys.app_s_key.0)})
    }));
    questions.extend(accepts.iter().map(|c| {
        let a = &c.accept;
        json!({"op": "build_join_accept", "appnonce": be_hex(a.join_nonce.0.into(), 3),
               "netid": be_hex(a.net_id.0.into(), 3), "devaddr": be_hex(a.dev_addr.0.into(), 4),
               "dlsettings": hex_encode(&[a.dl_settings.byte()]), "rxdelay": hex_encode(&[a.rx_delay]),
               "cflist": a.cf_list.map(|cf| hex_encode(&cf.0)).unwrap_or_default(),
               "appkey": hex_encode(&c.app_key.0)})
    }));

    let answers = run_peer(&questions);
    let mut at = answers.iter();
    for (i, c) in data.iter().enumerate() {
        check_data(i, c, at.next().expect("answer"));
        check_data_in_lrwn(i, c);
    }
    for (i, c) in joins.iter().enumerate() {
        let (jr, ja) = (at.next().expect("answer"), at.next().expect("answer"));
        check_join(i, c, jr, ja);
    }
    for (i, c) in built.iter().enumerate() {
        let a = at.next().expect("answer");
        let wire = a["hex"]
            .as_str()
            .unwrap_or_else(|| panic!("build case {i}: {a}"));
        // Same fields, same keys, same counter: the same bytes.
        assert_eq!(
            wire,
            hex_encode(&c.wire),
            "build case {i}: lora-packet built other bytes"
        );
        let Ok(PhyPayload::Data(frame)) = PhyPayload::parse(&c.wire) else {
            panic!("build case {i}")
        };
        assert_eq!(frame.open(&c.keys, c.msg.fcnt).as_ref(), Ok(&c.msg));
    }
    for (i, c) in accepts.iter().enumerate() {
        let a = at.next().expect("answer");
        let wire = a["hex"]
            .as_str()
            .unwrap_or_else(|| panic!("accept case {i}: {a}"));
        assert_eq!(wire, hex_encode(&c.accept_wire), "accept case {i}");
    }
    let above = data.iter().filter(|c| c.msg.fcnt > 0xffff).count();
    println!(
        "lora-packet and lrwn agree on {} data frames ({} with counters above 2^16), {} Join-Requests, {} Join-Accepts; lora-packet built {} data frames and {} Join-Accepts byte-identical to ours",
        data.len(),
        above,
        joins.len(),
        joins.len(),
        built.len(),
        accepts.len()
    );
}
