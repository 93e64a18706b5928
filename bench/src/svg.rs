//! A small SVG writer for the report's plots: panels stacked vertically, each with line series, axes,
//! ticks and a legend. One x axis kind is the "nines" scale of a percentile curve (0, 90, 99, 99.9, ...).
//! This module draws what it is given; it knows nothing of latencies or brokers.

use std::fmt::Write;

/// Width of the image in pixels.
const WIDTH: f64 = 960.0;
/// Height of one panel in pixels.
const PANEL_HEIGHT: f64 = 340.0;
/// Margins of the plotting area inside a panel: left, right, top, bottom.
const MARGIN: (f64, f64, f64, f64) = (80.0, 30.0, 40.0, 50.0);
/// Line colours, cycled.
const COLOURS: [&str; 8] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// How an x axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// Values as they are.
    Linear,
    /// Percentiles (0 to 100) spread by their nines: x = -log10(1 - p/100), so 90, 99 and 99.9 are evenly
    /// spaced.
    Nines,
}

/// One line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its legend.
    pub name: String,
    /// Its points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// One panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// The title above it.
    pub title: String,
    /// The x axis label.
    pub x_label: String,
    /// The y axis label.
    pub y_label: String,
    /// How x values are mapped.
    pub x_axis: XAxis,
    /// The lines.
    pub series: Vec<Series>,
}

/// Renders the panels, top to bottom, as one SVG document.
pub fn render(title: &str, panels: &[Panel]) -> String {
    let height = 40.0 + PANEL_HEIGHT * panels.len().max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for (index, panel) in panels.iter().enumerate() {
        render_panel(&mut out, panel, 40.0 + PANEL_HEIGHT * index as f64);
    }
    out.push_str("</svg>\n");
    out
}

/// Draws one panel whose top edge is at `top`.
fn render_panel(out: &mut String, panel: &Panel, top: f64) {
    let (left, right, margin_top, bottom) = MARGIN;
    let x0 = left;
    let x1 = WIDTH - right;
    let y0 = top + PANEL_HEIGHT - bottom;
    let y1 = top + margin_top;
    let map_x = |x: f64| match panel.x_axis {
        XAxis::Linear => x,
        XAxis::Nines => nines(x),
    };
    let points = panel.series.iter().flat_map(|series| series.points.iter());
    let (mut x_min, mut x_max, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            x_min = x_min.min(map_x(x));
            x_max = x_max.max(map_x(x));
            y_max = y_max.max(y);
        }
    }
    if !x_min.is_finite() {
        (x_min, x_max) = (0.0, 1.0);
    }
    if panel.x_axis == XAxis::Nines {
        x_min = 0.0;
        x_max = x_max.ceil().max(1.0);
    }
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    let y_ticks = nice_ticks(0.0, if y_max > 0.0 { y_max * 1.05 } else { 1.0 });
    let y_top = y_ticks.last().copied().unwrap_or(1.0).max(f64::MIN_POSITIVE);
    let sx = |x: f64| x0 + (map_x(x) - x_min) / (x_max - x_min) * (x1 - x0);
    let sy = |y: f64| y0 - y / y_top * (y0 - y1);

    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="14">{}</text>"#,
        (x0 + x1) / 2.0,
        top + 24.0,
        escape(&panel.title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{y1}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
        x1 - x0,
        y0 - y1
    );
    for tick in &y_ticks {
        let y = sy(*tick);
        let _ = writeln!(out, r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#e5e5e5"/>"##);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            x0 - 6.0,
            y + 4.0,
            format_number(*tick)
        );
    }
    let x_ticks: Vec<(f64, String)> = match panel.x_axis {
        XAxis::Linear => nice_ticks(x_min, x_max).into_iter().map(|x| (x, format_number(x))).collect(),
        XAxis::Nines => (0..=x_max as u32)
            .map(|nines_count| {
                let percentile = 100.0 * (1.0 - 10f64.powi(-(nines_count as i32)));
                (percentile, format_percentile(percentile))
            })
            .collect(),
    };
    for (value, label) in &x_ticks {
        let x = sx(*value);
        if !(x0 - 0.5..=x1 + 0.5).contains(&x) {
            continue;
        }
        let _ = writeln!(out, r##"<line x1="{x:.1}" y1="{y1}" x2="{x:.1}" y2="{y0}" stroke="#e5e5e5"/>"##);
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            y0 + 16.0,
            escape(label)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        y0 + 36.0,
        escape(&panel.x_label)
    );
    let _ = writeln!(
        out,
        r#"<text x="20" y="{0:.1}" text-anchor="middle" transform="rotate(-90 20 {0:.1})">{1}</text>"#,
        (y0 + y1) / 2.0,
        escape(&panel.y_label)
    );
    // The legend sits in the top right corner, as wide as its longest name (about 7 px a character).
    let longest = panel.series.iter().map(|series| series.name.chars().count()).max().unwrap_or(0);
    let legend_x = x1 - 40.0 - 7.0 * longest as f64;
    for (index, series) in panel.series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let path: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| (sx(x), sy(y)))
            .collect();
        if let [(x, y)] = path[..] {
            let _ = writeln!(out, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{colour}"/>"#);
        } else if !path.is_empty() {
            let points: Vec<String> = path.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
                points.join(" ")
            );
        }
        let legend_y = y1 + 16.0 + 16.0 * index as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{}" y1="{legend_y:.1}" x2="{}" y2="{legend_y:.1}" stroke="{colour}" stroke-width="3"/>"#,
            legend_x,
            legend_x + 20.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}">{}</text>"#,
            legend_x + 26.0,
            legend_y + 4.0,
            escape(&series.name)
        );
    }
}

