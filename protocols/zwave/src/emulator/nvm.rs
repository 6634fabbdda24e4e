//! The controller's NVM and FUNC_ID_NVM_BACKUP_RESTORE (0x2E), the 700/800-series way to
//! read and write it (zwave-js `serialapi/nvm/NVMOperationsMessages.ts`).
//!
//! Request `operation, [length, offset u16 BE, data]`: Open (0) → `status, 0, size u16`;
//! Read (1) → `status, length, offset, data` (status 0xFF EndOfFile for the last chunk);
//! Write (2) → `status, length, offset`; Close (3) → `status`. Reads and writes need an open
//! NVM (otherwise status 2, OperationMismatch). A read longer than fits in one frame is
//! answered with no data, as real controllers do and zwave-js expects (it retries with 48
//! bytes).
//!
//! The default image ([`DEFAULT_IMAGE`]) was made by `@zwave-js/nvmedit` from the default
//! network (`tests/peers/zwave/make-nvm.cjs`, see docs/zwave.md): home id 0xFA116A7E,
//! controller node 1, nodes 2-6, SDK 7.18.1, 48 KiB.

/// The NVM image of the default network (NVM3, 700 series).
pub const DEFAULT_IMAGE: &[u8] = include_bytes!("nvm.bin");

pub const STATUS_OK: u8 = 0x00;
pub const STATUS_ERROR: u8 = 0x01;
pub const STATUS_OPERATION_MISMATCH: u8 = 0x02;
pub const STATUS_END_OF_FILE: u8 = 0xFF;

const OPEN: u8 = 0x00;
const READ: u8 = 0x01;
const WRITE: u8 = 0x02;
const CLOSE: u8 = 0x03;

/// Most data bytes one response carries (a 252-byte payload minus the 4-byte header).
pub const MAX_CHUNK: usize = 248;

#[derive(Debug, Clone)]
pub struct Nvm {
    image: Vec<u8>,
    open: bool,
}

impl Nvm {
    pub fn new(image: Vec<u8>) -> Self {
        Self { image, open: false }
    }

    pub fn image(&self) -> &[u8] {
        &self.image
    }

    /// Carries out one NVM_BACKUP_RESTORE request and returns the response payload.
    pub fn operation(&mut self, p: &[u8]) -> Vec<u8> {
        let Some(&op) = p.first() else {
            return vec![STATUS_ERROR, 0, 0, 0];
        };
        let size = u16::try_from(self.image.len()).unwrap_or(u16::MAX);
        match op {
            OPEN => {
                self.open = true;
                let [a, b] = size.to_be_bytes();
                vec![STATUS_OK, 0x00, a, b]
            }
            CLOSE => {
                self.open = false;
                vec![STATUS_OK, 0x00, 0x00, 0x00]
            }
            READ | WRITE if !self.open => vec![STATUS_OPERATION_MISMATCH, 0, 0, 0],
            READ => {
                let (Some(&len), Some(off)) = (p.get(1), p.get(2..4)) else {
                    return vec![STATUS_ERROR, 0, 0, 0];
                };
                let offset = usize::from(u16::from_be_bytes([off[0], off[1]]));
                let len = usize::from(len);
                let mut out = vec![STATUS_OK, 0x00, off[0], off[1]];
                if len > MAX_CHUNK {
                    return out;
                }
                let end = (offset + len).min(self.image.len());
                let data = self.image.get(offset..end).unwrap_or_default();
                if end >= self.image.len() {
                    out[0] = STATUS_END_OF_FILE;
                }
                out[1] = data.len() as u8;
                out.extend_from_slice(data);
                out
            }
            WRITE => {
                let (Some(&len), Some(off)) = (p.get(1), p.get(2..4)) else {
                    return vec![STATUS_ERROR, 0, 0, 0];
                };
                let offset = usize::from(u16::from_be_bytes([off[0], off[1]]));
                let data = p.get(4..4 + usize::from(len)).unwrap_or_default();
                let Some(dest) = self.image.get_mut(offset..offset + data.len()) else {
                    return vec![STATUS_ERROR, 0, off[0], off[1]];
                };
                dest.copy_from_slice(data);
                let status = if offset + data.len() >= self.image.len() {
                    STATUS_END_OF_FILE
                } else {
                    STATUS_OK
                };
                vec![status, data.len() as u8, off[0], off[1]]
            }
            _ => vec![STATUS_ERROR, 0, 0, 0],
        }
    }
}
