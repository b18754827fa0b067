//! Load benchmark: the client-count sweep's chart (TPS and p99 against clients), as SVG with plotters.

/// One series of the sweep chart: (name, [(clients, tps, p99 ms)]).
pub type Series = (String, Vec<(u32, f64, f64)>);

/// TPS and p99 latency against client count, two panels, as SVG.
pub fn chart(path: &std::path::Path, series: &[Series]) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(500);
    let max_clients = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .max()
        .unwrap_or(2000) as f64;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    let y_max = |pick: usize| {
        series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| if pick == 1 { p.1 } else { p.2 }))
            .fold(1.0f64, f64::max)
    };
    // clients on a log axis (50 .. 2000); p99 on a log axis too: direct connections' p99 at
    // 2000 clients is seconds where the poolers' is a few hundred ms
    let x_range = || (max_clients / 60.0..max_clients * 1.25).log_scale();
    macro_rules! panel {
        ($area:expr, $title:expr, $pick:expr, $y:expr) => {{
            let mut c = ChartBuilder::on($area)
                .caption($title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(x_range(), $y)
                .map_err(|e| e.to_string())?;
            c.configure_mesh()
                .x_desc("clients")
                .x_labels(8)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| format!("{v:.0}"))
                .light_line_style(WHITE)
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, (name, pts)) in series.iter().enumerate() {
                let color = colors[i % colors.len()];
                let data: Vec<(f64, f64)> = pts
                    .iter()
                    .map(|p| (p.0 as f64, if $pick == 1 { p.1 } else { p.2 }))
                    .collect();
                c.draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
                c.draw_series(data.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| e.to_string())?;
            }
            c.configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerLeft)
                .draw()
                .map_err(|e| e.to_string())?;
        }};
    }
    panel!(&left, "TPS (pgbench -S, simple)", 1, 0f64..y_max(1) * 1.1);
    panel!(
        &right,
        "p99 latency, ms (log scale)",
        2,
        (1f64..y_max(2) * 1.5).log_scale()
    );
    root.present().map_err(|e| e.to_string())
}
