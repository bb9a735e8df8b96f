//! SVG charts for `docs/benchmarks.md`, written directly (no font or drawing library needed):
//! horizontal grouped bars on a log scale for throughput, and lines on a log scale for the
//! provisioning batch times.

use std::fmt::Write;

const COLORS: [&str; 4] = ["#1f77b4", "#2ca02c", "#d62728", "#9467bd"];
const FONT: &str = "font-family=\"sans-serif\" font-size=\"12\"";

/// The opening of a chart: the `<svg>` element, a white background and the centred title.
fn svg_start(width: f64, height: f64, title: &str) -> String {
    let mut svg = String::new();
    let _ = writeln!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" {FONT}>"#);
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Powers of ten covering `[min, max]`.
fn decades(min: f64, max: f64) -> (f64, f64) {
    let low = min.max(1e-9).log10().floor();
    let high = max.max(min * 10.0).log10().ceil();
    (low, high.max(low + 1.0))
}

fn tick_label(exponent: f64) -> String {
    let value = 10f64.powf(exponent);
    if value >= 1.0 { crate::report::number(value) } else { format!("{value}") }
}

/// One group per category, one bar per series (value `None`: no bar).
pub fn grouped_bars(title: &str, unit: &str, categories: &[String], series: &[(String, Vec<Option<f64>>)]) -> String {
    let label_width = 230.0;
    let plot_width = 560.0;
    let bar = 9.0;
    let group = bar * series.len() as f64 + 8.0;
    let top = 50.0;
    let height = top + group * categories.len() as f64 + 60.0;
    let width = label_width + plot_width + 40.0;
    let values: Vec<f64> = series.iter().flat_map(|(_, v)| v.iter().flatten().copied()).filter(|v| *v > 0.0).collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    let (low, high) = if values.is_empty() { (0.0, 1.0) } else { decades(min, max) };
    let x = |v: f64| label_width + plot_width * (v.max(1e-9).log10() - low) / (high - low);

    let mut svg = svg_start(width, height, title);
    let bottom = top + group * categories.len() as f64;
    let mut exponent = low;
    while exponent <= high {
        let gx = x(10f64.powf(exponent));
        let _ = writeln!(svg, r##"<line x1="{gx}" y1="{top}" x2="{gx}" y2="{bottom}" stroke="#ddd"/>"##);
        let _ = writeln!(
            svg,
            r#"<text x="{gx}" y="{}" text-anchor="middle">{}</text>"#,
            bottom + 16.0,
            tick_label(exponent)
        );
        exponent += 1.0;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{} (log scale)</text>"#,
        label_width + plot_width / 2.0,
        bottom + 34.0,
        escape(unit)
    );
    for (c, category) in categories.iter().enumerate() {
        let gy = top + group * c as f64;
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            label_width - 8.0,
            gy + group / 2.0 + 2.0,
            escape(category)
        );
        for (s, (_, values)) in series.iter().enumerate() {
            if let Some(Some(v)) = values.get(c) {
                let by = gy + 4.0 + bar * s as f64;
                let _ = writeln!(
                    svg,
                    r#"<rect x="{label_width}" y="{by}" width="{:.1}" height="{}" fill="{}"/>"#,
                    (x(*v) - label_width).max(1.0),
                    bar - 1.0,
                    COLORS[s % COLORS.len()]
                );
            }
        }
    }
    legend(&mut svg, series.iter().map(|(n, _)| n.as_str()), label_width, height - 14.0);
    svg.push_str("</svg>\n");
    svg
}

fn legend<'a>(svg: &mut String, names: impl Iterator<Item = &'a str>, x0: f64, y: f64) {
    for (i, name) in names.enumerate() {
        let lx = x0 + 170.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{}"/>"#,
            y - 10.0,
            COLORS[i % COLORS.len()]
        );
        let _ = writeln!(svg, r#"<text x="{}" y="{y}">{}</text>"#, lx + 16.0, escape(name));
    }
}

/// Lines of (x, y) points, y on a log scale.
pub fn lines(title: &str, x_label: &str, y_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let (left, top, plot_w, plot_h) = (80.0, 50.0, 620.0, 320.0);
    let width = left + plot_w + 30.0;
    let height = top + plot_h + 80.0;
    let points: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).filter(|p| p.1 > 0.0).collect();
    let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let min_y = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let max_y = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let (low, high) = if points.is_empty() { (0.0, 1.0) } else { decades(min_y, max_y) };
    let px = |v: f64| left + plot_w * v / max_x;
    let py = |v: f64| top + plot_h - plot_h * (v.max(1e-9).log10() - low) / (high - low);

    let mut svg = svg_start(width, height, title);
    let mut exponent = low;
    while exponent <= high {
        let gy = py(10f64.powf(exponent));
        let _ = writeln!(svg, r##"<line x1="{left}" y1="{gy}" x2="{}" y2="{gy}" stroke="#ddd"/>"##, left + plot_w);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            left - 6.0,
            gy + 4.0,
            tick_label(exponent)
        );
        exponent += 1.0;
    }
    for i in 0..=5 {
        let v = max_x * i as f64 / 5.0;
        let gx = px(v);
        let _ = writeln!(
            svg,
            r#"<text x="{gx}" y="{}" text-anchor="middle">{}</text>"#,
            top + plot_h + 16.0,
            crate::report::number(v)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + plot_w / 2.0,
        top + plot_h + 34.0,
        escape(x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{} (log scale)</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        escape(y_label)
    );
    let _ =
        writeln!(svg, r##"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>"##);
    for (s, (_, pts)) in series.iter().enumerate() {
        let path: Vec<String> =
            pts.iter().filter(|p| p.1 > 0.0).map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
        if !path.is_empty() {
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
                path.join(" "),
                COLORS[s % COLORS.len()]
            );
        }
    }
    legend(&mut svg, series.iter().map(|(n, _)| n.as_str()), left, height - 14.0);
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_svg() {
        let bars = grouped_bars(
            "t",
            "msg/s",
            &["a".into(), "b<".into()],
            &[("x".into(), vec![Some(10.0), None]), ("y".into(), vec![Some(5000.0), Some(2.0)])],
        );
        assert!(bars.starts_with("<svg") && bars.ends_with("</svg>\n") && bars.contains("b&lt;"));
        let lines = lines("t", "x", "y", &[("s".into(), vec![(1.0, 2.0), (2.0, 30.0)])]);
        assert!(lines.contains("<polyline"));
    }
}
