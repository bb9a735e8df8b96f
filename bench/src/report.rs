//! The report: one row per (scenario, case, metric) with each broker's median, the ratios
//! ours ÷ mosquitto and ours ÷ rumqttd, the target for that row and whether it is met.
//! Rendered as an aligned text table (stdout) and as Markdown (for `docs/benchmarks.md`).

use crate::brokers::Kind;
use crate::results::Results;

/// Scenario names used in samples.
pub const P1: &str = "P1 throughput, 100 ACLs";
pub const P2: &str = "P2 throughput, 10,000 ACLs";
pub const P3: &str = "P3 provisioning";
pub const P4: &str = "P4 connect storm";
pub const P5: &str = "P5 revocation";
pub const P6: &str = "P6 memory";
pub const P7: &str = "P7 QoS 0 burst";
pub const P8: &str = "P8 device fleet";
/// The cluster scenarios (issue 20; `crate::cluster`).
pub const C1: &str = "C1 cluster throughput";
pub const C2: &str = "C2 cluster change → effect";
pub const C3: &str = "C3 cluster provisioning";
pub const P9: &str = "P9 persistence";
pub const P1M: &str = "P1M P1 with /metrics scraped";

/// The case suffixes of C1, paired by [`same_node_case`] for its target.
pub const CROSS_NODE: &str = "publisher on A, subscriber on B";
pub const SAME_NODE: &str = "both on node A";

/// For a C1 cross-node case, the single-node case it is compared with.
pub fn same_node_case(case: &str) -> Option<String> {
    case.ends_with(CROSS_NODE).then(|| case.replace(CROSS_NODE, SAME_NODE))
}

/// Metric names with a target attached.
pub const RATE: &str = "msg/s";
pub const LOST: &str = "not delivered within 1.5 s (all rounds)";
pub const TOTAL: &str = "total";
pub const END_START: &str = "last ÷ first batch";
pub const FLOOR_RATIO: &str = "total ÷ hash floor";
pub const CONNECTS: &str = "connects/s";
pub const P99: &str = "steady p99 latency";
pub const REFUSED: &str = "reply → refused or disconnected";
pub const DISCONNECTED: &str = "reply → disconnected";
pub const RSS_AFTER: &str = "RSS after flow";
pub const PER_CONNECTION: &str = "RSS per idle connection";
pub const LOST_PERCENT: &str = "lost";
pub const RSS_END: &str = "RSS at the end";
pub const RSS_GROWTH: &str = "RSS growth after the first period";
pub const ON_TIME: &str = "commands delivered within their period";
pub const EFFECT_P99: &str = "change → effect p99";
pub const P9_RATE_OFF: &str = "msg/s, persistence off";
pub const P9_RATE_ON: &str = "msg/s, persistence true";
pub const P9_RATE_AUTOSAVE: &str = "msg/s, persistence true, ours in autosave mode";
pub const P9_LISTENING: &str = "start → listening";
pub const P9_FIRST_RETAINED: &str = "start → first retained message delivered";
pub const P9_FILE: &str = "persistence file";
pub const RATE_SCRAPED: &str = "msg/s, /metrics scraped every 100 ms";
pub const RATE_UNSCRAPED: &str = "msg/s, not scraped";
pub const SCRAPED_RATIO: &str = "scraped ÷ not scraped (medians)";
pub const SCRAPES: &str = "scrapes during the flow";
pub const MISMATCHES: &str = "counters not matching the bench";
pub const SCRAPE_CPU: &str = "broker CPU per scrape";
pub const SCRAPE_CPU_SHARE: &str = "broker CPU at one scrape per 100 ms";

pub struct Row {
    pub scenario: &'static str,
    pub case: String,
    pub metric: &'static str,
    pub unit: &'static str,
    pub ours: Option<f64>,
    pub rumqttd: Option<f64>,
    pub mosquitto: Option<f64>,
    pub vs_mosquitto: Option<f64>,
    pub vs_rumqttd: Option<f64>,
    pub target: String,
    pub met: Option<bool>,
}

/// The value shown for a broker: the median, or the sum for counts of lost messages.
fn figure(results: &Results, scenario: &str, case: &str, broker: Kind, metric: &str) -> Option<f64> {
    if metric == LOST || metric == MISMATCHES {
        results.total(scenario, case, broker, metric)
    } else {
        results.median(scenario, case, broker, metric)
    }
}

fn max_of(results: &Results, scenario: &str, case: &str, metric: &str) -> Option<f64> {
    results.values(scenario, case, Kind::Ours, metric).into_iter().reduce(f64::max)
}

