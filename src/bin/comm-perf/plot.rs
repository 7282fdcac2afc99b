//! `--plot FILE`: a chart of the result rows, one panel per test kind.
//!
//! SVG needs no font: plotters only measures text for captions and legends,
//! so both are laid out here at fixed positions and the SVG viewer renders
//! the text. PNG rasterises glyphs with ab_glyph, which needs a TrueType file
//! at run time; that keeps the build free of fontconfig and freetype.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::ValueEnum;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::cli::Test;
use crate::report::Row;

const WIDTH: u32 = 1100;
const PANEL_HEIGHT: u32 = 440;
const HEAD_HEIGHT: u32 = 36;
const LEGEND_WIDTH: u32 = 230;
const FONT_FAMILY: &str = "sans-serif";

/// Distinct on white and for the common colour-vision deficiencies.
const COLORS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

/// The chart file named by `--plot`, its format taken from the extension.
#[derive(Debug, Clone)]
pub struct PlotFile {
    path: PathBuf,
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Svg,
    Png,
}

/// Why a chart could not be written.
#[derive(Debug)]
pub struct PlotError(String);

impl fmt::Display for PlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlotError {}

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for PlotError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        PlotError(format!("drawing the chart failed: {e}"))
    }
}

impl PlotFile {
    /// Parses `--plot FILE`. Checked before the benchmark so that a typo does
    /// not cost the user a whole run.
    pub fn parse(s: &str) -> Result<Self, String> {
        let path = PathBuf::from(s);
        let ext = path.extension().and_then(|e| e.to_str());
        let format = match ext.map(str::to_ascii_lowercase).as_deref() {
            Some("svg") => Format::Svg,
            Some("png") => Format::Png,
            _ => return Err("the chart file must end in .svg or .png (SVG needs no fonts)".into()),
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(format!("directory {} does not exist", dir.display()));
        }
        Ok(PlotFile { path, format })
    }

    /// Where the chart goes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads what the format needs (a font for PNG) before the benchmark
    /// runs, so that a missing font fails in a second, not after the run.
    pub fn prepare(&self) -> Result<(), PlotError> {
        match self.format {
            Format::Svg => Ok(()),
            Format::Png => font(),
        }
    }

    /// Writes the chart of `rows`; the file appears only once complete.
    pub fn write(&self, rows: &[Row]) -> Result<(), PlotError> {
        let panels = panels(rows);
        if panels.is_empty() {
            return Err(PlotError("no result rows to plot".into()));
        }
        let size = (WIDTH, PANEL_HEIGHT * panels.len() as u32);
        match self.format {
            Format::Svg => self.write_svg(size, &panels),
            Format::Png => self.write_png(size, &panels),
        }
    }

