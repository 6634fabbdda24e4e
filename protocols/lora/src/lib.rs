//! Pure LoRa codec for fieldgate: bytes in, typed frames out, and back. No IO, no async.
//!
//! - [`lorawan`]: LoRaWAN 1.0.x PHYPayload parse/build, MIC, payload and join-accept crypto,
//!   session keys, 32-bit frame-counter reconstruction, the MAC commands a local gateway answers.
//! - [`region`]: EU868 and US915 as data: channels, data rates, RX1/RX2 parameters, delays.
//! - [`gwmp`]: the Semtech UDP packet forwarder protocol (GWMP v2) and its JSON.
//! - [`rak3172`]: the RAK3172 (RUI3) AT dialogue in LoRa P2P mode, as a line parser/builder.
//! - [`lpp`]: Cayenne LPP payloads to named readings with units.
//! - [`decode`]: a PHYPayload and the keys a technician has, to one JSON report
//!   (`fieldgate decode lora`).
//!
//! Everything that came from outside (radio bytes, datagrams, serial lines) is parsed into
//! a typed value or a typed error; nothing here panics on input or keeps device state.
//!
//! An uplink from a concentrator, as a driver handles it (the driver keeps the keys and the
//! last accepted frame counter of each device it owns):
//!
//! ```
//! use fieldgate_lora::gwmp::Packet;
//! use fieldgate_lora::lorawan::{reconstruct_fcnt, PhyPayload, SessionKeys, MAX_FCNT_GAP};
//! use fieldgate_lora::region::Region;
//! use fieldgate_lora::{lpp, DevAddr};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let keys = SessionKeys {
//! #     nwk_s_key: "44024241ed4ce9a68c6a8bc055233fd3".parse()?,
//! #     app_s_key: "ec925802ae430ca77fd3dd73cb2cc588".parse()?,
//! # };
//! # let msg = fieldgate_lora::lorawan::DataMessage {
//! #     direction: fieldgate_lora::Direction::Uplink, confirmed: false, dev_addr: DevAddr(0x2601_1234),
//! #     fctrl: Default::default(), fcnt: 0x1_0003, fopts: vec![], fport: Some(2),
//! #     payload: vec![0x03, 0x67, 0x01, 0x10],
//! # };
//! # let phy = fieldgate_lora::lorawan::DataFrame::seal(&msg, &keys)?.to_bytes()?;
//! # use fieldgate_lora::gwmp::{CrcStatus, DataRate, Modulation, Payload, PushData, RxPk};
//! # let rxpk = RxPk {
//! #     time: None, tmms: None, tmst: 1_000_000, freq: 868.3, chan: 0, rfch: 0,
//! #     stat: CrcStatus::Ok, modu: Modulation::Lora, datr: DataRate::Lora { sf: 7, bw_khz: 125 },
//! #     codr: Some("4/5".into()), rssi: -60, lsnr: Some(7.5), size: phy.len() as u16,
//! #     data: Payload(phy),
//! # };
//! # let udp = Packet::PushData {
//! #     token: 0xabcd, gateway: fieldgate_lora::Eui64(0x0102_0304_0506_0708),
//! #     data: PushData { rxpk: vec![rxpk], ..PushData::default() },
//! # }.to_bytes();
//! # let last_fcnt = Some(0x1_0001);
//! let packet = Packet::parse(&udp)?;                  // a UDP datagram from lora_pkt_fwd
//! let ack = packet.ack();                             // send PUSH_ACK back at once
//! assert!(ack.is_some());
//! let Packet::PushData { data, .. } = packet else { unreachable!() };
//! for rx in &data.rxpk {
//!     let PhyPayload::Data(frame) = PhyPayload::parse(&rx.data.0)? else { continue };
//!     // Look the device up by frame.dev_addr; here it is ours with `keys` and `last_fcnt`.
//!     let fcnt = reconstruct_fcnt(last_fcnt, frame.fcnt, MAX_FCNT_GAP)?.fcnt();
//!     let msg = frame.open(&keys, fcnt)?;             // MIC checked, then decrypted
//!     assert_eq!(fcnt, 0x1_0003);                     // store it as the new last counter
//!     let readings = lpp::decode(&msg.payload)?;
//!     assert_eq!((readings[0].name(), readings[0].unit()), ("temperature", "°C"));
//!     // Where a class A answer would go (RX1, 1 s after tmst):
//!     let region = Region::Eu868;
//!     let dr = region.dr_for(rx.datr.modulation(), true).expect("an EU868 rate");
//!     let rx1 = region.rx1(rx.freq_hz(), dr, 0)?;
//!     assert_eq!((rx1.freq_hz, rx1.dr), (868_300_000, 5));
//! }
//! # Ok(()) }
//! ```

pub mod decode;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod gwmp;
pub mod lorawan;
pub mod lpp;
pub mod rak3172;
pub mod region;
pub mod types;

pub use types::{AesKey, DevAddr, DevNonce, Direction, Eui64, HexError, JoinNonce, NetId};