/// The "nines" of percentile `p` (0 to 100): 0 for 0, 1 for 90, 2 for 99, ...
fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-9);
    -rest.log10()
}

/// About five round tick values covering `low..=high`, starting at `low`.
fn nice_ticks(low: f64, high: f64) -> Vec<f64> {
    let span = (high - low).max(f64::MIN_POSITIVE);
    let raw_step = span / 5.0;
    let magnitude = 10f64.powf(raw_step.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|factor| factor * magnitude)
        .find(|step| *step >= raw_step)
        .unwrap_or(10.0 * magnitude);
    let first = (low / step).floor() * step;
    let mut ticks = Vec::new();
    let mut tick = first;
    while ticks.len() < 50 {
        ticks.push(tick);
        if tick >= high {
            break;
        }
        tick += step;
    }
    ticks
}

/// A tick label: integers without decimals, thousands as `k`, millions as `M`.
fn format_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1e6 {
        format!("{}M", trim(value / 1e6))
    } else if magnitude >= 1e4 {
        format!("{}k", trim(value / 1e3))
    } else {
        trim(value)
    }
}

/// A percentile label: `0`, `90`, `99`, `99.9`, ... up to eight nines.
fn format_percentile(percentile: f64) -> String {
    let text = format!("{percentile:.8}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// At most four decimals, trailing zeros removed.
fn trim(value: f64) -> String {
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".to_string() } else { text.to_string() }
}

/// Escapes text for an SVG text node.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let ticks = nice_ticks(0.0, 1234.0);
        assert_eq!(ticks.first(), Some(&0.0));
        assert!(*ticks.last().unwrap() >= 1234.0);
        assert!(ticks.len() <= 8, "{ticks:?}");
        assert_eq!(ticks[1], 250.0);
        assert_eq!(format_number(250_000.0), "250k");
        assert_eq!(format_number(2_500_000.0), "2.5M");
        assert_eq!(format_number(12.5), "12.5");
    }

    #[test]
    fn nines_spread_percentiles_evenly() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(0.0), 0.0);
    }

    #[test]
    fn a_document_has_every_series_and_escaped_text() {
        let panels = vec![
            Panel {
                title: "latency <over> time".to_string(),
                x_label: "s".to_string(),
                y_label: "us".to_string(),
                x_axis: XAxis::Linear,
                series: vec![
                    Series { name: "p50".to_string(), points: vec![(0.0, 1.0), (1.0, 2.0)] },
                    Series { name: "max".to_string(), points: vec![(0.5, 9.0)] },
                ],
            },
            Panel {
                title: "curve".to_string(),
                x_label: "percentile".to_string(),
                y_label: "us".to_string(),
                x_axis: XAxis::Nines,
                series: vec![Series {
                    name: "all".to_string(),
                    points: vec![(0.0, 1.0), (99.0, 5.0), (100.0, 9.0)],
                }],
            },
        ];
        let svg = render("run & test", &panels);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("run &amp; test") && svg.contains("latency &lt;over&gt; time"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(svg.contains(">99.9<") || svg.contains(">99<"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn empty_panels_still_render() {
        let panel = Panel {
            title: "nothing".to_string(),
            x_label: "x".to_string(),
            y_label: "y".to_string(),
            x_axis: XAxis::Linear,
            series: vec![],
        };
        let svg = render("empty", &[panel]);
        assert!(!svg.contains("NaN"));
    }
}
