//! `run/report.html`: a static page (opens from disk) with the run's curves, drawn by plotters
//! as inline SVG, and the latest sample grid. Rebuilt every tick from `metrics.jsonl`.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

/// One curve: a name and its (kimg, value) points.
type Series = (String, Vec<(f64, f64)>);

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// A line chart as an SVG string.
fn chart(title: &str, y_label: &str, series: &[Series]) -> Result<String> {
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if points.is_empty() {
        return Ok(format!("<p class=\"empty\">{title}: no data yet</p>"));
    }
    let (mut x0, mut x1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
        (a.min(*x), b.max(*x))
    });
    let (mut y0, mut y1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), (_, y)| {
        (a.min(*y), b.max(*y))
    });
    if x1 <= x0 {
        x1 = x0 + 1.0;
        x0 -= 0.0;
    }
    if y1 <= y0 {
        y0 -= 0.5;
        y1 += 0.5;
    }
    let pad = (y1 - y0) * 0.05;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 320)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))?;
        c.configure_mesh()
            .x_desc("kimg")
            .y_desc(y_label)
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            c.draw_series(LineSeries::new(
                pts.iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite()),
                color.stroke_width(2),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        }
        if series.len() > 1 {
            c.configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK.mix(0.3))
                .draw()?;
        }
        root.present()?;
    }
    Ok(svg)
}

fn series(
    lines: &[serde_json::Value],
    name: &str,
    pick: impl Fn(&serde_json::Value) -> Option<f64>,
) -> Series {
    (
        name.to_string(),
        lines
            .iter()
            .filter_map(|l| Some((l["kimg"].as_f64()?, pick(l)?)))
            .collect(),
    )
}

/// Rewrites `run/report.html` from `run/metrics.jsonl`.
pub fn write_report(run: &Path) -> Result<()> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let f = |key: &'static str| move |l: &serde_json::Value| l[key].as_f64();
    let mut swd_levels: Vec<String> = lines
        .iter()
        .filter_map(|l| l["metrics"]["swd"].as_object())
        .flat_map(|m| m.keys().cloned().collect::<Vec<_>>())
        .collect();
    swd_levels.sort_by_key(|k| std::cmp::Reverse(k.parse::<usize>().unwrap_or(usize::MAX)));
    swd_levels.dedup();
    let swd_series: Vec<Series> = swd_levels
        .iter()
        .map(|k| {
            series(
                &lines,
                &if k == "avg" {
                    "average".to_string()
                } else {
                    format!("{k}px")
                },
                |l| l["metrics"]["swd"][k].as_f64(),
            )
        })
        .collect();
    let charts = [
        chart(
            "Losses",
            "loss",
            &[
                series(&lines, "critic", f("loss_d")),
                series(&lines, "generator", f("loss_g")),
            ],
        )?,
        chart(
            "Wasserstein estimate and penalty",
            "value",
            &[
                series(&lines, "E[D(real)] − E[D(fake)]", f("wasserstein")),
                series(&lines, "gradient penalty", f("penalty")),
            ],
        )?,
        chart(
            "Sliced Wasserstein distance ×10³ (held-out split)",
            "SWD ×1e3",
            &swd_series,
        )?,
        chart(
            "MS-SSIM of sample pairs",
            "MS-SSIM",
            &[
                series(&lines, "generated", |l| l["metrics"]["ms_ssim"].as_f64()),
                series(&lines, "reals", |l| {
                    l["metrics"]["ms_ssim_reference"].as_f64()
                }),
            ],
        )?,
        chart(
            "Growth: resolution level + fade α",
            "level",
            &[series(&lines, "level − 1 + α", |l| {
                Some(l["level"].as_f64()? - 1.0 + l["alpha"].as_f64()?)
            })],
        )?,
        chart(
            "Training speed",
            "img/s",
            &[series(&lines, "img/s", f("img_per_s"))],
        )?,
    ];
    let latest = lines.last();
    let grid = std::fs::read_dir(run.join("grids")).ok().and_then(|d| {
        d.filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
            .filter(|n| n.ends_with(".png"))
            .max()
    });
    let summary = match latest {
        Some(l) => format!(
            "{:.1} kimg · level {} ({}×{}) · α {:.3} · {:.1} img/s · {:.0} s trained",
            l["kimg"].as_f64().unwrap_or(0.0),
            l["level"],
            l["resolution"],
            l["resolution"],
            l["alpha"].as_f64().unwrap_or(1.0),
            l["img_per_s"].as_f64().unwrap_or(0.0),
            l["train_seconds"].as_f64().unwrap_or(0.0)
        ),
        None => "no ticks yet".to_string(),
    };
    let name = run
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>pggan run {name}</title>\n<style>body{{font-family:sans-serif;margin:1.5em;color:#222}}\
         .charts{{display:flex;flex-wrap:wrap;gap:12px}} .charts svg{{max-width:100%;height:auto;border:1px solid #ddd}}\
         img.grid{{image-rendering:pixelated;width:512px;max-width:100%;border:1px solid #ddd}} .empty{{color:#888}}</style></head><body>\n\
         <h1>pggan run <code>{name}</code></h1>\n<p>{summary}</p>\n"
    );
    if let Some(g) = grid {
        html.push_str(&format!("<h2>Latest samples (EMA generator, fixed latents)</h2>\n<img class=\"grid\" src=\"grids/{g}\" alt=\"sample grid {g}\">\n"));
    }
    html.push_str("<h2>Curves</h2>\n<div class=\"charts\">\n");
    for c in &charts {
        html.push_str(c);
        html.push('\n');
    }
    html.push_str("</div>\n</body></html>\n");
    let path = run.join("report.html");
    crate::fsutil::write_atomic(&path, html.as_bytes()).context("writing report.html")?;
    Ok(())
}
