//! Summaries: quantiles over a sliding window, from `hdrhistogram`.
//!
//! The window is `age_buckets` rotating histograms of `max_age / age_buckets` each, as in the
//! Prometheus client libraries. Values are recorded in millionths with two significant digits
//! (relative error under 1%), which keeps one window at a few KiB per series.

use std::time::Duration;

use hdrhistogram::Histogram;

const SCALE: f64 = 1e6;

#[derive(Debug, Clone)]
pub struct Summary {
    pub(super) slot_ms: u64,
    /// `(epoch, histogram)`; slot `i` holds the epoch `e` with `e % len == i`.
    pub(super) slots: Vec<(u64, Option<Histogram<u64>>)>,
    pub sum: f64,
    pub count: u64,
}

impl Summary {
    pub fn new(max_age: Duration, age_buckets: usize) -> Summary {
        let n = age_buckets.max(1);
        Summary {
            slot_ms: (max_age.as_millis() as u64 / n as u64).max(1),
            slots: vec![(0, None); n],
            sum: 0.0,
            count: 0,
        }
    }

    fn slot(&mut self, epoch: u64) -> &mut Histogram<u64> {
        let n = self.slots.len() as u64;
        let (e, h) = &mut self.slots[(epoch % n) as usize];
        if *e != epoch || h.is_none() {
            *e = epoch;
            match h {
                Some(h) => h.reset(),
                None => *h = Some(Histogram::new(2).expect("2 significant digits is valid")),
            }
        }
        h.as_mut().expect("set above")
    }

    pub fn observe(&mut self, v: f64, now_ms: u64) {
        self.sum += v;
        self.count += 1;
        let scaled = (v.max(0.0) * SCALE).round() as u64;
        // Auto-resizing histograms grow to any u64, so recording cannot fail.
        let _ = self.slot(now_ms / self.slot_ms).record(scaled);
    }

    pub fn merge(&mut self, other: &Summary, now_ms: u64) {
        self.sum += other.sum;
        self.count += other.count;
        let oldest = (now_ms / self.slot_ms).saturating_sub(self.slots.len() as u64 - 1);
        for (epoch, h) in &other.slots {
            if let Some(h) = h.as_ref().filter(|_| *epoch >= oldest) {
                let mine = self.slot(*epoch);
                mine.add(h).expect("auto-resizing histograms always add");
            }
        }
    }

    /// The quantiles of the values seen in the window ending at `now_ms`; NaN when none.
    pub fn quantiles(&self, qs: &[f64], now_ms: u64) -> Vec<f64> {
        let oldest = (now_ms / self.slot_ms).saturating_sub(self.slots.len() as u64 - 1);
        let mut all: Option<Histogram<u64>> = None;
        for (epoch, h) in &self.slots {
            if let Some(h) = h.as_ref().filter(|_| *epoch >= oldest) {
                match &mut all {
                    None => all = Some(h.clone()),
                    Some(a) => a.add(h).expect("auto-resizing histograms always add"),
                }
            }
        }
        match all.filter(|h| !h.is_empty()) {
            None => vec![f64::NAN; qs.len()],
            Some(h) => qs
                .iter()
                .map(|q| h.median_equivalent(h.value_at_quantile(*q)) as f64 / SCALE)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_known_data() {
        let mut s = Summary::new(Duration::from_secs(60), 3);
        for i in 1..=1000 {
            s.observe(i as f64 / 1000.0, 0);
        }
        let q = s.quantiles(&[0.5, 0.9, 0.99], 0);
        for (got, want) in q.iter().zip([0.5, 0.9, 0.99]) {
            assert!((got - want).abs() / want < 0.01, "{got} vs {want}");
        }
        assert_eq!(s.count, 1000);
        assert!((s.sum - 500.5).abs() < 1e-9);
    }

    #[test]
    fn old_observations_leave_the_window() {
        let mut s = Summary::new(Duration::from_secs(60), 3);
        s.observe(100.0, 0);
        s.observe(1.0, 70_000);
        assert!((s.quantiles(&[0.99], 70_000)[0] - 1.0).abs() < 0.01);
        assert!(s.quantiles(&[0.5], 500_000)[0].is_nan());
        assert_eq!(
            s.count, 2,
            "sum and count are cumulative, as Prometheus expects"
        );
    }
}
