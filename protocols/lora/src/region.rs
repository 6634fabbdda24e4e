//! Regional parameters as data (LoRaWAN Regional Parameters RP002-1.0.x, 1.0.x MAC):
//! EU868 and US915 data rates, default channels, RX1 data-rate offset tables, RX2 defaults,
//! receive and join-accept delays, and the RX1 frequency/data rate answering an uplink.
//!
//! Frequencies are in Hz. Owns no per-device state: channel masks, CFList channels and
//! RXParamSetup changes belong to whoever keeps the session.

use std::time::Duration;

/// Modulation and rate of one data rate index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modulation {
    Lora {
        sf: u8,
        bw_khz: u16,
    },
    Fsk {
        bps: u32,
    },
    /// LR-FHSS: coding rate ("1/3" or "2/3") and occupied channel width.
    LrFhss {
        coding_rate: &'static str,
        ocw_khz: u32,
    },
}

impl Modulation {
    /// The GWMP `datr` string of a LoRa rate, e.g. `SF7BW125`.
    pub fn lora_datr(&self) -> Option<String> {
        match self {
            Modulation::Lora { sf, bw_khz } => Some(format!("SF{sf}BW{bw_khz}")),
            _ => None,
        }
    }
}

/// One row of a region's data-rate table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRate {
    pub dr: u8,
    pub modulation: Modulation,
    pub uplink: bool,
    pub downlink: bool,
}

/// An uplink or downlink channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    pub freq_hz: u32,
    pub min_dr: u8,
    pub max_dr: u8,
}

/// Where and how fast a receive window listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxWindow {
    pub freq_hz: u32,
    pub dr: u8,
}

/// Why a region cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error("data rate {0} is not an uplink data rate here")]
    UplinkDataRate(u8),
    #[error("RX1 data-rate offset {offset} is above this region's {max}")]
    Rx1DrOffset { offset: u8, max: u8 },
    #[error("{0} Hz is not an uplink channel of this region")]
    UplinkFrequency(u32),
}

/// The regions this crate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    Eu868,
    Us915,
}

const fn lora(dr: u8, sf: u8, bw_khz: u16, uplink: bool, downlink: bool) -> DataRate {
    DataRate {
        dr,
        modulation: Modulation::Lora { sf, bw_khz },
        uplink,
        downlink,
    }
}

const fn lr_fhss(dr: u8, coding_rate: &'static str, ocw_khz: u32) -> DataRate {
    DataRate {
        dr,
        modulation: Modulation::LrFhss {
            coding_rate,
            ocw_khz,
        },
        uplink: true,
        downlink: false,
    }
}

const EU868_DATA_RATES: &[DataRate] = &[
    lora(0, 12, 125, true, true),
    lora(1, 11, 125, true, true),
    lora(2, 10, 125, true, true),
    lora(3, 9, 125, true, true),
    lora(4, 8, 125, true, true),
    lora(5, 7, 125, true, true),
    lora(6, 7, 250, true, true),
    DataRate {
        dr: 7,
        modulation: Modulation::Fsk { bps: 50_000 },
        uplink: true,
        downlink: true,
    },
    lr_fhss(8, "1/3", 137),
    lr_fhss(9, "2/3", 137),
    lr_fhss(10, "1/3", 336),
    lr_fhss(11, "2/3", 336),
];

const US915_DATA_RATES: &[DataRate] = &[
    lora(0, 10, 125, true, false),
    lora(1, 9, 125, true, false),
    lora(2, 8, 125, true, false),
    lora(3, 7, 125, true, false),
    lora(4, 8, 500, true, false),
    lr_fhss(5, "1/3", 1523),
    lr_fhss(6, "2/3", 1523),
    lora(8, 12, 500, false, true),
    lora(9, 11, 500, false, true),
    lora(10, 10, 500, false, true),
    lora(11, 9, 500, false, true),
    lora(12, 8, 500, false, true),
    lora(13, 7, 500, false, true),
];

/// EU868 RX1 data rate by [uplink DR][RX1DROffset 0..=5]: DR - offset, floored at DR0;
/// the LR-FHSS rates answer like DR1/DR2 (RP002 table for EU868).
const EU868_RX1: &[(u8, [u8; 6])] = &[
    (0, [0, 0, 0, 0, 0, 0]),
    (1, [1, 0, 0, 0, 0, 0]),
    (2, [2, 1, 0, 0, 0, 0]),
    (3, [3, 2, 1, 0, 0, 0]),
    (4, [4, 3, 2, 1, 0, 0]),
    (5, [5, 4, 3, 2, 1, 0]),
    (6, [6, 5, 4, 3, 2, 1]),
    (7, [7, 6, 5, 4, 3, 2]),
    (8, [1, 0, 0, 0, 0, 0]),
    (9, [2, 1, 0, 0, 0, 0]),
    (10, [1, 0, 0, 0, 0, 0]),
    (11, [2, 1, 0, 0, 0, 0]),
];

