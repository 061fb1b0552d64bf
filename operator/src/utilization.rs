//! CPU utilisation of a cluster's Redis pods, from the `metrics.k8s.io` API
//! (metrics-server). The arithmetic is pure; only [`fetch`] does I/O.

use std::collections::HashMap;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde_json::Value;

/// The Redis container's name in every pod.
pub const CONTAINER: &str = "redis";

/// Parses a CPU quantity ("250m", "1", "0.5", "1500000n", "12u") into cores.
pub fn parse_cpu(q: &str) -> Option<f64> {
    let q = q.trim();
    let (num, scale) = match q.char_indices().last()? {
        (i, 'n') => (&q[..i], 1e-9),
        (i, 'u') => (&q[..i], 1e-6),
        (i, 'm') => (&q[..i], 1e-3),
        (i, 'k') => (&q[..i], 1e3),
        _ => (q, 1.0),
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v * scale)
}

/// One ready pod, the CPU its Redis container requests, and when it became
/// ready (seconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadyPod {
    pub name: String,
    pub request_cores: f64,
    pub ready_since: f64,
}

/// One PodMetrics reading: CPU of the Redis container and when it was taken
/// (seconds since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub cores: f64,
    pub timestamp: f64,
}

/// Seconds since the Unix epoch, the clock every sample and readiness time
/// here is compared on.
pub fn unix_seconds(t: k8s_openapi::jiff::Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// A utilisation figure and how many ready pods it covers: a pod ready too
/// briefly to have a sample is left out, and the status says so.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Average CPU in % of requests over the measured pods.
    pub percent: f64,
    pub measured: usize,
    pub ready: usize,
}

/// Why no utilisation could be computed.
#[derive(Debug, Clone, PartialEq)]
pub enum Unavailable {
    NoReadyPods,
    NoRequest(String),
    Missing(Vec<String>),
    Stale(String),
    /// The metrics API could not be read (the error, rendered).
    Unreadable(String),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::NoReadyPods => write!(f, "no ready Redis pods"),
            Unavailable::NoRequest(p) => write!(f, "pod {p} requests no CPU"),
            Unavailable::Missing(p) => write!(f, "no metrics yet for pods {}", p.join(", ")),
            Unavailable::Stale(p) => write!(f, "metrics of pod {p} are stale"),
            Unavailable::Unreadable(e) => write!(f, "reading PodMetrics: {e}"),
        }
    }
}

/// Sum of usage over sum of requests × 100, over the ready pods. A pod ready
/// for less than `max_age_secs` may lack a sample (metrics-server needs two
/// scrapes) and is left out, as HPA does; any older pod must have a fresh
/// sample, since a partial view could hide a hot pod.
pub fn compute(
    ready: &[ReadyPod],
    usage: &HashMap<String, Usage>,
    now: f64,
    max_age_secs: f64,
) -> Result<Reading, Unavailable> {
    let missing: Vec<&ReadyPod> = ready
        .iter()
        .filter(|p| !usage.contains_key(&p.name))
        .collect();
    let established_missing: Vec<String> = missing
        .iter()
        .filter(|p| now - p.ready_since >= max_age_secs)
        .map(|p| p.name.clone())
        .collect();
    if !established_missing.is_empty() {
        return Err(Unavailable::Missing(established_missing));
    }
    let measured: Vec<&ReadyPod> = ready
        .iter()
        .filter(|p| usage.contains_key(&p.name))
        .collect();
    if measured.is_empty() {
        return Err(if ready.is_empty() {
            Unavailable::NoReadyPods
        } else {
            Unavailable::Missing(missing.iter().map(|p| p.name.clone()).collect())
        });
    }
    let (mut used, mut requested) = (0.0, 0.0);
    let counted = measured.len();
    for p in measured {
        if p.request_cores <= 0.0 {
            return Err(Unavailable::NoRequest(p.name.clone()));
        }
        let Some(u) = usage.get(&p.name) else {
            continue;
        };
        if now - u.timestamp > max_age_secs {
            return Err(Unavailable::Stale(p.name.clone()));
        }
        used += u.cores;
        requested += p.request_cores;
    }
    Ok(Reading {
        percent: used / requested * 100.0,
        measured: counted,
        ready: ready.len(),
    })
}

fn pod_metrics_resource() -> ApiResource {
    ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    }
}

