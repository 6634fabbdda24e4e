//! LoRaWAN end to end: the real daemon with a GWMP radio on a loopback UDP port, an
//! emulated packet forwarder and end devices (`fieldgate_lora::emulator`) sending real
//! datagrams, keys added through the CLI, the registry, the audit log and the MQTT uplink.

mod bridge;
mod chirpstack;
mod e2e;
mod emulate;
mod mqtt;

use std::time::Duration;

use fieldgate_lora::emulator::{Forwarder, Heard};
use fieldgate_lora::gwmp::PullResp;
use fieldgate_lora::Eui64;
use tokio::net::UdpSocket;

/// The emulated packet forwarder's end of the UDP conversation.
pub(crate) struct PacketForwarder {
    pub(crate) sock: UdpSocket,
    pub(crate) fwd: Forwarder,
}

pub(crate) fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free UDP port")
}

impl PacketForwarder {
    pub(crate) async fn connect(port: u16) -> PacketForwarder {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.connect(("127.0.0.1", port)).await.unwrap();
        PacketForwarder {
            sock,
            fwd: Forwarder::new(Eui64(0x0016_c001_ff10_0001)),
        }
    }

    async fn recv(&self, limit: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(limit, self.sock.recv(&mut buf)).await {
            Ok(Ok(n)) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    /// PULL_DATA until the gateway answers PULL_ACK (it may still be starting).
    pub(crate) async fn open_downlink_path(&mut self) {
        for _ in 0..100 {
            let pull = self.fwd.pull_data();
            let _ = self.sock.send(&pull).await;
            if let Some(d) = self.recv(Duration::from_millis(200)).await {
                if d.len() == 4 && d[3] == 0x04 {
                    return;
                }
            }
            // Nothing bound yet answers at once (ICMP port unreachable): wait for it.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway never answered PULL_DATA");
    }

    /// Pushes one frame heard at `tmst` and waits for its PUSH_ACK.
    pub(crate) async fn push(&mut self, phy: &[u8], tmst: u32) {
        let push = self.fwd.push_frame(phy, tmst, 868_100_000, 7);
        self.sock.send(&push).await.unwrap();
        let ack = self.recv(Duration::from_secs(5)).await.expect("PUSH_ACK");
        assert_eq!((ack.len(), ack[3]), (4, 0x01), "PUSH_ACK");
    }

    /// The next PULL_RESP (acknowledged with TX_ACK), if one comes within `limit`.
    pub(crate) async fn downlink(&mut self, limit: Duration) -> Option<PullResp> {
        let d = self.recv(limit).await?;
        let (token, resp) = Forwarder::pull_resp(&d)?;
        let ack = self.fwd.tx_ack(token, None);
        self.sock.send(&ack).await.unwrap();
        Some(resp)
    }
}

pub(crate) fn joined(h: Heard) -> bool {
    matches!(h, Heard::Joined { .. })
}
