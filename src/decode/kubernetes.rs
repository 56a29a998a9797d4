//! Fluent Bit's and Vector's Kubernetes JSON: a container's line with the pod's metadata.
//!
//! Formats: Fluent Bit's `kubernetes` filter (its documentation, "Kubernetes" filter; the Kafka
//! output adds `@timestamp`) writes `{"@timestamp":…,"log":"…","stream":"stdout","time":"…",
//! "kubernetes":{"pod_name":…,"namespace_name":…,"container_name":…,"labels":{…},"host":…}}`;
//! Vector's `kubernetes_logs` source (its documentation, "Kubernetes logs" output fields)
//! writes `{"message":"…","stream":"stdout","timestamp":"…","kubernetes":{"pod_name":…,
//! "pod_namespace":…,"container_name":…,"pod_labels":{…},"pod_node_name":…}}`. Vector's
//! names are also readable by Fluent Bit's (`kubernetes.namespace_name`,
//! `kubernetes.labels.<name>`, `kubernetes.host`), so one rule reads both shippers.

use super::envelope::{Found, Key};
use crate::rules::program::{FieldPath, PathSegment};

/// Where the message is: Fluent Bit keeps the runtime's `log`, Vector calls it `message`.
pub(crate) const MESSAGE: &[Key] = &[Key::Log, Key::Message];

/// Kubernetes metadata beside a message.
pub(crate) fn detect(f: &Found) -> bool {
    f.kubernetes && (f.log_string || f.message_string)
}

/// Vector's spelling of a field a rule names in Fluent Bit's, if it has another.
pub(crate) fn vector_alias(field: &FieldPath) -> Option<FieldPath> {
    let keys: Vec<&str> = field
        .segments
        .iter()
        .map(|s| match s {
            PathSegment::Key(k) => Some(k.as_str()),
            PathSegment::Index(_) => None,
        })
        .collect::<Option<_>>()?;
    let renamed: Vec<&str> = match keys.as_slice() {
        ["kubernetes", "namespace_name"] => vec!["kubernetes", "pod_namespace"],
        ["kubernetes", "host"] => vec!["kubernetes", "pod_node_name"],
        ["kubernetes", "labels", rest @ ..] if !rest.is_empty() => {
            let mut v = vec!["kubernetes", "pod_labels"];
            v.extend_from_slice(rest);
            v
        }
        _ => return None,
    };
    Some(FieldPath {
        name: renamed.join("."),
        segments: renamed
            .iter()
            .map(|k| PathSegment::Key((*k).to_string()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::compile::parse_path;

    #[test]
    fn fluent_bit_names_read_vector_fields() {
        let alias = |p: &str| vector_alias(&parse_path(p).unwrap()).map(|f| f.name);
        assert_eq!(
            alias("kubernetes.namespace_name").as_deref(),
            Some("kubernetes.pod_namespace")
        );
        assert_eq!(
            alias("kubernetes.labels.app").as_deref(),
            Some("kubernetes.pod_labels.app")
        );
        assert_eq!(alias("kubernetes.pod_name"), None);
        assert_eq!(alias("kubernetes.labels"), None);
    }
}
