//! Every figure a run produces, one sample per (scenario, case, broker, metric, round), and the
//! medians the report is built from; plus the provisioning curves and free-text notes (skipped
//! brokers, budgets that ran out).

use std::collections::BTreeMap;

use crate::brokers::Kind;

#[derive(Debug, Clone)]
pub struct Sample {
    pub scenario: &'static str,
    pub case: String,
    pub broker: Kind,
    pub metric: &'static str,
    pub unit: &'static str,
    pub round: usize,
    pub value: f64,
}

/// A series of (x, y) points for a line chart.
#[derive(Debug, Clone)]
pub struct Curve {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Default)]
pub struct Results {
    pub samples: Vec<Sample>,
    pub curves: Vec<Curve>,
    pub notes: Vec<String>,
}

pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let n = sorted.len();
    Some(if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 })
}

impl Results {
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        scenario: &'static str,
        case: &str,
        broker: Kind,
        metric: &'static str,
        unit: &'static str,
        round: usize,
        value: f64,
    ) {
        self.samples.push(Sample { scenario, case: case.to_owned(), broker, metric, unit, round, value });
    }

    pub fn values(&self, scenario: &str, case: &str, broker: Kind, metric: &str) -> Vec<f64> {
        self.samples
            .iter()
            .filter(|s| s.scenario == scenario && s.case == case && s.broker == broker && s.metric == metric)
            .map(|s| s.value)
            .collect()
    }

    pub fn median(&self, scenario: &str, case: &str, broker: Kind, metric: &str) -> Option<f64> {
        median(&self.values(scenario, case, broker, metric))
    }

    /// Sum over rounds (e.g. lost messages).
    pub fn total(&self, scenario: &str, case: &str, broker: Kind, metric: &str) -> Option<f64> {
        let values = self.values(scenario, case, broker, metric);
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// (scenario, case, metric, unit) in first-seen order.
    pub fn rows(&self) -> Vec<(&'static str, String, &'static str, &'static str)> {
        let mut seen = BTreeMap::new();
        for (i, s) in self.samples.iter().enumerate() {
            seen.entry((s.scenario, s.case.clone(), s.metric)).or_insert((i, s.unit));
        }
        let mut rows: Vec<_> = seen.into_iter().map(|((sc, case, m), (i, unit))| (i, sc, case, m, unit)).collect();
        rows.sort_by_key(|r| r.0);
        rows.into_iter().map(|(_, sc, case, m, unit)| (sc, case, m, unit)).collect()
    }

    /// Every sample as CSV.
    pub fn csv(&self) -> String {
        let mut out = String::from("scenario,case,broker,metric,unit,round,value\n");
        for s in &self.samples {
            out.push_str(&format!(
                "{},\"{}\",{},{},{},{},{}\n",
                s.scenario,
                s.case,
                s.broker.label(),
                s.metric,
                s.unit,
                s.round,
                s.value
            ));
        }
        for curve in &self.curves {
            for (x, y) in &curve.points {
                out.push_str(&format!("P3-curve,\"{}\",,batch_ms_at_clients,ms,{x},{y}\n", curve.name));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
