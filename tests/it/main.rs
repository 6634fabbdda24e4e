//! Integration tests: the real `fieldgate` binary, a real SQLite database, the
//! real Unix-socket API. One test binary with modules keeps link time down.

mod common;

mod api;
mod audit;
mod audit_tamper;
mod ble;
mod block;
mod config;
mod conformance;
mod decode;
mod disk_full;
mod doctor;
mod durability;
mod emulate;
#[path = "../support/gateway.rs"]
mod gateway_support;
mod lifecycle;
mod lora;
mod lora_p2p;
mod mqtt;
mod policy;
#[path = "../support/rumqttd.rs"]
mod rumqttd_support;
mod zigbee;
mod zwave_emu;
mod zwave_emulator;
mod zwave_mock;