    fn write_svg(&self, size: (u32, u32), panels: &[Panel]) -> Result<(), PlotError> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
            draw(&root, panels)?;
            root.present()?;
        }
        std::fs::write(&self.path, svg).map_err(|e| io_error(&self.path, e))
    }

    fn write_png(&self, size: (u32, u32), panels: &[Panel]) -> Result<(), PlotError> {
        self.prepare()?;
        // The bitmap backend saves even a half-drawn image when dropped, and
        // picks the encoder by extension: draw into a .png beside the target
        // and rename it only on success.
        let tmp = self.path.with_file_name(format!(
            ".{}.{}.tmp.png",
            self.path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let result = draw_png(&tmp, size, panels)
            .and_then(|()| std::fs::rename(&tmp, &self.path).map_err(|e| io_error(&self.path, e)));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn draw_png(tmp: &Path, size: (u32, u32), panels: &[Panel]) -> Result<(), PlotError> {
    let root = BitMapBackend::new(tmp, size).into_drawing_area();
    draw(&root, panels)?;
    root.present()?;
    Ok(())
}

fn io_error(path: &Path, e: std::io::Error) -> PlotError {
    PlotError(format!("writing {}: {e}", path.display()))
}

/// One chart: a test kind and its lines.
struct Panel {
    test: Test,
    series: Vec<Series>,
}

/// One line: x is log2 of the message size, y the measured value.
struct Series {
    label: String,
    color: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// What a panel plots of a row: (label suffix, value, dashed line).
type Metric = (&'static str, fn(&Row) -> f64, bool);

fn metrics(test: Test) -> &'static [Metric] {
    match test {
        Test::Lat => &[(" p50", |r| r.p50_ns, false), (" p99", |r| r.p99_ns, true)],
        Test::Bw => &[("", |r| r.bytes_per_s, false)],
        Test::Rate => &[("", |r| r.msg_per_s, false)],
    }
}

fn panels(rows: &[Row]) -> Vec<Panel> {
    // Colours follow (transport, mode) across panels so one series reads the
    // same everywhere.
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in rows {
        let key = series_key(r);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    [Test::Lat, Test::Bw, Test::Rate]
        .into_iter()
        .map(|test| Panel {
            test,
            series: series(rows, test, &keys),
        })
        .filter(|p| !p.series.is_empty())
        .collect()
}

fn series_key(r: &Row) -> (String, String) {
    let mode = r
        .mode
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned());
    (r.transport.clone(), mode)
}

fn series(rows: &[Row], test: Test, keys: &[(String, String)]) -> Vec<Series> {
    let mut out = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mut mine: Vec<&Row> = rows
            .iter()
            .filter(|r| r.test == test && series_key(r) == *key)
            .collect();
        mine.sort_by_key(|r| r.size);
        for &(suffix, value, dashed) in metrics(test) {
            // Zero means "not measured"; it has no place on a log axis either.
            let points: Vec<(f64, f64)> = mine
                .iter()
                .map(|r| ((r.size.max(1) as f64).log2(), value(r)))
                .filter(|&(_, v)| v.is_finite() && v > 0.0)
                .collect();
            if !points.is_empty() {
                out.push(Series {
                    label: format!("{} {}{suffix}", key.0, key.1),
                    color: COLORS[i % COLORS.len()],
                    dashed,
                    points,
                });
            }
        }
    }
    out
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panels: &[Panel],
) -> Result<(), PlotError> {
    root.fill(&WHITE)?;
    for (area, panel) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
        draw_panel(area, panel)?;
    }
    Ok(())
}

fn text(size: u32) -> TextStyle<'static> {
    TextStyle::from((FONT_FAMILY, size)).color(&BLACK)
}

fn title(test: Test) -> &'static str {
    match test {
        Test::Lat => "One-way latency (p50 solid, p99 dashed)",
        Test::Bw => "Bandwidth",
        Test::Rate => "Message rate",
    }
}

fn y_desc(test: Test) -> &'static str {
    match test {
        Test::Lat => "one-way latency",
        Test::Bw => "bytes per second",
        Test::Rate => "messages per second",
    }
}

fn y_label(test: Test, v: f64) -> String {
    match test {
        Test::Lat => duration_label(v),
        Test::Bw => si_label(v, "B/s"),
        Test::Rate => si_label(v, "/s"),
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> Result<(), PlotError> {
    let (width, _) = area.dim_in_pixel();
    let (head, body) = area.split_vertically(HEAD_HEIGHT);
    let centered = text(20).pos(Pos::new(HPos::Center, VPos::Center));
    let middle = (width as i32 / 2, HEAD_HEIGHT as i32 / 2);
    head.draw_text(title(panel.test), &centered, middle)?;
    let (plot_area, legend) = body.split_horizontally(width.saturating_sub(LEGEND_WIDTH));
    draw_chart(&plot_area, panel)?;
    draw_legend(&legend, &panel.series)
}

fn draw_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> Result<(), PlotError> {
    let (x, y) = (x_axis(&panel.series), y_axis(&panel.series));
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(50)
        .y_label_area_size(95)
        .build_cartesian_2d(x, y.clone())?;
    let y_desc = if y.log {
        format!("{} (log scale)", y_desc(panel.test))
    } else {
        y_desc(panel.test).to_owned()
    };
    chart
        .configure_mesh()
        .x_desc("message size (log scale)")
        .y_desc(y_desc)
        .x_label_formatter(&|v| size_label(v.exp2()))
        .y_label_formatter(&|v| y_label(panel.test, y.value(*v)))
        .label_style(text(14))
        .axis_desc_style(text(15))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    for s in &panel.series {
        let points: Vec<(f64, f64)> = s.points.iter().map(|&(px, v)| (px, y.coord(v))).collect();
        let line = s.color.stroke_width(2);
        // Markers keep a series of one size visible: a line needs two points.
        if s.dashed {
            chart.draw_series(DashedLineSeries::new(points.clone(), 9, 6, line))?;
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, line)))?;
        } else {
            chart.draw_series(LineSeries::new(points.clone(), line))?;
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, s.color.filled())))?;
        }
    }
    Ok(())
}

