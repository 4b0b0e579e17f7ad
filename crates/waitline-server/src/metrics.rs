//! `GET /metrics` in the Prometheus text format (version 0.0.4), through the
//! `prometheus-client` crate: its scrape-time collectors let the queues' figures be read from
//! the engine when scraped (nothing is counted twice, and the command path pays nothing),
//! and it encodes histograms from bucket counts the engine already keeps.
//!
//! What is kept by the service is only what the engine does not count: the HTTP requests
//! (`request_metrics`, a layer around every route) and the webhook attempts' durations. The names, labels and units are
//! listed in docs/behaviour.md §5 ("Metrics").
//!
//! Two views: the operator's (every tenant and the service's own series, on
//! `--metrics-listen`) and a tenant's (its own queues and calls only, on the main listener
//! with its API key).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use waitline::{PageRequest, QueueInfo, Tenant, WAIT_BUCKETS_SECS};

use crate::AppState;
use crate::auth::Auth;
use crate::durable::Durability;
use crate::error::ApiError;
use crate::request_metrics::RequestCollector;
use crate::webhook::WebhookStats;

/// The label of the queues past the cap, summed (and of a queue really named so).
pub const OTHER_QUEUES: &str = "_other";

/// The route label of a request no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Webhook attempts: from 5 ms to about 10 s, doubling.
pub(crate) fn attempt_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

/// Who reads the figures.
#[derive(Debug)]
enum View {
    /// Every tenant, and the service's own series.
    Operator,
    /// One tenant's queues and calls only.
    Tenant(Tenant),
}

/// The tenant's view's route on the main listener (a node of several forwards it to the
/// tenant's owner, like the tenant's API).
pub(crate) const TENANT_ROUTE: &str = "/metrics";

/// `GET /metrics` on the main listener: the key's tenant only.
pub(crate) async fn tenant_metrics(State(state): State<AppState>, Auth(tenant): Auth) -> Response {
    scrape(&state, View::Tenant(tenant)).await
}

/// `GET /metrics` on the metrics listener: everything, without a key.
pub(crate) async fn operator_metrics(State(state): State<AppState>) -> Response {
    scrape(&state, View::Operator).await
}

async fn scrape(state: &AppState, view: View) -> Response {
    let state = state.clone();
    // Reading the queues takes each tenant's lock: not on a runtime thread.
    let text = tokio::task::spawn_blocking(move || render(&state, view)).await;
    match text {
        Ok(Ok(text)) => ([(CONTENT_TYPE, prometheus_client::encoding::prometheus_text::CONTENT_TYPE)], text)
            .into_response(),
        Ok(Err(e)) => {
            tracing::error!("the metrics could not be encoded: {e}");
            ApiError::MetricsUnavailable.into_response()
        }
        Err(e) => {
            tracing::error!("reading the metrics failed: {e}");
            ApiError::MetricsUnavailable.into_response()
        }
    }
}

fn render(state: &AppState, view: View) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    let cap = state.metrics_max_queues();
    let tenants = match view {
        View::Tenant(tenant) => vec![tenant],
        View::Operator => {
            if let Some(counts) = state.request_counts() {
                registry.register_collector(Box::new(RequestCollector(counts)));
            }
            registry.register_collector(Box::new(ServiceCollector {
                webhooks: state.webhooks().stats.clone(),
                durability: state.durability().clone(),
                service_level_secs: state.engine().service_level_threshold().as_secs(),
            }));
            // A node of several reports the tenants it serves (another node reports the
            // others; reading a tenant being loaded could fire its timers mid-replay).
            let mut tenants = state.engine().tenants();
            tenants.retain(|t| state.durability().serves(t.name()));
            tenants
        }
    };
    registry.register_collector(Box::new(TenantCollector { tenants, cap }));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

/// The service's figures read at scrape time: webhook outcomes, the journal's commits.
#[derive(Debug)]
struct ServiceCollector {
    webhooks: std::sync::Arc<WebhookStats>,
    durability: Durability,
    service_level_secs: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

impl Collector for ServiceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &self.webhooks;
        let mut e = encoder.encode_descriptor(
            "waitline_webhook_deliveries",
            "Webhook events finally delivered or failed, and sends the destination policy refused",
            None,
            MetricType::Counter,
        )?;
        for (outcome, value) in [
            ("delivered", stats.delivered.load(Relaxed)),
            ("failed", stats.failed.load(Relaxed)),
            ("refused", stats.refused.load(Relaxed)),
        ] {
            counter(&mut e.encode_family(&OutcomeLabel { outcome })?, value)?;
        }
        let mut e = encoder.encode_descriptor(
            "waitline_webhook_pending",
            "Webhook events waiting or being delivered",
            None,
            MetricType::Gauge,
        )?;
        e.encode_gauge(&stats.pending.load(Relaxed))?;
        let e = encoder.encode_descriptor(
            "waitline_webhook_attempt_duration_seconds",
            "Time of each webhook attempt (one POST), any outcome",
            None,
            MetricType::Histogram,
        )?;
        prometheus_client::encoding::EncodeMetric::encode(&stats.attempt_seconds, e)?;
        let mut e = encoder.encode_descriptor(
            "waitline_service_level_threshold_seconds",
            "A caller bridged after waiting at most this long counts as answered in time",
            None,
            MetricType::Gauge,
        )?;
        e.encode_gauge(&self.service_level_secs)?;
        if let Some(times) = self.durability.commit_times() {
            let mut e = encoder.encode_descriptor(
                "waitline_journal_sync_seconds",
                "Time of each journal commit, its batch written and synced",
                None,
                MetricType::Histogram,
            )?;
            let bounds = waitline_store::COMMIT_BUCKETS_MICROS.map(|b| b as f64 / 1e6);
            histogram(&mut e, &bounds, &times.counts, times.sum_micros as f64 / 1e6)?;
        }
        Ok(())
    }
}

