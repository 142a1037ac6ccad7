//! `timeline.html`: one self-contained page per run (inline SVG, no scripts or external assets) with the
//! faults as bands against chat throughput (ok / refused / indeterminate per second) and the budget use
//! of each budgeted org (served by its mock, billed by the ledger, the limit in force).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::faults::Applied;
use crate::checker::Served;
use crate::history::{Event, OpType};

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 70.0;
const PANEL: f64 = 180.0;
const GAP: f64 = 40.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

struct Axis {
    end_ms: f64,
}

impl Axis {
    fn x(&self, ms: f64) -> f64 {
        LEFT + (ms / self.end_ms.max(1.0)) * (WIDTH - LEFT - 20.0)
    }
}

fn polyline(out: &mut String, points: &[(f64, f64)], color: &str, dashed: bool) {
    if points.is_empty() {
        return;
    }
    let text: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let dash = if dashed { r#" stroke-dasharray="5,4""# } else { "" };
    let _ =
        write!(out, r#"<polyline fill="none" stroke="{color}" stroke-width="1.6"{dash} points="{}"/>"#, text.join(" "));
}

fn panel_frame(out: &mut String, axis: &Axis, top: f64, title: &str, max: f64) {
    let _ = write!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{w:.0}" height="{PANEL}" fill="none" stroke="#999"/>
<text x="{LEFT}" y="{t:.0}" font-size="13" font-weight="bold">{title}</text>
<text x="{lx:.0}" y="{ty:.0}" font-size="11" text-anchor="end">{max:.0}</text>
<text x="{lx:.0}" y="{by:.0}" font-size="11" text-anchor="end">0</text>"##,
        w = WIDTH - LEFT - 20.0,
        t = top - 6.0,
        lx = LEFT - 4.0,
        ty = top + 10.0,
        by = top + PANEL,
        title = escape(title),
    );
    let seconds = (axis.end_ms / 1000.0).ceil() as u64;
    let step = if seconds > 120 { 20 } else { 10 };
    for second in (0..=seconds).step_by(step) {
        let x = axis.x(second as f64 * 1000.0);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{b:.0}" y2="{b2:.0}" stroke="#999"/><text x="{x:.1}" y="{ty:.0}" font-size="10" text-anchor="middle">{second}s</text>"##,
            b = top + PANEL,
            b2 = top + PANEL + 4.0,
            ty = top + PANEL + 15.0
        );
    }
}

fn kind_color(index: usize) -> &'static str {
    const COLORS: [&str; 11] = [
        "#f4a6a6", "#f6c89f", "#f7e39c", "#c9e7a7", "#a8d8e8", "#c7b8ea", "#e8b4d8", "#b9d7c4", "#f0c0a0", "#d0d0f0",
        "#e0d0a0",
    ];
    COLORS[index % COLORS.len()]
}

/// The whole page.
pub fn html(events: &[Event], applied: &[Applied], served: &[Served], title: &str) -> String {
    let end_ms = events.iter().map(|event| event.time_ms).fold(1000.0, f64::max);
    let axis = Axis { end_ms };
    let budgeted: Vec<&Served> = served.iter().filter(|org| org.limit.is_some()).collect();
    let height = 60.0 + (PANEL + GAP) * (1 + budgeted.len()) as f64 + 40.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" font-family="sans-serif">"#
    );
    // Fault bands across every panel.
    let mut kinds: Vec<String> = Vec::new();
    for fault in applied {
        let name = fault.kind.name().to_owned();
        let index = kinds.iter().position(|kind| *kind == name).unwrap_or_else(|| {
            kinds.push(name.clone());
            kinds.len() - 1
        });
        let (x1, x2) = (axis.x(fault.start_ms), axis.x(fault.end_ms));
        let _ = write!(
            svg,
            r#"<rect x="{x1:.1}" y="40" width="{w:.1}" height="{h:.0}" fill="{c}" opacity="0.55"><title>{t}</title></rect><text x="{x1:.1}" y="36" font-size="10">{n}</text>"#,
            w = (x2 - x1).max(1.0),
            h = height - 80.0,
            c = kind_color(index),
            t = escape(&format!(
                "{name}: {} ({:.1}-{:.1} s)",
                fault.target,
                fault.start_ms / 1000.0,
                fault.end_ms / 1000.0
            )),
            n = escape(&name),
        );
    }
    // Point events of the nemesis (restarts, budget changes, upstream scripts) as ticks.
    for event in events.iter().filter(|event| event.process == "nemesis" && event.f != "start" && event.f != "stop") {
        let x = axis.x(event.time_ms);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="40" y2="{h:.0}" stroke="#555" stroke-width="0.6" stroke-dasharray="2,3"><title>{t}</title></line>"##,
            h = height - 40.0,
            t = escape(&format!("{:.1} s {}: {}", event.time_ms / 1000.0, event.f, event.value)),
        );
    }
    throughput_panel(&mut svg, &axis, events, 60.0);
    for (index, org) in budgeted.iter().enumerate() {
        budget_panel(&mut svg, &axis, events, org, 60.0 + (PANEL + GAP) * (index + 1) as f64);
    }
    svg.push_str("</svg>");
    let legend = "chat per second: <b style=\"color:#2a8a2a\">ok</b>, <b style=\"color:#c0392b\">refused \
        (fail)</b>, <b style=\"color:#e67e22\">indeterminate (info)</b>; budgets: <b style=\"color:#1f5fbf\">served \
        (mock)</b>, <b style=\"color:#8e44ad\">billed (ledger used)</b>, <b>limit</b> (dashed). Bands: faults \
        (hover for the target); dotted lines: nemesis events.";
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>jepsen run {t}</title></head>\n<body \
         style=\"font-family:sans-serif\"><h2>jepsen run: {t}</h2><p>{legend}</p>\n{svg}\n</body></html>\n",
        t = escape(title)
    )
}

