//! `envelopes:`, in a rule file or the service config's `input`: which shipper wrapped each
//! topic's records (see `decode::envelope`).

use crate::decode::envelope::Envelope;
use crate::rules::diagnostic::{Code, Sink};
use crate::rules::program::TopicPattern;
use crate::rules::read::{MapView, scalar};
use crate::rules::suggest::did_you_mean;
use crate::rules::yaml::{Node, Pos};

/// Reads `{topic-or-glob: envelope}`; each entry with where it was written.
pub fn declarations(node: &Node, sink: &mut Sink) -> Vec<(TopicPattern, Envelope, Pos)> {
    let mut out = Vec::new();
    let Some(mut m) = MapView::new(node, "`envelopes`", sink) else {
        return out;
    };
    for (k, v) in m.entries {
        let Some(topic) = k.as_scalar() else {
            sink.error(k.pos, Code::WrongType, "a topic must be a string")
                .hint("write `topic-name: envelope`, e.g. `k8s-containers: cri`");
            continue;
        };
        let Some(name) = scalar(v, "an envelope", sink) else {
            continue;
        };
        match name.parse::<Envelope>() {
            Ok(e) => out.push((TopicPattern::new(topic), e, v.pos)),
            Err(msg) => {
                sink.error(v.pos, Code::UnknownVariant, msg)
                    .hint(did_you_mean(&name, Envelope::NAMES));
            }
        }
    }
    m.accept_all();
    m.finish(&[], "`envelopes`", sink);
    out
}
