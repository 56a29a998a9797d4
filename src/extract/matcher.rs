//! Runs one `regex:` or `grok:` extraction, off the general capture engine where it can.
//!
//! Most log patterns are literals with fields between them: `(?P<ip>\S+) - - \[(?P<t>[^\]]+)\]`.
//! When a field cannot contain the first byte of the literal after it, the field must end at the
//! first occurrence of that byte: there is exactly one way to split the line, `memchr` finds it,
//! and each field only has to be *validated* (a byte table or a DFA over a few bytes) instead of
//! captured by a backtracking-free but much slower NFA. A field that *can* contain that byte
//! (a quoted string before a space, grok's `%{QS}`) is split where a DFA of the field alone
//! accepts and the literal follows; when that leaves several places, each is tried, and the
//! split stands only if exactly one of them lets the rest of the line split too (any match of
//! the regex is one of those splits). The split plan is built only when one of these arguments
//! holds for every field; otherwise, or when a line has too many candidate splits, the regex
//! crate runs as usual. **Both paths give the
//! same captures for every input** (the test below checks this on random inputs), so the plan is
//! an optimisation, never a change of meaning, and every rule keeps the linear-time guarantee.

use memchr::memmem;
use regex_automata::dfa::{Automaton, dense};
use regex_automata::{Anchored, Input};
use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// A compiled extraction pattern.
#[derive(Debug)]
pub struct Matcher {
    regex: regex::Regex,
    plan: Option<Plan>,
    required: Option<Vec<u8>>,
    /// No split plan, but there would be one with `^` in front.
    anchoring_helps: bool,
}

pub type Span = Option<(usize, usize)>;

/// Candidate starts an unanchored split plan tries before the general engine takes over.
const MAX_STARTS: usize = 4;

/// Candidate ends of ambiguous fields a line may try (over all its fields) before the general
/// engine takes over: each tries the rest of the line, so this bounds the work per line.
const MAX_BRANCHES: usize = 12;

/// Capture groups after an ambiguous field that a split can keep aside while it checks the
/// other candidates; a pattern with more goes to the regex crate on such lines.
const SAVED_SLOTS: usize = 48;

#[derive(Debug)]
struct Plan {
    /// Does it end with `$`?
    anchored_end: bool,
    pieces: Vec<Piece>,
    /// For each piece, the first capture group of it and the pieces after it (groups are
    /// numbered left to right), to clear what a failed candidate split left behind.
    first_group: Vec<usize>,
    /// Set when the pattern does not start with `^`: then `pieces[0]` is this literal and each
    /// of its occurrences is a candidate start.
    first_literal: Option<memmem::Finder<'static>>,
}

#[derive(Debug)]
enum Piece {
    Literal(Vec<u8>),
    Field(Field),
}

#[derive(Debug)]
struct Field {
    validator: Validator,
    groups: FieldGroups,
    /// Set when the field may contain the first byte of the literal after it: its validator's
    /// DFA (the field alone, anchored, with `$`) is then stepped to find where it could end.
    ambiguous: bool,
}

/// How a split attempt from some piece on went.
enum Split {
    No,
    /// Matched, ending here.
    Yes(usize),
    /// Too many candidates: the general engine decides.
    GiveUp,
}

#[derive(Debug)]
enum FieldGroups {
    None,
    /// The field is one capture group spanning all of it.
    Whole(usize),
    /// Nested or several groups: captured by `sub` (an anchored regex of the field alone);
    /// `sub` group `i + 1` is original group `map[i]`.
    Nested {
        sub: regex::Regex,
        map: Vec<usize>,
    },
    /// The last field of a pattern without `$`: its end is not forced, so `sub` (anchored at
    /// the start only) finds it, leftmost-first as the whole regex would.
    Tail {
        sub: regex::Regex,
        map: Vec<usize>,
    },
}

#[derive(Debug)]
enum Validator {
    /// `class{min,max}`: ASCII members in a table; spans with other bytes go to `full`.
    Class {
        ascii: Box<[bool; 128]>,
        min: usize,
        max: Option<usize>,
        full: Box<Check>,
    },
    Check(Box<Check>),
}

