//! The Zigbee codec against zigbee-herdsman 11.1.1's own codec modules
//! (`tests/peers/zigbee/decode.js`): the reference vectors and generated frames are decoded
//! by both and compared field by field. Runs with FIELDGATE_PEERS=1 after
//! `tests/peers/zigbee/setup.sh`.

use fieldgate_zigbee::samples::{self, Sample};
use fieldgate_zigbee::zcl::{Direction, FrameType, ZclCommand, ZclFrame, ZclValue};
use fieldgate_zigbee::{to_hex, MtFrame, ZnpCommand};
use serde_json::{json, Value as J};

/// Our decode of an MT frame, as (herdsman command name, [(JSON pointer, value)]).
fn mt_fields(cmd: &ZnpCommand) -> Option<(&'static str, Vec<(&'static str, J)>)> {
    let b = |v: bool| json!(u8::from(v));
    Some(match cmd {
        ZnpCommand::SysPingRsp { capabilities } => {
            ("ping", vec![("/capabilities", json!(capabilities))])
        }
        ZnpCommand::SysVersionRsp {
            transport_rev,
            product,
            major_rel,
            minor_rel,
            maint_rel,
            revision,
            ..
        } => (
            "version",
            vec![
                ("/transportrev", json!(transport_rev)),
                ("/product", json!(product)),
                ("/majorrel", json!(major_rel)),
                ("/minorrel", json!(minor_rel)),
                ("/maintrel", json!(maint_rel)),
                ("/revision", json!(revision)),
            ],
        ),
        ZnpCommand::SysResetInd {
            reason,
            transport_rev,
            product_id,
            major_rel,
            minor_rel,
            hw_rev,
        } => (
            "resetInd",
            vec![
                ("/reason", json!(reason)),
                ("/transportrev", json!(transport_rev)),
                ("/productid", json!(product_id)),
                ("/majorrel", json!(major_rel)),
                ("/minorrel", json!(minor_rel)),
                ("/hwrev", json!(hw_rev)),
            ],
        ),
        ZnpCommand::AfDataRequestReq(r) => (
            "dataRequest",
            vec![
                ("/dstaddr", json!(r.dst_addr)),
                ("/destendpoint", json!(r.dst_endpoint)),
                ("/srcendpoint", json!(r.src_endpoint)),
                ("/clusterid", json!(r.cluster_id)),
                ("/transid", json!(r.trans_id)),
                ("/options", json!(r.options)),
                ("/radius", json!(r.radius)),
                ("/len", json!(r.data.len())),
                ("/data", json!(to_hex(&r.data))),
            ],
        ),
        ZnpCommand::AfDataConfirm {
            status,
            endpoint,
            trans_id,
        } => (
            "dataConfirm",
            vec![
                ("/status", json!(status)),
                ("/endpoint", json!(endpoint)),
                ("/transid", json!(trans_id)),
            ],
        ),
        ZnpCommand::AfIncomingMsg(m) => (
            "incomingMsg",
            vec![
                ("/groupid", json!(m.group_id)),
                ("/clusterid", json!(m.cluster_id)),
                ("/srcaddr", json!(m.src_addr)),
                ("/srcendpoint", json!(m.src_endpoint)),
                ("/dstendpoint", json!(m.dst_endpoint)),
                ("/wasbroadcast", b(m.was_broadcast)),
                ("/linkquality", json!(m.link_quality)),
                ("/securityuse", b(m.security_use)),
                ("/timestamp", json!(m.timestamp)),
                ("/transseqnumber", json!(m.trans_seq_num)),
                ("/len", json!(m.data.len())),
                ("/data", json!(to_hex(&m.data))),
            ],
        ),
        ZnpCommand::ZdoLeaveInd {
            src_addr,
            ieee,
            request,
            remove_children,
            rejoin,
        } => (
            "leaveInd",
            vec![
                ("/srcaddr", json!(src_addr)),
                ("/extaddr", json!(ieee.to_string())),
                ("/request", b(*request)),
                ("/removechildren", b(*remove_children)),
                ("/rejoin", b(*rejoin)),
            ],
        ),
        ZnpCommand::ZdoStateChangeInd { state } => {
            ("stateChangeInd", vec![("/state", json!(state))])
        }
        ZnpCommand::ZdoTcDevInd {
            nwk_addr,
            ieee,
            parent_addr,
        } => (
            "tcDeviceInd",
            vec![
                ("/nwkaddr", json!(nwk_addr)),
                ("/extaddr", json!(ieee.to_string())),
                ("/parentaddr", json!(parent_addr)),
            ],
        ),
        ZnpCommand::ZdoEndDeviceAnnceInd {
            src_addr,
            nwk_addr,
            ieee,
            capabilities: c,
        } => (
            "endDeviceAnnceInd",
            vec![
                ("/srcaddr", json!(src_addr)),
                ("/zdo/0", json!(0)),
                ("/zdo/1/nwkAddress", json!(nwk_addr)),
                ("/zdo/1/eui64", json!(ieee.to_string())),
                (
                    "/zdo/1/capabilities/alternatePANCoordinator",
                    b(c.alternate_pan_coordinator()),
                ),
                ("/zdo/1/capabilities/deviceType", b(c.router())),
                ("/zdo/1/capabilities/powerSource", b(c.mains_powered())),
                ("/zdo/1/capabilities/rxOnWhenIdle", b(c.rx_on_when_idle())),
                (
                    "/zdo/1/capabilities/securityCapability",
                    b(c.security_capable()),
                ),
                (
                    "/zdo/1/capabilities/allocateAddress",
                    b(c.allocate_address()),
                ),
            ],
        ),
        _ => return None,
    })
}