/// plotters' own legend measures its text, which needs a font even for SVG.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Series],
) -> Result<(), PlotError> {
    let label = text(15).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, s) in series.iter().enumerate() {
        let y = 24 + 26 * i as i32;
        let line = s.color.stroke_width(2);
        let segments: &[(i32, i32)] = if s.dashed {
            &[(6, 16), (22, 32), (38, 46)]
        } else {
            &[(6, 46)]
        };
        for &(x0, x1) in segments {
            area.draw(&PathElement::new(vec![(x0, y), (x1, y)], line))?;
        }
        let marker = if s.dashed { line } else { s.color.filled() };
        area.draw(&Circle::new((26, y), 4, marker))?;
        area.draw(&Text::new(s.label.as_str(), (56, y), label.clone()))?;
    }
    Ok(())
}

/// One axis in plotting coordinates, with its tick positions.
#[derive(Clone)]
struct Axis {
    range: Range<f64>,
    ticks: Vec<f64>,
    /// Plotting coordinates are log10 of the values.
    log: bool,
}

impl Axis {
    fn coord(&self, v: f64) -> f64 {
        if self.log {
            v.log10()
        } else {
            v
        }
    }

    fn value(&self, c: f64) -> f64 {
        if self.log {
            10f64.powf(c)
        } else {
            c
        }
    }
}

/// Linear in plotting coordinates, with bold grid lines and labels at `ticks`
/// only: plotters' own f64 ticks fall at round numbers, which mean nothing
/// for log2 sizes or log10 values.
impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        RangedCoordf64::from(self.range.clone()).map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

/// Ticks exactly at the measured sizes: sizes are few and chosen by the user.
fn x_axis(series: &[Series]) -> Axis {
    let mut ticks: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    let lo = ticks.first().copied().unwrap_or(0.0);
    let hi = ticks.last().copied().unwrap_or(0.0);
    let pad = if hi - lo < 1.0 { 1.0 } else { 0.5 };
    Axis {
        range: lo - pad..hi + pad,
        ticks,
        log: false,
    }
}

/// Linear from zero unless the values span more than a decade, when a
/// linear axis would flatten the small ones into the floor.
fn y_axis(series: &[Series]) -> Axis {
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi / lo > 10.0 {
        return log_axis(lo, hi);
    }
    let step = nice_step(hi / 5.0);
    let top = (hi * 1.05 / step).ceil() * step;
    Axis {
        range: 0.0..top,
        ticks: (0..)
            .map(|i| i as f64 * step)
            .take_while(|&t| t <= top * 1.0001)
            .collect(),
        log: false,
    }
}

