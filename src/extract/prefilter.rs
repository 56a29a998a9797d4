//! Finds the rules an event could match with one scan, whatever the number of rules.
//!
//! Every literal a rule names (`contains`, at any depth of `match`, and the longest literal its
//! extraction regex cannot match without) goes into one Aho-Corasick automaton. One pass over
//! the event finds which literals occur. A rule states what it requires as clauses: at least one
//! literal of each clause must occur (`contains: [a, b]` is two clauses `{a}`, `{b}`;
//! `any: [{contains: a}, {contains: b}]` is one clause `{a, b}`; a literal under `not` requires
//! nothing). A rule is a candidate only if every clause is met. Rules without clauses are always
//! candidates, and pay for their own checks. The literals found stay readable in `Scratch`
//! until the next event, so conditions on nested literals cost no second scan.
//!
//! The scan is a leftmost-longest search restarted one byte after each match's start, not an
//! overlapping search: overlapping searches cannot use the SIMD (Teddy) prefilter, and cost
//! five times more on ordinary log lines. It still finds every literal that occurs: every
//! position where some literal starts is reported, with the longest literal starting there,
//! and every shorter literal starting there is a prefix of it. So a match stands for itself
//! and for every literal it contains (`implied`).

use aho_corasick::{AhoCorasick, Input, MatchKind};

#[derive(Debug)]
pub struct Prefilter {
    ac: Option<AhoCorasick>,
    /// For each literal, the literals it contains (itself included).
    implied: Vec<Vec<u32>>,
    /// For each literal, the rules with a clause of that literal alone: the common case, met
    /// by counting, as a literal is found once per event.
    rules_of: Vec<Vec<u32>>,
    /// For each literal, the clauses of several literals it meets (`any`), which must be
    /// counted once however many of their literals occur.
    clauses_of: Vec<Vec<u32>>,
    /// For each clause of several literals, its rule.
    rule_of: Vec<u32>,
    /// How many clauses each rule has.
    needs: Vec<u32>,
    always: Vec<u32>,
}

/// Per-worker scratch, reused across events.
#[derive(Debug, Default)]
pub struct Scratch {
    /// By literal: whether it occurs in the current event.
    seen: Vec<bool>,
    /// The literals that occur in the current event.
    found: Vec<u32>,
    /// By rule: clauses met so far.
    hits: Vec<u32>,
    /// By clause: met by some literal already.
    met: Vec<bool>,
    touched: Vec<u32>,
}

impl Scratch {
    /// Whether literal `lit` occurs in the event `Prefilter::candidates` last scanned.
    #[inline]
    pub fn contains(&self, lit: u32) -> bool {
        self.seen.get(lit as usize).copied().unwrap_or(false)
    }
}

