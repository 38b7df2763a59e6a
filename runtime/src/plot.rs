//! Training curves as one standalone SVG document, with no dependency: `svg` draws panels side by side (for
//! a training run, loss per step and accuracy per epoch), each with axes, about five ticks per axis at 1-2-5
//! steps, gridlines, one polyline per series in a fixed palette, a legend, axis labels and a title;
//! `write_svg` writes the document atomically.
//!
//! Limits: non-finite points (a NaN or infinite loss) are skipped, so a line joins its neighbours; a series
//! with no finite point is only listed in the legend. The y axis starts where the data does (not at 0), and
//! both axes are linear (no log scale); every finite point is written (no thinning: about 16 bytes a point).
//! Text is escaped for XML; the document uses no fonts beyond the generic `sans-serif`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// One curve: named points `(x, y)`, drawn in the given order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend's name for it.
    pub name: String,
    /// The points; those with a non-finite coordinate are skipped.
    pub points: Vec<(f64, f64)>,
}

/// One chart: its series share the axes.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// Above the chart.
    pub title: String,
    /// Under the x axis (e.g. `step`, `epoch`).
    pub x_label: String,
    /// Beside the y axis (e.g. `loss`).
    pub y_label: String,
    /// The curves, coloured by their position in this list (the same position has the same colour in
    /// every panel).
    pub series: Vec<Series>,
}

/// Why an SVG file was not written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write `{}`: {source}", .path.display())]
pub struct PlotError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

impl Series {
    /// A series of `points`.
    pub fn new(name: impl Into<String>, points: impl IntoIterator<Item = (f64, f64)>) -> Series {
        Series { name: name.into(), points: points.into_iter().collect() }
    }
}

/// The series colours, in order (Tableau 10); a panel with more series reuses them.
pub const PALETTE: [&str; 10] =
    ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

/// One SVG document: `title` above the `panels`, laid out left to right.
pub fn svg(title: &str, panels: &[Panel]) -> String {
    let legend_rows = panels.iter().map(|p| p.series.len()).max().unwrap_or(0);
    let width = PANEL_WIDTH * panels.len().max(1) as f64;
    let height = TITLE_HEIGHT + PLOT_TOP + PLOT_HEIGHT + LEGEND_TOP + LEGEND_ROW * legend_rows as f64 + 8.0;
    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" "#,
            r#"viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
        ),
        width = width,
        height = height,
    );
    let _ = writeln!(out, r#"<rect width="{width}" height="{height}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="22" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        let _ = writeln!(out, r#"<g transform="translate({},{TITLE_HEIGHT})">"#, i as f64 * PANEL_WIDTH);
        draw_panel(&mut out, panel);
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    out
}

