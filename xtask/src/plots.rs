//! `cargo xtask bench --plots DIR` (after a run) and `cargo xtask bench --from FILE --plots
//! DIR` (from a kept run): PNG charts of the JSON figures that `--json` records, for
//! docs/benchmarks.md. A chart whose figures are missing from the file is skipped with a note,
//! and a series missing from a chart (e.g. fail2ban's time to ban) is named in its caption.
//!
//! Text is drawn by plotters' `ab_glyph` backend from DejaVu Sans (Debian's
//! `fonts-dejavu-core`, which `cargo xtask setup` installs): no fontconfig, and the same font
//! on every machine, so regenerated charts only change where the numbers do.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use pbxguard_lab::bench_json;
use plotters::{
    coord::{
        ranged1d::{AsRangedCoord, ValueFormatter},
        types::RangedCoordf64,
    },
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};
use serde_json::Value;

/// The TTF the charts' text is drawn with.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// Size of every chart, in pixels.
const SIZE: (u32, u32) = (1000, 600);

const BLUE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const RED: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const ORANGE: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const GREEN: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const PURPLE: RGBColor = RGBColor(0x94, 0x67, 0xbd);
const GREY: RGBColor = RGBColor(0x7f, 0x7f, 0x7f);

/// Draws every chart the figures in `json` allow into `dir` (created if missing) and returns
/// the files written.
pub fn render(json: &Path, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let text = std::fs::read(json).with_context(|| format!("reading {}", json.display()))?;
    let root: Value =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", json.display()))?;
    register_font()?;
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let charts: [(&str, &str, ChartFn); 5] = [
        ("xdp_ns_per_packet", "xdp_ns_per_packet.png", xdp_cost),
        ("time_to_ban_ms", "time_to_ban.png", time_to_ban),
        ("matcher", "matcher.png", matcher),
        ("drop_rate_pps", "drop_rate.png", drop_rate),
        ("follow_cpu_s", "follow_cpu.png", follow_cpu),
    ];
    for (key, file, draw) in charts {
        if root.get(key).is_none() {
            eprintln!(
                "plots: no `{key}` figures in {}; {file} skipped",
                json.display()
            );
            continue;
        }
        let path = dir.join(file);
        draw(&root, &path).with_context(|| format!("drawing {}", path.display()))?;
        written.push(path);
    }
    if written.is_empty() {
        bail!("{} holds no figures to plot", json.display());
    }
    Ok(written)
}

type ChartFn = fn(&Value, &Path) -> anyhow::Result<()>;

/// plotters' `ab_glyph` backend only knows fonts registered by name; the charts ask for
/// "sans-serif". The font bytes must live for the program's lifetime, hence the leak (once).
fn register_font() -> anyhow::Result<()> {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if DONE.get().is_some() {
        return Ok(());
    }
    let bytes = std::fs::read(FONT).with_context(|| {
        format!("reading {FONT} (apt-get install fonts-dejavu-core, or `cargo xtask setup`)")
    })?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes.leak())
        .map_err(|_| anyhow::anyhow!("{FONT} is not a usable TrueType font"))?;
    let _ = DONE.set(());
    Ok(())
}

fn font(size: u32) -> TextStyle<'static> {
    ("sans-serif", size).into_font().into()
}

/// 1234567 as "1.23 M", 65887 as "65.9 k": chart labels stay short.
fn human(value: f64) -> String {
    let (scaled, unit) = match value.abs() {
        v if v >= 1e6 => (value / 1e6, " M"),
        v if v >= 1e3 => (value / 1e3, " k"),
        _ => (value, ""),
    };
    let digits = match scaled.abs() {
        v if v >= 100.0 => 0,
        v if v >= 10.0 => 1,
        _ => 2,
    };
    let text = format!("{scaled:.digits$}");
    let text = match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.'),
        false => &text,
    };
    format!("{text}{unit}")
}