fn throughput_panel(svg: &mut String, axis: &Axis, events: &[Event], top: f64) {
    let seconds = (axis.end_ms / 1000.0).ceil() as usize + 1;
    let mut counts: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for event in events.iter().filter(|event| event.f == "chat" && event.kind != OpType::Invoke) {
        let series = match event.kind {
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            _ => "info",
        };
        let bucket = (event.time_ms / 1000.0) as usize;
        let row = counts.entry(series).or_insert_with(|| vec![0.0; seconds]);
        if let Some(slot) = row.get_mut(bucket) {
            *slot += 1.0;
        }
    }
    let max = counts.values().flatten().fold(1.0_f64, |a, b| a.max(*b));
    panel_frame(svg, axis, top, "chat operations per second", max);
    for (series, color) in [("ok", "#2a8a2a"), ("fail", "#c0392b"), ("info", "#e67e22")] {
        let Some(row) = counts.get(series) else { continue };
        let points: Vec<(f64, f64)> = row
            .iter()
            .enumerate()
            .map(|(second, n)| (axis.x(second as f64 * 1000.0 + 500.0), top + PANEL - n / max * PANEL))
            .collect();
        polyline(svg, &points, color, false);
    }
}

fn budget_panel(svg: &mut String, axis: &Axis, events: &[Event], org: &Served, top: f64) {
    let samples: Vec<&Event> = events
        .iter()
        .filter(|event| event.f == "budget" && event.kind == OpType::Ok && event.value["org"] == org.org.as_str())
        .collect();
    let value = |event: &Event, field: &str| event.value[field].as_f64();
    let max = samples
        .iter()
        .flat_map(|event| [value(event, "limit"), value(event, "used"), value(event, "served")])
        .flatten()
        .fold(org.limit.unwrap_or(1) as f64, f64::max)
        * 1.05;
    panel_frame(svg, axis, top, &format!("budget of {} (tokens)", org.org), max);
    let y = |tokens: f64| top + PANEL - tokens / max * PANEL;
    for (field, color, dashed) in [("limit", "#222", true), ("used", "#8e44ad", false), ("served", "#1f5fbf", false)] {
        let points: Vec<(f64, f64)> =
            samples.iter().filter_map(|event| Some((axis.x(event.time_ms), y(value(event, field)?)))).collect();
        polyline(svg, &points, color, dashed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_a_self_contained_page() {
        let event = |index, time_ms, process: &str, kind, f: &str, value| Event {
            index,
            time_ms,
            process: process.into(),
            kind,
            f: f.into(),
            value,
        };
        let events = vec![
            event(0, 10.0, "chat-1-0", OpType::Invoke, "chat", json!({"org": "acme"})),
            event(1, 900.0, "chat-1-0", OpType::Ok, "chat", json!({"status": 200})),
            event(
                2,
                950.0,
                "sampler",
                OpType::Ok,
                "budget",
                json!({"org": "acme", "limit": 100, "used": 40, "served": 30}),
            ),
            event(3, 2500.0, "nemesis", OpType::Info, "budget-lowered", json!({"limit": 50})),
        ];
        let served = [Served { org: "acme".into(), limit: Some(100), input: 10, output: 20 }];
        let page = html(&events, &[], &served, "none <seed 1>");
        assert!(page.contains("<svg") && page.contains("budget of acme") && page.contains("&lt;seed 1&gt;"));
        assert!(!page.contains("<script") && !page.contains("src=\"http"));
    }
}
