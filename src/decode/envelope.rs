//! Envelopes: the wrapping a log shipper puts around a log line, recognised per event.
//!
//! An enveloped event is decoded in two layers: the envelope gives the event's *message*
//! (Docker's `log`, the text after a CRI line's tag, ECS's `message`) and its metadata fields
//! (`stream`, `kubernetes.pod_name`, `log.level`, …); the message then becomes the event's text
//! (what `_line`, the prefilter, an `extract` step without `from:` and the reduction's message
//! read) and is decoded as any record is (JSON, logfmt or text), so rules written for the bare
//! lines keep working. **The application's own fields win over the envelope's** when both
//! have a name; `message` is always the message.
//!
//! Which envelope a record is in is declared per topic (the service config's
//! `input.envelopes`, then rule files' `envelopes:`), else detected where the shape is
//! unambiguous (see each shipper's `detect`). Detection needs no second pass: the JSON scan a
//! plain JSON record gets anyway also notes the few keys that tell the shippers apart.

use std::fmt;
use std::str::FromStr;

use crate::rules::program::TopicPattern;

/// The shippers' envelopes logmill unwraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Envelope {
    /// Not enveloped: the record is the event (declared, this turns detection off).
    None,
    /// Docker's `json-file` logging driver: `{"log": …, "stream": …, "time": …}`.
    Docker,
    /// The Kubernetes CRI log format: `<time> <stream> <P|F> <message>`.
    Cri,
    /// Elastic Common Schema JSON, as Filebeat and the ECS loggers write it.
    Ecs,
    /// Fluent Bit's and Vector's Kubernetes JSON (`log` or `message`, `kubernetes.*`).
    Kubernetes,
    /// Syslog lines: RFC 5424, RFC 3164, and rsyslog's file format (`omkafka`'s default).
    Syslog,
    /// The OpenTelemetry Collector's Kafka exporter: a protobuf `ExportLogsServiceRequest`,
    /// many log records per message (`decode::otlp`).
    OtlpProto,
    /// The same in OTLP's JSON mapping.
    OtlpJson,
}

impl Envelope {
    pub const ALL: [Envelope; 8] = [
        Envelope::None,
        Envelope::Docker,
        Envelope::Cri,
        Envelope::Ecs,
        Envelope::Kubernetes,
        Envelope::Syslog,
        Envelope::OtlpProto,
        Envelope::OtlpJson,
    ];

    /// The names a declaration may use.
    pub const NAMES: &'static [&'static str] = &[
        "none",
        "docker",
        "cri",
        "ecs",
        "filebeat",
        "kubernetes",
        "fluentbit",
        "vector",
        "syslog",
        "otlp_proto",
        "otlp_json",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Envelope::None => "none",
            Envelope::Docker => "docker",
            Envelope::Cri => "cri",
            Envelope::Ecs => "ecs",
            Envelope::Kubernetes => "kubernetes",
            Envelope::Syslog => "syslog",
            Envelope::OtlpProto => "otlp_proto",
            Envelope::OtlpJson => "otlp_json",
        }
    }

    /// How the messages of a many-records envelope are written, if it is one.
    pub fn otlp(self) -> Option<super::otlp::Encoding> {
        match self {
            Envelope::OtlpProto => Some(super::otlp::Encoding::Proto),
            Envelope::OtlpJson => Some(super::otlp::Encoding::Json),
            _ => None,
        }
    }
}

impl fmt::Display for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Envelope {
    type Err = String;
    fn from_str(s: &str) -> Result<Envelope, String> {
        Ok(match s {
            "none" => Envelope::None,
            "docker" => Envelope::Docker,
            "cri" => Envelope::Cri,
            "ecs" | "filebeat" => Envelope::Ecs,
            "kubernetes" | "fluentbit" | "vector" => Envelope::Kubernetes,
            "syslog" => Envelope::Syslog,
            "otlp_proto" | "otlp" => Envelope::OtlpProto,
            "otlp_json" => Envelope::OtlpJson,
            _ => {
                return Err(format!(
                    "unknown envelope `{s}` (expected {})",
                    Envelope::NAMES.join(", ")
                ));
            }
        })
    }
}

