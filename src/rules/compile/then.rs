//! The `then` section: what happens to a matching event once it is counted.

use super::{Builder, RuleCx, Section};
use crate::rules::diagnostic::{Code, Sink};
use crate::rules::program::Then;
use crate::rules::read::{MapView, scalar};
use crate::rules::suggest::did_you_mean;

pub(super) const SECTION: Section = Section {
    keys: &["then"],
    compile: section,
};

fn section(_: &mut Builder, m: &mut MapView<'_>, cx: &mut RuleCx<'_>, sink: &mut Sink) {
    cx.then = match m.get("then") {
        None => Then::Default,
        Some(n) => match scalar(n, "`then`", sink).as_deref() {
            Some("keep") => Then::Keep,
            Some("drop") => Then::Drop,
            Some(other) => {
                sink.error(
                    n.pos,
                    Code::UnknownVariant,
                    format!("unknown `then` action `{other}`"),
                )
                .hint(did_you_mean(other, &["keep", "drop"]));
                Then::Default
            }
            None => Then::Default,
        },
    };
    if cx.then == Then::Drop {
        cx.has_effect = true;
    }
}
