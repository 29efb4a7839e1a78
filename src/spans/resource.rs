//! The resource every span of this proxy belongs to, from the configuration and the Envoy node
//! (read once, when the plugin is configured).
//!
//! Istio's sidecars and gateways carry their workload in the node metadata (`NAME`, `NAMESPACE`,
//! `WORKLOAD_NAME`, `OWNER`, set by istio-agent) and in the node's cluster, which Istio sets to
//! the tracing service name (`<app label>.<namespace>` by default, the name Istio's own tracers
//! report).

/// What the filter reads from Envoy's node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// `node.cluster` (`--service-cluster`).
    pub cluster: Option<String>,
    /// `node.metadata.NAME`: the pod.
    pub name: Option<String>,
    /// `node.metadata.NAMESPACE`.
    pub namespace: Option<String>,
    /// `node.metadata.WORKLOAD_NAME`.
    pub workload_name: Option<String>,
    /// `node.metadata.OWNER`: `kubernetes://apis/<group>/<version>/namespaces/<ns>/<kind>/<name>`.
    pub owner: Option<String>,
}

/// `service.name` when nothing names the service: the form the OpenTelemetry SDKs use
/// (`unknown_service:<process>`).
pub const UNKNOWN_SERVICE: &str = "unknown_service:envoy";

/// `service.name`: the configured name, else the node's cluster (what Envoy's own tracers
/// report; Istio's tracing service name), else the workload's name, else [`UNKNOWN_SERVICE`].
pub fn service_name<'a>(configured: Option<&'a str>, node: &'a NodeInfo) -> &'a str {
    configured
        .or(node.cluster.as_deref())
        .or(node.workload_name.as_deref())
        .unwrap_or(UNKNOWN_SERVICE)
}

/// The resource attributes, `service.name` first; only what the node actually says.
pub fn attributes<'a>(
    configured_service: Option<&'a str>,
    node: &'a NodeInfo,
) -> Vec<(&'static str, &'a str)> {
    let mut out = vec![("service.name", service_name(configured_service, node))];
    if let Some(namespace) = &node.namespace {
        out.push(("k8s.namespace.name", namespace));
    }
    if let Some(pod) = &node.name {
        out.push(("k8s.pod.name", pod));
    }
    if let Some((key, name)) = node.owner.as_deref().and_then(owner_attribute) {
        out.push((key, name));
    }
    out
}

/// The workload attribute an Istio `OWNER` names, for the kinds the semantic conventions have
/// (`k8s.deployment.name`, ...).
fn owner_attribute(owner: &str) -> Option<(&'static str, &str)> {
    let path = owner.strip_prefix("kubernetes://apis/")?;
    let mut parts = path.rsplitn(3, '/');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let kind = parts.next()?;
    if !parts.next()?.contains("/namespaces/") {
        return None;
    }
    let key = match kind {
        "deployments" => "k8s.deployment.name",
        "statefulsets" => "k8s.statefulset.name",
        "daemonsets" => "k8s.daemonset.name",
        "replicasets" => "k8s.replicaset.name",
        "jobs" => "k8s.job.name",
        "cronjobs" => "k8s.cronjob.name",
        _ => return None,
    };
    Some((key, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cluster: Option<&str>, workload: Option<&str>) -> NodeInfo {
        NodeInfo {
            cluster: cluster.map(Into::into),
            workload_name: workload.map(Into::into),
            ..NodeInfo::default()
        }
    }

    #[test]
    fn service_name_precedence() {
        let istio = node(Some("checkout.shop"), Some("checkout-v1"));
        assert_eq!(service_name(Some("checkout"), &istio), "checkout");
        assert_eq!(service_name(None, &istio), "checkout.shop");
        assert_eq!(
            service_name(None, &node(None, Some("checkout-v1"))),
            "checkout-v1"
        );
        assert_eq!(
            service_name(None, &node(None, None)),
            "unknown_service:envoy"
        );
    }

    #[test]
    fn owners() {
        // The form Istio's sidecar injector writes into OWNER:
        // "kubernetes://apis/<apiVersion>/namespaces/<ns>/<lower-case kind>s/<name>".
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            (
                "kubernetes://apis/apps/v1/namespaces/shop/deployments/checkout",
                Some(("k8s.deployment.name", "checkout")),
            ),
            (
                "kubernetes://apis/apps/v1/namespaces/db/statefulsets/pg",
                Some(("k8s.statefulset.name", "pg")),
            ),
            (
                "kubernetes://apis/batch/v1/namespaces/ops/cronjobs/nightly",
                Some(("k8s.cronjob.name", "nightly")),
            ),
            (
                "kubernetes://apis/v1/namespaces/shop/pods/checkout-7d9",
                None,
            ),
            (
                "kubernetes://apis/apps/v1/namespaces/shop/deployments/",
                None,
            ),
            ("https://example.com/deployments/x", None),
            ("", None),
        ];
        for &(owner, want) in cases {
            assert_eq!(owner_attribute(owner), want, "{owner}");
        }
    }

    #[test]
    fn attributes_from_istio_metadata() {
        let node = NodeInfo {
            cluster: Some("checkout.shop".into()),
            name: Some("checkout-7d9f-x2".into()),
            namespace: Some("shop".into()),
            workload_name: Some("checkout".into()),
            owner: Some("kubernetes://apis/apps/v1/namespaces/shop/deployments/checkout".into()),
        };
        assert_eq!(
            attributes(None, &node),
            vec![
                ("service.name", "checkout.shop"),
                ("k8s.namespace.name", "shop"),
                ("k8s.pod.name", "checkout-7d9f-x2"),
                ("k8s.deployment.name", "checkout"),
            ]
        );
        assert_eq!(
            attributes(Some("edge"), &NodeInfo::default()),
            vec![("service.name", "edge")]
        );
    }
}
