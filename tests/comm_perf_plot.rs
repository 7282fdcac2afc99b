//! `comm-perf --plot FILE`: charts of the result rows as SVG or PNG, and a
//! bad request refused before the benchmark runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("comm-perf-plot-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn entries(&self) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .expect("read temp dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn comm_perf(args: &[&str], plot: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_comm-perf"))
        .args(args)
        .arg("--plot")
        .arg(plot)
        .envs(env.iter().copied())
        .output()
        .expect("run comm-perf")
}

const SHORT_RUN: [&str; 7] = [
    "pair", "--test", "lat,rate", "--size", "8,1k", "--iters", "200",
];

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_svg_chart_shows_every_series() {
    let dir = TempDir::new("svg");
    let file = dir.file("x.svg");
    let out = comm_perf(&SHORT_RUN, &file, &[]);
    assert!(out.status.success(), "comm-perf failed: {}", stderr(&out));
    let svg = std::fs::read_to_string(&file).expect("the chart was written");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.len() > 5_000, "only {} bytes", svg.len());
    for text in [
        "One-way latency",
        "Message rate",
        "shm handler p50",
        "shm handler p99",
        "8 B",
        "1 KiB",
    ] {
        assert!(svg.contains(text), "no {text:?} in the chart");
    }
    // One panel per test that ran: no bw rows, no bandwidth panel.
    assert!(!svg.contains("Bandwidth"));
    assert_eq!(dir.entries(), ["x.svg"]);
}

#[test]
fn a_png_chart_is_a_png_file() {
    let dir = TempDir::new("png");
    let file = dir.file("x.png");
    let out = comm_perf(&SHORT_RUN, &file, &[]);
    if !out.status.success() && stderr(&out).contains("fonts-dejavu-core") {
        println!(
            "skipped: no TrueType font on this machine: {}",
            stderr(&out)
        );
        return;
    }
    assert!(out.status.success(), "comm-perf failed: {}", stderr(&out));
    let png = std::fs::read(&file).expect("the chart was written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 10_000, "only {} bytes", png.len());
    // The image is drawn beside the target and renamed: nothing else is left.
    assert_eq!(dir.entries(), ["x.png"]);
}

#[test]
fn a_bad_extension_is_refused_before_the_run() {
    let dir = TempDir::new("ext");
    let file = dir.file("x.jpg");
    let out = comm_perf(&SHORT_RUN, &file, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(".svg or .png"), "{}", stderr(&out));
    // No result table: it failed before measuring anything.
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(dir.entries().is_empty());
}

#[test]
fn a_png_without_a_usable_font_is_refused_before_the_run_with_advice() {
    let dir = TempDir::new("font");
    let file = dir.file("x.png");
    let missing = dir.file("no-such-font.ttf");
    let out = comm_perf(
        &SHORT_RUN,
        &file,
        &[("COMM_PERF_FONT", missing.to_str().unwrap())],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("fonts-dejavu-core") && err.contains(".svg"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(dir.entries().is_empty());
}

#[test]
fn plot_is_refused_where_no_rows_are_produced() {
    let dir = TempDir::new("idle");
    let file = dir.file("x.svg");
    let out = comm_perf(&["idle", "--seconds", "0.1"], &file, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("pair, client"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}
