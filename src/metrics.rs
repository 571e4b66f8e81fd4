//! Counters the daemon keeps about itself (scraped via `/metrics` on the admin side).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::Full;

use crate::http::serve::{self, Limits};
use crate::shutdown::Shutdown;

/// The daemon's gauges at one scrape, read by the caller from the store, the hub and
/// the certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Gauges {
    pub spool: u64,
    pub agent_queue: u64,
    pub outbound_queue: u64,
    pub dead_letters: u64,
    pub agent_connections: u64,
    /// Unix time the served certificate expires (`None`: no TLS, or not known).
    pub tls_not_after: Option<i64>,
    /// Store fsyncs so far, and the time spent in them.
    pub flushes: u64,
    pub flush_micros: u64,
}

#[derive(Default)]
pub(crate) struct Metrics {
    webhooks: Mutex<BTreeMap<u16, u64>>,
    signature_failures: AtomicU64,
    sends_ok: AtomicU64,
    send_failures: Mutex<BTreeMap<String, u64>>,
    /// (account, limit) → full `outboundLimits` windows (counted once per window).
    limit_hits: Mutex<BTreeMap<(String, String), u64>>,
}

impl Metrics {
    pub(crate) fn webhook(&self, status: u16) {
        if let Ok(mut m) = self.webhooks.lock() {
            *m.entry(status).or_default() += 1;
        }
    }

    pub(crate) fn signature_failure(&self) {
        self.signature_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn send_ok(&self) {
        self.sends_ok.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn send_failure(&self, code: &str) {
        if let Ok(mut m) = self.send_failures.lock() {
            *m.entry(code.to_string()).or_default() += 1;
        }
    }

    /// An `outboundLimits` window of `account` filled up (`limit`: `perHour`, …); called
    /// once per window, not once per held send.
    pub(crate) fn outbound_limit_hit(&self, account: &str, limit: &str) {
        if let Ok(mut m) = self.limit_hits.lock() {
            *m.entry((account.to_string(), limit.to_string()))
                .or_default() += 1;
        }
    }

    /// Everything, with the daemon's current gauges (read by the caller, so metrics
    /// need not know the app).
    pub(crate) fn scrape(&self, g: &Gauges) -> String {
        let mut gauges = vec![
            (
                "smsgate_spool_depth",
                "admitted webhooks not yet processed",
                g.spool,
            ),
            (
                "smsgate_agent_queue_depth",
                "messages waiting for an agent's ack",
                g.agent_queue,
            ),
            (
                "smsgate_outbound_queue_depth",
                "sends queued, unknown or failed",
                g.outbound_queue,
            ),
            (
                "smsgate_dead_letters",
                "messages no agent acknowledged in time",
                g.dead_letters,
            ),
            (
                "smsgate_agent_connections",
                "agents connected to the agent socket",
                g.agent_connections,
            ),
        ];
        if let Some(not_after) = g.tls_not_after {
            gauges.push((
                "smsgate_tls_certificate_expiry_seconds",
                "when the served TLS certificate expires (Unix time)",
                not_after.max(0) as u64,
            ));
        }
        let mut out = self.render(&gauges);
        out.push_str("# HELP smsgate_store_flush_seconds time spent in store fsyncs (group commit)\n# TYPE smsgate_store_flush_seconds summary\n");
        out.push_str(&format!(
            "smsgate_store_flush_seconds_sum {}\nsmsgate_store_flush_seconds_count {}\n",
            g.flush_micros as f64 / 1e6,
            g.flushes
        ));
        out
    }

    /// Prometheus text exposition format.
    pub(crate) fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        out.push_str("# TYPE smsgate_webhooks_total counter\n");
        if let Ok(m) = self.webhooks.lock() {
            for (status, n) in m.iter() {
                out.push_str(&format!(
                    "smsgate_webhooks_total{{status=\"{status}\"}} {n}\n"
                ));
            }
        }
        out.push_str("# TYPE smsgate_signature_failures_total counter\n");
        out.push_str(&format!(
            "smsgate_signature_failures_total {}\n",
            self.signature_failures.load(Ordering::Relaxed)
        ));
        out.push_str("# TYPE smsgate_sends_total counter\n");
        out.push_str(&format!(
            "smsgate_sends_total {}\n",
            self.sends_ok.load(Ordering::Relaxed)
        ));
        out.push_str("# TYPE smsgate_send_failures_total counter\n");
        if let Ok(m) = self.send_failures.lock() {
            for (code, n) in m.iter() {
                out.push_str(&format!(
                    "smsgate_send_failures_total{{code=\"{code}\"}} {n}\n"
                ));
            }
        }
        out.push_str("# HELP smsgate_outbound_limit_hits_total outboundLimits windows that filled up (once per window; the sends over them are held)\n# TYPE smsgate_outbound_limit_hits_total counter\n");
        if let Ok(m) = self.limit_hits.lock() {
            for ((account, limit), n) in m.iter() {
                out.push_str(&format!(
                    "smsgate_outbound_limit_hits_total{{account=\"{}\",limit=\"{limit}\"}} {n}\n",
                    label_value(account)
                ));
            }
        }
        for (name, help, value) in gauges {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            ));
        }
        out
    }
}

