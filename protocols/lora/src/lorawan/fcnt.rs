//! 32-bit frame-counter reconstruction from the 16 bits on air.
//!
//! The MIC and the payload cipher use the full 32-bit FCnt, but a frame carries only its
//! 16 low bits. The receiver keeps the last accepted 32-bit value per device and picks the
//! smallest counter above it that ends in the received bits (lora-packet issues #57, #126
//! and #127 are "MIC fails" reports from skipping this step). A gap larger than `max_gap`
//! (MAX_FCNT_GAP = 16384 in LoRaWAN 1.0.0/1.0.1) is refused: those bits are more likely an
//! old frame replayed than 16,000 lost ones. The same bits as the last frame are reported
//! as a repeat (a confirmed uplink sent again), which the caller may de-duplicate.
//!
//! Pure arithmetic: the caller stores the counter only after the MIC verified.

/// LoRaWAN 1.0.0/1.0.1 MAX_FCNT_GAP (later versions leave the window to the server).
pub const MAX_FCNT_GAP: u32 = 16_384;

/// What the received 16 bits mean relative to the last accepted counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FcntVerdict {
    /// A new frame. `lost` frames were skipped since the last one (0 = none).
    Next { fcnt: u32, lost: u32 },
    /// The same counter as the last accepted frame: a retransmission or a replay.
    Repeat { fcnt: u32 },
}

impl FcntVerdict {
    /// The full counter to check the MIC with.
    pub fn fcnt(&self) -> u32 {
        match *self {
            FcntVerdict::Next { fcnt, .. } | FcntVerdict::Repeat { fcnt } => fcnt,
        }
    }
}

/// Why the received bits cannot be placed after the last counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FcntError {
    #[error("counter bits {received:#06x} after {last:?} skip {gap} frames, more than {max_gap}: an old or replayed frame")]
    OutOfWindow {
        last: Option<u32>,
        received: u16,
        gap: u32,
        max_gap: u32,
    },
    #[error("32-bit frame counter exhausted: the device must rejoin")]
    Exhausted,
}

/// Rebuilds the 32-bit counter of a frame whose FCnt field is `received`, given the last
/// accepted counter (`None` for a fresh session, whose first frame may carry 0).
pub fn reconstruct_fcnt(
    last: Option<u32>,
    received: u16,
    max_gap: u32,
) -> Result<FcntVerdict, FcntError> {
    let next = match last {
        None => 0u32,
        Some(l) if l as u16 == received => return Ok(FcntVerdict::Repeat { fcnt: l }),
        Some(l) => l.checked_add(1).ok_or(FcntError::Exhausted)?,
    };
    let gap = u32::from(received.wrapping_sub(next as u16));
    if gap > max_gap {
        return Err(FcntError::OutOfWindow {
            last,
            received,
            gap,
            max_gap,
        });
    }
    let fcnt = next.checked_add(gap).ok_or(FcntError::Exhausted)?;
    Ok(FcntVerdict::Next { fcnt, lost: gap })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_sequence_lost_and_rollover() {
        assert_eq!(
            reconstruct_fcnt(None, 0, MAX_FCNT_GAP),
            Ok(FcntVerdict::Next { fcnt: 0, lost: 0 })
        );
        assert_eq!(
            reconstruct_fcnt(Some(5), 6, MAX_FCNT_GAP),
            Ok(FcntVerdict::Next { fcnt: 6, lost: 0 })
        );
        assert_eq!(
            reconstruct_fcnt(Some(5), 9, MAX_FCNT_GAP),
            Ok(FcntVerdict::Next { fcnt: 9, lost: 3 })
        );
        // 0xffff -> 0x0000 on air is 0x0001_0000 in full.
        assert_eq!(
            reconstruct_fcnt(Some(0xffff), 0, MAX_FCNT_GAP),
            Ok(FcntVerdict::Next {
                fcnt: 0x1_0000,
                lost: 0
            })
        );
        assert_eq!(
            reconstruct_fcnt(Some(0x2_fff0), 0x0005, MAX_FCNT_GAP),
            Ok(FcntVerdict::Next {
                fcnt: 0x3_0005,
                lost: 0x14
            })
        );
        assert_eq!(
            reconstruct_fcnt(Some(0x1_0002), 2, MAX_FCNT_GAP),
            Ok(FcntVerdict::Repeat { fcnt: 0x1_0002 })
        );
    }

    #[test]
    fn replays_and_exhaustion_are_refused() {
        // One behind the last: 65,534 ahead, far past the window.
        assert!(matches!(
            reconstruct_fcnt(Some(100), 99, MAX_FCNT_GAP),
            Err(FcntError::OutOfWindow { gap: 65534, .. })
        ));
        assert!(reconstruct_fcnt(None, 20_000, MAX_FCNT_GAP).is_err());
        assert_eq!(
            reconstruct_fcnt(Some(u32::MAX - 1), 0xffff, MAX_FCNT_GAP),
            Ok(FcntVerdict::Next {
                fcnt: u32::MAX,
                lost: 0
            })
        );
        assert_eq!(
            reconstruct_fcnt(Some(u32::MAX), 0, MAX_FCNT_GAP),
            Err(FcntError::Exhausted)
        );
        assert_eq!(
            reconstruct_fcnt(Some(u32::MAX - 1), 3, u32::MAX),
            Err(FcntError::Exhausted)
        );
        // A window of the whole 16-bit space accepts anything but a repeat.
        assert_eq!(
            reconstruct_fcnt(Some(100), 99, 0xffff).map(|v| v.fcnt()),
            Ok(0x1_0063)
        );
    }
}
