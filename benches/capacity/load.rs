//! The offered load: device events as a radio driver hands them to the hub (the
//! driver contract's output), for any radio, at a set rate; and the subscriber that
//! times a sample of them on the broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fieldgate::config::Protocol;
use fieldgate::model::{DeviceEvent, DeviceEventKind, DeviceId, DeviceInfo, Reading, Value};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio::sync::mpsc;

/// The reading that carries the send time (µs since the run's epoch) on sampled
/// devices.
pub const STAMP: &str = "bench_sent_us";

/// The reading that marks the end of a step.
pub const MARK: &str = "bench_step";

/// A radio of the benchmark: its protocol and the name of its radio instance.
#[derive(Debug, Clone, Copy)]
pub struct Radio {
    pub protocol: Protocol,
    pub name: &'static str,
}

impl Radio {
    pub fn parse(s: &str) -> Result<Radio, String> {
        let (protocol, name) = match s {
            "zigbee" => (Protocol::Zigbee, "zb0"),
            "zwave" => (Protocol::Zwave, "zw0"),
            "ble" => (Protocol::Ble, "ble0"),
            "lora" => (Protocol::Lora, "lora0"),
            other => {
                return Err(format!(
                    "unknown radio {other:?} (zigbee, zwave, ble, lora)"
                ))
            }
        };
        Ok(Radio { protocol, name })
    }

    /// The native address of device `i` in this radio's own notation.
    pub fn address(&self, i: usize) -> String {
        match self.protocol {
            Protocol::Zigbee => format!("0x00124b00{:08x}", i),
            Protocol::Zwave => format!("{}", i + 1),
            Protocol::Ble => {
                let b = (i as u32).to_be_bytes();
                format!("A4:C1:38:{:02X}:{:02X}:{:02X}", b[1], b[2], b[3])
            }
            Protocol::Lora => format!("70b3d57ed0{:06x}", i),
            Protocol::LoraP2p => format!("{:08x}", i),
        }
    }

    pub fn device_id(&self, i: usize) -> DeviceId {
        DeviceId::new(self.protocol, &self.address(i))
    }

    fn event(&self, i: usize, kind: DeviceEventKind) -> DeviceEvent {
        DeviceEvent {
            radio: self.name.into(),
            protocol: self.protocol,
            native_address: self.address(i),
            received_at: SystemTime::now(),
            kind,
            link: None,
        }
    }

    /// The two events of the normal join path: joined, then interviewed.
    pub fn join(&self, i: usize) -> [DeviceEvent; 2] {
        [
            self.event(i, DeviceEventKind::Joined),
            self.event(
                i,
                DeviceEventKind::Interviewed(DeviceInfo {
                    manufacturer: Some("Bench".into()),
                    model: Some("TH-1".into()),
                    firmware: Some("1.0.0".into()),
                    power_source: None,
                    capabilities: vec!["temperature".into()],
                    reachability: None,
                    silence: None,
                }),
            ),
        ]
    }

    /// A temperature reading of device `i`; `stamp` adds the send time.
    pub fn reading(&self, i: usize, n: u64, stamp: Option<u64>) -> DeviceEvent {
        let mut readings = vec![Reading {
            name: "temperature".into(),
            value: Value::Number(20.0 + (n % 100) as f64 / 10.0),
            unit: Some("°C".into()),
        }];
        if let Some(us) = stamp {
            readings.push(Reading {
                name: STAMP.into(),
                value: Value::Number(us as f64),
                unit: None,
            });
        }
        self.event(i, DeviceEventKind::Readings(readings))
    }

    /// The reading that ends step `step`.
    pub fn marker(&self, i: usize, step: u64) -> DeviceEvent {
        self.event(
            i,
            DeviceEventKind::Readings(vec![Reading {
                name: MARK.into(),
                value: Value::Number(step as f64),
                unit: None,
            }]),
        )
    }
}

/// Sends `total` readings spread over `devices` devices and `radios` into the hub's
/// queue at `rate` events/s (0: as fast as the queue takes them), in ticks of 1 ms.
/// Devices `< sampled` carry the send time. Returns when all are queued.
#[allow(clippy::too_many_arguments)]
pub async fn offer(
    tx: &mpsc::Sender<DeviceEvent>,
    radios: &[Radio],
    devices: usize,
    sampled: usize,
    rate: f64,
    total: u64,
    epoch: Instant,
    sent: &std::sync::atomic::AtomicU64,
) {
    let start = Instant::now();
    let mut n: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while n < total {
        let due = if rate > 0.0 {
            tick.tick().await;
            ((start.elapsed().as_secs_f64() * rate) as u64).min(total)
        } else {
            total
        };
        while n < due {
            let i = (n as usize) % devices;
            let radio = &radios[i % radios.len()];
            let stamp = (i < sampled).then(|| epoch.elapsed().as_micros() as u64);
            if tx.send(radio.reading(i, n, stamp)).await.is_err() {
                return;
            }
            n += 1;
            sent.store(n, Ordering::Relaxed);
        }
    }
}

/// Latency samples (ms) of stamped readings as they reach a subscriber.
#[derive(Clone, Default)]
pub struct Samples(pub Arc<Mutex<Vec<f64>>>);

impl Samples {
    pub fn take(&self) -> Vec<f64> {
        std::mem::take(&mut *self.0.lock().expect("samples"))
    }
}

/// Subscribes to the telemetry of the sampled devices (only those, so the broker
/// forwards a small share of the load) and records each stamped reading's age.
pub async fn subscriber(
    host: String,
    port: u16,
    topics: Vec<String>,
    epoch: Instant,
    samples: Samples,
    stop: Arc<AtomicBool>,
) {
    let mut opts = MqttOptions::new(format!("bench-sub-{}", std::process::id()), host, port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(opts, 100);
    for t in &topics {
        let _ = client.subscribe(t.clone(), QoS::AtMostOnce).await;
    }
    while !stop.load(Ordering::Relaxed) {
        let Ok(ev) = tokio::time::timeout(Duration::from_millis(200), el.poll()).await else {
            continue;
        };
        match ev {
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let now = epoch.elapsed().as_micros() as f64;
                if let Some(sent) = stamp_of(&p.payload) {
                    samples
                        .0
                        .lock()
                        .expect("samples")
                        .push((now - sent) / 1000.0);
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The send time carried by a telemetry envelope, if it has one.
fn stamp_of(payload: &[u8]) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    v["data"]["readings"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == STAMP)?["value"]
        .as_f64()
}
