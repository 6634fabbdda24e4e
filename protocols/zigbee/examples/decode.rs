//! `cargo run -p fieldgate-zigbee --example decode -- "FE 03 44 80 00 01 07 C1"`: prints the
//! JSON report for captured MT bytes (what `fieldgate decode zigbee HEX` is expected to print).

fn main() {
    let text = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    match fieldgate_zigbee::decode::decode_hex(&text) {
        Ok(report) => println!("{}", report.to_json_pretty()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}
