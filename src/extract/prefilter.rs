//! Finds the rules an event could match with one scan, whatever the number of rules.
//!
//! Every literal a rule requires (`match.contains`, and the longest literal its extraction
//! regex cannot match without) goes into one Aho-Corasick automaton. One pass over the event
//! finds which literals occur; a rule is a candidate only if all of its literals do. Rules
//! without literals are always candidates, and pay for their own checks.
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
    /// For each literal, the rules that require it.
    rules_of: Vec<Vec<u32>>,
    /// How many literals each rule requires.
    needs: Vec<u32>,
    always: Vec<u32>,
}

/// Per-worker scratch, reused across events.
#[derive(Debug, Default)]
pub struct Scratch {
    seen: Vec<bool>,
    hits: Vec<u32>,
    found: Vec<u32>,
}

impl Prefilter {
    /// `rule_literals[r]` lists the literal ids rule `r` requires.
    pub fn new(literals: &[Vec<u8>], rule_literals: &[Vec<u32>]) -> Prefilter {
        let mut rules_of = vec![Vec::new(); literals.len()];
        let mut always = Vec::new();
        for (r, lits) in rule_literals.iter().enumerate() {
            if lits.is_empty() {
                always.push(r as u32);
            }
            for &l in lits {
                rules_of[l as usize].push(r as u32);
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
            needs: rule_literals.iter().map(|l| l.len() as u32).collect(),
            always,
        }
    }

    /// Writes the candidate rules for `hay`, in rule order, to `out`.
    pub fn candidates(&self, hay: &[u8], scratch: &mut Scratch, out: &mut Vec<u32>) {
        out.clear();
        let Some(ac) = &self.ac else {
            out.extend_from_slice(&self.always);
            return;
        };
        scratch.seen.resize(self.rules_of.len(), false);
        scratch.hits.resize(self.needs.len(), 0);
        scratch.found.clear();
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
            scratch.seen[l as usize] = false;
            for &r in &self.rules_of[l as usize] {
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
        out.sort_unstable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_needs_all_its_literals() {
        let lits = vec![b"GET".to_vec(), b"HTTP".to_vec(), b"TTP/2".to_vec()];
        let pf = Prefilter::new(&lits, &[vec![0, 1], vec![2], vec![], vec![1]]);
        let mut s = Scratch::default();
        let mut out = Vec::new();
        pf.candidates(b"GET / HTTP/1.1", &mut s, &mut out);
        assert_eq!(out, vec![0, 2, 3]);
        pf.candidates(b"POST / HTTP/2", &mut s, &mut out);
        assert_eq!(out, vec![1, 2, 3]);
        pf.candidates(b"nothing", &mut s, &mut out);
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
            let one_each: Vec<Vec<u32>> = (0..lits.len() as u32).map(|l| vec![l]).collect();
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
