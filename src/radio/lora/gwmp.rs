//! The server side of GWMP (the Semtech UDP packet forwarder protocol) on one UDP socket:
//! acknowledgements, the downlink path (PULL_RESP to the address of the last PULL_DATA),
//! downlinks waiting for their TX_ACK with an RX2 fallback, and the gateway's statistics.
//! It owns the socket and no LoRaWAN logic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use fieldgate_lora::gwmp::{Packet, PullResp, Stat, TxAck, TxAckError, TxPk};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// A downlink handed to the forwarder, until its TX_ACK.
#[derive(Debug)]
struct InFlight {
    /// What it is, for the log ("join-accept for …").
    what: String,
    /// The same frame in RX2, sent if the forwarder refuses the RX1 one.
    fallback: Option<TxPk>,
    sent_at: Instant,
}

/// The gateway's last `stat` report, as received.
#[derive(Debug, Default, Clone)]
pub struct GatewayStats {
    pub reports: u64,
    pub last: Option<Stat>,
}

/// What a TX_ACK meant.
#[derive(Debug, PartialEq)]
pub enum TxOutcome {
    Sent {
        what: String,
    },
    /// Refused in RX1; the RX2 copy went out instead.
    RetriedInRx2 {
        what: String,
        error: String,
    },
    Failed {
        what: String,
        error: String,
    },
    /// A TX_ACK for no downlink of ours (late, or another server's).
    Unknown,
}

pub struct ForwarderLink {
    sock: UdpSocket,
    pull_addr: Option<SocketAddr>,
    token: u16,
    in_flight: HashMap<u16, InFlight>,
    pub stats: GatewayStats,
    /// When a packet forwarder last sent anything that parsed (its keep-alive included).
    pub last_heard: Option<Instant>,
}

/// Downlinks with no TX_ACK after this long are forgotten (older forwarders send none).
const TX_ACK_WAIT: Duration = Duration::from_secs(30);

impl ForwarderLink {
    pub fn new(sock: UdpSocket) -> ForwarderLink {
        ForwarderLink {
            sock,
            pull_addr: None,
            token: rand::random(),
            in_flight: HashMap::new(),
            stats: GatewayStats::default(),
            last_heard: None,
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    pub async fn recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        self.sock.recv_from(buf).await
    }

    /// Answers what needs an answer (PUSH_ACK, PULL_ACK) and remembers where downlinks go.
    pub async fn acknowledge(&mut self, packet: &Packet, from: SocketAddr) -> std::io::Result<()> {
        if matches!(
            packet,
            Packet::PullData { .. } | Packet::PushData { .. } | Packet::TxAck { .. }
        ) {
            self.last_heard = Some(Instant::now());
        }
        if let Packet::PullData { .. } = packet {
            self.pull_addr = Some(from);
        }
        if let Some(ack) = packet.ack() {
            self.sock.send_to(&ack.to_bytes(), from).await?;
        }
        Ok(())
    }

    /// Whether a forwarder has sent PULL_DATA, so downlinks have somewhere to go.
    pub fn has_downlink_path(&self) -> bool {
        self.pull_addr.is_some()
    }

    /// Sends `txpk` as a PULL_RESP; `fallback` goes out if the forwarder refuses it.
    /// Returns the token its TX_ACK will carry.
    pub async fn send(
        &mut self,
        txpk: TxPk,
        fallback: Option<TxPk>,
        what: String,
    ) -> Result<u16, String> {
        let Some(to) = self.pull_addr else {
            return Err("no PULL_DATA from a packet forwarder yet: no downlink path".into());
        };
        self.token = self.token.wrapping_add(1);
        let token = self.token;
        let bytes = Packet::PullResp {
            token,
            data: PullResp { txpk },
        }
        .to_bytes();
        self.sock
            .send_to(&bytes, to)
            .await
            .map_err(|e| format!("sending PULL_RESP to {to}: {e}"))?;
        let now = Instant::now();
        self.in_flight.retain(|_, f| now - f.sent_at < TX_ACK_WAIT);
        self.in_flight.insert(
            token,
            InFlight {
                what,
                fallback,
                sent_at: now,
            },
        );
        Ok(token)
    }

    /// Settles the downlink a TX_ACK answers; a refused RX1 downlink is sent again in RX2.
    pub async fn tx_ack(&mut self, token: u16, ack: Option<&TxAck>) -> TxOutcome {
        let Some(f) = self.in_flight.remove(&token) else {
            return TxOutcome::Unknown;
        };
        let error = ack
            .and_then(|a| a.txpk_ack.error)
            .filter(|e| *e != TxAckError::None);
        let Some(error) = error else {
            return TxOutcome::Sent { what: f.what };
        };
        let error_s = format!("{error:?}");
        let retry = matches!(
            error,
            TxAckError::TooLate | TxAckError::TooEarly | TxAckError::CollisionPacket
        );
        if let (true, Some(rx2)) = (retry, f.fallback) {
            let what = format!("{} (RX2)", f.what);
            return match self.send(rx2, None, what.clone()).await {
                Ok(_) => TxOutcome::RetriedInRx2 {
                    what: f.what,
                    error: error_s,
                },
                Err(e) => TxOutcome::Failed {
                    what,
                    error: format!("{error_s}; {e}"),
                },
            };
        }
        TxOutcome::Failed {
            what: f.what,
            error: error_s,
        }
    }
}
