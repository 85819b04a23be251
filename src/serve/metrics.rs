//! `GET /metrics`: the server's counters in Prometheus' text format (through the
//! `prometheus-client` crate, the Prometheus project's Rust client).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A request's labels: its endpoint and response status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route, e.g. `/v1/chat/completions`.
    pub endpoint: String,
    /// The HTTP status code.
    pub status: u16,
}

/// Everything `/metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by endpoint and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Prompt tokens run, in tokens.
    pub prompt_tokens: Counter,
    /// Tokens generated, in tokens.
    pub generation_tokens: Counter,
    /// Sequences cancelled because their client went away.
    pub cancelled: Counter,
    /// Sequences waiting for the decode loop.
    pub queue_depth: Gauge,
    /// Sequences in the decode loop.
    pub running: Gauge,
    /// From a sequence's start to its first token, in seconds.
    pub time_to_first_token: Histogram,
    /// Between a sequence's successive tokens, in seconds.
    pub time_per_output_token: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `bioinstruct_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("bioinstruct");
        let requests = Family::<RequestLabels, Counter>::default();
        let prompt_tokens = Counter::default();
        let generation_tokens = Counter::default();
        let cancelled = Counter::default();
        let queue_depth = Gauge::default();
        let running = Gauge::default();
        let buckets = [
            0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ];
        let time_to_first_token = Histogram::new(buckets);
        let time_per_output_token = Histogram::new(buckets);
        registry.register(
            "requests",
            "HTTP requests by endpoint and status",
            requests.clone(),
        );
        registry.register("prompt_tokens", "Prompt tokens run", prompt_tokens.clone());
        registry.register(
            "generation_tokens",
            "Tokens generated",
            generation_tokens.clone(),
        );
        registry.register(
            "cancelled_sequences",
            "Sequences cancelled because the client disconnected",
            cancelled.clone(),
        );
        registry.register(
            "queue_depth",
            "Sequences waiting for the decode loop",
            queue_depth.clone(),
        );
        registry.register(
            "running_sequences",
            "Sequences being decoded",
            running.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Time from a sequence's start to its first token",
            time_to_first_token.clone(),
        );
        registry.register(
            "time_per_output_token_seconds",
            "Time between a sequence's successive tokens",
            time_per_output_token.clone(),
        );
        Metrics {
            registry,
            requests,
            prompt_tokens,
            generation_tokens,
            cancelled,
            queue_depth,
            running,
            time_to_first_token,
            time_per_output_token,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