/// Whether a whole field matches. The DFA is determinized on first use, not when the rule is
/// compiled: a large pattern (Logstash's `IPV6`) costs milliseconds to determinize, which
/// `logmill check` and a reload should not pay for fields no line reaches.
#[derive(Debug)]
struct Check {
    pattern: String,
    built: std::sync::OnceLock<Built>,
}

#[derive(Debug)]
enum Built {
    Dfa(Box<dense::DFA<Vec<u32>>>),
    Regex(regex::Regex),
}

impl Check {
    fn new(field_regex: &str) -> Check {
        Check {
            pattern: format!("^(?:{field_regex})$"),
            built: std::sync::OnceLock::new(),
        }
    }

    fn from_regex(re: regex::Regex) -> Check {
        let built = std::sync::OnceLock::new();
        let _ = built.set(Built::Regex(re));
        Check {
            pattern: String::new(),
            built,
        }
    }

    fn built(&self) -> &Built {
        self.built.get_or_init(|| {
            let dfa = dense::Builder::new()
                .configure(
                    dense::DFA::config()
                        .dfa_size_limit(Some(1 << 20))
                        .determinize_size_limit(Some(1 << 21)),
                )
                .build(&self.pattern);
            match dfa {
                Ok(dfa) => Built::Dfa(Box::new(dfa)),
                Err(_) => {
                    Built::Regex(regex::Regex::new(&self.pattern).expect("a part of a valid regex"))
                }
            }
        })
    }

    /// Matches only the whole of `text`. Fields have no look-around, so the span alone decides.
    fn is_full_match(&self, text: &str) -> bool {
        match self.built() {
            Built::Dfa(dfa) => {
                let input = Input::new(text).anchored(Anchored::Yes);
                matches!(dfa.try_search_fwd(&input), Ok(Some(_)))
            }
            Built::Regex(re) => re.is_match(text),
        }
    }
}

impl Validator {
    fn is_valid(&self, text: &str) -> bool {
        match self {
            Validator::Class {
                ascii,
                min,
                max,
                full,
            } => {
                let b = text.as_bytes();
                if b.len() < *min || max.is_some_and(|m| b.len() > m) {
                    return false;
                }
                let mut all_ascii = true;
                for &c in b {
                    if c >= 128 {
                        all_ascii = false;
                        break;
                    }
                    if !ascii[c as usize] {
                        return false;
                    }
                }
                all_ascii || full.is_full_match(text)
            }
            Validator::Check(c) => c.is_full_match(text),
        }
    }
}

impl Matcher {
    pub fn new(pattern: &str) -> Result<Matcher, regex::Error> {
        let regex = regex::Regex::new(pattern)?;
        let hir = regex_syntax::Parser::new().parse(pattern).ok();
        let items: Vec<Hir> = match hir.as_ref().map(Hir::kind) {
            Some(HirKind::Concat(items)) => items.clone(),
            Some(_) => vec![hir.clone().expect("parsed")],
            None => Vec::new(),
        };
        let required = items
            .iter()
            .filter_map(|h| match h.kind() {
                HirKind::Literal(l) if l.0.len() >= 2 => Some(l.0.to_vec()),
                _ => None,
            })
            .max_by_key(Vec::len);
        let plan = Plan::build(&items);
        // Only for patterns that look like a whole line (anchored at the end, or three fields
        // and more): a short unanchored pattern is usually meant to be found anywhere.
        let whole_line = matches!(items.last().map(Hir::kind), Some(HirKind::Look(Look::End)))
            || regex.captures_len() > 3;
        let anchoring_helps = plan.is_none() && whole_line && {
            let mut anchored = vec![Hir::look(Look::Start)];
            anchored.extend(items.iter().cloned());
            Plan::build(&anchored).is_some()
        };
        Ok(Matcher {
            regex,
            plan,
            required,
            anchoring_helps,
        })
    }

    /// The pattern runs on the general engine only because it is not anchored: with `^` in
    /// front it would be split (`logmill check` says so).
    pub fn anchoring_helps(&self) -> bool {
        self.anchoring_helps
    }

    /// Whether the fast split path is used; exposed for tests and `logmill check --explain`.
    pub fn is_split(&self) -> bool {
        self.plan.is_some()
    }

    pub fn regex(&self) -> &regex::Regex {
        &self.regex
    }

    /// A literal every match contains, usable as a prefilter.
    pub fn required_literal(&self) -> Option<&[u8]> {
        self.required.as_deref()
    }