/// Reads the Redis containers' CPU for pods matching `selector` in `ns`.
pub async fn fetch(
    client: &Client,
    ns: &str,
    selector: &str,
) -> Result<HashMap<String, Usage>, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &pod_metrics_resource());
    let list = api.list(&ListParams::default().labels(selector)).await?;
    Ok(list
        .items
        .iter()
        .filter_map(|m| Some((m.metadata.name.clone()?, usage_of(&m.data)?)))
        .collect())
}

fn usage_of(data: &Value) -> Option<Usage> {
    let timestamp = data
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(unix_seconds)?;
    let cores = data
        .get("containers")?
        .as_array()?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(CONTAINER))?
        .pointer("/usage/cpu")
        .and_then(Value::as_str)
        .and_then(parse_cpu)?;
    Some(Usage { cores, timestamp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu("250m"), Some(0.25));
        assert_eq!(parse_cpu("1"), Some(1.0));
        assert_eq!(parse_cpu("0.5"), Some(0.5));
        assert!((parse_cpu("1500000n").unwrap() - 0.0015).abs() < 1e-12);
        assert!((parse_cpu("12u").unwrap() - 0.000012).abs() < 1e-12);
        assert_eq!(parse_cpu(""), None);
        assert_eq!(parse_cpu("abc"), None);
        assert_eq!(parse_cpu("-1"), None);
    }

    fn pods(n: usize) -> Vec<ReadyPod> {
        (0..n)
            .map(|i| ReadyPod {
                name: format!("p{i}"),
                request_cores: 0.1,
                ready_since: 0.0,
            })
            .collect()
    }

    #[test]
    fn utilization_is_usage_over_requests() {
        let usage = HashMap::from([
            (
                "p0".to_string(),
                Usage {
                    cores: 0.05,
                    timestamp: 100.0,
                },
            ),
            (
                "p1".to_string(),
                Usage {
                    cores: 0.15,
                    timestamp: 100.0,
                },
            ),
        ]);
        let r = compute(&pods(2), &usage, 110.0, 60.0).unwrap();
        assert!((r.percent - 100.0).abs() < 1e-9, "{r:?}");
        assert_eq!((r.measured, r.ready), (2, 2));
    }

    #[test]
    fn a_pod_too_young_for_a_sample_is_left_out_and_counted() {
        let usage = HashMap::from([(
            "p0".to_string(),
            Usage {
                cores: 0.05,
                timestamp: 100.0,
            },
        )]);
        let mut p = pods(2);
        p[1].ready_since = 90.0;
        let r = compute(&p, &usage, 110.0, 60.0).unwrap();
        assert!((r.percent - 50.0).abs() < 1e-9, "{r:?}");
        assert_eq!((r.measured, r.ready), (1, 2));
        // Once it is established, its missing sample makes the figure unavailable.
        assert_eq!(
            compute(&p, &usage, 151.0, 60.0),
            Err(Unavailable::Missing(vec!["p1".into()]))
        );
    }

    #[test]
    fn missing_stale_or_unrequested_is_unavailable() {
        let usage = HashMap::from([(
            "p0".to_string(),
            Usage {
                cores: 0.05,
                timestamp: 100.0,
            },
        )]);
        assert_eq!(
            compute(&pods(2), &usage, 110.0, 60.0),
            Err(Unavailable::Missing(vec!["p1".into()]))
        );
        assert_eq!(
            compute(&pods(1), &usage, 200.0, 60.0),
            Err(Unavailable::Stale("p0".into()))
        );
        assert_eq!(
            compute(&[], &usage, 0.0, 60.0),
            Err(Unavailable::NoReadyPods)
        );
        let mut p = pods(1);
        p[0].request_cores = 0.0;
        assert_eq!(
            compute(&p, &usage, 110.0, 60.0),
            Err(Unavailable::NoRequest("p0".into()))
        );
    }

    #[test]
    fn reads_the_redis_container_of_pod_metrics() {
        let data = json!({
            "timestamp": "2026-11-24T02:00:00Z",
            "window": "10s",
            "containers": [
                {"name": "sidecar", "usage": {"cpu": "900m", "memory": "1Mi"}},
                {"name": "redis", "usage": {"cpu": "250m", "memory": "10Mi"}}
            ]
        });
        let u = usage_of(&data).unwrap();
        assert_eq!(u.cores, 0.25);
        assert_eq!(u.timestamp, 1795485600.0);
        assert!(usage_of(&json!({"timestamp": "x", "containers": []})).is_none());
    }
}
