//! `fieldgate emulate <protocol>`: serves a radio's device-side emulator to any host
//! stack, over TCP (like a network coordinator or a dongle behind ser2net) or a
//! pseudo-terminal (like a USB dongle), so that other projects' host stacks and our own
//! drivers can be run against it. One module per protocol; each owns its command's
//! options, listener and fault schedule and knows nothing of the others.

pub mod ble;
pub mod lora;
pub mod lora_rak;
pub mod zigbee;
pub mod zwave;

pub use ble::{run_ble, BleArgs};
pub use lora::{run_lora, LoraArgs};
pub use lora_rak::{run_lora_rak, RakArgs};
pub use zigbee::{run_zigbee, ZigbeeArgs};
pub use zwave::{run_zwave, ZwaveArgs};

/// Serves one host connection at a time, like a serial port behind ser2net: a host that
/// connects while another is served waits until that one has gone. `serve` pumps one
/// connection between the host and the emulator until it ends.
pub(crate) async fn serve_tcp<F, Fut>(
    listener: tokio::net::TcpListener,
    serve: F,
) -> anyhow::Result<()>
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: keep listening.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        stream.set_nodelay(true).ok();
        tracing::info!(%peer, "host connected");
        match serve(stream).await {
            Ok(()) => tracing::info!(%peer, "host disconnected"),
            Err(e) => tracing::info!(%peer, error = %e, "host connection ended"),
        }
    }
}
