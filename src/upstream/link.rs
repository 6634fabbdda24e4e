//! The MQTT client the session drives, MQTT 3.1.1 or MQTT 5 (`[upstream] protocol`).
//!
//! rumqttc has one client per protocol version (`rumqttc` and `rumqttc::v5`) with
//! the same shape: options, a client handle, an event loop. This module puts an enum
//! over each so the session, the outbox pump and request handling stay one code
//! path: they publish with [`Props`] (ignored on 3.1.1) and read [`Ev`]ents, which
//! carry only what the session uses. It owns no state and decides nothing.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::{Event, Incoming, Outgoing, QoS, Transport};

/// Options for either client, built by [`super::client::ClientSettings`].
#[derive(Clone)]
pub enum Options {
    V4(Box<rumqttc::MqttOptions>),
    V5(Box<rumqttc::v5::MqttOptions>),
}

impl Options {
    pub fn transport(&self) -> Transport {
        match self {
            Options::V4(o) => o.transport(),
            Options::V5(o) => o.transport(),
        }
    }

    /// Publishes rumqttc keeps in flight (on MQTT 5 also capped by the broker's
    /// receive maximum).
    pub fn set_inflight(&mut self, n: u16) {
        match self {
            Options::V4(o) => {
                o.set_inflight(n.max(1));
            }
            Options::V5(o) => {
                o.set_outgoing_inflight_upper_limit(n.max(1));
            }
        }
    }

    pub fn protocol(&self) -> u8 {
        match self {
            Options::V4(_) => 4,
            Options::V5(_) => 5,
        }
    }

    pub fn clean_session(&self) -> bool {
        match self {
            Options::V4(o) => o.clean_session(),
            Options::V5(o) => o.clean_start(),
        }
    }

    /// The last will's topic and retain flag.
    pub fn last_will(&self) -> Option<(String, bool)> {
        match self {
            Options::V4(o) => o.last_will().map(|w| (w.topic, w.retain)),
            Options::V5(o) => o
                .last_will()
                .map(|w| (String::from_utf8_lossy(&w.topic).into_owned(), w.retain)),
        }
    }

    /// The user name and password, if any.
    pub fn credentials(&self) -> Option<(String, String)> {
        match self {
            Options::V4(o) => o.credentials().map(|l| (l.username, l.password)),
            Options::V5(o) => o.credentials().map(|l| (l.username, l.password)),
        }
    }
}

/// MQTT 5 properties of one publish; all of them are dropped on MQTT 3.1.1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    /// The requester's Correlation Data, echoed on its answer.
    pub correlation_data: Option<Vec<u8>>,
    /// Message expiry interval, seconds.
    pub message_expiry: Option<u32>,
    /// `application/json` with the UTF-8 payload format indicator.
    pub json: bool,
    pub user_properties: Vec<(String, String)>,
    /// Not sent: for an answer addressed to the requester's Response Topic, the
    /// gateway's own response topic, where it goes instead if the broker refuses it
    /// there (an ACL that keeps the gateway to its prefix).
    pub response_fallback: Option<String>,
}

impl Props {
    /// An upper bound of the bytes these properties add to a PUBLISH.
    pub fn wire_len(&self) -> usize {
        let data = self.correlation_data.as_ref().map_or(0, |d| d.len() + 3);
        let users: usize = self
            .user_properties
            .iter()
            .map(|(k, v)| k.len() + v.len() + 5)
            .sum();
        // Expiry (5), format indicator (2), content type (3 + "application/json").
        data + users + 5 + 2 + 19 + 4
    }

    fn is_empty(&self) -> bool {
        self.correlation_data.is_none()
            && self.message_expiry.is_none()
            && !self.json
            && self.user_properties.is_empty()
    }

    fn to_v5(&self) -> PublishProperties {
        PublishProperties {
            payload_format_indicator: self.json.then_some(1),
            message_expiry_interval: self.message_expiry,
            correlation_data: self.correlation_data.clone().map(Bytes::from),
            user_properties: self.user_properties.clone(),
            content_type: self.json.then(|| "application/json".to_string()),
            ..Default::default()
        }
    }
}