/// A Prometheus label value: backslash, quote and newline escaped (account ids are
/// the operator's words).
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Open connections at most on the metrics listener: a scraper needs one or two.
pub(crate) const MAX_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` (Prometheus) on a loopback listener until shutdown, through
/// the same serve loop (cap, idle clock, rate-limited logs) as the webhook listener;
/// `scrape` renders one answer (the daemon feeds it the current gauges).
pub(crate) async fn serve<F>(listener: tokio::net::TcpListener, scrape: F, mut stop: Shutdown)
where
    F: Fn() -> String + Clone + Send + Sync + 'static,
{
    let handler = move |req: hyper::Request<crate::http::serve::Body>| {
        let scrape = scrape.clone();
        async move {
            if req.uri().path() != "/metrics" {
                let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"see /metrics\n")));
                *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                return r;
            }
            let mut r = hyper::Response::new(Full::new(Bytes::from(scrape())));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
    };
    let limits = Limits::new("metrics", MAX_CONNECTIONS);
    serve::serve(
        listener,
        None,
        limits,
        handler,
        async move { stop.wait().await },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_hits_render_once_per_call_with_escaped_labels() {
        let m = Metrics::default();
        m.outbound_limit_hit("default", "perHour");
        m.outbound_limit_hit("default", "perHour");
        m.outbound_limit_hit("we\"ird", "perDay");
        let out = m.render(&[]);
        assert!(out.contains("# TYPE smsgate_outbound_limit_hits_total counter\n"));
        assert!(
            out.contains(
                "smsgate_outbound_limit_hits_total{account=\"default\",limit=\"perHour\"} 2\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "smsgate_outbound_limit_hits_total{account=\"we\\\"ird\",limit=\"perDay\"} 1\n"
            ),
            "{out}"
        );
    }

    /// The whole scrape is valid Prometheus text format: every sample's family has one
    /// `# TYPE` before it, names and labels are well formed, values are numbers. (What
    /// `prometheus-client` would guarantee by construction; see docs/architecture.md.)
    #[test]
    fn a_full_scrape_is_well_formed_exposition_text() {
        let m = Metrics::default();
        m.webhook(200);
        m.webhook(403);
        m.signature_failure();
        m.send_ok();
        m.send_failure("21610");
        m.outbound_limit_hit("a\\b\n", "perDay");
        let g = Gauges {
            spool: 1,
            agent_queue: 2,
            outbound_queue: 3,
            dead_letters: 4,
            agent_connections: 5,
            tls_not_after: Some(1_900_000_000),
            flushes: 7,
            flush_micros: 8,
        };
        let out = m.scrape(&g);
        let mut typed: Vec<String> = Vec::new();
        let mut samples = 0;
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(["counter", "gauge", "summary"].contains(&kind), "{line}");
                assert!(!typed.contains(&name.to_string()), "TYPE twice: {line}");
                typed.push(name.to_string());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("series value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let name = series.split('{').next().expect("name");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            let family = typed
                .iter()
                .find(|t| {
                    name == t.as_str()
                        || name
                            .strip_prefix(t.as_str())
                            .is_some_and(|r| ["_sum", "_count"].contains(&r))
                })
                .unwrap_or_else(|| panic!("no TYPE before {line}"));
            assert!(!family.is_empty());
            if let Some(labels) = series.strip_prefix(name) {
                if !labels.is_empty() {
                    assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                    // Quotes inside label values are escaped: an even count of
                    // unescaped quotes.
                    let unescaped = labels.replace("\\\\", "").replace("\\\"", "");
                    assert_eq!(unescaped.matches('"').count() % 2, 0, "{line}");
                    assert!(!labels.contains('\n'), "{line}");
                }
            }
            samples += 1;
        }
        assert!(samples >= 12, "{out}");
    }
}
