//! Prometheus metrics of the webhook.

use std::sync::Arc;

use certs::CertInfo;
use certs::resolver::ReloadingResolver;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<EndpointLabels, Histogram>,
}

/// `redis_webhook_certificate_expiry_timestamp_seconds`: when the serving
/// certificate in use expires, read at scrape time, so that a reload shows
/// at once. Absent while none is loaded.
#[derive(Debug)]
struct CertificateExpiry(Arc<ReloadingResolver>);

impl Collector for CertificateExpiry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(pem) = self.0.current_cert_pem() else {
            return Ok(());
        };
        // The leaf comes first in a served chain.
        let Some(leaf) = CertInfo::parse_bundle(&pem, "tls.crt")
            .ok()
            .and_then(|chain| chain.into_iter().next())
        else {
            return Ok(());
        };
        let gauge = ConstGauge::new(leaf.not_after.unix_timestamp());
        gauge.encode(encoder.encode_descriptor(
            "redis_webhook_certificate_expiry_timestamp_seconds",
            "When the serving certificate in use expires (Unix time)",
            None,
            MetricType::Gauge,
        )?)
    }
}

impl Metrics {
    /// The webhook's metrics; with `resolver`, also its certificate's
    /// expiry.
    pub fn new(resolver: Option<Arc<ReloadingResolver>>) -> Arc<Self> {
        let mut registry = Registry::default();
        if let Some(r) = resolver {
            registry.register_collector(Box::new(CertificateExpiry(r)));
        }
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "redis_webhook_admission_requests",
            "Admission reviews handled, by endpoint and outcome",
            requests.clone(),
        );
        let duration = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5])
        });
        registry.register(
            "redis_webhook_admission_duration_seconds",
            "Time to handle one admission review",
            duration.clone(),
        );
        Arc::new(Metrics {
            registry,
            requests,
            duration,
        })
    }

    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_in_use_sets_the_expiry_gauge() {
        let resolver = ReloadingResolver::new();
        let m = Metrics::new(Some(resolver.clone()));
        assert!(!m.render().unwrap().contains("certificate_expiry"));
        let now = time::OffsetDateTime::now_utc();
        let ca = certs::issue::new_ca("ca", time::Duration::days(10), now).unwrap();
        let leaf =
            certs::issue::issue_serving(&ca, &["localhost".into()], time::Duration::days(3), now)
                .unwrap();
        resolver.set_pem(&leaf.cert_pem, &leaf.key_pem).unwrap();
        let want = format!(
            "redis_webhook_certificate_expiry_timestamp_seconds {}",
            (now + time::Duration::days(3)).unix_timestamp()
        );
        let text = m.render().unwrap();
        assert!(text.lines().any(|l| l == want), "{want} not in\n{text}");
    }
}