    pub fn group_count(&self) -> usize {
        self.regex.captures_len()
    }

    /// Runs the pattern over `hay`; on a match fills `slots[g]` for every group `g` (0 is the
    /// whole match). `locs` is scratch for the general engine, owned by the caller so that the
    /// hot path does not allocate.
    pub fn captures(
        &self,
        hay: &str,
        slots: &mut [Span],
        locs: &mut Option<regex::CaptureLocations>,
    ) -> bool {
        // Either engine may have filled some slots before it failed.
        let ok = match self.plan.as_ref().and_then(|p| p.captures(hay, slots)) {
            Some(ok) => ok,
            None => self.general(hay, slots, locs),
        };
        if !ok {
            slots.iter_mut().for_each(|s| *s = None);
        }
        ok
    }

    fn general(
        &self,
        hay: &str,
        slots: &mut [Span],
        locs: &mut Option<regex::CaptureLocations>,
    ) -> bool {
        let locs = locs.get_or_insert_with(|| self.regex.capture_locations());
        if self.regex.captures_read(locs, hay).is_none() {
            return false;
        }
        for (g, slot) in slots.iter_mut().enumerate() {
            *slot = locs.get(g);
        }
        true
    }
}

impl Plan {
    fn build(items: &[Hir]) -> Option<Plan> {
        let mut items = items;
        let mut anchored = false;
        let mut anchored_end = false;
        if let Some(HirKind::Look(Look::Start)) = items.first().map(Hir::kind) {
            anchored = true;
            items = &items[1..];
        }
        if let Some(HirKind::Look(Look::End)) = items.last().map(Hir::kind) {
            anchored_end = true;
            items = &items[..items.len() - 1];
        }
        // Group consecutive non-literals into fields.
        let mut raw: Vec<Result<Vec<u8>, Vec<Hir>>> = Vec::new();
        for h in items {
            match h.kind() {
                HirKind::Literal(l) => raw.push(Ok(l.0.to_vec())),
                _ => match raw.last_mut() {
                    Some(Err(field)) => field.push(h.clone()),
                    _ => raw.push(Err(vec![h.clone()])),
                },
            }
        }
        if raw.is_empty() || (!anchored && raw[0].is_err()) {
            return None;
        }
        let mut pieces = Vec::with_capacity(raw.len());
        for (i, piece) in raw.iter().enumerate() {
            match piece {
                Ok(lit) => pieces.push(Piece::Literal(lit.clone())),
                Err(hirs) => {
                    if hirs.iter().any(has_look) {
                        return None;
                    }
                    let mut ambiguous = false;
                    if let Some(Ok(next)) = raw.get(i + 1) {
                        let b = next[0];
                        if b >= 128 {
                            return None;
                        }
                        ambiguous = hirs.iter().any(|h| can_contain(h, b));
                    }
                    let trailing = i + 1 == raw.len() && !anchored_end;
                    let mut field = Field::build(hirs, trailing)?;
                    // Its DFA is built on first use; a line finds out then whether there is one.
                    field.ambiguous = ambiguous;
                    pieces.push(Piece::Field(field));
                }
            }
        }
        let first_literal = match &pieces[0] {
            Piece::Literal(l) if !anchored => Some(memmem::Finder::new(l).into_owned()),
            _ => None,
        };
        let mut first_group = vec![usize::MAX; pieces.len() + 1];
        for (i, piece) in pieces.iter().enumerate().rev() {
            let own = match piece {
                Piece::Field(f) => f.first_group(),
                Piece::Literal(_) => None,
            };
            first_group[i] = own.unwrap_or(usize::MAX).min(first_group[i + 1]);
        }
        Some(Plan {
            anchored_end,
            pieces,
            first_group,
            first_literal,
        })
    }

    /// `None` when the plan gives up and the general engine must decide.
    fn captures(&self, hay: &str, slots: &mut [Span]) -> Option<bool> {
        match &self.first_literal {
            None => self.captures_at(hay, 0, slots),
            Some(finder) => {
                for (attempt, start) in finder.find_iter(hay.as_bytes()).enumerate() {
                    // Each attempt may scan to the end of the line; after a few, hand over to
                    // the regex crate so that a line full of candidate starts stays linear.
                    if attempt == MAX_STARTS {
                        return None;
                    }
                    match self.captures_at(hay, start, slots) {
                        Some(true) => return Some(true),
                        Some(false) => slots.iter_mut().for_each(|s| *s = None),
                        None => return None,
                    }
                }
                Some(false)
            }
        }
    }