/// Envelopes declared per topic, first match wins. Topics no declaration names are detected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    pub topics: Vec<(TopicPattern, Envelope)>,
}

impl Declared {
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// The declared envelope of `topic`, if any.
    pub fn of(&self, topic: &str) -> Option<Envelope> {
        self.topics
            .iter()
            .find(|(t, _)| t.matches(topic))
            .map(|(_, e)| *e)
    }

    /// `self`'s declarations, then `later`'s (the service config's before the rule files').
    pub fn then(&self, later: &Declared) -> Declared {
        Declared {
            topics: self.topics.iter().chain(&later.topics).cloned().collect(),
        }
    }
}

/// The keys a JSON scan notes to tell the JSON envelopes apart and to find their message.
/// Each is a slot after the program's own fields (or one of them, when a rule reads it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Log,
    Message,
    Stream,
    Time,
    Kubernetes,
    EcsVersion,
}

impl Key {
    pub(crate) const ALL: [Key; 6] = [
        Key::Log,
        Key::Message,
        Key::Stream,
        Key::Time,
        Key::Kubernetes,
        Key::EcsVersion,
    ];

    pub(crate) fn path(self) -> &'static str {
        match self {
            Key::Log => "log",
            Key::Message => "message",
            Key::Stream => "stream",
            Key::Time => "time",
            Key::Kubernetes => "kubernetes",
            Key::EcsVersion => "ecs.version",
        }
    }
}

/// Which of `Key::ALL` a JSON record has (as strings where it matters).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Found {
    pub log_string: bool,
    pub message_string: bool,
    pub stream: bool,
    pub time: bool,
    pub kubernetes: bool,
    pub ecs_version: bool,
}

/// The JSON envelope a record with these keys is in, when that is unambiguous: a plain JSON
/// event with `message` and `time` stays a plain JSON event.
pub(crate) fn detect_json(f: &Found) -> Option<Envelope> {
    if super::kubernetes::detect(f) {
        Some(Envelope::Kubernetes)
    } else if super::ecs::detect(f) {
        Some(Envelope::Ecs)
    } else if super::docker::detect(f) {
        Some(Envelope::Docker)
    } else {
        None
    }
}

/// The key holding a JSON envelope's message, in order of preference.
pub(crate) fn message_keys(e: Envelope) -> &'static [Key] {
    match e {
        Envelope::Docker => super::docker::MESSAGE,
        Envelope::Ecs => super::ecs::MESSAGE,
        Envelope::Kubernetes => super::kubernetes::MESSAGE,
        // An OTLP event's message is its body; a map body has none (`decode::otlp`).
        Envelope::OtlpProto | Envelope::OtlpJson => &[Key::Message],
        Envelope::None | Envelope::Cri | Envelope::Syslog => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print() {
        for e in Envelope::ALL {
            assert_eq!(e.as_str().parse::<Envelope>(), Ok(e));
        }
        assert_eq!("filebeat".parse(), Ok(Envelope::Ecs));
        assert_eq!("vector".parse(), Ok(Envelope::Kubernetes));
        assert_eq!("fluentbit".parse(), Ok(Envelope::Kubernetes));
        assert!(
            "gelf"
                .parse::<Envelope>()
                .unwrap_err()
                .contains("unknown envelope")
        );
    }

    #[test]
    fn first_declaration_wins() {
        let config = Declared {
            topics: vec![(TopicPattern::new("k8s-*"), Envelope::Cri)],
        };
        let files = Declared {
            topics: vec![
                (TopicPattern::new("k8s-legacy"), Envelope::Docker),
                (TopicPattern::new("beats"), Envelope::Ecs),
            ],
        };
        let d = config.then(&files);
        assert_eq!(d.of("k8s-legacy"), Some(Envelope::Cri));
        assert_eq!(d.of("beats"), Some(Envelope::Ecs));
        assert_eq!(d.of("app"), None);
    }

    #[test]
    fn plain_json_is_not_an_envelope() {
        let plain = Found {
            message_string: true,
            time: true,
            ..Found::default()
        };
        assert_eq!(detect_json(&plain), None);
        let docker = Found {
            log_string: true,
            stream: true,
            time: true,
            ..Found::default()
        };
        assert_eq!(detect_json(&docker), Some(Envelope::Docker));
    }
}
