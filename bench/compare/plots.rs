//! PNG plots of the results (plotters, bitmap backend): latency
//! distributions as CDFs and the rest as bars.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::stats::{percentile, Outcome};
use crate::{Config, Results};

pub(crate) const SANDBOXD: RGBColor = RGBColor(31, 119, 180);
pub(crate) const AGENT: RGBColor = RGBColor(230, 120, 20);
pub(crate) const LIMIT: RGBColor = RGBColor(110, 110, 110);
const SIZE: (u32, u32) = (900, 520);
const FONT: &str = "sans-serif";

/// A plot drawn: its title and its path relative to the repo root.
pub(crate) struct Plot {
    pub(crate) title: String,
    pub(crate) path: String,
}

/// plotters draws text only with a font registered; the machine's own
/// TrueType fonts are used, the first found.
fn register_font() -> anyhow::Result<()> {
    let candidates = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    ];
    let found = candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| find_ttf(Path::new("/usr/share/fonts"), 4))
        .ok_or_else(|| {
            anyhow!("no TrueType font under /usr/share/fonts (install fonts-dejavu-core)")
        })?;
    let bytes = std::fs::read(&found).with_context(|| found.display().to_string())?;
    plotters::style::register_font(FONT, FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
        .map_err(|_| anyhow!("{} is not a usable font", found.display()))?;
    Ok(())
}

fn find_ttf(dir: &Path, depth: usize) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut subdirs = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            subdirs.push(p);
        } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("ttf")) {
            return Some(p);
        }
    }
    if depth == 0 {
        return None;
    }
    subdirs.into_iter().find_map(|d| find_ttf(&d, depth - 1))
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("{e:?}")
}

/// Distribution functions of latency samples, log x axis.
fn cdf(
    area: &Area,
    title: &str,
    unit: &str,
    series: &[(&str, &[f64], RGBColor)],
) -> anyhow::Result<()> {
    let all: Vec<f64> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    if all.is_empty() {
        return Err(anyhow!("no samples"));
    }
    let lo = all.iter().copied().fold(f64::MAX, f64::min).max(1e-3) * 0.8;
    // Room on the right for the legend.
    let hi = all.iter().copied().fold(0.0, f64::max) * 8.0;
    area.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..100.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(unit)
        .y_desc("% of samples at or below")
        .label_style((FONT, 13))
        .draw()
        .map_err(err)?;
    for (label, samples, color) in series {
        if samples.is_empty() {
            continue;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let n = sorted.len() as f64;
        let points: Vec<(f64, f64)> = sorted
            .iter()
            .enumerate()
            .flat_map(|(i, v)| [(*v, 100.0 * i as f64 / n), (*v, 100.0 * (i + 1) as f64 / n)])
            .collect();
        let median = percentile(samples, 0.5);
        let color = *color;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(format!("{label} (median {})", fmt(median, unit)))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()
        .map_err(err)?;
    Ok(())
}

fn fmt(v: f64, unit: &str) -> String {
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$} {unit}")
}

/// One bar per entry, its value written above it.
fn bars(
    area: &Area,
    title: &str,
    unit: &str,
    log: bool,
    entries: &[(String, f64, RGBColor)],
) -> anyhow::Result<()> {
    // A figure not measured keeps its slot, marked "n/a".
    let measured: Vec<f64> = entries.iter().map(|e| e.1).filter(|v| *v > 0.0).collect();
    if measured.is_empty() {
        return Err(anyhow!("no figures"));
    }
    let max = measured.iter().copied().fold(0.0, f64::max);
    let min = measured.iter().copied().fold(f64::MAX, f64::min);
    area.fill(&WHITE).map_err(err)?;
    let n = entries.len();
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    // A segmented `a..b` has a segment per value up to and including b.
    let x = (0..n - 1).into_segmented();
    let labels: Vec<String> = entries.iter().map(|e| e.0.clone()).collect();
    let x_fmt = move |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    macro_rules! draw {
        ($chart:expr, $base:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n)
                .x_label_formatter(&x_fmt)
                .y_desc(unit)
                .label_style((FONT, 13))
                .draw()
                .map_err(err)?;
            for (i, (_, v, color)) in entries.iter().map(|e| (&e.0, e.1, e.2)).enumerate() {
                if v <= 0.0 {
                    chart
                        .draw_series(std::iter::once(Text::new(
                            "n/a: not measured",
                            (SegmentValue::CenterOf(i), $base),
                            (FONT, 15).into_font().color(&BLACK).pos(
                                plotters::style::text_anchor::Pos::new(
                                    plotters::style::text_anchor::HPos::Center,
                                    plotters::style::text_anchor::VPos::Bottom,
                                ),
                            ),
                        )))
                        .map_err(err)?;
                    continue;
                }
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), $base),
                        (SegmentValue::Exact(i + 1), v),
                    ],
                    color.filled(),
                );
                bar.set_margin(0, 0, 18, 18);
                chart.draw_series(std::iter::once(bar)).map_err(err)?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        fmt(v, unit),
                        (SegmentValue::CenterOf(i), v),
                        (FONT, 15).into_font().color(&BLACK).pos(
                            plotters::style::text_anchor::Pos::new(
                                plotters::style::text_anchor::HPos::Center,
                                plotters::style::text_anchor::VPos::Bottom,
                            ),
                        ),
                    )))
                    .map_err(err)?;
            }
        }};
    }
    if log {
        let base = min / 3.0;
        let chart = builder
            .build_cartesian_2d(x, (base..max * 4.0).log_scale())
            .map_err(err)?;
        draw!(chart, base);
    } else {
        let chart = builder
            .build_cartesian_2d(x, 0.0..max * 1.15)
            .map_err(err)?;
        draw!(chart, 0.0);
    }
    Ok(())
}