    /// `None` when the line has too many candidate splits.
    fn captures_at(&self, hay: &str, start: usize, slots: &mut [Span]) -> Option<bool> {
        let mut budget = MAX_BRANCHES;
        match self.split(0, start, hay, slots, &mut budget) {
            Split::No => Some(false),
            Split::Yes(end) => {
                slots[0] = Some((start, end));
                Some(true)
            }
            Split::GiveUp => None,
        }
    }

    /// Splits `hay[pos..]` by the pieces from `i` on.
    fn split(
        &self,
        i: usize,
        mut pos: usize,
        hay: &str,
        slots: &mut [Span],
        budget: &mut usize,
    ) -> Split {
        let bytes = hay.as_bytes();
        let n = self.pieces.len();
        for (i, piece) in self.pieces.iter().enumerate().skip(i) {
            match piece {
                Piece::Literal(lit) => {
                    if !bytes[pos..].starts_with(lit) {
                        return Split::No;
                    }
                    pos += lit.len();
                }
                Piece::Field(field) => {
                    let end = if let Some(Piece::Literal(next)) = self.pieces.get(i + 1) {
                        if field.ambiguous {
                            return match field.dfa() {
                                Some(dfa) => {
                                    self.branch(i, field, dfa, next, pos, hay, slots, budget)
                                }
                                None => Split::GiveUp,
                            };
                        }
                        match memchr::memchr(next[0], &bytes[pos..]) {
                            Some(off) => pos + off,
                            None => return Split::No,
                        }
                    } else if self.anchored_end {
                        bytes.len()
                    } else {
                        debug_assert_eq!(i, n - 1);
                        match field.tail(hay, pos, slots) {
                            Some(end) => {
                                pos = end;
                                continue;
                            }
                            None => return Split::No,
                        }
                    };
                    if !field.capture(hay, pos, end, slots) {
                        return Split::No;
                    }
                    pos = end;
                }
            }
        }
        if self.anchored_end && pos != bytes.len() {
            return Split::No;
        }
        Split::Yes(pos)
    }

    /// An ambiguous field `i` followed by the literal `next`: each place where the field's DFA
    /// accepts and `next` follows is a candidate end; the split stands if exactly one candidate
    /// lets the rest split (then every match of the regex uses it).
    #[allow(clippy::too_many_arguments)]
    fn branch(
        &self,
        i: usize,
        field: &Field,
        dfa: &dense::DFA<Vec<u32>>,
        next: &[u8],
        pos: usize,
        hay: &str,
        slots: &mut [Span],
        budget: &mut usize,
    ) -> Split {
        let bytes = hay.as_bytes();
        let clear_from = self.first_group[i].min(slots.len());
        let Ok(mut sid) =
            dfa.start_state(&regex_automata::util::start::Config::new().anchored(Anchored::Yes))
        else {
            return Split::GiveUp;
        };
        // Slots of the pieces after this one, as the candidate that split left them.
        let later = slots.len() - clear_from;
        let mut saved: [Span; SAVED_SLOTS] = [None; SAVED_SLOTS];
        if later > SAVED_SLOTS {
            return Split::GiveUp;
        }
        let mut found = None;
        let mut at = pos;
        loop {
            // Where the DFA accepts, the field is valid: only the rest of the line is tried
            // here, and the field's own groups are captured once, for the candidate that won.
            if bytes[at..].starts_with(next) && dfa.is_match_state(dfa.next_eoi_state(sid)) {
                if *budget == 0 {
                    return Split::GiveUp;
                }
                *budget -= 1;
                slots[clear_from..].iter_mut().for_each(|s| *s = None);
                match self.split(i + 1, at, hay, slots, budget) {
                    Split::No => {}
                    Split::GiveUp => return Split::GiveUp,
                    Split::Yes(end) if found.is_none() => {
                        found = Some((at, end));
                        saved[..later].copy_from_slice(&slots[clear_from..]);
                    }
                    Split::Yes(_) => return Split::GiveUp,
                }
            }
            if at == bytes.len() {
                break;
            }
            sid = dfa.next_state(sid, bytes[at]);
            if dfa.is_dead_state(sid) {
                break;
            }
            if dfa.is_quit_state(sid) {
                return Split::GiveUp;
            }
            at += 1;
        }
        let Some((at, end)) = found else {
            return Split::No;
        };
        slots[clear_from..].copy_from_slice(&saved[..later]);
        if !field.capture(hay, pos, at, slots) {
            // The DFA and the field's own check disagree: let the regex crate decide.
            return Split::GiveUp;
        }
        Split::Yes(end)
    }
}

