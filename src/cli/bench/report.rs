//! The bench's outputs: the text table, the goal check and the SVG bar chart.

use std::fmt::Write;

use super::{Row, Scenario};

/// How many times better multiproc's figure is than the reference's: ref/mp for
/// times, mp/ref for throughputs and speedups.
pub fn advantage(mp: &Row, reference: &Row) -> Option<f64> {
    let a = if mp.higher_is_better() {
        mp.median / reference.median
    } else {
        reference.median / mp.median
    };
    (a.is_finite() && a > 0.0).then_some(a)
}

/// A figure with three significant digits (no exponent for ordinary magnitudes).
pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 1e7 {
        format!("{:.3e}", x)
    } else if a >= 100.0 {
        format!("{:.0}", x)
    } else if a >= 10.0 {
        format!("{:.1}", x)
    } else if a >= 1.0 {
        format!("{:.2}", x)
    } else if a >= 0.01 {
        format!("{:.3}", x)
    } else {
        format!("{:.2e}", x)
    }
}

fn fmt_ratio(a: f64) -> String {
    if a >= 10.0 {
        format!("{:.0}x", a)
    } else {
        format!("{:.2}x", a)
    }
}

type Key = (String, String, u32);

/// Rows grouped by (scenario, metric, processes), in order of first appearance;
/// multiproc first in each group.
fn groups(rows: &[Row]) -> Vec<(Key, Vec<&Row>)> {
    let mut out: Vec<(Key, Vec<&Row>)> = Vec::new();
    for r in rows {
        let key = (r.scenario.clone(), r.metric.clone(), r.processes);
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => out.push((key, vec![r])),
        }
    }
    for (_, v) in out.iter_mut() {
        v.sort_by_key(|r| r.imp != "multiproc");
    }
    out
}