fn median(o: &Outcome) -> f64 {
    o.median().unwrap_or(0.0)
}

/// Draws every plot; returns those drawn.
pub(crate) fn draw(cfg: &Config, r: &Results) -> anyhow::Result<Vec<Plot>> {
    register_font()?;
    let rel = cfg
        .plots
        .strip_prefix(&cfg.root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| cfg.plots.clone());
    let mut drawn = Vec::new();
    let mut plot = |file: &str, title: &str, f: &dyn Fn(&Area) -> anyhow::Result<()>| {
        let path = cfg.plots.join(file);
        let area = BitMapBackend::new(&path, SIZE).into_drawing_area();
        match f(&area).and_then(|_| area.present().map_err(err)) {
            Ok(()) => drawn.push(Plot {
                title: title.to_owned(),
                path: rel.join(file).display().to_string(),
            }),
            Err(e) => {
                println!("plot {file} skipped: {e:#}");
                let _ = std::fs::remove_file(&path);
            }
        }
    };
    let samples = |o: &Outcome| o.samples().map(<[f64]>::to_vec).unwrap_or_default();

    let exec = [
        samples(&r.exec.sandboxd),
        samples(&r.exec.agent),
        samples(&r.exec.limit),
    ];
    plot(
        "exec_latency.png",
        "Exec-and-wait `true`: latency distribution",
        &|a| {
            cdf(
                a,
                "Exec-and-wait `true`: round trip",
                "ms",
                &[
                    ("sandboxd POST /v1/runs wait:true", &exec[0], SANDBOXD),
                    ("agent-server execute_bash_command", &exec[1], AGENT),
                    ("spawn `true` directly (limit)", &exec[2], LIMIT),
                ],
            )
        },
    );

    let cb = [samples(&r.callback.0), samples(&r.callback.1)];
    plot(
        "callback_latency.png",
        "Child exit to completion callback: latency distribution",
        &|a| {
            cdf(
                a,
                "Child exit to completion callback received",
                "ms",
                &[
                    ("sandboxd: child exit to callback", &cb[0], SANDBOXD),
                    ("local HTTP POST round trip (limit)", &cb[1], LIMIT),
                ],
            )
        },
    );

    let mib = r.bundle.bytes as f64 / 1048576.0;
    let thr = |o: &Outcome, size: f64| o.median().map(|s| size / s).unwrap_or(0.0);
    plot(
        "bundle_throughput.png",
        "Bundle upload and extraction: throughput",
        &|a| {
            bars(
                a,
                &format!(
                    "Upload + extract a {mib:.0} MiB tar.gz ({} files): MiB/s of archive",
                    r.bundle.files
                ),
                "MiB/s",
                false,
                &[
                    (
                        "sandboxd PUT bundle".into(),
                        thr(&r.bundle_s.sandboxd, mib),
                        SANDBOXD,
                    ),
                    (
                        "agent-server upload + tar xzf".into(),
                        thr(&r.bundle_s.agent, mib),
                        AGENT,
                    ),
                    (
                        "local tar xzf (limit)".into(),
                        thr(&r.bundle_s.limit, mib),
                        LIMIT,
                    ),
                ],
            )
        },
    );

    let gib_mib = crate::scenarios::CAPTURE_BYTES as f64 / 1048576.0;
    plot(
        "capture_throughput.png",
        "Capture of 1 GiB of stdout: throughput",
        &|a| {
            bars(
                a,
                "Capture a child's 1 GiB stdout: MiB/s (a: zeros, b: printable lines)",
                "MiB/s",
                false,
                &[
                    (
                        "sandboxd (a)".into(),
                        thr(&r.capture_zero.sandboxd, gib_mib),
                        SANDBOXD,
                    ),
                    (
                        "cat > file (a)".into(),
                        thr(&r.capture_zero.limit, gib_mib),
                        LIMIT,
                    ),
                    (
                        "sandboxd (b)".into(),
                        thr(&r.capture.sandboxd, gib_mib),
                        SANDBOXD,
                    ),
                    (
                        "agent-server (b)".into(),
                        thr(&r.capture.agent, gib_mib),
                        AGENT,
                    ),
                    (
                        "cat > file (b)".into(),
                        thr(&r.capture.limit, gib_mib),
                        LIMIT,
                    ),
                ],
            )
        },
    );

    plot(
        "concurrent_runs.png",
        "100 concurrent `sleep 0.1`: time until all ended",
        &|a| {
            bars(
                a,
                "100 concurrent `sleep 0.1`: until all ended (median)",
                "s",
                false,
                &[
                    ("sandboxd".into(), median(&r.concurrent.sandboxd), SANDBOXD),
                    ("agent-server".into(), median(&r.concurrent.agent), AGENT),
                    (
                        "spawn + wait directly (limit)".into(),
                        median(&r.concurrent.limit),
                        LIMIT,
                    ),
                ],
            )
        },
    );

    plot("start_to_ready.png", "Start to ready", &|a| {
        bars(
            a,
            "Start to ready (median, log scale)",
            "ms",
            true,
            &[
                ("sandboxd".into(), median(&r.ready_sandboxd), SANDBOXD),
                ("agent-server".into(), median(&r.ready_agent), AGENT),
            ],
        )
    });

    let kb = |v: Option<u64>| v.map(|k| k as f64 / 1024.0).unwrap_or(0.0);
    plot("memory.png", "Resident memory", &|a| {
        bars(
            a,
            "Resident memory of the daemon process (MiB, log scale)",
            "MiB",
            true,
            &[
                (
                    "sandboxd idle".into(),
                    median(&r.idle_sandboxd) / 1024.0,
                    SANDBOXD,
                ),
                ("agent idle".into(), median(&r.idle_agent) / 1024.0, AGENT),
                (
                    "sandboxd bundle".into(),
                    kb(r.bundle_peaks.sandboxd_kb),
                    SANDBOXD,
                ),
                ("agent bundle".into(), kb(r.bundle_peaks.agent_kb), AGENT),
                (
                    "sandboxd capture".into(),
                    kb(r.capture_peaks.sandboxd_kb),
                    SANDBOXD,
                ),
                ("agent capture".into(), kb(r.capture_peaks.agent_kb), AGENT),
            ],
        )
    });
    Ok(drawn)
}
