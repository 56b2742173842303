//! The dashboard's charts: bars, sparklines and lines as small inline SVG, with their numbers in
//! a table beside them.
//!
//! A module of its own rather than plotters' SVG backend: plotters draws every mark with inline
//! colours and fonts (`fill="#..."`, `style=`), which a theme cannot restyle and which a strict
//! `Content-Security-Policy` forbids for `style`; it writes text as positioned `<text>` runs with
//! no `<title>`/`<desc>` or `role`, so a screen reader gets nothing; and it brings a font stack
//! and image crates for output the dashboard never makes. What the pages need is a few hundred
//! bytes per chart: rectangles and one path whose geometry is computed here, and classes
//! (`bar`, `bar-bad`, `line`, `line-2`, `axis`) that the stylesheet colours for the light and
//! the dark theme. The markup itself is the template `chart.html`, so every text is escaped by
//! askama. Each chart has a title, a description, and its numbers as `Fig`s in a table inside a
//! `<details>`, the same figures (with `data-metric` and `data-value`) as elsewhere on a page.

use super::Fig;

/// A chart ready for `chart.html`: geometry in the units of its `viewBox`.
pub struct Chart {
    /// Unique on its page (`aria-labelledby` names `{id}-t` and `{id}-d`).
    pub id: String,
    pub title: String,
    pub desc: String,
    /// `spark` (a row of a table), `bars` or `line`: a CSS class.
    pub kind: &'static str,
    pub width: u32,
    pub height: u32,
    pub marks: Vec<Mark>,
    /// The `d` of the line charts' paths (numbers and M/L only); empty for bars.
    pub paths: Vec<Path>,
    /// The numbers' table: its column heads and one row per point.
    pub columns: Vec<&'static str>,
    pub rows: Vec<TableRow>,
    /// What each class of mark shows: (class, name), for the caption's key.
    pub legend: Vec<(&'static str, &'static str)>,
}

impl Chart {
    /// The route every figure of the chart was read from (its table names it once).
    pub fn api(&self) -> &str {
        self.rows
            .iter()
            .flat_map(|r| r.cells.first())
            .map(|f| f.api.as_str())
            .next()
            .unwrap_or("")
    }
}

/// One rectangle.
pub struct Mark {
    pub class: &'static str,
    pub x: String,
    pub y: String,
    pub w: String,
    pub h: String,
    /// Its tooltip (`<title>`).
    pub label: String,
}

pub struct Path {
    pub class: &'static str,
    pub d: String,
}

pub struct TableRow {
    pub label: String,
    pub cells: Vec<Fig>,
}

/// A number as an SVG coordinate: at most two decimals.
fn n(v: f64) -> String {
    let r = (v * 100.0).round() / 100.0;
    if r == r.trunc() {
        format!("{}", r as i64)
    } else {
        format!("{r}")
    }
}

/// The value a figure plots: its raw number, or 0 for a missing one.
fn plotted(f: &Fig) -> f64 {
    f.number().unwrap_or(0.0)
}

/// One series point: its label (a day or a week) and its figures, the first plotted as the bar.
pub struct Point {
    pub label: String,
    pub figs: Vec<Fig>,
}

/// Bars of the first figure of each point, with the second (when given) drawn over them in the
/// `bar-bad` class: runs with their failures, deployments with their change failures.
pub fn bars(
    id: String,
    title: String,
    desc: String,
    kind: &'static str,
    size: (u32, u32),
    columns: Vec<&'static str>,
    points: Vec<Point>,
) -> Chart {
    let (width, height) = size;
    let max = points
        .iter()
        .flat_map(|p| p.figs.first().map(plotted))
        .fold(0.0_f64, f64::max);
    let slot = width as f64 / points.len().max(1) as f64;
    let gap = if slot > 4.0 { slot * 0.15 } else { 0.0 };
    let scale = |v: f64| {
        if max > 0.0 {
            v / max * (height as f64 - 1.0)
        } else {
            0.0
        }
    };
    let mut marks = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let x = i as f64 * slot + gap / 2.0;
        let w = slot - gap;
        for (j, class) in [(0, "bar"), (1, "bar-bad")] {
            let Some(f) = p.figs.get(j) else { continue };
            let h = scale(plotted(f));
            if h <= 0.0 {
                continue;
            }
            marks.push(Mark {
                class,
                x: n(x),
                y: n(height as f64 - h),
                w: n(w),
                h: n(h),
                label: format!("{}: {} {}", p.label, f.text, columns[j + 1]),
            });
        }
    }
    Chart {
        id,
        title,
        desc,
        kind,
        width,
        height,
        marks,
        paths: Vec::new(),
        legend: key(["bar", "bar-bad"], &columns),
        columns,
        rows: table(points),
    }
}