/// The client handle of either version. Every call is non-blocking: `Err` means
/// rumqttc's request queue is full (or the event loop is gone).
#[derive(Clone)]
pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl Client {
    /// The handle and the event loop behind it, with a request queue of `cap`.
    pub fn new(options: Options, cap: usize) -> (Client, Poller) {
        match options {
            Options::V4(o) => {
                let (c, el) = rumqttc::AsyncClient::new(*o, cap);
                (Client::V4(c), Poller::V4(Box::new(el)))
            }
            Options::V5(o) => {
                let (c, el) = rumqttc::v5::AsyncClient::new(*o, cap);
                (Client::V5(c), Poller::V5(Box::new(el)))
            }
        }
    }

    /// A QoS 1 publish.
    pub fn try_publish(
        &self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
        props: &Props,
    ) -> Result<(), String> {
        let qos = QoS::AtLeastOnce;
        match self {
            Client::V4(c) => c
                .try_publish(topic, qos, retain, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) if props.is_empty() => c
                .try_publish(topic, v5_qos(qos), retain, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_publish_with_properties(topic, v5_qos(qos), retain, payload, props.to_v5())
                .map_err(|e| e.to_string()),
        }
    }

    /// A QoS 1 subscription.
    pub fn try_subscribe(&self, filter: String) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_subscribe(filter, QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe(filter, v5_qos(QoS::AtLeastOnce))
                .map_err(|e| e.to_string()),
        }
    }

    /// Acknowledges a received publish (PUBACK, or PUBREC for QoS 2).
    pub fn try_ack(&self, token: AckToken) -> Result<(), String> {
        match self {
            Client::V4(c) => {
                let qos = if token.exactly_once {
                    QoS::ExactlyOnce
                } else {
                    QoS::AtLeastOnce
                };
                let mut p = rumqttc::Publish::new("", qos, Vec::new());
                p.pkid = token.pkid;
                c.try_ack(&p).map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                let qos = if token.exactly_once {
                    rumqttc::v5::mqttbytes::QoS::ExactlyOnce
                } else {
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce
                };
                let mut p = rumqttc::v5::mqttbytes::v5::Publish::new("", qos, Vec::new(), None);
                p.pkid = token.pkid;
                c.try_ack(&p).map_err(|e| e.to_string())
            }
        }
    }

    pub fn try_disconnect(&self) -> Result<(), String> {
        match self {
            Client::V4(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        }
    }
}

fn v5_qos(q: QoS) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// Where the requester wants its answer (MQTT 5 Response Topic and Correlation Data);
/// the store keeps it with answers given later.
pub use crate::store::outbox::ReplyTo;

/// A message from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InPublish {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
    /// MQTT 5 only.
    pub reply_to: Option<ReplyTo>,
    /// What acknowledges it (QoS 1 and 2). Acknowledgements are the session's to send
    /// (manual acks): a request the gateway has not taken is not acknowledged, so
    /// the broker keeps it for the next connection instead of counting it delivered.
    pub ack: Option<AckToken>,
}

/// The packet id and QoS of a received publish, enough to acknowledge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    pkid: u16,
    exactly_once: bool,
}

impl AckToken {
    fn new(pkid: u16, qos: u8) -> Option<AckToken> {
        (qos > 0).then_some(AckToken {
            pkid,
            exactly_once: qos == 2,
        })
    }
}

/// What the session reacts to, from either event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    /// Connected; on MQTT 5 with the largest packet the broker takes, if it says.
    ConnAck {
        max_packet: Option<u32>,
    },
    PubAck(u16),
    /// An MQTT 5 PUBACK with a failure reason (not authorized, quota exceeded ...):
    /// the broker did not take the message.
    PubRefused {
        pkid: u16,
        reason: String,
    },
    Publish(InPublish),
    OutgoingPublish(u16),
    AwaitAck(u16),
    OutgoingDisconnect,
    Other,
}