fn value(v: &ZclValue) -> J {
    match v {
        ZclValue::Bool(Some(b)) => json!(u8::from(*b)),
        ZclValue::CharString(Some(s)) => json!(s.to_string_lossy()),
        other => other.as_f64().map_or(J::Null, |f| json!(f)),
    }
}

/// Our decode of a ZCL frame in herdsman's shape.
fn zcl_fields(f: &ZclFrame) -> Option<Vec<(String, J)>> {
    let h = &f.header;
    let mut out = vec![
        (
            "/header/frameControl/frameType".to_string(),
            json!(u8::from(h.frame_type != FrameType::Global)),
        ),
        (
            "/header/frameControl/manufacturerSpecific".into(),
            json!(h.manufacturer_code.is_some()),
        ),
        (
            "/header/frameControl/direction".into(),
            json!(u8::from(h.direction == Direction::ServerToClient)),
        ),
        (
            "/header/frameControl/disableDefaultResponse".into(),
            json!(h.disable_default_response),
        ),
        ("/header/transactionSequenceNumber".into(), json!(h.tsn)),
        ("/header/commandIdentifier".into(), json!(h.command_id)),
    ];
    let p = |i: usize, k: &str| format!("/payload/{i}/{k}");
    match &f.command {
        ZclCommand::ReportAttributes { records } => {
            out.push(("/command".into(), json!("report")));
            for (i, r) in records.iter().enumerate() {
                out.push((p(i, "attrId"), json!(r.attribute_id)));
                out.push((p(i, "dataType"), json!(r.value.data_type().0)));
                out.push((p(i, "attrData"), value(&r.value)));
            }
        }
        ZclCommand::ReadAttributesRsp { records } => {
            out.push(("/command".into(), json!("readRsp")));
            for (i, r) in records.iter().enumerate() {
                out.push((p(i, "attrId"), json!(r.attribute_id)));
                out.push((p(i, "status"), json!(r.status)));
                if let Some(v) = &r.value {
                    out.push((p(i, "dataType"), json!(v.data_type().0)));
                    out.push((p(i, "attrData"), value(v)));
                }
            }
        }
        ZclCommand::ReadAttributes { attribute_ids } => {
            out.push(("/command".into(), json!("read")));
            for (i, a) in attribute_ids.iter().enumerate() {
                out.push((p(i, "attrId"), json!(a)));
            }
        }
        ZclCommand::DefaultRsp { command_id, status } => {
            out.push(("/command".into(), json!("defaultRsp")));
            out.push(("/payload/cmdId".into(), json!(command_id)));
            out.push(("/payload/statusCode".into(), json!(status)));
        }
        _ => return None,
    }
    Some(out)
}

