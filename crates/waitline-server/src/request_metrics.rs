//! The HTTP request counts (`waitline_http_requests_total`,
//! `waitline_http_request_duration_seconds`), kept at close to no cost per request: every
//! series is a fixed slot of atomics chosen when the router is built, so a request does no
//! allocation and takes no lock. Per request: one match of its path against the router's
//! templates, one clock read more than the request timeout's own, and three relaxed atomic
//! additions; the cumulative histogram buckets are summed only when scraped.
//!
//! Requests are counted where the listener answers them (`serve`), around the whole router,
//! not by a layer inside it: axum wraps every route in a layer of its own, and clones the
//! boxed route per request for each layer (three allocations per request, most of the cost
//! of the former `from_fn` layer).
//!
//! The clock is `Instant` (the monotonic clock, read through the vDSO), read when the request
//! comes (the reading the request timeout is counted from) and when its answer is ready: the
//! coarse clock's millisecond tick is coarser than the first buckets (0.25 and 0.5 ms).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::http::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::histogram::exponential_buckets;

use crate::metrics::{UNMATCHED_ROUTE, counter, histogram};
use crate::routes::CALL_ACTIONS;

/// The method labels; any other method is counted as `OTHER`.
const METHODS: [&str; 8] = ["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "OTHER"];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PATCH => 2,
        Method::DELETE => 3,
        Method::PUT => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// The statuses the service answers with, each a counter of its own in every series; any
/// other status is counted in [`RequestCounts::rare_statuses`] (a lock, never taken for these).
const STATUSES: [u16; 18] =
    [200, 201, 204, 304, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 431, 500, 503];

fn status_index(status: u16) -> Option<usize> {
    STATUSES.iter().position(|&s| s == status)
}

/// The first bucket's upper bound in nanoseconds (0.25 ms); each next one doubles.
const FIRST_BOUND_NANOS: u64 = 250_000;

/// Upper bounds of the duration buckets, in seconds, above which is `+Inf`.
const BUCKETS: usize = 15;

fn bounds_seconds() -> Vec<f64> {
    exponential_buckets(FIRST_BOUND_NANOS as f64 / 1e9, 2.0, BUCKETS as u16).collect()
}

/// The bucket of a duration: the first whose bound it does not exceed (the bounds are
/// inclusive, as Prometheus's `le`), [`BUCKETS`] for `+Inf`.
fn bucket_index(nanos: u64) -> usize {
    if nanos <= FIRST_BOUND_NANOS {
        return 0;
    }
    // For nanos in (B·2^(k-1), B·2^k], (nanos - 1) / B is in [2^(k-1), 2^k): its bit length is k.
    let k = u64::BITS - ((nanos - 1) / FIRST_BOUND_NANOS).leading_zeros();
    (k as usize).min(BUCKETS)
}

/// One (route, method): a counter per known status and the duration histogram. Laid out
/// so that a 200 answer's counter and the sum share a cache line: a request dirties two lines.
#[derive(Debug, Default)]
#[repr(C, align(64))]
struct Series {
    sum_nanos: AtomicU64,
    statuses: [AtomicU64; STATUSES.len()],
    /// Non-cumulative; the last is `+Inf`.
    buckets: [AtomicU64; BUCKETS + 1],
}

/// How a matched route's template becomes a route label.
#[derive(Clone, Copy, Debug)]
struct RouteEntry {
    /// Its label's index.
    id: usize,
    /// `…/actions/{action}`: a known action has its own label at `id + 1 + `its index in
    /// [`CALL_ACTIONS`]; an unknown one keeps the template's.
    has_actions: bool,
}

/// Every request's series, one slot per route label and method, fixed when the router is
/// built (from the templates it was built with).
#[derive(Debug)]
pub(crate) struct RequestCounts {
    /// By label index: [`UNMATCHED_ROUTE`] first, then each template (a call-action template
    /// followed by one label per known action).
    labels: Vec<String>,
    /// The templates, matched as axum's router matches them (it uses the same crate).
    routes: matchit::Router<RouteEntry>,
    /// `labels.len() * METHODS.len()`, a label's methods side by side.
    series: Box<[Series]>,
    /// Requests answered with a status outside [`STATUSES`], by (series, status).
    rare_statuses: parking_lot::Mutex<BTreeMap<(usize, u16), u64>>,
}

impl RequestCounts {
    /// Slots for `templates`, the route templates of the router the counts are for.
    pub(crate) fn new<'a>(templates: impl IntoIterator<Item = &'a str>) -> Self {
        let mut labels = vec![UNMATCHED_ROUTE.to_owned()];
        let mut routes = matchit::Router::new();
        for template in templates {
            let head = template.strip_suffix("{action}");
            let entry = RouteEntry { id: labels.len(), has_actions: head.is_some() };
            // A template routed twice keeps its first label (axum refuses it anyway).
            if routes.insert(template, entry).is_err() {
                continue;
            }
            labels.push(template.to_owned());
            if let Some(head) = head {
                labels.extend(CALL_ACTIONS.iter().map(|action| format!("{head}{action}")));
            }
        }
        let series = (0..labels.len() * METHODS.len()).map(|_| Series::default()).collect();
        Self { labels, routes, series, rare_statuses: parking_lot::Mutex::default() }
    }

    /// The series of a request: its method and the template its path matches (a known
    /// action named), [`UNMATCHED_ROUTE`] when none does.
    pub(crate) fn series_of(&self, method: &Method, path: &str) -> usize {
        let route = self.routes.at(path).map_or(0, |matched| {
            let entry = matched.value;
            let action = matched.params.get("action").filter(|_| entry.has_actions);
            action
                .and_then(|a| CALL_ACTIONS.iter().position(|&known| known == a))
                .map_or(entry.id, |i| entry.id + 1 + i)
        });
        route * METHODS.len() + method_index(method)
    }

    /// Counts an answer of `series` with `status`, `took` after its request came.
    pub(crate) fn record(&self, series: usize, status: u16, took: Duration) {
        let Some(s) = self.series.get(series) else { return };
        match status_index(status) {
            Some(i) => {
                s.statuses[i].fetch_add(1, Relaxed);
            }
            None => *self.rare_statuses.lock().entry((series, status)).or_default() += 1,
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        s.buckets[bucket_index(nanos)].fetch_add(1, Relaxed);
        s.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// The `method` and `route` labels of a series.
    fn labels_of(&self, series: usize) -> [(&'static str, &str); 2] {
        [("method", METHODS[series % METHODS.len()]), ("route", &self.labels[series / METHODS.len()])]
    }
}

/// The counts as the exposition's two families, read when scraped: only the series that
/// have counted a request, as before any was created.
#[derive(Debug)]
pub(crate) struct RequestCollector(pub(crate) Arc<RequestCounts>);

impl Collector for RequestCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let counts = &self.0;
        let mut e = encoder.encode_descriptor(
            "waitline_http_requests",
            "HTTP requests answered, by route and status",
            None,
            MetricType::Counter,
        )?;
        for (i, s) in counts.series.iter().enumerate() {
            for (&status, n) in STATUSES.iter().zip(&s.statuses) {
                let n = n.load(Relaxed);
                if n > 0 {
                    counter(&mut e.encode_family(&(counts.labels_of(i), [("status", status)]))?, n)?;
                }
            }
        }
        for (&(i, status), &n) in counts.rare_statuses.lock().iter() {
            counter(&mut e.encode_family(&(counts.labels_of(i), [("status", status)]))?, n)?;
        }
        let mut e = encoder.encode_descriptor(
            "waitline_http_request_duration_seconds",
            "Time from a request's headers to its answer's, by route",
            None,
            MetricType::Histogram,
        )?;
        let bounds = bounds_seconds();
        for (i, s) in counts.series.iter().enumerate() {
            let buckets = s.buckets.each_ref().map(|b| b.load(Relaxed));
            if buckets.iter().any(|&n| n > 0) {
                let sum = s.sum_nanos.load(Relaxed) as f64 / 1e9;
                histogram(&mut e.encode_family(&counts.labels_of(i))?, &bounds, &buckets, sum)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_the_bounds_as_prometheus_reads_them() {
        let bounds = bounds_seconds();
        assert_eq!(bounds.len(), BUCKETS);
        let expected = |nanos: u64| {
            let secs = nanos as f64 / 1e9;
            bounds.iter().position(|&b| secs <= b).unwrap_or(BUCKETS)
        };
        for k in 0..BUCKETS as u32 + 2 {
            let bound = FIRST_BOUND_NANOS << k;
            for nanos in [bound - 1, bound, bound + 1, bound / 2 + bound / 4] {
                assert_eq!(bucket_index(nanos), expected(nanos), "{nanos} ns");
            }
        }
        assert_eq!([bucket_index(0), bucket_index(u64::MAX)], [0, BUCKETS]);
    }

    /// The exposition of `counts` alone.
    fn scrape(counts: &Arc<RequestCounts>) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(RequestCollector(counts.clone())));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn requests_are_counted_by_route_method_and_status() {
        let actions = "/calls/{id}/actions/{action}";
        let counts = Arc::new(RequestCounts::new([actions, "/teapot", actions]));
        let answer = |method: Method, path: &str, status: u16| {
            counts.record(counts.series_of(&method, path), status, Duration::from_micros(300));
        };
        for _ in 0..3 {
            answer(Method::POST, "/calls/c1/actions/enqueue", 200);
        }
        answer(Method::POST, "/calls/c1/actions/bridge", 200);
        answer(Method::POST, "/calls/c1/actions/dance", 200);
        answer(Method::GET, "/calls/c1/actions/enqueue", 405);
        answer(Method::GET, "/teapot", 418);
        answer(Method::TRACE, "/no/such/path", 404);
        answer(Method::GET, "/teapot/", 404);
        let text = scrape(&counts);
        let counted = |series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
                .to_owned()
        };
        let requests = |method: &str, route: &str, status: u16| {
            counted(&format!(
                "waitline_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
            ))
        };
        assert_eq!(requests("POST", "/calls/{id}/actions/enqueue", 200), "3");
        assert_eq!(requests("POST", "/calls/{id}/actions/bridge", 200), "1");
        assert_eq!(requests("POST", actions, 200), "1", "an unknown action keeps the template");
        assert_eq!(requests("GET", "/calls/{id}/actions/enqueue", 405), "1");
        assert_eq!(requests("GET", "/teapot", 418), "1", "a status outside the table");
        assert_eq!(requests("OTHER", UNMATCHED_ROUTE, 404), "1");
        assert_eq!(requests("GET", UNMATCHED_ROUTE, 404), "1", "matched exactly, as axum does");
        let enqueue = "{method=\"POST\",route=\"/calls/{id}/actions/enqueue\"";
        assert_eq!(counted(&format!("waitline_http_request_duration_seconds_count{enqueue}}}")), "3");
        assert_eq!(counted(&format!("waitline_http_request_duration_seconds_sum{enqueue}}}")), "0.0009");
        assert_eq!(
            counted(&format!("waitline_http_request_duration_seconds_bucket{enqueue},le=\"0.00025\"}}")),
            "0"
        );
        assert_eq!(
            counted(&format!("waitline_http_request_duration_seconds_bucket{enqueue},le=\"0.0005\"}}")),
            "3"
        );
        assert_eq!(
            counted(&format!("waitline_http_request_duration_seconds_bucket{enqueue},le=\"+Inf\"}}")),
            "3"
        );
        assert!(!text.contains("route=\"/teapot\",status=\"200\""), "only what was counted: {text}");
        assert_eq!(text.matches("waitline_http_request_duration_seconds_count").count(), 7, "{text}");
    }
}