impl Ev {
    fn from_v4(e: Event) -> Ev {
        match e {
            Event::Incoming(Incoming::ConnAck(_)) => Ev::ConnAck { max_packet: None },
            Event::Incoming(Incoming::PubAck(a)) => Ev::PubAck(a.pkid),
            Event::Incoming(Incoming::Publish(p)) => Ev::Publish(InPublish {
                ack: AckToken::new(p.pkid, p.qos as u8),
                topic: p.topic,
                payload: p.payload,
                retain: p.retain,
                reply_to: None,
            }),
            Event::Outgoing(o) => Ev::outgoing(o),
            _ => Ev::Other,
        }
    }

    fn from_v5(e: rumqttc::v5::Event) -> Ev {
        use rumqttc::v5::Event as E;
        match e {
            E::Incoming(Packet::ConnAck(c)) => Ev::ConnAck {
                max_packet: c.properties.and_then(|p| p.max_packet_size),
            },
            E::Incoming(Packet::PubAck(a)) => {
                use rumqttc::v5::mqttbytes::v5::PubAckReason;
                match a.reason {
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {
                        Ev::PubAck(a.pkid)
                    }
                    reason => Ev::PubRefused {
                        pkid: a.pkid,
                        reason: format!("{reason:?}"),
                    },
                }
            }
            E::Incoming(Packet::Publish(p)) => {
                let reply_to = p.properties.and_then(|props| {
                    props.response_topic.map(|topic| ReplyTo {
                        topic,
                        correlation_data: props.correlation_data.map(|b| b.to_vec()),
                    })
                });
                Ev::Publish(InPublish {
                    ack: AckToken::new(p.pkid, p.qos as u8),
                    // Invalid UTF-8 never matches one of our topics.
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload,
                    retain: p.retain,
                    reply_to,
                })
            }
            E::Outgoing(o) => Ev::outgoing(o),
            _ => Ev::Other,
        }
    }

    fn outgoing(o: Outgoing) -> Ev {
        match o {
            Outgoing::Publish(pkid) => Ev::OutgoingPublish(pkid),
            Outgoing::AwaitAck(pkid) => Ev::AwaitAck(pkid),
            Outgoing::Disconnect => Ev::OutgoingDisconnect,
            _ => Ev::Other,
        }
    }
}

/// The event loop of either version.
pub enum Poller {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

impl Poller {
    /// The next event and every other one already read with it (one wake-up for a
    /// run of PUBACKs), or the error that ended the connection.
    pub async fn poll(&mut self) -> Result<Vec<Ev>, String> {
        match self {
            Poller::V4(el) => {
                let first = el.poll().await.map_err(|e| e.to_string())?;
                let mut events = Vec::with_capacity(1 + el.state.events.len());
                events.push(Ev::from_v4(first));
                events.extend(el.state.events.drain(..).map(Ev::from_v4));
                Ok(events)
            }
            Poller::V5(el) => {
                let first = el.poll().await.map_err(|e| e.to_string())?;
                let mut events = Vec::with_capacity(1 + el.state.events.len());
                events.push(Ev::from_v5(first));
                events.extend(el.state.events.drain(..).map(Ev::from_v5));
                Ok(events)
            }
        }
    }

    /// The TLS identity for the next connect (a client certificate rotation).
    pub fn set_transport(&mut self, t: Transport) {
        match self {
            Poller::V4(el) => {
                el.mqtt_options.set_transport(t);
            }
            Poller::V5(el) => {
                el.options.set_transport(t);
            }
        }
    }

    /// Forgets whatever rumqttc kept (in flight, queued): the outbox replays it.
    pub fn forget(&mut self) {
        match self {
            Poller::V4(el) => {
                el.clean();
                el.pending.clear();
            }
            Poller::V5(el) => {
                el.clean();
                el.pending.clear();
            }
        }
    }
}

/// Seconds for an MQTT 5 interval property (saturating).
pub fn seconds(d: Duration) -> u32 {
    d.as_secs().min(u32::MAX as u64) as u32
}
