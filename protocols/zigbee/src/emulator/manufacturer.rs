//! The manufacturer payloads the emulator's Tuya and Aqara devices send, byte for byte as the
//! real devices do: a Tuya data report on 0xEF00 (command 0x02: sequence number, then
//! datapoints `dp, type 0x02, length 4, value` big-endian) and an Aqara Basic report of
//! attribute 0xFF01 (a char string holding `index, type, value` records).

use crate::zcl::{
    global, AttributeRecord, Direction, FrameType, ZclBytes, ZclCommand, ZclFrame, ZclHeader,
    ZclValue,
};

pub use crate::zcl::manufacturer::TUYA_CLUSTER;

/// A Tuya data report of value datapoints `(dp, value)`.
pub fn tuya_report(tsn: u8, seq: u16, datapoints: &[(u8, i64)]) -> ZclFrame {
    let mut payload = seq.to_be_bytes().to_vec();
    for (dp, value) in datapoints {
        payload.extend([*dp, 0x02, 0x00, 0x04]);
        payload.extend((*value as i32).to_be_bytes());
    }
    ZclFrame {
        header: ZclHeader {
            frame_type: FrameType::ClusterSpecific,
            ..ZclHeader::global(Direction::ServerToClient, true, tsn, 0x02)
        },
        command: ZclCommand::Raw { payload },
    }
}

/// An Aqara 0xFF01 report: battery `millivolts` (index 1, uint16), temperature in 0.01 °C
/// (100, int16), humidity in 0.01 % (101, uint16) and pressure in Pa (102, int32).
pub fn aqara_report(
    tsn: u8,
    millivolts: u16,
    centi_c: i64,
    centi_rh: i64,
    pascal: i64,
) -> ZclFrame {
    let mut s = vec![0x01, 0x21];
    s.extend(millivolts.to_le_bytes());
    s.extend([0x64, 0x29]);
    s.extend((centi_c as i16).to_le_bytes());
    s.extend([0x65, 0x21]);
    s.extend((centi_rh as u16).to_le_bytes());
    s.extend([0x66, 0x2B]);
    s.extend((pascal as i32).to_le_bytes());
    ZclFrame {
        header: ZclHeader::global(
            Direction::ServerToClient,
            true,
            tsn,
            global::REPORT_ATTRIBUTES,
        ),
        command: ZclCommand::ReportAttributes {
            records: vec![AttributeRecord {
                attribute_id: crate::zcl::manufacturer::XIAOMI_BASIC_STRUCT,
                value: ZclValue::CharString(Some(ZclBytes(s))),
            }],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zcl::manufacturer::{tuya_datapoints, xiaomi_struct, TuyaValue};

    #[test]
    fn the_payloads_read_back_with_the_codec() {
        let f = tuya_report(7, 0x0102, &[(1, 215), (2, 45), (4, 87)]);
        let bytes = f.encode().unwrap();
        let back = ZclFrame::decode(TUYA_CLUSTER, &bytes).unwrap();
        let ZclCommand::Raw { payload } = &back.command else {
            panic!("{back:?}")
        };
        let (seq, dps) = tuya_datapoints(payload).unwrap();
        assert_eq!(seq, 0x0102);
        assert_eq!(dps[0].value, TuyaValue::Value(215));
        let f = aqara_report(8, 2995, 2150, 4520, 100_300);
        let back = ZclFrame::decode(0x0000, &f.encode().unwrap()).unwrap();
        let values = back.attribute_values();
        let ZclValue::CharString(Some(b)) = values[0].1 else {
            panic!("{values:?}")
        };
        let recs = xiaomi_struct(&b.0).unwrap();
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[1].1.as_f64(), Some(2150.0));
    }
}