/// Numbers compare as numbers (herdsman's 48-bit values and ours may differ in JSON type).
fn same(a: &J, b: &J) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => match (a, b) {
            (J::Bool(x), J::Number(_)) | (J::Number(_), J::Bool(x)) => {
                a.as_f64().or(b.as_f64()) == Some(f64::from(u8::from(*x)))
            }
            _ => a == b,
        },
    }
}

pub fn run() {
    let enabled = std::env::var("FIELDGATE_PEERS").is_ok_and(|v| v == "1");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/zigbee/decode.js");
    let package = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/zigbee/node_modules/zigbee-herdsman/package.json"
    );
    if !enabled {
        println!("skipped: set FIELDGATE_PEERS=1 (and run tests/peers/zigbee/setup.sh) to compare with zigbee-herdsman");
        return;
    }
    assert!(
        std::path::Path::new(package).exists(),
        "FIELDGATE_PEERS=1 but zigbee-herdsman is not unpacked: run tests/peers/zigbee/setup.sh"
    );
    let mut set = samples::reference_vectors();
    set.extend(samples::generate(0xD1FF, 4_000));
    // The ZCL inside each AF message is compared too.
    let inner: Vec<Sample> = set
        .iter()
        .filter_map(|s| match s {
            Sample::Mt(b) => match MtFrame::from_bytes(b)
                .ok()
                .and_then(|f| ZnpCommand::decode(&f).ok())
            {
                Some(ZnpCommand::AfIncomingMsg(m)) => Some(Sample::Zcl {
                    cluster: m.cluster_id,
                    bytes: m.data,
                }),
                _ => None,
            },
            Sample::Zcl { .. } => None,
        })
        .collect();
    set.extend(inner);
    let input: String = set
        .iter()
        .map(|s| match s {
            Sample::Mt(b) => format!("{{\"mt\":\"{}\"}}\n", to_hex(b)),
            Sample::Zcl { cluster, bytes } => {
                format!("{{\"zcl\":\"{}\",\"cluster\":{cluster}}}\n", to_hex(bytes))
            }
        })
        .collect();
    let mut child = std::process::Command::new("node")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("FIELDGATE_PEERS=1 needs node on PATH");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<J> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(theirs.len(), set.len());
    let (mut compared, mut fields) = (0, 0);
    for (s, zh) in set.iter().zip(&theirs) {
        assert!(zh.get("error").is_none(), "herdsman failed on {s:?}: {zh}");
        let (expected, what): (Vec<(String, J)>, String) = match s {
            Sample::Mt(b) => {
                let frame = MtFrame::from_bytes(b).unwrap();
                assert_eq!(zh["type"], json!(frame.cmd_type.bits()), "{s:?}");
                assert_eq!(zh["subsystem"], json!(frame.subsystem.bits()), "{s:?}");
                assert_eq!(zh["cmd"], json!(frame.cmd_id), "{s:?}");
                let cmd = ZnpCommand::decode(&frame).unwrap();
                let Some((name, f)) = mt_fields(&cmd) else {
                    continue;
                };
                assert_eq!(zh["name"], json!(name), "{s:?}");
                (
                    f.into_iter()
                        .map(|(k, v)| (format!("/payload{k}"), v))
                        .collect(),
                    to_hex(b),
                )
            }
            Sample::Zcl { cluster, bytes } => {
                let f = ZclFrame::decode(*cluster, bytes).unwrap();
                let Some(f) = zcl_fields(&f) else { continue };
                (f, format!("cluster {cluster:#06x} {}", to_hex(bytes)))
            }
        };
        for (pointer, want) in expected {
            let got = zh.pointer(&pointer).unwrap_or(&J::Null);
            assert!(
                same(got, &want),
                "{what}: {pointer}: herdsman {got}, ours {want}\n{zh}"
            );
            fields += 1;
        }
        compared += 1;
    }
    println!("zigbee-herdsman agrees on {compared} frames ({fields} fields)");
    assert!(compared > 4_000, "{compared}");
}
