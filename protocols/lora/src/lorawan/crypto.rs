//! LoRaWAN 1.0.x cryptography over raw fields: the data-frame MIC (AES-CMAC over B0 | msg),
//! the FRMPayload keystream (AES-ECB over the A_i blocks), join MICs, the join-accept
//! "encryption" (AES *decrypt*, so devices only need AES encrypt) and 1.0.x session keys.
//!
//! Owns no frame layout beyond the B0/A_i blocks; `data.rs` and `join.rs` call it with the
//! bytes they laid out. Uses RustCrypto's `aes` and `cmac`, never a hand-written cipher.

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes128;
use cmac::{Cmac, Mac};

use crate::types::{AesKey, DevAddr, DevNonce, Direction, JoinNonce, NetId};

/// A 4-byte message integrity code.
pub type Mic = [u8; 4];

fn aes(key: &AesKey) -> Aes128 {
    Aes128::new(GenericArray::from_slice(key.as_bytes()))
}

/// AES-CMAC over the concatenation of `parts`, truncated to the 4 bytes LoRaWAN sends.
pub fn cmac4(key: &AesKey, parts: &[&[u8]]) -> Mic {
    let mut mac = <Cmac<Aes128> as KeyInit>::new(GenericArray::from_slice(key.as_bytes()));
    for p in parts {
        mac.update(p);
    }
    let full = mac.finalize().into_bytes();
    [full[0], full[1], full[2], full[3]]
}

/// Compares MICs without an early exit, so timing does not tell how many bytes matched.
pub fn constant_time_eq(a: &Mic, b: &Mic) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The B0 (MIC) and A_i (cipher) blocks share a layout: `tag | 0000 | Dir | DevAddr | FCnt32 | 00 | last`.
fn block(tag: u8, dir: Direction, dev_addr: DevAddr, fcnt: u32, last: u8) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = tag;
    b[5] = dir.byte();
    b[6..10].copy_from_slice(&dev_addr.0.to_le_bytes());
    b[10..14].copy_from_slice(&fcnt.to_le_bytes());
    b[15] = last;
    b
}

/// MIC of a data frame: `AES-CMAC(NwkSKey, B0 | msg)[0..4]`, msg = `MHDR | FHDR | FPort | FRMPayload`.
/// `fcnt` is the full 32-bit counter (see `fcnt.rs`). `msg` is at most 255 bytes in any
/// valid frame; B0 carries its length in one byte.
pub fn data_mic(
    nwk_s_key: &AesKey,
    dir: Direction,
    dev_addr: DevAddr,
    fcnt: u32,
    msg: &[u8],
) -> Mic {
    let b0 = block(0x49, dir, dev_addr, fcnt, msg.len() as u8);
    cmac4(nwk_s_key, &[&b0, msg])
}

/// Encrypts or decrypts (the same XOR) a FRMPayload in place with the keystream
/// `S_i = AES-ECB(K, A_i)`, i = 1.. . K is the NwkSKey for FPort 0, the AppSKey otherwise.
pub fn xor_frm_payload(
    key: &AesKey,
    dir: Direction,
    dev_addr: DevAddr,
    fcnt: u32,
    data: &mut [u8],
) {
    let cipher = aes(key);
    for (i, chunk) in data.chunks_mut(16).enumerate() {
        let a = block(0x01, dir, dev_addr, fcnt, (i + 1) as u8);
        let mut s = GenericArray::from(a);
        cipher.encrypt_block(&mut s);
        for (d, k) in chunk.iter_mut().zip(s.iter()) {
            *d ^= k;
        }
    }
}

/// The network side's join-accept "encryption": AES-ECB *decrypt* of every 16-byte block
/// (everything after MHDR, MIC included). `data.len()` must be a multiple of 16.
pub fn join_accept_encrypt(app_key: &AesKey, data: &mut [u8]) {
    let cipher = aes(app_key);
    for chunk in data.chunks_exact_mut(16) {
        cipher.decrypt_block(GenericArray::from_mut_slice(chunk));
    }
}