/// Ban counts on the log axis: 1, 10, 100, 1k, 10k, 100k, 1M.
fn count_label(value: f64) -> String {
    match value {
        v if v >= 1e6 => format!("{:.0}M", v / 1e6),
        v if v >= 1e3 => format!("{:.0}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// The `(x, value)` points of an object keyed by numbers (`{"1": 57, "10000": 60}`), sorted.
fn points(root: &Value, key: &str) -> Vec<(f64, f64)> {
    let Some(Value::Object(map)) = key.split('.').try_fold(root, |node, p| node.get(p)) else {
        return Vec::new();
    };
    let mut points: Vec<(f64, f64)> = map
        .iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_f64()?)))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

/// (a) ns per packet in the XDP program against the number of bans loaded (log x), hot
/// (one frame repeated) as solid lines, cold (distinct banned sources) dashed.
fn xdp_cost(root: &Value, path: &Path) -> anyhow::Result<()> {
    let series = [
        ("banned v4", "xdp_ns_per_packet.banned_v4", BLUE, false),
        ("banned v6", "xdp_ns_per_packet.banned_v6", ORANGE, false),
        ("no match", "xdp_ns_per_packet.no_match", GREEN, false),
        (
            "SIP, no match",
            "xdp_ns_per_packet.sip_no_match",
            PURPLE,
            false,
        ),
        (
            "banned v4, cold",
            "xdp_ns_per_packet_cold.banned_v4",
            BLUE,
            true,
        ),
        (
            "banned v6, cold",
            "xdp_ns_per_packet_cold.banned_v6",
            ORANGE,
            true,
        ),
    ]
    .map(|(name, key, color, dashed)| (name, points(root, key), color, dashed));
    let all = series.iter().flat_map(|s| s.1.iter());
    let (max_x, max_y) = all.fold((10.0f64, 1.0f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
    let area = BitMapBackend::new(path, SIZE).into_drawing_area();
    area.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&area)
        .caption("XDP program cost per packet (BPF_PROG_TEST_RUN)", font(26))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(70)
        .build_cartesian_2d((0.7f64..max_x * 1.5).log_scale(), 0f64..max_y * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("bans loaded (v4 and v6 each)")
        .y_desc("ns per packet")
        .label_style(font(16))
        .axis_desc_style(font(18))
        .x_label_formatter(&|v| count_label(*v))
        .y_label_formatter(&|v| human(*v))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (name, points, color, dashed) in series {
        if points.is_empty() {
            continue;
        }
        let style = color.stroke_width(3);
        if dashed {
            chart
                .draw_series(DashedLineSeries::new(points.clone(), 10, 7, style))?
                .label(name)
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (9, 0)], style)
                        + PathElement::new(vec![(15, 0), (24, 0)], style)
                });
        } else {
            chart
                .draw_series(LineSeries::new(points.clone(), style))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    let mut notes = Vec::new();
    for (name, key) in [
        ("allowlisted", "xdp_ns_per_packet.allowlisted.1"),
        ("geo-blocked", "xdp_ns_per_packet.geo_blocked.1"),
    ] {
        if let Some(v) = bench_json::get(root, key) {
            notes.push(format!("{name}: {v:.0} ns"));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(font(16))
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .draw()?;
    if !notes.is_empty() {
        area.draw(&Text::new(
            format!("at 1 ban: {}", notes.join(", ")),
            (SIZE.0 as i32 - 20, SIZE.1 as i32 - 8),
            font(14).pos(Pos::new(HPos::Right, VPos::Bottom)),
        ))?;
    }
    area.present()?;
    Ok(())
}

/// A bar chart: `values[group][series]`, one colour per series, each bar labelled.
struct Bars {
    title: String,
    y_desc: &'static str,
    groups: Vec<String>,
    series: Vec<(String, RGBColor)>,
    values: Vec<Vec<Option<f64>>>,
    unit: &'static str,
    note: Option<String>,
}

impl Bars {
    fn max(&self) -> f64 {
        self.values
            .iter()
            .flatten()
            .flatten()
            .fold(0.0, |a, &b| a.max(b))
    }

    fn min(&self) -> f64 {
        self.values
            .iter()
            .flatten()
            .flatten()
            .fold(f64::INFINITY, |a, &b| a.min(b))
    }

    /// Draws the bars on a linear y axis from zero.
    fn linear(&self, path: &Path) -> anyhow::Result<()> {
        self.draw(path, 0f64..self.max().max(1e-9) * 1.18, 0.0)
    }

    /// Draws the bars on a log y axis (for figures orders of magnitude apart).
    fn log(&self, path: &Path) -> anyhow::Result<()> {
        // Just under a power of ten, so that the axis labels it.
        let lo = 10f64.powf(self.min().max(1e-6).log10().floor()) * 0.99;
        let hi = 10f64.powf((self.max().max(lo) * 3.0).log10().ceil());
        self.draw(path, (lo..hi).log_scale(), lo)
    }

    fn draw<Y>(&self, path: &Path, y: Y, floor: f64) -> anyhow::Result<()>
    where
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let area = BitMapBackend::new(path, SIZE).into_drawing_area();
        area.fill(&WHITE)?;
        let groups = self.groups.len();
        let mut chart = ChartBuilder::on(&area)
            .caption(&self.title, font(26))
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d::<RangedCoordf64, Y>((-0.5f64..groups as f64 - 0.5).into(), y)?;
        let label = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                self.groups.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups.max(2))
            .x_label_formatter(&label)
            .y_label_formatter(&|v| human(*v))
            .y_desc(self.y_desc)
            .label_style(font(16))
            .axis_desc_style(font(18))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let width = 0.8 / self.series.len() as f64;
        for (s, (name, color)) in self.series.iter().enumerate() {
            let color = *color;
            let bars: Vec<(f64, f64)> = self
                .values
                .iter()
                .enumerate()
                .filter_map(|(g, row)| {
                    let x0 = g as f64 - 0.4 + s as f64 * width;
                    row[s].map(|v| (x0, v))
                })
                .collect();
            chart
                .draw_series(bars.iter().map(|&(x0, v)| {
                    Rectangle::new(
                        [(x0 + width * 0.06, floor), (x0 + width * 0.94, v)],
                        color.filled(),
                    )
                }))?
                .label(name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 7), (x + 18, y + 7)], color.filled())
                });
            chart.draw_series(bars.iter().map(|&(x0, v)| {
                Text::new(
                    format!("{}{}", human(v), self.unit),
                    (x0 + width / 2.0, v),
                    font(15).pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(font(16))
            .background_style(WHITE.mix(0.85))
            .border_style(GREY)
            .draw()?;
        if let Some(note) = &self.note {
            area.draw(&Text::new(
                note.clone(),
                (SIZE.0 as i32 - 20, SIZE.1 as i32 - 8),
                font(14).pos(Pos::new(HPos::Right, VPos::Bottom)),
            ))?;
        }
        area.present()?;
        Ok(())
    }
}

/// The measurements under `time_to_ban_ms`, in a stable order with readable names.
fn time_to_ban_series(root: &Value) -> Vec<(String, String, RGBColor)> {
    let known = [
        ("pbxguard_xdp_map", "pbxguard (time_to_ban)", BLUE),
        ("pbxguard", "pbxguard (beside fail2ban)", GREEN),
        ("fail2ban", "fail2ban-server (nft set)", RED),
    ];
    let Some(Value::Object(map)) = root.get("time_to_ban_ms") else {
        return Vec::new();
    };
    let mut out: Vec<(String, String, RGBColor)> = known
        .iter()
        .filter(|(key, ..)| map.contains_key(*key))
        .map(|&(key, name, color)| (key.to_string(), name.to_string(), color))
        .collect();
    let extra = [ORANGE, PURPLE, GREY];
    for (i, key) in map
        .keys()
        .filter(|k| known.iter().all(|(known, ..)| known != k))
        .enumerate()
    {
        out.push((key.clone(), key.clone(), extra[i % extra.len()]));
    }
    out
}

/// (b) time to ban, p50 and p99, pbxguard against fail2ban (log y: they are orders of
/// magnitude apart).
fn time_to_ban(root: &Value, path: &Path) -> anyhow::Result<()> {
    let series = time_to_ban_series(root);
    let stats = ["p50", "p99"];
    let values = stats
        .iter()
        .map(|stat| {
            series
                .iter()
                .map(|(key, ..)| bench_json::get(root, &format!("time_to_ban_ms.{key}.{stat}")))
                .collect()
        })
        .collect();
    let note = (!series.iter().any(|(key, ..)| key == "fail2ban"))
        .then(|| "fail2ban: no figures in this run (time_to_ban_ms.fail2ban.*)".to_string());
    Bars {
        title: "Time to ban: failure line appended -> ban enforced".into(),
        y_desc: "milliseconds (log scale)",
        groups: stats.iter().map(|s| s.to_string()).collect(),
        series: series
            .into_iter()
            .map(|(_, name, color)| (name, color))
            .collect(),
        values,
        unit: " ms",
        note,
    }
    .log(path)
}

/// (c) matcher throughput, pbxguard test-log against fail2ban-regex on the same log.
fn matcher(root: &Value, path: &Path) -> anyhow::Result<()> {
    let ours = bench_json::get(root, "matcher.pbxguard_lines_per_s");
    let theirs = bench_json::get(root, "matcher.fail2ban_regex_lines_per_s");
    let lines = bench_json::get(root, "matcher.lines").unwrap_or(1e6);
    let title = match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => format!(
            "Matcher: {} Asterisk lines, pbxguard {:.0}x fail2ban-regex",
            human(lines),
            a / b
        ),
        _ => format!("Matcher: {} Asterisk lines", human(lines)),
    };
    let note = theirs
        .is_none()
        .then(|| "fail2ban-regex: not measured in this run".to_string());
    Bars {
        title,
        y_desc: "lines per second (one core)",
        groups: vec!["same generated Asterisk log, one core each".into()],
        series: vec![
            ("pbxguard test-log".into(), BLUE),
            ("fail2ban-regex".into(), RED),
        ],
        values: vec![vec![ours, theirs]],
        unit: "",
        note,
    }
    .linear(path)
}

/// Dropped packets/s of the XDP and nftables backends under the trafgen flood, with 1 and
/// 100,000 bans (drawn when the `drop_rate` example ran).
fn drop_rate(root: &Value, path: &Path) -> anyhow::Result<()> {
    let bans = ["1", "100000"];
    let backends = [("xdp", "XDP", BLUE), ("nft", "nftables", ORANGE)];
    Bars {
        title: "Drop rate: UDP flood from a banned source (veth, trafgen)".into(),
        y_desc: "dropped packets/s",
        groups: vec!["1 ban".into(), "100,000 bans".into()],
        series: backends
            .iter()
            .map(|&(_, name, color)| (name.to_string(), color))
            .collect(),
        values: bans
            .iter()
            .map(|n| {
                backends
                    .iter()
                    .map(|(b, ..)| bench_json::get(root, &format!("drop_rate_pps.{b}.{n}")))
                    .collect()
            })
            .collect(),
        unit: "",
        note: None,
    }
    .linear(path)
}

/// CPU seconds each daemon spends following a busy log (the `fail2ban_daemon` example).
fn follow_cpu(root: &Value, path: &Path) -> anyhow::Result<()> {
    let ours = bench_json::get(root, "follow_cpu_s.pbxguard");
    let theirs = bench_json::get(root, "follow_cpu_s.fail2ban");
    Bars {
        title: "CPU spent following a busy Asterisk log".into(),
        y_desc: "CPU seconds",
        groups: vec!["same lines, same rate, each daemon alone".into()],
        series: vec![("pbxguard".into(), BLUE), ("fail2ban-server".into(), RED)],
        values: vec![vec![ours, theirs]],
        unit: " s",
        note: theirs
            .is_none()
            .then(|| "fail2ban: not measured in this run".to_string()),
    }
    .linear(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_short() {
        assert_eq!(human(3_754_549.0), "3.75 M");
        assert_eq!(human(65_887.0), "65.9 k");
        assert_eq!(human(0.38), "0.38");
        assert_eq!(human(57.0), "57");
        assert_eq!(human(4_000_000.0), "4 M");
        assert_eq!(human(3_500_000.0), "3.5 M");
        assert_eq!(human(0.1), "0.1");
        assert_eq!(count_label(100_000.0), "100k");
        assert_eq!(count_label(1.0), "1");
    }

    #[test]
    fn numbered_objects_become_sorted_points() {
        let root = serde_json::json!({"a": {"b": {"10000": 60, "1": 57.5, "x": 1}}});
        assert_eq!(points(&root, "a.b"), vec![(1.0, 57.5), (10000.0, 60.0)]);
        assert!(points(&root, "a.c").is_empty());
    }
}