/// Stretched to the ticks around the data, so that every point lies between
/// two labels; only decades are labelled once there are many.
fn log_axis(lo: f64, hi: f64) -> Axis {
    let mantissas: &[f64] = if hi / lo > 1e3 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let decade = |v: f64| 10f64.powf(v.log10().floor());
    let below = mantissas
        .iter()
        .rev()
        .map(|m| m * decade(lo))
        .find(|&t| t <= lo)
        .unwrap_or(decade(lo));
    let above = mantissas
        .iter()
        .chain(&[10.0])
        .map(|m| m * decade(hi))
        .find(|&t| t >= hi)
        .unwrap_or(10.0 * decade(hi));
    let range = (lo.log10() - 0.05).min(below.log10())..(hi.log10() + 0.05).max(above.log10());
    let ticks = (range.start.floor() as i32..=range.end.ceil() as i32)
        .flat_map(|k| mantissas.iter().map(move |m| m.log10() + f64::from(k)))
        // The ends are ticks themselves: keep them despite rounding.
        .filter(|t| (range.start - 1e-9..=range.end + 1e-9).contains(t))
        .collect();
    Axis {
        range,
        ticks,
        log: true,
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let m = raw / mag;
    let nice = [1.0, 2.0, 5.0]
        .into_iter()
        .find(|&n| m <= n)
        .unwrap_or(10.0);
    nice * mag
}

/// Three significant digits at most, without trailing zeros.
fn short(v: f64) -> String {
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

fn duration_label(ns: f64) -> String {
    match ns {
        v if v >= 1e9 => format!("{} s", short(v / 1e9)),
        v if v >= 1e6 => format!("{} ms", short(v / 1e6)),
        v if v >= 1e3 => format!("{} us", short(v / 1e3)),
        v => format!("{} ns", short(v)),
    }
}

fn si_label(v: f64, unit: &str) -> String {
    match v {
        v if v >= 1e9 => format!("{} G{unit}", short(v / 1e9)),
        v if v >= 1e6 => format!("{} M{unit}", short(v / 1e6)),
        v if v >= 1e3 => format!("{} k{unit}", short(v / 1e3)),
        0.0 => "0".to_owned(),
        // "500/s", not "500 /s".
        v if unit.starts_with('/') => format!("{}{unit}", short(v)),
        v => format!("{} {unit}", short(v)),
    }
}

fn size_label(bytes: f64) -> String {
    let b = bytes.round() as u64;
    match b {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// Where Debian/Ubuntu (fonts-dejavu-core), Fedora and Arch put DejaVu Sans.
const PREFERRED_FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];
const FONT_DIRS: [&str; 2] = ["/usr/share/fonts", "/usr/local/share/fonts"];
/// Each try leaks the file's bytes (plotters keeps fonts for the process).
const FONT_TRIES: usize = 5;
const FONT_ADVICE: &str = "install one (e.g. `apt-get install fonts-dejavu-core`), \
    point COMM_PERF_FONT at a .ttf file, or ask for an SVG chart instead \
    (--plot FILE.svg), which needs no font";

/// Registers the font for PNG text, looked for once per process.
fn font() -> Result<(), PlotError> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(register_a_font).clone().map_err(PlotError)
}

fn register_a_font() -> Result<(), String> {
    if let Some(chosen) = std::env::var_os("COMM_PERF_FONT") {
        let path = PathBuf::from(chosen);
        if register(&path) {
            return Ok(());
        }
        return Err(format!(
            "COMM_PERF_FONT={}: not a readable TrueType font; {FONT_ADVICE}",
            path.display()
        ));
    }
    if font_candidates()
        .iter()
        .take(FONT_TRIES)
        .any(|p| register(p))
    {
        return Ok(());
    }
    Err(format!(
        "no TrueType font found for the PNG chart (looked for {} and *.ttf under {}); \
         {FONT_ADVICE}",
        PREFERRED_FONTS[0],
        FONT_DIRS.join(", ")
    ))
}

fn register(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    // plotters wants 'static font bytes; this happens at most FONT_TRIES times.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, bytes).is_ok()
}

/// DejaVu Sans first, then upright sans faces, then any other TrueType file.
fn font_candidates() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in FONT_DIRS {
        find_ttf(Path::new(dir), 6, &mut found);
    }
    let plain_sans = |p: &PathBuf| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        name.contains("Sans")
            && !["Bold", "Italic", "Oblique", "Mono", "Light", "Condensed"]
                .iter()
                .any(|w| name.contains(w))
    };
    found.sort_by_cached_key(|p| (!plain_sans(p), p.clone()));
    let mut out: Vec<PathBuf> = PREFERRED_FONTS
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect();
    let rest: Vec<PathBuf> = found.into_iter().filter(|p| !out.contains(p)).collect();
    out.extend(rest);
    out
}

fn find_ttf(dir: &Path, depth: u32, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() {
            if depth > 0 {
                find_ttf(&path, depth - 1, found);
            }
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("ttf"))
        {
            found.push(path);
        }
    }
}
