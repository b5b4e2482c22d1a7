//! The allocation curves as a hand-written SVG: allocated vs arrived device compute,
//! one line per policy (median over seeds, with the quartile band) and the ideal diagonal.

use std::fmt::Write;

use crate::sim::PolicySummary;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 520.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 10] = [
    "#7f7f7f", "#1f77b4", "#9467bd", "#8c564b", "#ff7f0e", "#2ca02c", "#d62728", "#17becf",
    "#bcbd22", "#e377c2",
];

/// Axis ranges of the plot, in percent.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub x_min: f64,
    pub x_max: f64,
    pub y_min: f64,
    pub y_max: f64,
}

impl Default for Window {
    /// The paper's Fig. 9(a) window.
    fn default() -> Self {
        Window {
            x_min: 70.0,
            x_max: 130.0,
            y_min: 70.0,
            y_max: 100.0,
        }
    }
}

/// Renders the curves of `summaries` (the order of the legend) with `title`.
pub fn allocation_svg(summaries: &[PolicySummary], title: &str, window: Window) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x - window.x_min) / (window.x_max - window.x_min) * plot_w;
    let sy = |y: f64| {
        TOP + plot_h
            - (y.clamp(window.y_min, window.y_max) - window.y_min) / (window.y_max - window.y_min)
                * plot_h
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Grid and ticks.
    let mut x = (window.x_min / 10.0).ceil() * 10.0;
    while x <= window.x_max + 1e-9 {
        let px = sx(x);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#e0e0e0"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            svg,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{x:.0}</text>"#,
            TOP + plot_h + 18.0
        );
        x += 10.0;
    }
    let mut y = (window.y_min / 5.0).ceil() * 5.0;
    while y <= window.y_max + 1e-9 {
        let py = sy(y);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e0e0e0"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{y:.0}</text>"#,
            LEFT - 6.0,
            py + 4.0
        );
        y += 5.0;
    }
    let _ = writeln!(
        svg,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">Arrived device demand (% of cluster capacity)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 18.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">Allocated devices (% of cluster capacity)</text>"#,
        TOP + plot_h / 2.0
    );
    // The ideal: everything that arrived is allocated, up to 100 %.
    let (a, b) = (
        window.x_min.max(window.y_min),
        window.y_max.min(window.x_max),
    );
    let _ = writeln!(
        svg,
        r##"<polyline points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="none" stroke="black" stroke-dasharray="6 4"/>"##,
        sx(a),
        sy(a),
        sx(b),
        sy(b),
        sx(window.x_max),
        sy(b)
    );
    let in_window = |x: u32| (window.x_min..=window.x_max).contains(&f64::from(x));
    for (i, s) in summaries.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<_> = s.curve.iter().filter(|(x, _)| in_window(*x)).collect();
        if pts.is_empty() {
            continue;
        }
        let band: Vec<String> = pts
            .iter()
            .map(|(x, st)| format!("{:.1},{:.1}", sx(f64::from(*x)), sy(st.p75)))
            .chain(
                pts.iter()
                    .rev()
                    .map(|(x, st)| format!("{:.1},{:.1}", sx(f64::from(*x)), sy(st.p25))),
            )
            .collect();
        let _ = writeln!(
            svg,
            r#"<polygon points="{}" fill="{color}" fill-opacity="0.18" stroke="none"/>"#,
            band.join(" ")
        );
        let line: Vec<String> = pts
            .iter()
            .map(|(x, st)| format!("{:.1},{:.1}", sx(f64::from(*x)), sy(st.median)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            line.join(" ")
        );
    }
    // Legend.
    let lx = LEFT + plot_w + 16.0;
    let _ = writeln!(
        svg,
        r#"<text x="{lx}" y="{}" font-weight="bold">median over seeds</text>"#,
        TOP + 8.0
    );
    for (i, s) in summaries.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let ly = TOP + 30.0 + 22.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/>"#,
            lx + 24.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">{} ({:.2}%)</text>"#,
            lx + 30.0,
            ly + 4.0,
            escape(&s.policy),
            s.unallocated_at_100.mean
        );
    }
    let ly = TOP + 30.0 + 22.0 * summaries.len() as f64;
    let _ = writeln!(
        svg,
        r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="black" stroke-dasharray="6 4"/>"#,
        lx + 24.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}">ideal</text>"#,
        lx + 30.0,
        ly + 4.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{lx}" y="{}" font-size="10">(…%) = unallocated at 100%</text>"#,
        ly + 24.0
    );
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Stat;

    #[test]
    fn svg_has_one_line_per_policy_a_legend_and_the_ideal() {
        let stat = |v| Stat {
            mean: v,
            sd: 0.0,
            median: v,
            p25: v - 1.0,
            p75: v + 1.0,
            n: 3,
        };
        let summary = |name: &str| PolicySummary {
            policy: name.into(),
            seeds: vec![42],
            unallocated_at_100: stat(4.5),
            frag_rate_at_80: stat(30.0),
            frag_amount_at_80: stat(6.0),
            allocated_at_130: stat(95.0),
            failed_tasks: stat(10.0),
            tasks: stat(8000.0),
            decision_us_mean: 1.0,
            decision_us_p99: 2.0,
            curve: (60..=130)
                .map(|x| (x, stat(f64::from(x).min(95.0))))
                .collect(),
        };
        let svg = allocation_svg(
            &[summary("fgd"), summary("a<b")],
            "t & t",
            Window::default(),
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches(r#"stroke-width="2""#).count(), 2);
        assert!(svg.contains("fgd (4.50%)") && svg.contains("a&lt;b") && svg.contains("t &amp; t"));
        assert!(svg.contains(">ideal<") && svg.contains("Arrived device demand"));
    }
}