impl Field {
    fn build(hirs: &[Hir], trailing: bool) -> Option<Field> {
        let whole = Hir::concat(hirs.to_vec());
        let mut groups = Vec::new();
        collect_groups(&whole, &mut groups);
        if trailing {
            let sub = regex::Regex::new(&format!("^(?:{whole})")).ok()?;
            let validator = Validator::Check(Box::new(Check::from_regex(sub.clone())));
            return Some(Field {
                validator,
                groups: FieldGroups::Tail { sub, map: groups },
                ambiguous: false,
            });
        }
        let (inner, field_groups) = match (hirs, groups.as_slice()) {
            (_, []) => (whole.clone(), FieldGroups::None),
            ([single], [g]) if matches!(single.kind(), HirKind::Capture(c) if c.index as usize == *g) =>
            {
                let HirKind::Capture(c) = single.kind() else {
                    unreachable!()
                };
                ((*c.sub).clone(), FieldGroups::Whole(*g))
            }
            _ => {
                let sub = regex::Regex::new(&format!("^(?:{whole})$")).ok()?;
                (whole.clone(), FieldGroups::Nested { sub, map: groups })
            }
        };
        let validator = match inner.kind() {
            HirKind::Repetition(rep) if matches!(rep.sub.kind(), HirKind::Class(_)) => {
                let HirKind::Class(class) = rep.sub.kind() else {
                    unreachable!()
                };
                let mut ascii = Box::new([false; 128]);
                for (b, slot) in ascii.iter_mut().enumerate() {
                    *slot = class_contains(class, b as u8);
                }
                Validator::Class {
                    ascii,
                    min: rep.min as usize,
                    max: rep.max.map(|m| m as usize),
                    full: Box::new(Check::new(&inner.to_string())),
                }
            }
            _ => Validator::Check(Box::new(Check::new(&inner.to_string()))),
        };
        Some(Field {
            validator,
            groups: field_groups,
            ambiguous: false,
        })
    }

    /// The DFA of the whole field (anchored, with `$`), when its check is one.
    fn dfa(&self) -> Option<&dense::DFA<Vec<u32>>> {
        let check = match &self.validator {
            Validator::Class { full, .. } => full,
            Validator::Check(c) => c,
        };
        match check.built() {
            Built::Dfa(dfa) => Some(dfa),
            Built::Regex(_) => None,
        }
    }

    fn first_group(&self) -> Option<usize> {
        match &self.groups {
            FieldGroups::None => None,
            FieldGroups::Whole(g) => Some(*g),
            FieldGroups::Nested { map, .. } | FieldGroups::Tail { map, .. } => {
                map.iter().copied().min()
            }
        }
    }

    fn capture(&self, hay: &str, start: usize, end: usize, slots: &mut [Span]) -> bool {
        let text = &hay[start..end];
        match &self.groups {
            FieldGroups::None => self.validator.is_valid(text),
            FieldGroups::Whole(g) => {
                if !self.validator.is_valid(text) {
                    return false;
                }
                slots[*g] = Some((start, end));
                true
            }
            FieldGroups::Tail { .. } => unreachable!("tails are captured by `Field::tail`"),
            FieldGroups::Nested { sub, map } => match sub.captures(text) {
                None => false,
                Some(caps) => {
                    for (i, g) in map.iter().enumerate() {
                        slots[*g] = caps
                            .get(i + 1)
                            .map(|m| (start + m.start(), start + m.end()));
                    }
                    true
                }
            },
        }
    }

