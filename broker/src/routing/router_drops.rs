//! Messages the router dropped for a subscriber: counted and logged.
//!
//! When a subscriber falls further behind than its filter's log holds, rumqttd drops the oldest
//! segment and moves the subscriber's cursor to the new head (docs/rumqttd.md §8) — the overload
//! policy of `backpressure` for a subscriber that cannot keep up. rumqttd has no API that tells,
//! but it logs the jump (`Read cursor start jumped`, target `rumqttd::router::routing`, with the
//! cursors before and after as `(segment, absolute offset)`); the offsets differ by the number of
//! messages skipped. [`layer`] is a `tracing` layer that sees only that warning, whatever the
//! broker's log settings, and adds the count to `$SYS/broker/publish/messages/dropped`
//! (mosquitto's name for messages dropped for slow clients) and to a per-filter tally that
//! [`report_periodically`] logs, at most once per [`REPORT_EVERY`] (a subscriber that cannot keep
//! up loses messages continuously: one line per skip would flood the log).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::Context;

use crate::metrics::{METRICS, Metrics};

/// Where rumqttd logs a subscriber's cursor jump.
const ROUTER_TARGET: &str = "rumqttd::router::routing";
/// How often dropped messages are logged, at most.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);
/// Filters named in one log line, at most.
const FILTERS_SHOWN: usize = 5;

/// Messages dropped per filter (router spelling) since the last report.
static PENDING: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

/// The layer counting the router's drops (handed to `logging::init` at start, `cli`).
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // Events only: rumqttd opens an ERROR-level span per PUBLISH, which a target filter would
    // enable, and the registry would then build one per message (a tenth of a 1→1 QoS 1 flow).
    RouterDrops.with_filter(filter_fn(|meta| {
        meta.is_event() && *meta.level() == Level::WARN && meta.target() == ROUTER_TARGET
    }))
}

struct RouterDrops;

impl<S: Subscriber> Layer<S> for RouterDrops {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut jump = CursorJump::default();
        event.record(&mut jump);
        if let Some((filter, skipped)) = jump.skipped() {
            record(filter, skipped);
        }
    }
}

/// Counts `dropped` messages a full subscriber queue refused (`routing::hub`).
pub fn record_queue_drops(dropped: u64) {
    record("full subscriber queues (max_queued_messages, max_queued_bytes)".to_owned(), dropped);
}

/// Counts `skipped` messages dropped on `filter`.
fn record(filter: String, skipped: u64) {
    Metrics::add(&METRICS.publish_dropped, skipped);
    let mut pending = PENDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    *pending.get_or_insert_with(HashMap::new).entry(filter).or_default() += skipped;
}

/// The fields of rumqttd's cursor-jump warning.
#[derive(Default)]
struct CursorJump {
    before: Option<u64>,
    after: Option<u64>,
    /// "Read cursor start jumped from .. to .. on FILTER".
    text: Option<String>,
}

impl CursorJump {
    fn skipped(self) -> Option<(String, u64)> {
        let text = self.text?;
        let filter = text.split_once(" on ")?.1.to_owned();
        let skipped = self.after?.checked_sub(self.before?)?;
        (skipped > 0).then_some((filter, skipped))
    }
}

/// The absolute offset of a `(segment, offset)` cursor as rumqttd's `Debug` shows it.
fn absolute_offset(cursor: &str) -> Option<u64> {
    cursor.trim().strip_prefix('(')?.strip_suffix(')')?.split(',').nth(1)?.trim().parse().ok()
}

impl Visit for CursorJump {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "request_cursor" => self.before = absolute_offset(&format!("{value:?}")),
            "start_cursor" => self.after = absolute_offset(&format!("{value:?}")),
            "error" => self.text = Some(format!("{value:?}").trim_matches('"').to_owned()),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "error" {
            self.text = Some(value.to_owned());
        }
    }
}

/// Takes the drops counted since the last call: (total, the filters with most drops first).
pub fn take_pending() -> (u64, Vec<(String, u64)>) {
    let taken = PENDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take().unwrap_or_default();
    let mut filters: Vec<(String, u64)> = taken.into_iter().collect();
    filters.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    (filters.iter().map(|(_, n)| n).sum(), filters)
}

/// Logs what was dropped, once per [`REPORT_EVERY`] at most (spawned by the broker).
pub async fn report_periodically() {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (total, filters) = take_pending();
        if total == 0 {
            continue;
        }
        let shown: Vec<String> = filters
            .iter()
            .take(FILTERS_SHOWN)
            .map(|(filter, n)| format!("{} ({n})", crate::logging::client_text(filter)))
            .collect();
        let more = filters.len().saturating_sub(FILTERS_SHOWN);
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        tracing::warn!(
            "{total} messages dropped for subscribers that could not keep up, on {}{more}",
            shown.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn cursors_are_read_as_rumqttd_prints_them() {
        assert_eq!(absolute_offset("(3, 12345)"), Some(12345));
        assert_eq!(absolute_offset("(0,7)"), Some(7));
        assert_eq!(absolute_offset("12345"), None);
    }

    #[test]
    fn a_cursor_jump_is_counted_per_filter_and_in_sys() {
        let before = Metrics::get(&METRICS.publish_dropped);
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            // What rumqttd 0.20 logs (router/routing.rs, forward_device_data).
            let request_cursor = (1u64, 100u64);
            let start_cursor = (2u64, 350u64);
            let error = format!("Read cursor start jumped from {request_cursor:?} to {start_cursor:?} on unit/drops");
            tracing::warn!(target: "rumqttd::router::routing", request_cursor = ?request_cursor, start_cursor = ?start_cursor, error);
            // Other warnings and targets are not counted.
            tracing::warn!(target: "rumqttd::router::routing", "something else");
            tracing::warn!(target: "elsewhere", request_cursor = ?(0u64, 0u64), start_cursor = ?(0u64, 9u64), error);
        });
        assert!(Metrics::get(&METRICS.publish_dropped) >= before + 250);
        let (_, filters) = take_pending();
        assert!(filters.contains(&("unit/drops".to_owned(), 250)), "{filters:?}");
    }
}
