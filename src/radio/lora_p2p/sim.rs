//! Runs the sans-IO RAK3172 emulator (`fieldgate_lora::rak3172::emulator`) on a byte
//! stream: the far end of `sim://lora-rak3172`'s in-process pipe, a TCP connection
//! (`fieldgate emulate lora-rak3172 --listen`), or the master side of a pseudo-terminal
//! whose slave path a driver opens through tokio-serial like a real USB modem
//! ([`PtyModem`]).
//!
//! The pumping lives in `crate::radio::sim`; this module adds what tests do with the handle
//! ([`SimModem`]: inject a fault, put a frame on the air, read back what was transmitted);
//! nothing about the protocol. The
//! emulated module (its work mode and settings, kept in flash on a real one) outlives a
//! link.

use std::time::Duration;

use fieldgate_lora::rak3172::emulator::{AirFrame, Emulator, EmulatorConfig, Fault, Sensor, Stats};
use tokio::io::DuplexStream;

use crate::radio::sim::{byte_emulator, Parked, PtySim, Sim};

byte_emulator!(
    Emulator,
    EmulatorConfig,
    Fault,
    "RAK3172",
    read_chunk = 1024
);

/// A shareable handle on one emulated RAK3172 and the sensors around it.
pub type SimModem = Sim<Emulator>;

/// An emulated RAK3172 behind a pseudo-terminal.
pub type PtyModem = PtySim<Emulator>;

impl Sim<Emulator> {
    /// Puts a frame on the air now; `true` when the module heard it.
    pub fn air_frame(&self, freq_hz: u32, sf: u8, bw_khz: u16, frame: AirFrame) -> bool {
        self.with(|e, _| e.air_frame(freq_hz, sf, bw_khz, frame))
    }

    pub fn stats(&self) -> Stats {
        self.with(|e, _| e.stats().clone())
    }
}

/// The module behind `sim://lora-rak3172`: factory LoRaWAN mode (so the driver switches
/// it), two LPP sensors on 868.0 MHz SF7, and one on SF9 that it does not hear.
pub fn sim_config() -> EmulatorConfig {
    let sensor = |id: u32, sf: u8, secs: u64, rssi: i16| Sensor {
        id,
        freq_hz: 868_000_000,
        sf,
        bw_khz: 125,
        interval: Duration::from_secs(secs),
        rssi,
        snr: 8,
        cipher: None,
    };
    EmulatorConfig {
        sensors: vec![
            sensor(0x0a0b_0c01, 7, 5, -71),
            sensor(0x0a0b_0c02, 7, 7, -88),
            sensor(0x0a0b_0c09, 9, 6, -95),
        ],
        ..EmulatorConfig::default()
    }
}

/// Modules not attached to a link right now.
static PARKED: Parked<Emulator> = Parked::new();

/// The `sim://lora-rak3172` factory (for the driver table's `emulator:` entry).
pub fn attach_sim(stream: DuplexStream) {
    PARKED.attach(stream, sim_config);
}