/// Writes `svg` to `path` atomically: into a temporary file in the same directory, synced, then renamed over
/// `path`, so a reader sees the old file or the whole new one.
pub fn write_svg(path: &Path, svg: &str) -> Result<(), PlotError> {
    let fail = |source| PlotError { path: path.to_path_buf(), source };
    let Some(name) = path.file_name() else {
        return Err(fail(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path has no file name")));
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temp = dir.join(format!(".{}.{}-{n}.tmp", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
        file.write_all(svg.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(fail(e));
    }
    // Best effort: make the rename itself durable (directories cannot be opened for syncing everywhere).
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

const PANEL_WIDTH: f64 = 480.0;
const TITLE_HEIGHT: f64 = 34.0;
/// The plot area inside a panel.
const PLOT_LEFT: f64 = 70.0;
const PLOT_TOP: f64 = 28.0;
const PLOT_WIDTH: f64 = PANEL_WIDTH - PLOT_LEFT - 24.0;
const PLOT_HEIGHT: f64 = 240.0;
/// The legend starts this far under the plot area (below the tick labels and the x label).
const LEGEND_TOP: f64 = 56.0;
const LEGEND_ROW: f64 = 18.0;
/// Series with at most this many finite points also get a dot on each point (a single point, or one per
/// epoch, would be hard to see as a line alone).
const MARKED_POINTS: usize = 30;

fn draw_panel(out: &mut String, panel: &Panel) {
    let finite: Vec<Vec<(f64, f64)>> = panel
        .series
        .iter()
        .map(|s| s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect())
        .collect();
    let all = finite.iter().flatten();
    let x_axis = Axis::new(all.clone().map(|p| p.0));
    let y_axis = Axis::new(all.map(|p| p.1));
    let px = |x: f64| PLOT_LEFT + x_axis.fraction(x) * PLOT_WIDTH;
    let py = |y: f64| PLOT_TOP + (1.0 - y_axis.fraction(y)) * PLOT_HEIGHT;
    let bottom = PLOT_TOP + PLOT_HEIGHT;
    let right = PLOT_LEFT + PLOT_WIDTH;

    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="16" text-anchor="middle" font-size="14">{}</text>"#,
        PLOT_LEFT + PLOT_WIDTH / 2.0,
        escape(&panel.title)
    );
    for &t in &x_axis.ticks {
        let x = px(t);
        let _ = writeln!(out, r##"<line x1="{x:.2}" y1="{PLOT_TOP}" x2="{x:.2}" y2="{bottom}" stroke="#e0e0e0"/>"##);
        let _ = writeln!(
            out,
            r#"<text x="{x:.2}" y="{}" text-anchor="middle" class="x-tick">{}</text>"#,
            bottom + 16.0,
            x_axis.label(t)
        );
    }
    for &t in &y_axis.ticks {
        let y = py(t);
        let _ = writeln!(out, r##"<line x1="{PLOT_LEFT}" y1="{y:.2}" x2="{right}" y2="{y:.2}" stroke="#e0e0e0"/>"##);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.2}" text-anchor="end" class="y-tick">{}</text>"#,
            PLOT_LEFT - 6.0,
            y + 4.0,
            y_axis.label(t)
        );
    }
    let _ = writeln!(
        out,
        concat!(
            r#"<rect x="{PLOT_LEFT}" y="{PLOT_TOP}" width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" "#,
            r#"fill="none" stroke="black"/>"#
        ),
        PLOT_LEFT = PLOT_LEFT,
        PLOT_TOP = PLOT_TOP,
        PLOT_WIDTH = PLOT_WIDTH,
        PLOT_HEIGHT = PLOT_HEIGHT,
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
        PLOT_LEFT + PLOT_WIDTH / 2.0,
        bottom + 36.0,
        escape(&panel.x_label)
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        PLOT_TOP + PLOT_HEIGHT / 2.0,
        escape(&panel.y_label)
    );

    for (i, (series, points)) in panel.series.iter().zip(&finite).enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        if !points.is_empty() {
            let coords: Vec<String> = points.iter().map(|&(x, y)| format!("{:.2},{:.2}", px(x), py(y))).collect();
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.5" stroke-linejoin="round"/>"#,
                coords.join(" ")
            );
        }
        if points.len() <= MARKED_POINTS {
            for &(x, y) in points {
                let _ = writeln!(out, r#"<circle cx="{:.2}" cy="{:.2}" r="2.5" fill="{colour}"/>"#, px(x), py(y));
            }
        }
        let y = bottom + LEGEND_TOP + LEGEND_ROW * i as f64;
        let note = match (series.points.is_empty(), points.is_empty()) {
            (true, _) => " (no points)",
            (false, true) => " (no finite values)",
            (false, false) => "",
        };
        let _ = writeln!(
            out,
            r#"<line x1="{PLOT_LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="{colour}" stroke-width="3"/>"#,
            PLOT_LEFT + 24.0
        );
        let _ =
            writeln!(out, r#"<text x="{}" y="{}">{}{note}</text>"#, PLOT_LEFT + 30.0, y + 4.0, escape(&series.name));
    }
}

/// A linear axis: the range it shows and its tick values.
#[derive(Debug, PartialEq)]
struct Axis {
    low: f64,
    high: f64,
    /// The distance between ticks (0 when the ticks are just the ends of a range too wide for a step).
    step: f64,
    ticks: Vec<f64>,
}

impl Axis {
    /// An axis showing every value (all finite), extended to ticks at a "nice" step (1, 2 or 5 times a
    /// power of ten) about a quarter of the range, so about five ticks. No values gives 0 to 1; values all
    /// equal to `v` give `v` ± 10% (± 1 when `v` is 0).
    fn new(values: impl Iterator<Item = f64>) -> Axis {
        let (mut low, mut high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
        if low > high {
            (low, high) = (0.0, 1.0);
        } else if low == high {
            let pad = if low == 0.0 { 1.0 } else { low.abs() * 0.1 };
            // Kept within f64's range: a value near ±f64::MAX padded by 10% would overflow.
            (low, high) = ((low - pad).max(-f64::MAX), (high + pad).min(f64::MAX));
        }
        let step = nice_step((high - low) / 4.0);
        let (first, last) = ((low / step).floor(), (high / step).ceil());
        // Overflowing ranges, or ranges so narrow for their magnitude that ticks round together, get their
        // ends as the only ticks.
        if !step.is_finite() || step == 0.0 || !(first.is_finite() && last.is_finite()) || last - first > 20.0 {
            return Axis { low, high, step: 0.0, ticks: vec![low, high] };
        }
        let ticks: Vec<f64> = (0..=(last - first) as usize).map(|k| (first + k as f64) * step).collect();
        // Ticks rounded outwards can leave f64's range (a value near -1.8e308 rounds to -2e308 = -inf).
        let usable = ticks.windows(2).all(|w| w[0] < w[1]) && ticks.iter().all(|t| t.is_finite());
        if !usable {
            return Axis { low, high, step: 0.0, ticks: vec![low, high] };
        }
        Axis { low: ticks[0], high: ticks[ticks.len() - 1], step, ticks }
    }

    /// Where `v` lies between the ends, 0 at `low` and 1 at `high` (halved first, so a range as wide as
    /// `f64` allows does not overflow).
    fn fraction(&self, v: f64) -> f64 {
        let span = self.high / 2.0 - self.low / 2.0;
        if span > 0.0 { (v / 2.0 - self.low / 2.0) / span } else { 0.5 }
    }

    /// A tick's text: as many decimals as the step needs, or scientific notation for very large or small
    /// values.
    fn label(&self, v: f64) -> String {
        let magnitude = self.low.abs().max(self.high.abs());
        if self.step == 0.0 || magnitude >= 1e7 || self.step < 1e-6 {
            return format!("{v:e}");
        }
        let decimals = (-self.step.log10().floor()).max(0.0) as usize;
        let text = format!("{v:.decimals$}");
        // No "-0.0" for a tick at zero.
        if text.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') { text.replace('-', "") } else { text }
    }
}

/// A 1-2-5 number (1, 2 or 5 times a power of ten) near `rough`: its mantissa rounded to 1, 2, 5 or 10.
fn nice_step(rough: f64) -> f64 {
    let power = 10f64.powf(rough.log10().floor());
    let mantissa = rough / power;
    let nice = if mantissa < 1.5 {
        1.0
    } else if mantissa < 3.0 {
        2.0
    } else if mantissa < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// `text` with XML's five special characters as entities.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 forbids (controls other than tab, newline and carriage return; U+FFFE and
            // U+FFFF) are dropped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            '\u{fffe}' | '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that `doc` is well-formed enough to be XML: one root, every tag closed in order, attribute
    /// values quoted, no raw `<` or unknown `&` entity in text or attributes. Returns the element names in
    /// document order.
    fn check_xml(doc: &str) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        let mut elements = Vec::new();
        let mut roots = 0;
        let mut rest = doc.strip_prefix(r#"<?xml version="1.0" encoding="UTF-8"?>"#).expect("an XML declaration");
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open]);
            let close = rest[open..].find('>').expect("every tag ends") + open;
            let tag = &rest[open + 1..close];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "a closing tag matches the open one");
            } else {
                let self_closing = tag.ends_with('/');
                let body = tag.trim_end_matches('/');
                let name = body.split_whitespace().next().expect("a tag name");
                assert!(name.chars().all(|c| c.is_ascii_alphanumeric()), "tag name {name:?}");
                check_attributes(&body[name.len()..]);
                if stack.is_empty() {
                    roots += 1;
                }
                elements.push(name.to_string());
                if !self_closing {
                    stack.push(name.to_string());
                }
            }
            rest = &rest[close + 1..];
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed {stack:?}");
        assert_eq!(roots, 1, "one root element");
        elements
    }

    fn check_text(text: &str) {
        assert!(!text.contains('>'), "a raw > in {text:?}");
        let mut pieces = text.split('&');
        pieces.next();
        for piece in pieces {
            let entity = ["amp;", "lt;", "gt;", "quot;", "apos;"].iter().any(|e| piece.starts_with(e));
            assert!(entity, "an unknown entity at {piece:?}");
        }
    }

    /// ` name="value" name="value"`.
    fn check_attributes(mut attributes: &str) {
        loop {
            attributes = attributes.trim_start();
            if attributes.is_empty() {
                return;
            }
            let eq = attributes.find('=').expect("name=value");
            assert!(attributes[..eq].chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'));
            let value = attributes[eq + 1..].strip_prefix('"').expect("a quoted value");
            let end = value.find('"').expect("a closing quote");
            check_text(&value[..end]);
            assert!(!value[..end].contains('<'));
            attributes = &value[end + 1..];
        }
    }

    /// The `points` attribute of each polyline, as pairs.
    fn polylines(doc: &str) -> Vec<Vec<(f64, f64)>> {
        doc.split("<polyline points=\"")
            .skip(1)
            .map(|rest| {
                let list = &rest[..rest.find('"').expect("closed")];
                list.split(' ')
                    .map(|p| {
                        let (x, y) = p.split_once(',').expect("x,y");
                        (x.parse().expect("a number"), y.parse().expect("a number"))
                    })
                    .collect()
            })
            .collect()
    }

    /// The texts of the elements with `class="{class}"`, as numbers.
    fn ticks(doc: &str, class: &str) -> Vec<f64> {
        let marker = format!(r#"class="{class}">"#);
        doc.split(&marker)
            .skip(1)
            .map(|rest| rest[..rest.find('<').expect("closed")].parse().expect("a number"))
            .collect()
    }

    /// A small training run: train loss per step (with a NaN), validation loss per epoch, accuracies.
    fn run() -> Vec<Panel> {
        let train_loss = (0..40).map(|s| (s as f64, if s == 17 { f64::NAN } else { 2.3 / (1.0 + s as f64 / 8.0) }));
        let val_loss = [(10.0, 1.1), (20.0, 0.8), (30.0, 0.7), (40.0, 0.65)];
        let loss = Panel {
            title: "Loss".into(),
            x_label: "step".into(),
            y_label: "cross-entropy".into(),
            series: vec![Series::new("train", train_loss), Series::new("validation", val_loss)],
        };
        let accuracy = Panel {
            title: "Accuracy".into(),
            x_label: "epoch".into(),
            y_label: "accuracy".into(),
            series: vec![
                Series::new("train", [(1.0, 0.61), (2.0, 0.78), (3.0, 0.85), (4.0, 0.88)]),
                Series::new("validation", [(1.0, 0.58), (2.0, 0.74), (3.0, 0.8), (4.0, 0.81)]),
            ],
        };
        vec![loss, accuracy]
    }

    #[test]
    fn a_training_run_is_two_well_formed_panels() {
        let doc = svg("MNIST MLP", &run());
        let elements = check_xml(&doc);
        assert_eq!(elements[0], "svg");
        assert_eq!(elements.iter().filter(|e| *e == "g").count(), 2, "a group per panel");
        // One polyline per series; the NaN step is left out of the 40.
        let lines = polylines(&doc);
        assert_eq!(lines.iter().map(Vec::len).collect::<Vec<_>>(), [39, 4, 4, 4]);
        assert!(!doc.contains("NaN") && !doc.contains("inf"), "no non-finite number is written");
        // Every point lies inside its panel's plot area (coordinates are relative to the panel's group).
        for line in &lines {
            for &(x, y) in line {
                assert!((PLOT_LEFT - 0.01..=PLOT_LEFT + PLOT_WIDTH + 0.01).contains(&x), "{x}");
                assert!((PLOT_TOP - 0.01..=PLOT_TOP + PLOT_HEIGHT + 0.01).contains(&y), "{y}");
            }
        }
        // The losses fall, so the train line ends lower on the page (a larger y) than it starts.
        assert!(lines[0][38].1 > lines[0][0].1);
        for label in ["MNIST MLP", "Loss", "Accuracy", "step", "epoch", "cross-entropy", ">validation<"] {
            assert!(doc.contains(label), "{label}");
        }
        // The same series position has the same colour in both panels.
        assert_eq!(doc.matches(&format!(r#"stroke="{}" stroke-width="1.5""#, PALETTE[1])).count(), 2);
        // Short series are marked point by point, the long one is not.
        assert_eq!(doc.matches("<circle").count(), 12);
    }

    #[test]
    fn ticks_are_nice_numbers_covering_the_data() {
        let doc = svg("t", &run());
        // The loss panel: steps 0..40 and losses 0.386..2.3; the accuracy panel: epochs 1..4, 0.58..0.88.
        let x = ticks(&doc, "x-tick");
        let y = ticks(&doc, "y-tick");
        assert_eq!(x, [0.0, 10.0, 20.0, 30.0, 40.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(y, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 0.5, 0.6, 0.7, 0.8, 0.9]);

        let cases: [(&[f64], &[f64]); 6] = [
            (&[0.0, 1.0], &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
            (&[-3.0, 17.0], &[-5.0, 0.0, 5.0, 10.0, 15.0, 20.0]),
            (&[0.5], &[0.44, 0.46, 0.48, 0.5, 0.52, 0.54, 0.56]),
            (&[0.0], &[-1.0, -0.5, 0.0, 0.5, 1.0]),
            (&[], &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
            (&[1234.0, 98765.0], &[0.0, 20000.0, 40000.0, 60000.0, 80000.0, 100000.0]),
        ];
        for (values, expected) in cases {
            let axis = Axis::new(values.iter().copied());
            let shown: Vec<f64> = axis.ticks.iter().map(|&t| axis.label(t).parse().expect("a number")).collect();
            assert_eq!(shown, expected, "{values:?}");
            assert!((3..=8).contains(&axis.ticks.len()), "about five ticks for {values:?}");
            let power = 10f64.powf(axis.step.log10().floor());
            let mantissa = (axis.step / power * 1e6).round() / 1e6;
            assert!([1.0, 2.0, 5.0].contains(&mantissa), "a 1-2-5 step: {}", axis.step);
            assert!(values.iter().all(|&v| axis.low <= v && v <= axis.high), "the data fits");
        }
        // A range wider than f64 can subtract gets its ends as ticks, not NaNs.
        let axis = Axis::new([-f64::MAX, f64::MAX].into_iter());
        assert_eq!(axis.ticks, [-f64::MAX, f64::MAX]);
        assert_eq!((axis.fraction(-f64::MAX), axis.fraction(0.0), axis.fraction(f64::MAX)), (0.0, 0.5, 1.0));
        // One value near -f64::MAX: ticks rounded outwards would overflow, so the padded ends are the ticks.
        let axis = Axis::new([-1.7572477567877766e308].into_iter());
        assert!(
            axis.ticks.iter().all(|t| t.is_finite()) && axis.low < -1.75e308 && axis.high > -1.76e308,
            "{:?}",
            axis.ticks
        );
    }

    #[test]
    fn text_is_escaped() {
        let panel = Panel {
            title: "<loss> & \"friends\"".into(),
            x_label: "it's".into(),
            y_label: "a<b".into(),
            series: vec![Series::new("x & y", [(0.0, 1.0)])],
        };
        let doc = svg("R&D <tdsl>\u{1}\u{ffff}", &[panel]);
        check_xml(&doc);
        for text in
            ["R&amp;D &lt;tdsl&gt;<", "&lt;loss&gt; &amp; &quot;friends&quot;", "it&apos;s", "a&lt;b", "x &amp; y"]
        {
            assert!(doc.contains(text), "{text}");
        }
        assert!(!doc.contains(['\u{1}', '\u{ffff}']), "characters XML forbids are dropped");
    }

    #[test]
    fn degenerate_series_still_give_a_document() {
        let panel = Panel {
            title: "edge cases".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![
                Series::new("all NaN", [(0.0, f64::NAN), (1.0, f64::NAN)]),
                Series::new("empty", []),
                Series::new("one point", [(3.0, 0.25)]),
                Series::new("infinite x", [(f64::INFINITY, 1.0)]),
            ],
        };
        let doc = svg("edge", &[panel]);
        check_xml(&doc);
        assert_eq!(polylines(&doc), [vec![(PLOT_LEFT + PLOT_WIDTH / 2.0, PLOT_TOP + PLOT_HEIGHT / 2.0)]]);
        assert_eq!(doc.matches("<circle").count(), 1);
        assert!(doc.contains(">all NaN (no finite values)<"));
        assert!(doc.contains(">empty (no points)<"));
        assert!(doc.contains(">infinite x (no finite values)<"));
        assert!(doc.contains(">one point<"));
        assert!(!doc.contains("=\"NaN") && !doc.contains("inf\""), "no non-finite number is written");

        // A constant series gets a range around its value.
        let flat = Panel { series: vec![Series::new("flat", [(0.0, 2.0), (1.0, 2.0), (2.0, 2.0)])], ..run().remove(0) };
        let doc = svg("flat", &[flat]);
        check_xml(&doc);
        let y = polylines(&doc)[0].iter().map(|p| p.1).collect::<Vec<_>>();
        assert_eq!(y, [PLOT_TOP + PLOT_HEIGHT / 2.0; 3], "drawn across the middle");

        // No panels at all is still a document.
        check_xml(&svg("nothing", &[]));
    }

    #[test]
    fn a_run_is_written_atomically() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("curves.svg");
        std::fs::write(&path, "old").expect("written");
        let doc = svg("run", &run());
        write_svg(&path, &doc).expect("written");
        assert_eq!(std::fs::read_to_string(&path).expect("read back"), doc);
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).expect("listed").map(|e| e.expect("an entry").file_name()).collect();
        assert_eq!(names, ["curves.svg"], "no temporary file is left");

        let missing = dir.path().join("no-such-dir").join("curves.svg");
        let err = write_svg(&missing, &doc).expect_err("no directory");
        assert!(err.to_string().starts_with(&format!("cannot write `{}`: ", missing.display())), "{err}");
    }

    proptest::proptest! {
        /// Any values (NaN, infinities, extremes, subnormals) and names give a well-formed document whose
        /// coordinates are all finite and inside the plot area, with one polyline per series that has a
        /// finite point.
        #[test]
        fn any_series_give_a_well_formed_document(
            series in proptest::collection::vec(
                (
                    ".{0,8}",
                    proptest::collection::vec(
                        (proptest::prelude::any::<f64>(), proptest::prelude::any::<f64>()),
                        0..6,
                    ),
                ),
                0..4,
            ),
        ) {
            let finite = series
                .iter()
                .filter(|(_, p)| p.iter().any(|(x, y)| x.is_finite() && y.is_finite()))
                .count();
            let series = series.into_iter().map(|(name, points)| Series { name, points }).collect();
            let panel = Panel { title: "p".into(), x_label: "x".into(), y_label: "y".into(), series };
            let doc = svg("any", &[panel]);
            check_xml(&doc);
            let lines = polylines(&doc);
            proptest::prop_assert_eq!(lines.len(), finite);
            for (x, y) in lines.into_iter().flatten() {
                proptest::prop_assert!((PLOT_LEFT - 0.01..=PLOT_LEFT + PLOT_WIDTH + 0.01).contains(&x), "{}", x);
                proptest::prop_assert!((PLOT_TOP - 0.01..=PLOT_TOP + PLOT_HEIGHT + 0.01).contains(&y), "{}", y);
            }
        }
    }
}
