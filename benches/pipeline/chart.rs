//! The batch-size sweep drawn as an SVG: throughput and p99 latency against records per batch.

use plotters::prelude::*;

pub struct Point {
    pub batch_records: usize,
    pub msgs_per_s: f64,
    pub p99_ms: f64,
}

pub fn draw(points: &[Point], path: &std::path::Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(500);
    let xs = 8.0f64..12_500.0f64;
    panel(
        &left,
        "throughput (messages/s)",
        xs.clone(),
        points
            .iter()
            .map(|p| (p.batch_records as f64, p.msgs_per_s)),
        &BLUE,
    )?;
    panel(
        &right,
        "p99 SentTimestamp -> 202 (ms)",
        xs,
        points.iter().map(|p| (p.batch_records as f64, p.p99_ms)),
        &RED,
    )?;
    root.present().map_err(|e| e.to_string())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    xs: std::ops::Range<f64>,
    series: impl Iterator<Item = (f64, f64)> + Clone,
    color: &RGBColor,
) -> Result<(), String> {
    let top = series.clone().map(|(_, y)| y).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(xs.log_scale(), 0.0..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("records per batch (--batch-max-records)")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(series.clone(), color))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(series.map(|point| Circle::new(point, 4, color.filled())))
        .map_err(|e| e.to_string())?;
    Ok(())
}
