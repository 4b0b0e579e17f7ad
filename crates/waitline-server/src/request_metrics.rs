//! The HTTP request counts (`waitline_http_requests_total`,
//! `waitline_http_request_duration_seconds`), kept at close to no cost per request: every
//! series is a fixed slot of atomics chosen when the router is built, so a request does no
//! allocation and takes no lock. Per request: one hash lookup of the matched route's
//! template (axum hands it over as a string), two clock reads and three relaxed atomic
//! additions. The cumulative histogram buckets are summed only when scraped.
//!
//! The clock is `Instant` (the monotonic clock, read through the vDSO): the coarse clock's
//! millisecond tick is coarser than the first buckets (0.25 and 0.5 ms).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
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

/// One (route, method): a counter per known status and the duration histogram.
#[derive(Debug, Default)]
struct Series {
    statuses: [AtomicU64; STATUSES.len()],
    /// Non-cumulative; the last is `+Inf`.
    buckets: [AtomicU64; BUCKETS + 1],
    sum_nanos: AtomicU64,
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
    by_template: HashMap<String, RouteEntry, foldhash::fast::RandomState>,
    /// `labels.len() * METHODS.len()`, a label's methods side by side.
    series: Box<[Series]>,
    /// Requests answered with a status outside [`STATUSES`], by (series, status).
    rare_statuses: parking_lot::Mutex<BTreeMap<(usize, u16), u64>>,
}

impl RequestCounts {
    /// Slots for `templates`, the route templates of the router the counts are for.
    pub(crate) fn new<'a>(templates: impl IntoIterator<Item = &'a str>) -> Self {
        let mut labels = vec![UNMATCHED_ROUTE.to_owned()];
        let mut by_template = HashMap::default();
        for template in templates {
            if by_template.contains_key(template) {
                continue;
            }
            let id = labels.len();
            labels.push(template.to_owned());
            let head = template.strip_suffix("{action}");
            if let Some(head) = head {
                labels.extend(CALL_ACTIONS.iter().map(|action| format!("{head}{action}")));
            }
            by_template.insert(template.to_owned(), RouteEntry { id, has_actions: head.is_some() });
        }
        let series = (0..labels.len() * METHODS.len()).map(|_| Series::default()).collect();
        Self { labels, by_template, series, rare_statuses: parking_lot::Mutex::default() }
    }

    /// The series of a request: its method and matched route's template (a known action
    /// named), [`UNMATCHED_ROUTE`] when no route matched.
    fn series_of(&self, request: &Request) -> usize {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .and_then(|matched| self.by_template.get(matched.as_str()))
            .map_or(0, |entry| {
                if !entry.has_actions {
                    return entry.id;
                }
                let action = request.uri().path().rsplit('/').next().unwrap_or_default();
                CALL_ACTIONS.iter().position(|&a| a == action).map_or(entry.id, |i| entry.id + 1 + i)
            });
        route * METHODS.len() + method_index(request.method())
    }

    fn record(&self, series: usize, status: u16, took: Duration) {
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

/// The layer that counts every request of a router (see [`RequestCounts`]).
#[derive(Clone, Debug)]
pub(crate) struct RecordRequests(pub(crate) Arc<RequestCounts>);

impl<S> tower::Layer<S> for RecordRequests {
    type Service = Recorded<S>;

    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded { inner, counts: self.0.clone() }
    }
}

/// A route's service, its answers counted.
#[derive(Clone, Debug)]
pub(crate) struct Recorded<S> {
    inner: S,
    counts: Arc<RequestCounts>,
}

impl<S> tower::Service<Request> for Recorded<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Recording<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let series = self.counts.series_of(&request);
        Recording { inner: self.inner.call(request), counts: self.counts.clone(), series, started }
    }
}

pin_project_lite::pin_project! {
    /// A request being answered; counted when its answer is ready (not when it is dropped
    /// unanswered, as by the request timeout).
    #[derive(Debug)]
    pub(crate) struct Recording<F> {
        #[pin]
        inner: F,
        counts: Arc<RequestCounts>,
        series: usize,
        started: Instant,
    }
}

impl<F, E> Future for Recording<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &answer {
            this.counts.record(*this.series, response.status().as_u16(), this.started.elapsed());
        }
        Poll::Ready(answer)
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

    async fn send(router: &axum::Router, method: Method, path: &str) {
        let request = Request::builder().method(method).uri(path).body(axum::body::Body::empty()).unwrap();
        tower::Service::call(&mut router.clone(), request).await.unwrap();
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_method_and_status() {
        use axum::http::StatusCode;
        use axum::routing::{get, post};
        let actions = "/calls/{id}/actions/{action}";
        let counts = Arc::new(RequestCounts::new([actions, "/teapot", actions]));
        let router = axum::Router::new()
            .route(actions, post(|| async { StatusCode::OK }))
            .route("/teapot", get(|| async { StatusCode::IM_A_TEAPOT }))
            .fallback(|| async { StatusCode::NOT_FOUND })
            .layer(RecordRequests(counts.clone()));
        for _ in 0..3 {
            send(&router, Method::POST, "/calls/c1/actions/enqueue").await;
        }
        send(&router, Method::POST, "/calls/c1/actions/bridge").await;
        send(&router, Method::POST, "/calls/c1/actions/dance").await;
        send(&router, Method::GET, "/calls/c1/actions/enqueue").await;
        send(&router, Method::GET, "/teapot").await;
        send(&router, Method::TRACE, "/no/such/path").await;
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
        assert_eq!(requests("GET", "/calls/{id}/actions/enqueue", 405), "1", "method not allowed: its route");
        assert_eq!(requests("GET", "/teapot", 418), "1", "a status outside the table");
        assert_eq!(requests("OTHER", UNMATCHED_ROUTE, 404), "1");
        let enqueue = "{method=\"POST\",route=\"/calls/{id}/actions/enqueue\"";
        assert_eq!(counted(&format!("waitline_http_request_duration_seconds_count{enqueue}}}")), "3");
        assert_eq!(
            counted(&format!("waitline_http_request_duration_seconds_bucket{enqueue},le=\"+Inf\"}}")),
            "3"
        );
        assert!(
            !text.contains("status=\"0\"") && !text.contains("route=\"/teapot\",status=\"200\""),
            "{text}"
        );
        assert_eq!(text.matches("waitline_http_request_duration_seconds_count").count(), 6, "{text}");
    }
}
