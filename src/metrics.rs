//! Counters the daemon keeps about itself (scraped via `/metrics` on the admin side).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    webhooks: Mutex<BTreeMap<u16, u64>>,
    signature_failures: AtomicU64,
    sends_ok: AtomicU64,
    send_failures: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    pub fn webhook(&self, status: u16) {
        if let Ok(mut m) = self.webhooks.lock() {
            *m.entry(status).or_default() += 1;
        }
    }

    pub fn signature_failure(&self) {
        self.signature_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn send_ok(&self) {
        self.sends_ok.fetch_add(1, Ordering::Relaxed);
    }

    pub fn send_failure(&self, code: &str) {
        if let Ok(mut m) = self.send_failures.lock() {
            *m.entry(code.to_string()).or_default() += 1;
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
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
        for (name, help, value) in gauges {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            ));
        }
        out
    }
}
