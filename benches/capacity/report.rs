//! The benchmark's results: a JSON document and an SVG plot (throughput and
//! latency against offered load, outbox depth over time), side by side.

use std::path::Path;

use plotters::prelude::*;

use crate::Step;

#[derive(Debug, serde::Serialize)]
pub struct Result {
    pub radios: Vec<String>,
    pub devices: usize,
    pub synchronous: String,
    pub broker: String,
    pub bare_before_msgs_per_s: f64,
    pub bare_after_msgs_per_s: f64,
    /// From starting the core (store open) to the uplink connected.
    pub connected_ms: f64,
    pub join_seconds: f64,
    pub idle_rss_kib: u64,
    pub peak_rss_kib: u64,
    pub steps: Vec<Step>,
    /// (seconds since the load started, messages queued), every 100 ms.
    pub outbox_depth: Vec<(f64, u64)>,
}

pub fn write(dir: &Path, r: &Result) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("capacity.json"), json)?;
    plot(&dir.join("capacity.svg"), r).map_err(|e| std::io::Error::other(e.to_string()))
}

pub fn print(r: &Result) {
    println!(
        "capacity: {} device(s) on {}, synchronous = {}, broker {}",
        r.devices,
        r.radios.join("+"),
        r.synchronous,
        r.broker
    );
    println!(
        "  bare rumqttc QoS 1 loop: {:.0} msg/s before, {:.0} after",
        r.bare_before_msgs_per_s, r.bare_after_msgs_per_s
    );
    println!(
        "  uplink connected {:.0} ms after start; {} devices joined in {:.1} s; RSS idle {:.1} MiB, peak {:.1} MiB (whole process: gateway, broker, load)",
        r.connected_ms,
        r.devices,
        r.join_seconds,
        r.idle_rss_kib as f64 / 1024.0,
        r.peak_rss_kib as f64 / 1024.0
    );
    println!("  offered/s  events   events/s  msg/s     ÷bare  p50 ms  p99 ms  µs CPU/ev  % core  ev/commit  max depth");
    for s in &r.steps {
        println!(
            "  {:>9}  {:>7}  {:>8.0}  {:>8.0}  {:>5.2}  {:>6.1}  {:>6.1}  {:>9.1}  {:>6.1}  {:>9.0}  {:>9}",
            if s.offered > 0.0 {
                format!("{:.0}", s.offered)
            } else {
                "max".into()
            },
            s.events,
            s.events_per_s,
            s.messages_per_s,
            s.ratio_to_bare,
            s.latency_p50_ms,
            s.latency_p99_ms,
            s.gateway_cpu_us_per_event,
            s.gateway_core_percent,
            s.events_per_commit,
            s.max_outbox_depth
        );
    }
}

type PlotResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn plot(path: &Path, r: &Result) -> PlotResult {
    let root = SVGBackend::new(path, (1200, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 3));
    // The unpaced step is drawn at the load it sustained.
    let x = |s: &Step| {
        if s.offered > 0.0 {
            s.offered
        } else {
            s.events_per_s
        }
    };
    let xmax = r.steps.iter().map(x).fold(1.0, f64::max) * 1.1;
    let ymax = r
        .steps
        .iter()
        .map(|s| s.events_per_s)
        .chain([r.bare_before_msgs_per_s, r.bare_after_msgs_per_s])
        .fold(1.0, f64::max)
        * 1.1;
    let mut tput = ChartBuilder::on(&panels[0])
        .caption("throughput vs offered load", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..xmax, 0.0..ymax)?;
    tput.configure_mesh()
        .x_desc("offered events/s")
        .y_desc("sustained events/s")
        .draw()?;
    let bare = (r.bare_before_msgs_per_s + r.bare_after_msgs_per_s) / 2.0;
    tput.draw_series(LineSeries::new([(0.0, bare), (xmax, bare)], &RED))?
        .label("bare rumqttc loop (msg/s)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], RED));
    let pts: Vec<(f64, f64)> = r.steps.iter().map(|s| (x(s), s.events_per_s)).collect();
    tput.draw_series(LineSeries::new(pts.clone(), &BLUE))?
        .label(format!("fieldgate, synchronous = {}", r.synchronous))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], BLUE));
    tput.draw_series(pts.iter().map(|p| Circle::new(*p, 3, BLUE.filled())))?;
    tput.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;

    let lmax = r
        .steps
        .iter()
        .map(|s| s.latency_p99_ms)
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.1;
    let mut lat = ChartBuilder::on(&panels[1])
        .caption("radio -> subscriber latency", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..xmax, 0.0..lmax)?;
    lat.configure_mesh()
        .x_desc("offered events/s")
        .y_desc("ms")
        .draw()?;
    for (name, color, f) in [
        (
            "p50",
            GREEN,
            (|s: &Step| s.latency_p50_ms) as fn(&Step) -> f64,
        ),
        ("p99", MAGENTA, |s: &Step| s.latency_p99_ms),
    ] {
        let pts: Vec<(f64, f64)> = r
            .steps
            .iter()
            .filter(|s| f(s).is_finite())
            .map(|s| (x(s), f(s)))
            .collect();
        lat.draw_series(LineSeries::new(pts.clone(), &color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], color));
        lat.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    lat.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;

    let tmax = r.outbox_depth.last().map(|d| d.0).unwrap_or(1.0).max(1.0);
    let dmax = r.outbox_depth.iter().map(|d| d.1).max().unwrap_or(1).max(1) as f64 * 1.1;
    let mut depth = ChartBuilder::on(&panels[2])
        .caption("outbox depth over the run", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..tmax, 0.0..dmax)?;
    depth
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("messages queued")
        .draw()?;
    depth.draw_series(LineSeries::new(
        r.outbox_depth.iter().map(|d| (d.0, d.1 as f64)),
        &BLACK,
    ))?;
    root.present()?;
    Ok(())
}