    /// Captures a trailing field starting at `start`; returns where it ends.
    fn tail(&self, hay: &str, start: usize, slots: &mut [Span]) -> Option<usize> {
        let FieldGroups::Tail { sub, map } = &self.groups else {
            unreachable!("only trailing fields lack a following literal")
        };
        let caps = sub.captures(&hay[start..])?;
        for (i, g) in map.iter().enumerate() {
            slots[*g] = caps
                .get(i + 1)
                .map(|m| (start + m.start(), start + m.end()));
        }
        Some(start + caps.get(0).map_or(0, |m| m.end()))
    }
}

fn collect_groups(h: &Hir, out: &mut Vec<usize>) {
    match h.kind() {
        HirKind::Capture(c) => {
            out.push(c.index as usize);
            collect_groups(&c.sub, out);
        }
        HirKind::Repetition(r) => collect_groups(&r.sub, out),
        HirKind::Concat(hs) | HirKind::Alternation(hs) => {
            hs.iter().for_each(|h| collect_groups(h, out))
        }
        _ => {}
    }
}

fn has_look(h: &Hir) -> bool {
    match h.kind() {
        HirKind::Look(_) => true,
        HirKind::Capture(c) => has_look(&c.sub),
        HirKind::Repetition(r) => has_look(&r.sub),
        HirKind::Concat(hs) | HirKind::Alternation(hs) => hs.iter().any(has_look),
        _ => false,
    }
}

/// Can any match of `h` contain the ASCII byte `b`? May say yes when unsure, never no wrongly.
fn can_contain(h: &Hir, b: u8) -> bool {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => false,
        HirKind::Literal(l) => l.0.contains(&b),
        HirKind::Class(c) => class_contains(c, b),
        HirKind::Repetition(r) => r.max != Some(0) && can_contain(&r.sub, b),
        HirKind::Capture(c) => can_contain(&c.sub, b),
        HirKind::Concat(hs) | HirKind::Alternation(hs) => hs.iter().any(|h| can_contain(h, b)),
    }
}

