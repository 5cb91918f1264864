//! The chart of `BENCHMARKS.md`: grouped bars of throughput and of round-trip time per
//! path, as a small hand-written SVG (no plotting library).

use std::fmt::Write as _;

use super::report::{Metric, Path, Report};

const WIDTH: f64 = 820.0;
const HEIGHT: f64 = 340.0;
const PANEL_TOP: f64 = 70.0;
const PANEL_BOTTOM: f64 = 290.0;

fn colour(path: Path) -> &'static str {
    match path {
        Path::Loopback => "#8da0cb",
        Path::Veth => "#66c2a5",
        Path::Ztrun => "#fc8d62",
    }
}

/// Text safe inside SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One panel: `groups` of bars (one per path), linear scale from 0.
fn panel(
    svg: &mut String,
    report: &Report,
    x0: f64,
    width: f64,
    title: &str,
    groups: &[(&str, Metric)],
) {
    let max = groups
        .iter()
        .flat_map(|(_, m)| Path::ALL.iter().filter_map(|p| report.value(*m, *p)))
        .fold(0.0_f64, f64::max);
    let scale = if max > 0.0 {
        (PANEL_BOTTOM - PANEL_TOP) / (max * 1.15)
    } else {
        0.0
    };
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="14" font-weight="bold" text-anchor="middle">{}</text>"#,
        x0 + width / 2.0,
        PANEL_TOP - 18.0,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r##"<line x1="{x0:.1}" y1="{PANEL_BOTTOM:.1}" x2="{:.1}" y2="{PANEL_BOTTOM:.1}" stroke="#333"/>"##,
        x0 + width
    );
    let group_width = width / groups.len() as f64;
    let bar = group_width / (Path::ALL.len() as f64 + 1.0);
    for (g, (name, metric)) in groups.iter().enumerate() {
        let gx = x0 + g as f64 * group_width + bar / 2.0;
        for (i, path) in Path::ALL.iter().enumerate() {
            let x = gx + i as f64 * bar;
            match report.value(*metric, *path) {
                Some(v) => {
                    let h = (v * scale).max(1.0);
                    let _ = writeln!(
                        svg,
                        r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}: {} {}</title></rect>"#,
                        PANEL_BOTTOM - h,
                        bar * 0.9,
                        colour(*path),
                        escape(path.label()),
                        metric.format(v),
                        escape(metric.unit())
                    );
                    let _ = writeln!(
                        svg,
                        r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
                        x + bar * 0.45,
                        PANEL_BOTTOM - h - 4.0,
                        metric.format(v)
                    );
                }
                None => {
                    let _ = writeln!(
                        svg,
                        r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#999">n/a</text>"##,
                        x + bar * 0.45,
                        PANEL_BOTTOM - 4.0
                    );
                }
            }
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
            gx + bar * 1.5,
            PANEL_BOTTOM + 18.0,
            escape(name)
        );
    }
}

/// The whole chart.
pub(crate) fn chart(report: &Report, subtitle: &str) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r##"<text x="20" y="{:.1}" font-size="11" fill="#555">{}</text>"##,
        HEIGHT - 10.0,
        escape(subtitle)
    );
    for (i, path) in Path::ALL.iter().enumerate() {
        let x = 20.0 + i as f64 * 130.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="10" width="14" height="14" fill="{}"/><text x="{:.1}" y="22" font-size="12">{}</text>"#,
            colour(*path),
            x + 18.0,
            escape(path.label())
        );
    }
    let half = (WIDTH - 60.0) / 2.0;
    panel(
        &mut svg,
        report,
        20.0,
        half,
        "TCP throughput (Gbit/s, higher is better)",
        &[
            ("iperf3, 1 stream", Metric::Iperf1),
            ("iperf3, 4 streams", Metric::Iperf4),
        ],
    );
    panel(
        &mut svg,
        report,
        40.0 + half,
        half,
        "64-byte round trip (µs, lower is better)",
        &[("p50", Metric::RrP50), ("p99", Metric::RrP99)],
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_a_bar_per_measured_value_and_marks_the_rest() {
        let mut r = Report::new(false, 10_000);
        r.set(Metric::Iperf1, Path::Veth, Ok(17.8));
        r.set(Metric::Iperf1, Path::Ztrun, Ok(1.5));
        r.set(Metric::RrP50, Path::Ztrun, Ok(120.0));
        let svg = chart(&r, "2026-11-22 <test>");
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<rect x=").count(),
            3 + 3,
            "3 legend boxes, 3 bars"
        );
        assert!(svg.contains(">17.8<") && svg.contains(">1.50<") && svg.contains(">120<"));
        // 12 slots, 3 with values.
        assert_eq!(svg.matches(">n/a<").count(), 9);
        assert!(svg.contains("&lt;test&gt;"));
    }
}