/// Lines of the first and second figure of each point, on one scale (p50 and p95 durations);
/// missing values break no line: they are drawn at zero and are blank in the table.
pub fn lines(
    id: String,
    title: String,
    desc: String,
    size: (u32, u32),
    columns: Vec<&'static str>,
    points: Vec<Point>,
) -> Chart {
    let (width, height) = size;
    let max = points
        .iter()
        .flat_map(|p| p.figs.iter().map(plotted))
        .fold(0.0_f64, f64::max);
    let step = width as f64 / (points.len().max(2) - 1) as f64;
    let y = |v: f64| {
        let h = height as f64 - 2.0;
        if max > 0.0 {
            1.0 + h - v / max * h
        } else {
            1.0 + h
        }
    };
    let mut paths = Vec::new();
    for (j, class) in [(0, "line"), (1, "line-2")] {
        let mut d = String::new();
        for (i, p) in points.iter().enumerate() {
            let Some(f) = p.figs.get(j) else { continue };
            let cmd = if d.is_empty() { 'M' } else { 'L' };
            d.push_str(&format!(
                "{cmd}{} {} ",
                n(i as f64 * step),
                n(y(plotted(f)))
            ));
        }
        if !d.is_empty() {
            paths.push(Path {
                class,
                d: d.trim_end().to_owned(),
            });
        }
    }
    Chart {
        id,
        title,
        desc,
        kind: "line",
        width,
        height,
        marks: Vec::new(),
        paths,
        legend: key(["line", "line-2"], &columns),
        columns,
        rows: table(points),
    }
}

/// The key of a chart's two classes of marks: the table's second and third columns.
fn key(classes: [&'static str; 2], columns: &[&'static str]) -> Vec<(&'static str, &'static str)> {
    classes
        .into_iter()
        .zip(columns.iter().skip(1).copied())
        .collect()
}

fn table(points: Vec<Point>) -> Vec<TableRow> {
    points
        .into_iter()
        .map(|p| TableRow {
            label: p.label,
            cells: p.figs,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fig(v: f64) -> Fig {
        Fig::new(
            "m",
            &json!(v),
            super::super::Fmt::Count,
            "/v",
            String::new(),
        )
    }

    #[test]
    fn bars_scale_to_the_greatest_and_skip_zeros() {
        let points = vec![
            Point {
                label: "a".into(),
                figs: vec![fig(2.0), fig(1.0)],
            },
            Point {
                label: "b".into(),
                figs: vec![fig(4.0), fig(0.0)],
            },
        ];
        let c = bars(
            "c".into(),
            "t".into(),
            "d".into(),
            "bars",
            (100, 41),
            vec!["day", "runs", "failed"],
            points,
        );
        // a: 2 of 4 → 20 of 40 units; its failure 1 → 10; b: the full 40, no failure mark.
        let hs: Vec<(&str, &str)> = c.marks.iter().map(|m| (m.class, m.h.as_str())).collect();
        assert_eq!(hs, [("bar", "20"), ("bar-bad", "10"), ("bar", "40")]);
        assert_eq!(c.marks[2].y, "1");
        assert_eq!(c.rows.len(), 2);
    }

    #[test]
    fn lines_run_across_the_width() {
        let points = (0..3)
            .map(|i| Point {
                label: i.to_string(),
                figs: vec![fig(i as f64)],
            })
            .collect();
        let c = lines(
            "l".into(),
            "t".into(),
            "d".into(),
            (100, 22),
            vec!["day", "p50"],
            points,
        );
        assert_eq!(c.paths.len(), 1);
        assert_eq!(c.paths[0].d, "M0 21 L50 11 L100 1");
    }
}