/// The target for a row and whether our figures meet it.
fn verdict(results: &Results, row: &Row) -> (String, Option<bool>) {
    let qos1 = row.case.contains("QoS 1");
    match (row.scenario, row.metric) {
        (P1, RATE) => {
            let want = if qos1 { 4.0 } else { 3.0 };
            let met = match (row.vs_mosquitto, row.vs_rumqttd) {
                (Some(m), Some(r)) => Some(m >= want && r >= 0.9),
                (None, Some(r)) => Some(r >= 0.9),
                _ => None,
            };
            (format!("≥ {want}× mosquitto, ≥ 0.9× rumqttd"), met)
        }
        (P1 | P2, LOST) if qos1 => ("QoS 1: none".into(), row.ours.map(|l| l == 0.0)),
        (P2, RATE) => {
            let at_100 = results.median(P1, &row.case, Kind::Ours, RATE);
            match (row.ours, at_100) {
                (Some(ours), Some(base)) => {
                    (format!("≥ 0.9× ours at 100 ACLs ({:.2}×)", ours / base), Some(ours >= 0.9 * base))
                }
                _ => ("≥ 0.9× ours at 100 ACLs".into(), None),
            }
        }
        (P3, END_START) => ("≤ 1.5".into(), row.ours.map(|v| v <= 1.5)),
        (P3, TOTAL) if row.case.starts_with("without") => ("≤ 5 s".into(), row.ours.map(|v| v <= 5.0)),
        (P3, FLOOR_RATIO) => ("≤ 1.2".into(), row.ours.map(|v| v <= 1.2)),
        (P4, CONNECTS) => ("≥ 1.8× mosquitto".into(), row.vs_mosquitto.map(|r| r >= 1.8)),
        (P4, P99) => ("≤ 5 ms".into(), row.ours.map(|v| v <= 5.0)),
        (P5, REFUSED | DISCONNECTED) => {
            let worst = max_of(results, row.scenario, &row.case, row.metric);
            let text = worst.map_or("≤ 10 ms".into(), |w| format!("≤ 10 ms (worst {w:.2} ms)"));
            (text, worst.map(|w| w <= 10.0))
        }
        (P6, RSS_AFTER) => ("≤ 64 MB".into(), row.ours.map(|v| v <= 64.0)),
        (P6, PER_CONNECTION) => ("≤ 10 KB".into(), row.ours.map(|v| v <= 10.0)),
        (P7, RATE) => ("≥ 3× mosquitto".into(), row.vs_mosquitto.map(|r| r >= 3.0)),
        (P7, LOST_PERCENT) => ("≤ 1 %".into(), row.ours.map(|v| v <= 1.0)),
        (P8, RSS_END) => ("≤ 1.5× mosquitto".into(), row.vs_mosquitto.map(|r| r <= 1.5)),
        (P8, ON_TIME) => ("100 %".into(), row.ours.map(|v| v >= 100.0)),
        (P1M, SCRAPED_RATIO) => ("≥ 0.98".into(), row.ours.map(|r| r >= 0.98)),
        (P1M, SCRAPE_CPU_SHARE) => ("≤ 2 %".into(), row.ours.map(|v| v <= 2.0)),
        (P1M, MISMATCHES) => ("0 (all rounds)".into(), row.ours.map(|v| v == 0.0)),
        (P8, RSS_GROWTH) => ("within ±10 %".into(), row.ours.map(|v| v.abs() <= 10.0)),
        (C1, RATE) => match same_node_case(&row.case) {
            Some(partner) => match (row.ours, results.median(C1, &partner, Kind::Ours, RATE)) {
                (Some(cross), Some(single)) => {
                    (format!("≥ 0.5× both on A ({:.2}×)", cross / single), Some(cross >= 0.5 * single))
                }
                _ => ("≥ 0.5× both on A".into(), None),
            },
            None => (String::new(), None),
        },
        (C2, EFFECT_P99) => ("≤ 100 ms".into(), row.ours.map(|v| v <= 100.0)),
        (C3, TOTAL) => ("≤ 5 s".into(), row.ours.map(|v| v <= 5.0)),
        (C3, END_START) => ("≤ 1.5".into(), row.ours.map(|v| v <= 1.5)),
        (P9, P9_RATE_ON | P9_RATE_AUTOSAVE) => {
            let off = results.median(P9, &row.case, Kind::Ours, P9_RATE_OFF);
            let kept = row.ours.zip(off).map(|(on, off)| on / off);
            let text = kept.map_or("≥ 0.8× ours off, ≥ 4× mosquitto".into(), |k| {
                format!("≥ 0.8× ours off ({k:.2}×), ≥ 4× mosquitto")
            });
            let met = kept.zip(row.vs_mosquitto).map(|(k, m)| k >= 0.8 && m >= 4.0);
            (text, met)
        }
        (P9, LOST) => ("none".into(), row.ours.map(|l| l == 0.0)),
        _ => (String::new(), None),
    }
}

