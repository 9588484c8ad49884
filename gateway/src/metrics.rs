//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub route: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

pub(crate) struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: HistogramFamily,
    pub bytes_sent: Counter,
    pub read_errors: Counter,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cairn_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let bytes_sent = Counter::default();
        let read_errors = Counter::default();
        registry.register(
            "requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to the response headers, by route",
            latency.clone(),
        );
        registry.register(
            "body_bytes_sent",
            "Artifact bytes streamed to clients",
            bytes_sent.clone(),
        );
        registry.register(
            "read_errors",
            "File reads that failed (shards unavailable or not verifiable) after headers were sent or before",
            read_errors.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            bytes_sent,
            read_errors,
        }
    }

    pub fn encode(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String cannot fail");
        s
    }
}
