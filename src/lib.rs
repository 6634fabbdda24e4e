//! fieldgate: an edge-gateway daemon for Zigbee, Z-Wave, BLE and LoRa devices with
//! an offline-first registry, a durable MQTT uplink and a tamper-evident audit log.
//!
//! The binary (`src/main.rs`) is a thin clap front over these modules; see
//! `docs/architecture.md` for how they fit together and how a radio is added.

pub mod api;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod demo;
pub mod doctor;
pub mod emulate;
pub mod files;
pub mod hub;
pub mod journal;
pub mod memory;
pub mod model;
pub mod output;
pub mod policy;
pub mod radio;
pub mod restore;
pub mod secrets;
pub mod shutdown;
pub mod store;
pub mod upstream;