pub fn rows(results: &Results) -> Vec<Row> {
    results
        .rows()
        .into_iter()
        .map(|(scenario, case, metric, unit)| {
            let ours = figure(results, scenario, &case, Kind::Ours, metric);
            let rumqttd = figure(results, scenario, &case, Kind::Rumqttd, metric);
            let mosquitto = figure(results, scenario, &case, Kind::Mosquitto, metric);
            let ratio = |other: Option<f64>| match (ours, other) {
                (Some(o), Some(x)) if x != 0.0 && metric != LOST && metric != LOST_PERCENT => Some(o / x),
                _ => None,
            };
            let mut row = Row {
                scenario,
                case,
                metric,
                unit,
                ours,
                rumqttd,
                mosquitto,
                vs_mosquitto: ratio(mosquitto),
                vs_rumqttd: ratio(rumqttd),
                target: String::new(),
                met: None,
            };
            let (target, met) = verdict(results, &row);
            row.target = target;
            row.met = met;
            row
        })
        .collect()
}

/// 1234567.8 → "1,234,568"; small values keep decimals.
pub fn number(value: f64) -> String {
    if value.abs() >= 1000.0 {
        let digits = format!("{:.0}", value.abs());
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if value < 0.0 { format!("-{out}") } else { out }
    } else if value.abs() >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn cell(value: Option<f64>) -> String {
    value.map_or("–".into(), number)
}

fn ratio(value: Option<f64>) -> String {
    value.map_or("–".into(), |r| format!("{r:.2}×"))
}

fn met(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "",
    }
}

const HEADERS: [&str; 10] =
    ["scenario", "case", "metric", "dynsec-broker", "rumqttd", "mosquitto", "ours÷mosq", "ours÷rumqttd", "target", ""];

fn cells(row: &Row) -> [String; 10] {
    [
        row.scenario.to_owned(),
        row.case.clone(),
        format!("{} ({})", row.metric, row.unit),
        cell(row.ours),
        cell(row.rumqttd),
        cell(row.mosquitto),
        ratio(row.vs_mosquitto),
        ratio(row.vs_rumqttd),
        row.target.clone(),
        met(row.met).to_owned(),
    ]
}

/// Aligned plain-text table.
pub fn text_table(rows: &[Row]) -> String {
    let all: Vec<[String; 10]> = std::iter::once(HEADERS.map(str::to_owned)).chain(rows.iter().map(cells)).collect();
    let mut widths = [0usize; 10];
    for r in &all {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for (i, r) in all.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(col, (c, w))| {
                let pad = w - c.chars().count();
                if (3..8).contains(&col) {
                    format!("{}{c}", " ".repeat(pad))
                } else {
                    format!("{c}{}", " ".repeat(pad))
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * 9));
            out.push('\n');
        }
    }
    out
}

/// Markdown table.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut out = format!("| {} |\n", HEADERS.join(" | "));
    out.push_str(&format!("|{}\n", "---|".repeat(HEADERS.len())));
    for row in rows {
        let mut c = cells(row);
        if row.met == Some(false) {
            c[9] = "**NOT met**".into();
        }
        out.push_str(&format!("| {} |\n", c.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_readable() {
        assert_eq!(number(1_234_567.8), "1,234,568");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1.2345), "1.23");
        assert_eq!(number(0.0), "0");
    }

    #[test]
    fn throughput_rows_get_ratios_and_verdicts() {
        let mut results = Results::default();
        for (broker, value) in [(Kind::Ours, 400.0), (Kind::Rumqttd, 420.0), (Kind::Mosquitto, 90.0)] {
            results.add(P1, "1→1 QoS 1 v5", broker, RATE, "msg/s", 0, value);
        }
        let rows = rows(&results);
        assert_eq!(rows.len(), 1);
        assert!((rows[0].vs_mosquitto.unwrap() - 400.0 / 90.0).abs() < 1e-9);
        assert_eq!(rows[0].met, Some(true));
    }
}
