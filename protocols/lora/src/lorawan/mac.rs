//! LoRaWAN 1.0.x MAC commands, as found in FOpts or in an FPort 0 payload.
//!
//! Decodes the two a local gateway answers itself: LinkCheckReq/Ans (the device asks whether
//! and how well it is heard) and DevStatusReq/Ans (battery and link margin). Every other
//! 1.0.x command is carried as `Other` with its bytes, using the length table so the list can
//! be walked; a CID this table does not know ends the walk as `Unknown` with the rest of the
//! bytes (its length is unknowable), as the spec tells receivers to stop there.
//!
//! The CID alone does not name a command: 0x02 is LinkCheckReq in an uplink and LinkCheckAns
//! in a downlink, so every call takes the frame's direction.

use crate::types::Direction;

/// A MAC command. As JSON: `{"command": "dev_status_ans", "battery": 254, "margin": 7}`,
/// bytes in hex.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum MacCommand {
    /// Uplink 0x02: "am I heard?".
    LinkCheckReq,
    /// Downlink 0x02: demodulation margin (dB above the demodulation floor, 0..=254) of the
    /// last LinkCheckReq, and how many gateways received it.
    LinkCheckAns { margin: u8, gw_cnt: u8 },
    /// Downlink 0x06: asks the device for its status.
    DevStatusReq,
    /// Uplink 0x06: battery (0 = external power, 1..=254 = level, 255 = cannot tell) and
    /// SNR margin of the last DevStatusReq, -32..=31 dB.
    DevStatusAns { battery: u8, margin: i8 },
    /// Another 1.0.x command, not decoded here.
    Other {
        cid: u8,
        #[serde(serialize_with = "crate::types::serde_hex")]
        payload: Vec<u8>,
    },
    /// A CID this table does not know, and every byte after it.
    Unknown {
        cid: u8,
        #[serde(serialize_with = "crate::types::serde_hex")]
        rest: Vec<u8>,
    },
}

/// A MAC command list that cannot be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("MAC command {cid:#04x} needs {need} payload bytes, {got} left")]
    Truncated { cid: u8, need: usize, got: usize },
    #[error("{0} is not sent in this direction")]
    WrongDirection(&'static str),
    #[error("MAC command {cid:#04x} payload must be {need} bytes, got {got}")]
    PayloadLength { cid: u8, need: usize, got: usize },
    #[error("DevStatusAns margin {0} is outside -32..=31")]
    MarginRange(i8),
}

/// Payload length of a 1.0.x command (through 1.0.4: up to DeviceTimeReq/Ans 0x0D).
pub fn payload_len(direction: Direction, cid: u8) -> Option<usize> {
    let (up, down) = match cid {
        0x02 => (0, 2), // LinkCheckReq / LinkCheckAns
        0x03 => (1, 4), // LinkADRAns / LinkADRReq
        0x04 => (0, 1), // DutyCycleAns / DutyCycleReq
        0x05 => (1, 4), // RXParamSetupAns / RXParamSetupReq
        0x06 => (2, 0), // DevStatusAns / DevStatusReq
        0x07 => (1, 5), // NewChannelAns / NewChannelReq
        0x08 => (0, 1), // RXTimingSetupAns / RXTimingSetupReq
        0x09 => (0, 1), // TxParamSetupAns / TxParamSetupReq
        0x0A => (1, 4), // DlChannelAns / DlChannelReq
        0x0D => (0, 5), // DeviceTimeReq / DeviceTimeAns
        _ => return None,
    };
    Some(match direction {
        Direction::Uplink => up,
        Direction::Downlink => down,
    })
}

/// Reads every command in `bytes` (FOpts or a decrypted FPort 0 payload).
pub fn parse_commands(direction: Direction, bytes: &[u8]) -> Result<Vec<MacCommand>, MacError> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&cid) = bytes.get(i) {
        let Some(len) = payload_len(direction, cid) else {
            out.push(MacCommand::Unknown {
                cid,
                rest: bytes[i + 1..].to_vec(),
            });
            break;
        };
        let start = i + 1;
        let p = bytes.get(start..start + len).ok_or(MacError::Truncated {
            cid,
            need: len,
            got: bytes.len() - start,
        })?;
        out.push(match (direction, cid) {
            (Direction::Uplink, 0x02) => MacCommand::LinkCheckReq,
            (Direction::Downlink, 0x02) => MacCommand::LinkCheckAns {
                margin: p[0],
                gw_cnt: p[1],
            },
            (Direction::Downlink, 0x06) => MacCommand::DevStatusReq,
            (Direction::Uplink, 0x06) => MacCommand::DevStatusAns {
                battery: p[0],
                // Six-bit two's complement: shift the sign bit up to bit 7 and back.
                margin: ((p[1] << 2) as i8) >> 2,
            },
            _ => MacCommand::Other {
                cid,
                payload: p.to_vec(),
            },
        });
        i = start + len;
    }
    Ok(out)
}