pub(crate) fn counter(e: &mut MetricEncoder<'_>, value: u64) -> Result<(), std::fmt::Error> {
    e.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// A histogram from non-cumulative `counts` over `bounds` (seconds), the last count above
/// every bound, and the sum of the observations in seconds.
pub(crate) fn histogram(
    e: &mut MetricEncoder<'_>,
    bounds: &[f64],
    counts: &[u64],
    sum_secs: f64,
) -> Result<(), std::fmt::Error> {
    let buckets: Vec<(f64, u64)> =
        bounds.iter().copied().chain([f64::INFINITY]).zip(counts.iter().copied()).collect();
    let count = counts.iter().sum();
    e.encode_histogram::<NoLabelSet>(sum_secs, count, &buckets, None)
}

/// Each tenant's queues and calls, read from the engine at scrape time.
#[derive(Debug)]
struct TenantCollector {
    tenants: Vec<Tenant>,
    /// Queues per tenant with a label of their own; the rest are summed under
    /// [`OTHER_QUEUES`].
    cap: usize,
}

fn tenant_label(tenant: &str) -> [(&'static str, &str); 1] {
    [("tenant", tenant)]
}

fn queue_labels<'a>(tenant: &'a str, queue: &'a str) -> [(&'static str, &'a str); 2] {
    [("tenant", tenant), ("queue", queue)]
}

/// One queue's series, or the sum of the queues past the cap.
#[derive(Debug, Default)]
struct QueueSeries {
    waiting: u64,
    longest_wait_secs: u64,
    estimated_wait_secs: u64,
    enqueued: u64,
    dequeued: [u64; 4],
    within_service_level: u64,
    today: waitline::Outcomes,
    wait_counts: [u64; WAIT_BUCKETS_SECS.len() + 1],
    wait_sum_micros: u64,
}

const REASONS: [&str; 4] = ["bridged", "hangup", "leave", "timeout"];

impl QueueSeries {
    /// Adds `q`: counts add up, the longest and estimated waits take the largest.
    fn add(&mut self, q: &QueueInfo) {
        self.waiting += q.current_size as u64;
        self.longest_wait_secs = self.longest_wait_secs.max(q.longest_wait_time_secs);
        self.estimated_wait_secs = self.estimated_wait_secs.max(q.estimated_wait_time_secs);
        self.enqueued += q.total_enqueued;
        let d = &q.total_dequeued;
        for (sum, n) in self.dequeued.iter_mut().zip([d.bridged, d.hangup, d.leave, d.timeout]) {
            *sum += n;
        }
        self.within_service_level += q.bridged_within_service_level;
        let (t, o) = (&mut self.today, &q.today.outcomes);
        t.enqueued += o.enqueued;
        t.bridged += o.bridged;
        t.bridged_within_service_level += o.bridged_within_service_level;
        t.hangup += o.hangup;
        t.leave += o.leave;
        t.timeout += o.timeout;
        for (sum, n) in self.wait_counts.iter_mut().zip(q.wait_histogram.counts) {
            *sum += n;
        }
        self.wait_sum_micros = self.wait_sum_micros.saturating_add(q.wait_histogram.sum_micros);
    }
}

/// A tenant's figures as read.
struct TenantFigures {
    name: String,
    live_calls: usize,
    queues: usize,
    /// By queue label, in name order, the summed rest last.
    series: Vec<(String, QueueSeries)>,
}

impl TenantCollector {
    fn read(&self) -> Vec<TenantFigures> {
        self.tenants.iter().map(|t| read_tenant(t, self.cap)).collect()
    }
}

/// Pages through the tenant's queues (in name order): the first `cap` keep their names.
fn read_tenant(tenant: &Tenant, cap: usize) -> TenantFigures {
    let size = u32::try_from(waitline::PAGE_SIZE.max).unwrap_or(1);
    let (mut series, mut other, mut queues) = (Vec::new(), None::<QueueSeries>, 0);
    for number in 1_u64.. {
        let Ok(page) = tenant.queues(PageRequest::new(number, size)) else { break };
        queues = page.total_results;
        for q in &page.data {
            if series.len() < cap && q.name != OTHER_QUEUES {
                let mut one = QueueSeries::default();
                one.add(q);
                series.push((q.name.clone(), one));
            } else {
                other.get_or_insert_with(QueueSeries::default).add(q);
            }
        }
        if usize::try_from(number).map_or(true, |n| n >= page.total_pages) {
            break;
        }
    }
    series.extend(other.map(|o| (OTHER_QUEUES.to_owned(), o)));
    TenantFigures { name: tenant.name().to_owned(), live_calls: tenant.live_calls(), queues, series }
}

impl Collector for TenantCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let figures = self.read();
        let mut e = encoder.encode_descriptor(
            "waitline_tenant_live_calls",
            "Calls not ended",
            None,
            MetricType::Gauge,
        )?;
        for t in &figures {
            e.encode_family(&tenant_label(&t.name))?.encode_gauge(&(t.live_calls as u64))?;
        }
        let mut e = encoder.encode_descriptor(
            "waitline_tenant_queues",
            "Queues that exist",
            None,
            MetricType::Gauge,
        )?;
        for t in &figures {
            e.encode_family(&tenant_label(&t.name))?.encode_gauge(&(t.queues as u64))?;
        }
        let each = |encoder: &mut DescriptorEncoder<'_>,
                    name: &str,
                    help: &str,
                    kind: MetricType,
                    value: &dyn Fn(&QueueSeries) -> Option<Value>|
         -> Result<(), std::fmt::Error> {
            let mut e = encoder.encode_descriptor(name, help, None, kind)?;
            for t in &figures {
                for (queue, s) in &t.series {
                    let labels = queue_labels(&t.name, queue);
                    let mut e = e.encode_family(&labels)?;
                    match value(s) {
                        Some(Value::Gauge(v)) => e.encode_gauge(&v)?,
                        Some(Value::Ratio(v)) => e.encode_gauge(&v)?,
                        Some(Value::Counter(v)) => counter(&mut e, v)?,
                        None => {}
                    }
                }
            }
            Ok(())
        };
        use MetricType::{Counter as C, Gauge as G};
        each(&mut encoder, "waitline_queue_calls_waiting", "Calls in the queue", G, &|s| {
            Some(Value::Gauge(s.waiting))
        })?;
        each(
            &mut encoder,
            "waitline_queue_longest_wait_seconds",
            "Wait so far of the longest-waiting caller (whole seconds)",
            G,
            &|s| Some(Value::Gauge(s.longest_wait_secs)),
        )?;
        each(
            &mut encoder,
            "waitline_queue_estimated_wait_seconds",
            "Estimated wait of a caller joining now (whole seconds)",
            G,
            &|s| Some(Value::Gauge(s.estimated_wait_secs)),
        )?;
        each(
            &mut encoder,
            "waitline_queue_enqueued",
            "Callers who joined, since the queue was created",
            C,
            &|s| Some(Value::Counter(s.enqueued)),
        )?;
        each(
            &mut encoder,
            "waitline_queue_bridged_within_service_level",
            "Callers bridged after waiting no longer than the service-level threshold",
            C,
            &|s| Some(Value::Counter(s.within_service_level)),
        )?;
        each(
            &mut encoder,
            "waitline_queue_service_level_ratio",
            "Today's (UTC) share of callers bridged within the threshold, of those bridged, hung up or timed out (absent before any)",
            G,
            &|s| s.today.service_level().map(Value::Ratio),
        )?;
        let mut e = encoder.encode_descriptor(
            "waitline_queue_dequeued",
            "Callers who left, by reason, since the queue was created",
            None,
            C,
        )?;
        for t in &figures {
            for (queue, s) in &t.series {
                for (reason, n) in REASONS.into_iter().zip(s.dequeued) {
                    let labels = [("tenant", t.name.as_str()), ("queue", queue), ("reason", reason)];
                    counter(&mut e.encode_family(&labels)?, n)?;
                }
            }
        }
        let mut e = encoder.encode_descriptor(
            "waitline_queue_wait_seconds",
            "Wait of each caller who left the queue (any reason), since it was created",
            None,
            MetricType::Histogram,
        )?;
        let bounds = WAIT_BUCKETS_SECS.map(|b| b as f64);
        for t in &figures {
            for (queue, s) in &t.series {
                let labels = queue_labels(&t.name, queue);
                let mut e = e.encode_family(&labels)?;
                histogram(&mut e, &bounds, &s.wait_counts, s.wait_sum_micros as f64 / 1e6)?;
            }
        }
        Ok(())
    }
}

enum Value {
    Gauge(u64),
    Ratio(f64),
    Counter(u64),
}
