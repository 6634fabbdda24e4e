//! `fieldgate emulate <protocol>`: serves a radio's device-side emulator to any host
//! stack, over TCP (like a network coordinator or a dongle behind ser2net) or a
//! pseudo-terminal (like a USB dongle), so that other projects' host stacks and our own
//! drivers can be run against it. One module per protocol; each owns its command's
//! options, listener and fault schedule and knows nothing of the others.

pub mod ble;
pub mod lora;
pub mod zigbee;
pub mod zwave;

pub use ble::{run_ble, BleArgs};
pub use lora::{run_lora, LoraArgs};
pub use zigbee::{run_zigbee, ZigbeeArgs};
pub use zwave::{run_zwave, ZwaveArgs};