/// Writes `commands` for a frame going in `direction`.
pub fn encode_commands(direction: Direction, commands: &[MacCommand]) -> Result<Vec<u8>, MacError> {
    let mut out = Vec::new();
    for c in commands {
        match (c, direction) {
            (MacCommand::LinkCheckReq, Direction::Uplink) => out.push(0x02),
            (MacCommand::LinkCheckAns { margin, gw_cnt }, Direction::Downlink) => {
                out.extend_from_slice(&[0x02, *margin, *gw_cnt])
            }
            (MacCommand::DevStatusReq, Direction::Downlink) => out.push(0x06),
            (MacCommand::DevStatusAns { battery, margin }, Direction::Uplink) => {
                if !(-32..=31).contains(margin) {
                    return Err(MacError::MarginRange(*margin));
                }
                out.extend_from_slice(&[0x06, *battery, (*margin as u8) & 0x3f]);
            }
            (MacCommand::Other { cid, payload }, _) => {
                let need = payload_len(direction, *cid).ok_or(MacError::WrongDirection(
                    "a command outside the 1.0.x table",
                ))?;
                if need != payload.len() {
                    return Err(MacError::PayloadLength {
                        cid: *cid,
                        need,
                        got: payload.len(),
                    });
                }
                out.push(*cid);
                out.extend_from_slice(payload);
            }
            (MacCommand::Unknown { cid, rest }, _) => {
                out.push(*cid);
                out.extend_from_slice(rest);
            }
            (MacCommand::LinkCheckReq | MacCommand::DevStatusAns { .. }, Direction::Downlink) => {
                return Err(MacError::WrongDirection("an uplink command"))
            }
            (MacCommand::LinkCheckAns { .. } | MacCommand::DevStatusReq, Direction::Uplink) => {
                return Err(MacError::WrongDirection("a downlink command"))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::*;

    #[test]
    fn link_check_and_dev_status() {
        assert_eq!(
            parse_commands(Uplink, &[0x02]).unwrap(),
            vec![MacCommand::LinkCheckReq]
        );
        assert_eq!(
            parse_commands(Downlink, &[0x02, 20, 3]).unwrap(),
            vec![MacCommand::LinkCheckAns {
                margin: 20,
                gw_cnt: 3
            }]
        );
        assert_eq!(
            parse_commands(Uplink, &[0x06, 0xff, 0x3f, 0x06, 0, 0x1f]).unwrap(),
            vec![
                MacCommand::DevStatusAns {
                    battery: 255,
                    margin: -1
                },
                MacCommand::DevStatusAns {
                    battery: 0,
                    margin: 31
                }
            ]
        );
        assert_eq!(
            parse_commands(Uplink, &[0x06, 1, 0x20]).unwrap(),
            vec![MacCommand::DevStatusAns {
                battery: 1,
                margin: -32
            }]
        );
    }

    #[test]
    fn other_unknown_and_truncated() {
        let cmds = parse_commands(Uplink, &[0x03, 0x07, 0x02, 0x80, 9, 9]).unwrap();
        assert_eq!(
            cmds,
            vec![
                MacCommand::Other {
                    cid: 3,
                    payload: vec![7]
                },
                MacCommand::LinkCheckReq,
                MacCommand::Unknown {
                    cid: 0x80,
                    rest: vec![9, 9]
                }
            ]
        );
        assert_eq!(
            encode_commands(Uplink, &cmds).unwrap(),
            vec![0x03, 0x07, 0x02, 0x80, 9, 9]
        );
        assert_eq!(
            parse_commands(Downlink, &[0x02, 1]),
            Err(MacError::Truncated {
                cid: 2,
                need: 2,
                got: 1
            })
        );
        assert!(encode_commands(Downlink, &[MacCommand::LinkCheckReq]).is_err());
        assert!(encode_commands(
            Uplink,
            &[MacCommand::DevStatusAns {
                battery: 0,
                margin: 40
            }]
        )
        .is_err());
    }
}
