//! A Prometheus histogram: cumulative bucket counts, sum and count.

/// Observations of one quantity, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds, ascending (the `+Inf` bucket is `count`).
    pub bounds: Vec<f64>,
    /// Observations ≤ each bound (cumulative).
    pub buckets: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Self {
        Self { bounds: bounds.to_vec(), buckets: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    /// Buckets for a reconcile pass: a millisecond to ten seconds.
    pub fn reconcile() -> Self {
        Self::new(&[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
    }

    pub fn observe(&mut self, value: f64) {
        for (bound, bucket) in self.bounds.iter().zip(&mut self.buckets) {
            if value <= *bound {
                *bucket += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    /// The exposition lines of metric `name`.
    pub fn render(&self, name: &str, help: &str) -> String {
        let mut out = format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
        for (bound, n) in self.bounds.iter().zip(&self.buckets) {
            out.push_str(&format!("{name}_bucket{{le=\"{bound}\"}} {n}\n"));
        }
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {}\n", self.count));
        out.push_str(&format!("{name}_sum {}\n{name}_count {}\n", self.sum, self.count));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let mut h = Histogram::new(&[0.01, 0.1]);
        for v in [0.005, 0.05, 0.5] {
            h.observe(v);
        }
        assert_eq!(h.buckets, [1, 2]);
        assert_eq!(
            h.render("x_seconds", "X."),
            "# HELP x_seconds X.\n# TYPE x_seconds histogram\nx_seconds_bucket{le=\"0.01\"} 1\n\
             x_seconds_bucket{le=\"0.1\"} 2\nx_seconds_bucket{le=\"+Inf\"} 3\nx_seconds_sum 0.555\nx_seconds_count 3\n"
        );
    }
}
