//! Emulator benchmark: SendData transactions per second through the controller emulator (a
//! host frame in; ACK, response, callback with TX report and the node's answer out, each
//! ACKed by the host), against the codec work alone on the same bytes in the same run (the
//! host building the request and parsing the four frames it gets back). Method in
//! docs/benchmarks.md, "## Z-Wave controller emulator".
//!
//! ```text
//! cargo run --release -p fieldgate-zwave --features emulator --example emulator_bench
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use fieldgate_zwave::emulator::{Emulator, EmulatorConfig};
use fieldgate_zwave::frame::{DataFrame, SerialParser, ACK};
use fieldgate_zwave::function as func;

const TRANSACTIONS: usize = 20_000;
const ROUNDS: usize = 5;

fn request(cb: u8) -> DataFrame {
    // Node 3: Multilevel Sensor Get (temperature), TX options 0x25.
    DataFrame::request(
        func::SEND_DATA,
        vec![3, 4, 0x31, 0x04, 0x01, 0x00, 0x25, cb],
    )
}

/// Full transactions through the emulator; returns (elapsed, frames the host received).
fn through_emulator() -> (Duration, usize, Vec<u8>) {
    let mut emu = Emulator::new(EmulatorConfig {
        report_interval: Duration::from_secs(1 << 30),
        wake_interval: Duration::from_secs(1 << 30),
        ..EmulatorConfig::default()
    });
    let mut parser = SerialParser::new();
    let mut now = Duration::ZERO;
    let mut frames = 0;
    let mut transcript = Vec::new();
    let start = Instant::now();
    for i in 0..TRANSACTIONS {
        let cb = (i % 255 + 1) as u8;
        let bytes = request(cb).to_bytes().expect("frame");
        emu.receive(now, &bytes);
        // Step through the transaction's deadlines, ACKing every frame.
        let end = now + Duration::from_millis(200);
        loop {
            let out = emu.take_output();
            if i == 0 {
                transcript.extend_from_slice(&out);
            }
            for f in parser.feed(&out) {
                if matches!(f, fieldgate_zwave::Frame::Data(_)) {
                    frames += 1;
                    emu.receive(now, &[ACK]);
                }
            }
            match emu.next_deadline() {
                Some(t) if t <= end => {
                    now = now.max(t);
                    emu.tick(now);
                }
                _ => break,
            }
        }
        now = end;
        emu.tick(now);
    }
    (start.elapsed(), frames, transcript)
}

/// The codec work alone: build each request and parse the controller's bytes of one
/// transaction (captured from the emulator) as a host would.
fn codec_only(transcript: &[u8]) -> (Duration, usize) {
    let mut parser = SerialParser::new();
    let mut frames = 0;
    let start = Instant::now();
    for i in 0..TRANSACTIONS {
        let cb = (i % 255 + 1) as u8;
        black_box(request(cb).to_bytes().expect("frame"));
        frames += parser
            .feed(black_box(transcript))
            .iter()
            .filter(|f| matches!(f, fieldgate_zwave::Frame::Data(_)))
            .count();
    }
    (start.elapsed(), frames)
}

fn main() {
    let mut emu_rates = Vec::new();
    let mut codec_rates = Vec::new();
    for round in 0..ROUNDS {
        let (t, frames, transcript) = through_emulator();
        assert_eq!(frames, TRANSACTIONS * 3, "response, callback, node answer");
        let (c, cframes) = codec_only(&transcript);
        assert_eq!(cframes, frames);
        let per_s = |d: Duration| TRANSACTIONS as f64 / d.as_secs_f64();
        println!(
            "round {round}: emulator {:.0} transactions/s, codec alone {:.0} transactions/s",
            per_s(t),
            per_s(c)
        );
        emu_rates.push(per_s(t));
        codec_rates.push(per_s(c));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (e, c) = (median(&mut emu_rates), median(&mut codec_rates));
    println!(
        "median: emulator {e:.0} SendData transactions/s ({:.1} µs each), codec alone {c:.0}/s; codec/emulator = {:.1}x",
        1e6 / e,
        c / e
    );
}