impl Prefilter {
    /// `rule_clauses[r]` lists rule `r`'s clauses, each a set of literal ids one of which must
    /// occur.
    pub fn new(literals: &[Vec<u8>], rule_clauses: &[Vec<Vec<u32>>]) -> Prefilter {
        let mut rules_of = vec![Vec::new(); literals.len()];
        let mut clauses_of = vec![Vec::new(); literals.len()];
        let mut rule_of = Vec::new();
        let mut always = Vec::new();
        for (r, clauses) in rule_clauses.iter().enumerate() {
            if clauses.is_empty() {
                always.push(r as u32);
            }
            for clause in clauses {
                if let [l] = clause[..] {
                    rules_of[l as usize].push(r as u32);
                    continue;
                }
                let id = rule_of.len() as u32;
                rule_of.push(r as u32);
                for &l in clause {
                    if !clauses_of[l as usize].contains(&id) {
                        clauses_of[l as usize].push(id);
                    }
                }
            }
        }
        let ac = (!literals.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(literals)
                .expect("literal sets always build")
        });
        let implied = literals
            .iter()
            .map(|outer| {
                (0..literals.len() as u32)
                    .filter(|&i| memchr::memmem::find(outer, &literals[i as usize]).is_some())
                    .collect()
            })
            .collect();
        Prefilter {
            ac,
            implied,
            rules_of,
            clauses_of,
            rule_of,
            needs: rule_clauses.iter().map(|c| c.len() as u32).collect(),
            always,
        }
    }

    /// Writes the candidate rules for `hay`, in rule order, to `out`, and records in `scratch`
    /// which literals occur.
    pub fn candidates(&self, hay: &[u8], scratch: &mut Scratch, out: &mut Vec<u32>) {
        out.clear();
        for &l in &scratch.found {
            scratch.seen[l as usize] = false;
        }
        scratch.found.clear();
        let Some(ac) = &self.ac else {
            out.extend_from_slice(&self.always);
            return;
        };
        scratch.seen.resize(self.clauses_of.len(), false);
        scratch.hits.resize(self.needs.len(), 0);
        scratch.met.resize(self.rule_of.len(), false);
        let mut at = 0;
        while let Some(m) = ac.find(Input::new(hay).span(at..hay.len())) {
            for &l in &self.implied[m.pattern().as_usize()] {
                if !scratch.seen[l as usize] {
                    scratch.seen[l as usize] = true;
                    scratch.found.push(l);
                }
            }
            at = m.start() + 1;
        }
        out.extend_from_slice(&self.always);
        for &l in &scratch.found {
            for &r in &self.rules_of[l as usize] {
                let h = &mut scratch.hits[r as usize];
                *h += 1;
                if *h == self.needs[r as usize] {
                    out.push(r);
                }
            }
            if self.rule_of.is_empty() {
                continue;
            }
            for &c in &self.clauses_of[l as usize] {
                if scratch.met[c as usize] {
                    continue;
                }
                scratch.met[c as usize] = true;
                scratch.touched.push(c);
                let r = self.rule_of[c as usize];
                let h = &mut scratch.hits[r as usize];
                *h += 1;
                if *h == self.needs[r as usize] {
                    out.push(r);
                }
            }
        }
        for &l in &scratch.found {
            for &r in &self.rules_of[l as usize] {
                scratch.hits[r as usize] = 0;
            }
        }
        for &c in &scratch.touched {
            scratch.met[c as usize] = false;
            scratch.hits[self.rule_of[c as usize] as usize] = 0;
        }
        scratch.touched.clear();
        out.sort_unstable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_needs_all_its_literals() {
        let lits = vec![b"GET".to_vec(), b"HTTP".to_vec(), b"TTP/2".to_vec()];
        let one = |ls: &[u32]| ls.iter().map(|&l| vec![l]).collect::<Vec<_>>();
        let pf = Prefilter::new(&lits, &[one(&[0, 1]), one(&[2]), vec![], one(&[1])]);
        let mut s = Scratch::default();
        let mut out = Vec::new();
        pf.candidates(b"GET / HTTP/1.1", &mut s, &mut out);
        assert_eq!(out, vec![0, 2, 3]);
        pf.candidates(b"POST / HTTP/2", &mut s, &mut out);
        assert_eq!(out, vec![1, 2, 3]);
        pf.candidates(b"nothing", &mut s, &mut out);
        assert_eq!(out, vec![2]);
        assert!(
            !s.contains(0) && !s.contains(1),
            "what the last event had is forgotten"
        );
    }

    /// Issue 9: a rule whose literals are under `any` needs one of them, not all; literals
    /// under `not` need nothing; the literals found are readable afterwards.
    #[test]
    fn issue9_any_clauses_need_one_literal() {
        let lits = vec![b"timeout".to_vec(), b"refused".to_vec(), b"ERROR".to_vec()];
        // r0: ERROR and (timeout or refused); r1: timeout or refused; r2: ERROR twice over.
        let pf = Prefilter::new(
            &lits,
            &[
                vec![vec![2], vec![0, 1]],
                vec![vec![0, 1]],
                vec![vec![2], vec![2]],
            ],
        );
        let (mut s, mut out) = (Scratch::default(), Vec::new());
        pf.candidates(b"ERROR connection refused", &mut s, &mut out);
        assert_eq!(out, vec![0, 1, 2]);
        assert!(s.contains(1) && s.contains(2) && !s.contains(0));
        pf.candidates(b"WARN read timeout, refused", &mut s, &mut out);
        assert_eq!(out, vec![1], "one clause met by two literals counts once");
        pf.candidates(b"ERROR disk full", &mut s, &mut out);
        assert_eq!(out, vec![2]);
    }

    /// Every literal that occurs is found, however the literals overlap, nest or repeat: the
    /// restarted leftmost-longest scan against an overlapping search.
    #[test]
    fn finds_what_an_overlapping_search_finds() {
        let mut rng = crate::workload::Rng::new(3);
        for _ in 0..300 {
            let word = |rng: &mut crate::workload::Rng| -> Vec<u8> {
                (0..1 + rng.below(4))
                    .map(|_| b"ab c"[rng.below(4) as usize])
                    .collect()
            };
            let mut lits: Vec<Vec<u8>> = (0..1 + rng.below(6)).map(|_| word(&mut rng)).collect();
            lits.sort();
            lits.dedup();
            let one_each: Vec<Vec<Vec<u32>>> =
                (0..lits.len() as u32).map(|l| vec![vec![l]]).collect();
            let pf = Prefilter::new(&lits, &one_each);
            let oracle = AhoCorasick::new(&lits).unwrap();
            for _ in 0..20 {
                let hay: Vec<u8> = (0..rng.below(12)).flat_map(|_| word(&mut rng)).collect();
                let mut want: Vec<u32> = oracle
                    .find_overlapping_iter(&hay)
                    .map(|m| m.pattern().as_u32())
                    .collect();
                want.sort_unstable();
                want.dedup();
                let (mut s, mut got) = (Scratch::default(), Vec::new());
                pf.candidates(&hay, &mut s, &mut got);
                assert_eq!(
                    got,
                    want,
                    "literals {lits:?} in {:?}",
                    String::from_utf8_lossy(&hay)
                );
            }
        }
    }
}
