//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cache::ChunkLru;
use crate::source::ArtifactSource;
use crate::usage::Usage;

/// Every label value comes from a closed set, so a client cannot grow the series (and the
/// memory behind them) without bound: the method is one of four names, the route is a route
/// pattern of the router (axum's `MatchedPath`, never the request's path) or `unmatched`, the
/// status a number.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub route: String,
    pub method: MethodLabel,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub route: String,
}

/// The request method as a label: `GET`, `HEAD`, `POST`, or `OTHER` for anything else
/// (including methods a client made up).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum MethodLabel {
    Get,
    Head,
    Post,
    Other,
}

impl MethodLabel {
    pub fn of(m: &axum::http::Method) -> Self {
        match *m {
            axum::http::Method::GET => Self::Get,
            axum::http::Method::HEAD => Self::Head,
            axum::http::Method::POST => Self::Post,
            _ => Self::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Other => "OTHER",
        }
    }
}

impl prometheus_client::encoding::EncodeLabelValue for MethodLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.as_str())
    }
}

/// The outcome of a sign-in: `ok` or one of the closed set of refusal classes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub outcome: &'static str,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

pub(crate) struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: HistogramFamily,
    pub bytes_sent: Counter,
    pub read_errors: Counter,
    /// End of the served certificate's validity (Unix seconds; 0 without TLS).
    pub tls_not_after: Gauge,
    /// Certificate changes that could not be loaded (the previous one stayed in service).
    pub tls_reload_failures: Counter,
    /// Wallet sign-ins by outcome.
    pub sign_ins: Family<OutcomeLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Shard request counts of the artifact source, read at each scrape.
struct SourceCollector(Arc<dyn ArtifactSource>);

impl std::fmt::Debug for SourceCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceCollector")
    }
}

impl Collector for SourceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = self.0.stats() else {
            return Ok(());
        };
        for (name, help, value) in [
            (
                "shard_requests",
                "Requests sent to peers (shards, manifests, holder records)",
                s.requests,
            ),
            (
                "shard_fetch_errors",
                "Peer requests that failed: no connection, timeout, peer skipped, refusal, not held, or bytes that did not match their CID",
                s.failures,
            ),
            (
                "shard_fetch_timeouts",
                "Peer requests that ran out of time (the peer is then skipped for a while)",
                s.timeouts,
            ),
            (
                "shard_bytes_received",
                "Bytes of verified shards and manifests received from peers",
                s.shard_bytes,
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

impl Metrics {
    pub fn new(
        chunks: &ChunkLru,
        streams: Gauge,
        source: Arc<dyn ArtifactSource>,
        usage: &Usage,
        chains: Option<&crate::access::chain::Chains>,
    ) -> Self {
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
        registry.register(
            "chunk_cache_hits",
            "Opened chunks served from the chunk cache",
            chunks.hits.clone(),
        );
        registry.register(
            "chunk_cache_misses",
            "Opened chunks looked for in the chunk cache and fetched from the source",
            chunks.misses.clone(),
        );
        registry.register(
            "streams",
            "Response bodies being streamed now (bounded by streams_max)",
            streams,
        );
        let tls_not_after = Gauge::default();
        let tls_reload_failures = Counter::default();
        registry.register(
            "tls_certificate_not_after_seconds",
            "End of the served TLS certificate's validity, in Unix seconds (0 without TLS)",
            tls_not_after.clone(),
        );
        registry.register(
            "tls_reload_failures",
            "Changed TLS files that could not be loaded (the previous certificate stayed in service)",
            tls_reload_failures.clone(),
        );
        registry.register_collector(Box::new(SourceCollector(source)));
        usage.register(&mut registry);
        let sign_ins = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "sign_ins",
            "Wallet sign-ins (POST /auth/siwe) by outcome: ok, or why they were refused",
            sign_ins.clone(),
        );
        if let Some(c) = chains {
            c.register(&mut registry);
        }
        Self {
            registry,
            requests,
            latency,
            bytes_sent,
            read_errors,
            tls_not_after,
            tls_reload_failures,
            sign_ins,
        }
    }

    /// Adds the chain metrics (a gateway given its chains after it was made).
    pub fn register_chains(&mut self, chains: &crate::access::chain::Chains) {
        chains.register(&mut self.registry);
    }

    pub fn encode(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String cannot fail");
        s
    }
}