/// The table: one line per figure, multiproc first in each comparison, with the
/// ratio of multiproc to every reference.
pub fn table(rows: &[Row]) -> String {
    let mut lines = vec![[
        "scenario".to_string(),
        "metric".to_string(),
        "n".to_string(),
        "impl".to_string(),
        "median".to_string(),
        "[min - max]".to_string(),
        "ratio".to_string(),
    ]];
    for ((scenario, metric, n), v) in groups(rows) {
        let mp = v.iter().find(|r| r.imp == "multiproc").copied();
        for (i, r) in v.iter().enumerate() {
            let ratio = match mp {
                Some(mp) if r.imp != "multiproc" => advantage(mp, r).map_or("-".into(), fmt_ratio),
                _ => String::new(),
            };
            let first = i == 0;
            lines.push([
                if first {
                    scenario.clone()
                } else {
                    String::new()
                },
                if first { metric.clone() } else { String::new() },
                if first { n.to_string() } else { String::new() },
                r.imp.clone(),
                format!("{} {}", fmt_num(r.median), r.unit),
                format!("[{} - {}]", fmt_num(r.min), fmt_num(r.max)),
                ratio,
            ]);
        }
    }
    let mut width = [0usize; 7];
    for l in &lines {
        for (w, c) in width.iter_mut().zip(l.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        let mut line = String::new();
        for (j, (c, w)) in l.iter().zip(width.iter()).enumerate() {
            // Figures right-aligned, words left-aligned.
            if j == 4 || j == 6 {
                let _ = write!(line, "{c:>w$}  ");
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if i == 0 {
            let total: usize = width.iter().sum::<usize>() + 2 * (width.len() - 1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}

/// One line per benchmark goal of the scenarios run: the figures, the ratio, and
/// whether it is reached.
pub fn goals(scenarios: &[&Scenario], rows: &[Row]) -> String {
    let mut out = String::new();
    for s in scenarios {
        for g in s.goals {
            let find = |imp: &str| {
                rows.iter().find(|r| {
                    r.scenario == s.id
                        && r.metric == g.metric
                        && r.processes == g.processes
                        && r.imp == imp
                })
            };
            let verdict = match (find("multiproc"), find(g.reference)) {
                (Some(mp), Some(r)) => match advantage(mp, r) {
                    Some(a) => format!(
                        "multiproc {} {} vs {} {} {}: {} -> {}",
                        fmt_num(mp.median),
                        mp.unit,
                        g.reference,
                        fmt_num(r.median),
                        r.unit,
                        fmt_ratio(a),
                        if a >= g.at_least {
                            "REACHED"
                        } else if a >= g.at_least * 0.97 {
                            // Medians move by a few percent from run to run.
                            "NOT REACHED, within 3% (noise level)"
                        } else {
                            "NOT REACHED"
                        }
                    ),
                    None => "no ratio".to_string(),
                },
                _ => "not measured in this run".to_string(),
            };
            let _ = writeln!(
                out,
                "  {} {} (n={}): {}: {verdict}",
                s.id, g.metric, g.processes, g.text
            );
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A horizontal bar chart, log scale, of how many times faster multiproc is than
/// each reference (the bar starts at 1x: right of it multiproc wins).
pub fn svg(rows: &[Row]) -> String {
    let mut bars = Vec::new();
    for ((scenario, metric, n), v) in groups(rows) {
        let Some(mp) = v.iter().find(|r| r.imp == "multiproc") else {
            continue;
        };
        for r in v.iter().filter(|r| r.imp != "multiproc") {
            if let Some(a) = advantage(mp, r) {
                bars.push((format!("{scenario} {metric} (n={n}) vs {}", r.imp), a));
            }
        }
    }
    let (label_w, plot_w, row_h, top) = (380.0, 520.0, 20.0, 40.0);
    let (lo, hi) = (-2.0f64, 4.0f64); // log10 of 0.01x .. 10000x
    let x_of = |a: f64| label_w + (a.log10().clamp(lo, hi) - lo) / (hi - lo) * plot_w;
    let height = top + row_h * bars.len() as f64 + 30.0;
    let width = label_w + plot_w + 80.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="14">multiproc bench: how many times faster multiproc is than each reference (log scale)</text>"#
    );
    for e in (lo as i32)..=(hi as i32) {
        let x = x_of(10f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{}" stroke="{}"/><text x="{x}" y="{}" text-anchor="middle">{}x</text>"##,
            height - 25.0,
            if e == 0 { "#000" } else { "#ccc" },
            height - 10.0,
            10f64.powi(e)
        );
    }
    for (i, (label, a)) in bars.iter().enumerate() {
        let y = top + row_h * i as f64;
        let (x1, x0) = (x_of(*a), x_of(1.0));
        let (x, w) = if x1 >= x0 {
            (x0, x1 - x0)
        } else {
            (x1, x0 - x1)
        };
        let color = if *a >= 1.0 { "#2a7" } else { "#d54" };
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{x}" y="{}" width="{w}" height="{}" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            label_w - 6.0,
            y + 14.0,
            esc(label),
            y + 3.0,
            row_h - 6.0,
            x.max(x1) + 4.0,
            y + 14.0,
            fmt_ratio(*a)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(imp: &str, median: f64, unit: &str) -> Row {
        Row {
            scenario: "S1".into(),
            imp: imp.into(),
            metric: "m".into(),
            median,
            min: median,
            max: median,
            unit: unit.into(),
            processes: 1,
        }
    }

    #[test]
    fn advantage_follows_the_unit() {
        assert_eq!(
            advantage(&row("multiproc", 5.0, "ns"), &row("cpython", 500.0, "ns")),
            Some(100.0)
        );
        assert_eq!(
            advantage(&row("multiproc", 9.0, "GB/s"), &row("memcpy", 10.0, "GB/s")),
            Some(0.9)
        );
        let t = table(&[row("cpython", 500.0, "ns"), row("multiproc", 5.0, "ns")]);
        assert!(t.lines().nth(2).unwrap().contains("multiproc"));
        assert!(t.contains("100x"));
        assert!(svg(&[row("cpython", 500.0, "ns"), row("multiproc", 5.0, "ns")]).contains("<rect"));
    }
}