fn class_contains(c: &Class, b: u8) -> bool {
    match c {
        Class::Unicode(u) => {
            let ch = b as char;
            u.ranges().iter().any(|r| r.start() <= ch && ch <= r.end())
        }
        Class::Bytes(by) => by.ranges().iter().any(|r| r.start() <= b && b <= r.end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NGINX: &str = r#"^(?P<remote_addr>\S+) \S+ \S+ \[(?P<time_local>[^\]]+)\] "(?P<method>[A-Z]+) (?P<path>\S+) (?P<proto>[^"]+)" (?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<ua>[^"]*)" (?P<request_time>\d+\.\d+)$"#;

    fn both(pattern: &str, hay: &str) -> (Vec<Span>, Vec<Span>) {
        both_with(&Matcher::new(pattern).unwrap(), hay)
    }

    fn both_with(m: &Matcher, hay: &str) -> (Vec<Span>, Vec<Span>) {
        let pattern = m.regex.as_str();
        let mut fast = vec![None; m.group_count()];
        let mut locs = None;
        let ok = m.captures(hay, &mut fast, &mut locs);
        let slow: Vec<Span> = match m.regex.captures(hay) {
            Some(c) => (0..m.group_count())
                .map(|g| c.get(g).map(|x| (x.start(), x.end())))
                .collect(),
            None => vec![None; m.group_count()],
        };
        assert_eq!(ok, slow[0].is_some(), "{pattern} on {hay:?}");
        (fast, slow)
    }

    #[test]
    fn nginx_pattern_is_split_and_exact() {
        assert!(Matcher::new(NGINX).unwrap().is_split());
        let line = r#"10.87.125.42 - - [10/Mar/2024:12:00:00 +0000] "GET /api/v1/orders/14693 HTTP/1.1" 200 259 "-" "Mozilla/5.0 (X11)" 0.029"#;
        let (fast, slow) = both(NGINX, line);
        assert_eq!(fast, slow);
        assert!(fast[0].is_some());
    }

    #[test]
    fn unanchored_literal_first_patterns_are_split() {
        let p = r#""level":"(?P<level>[a-z]+)""#;
        assert!(Matcher::new(p).unwrap().is_split());
        for hay in [
            r#"{"x":"level","level":"info"}"#,
            r#""level":"INFO" "level":"warn""#,
            "none",
        ] {
            let (fast, slow) = both(p, hay);
            assert_eq!(fast, slow, "{hay}");
        }
    }

    /// A line full of candidate starts must not make the split path quadratic: after a few
    /// failed starts the general engine decides, with the same answer.
    #[test]
    fn many_candidate_starts_hand_over_to_the_regex() {
        let p = r"x(?P<a>[^y]*)y";
        let m = Matcher::new(p).unwrap();
        assert!(m.is_split());
        for hay in [
            "x".repeat(10_000),
            format!("{}y", "x".repeat(10_000)),
            "axbxcy".to_string(),
        ] {
            let (fast, slow) = both_with(&m, &hay);
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn anchoring_helps_only_where_it_would_split() {
        let helps = |p: &str| Matcher::new(p).unwrap().anchoring_helps();
        assert!(helps(r"(?P<ip>\S+) - (?P<user>\S+) \[(?P<t>[^\]]+)\]"));
        assert!(!helps(r"^(?P<ip>\S+) - (?P<user>\S+)"));
        assert!(!helps(r"user (?P<u>\S+) from"));
        assert!(!helps(r"(?P<a>.*) (?P<b>.*)"));
        assert!(!helps(r"(?P<status>\d+) (?P<method>\w+)"));
        assert!(helps(r"(?P<status>\d+) (?P<method>\w+)$"));
    }

    #[test]
    fn ambiguous_patterns_fall_back() {
        assert!(!Matcher::new(r"\b(?P<w>\w+)\b").unwrap().is_split());
        assert!(!Matcher::new(r"(?P<a>.*) (?P<b>\d+)$").unwrap().is_split());
    }

    /// Issue 12: a field that may contain the next literal's first byte is split by trying
    /// each place it may end; a line with too many such places goes to the regex crate.
    #[test]
    fn issue12_fields_with_several_candidate_ends() {
        let p = r"^(?P<a>.*) (?P<b>\d+)$";
        let m = Matcher::new(p).unwrap();
        assert!(m.is_split());
        for hay in [
            "x y 12".to_string(),
            "12".to_string(),
            " 12".to_string(),
            format!("{}12", "x ".repeat(100)),
            format!("{}x", "1 ".repeat(100)),
        ] {
            let (fast, slow) = both_with(&m, &hay);
            assert_eq!(fast, slow, "{hay}");
        }
        let mut slots = vec![None; m.group_count()];
        let plan = m.plan.as_ref().unwrap();
        assert_eq!(plan.captures("a b 1", &mut slots), Some(true));
        assert_eq!(plan.captures(&"x ".repeat(100), &mut slots), None);
    }

    /// The split plan must agree with the regex crate on every input; random lines built from
    /// the pattern's own alphabet hit the edge cases (empty fields, missing delimiters).
    #[test]
    fn split_agrees_with_regex_on_random_inputs() {
        let patterns = [
            NGINX,
            r#"^(?P<a>[^ ]*) (?P<b>\d+)"#,
            r#"^(?P<a>\w+)=(?P<b>[^,]*),(?P<c>(?P<d>\d)x|y)"#,
            r#"x(?P<n>\d+(?:\.\d+)?)[,}]"#,
            r#"^(?P<ip>(?:\d{1,3}\.){3}\d{1,3}) (?P<rest>.+)$"#,
            // Issue 12: fields that may contain the byte after them (grok's QS, the request of
            // COMBINEDAPACHELOG) are split where exactly one candidate end works.
            r#"^(?P<a>"(?:\\.|[^\\"]+)+"|-) (?P<b>"(?:\\.|[^\\"]+)+"|"")$"#,
            r#"^x "(?:(?P<v>\w+) (?P<r>\S+)(?: G(?P<h>\d+))?|(?P<raw>.*?))" (?P<s>\d+|-) (?P<q>"[^"]*")"#,
            r#"^(?P<a>.*?)"(?P<b>[^ ]*) (?P<c>.*)$"#,
        ];
        let alphabet: Vec<char> = " -[]\"/.,:=}xyGET0123456789aZé\\".chars().collect();
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for p in patterns {
            let m = Matcher::new(p).unwrap();
            assert!(m.is_split(), "{p}");
            for _ in 0..3000 {
                let len = (next() % 40) as usize;
                let hay: String = (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect();
                let (fast, slow) = both_with(&m, &hay);
                assert_eq!(fast, slow, "{p} on {hay:?}");
            }
        }
    }
}