/// US915 RX1 data rate by [uplink DR][RX1DROffset 0..=3].
const US915_RX1: &[(u8, [u8; 4])] = &[
    (0, [10, 9, 8, 8]),
    (1, [11, 10, 9, 8]),
    (2, [12, 11, 10, 9]),
    (3, [13, 12, 11, 10]),
    (4, [13, 13, 12, 11]),
    (5, [10, 9, 8, 8]),
    (6, [11, 10, 9, 8]),
];

const EU868_CHANNELS: &[Channel] = &[
    Channel {
        freq_hz: 868_100_000,
        min_dr: 0,
        max_dr: 5,
    },
    Channel {
        freq_hz: 868_300_000,
        min_dr: 0,
        max_dr: 5,
    },
    Channel {
        freq_hz: 868_500_000,
        min_dr: 0,
        max_dr: 5,
    },
];

/// US915 plan: 64 x 125 kHz uplinks from 902.3 MHz every 200 kHz (DR0..3), 8 x 500 kHz
/// uplinks from 903.0 MHz every 1.6 MHz (DR4, and LR-FHSS DR5/6 since RP002-1.0.3),
/// 8 x 500 kHz downlinks from 923.3 MHz every 600 kHz (DR8..13).
const US915_UP125_BASE: u32 = 902_300_000;
const US915_UP125_STEP: u32 = 200_000;
const US915_UP500_BASE: u32 = 903_000_000;
const US915_UP500_STEP: u32 = 1_600_000;
const US915_DOWN_BASE: u32 = 923_300_000;
const US915_DOWN_STEP: u32 = 600_000;

