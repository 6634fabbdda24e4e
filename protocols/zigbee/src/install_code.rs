//! Zigbee install codes: the per-device secret printed on a device (or its box) from which the
//! trust center derives the device's preconfigured link key (Zigbee 3.0 / BDB §10.1).
//!
//! An install code is 6, 8, 12 or 16 bytes followed by a CRC-16 of those bytes, sent least
//! significant byte first (8, 10, 14 or 18 bytes in all). The CRC is CRC-16/X-25 (ITU-T
//! X.25: reflected polynomial 0x1021, initial value 0xFFFF, final XOR 0xFFFF), the check
//! zigbee-herdsman 11.1.1 applies in `dist/controller/helpers/installCodes.js checkInstallCode`
//! with `dist/zspec/utils.js crc16X25`. A code whose CRC does not match is refused, never
//! "corrected": the CRC is what catches a mistyped code before a device fails to join.
//!
//! This module only validates; it never prints a code (errors name lengths, not bytes).

use std::fmt;

/// Code lengths without the CRC (bytes).
pub const CODE_LENGTHS: [usize; 4] = [6, 8, 12, 16];
/// Length of the trailing CRC.
pub const CRC_LEN: usize = 2;
/// APP_CNF_BDB_ADD_INSTALLCODE format: install code followed by its CRC.
pub const FORMAT_CODE_AND_CRC: u8 = 0x01;
/// APP_CNF_BDB_ADD_INSTALLCODE format: the 16-byte key already derived from the code.
pub const FORMAT_DERIVED_KEY: u8 = 0x02;

/// Why a string or byte sequence is not an install code. Never carries the code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallCodeError {
    #[error(
        "an install code is hexadecimal digits (spaces, `-` and `:` between them are allowed)"
    )]
    NotHex,
    #[error(
        "an install code is 8, 10, 14 or 18 bytes (6, 8, 12 or 16 bytes of code and a 2-byte CRC); got {0} bytes"
    )]
    Length(usize),
    #[error("the install code's CRC does not match (mistyped?)")]
    Crc,
}

/// CRC-16/X-25 over `data` (check value for "123456789": 0x906E).
pub fn crc16_x25(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for byte in data {
        crc ^= u16::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8408
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A validated install code with its CRC (as the coordinator takes it with format
/// [`FORMAT_CODE_AND_CRC`]). `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct InstallCode(Vec<u8>);

impl fmt::Debug for InstallCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstallCode(<{} bytes redacted>)", self.0.len())
    }
}

impl InstallCode {
    /// Checks length and CRC of code-plus-CRC bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<InstallCode, InstallCodeError> {
        let n = bytes.len();
        if !CODE_LENGTHS.iter().any(|l| l + CRC_LEN == n) {
            return Err(InstallCodeError::Length(n));
        }
        let (code, crc) = bytes.split_at(n - CRC_LEN);
        let want = crc16_x25(code).to_le_bytes();
        if crc != want {
            return Err(InstallCodeError::Crc);
        }
        Ok(InstallCode(bytes.to_vec()))
    }

    /// Parses hex as printed on devices (`83FE D340 ...`, `83:FE:...`, `83-FE-...`).
    pub fn parse(text: &str) -> Result<InstallCode, InstallCodeError> {
        let digits: Vec<u8> = text
            .bytes()
            .filter(|b| !matches!(b, b' ' | b'-' | b':' | b'\t'))
            .collect();
        if digits.len() % 2 != 0 {
            return Err(InstallCodeError::NotHex);
        }
        let mut bytes = Vec::with_capacity(digits.len() / 2);
        for pair in digits.chunks(2) {
            let hi = hex_digit(pair[0]).ok_or(InstallCodeError::NotHex)?;
            let lo = hex_digit(pair[1]).ok_or(InstallCodeError::NotHex)?;
            bytes.push(hi << 4 | lo);
        }
        Self::from_bytes(&bytes)
    }

    /// Code and CRC, as stored and sent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The code's length without the CRC.
    pub fn code_len(&self) -> usize {
        self.0.len() - CRC_LEN
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example install code of the Zigbee specification (BDB spec 13-0402, §10.1, and
    /// Zigbee 3.0 device-behaviour test vectors): 16 bytes of code, CRC C3B5 on the wire.
    const SPEC_EXAMPLE: &str = "83FED3407A939723A5C639B26916D505C3B5";

    #[test]
    fn crc_matches_the_standard_check_value() {
        // CRC-16/X-25 catalogue check value (reveng.sourceforge.io CRC catalogue).
        assert_eq!(crc16_x25(b"123456789"), 0x906E);
    }

    #[test]
    fn the_specification_example_is_accepted() {
        let code = InstallCode::parse(SPEC_EXAMPLE).unwrap();
        assert_eq!(code.code_len(), 16);
        assert_eq!(&code.as_bytes()[16..], &[0xC3, 0xB5]);
        // Separators as printed on labels.
        assert_eq!(
            InstallCode::parse("83FE-D340-7A93-9723-A5C6-39B2-6916-D505-C3B5").unwrap(),
            code
        );
        assert_eq!(
            InstallCode::parse(&SPEC_EXAMPLE.to_lowercase()).unwrap(),
            code
        );
    }

    #[test]
    fn every_length_works_with_its_crc_and_fails_without() {
        for len in CODE_LENGTHS {
            let code: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37) ^ 0x5A).collect();
            let mut full = code.clone();
            full.extend_from_slice(&crc16_x25(&code).to_le_bytes());
            assert!(InstallCode::from_bytes(&full).is_ok(), "{len}");
            // Missing CRC: refused (a 6-byte code plus CRC has the same length as an 8-byte
            // code without one, so guessing would be unsafe).
            assert!(InstallCode::from_bytes(&code).is_err(), "{len}");
            // One flipped bit anywhere is caught.
            for i in 0..full.len() {
                let mut bad = full.clone();
                bad[i] ^= 0x10;
                assert_eq!(InstallCode::from_bytes(&bad), Err(InstallCodeError::Crc));
            }
        }
    }

    #[test]
    fn bad_input_gets_a_clear_error_without_the_code() {
        assert_eq!(
            InstallCode::parse("83FED3407A9397"),
            Err(InstallCodeError::Length(7))
        );
        assert_eq!(InstallCode::parse("83FG"), Err(InstallCodeError::NotHex));
        assert_eq!(InstallCode::parse("83F"), Err(InstallCodeError::NotHex));
        assert_eq!(InstallCode::parse(""), Err(InstallCodeError::Length(0)));
        let mut wrong = SPEC_EXAMPLE.to_string();
        wrong.replace_range(34..36, "B6");
        let e = InstallCode::parse(&wrong).unwrap_err();
        assert_eq!(e, InstallCodeError::Crc);
        assert!(!e.to_string().contains("83FE"));
        let code = InstallCode::parse(SPEC_EXAMPLE).unwrap();
        assert_eq!(format!("{code:?}"), "InstallCode(<18 bytes redacted>)");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,64}") {
            let _ = InstallCode::parse(&s);
        }
    }
}
