//! Our decode in zigbee-herdsman 11.1.1's shape: for each frame, the herdsman command name
//! and (JSON pointer, value) pairs that its decode must match, plus the accepted differences
//! ([`Diff`]) the frame runs into.

use fieldgate_zigbee::zcl::green_power::{GpNotification, GpdId};
use fieldgate_zigbee::zcl::{
    Direction, FrameType, ReportingConfig, ZclCommand, ZclFrame, ZclHeader, ZclValue,
};
use fieldgate_zigbee::{to_hex, ZnpCommand};
use serde_json::{json, Value as J};

use super::Diff;

/// Our decode of an MT frame, as (herdsman command name, [(JSON pointer, value)]).
pub fn mt_fields(
    cmd: &ZnpCommand,
    notes: &mut Vec<Diff>,
) -> Option<(&'static str, Vec<(&'static str, J)>)> {
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
        ZnpCommand::AfIncomingMsgExt(m) => {
            let data = if m.is_complete() {
                to_hex(&m.data)
            } else {
                // herdsman reads the `len` bytes after the length, and gets the trailer.
                notes.push(Diff::HeldBackPayload);
                let mut trailer = m.data.clone();
                if let Some(mac) = m.mac_src_addr {
                    trailer.extend_from_slice(&mac.to_le_bytes());
                }
                trailer.extend(m.msg_result_radius);
                to_hex(&trailer)
            };
            (
                "incomingMsgExt",
                vec![
                    ("/groupid", json!(m.group_id)),
                    ("/clusterid", json!(m.cluster_id)),
                    ("/srcaddrmode", json!(m.src_addr_mode)),
                    ("/srcaddr", json!(format!("{:#018x}", m.src_addr))),
                    ("/srcendpoint", json!(m.src_endpoint)),
                    ("/srcpanid", json!(m.src_pan_id)),
                    ("/dstendpoint", json!(m.dst_endpoint)),
                    ("/wasbroadcast", b(m.was_broadcast)),
                    ("/linkquality", json!(m.link_quality)),
                    ("/securityuse", b(m.security_use)),
                    ("/timestamp", json!(m.timestamp)),
                    ("/transseqnumber", json!(m.trans_seq_num)),
                    ("/len", json!(m.len)),
                    ("/data", json!(data)),
                ],
            )
        }
        ZnpCommand::AfDataRetrieveReq {
            timestamp,
            index,
            length,
        } => (
            "dataRetrieve",
            vec![
                ("/timestamp", json!(timestamp)),
                ("/index", json!(index)),
                ("/length", json!(length)),
            ],
        ),
        ZnpCommand::AfDataRetrieveRsp { status, data } => (
            "dataRetrieve",
            vec![
                ("/status", json!(status)),
                ("/length", json!(data.len())),
                ("/data", json!(to_hex(data))),
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

/// A value as herdsman's `BuffaloZcl.read` gives it, after `decode.js` made it JSON
/// (BigInt and Buffer as text, non-finite numbers as "NaN" / "Infinity" / "-Infinity").
pub fn value(v: &ZclValue, notes: &mut Vec<Diff>) -> J {
    // herdsman reads integers up to 48 bits as numbers, 56 and 64 bits as BigInt.
    let uint = |width: u8, value: u64| {
        if width <= 6 {
            json!(value)
        } else {
            json!(value.to_string())
        }
    };
    let float = |x: f64, notes: &mut Vec<Diff>| {
        if x.is_finite() {
            json!(x)
        } else {
            notes.push(Diff::NonFiniteFloat);
            json!(if x.is_nan() {
                "NaN"
            } else if x > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            })
        }
    };
    // A time of day or date byte: 0xFF ("not specified") is NaN in herdsman.
    let part = |b: u8, plus: u32, notes: &mut Vec<Diff>| {
        if b == 0xFF {
            notes.push(Diff::TimeNotSpecified);
            json!("NaN")
        } else {
            json!(u32::from(b) + plus)
        }
    };
    let text_or_empty = |s: Option<String>, notes: &mut Vec<Diff>| match s {
        Some(s) => json!(s),
        None => {
            notes.push(Diff::StringNonValue);
            json!("")
        }
    };
    match v {
        ZclValue::NoData | ZclValue::Unknown => J::Null,
        ZclValue::Data(bytes) => {
            let raw = bytes
                .iter()
                .rev()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            uint(u8::try_from(bytes.len()).unwrap_or(8), raw)
        }
        ZclValue::Bool(Some(b)) => json!(u8::from(*b)),
        ZclValue::Bool(None) => {
            notes.push(Diff::BoolInvalid);
            json!(0xFF)
        }
        ZclValue::Bitmap { width, value } | ZclValue::Uint { width, value } => uint(*width, *value),
        ZclValue::Int { width, value } => {
            if *width <= 6 {
                json!(value)
            } else {
                json!(value.to_string())
            }
        }
        ZclValue::Enum8(x) => json!(x),
        ZclValue::Enum16(x) | ZclValue::ClusterId(x) | ZclValue::AttrId(x) => json!(x),
        ZclValue::Utc(x) | ZclValue::BacOid(x) => json!(x),
        // herdsman cannot read it: the frame is an accepted error (see `run`).
        ZclValue::SemiFloat(_) => {
            notes.push(Diff::SemiFloat);
            J::Null
        }
        ZclValue::Single(x) => float(f64::from(*x), notes),
        ZclValue::Double(x) => float(*x, notes),
        ZclValue::OctetString(s) | ZclValue::LongOctetString(s) => {
            text_or_empty(s.as_ref().map(|b| to_hex(&b.0)), notes)
        }
        ZclValue::CharString(s) | ZclValue::LongCharString(s) => {
            text_or_empty(s.as_ref().map(|b| b.to_string_lossy()), notes)
        }
        ZclValue::Array { elements, .. }
        | ZclValue::Set { elements, .. }
        | ZclValue::Bag { elements, .. } => {
            J::Array(elements.iter().map(|e| value(e, notes)).collect())
        }
        ZclValue::Struct(members) => J::Array(
            members
                .iter()
                .map(|m| json!({"elmType": m.data_type().0, "elmVal": value(m, notes)}))
                .collect(),
        ),
        ZclValue::TimeOfDay([h, m, s, c]) => json!({
            "hours": part(*h, 0, notes),
            "minutes": part(*m, 0, notes),
            "seconds": part(*s, 0, notes),
            "hundredths": part(*c, 0, notes),
        }),
        ZclValue::Date([y, m, d, w]) => json!({
            "year": part(*y, 1900, notes),
            "month": part(*m, 0, notes),
            "dayOfMonth": part(*d, 0, notes),
            "dayOfWeek": part(*w, 0, notes),
        }),
        ZclValue::IeeeAddr(a) => json!(a.to_string()),
        ZclValue::SecKey(k) => json!(to_hex(k)),
    }
}

fn header_fields(h: &ZclHeader) -> Vec<(String, J)> {
    vec![
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
    ]
}

/// The fields of a GP (commissioning) notification; those after the GPD payload only when
/// herdsman skips over the payload (it does not when it leaves the payload unparsed).
fn green_power_fields(
    n: &GpNotification,
    commissioning: bool,
    notes: &mut Vec<Diff>,
) -> Vec<(String, J)> {
    let f = |k: &str, v: J| (format!("/payload/{k}"), v);
    // herdsman turns an unsigned parameter at its type's invalid value (all ones) into NaN.
    let uint = |v: u64, max: u64, notes: &mut Vec<Diff>| {
        if v == max {
            notes.push(Diff::InvalidParameter);
            json!("NaN")
        } else {
            json!(v)
        }
    };
    let (u8max, u16max, u32max) = (0xFF, 0xFFFF, 0xFFFF_FFFF);
    let mut out = vec![f("options", json!(n.options))];
    match n.gpd {
        GpdId::SrcId { src_id } => out.push(f("srcID", uint(src_id.into(), u32max, notes))),
        GpdId::Ieee { ieee, endpoint } => {
            out.push(f("gpdIEEEAddr", json!(ieee.to_string())));
            out.push(f("gpdEndpoint", uint(endpoint.into(), u8max, notes)));
        }
        GpdId::Other { .. } => {}
    }
    out.push(f(
        "frameCounter",
        uint(n.frame_counter.into(), u32max, notes),
    ));
    out.push(f("commandID", uint(n.command_id.into(), u8max, notes)));
    out.push(f("payloadSize", json!(n.payload.len())));
    let unparsed = if commissioning {
        n.options & 0x30 == 0x30 || n.options & 0x0200 != 0
    } else {
        n.options & 0xC0 == 0xC0
    };
    if unparsed {
        notes.push(Diff::GpUnparsedPayload);
        return out;
    }
    if !n.payload.is_empty() {
        out.push(f("commandFrame/raw", json!(to_hex(&n.payload))));
    }
    if let Some((addr, link)) = n.proxy {
        out.push(f("gppNwkAddr", uint(addr.into(), u16max, notes)));
        out.push(f("gppGpdLink", json!(link)));
    }
    if let Some(mic) = n.mic {
        out.push(f("mic", uint(mic.into(), u32max, notes)));
    }
    out
}

/// Our decode of a ZCL frame in herdsman's shape; `None` for commands not compared.
pub fn zcl_fields(f: &ZclFrame, notes: &mut Vec<Diff>) -> Option<Vec<(String, J)>> {
    let mut out = header_fields(&f.header);
    let p = |i: usize, k: &str| format!("/payload/{i}/{k}");
    let command = |name: &str, out: &mut Vec<(String, J)>| {
        out.push(("/command".into(), json!(name)));
    };
    match &f.command {
        ZclCommand::ReportAttributes { records } | ZclCommand::WriteAttributes { records } => {
            let report = matches!(f.command, ZclCommand::ReportAttributes { .. });
            command(if report { "report" } else { "write" }, &mut out);
            for (i, r) in records.iter().enumerate() {
                out.push((p(i, "attrId"), json!(r.attribute_id)));
                out.push((p(i, "dataType"), json!(r.value.data_type().0)));
                out.push((p(i, "attrData"), value(&r.value, notes)));
            }
        }
        ZclCommand::ReadAttributesRsp { records } => {
            command("readRsp", &mut out);
            for (i, r) in records.iter().enumerate() {
                out.push((p(i, "attrId"), json!(r.attribute_id)));
                out.push((p(i, "status"), json!(r.status)));
                if let Some(v) = &r.value {
                    out.push((p(i, "dataType"), json!(v.data_type().0)));
                    out.push((p(i, "attrData"), value(v, notes)));
                }
            }
        }
        ZclCommand::ConfigureReporting { records } => {
            command("configReport", &mut out);
            for (i, r) in records.iter().enumerate() {
                match r {
                    ReportingConfig::Send {
                        attribute_id,
                        data_type,
                        min_interval,
                        max_interval,
                        reportable_change,
                    } => {
                        if matches!(data_type.0, 0x27 | 0x2F) {
                            notes.push(Diff::Int64ReportableChange);
                        }
                        out.push((p(i, "direction"), json!(0)));
                        out.push((p(i, "attrId"), json!(attribute_id)));
                        out.push((p(i, "dataType"), json!(data_type.0)));
                        out.push((p(i, "minRepIntval"), json!(min_interval)));
                        out.push((p(i, "maxRepIntval"), json!(max_interval)));
                        if let Some(v) = reportable_change {
                            out.push((p(i, "repChange"), value(v, notes)));
                        }
                    }
                    ReportingConfig::Receive {
                        attribute_id,
                        timeout,
                    } => {
                        out.push((p(i, "direction"), json!(1)));
                        out.push((p(i, "attrId"), json!(attribute_id)));
                        out.push((p(i, "timeout"), json!(timeout)));
                    }
                }
            }
        }
        ZclCommand::ReadAttributes { attribute_ids } => {
            command("read", &mut out);
            for (i, a) in attribute_ids.iter().enumerate() {
                out.push((p(i, "attrId"), json!(a)));
            }
        }
        ZclCommand::DefaultRsp { command_id, status } => {
            command("defaultRsp", &mut out);
            out.push(("/payload/cmdId".into(), json!(command_id)));
            out.push(("/payload/statusCode".into(), json!(status)));
        }
        ZclCommand::GreenPowerNotification(n) => {
            command("notification", &mut out);
            out.extend(green_power_fields(n, false, notes));
        }
        ZclCommand::GreenPowerCommissioningNotification(n) => {
            command("commissioningNotification", &mut out);
            out.extend(green_power_fields(n, true, notes));
        }
        _ => return None,
    }
    Some(out)
}

/// Numbers compare as numbers (herdsman's and ours may differ in JSON type), inside arrays
/// and objects too; a bool matches 0 or 1. Floats may differ in the last bit: herdsman's
/// shortest decimal of a double comes back through serde_json, whose parser (without its
/// `float_roundtrip` feature) can land one unit in the last place away.
pub fn same(a: &J, b: &J) -> bool {
    match (a, b) {
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (J::Bool(x), J::Number(_)) | (J::Number(_), J::Bool(x)) => {
            a.as_f64().or(b.as_f64()) == Some(f64::from(u8::from(*x)))
        }
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => {
                x == y || (x - y).abs() <= 2.0 * f64::EPSILON * x.abs().max(y.abs())
            }
            _ => a == b,
        },
    }
}