impl Region {
    pub fn name(self) -> &'static str {
        match self {
            Region::Eu868 => "EU868",
            Region::Us915 => "US915",
        }
    }

    /// The data-rate table.
    pub fn data_rates(self) -> &'static [DataRate] {
        match self {
            Region::Eu868 => EU868_DATA_RATES,
            Region::Us915 => US915_DATA_RATES,
        }
    }

    pub fn data_rate(self, dr: u8) -> Option<DataRate> {
        self.data_rates().iter().copied().find(|d| d.dr == dr)
    }

    /// The data-rate index of a modulation in one direction, e.g. SF7/125 kHz uplink ->
    /// DR5 in EU868, DR3 in US915.
    pub fn dr_for(self, modulation: Modulation, uplink: bool) -> Option<u8> {
        self.data_rates()
            .iter()
            .find(|d| d.modulation == modulation && if uplink { d.uplink } else { d.downlink })
            .map(|d| d.dr)
    }

    /// Uplink channels every device starts with (EU868: the three join channels; US915: all 72).
    pub fn default_channels(self) -> Vec<Channel> {
        match self {
            Region::Eu868 => EU868_CHANNELS.to_vec(),
            Region::Us915 => (0..64)
                .map(|i| Channel {
                    freq_hz: US915_UP125_BASE + i * US915_UP125_STEP,
                    min_dr: 0,
                    max_dr: 3,
                })
                .chain((0..8).map(|i| Channel {
                    freq_hz: US915_UP500_BASE + i * US915_UP500_STEP,
                    min_dr: 4,
                    max_dr: 6,
                }))
                .collect(),
        }
    }

    /// Index of an uplink frequency in `default_channels`.
    pub fn uplink_channel(self, freq_hz: u32) -> Option<usize> {
        match self {
            Region::Eu868 => EU868_CHANNELS.iter().position(|c| c.freq_hz == freq_hz),
            Region::Us915 => {
                let on_grid = |base: u32, step: u32, count: u32| {
                    let off = freq_hz.checked_sub(base)?;
                    (off % step == 0 && off / step < count).then_some((off / step) as usize)
                };
                on_grid(US915_UP125_BASE, US915_UP125_STEP, 64)
                    .or_else(|| on_grid(US915_UP500_BASE, US915_UP500_STEP, 8).map(|i| 64 + i))
            }
        }
    }

    /// Highest RX1DROffset the region defines.
    pub fn max_rx1_dr_offset(self) -> u8 {
        match self {
            Region::Eu868 => 5,
            Region::Us915 => 3,
        }
    }

    /// RX1 data rate for an uplink at `uplink_dr` with the session's RX1DROffset.
    pub fn rx1_data_rate(self, uplink_dr: u8, rx1_dr_offset: u8) -> Result<u8, RegionError> {
        let max = self.max_rx1_dr_offset();
        if rx1_dr_offset > max {
            return Err(RegionError::Rx1DrOffset {
                offset: rx1_dr_offset,
                max,
            });
        }
        let o = usize::from(rx1_dr_offset);
        let row = match self {
            Region::Eu868 => EU868_RX1
                .iter()
                .find(|(dr, _)| *dr == uplink_dr)
                .map(|(_, r)| r[o]),
            Region::Us915 => US915_RX1
                .iter()
                .find(|(dr, _)| *dr == uplink_dr)
                .map(|(_, r)| r[o]),
        };
        row.ok_or(RegionError::UplinkDataRate(uplink_dr))
    }

    /// RX1 frequency for an uplink frequency. EU868 answers on the uplink frequency (any,
    /// CFList channels included); US915 maps uplink channel n to downlink channel n mod 8.
    pub fn rx1_frequency(self, uplink_freq_hz: u32) -> Result<u32, RegionError> {
        match self {
            Region::Eu868 => Ok(uplink_freq_hz),
            Region::Us915 => {
                let ch = self
                    .uplink_channel(uplink_freq_hz)
                    .ok_or(RegionError::UplinkFrequency(uplink_freq_hz))?;
                Ok(US915_DOWN_BASE + (ch % 8) as u32 * US915_DOWN_STEP)
            }
        }
    }

    /// The RX1 window answering an uplink heard at `uplink_freq_hz` / `uplink_dr`.
    pub fn rx1(
        self,
        uplink_freq_hz: u32,
        uplink_dr: u8,
        rx1_dr_offset: u8,
    ) -> Result<RxWindow, RegionError> {
        Ok(RxWindow {
            freq_hz: self.rx1_frequency(uplink_freq_hz)?,
            dr: self.rx1_data_rate(uplink_dr, rx1_dr_offset)?,
        })
    }

    /// The default RX2 window (a Join-Accept's DLSettings or RXParamSetupReq may move it).
    pub fn rx2(self) -> RxWindow {
        match self {
            Region::Eu868 => RxWindow {
                freq_hz: 869_525_000,
                dr: 0,
            },
            Region::Us915 => RxWindow {
                freq_hz: 923_300_000,
                dr: 8,
            },
        }
    }

    /// RECEIVE_DELAY1: RX1 opens this long after a data uplink ends (1 s in both regions;
    /// a Join-Accept's RxDelay overrides it for the session).
    pub fn receive_delay1(self) -> Duration {
        Duration::from_secs(1)
    }

    /// RECEIVE_DELAY2 = RECEIVE_DELAY1 + 1 s.
    pub fn receive_delay2(self) -> Duration {
        Duration::from_secs(2)
    }

    /// JOIN_ACCEPT_DELAY1: RX1 after a Join-Request.
    pub fn join_accept_delay1(self) -> Duration {
        Duration::from_secs(5)
    }

    /// JOIN_ACCEPT_DELAY2: RX2 after a Join-Request.
    pub fn join_accept_delay2(self) -> Duration {
        Duration::from_secs(6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eu868_answers_on_the_uplink_frequency() {
        let r = Region::Eu868;
        assert_eq!(
            r.rx1(868_300_000, 5, 0),
            Ok(RxWindow {
                freq_hz: 868_300_000,
                dr: 5
            })
        );
        assert_eq!(r.rx1_data_rate(5, 2), Ok(3));
        assert_eq!(r.rx1_data_rate(1, 5), Ok(0));
        assert!(r.rx1_data_rate(5, 6).is_err());
        assert!(r.rx1_data_rate(12, 0).is_err());
        assert_eq!(r.rx2().freq_hz, 869_525_000);
        assert_eq!(
            r.dr_for(Modulation::Lora { sf: 7, bw_khz: 125 }, true),
            Some(5)
        );
        assert_eq!(r.default_channels().len(), 3);
        assert_eq!(r.join_accept_delay1(), Duration::from_secs(5));
    }

    #[test]
    fn us915_maps_uplink_channels_onto_eight_downlinks() {
        let r = Region::Us915;
        assert_eq!(r.default_channels().len(), 72);
        assert_eq!(r.uplink_channel(902_300_000), Some(0));
        assert_eq!(r.uplink_channel(903_900_000), Some(8));
        assert_eq!(r.uplink_channel(914_900_000), Some(63));
        assert_eq!(r.uplink_channel(903_000_000), Some(64));
        assert_eq!(r.uplink_channel(914_200_000), Some(71));
        assert_eq!(r.uplink_channel(902_400_000), None);
        // Channel 8 (second sub-band's first) -> downlink channel 0, 923.3 MHz.
        assert_eq!(
            r.rx1(903_900_000, 3, 0),
            Ok(RxWindow {
                freq_hz: 923_300_000,
                dr: 13
            })
        );
        assert_eq!(r.rx1_frequency(904_500_000), Ok(925_100_000));
        assert_eq!(r.rx1_frequency(903_000_000 + 1_600_000), Ok(923_900_000));
        assert_eq!(r.rx1_data_rate(0, 0), Ok(10));
        assert_eq!(r.rx1_data_rate(4, 1), Ok(13));
        assert!(r.rx1_data_rate(8, 0).is_err());
        assert_eq!(
            r.rx2(),
            RxWindow {
                freq_hz: 923_300_000,
                dr: 8
            }
        );
        assert_eq!(
            r.dr_for(Modulation::Lora { sf: 7, bw_khz: 500 }, false),
            Some(13)
        );
        assert_eq!(
            r.data_rate(4).and_then(|d| d.modulation.lora_datr()),
            Some("SF8BW500".to_string())
        );
    }
}