/// The device side's join-accept decryption: AES-ECB *encrypt* of every 16-byte block.
pub fn join_accept_decrypt(app_key: &AesKey, data: &mut [u8]) {
    let cipher = aes(app_key);
    for chunk in data.chunks_exact_mut(16) {
        cipher.encrypt_block(GenericArray::from_mut_slice(chunk));
    }
}

/// The two LoRaWAN 1.0.x session keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKeys {
    /// Network session key: data MICs, FPort 0 payloads.
    pub nwk_s_key: AesKey,
    /// Application session key: FPort 1..=255 payloads.
    pub app_s_key: AesKey,
}

impl SessionKeys {
    /// 1.0.x derivation: `K = AES-ECB(AppKey, tag | AppNonce | NetID | DevNonce | pad16)`, all
    /// fields in wire (little-endian) order, tag 0x01 for the NwkSKey and 0x02 for the AppSKey.
    pub fn derive(
        app_key: &AesKey,
        join_nonce: JoinNonce,
        net_id: NetId,
        dev_nonce: DevNonce,
    ) -> SessionKeys {
        let cipher = aes(app_key);
        let derive = |tag: u8| {
            let mut b = [0u8; 16];
            b[0] = tag;
            b[1..4].copy_from_slice(&join_nonce.0.to_le_bytes()[..3]);
            b[4..7].copy_from_slice(&net_id.0.to_le_bytes()[..3]);
            b[7..9].copy_from_slice(&dev_nonce.0.to_le_bytes());
            let mut block = GenericArray::from(b);
            cipher.encrypt_block(&mut block);
            AesKey(block.into())
        };
        SessionKeys {
            nwk_s_key: derive(0x01),
            app_s_key: derive(0x02),
        }
    }

    /// The key that protects the FRMPayload on `fport`.
    pub fn payload_key(&self, fport: u8) -> &AesKey {
        if fport == 0 {
            &self.nwk_s_key
        } else {
            &self.app_s_key
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::hex_decode;

    fn key(s: &str) -> AesKey {
        s.parse().unwrap()
    }

    /// RFC 4493 §4 example 2 (AES-CMAC, 16-byte message): checks the CMAC wiring itself.
    #[test]
    fn cmac_matches_rfc4493() {
        let k = key("2b7e151628aed2a6abf7158809cf4f3c");
        let m = hex_decode("6bc1bee22e409f96e93d7e117393172a").unwrap();
        assert_eq!(cmac4(&k, &[&m]), [0x07, 0x0a, 0x16, 0xb4]);
        // Split input gives the same tag.
        assert_eq!(cmac4(&k, &[&m[..5], &m[5..]]), [0x07, 0x0a, 0x16, 0xb4]);
    }

    /// B0 and A1 of the lora-packet README uplink (reference §5, checked there against
    /// lora-packet 0.9.3, lorawan 0.9.0 and lrwn 4.13.0).
    #[test]
    fn b0_and_a1_layout() {
        let b0 = block(0x49, Direction::Uplink, DevAddr(0x49be7df1), 2, 0x0d);
        assert_eq!(
            b0.to_vec(),
            hex_decode("490000000000f17dbe4902000000000d").unwrap()
        );
        let a1 = block(0x01, Direction::Uplink, DevAddr(0x49be7df1), 2, 1);
        assert_eq!(
            a1.to_vec(),
            hex_decode("010000000000f17dbe49020000000001").unwrap()
        );
    }

    #[test]
    fn join_accept_cipher_is_an_involution_pair() {
        let k = key("00112233445566778899aabbccddeeff");
        let plain: Vec<u8> = (0u8..32).collect();
        let mut data = plain.clone();
        join_accept_encrypt(&k, &mut data);
        assert_ne!(data, plain);
        join_accept_decrypt(&k, &mut data);
        assert_eq!(data, plain);
    }
}
