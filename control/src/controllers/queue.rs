//! The work queue of the control loops: each item waits at most once (queuing it again while it
//! waits changes nothing), may wait until a time (a deadline, a back-off), and failing items back
//! off exponentially until they succeed.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    hash::Hash,
    time::Duration,
};

use jiff::Timestamp;

use super::clock;

/// Exponential back-off bounds.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after the `failures`-th failure in a row (1-based).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

#[derive(Debug)]
pub struct Queue<W> {
    ready: VecDeque<W>,
    queued: HashSet<W>,
    /// (due, tie-breaker) → item; `due_at` is the inverse.
    delayed: BTreeMap<(Timestamp, u64), W>,
    due_at: HashMap<W, (Timestamp, u64)>,
    failures: HashMap<W, u32>,
    seq: u64,
}

impl<W> Default for Queue<W> {
    fn default() -> Self {
        Self {
            ready: VecDeque::new(),
            queued: HashSet::new(),
            delayed: BTreeMap::new(),
            due_at: HashMap::new(),
            failures: HashMap::new(),
            seq: 0,
        }
    }
}

impl<W: Clone + Eq + Hash> Queue<W> {
    /// Queues `item` to run as soon as possible.
    pub fn push(&mut self, item: W) {
        if let Some(slot) = self.due_at.remove(&item) {
            self.delayed.remove(&slot);
        }
        if self.queued.insert(item.clone()) {
            self.ready.push_back(item);
        }
    }

    /// Queues `item` to run at `at`, unless it is due sooner already.
    pub fn push_at(&mut self, item: W, at: Timestamp) {
        if self.queued.contains(&item) || self.due_at.get(&item).is_some_and(|(due, _)| *due <= at) {
            return;
        }
        if let Some(slot) = self.due_at.remove(&item) {
            self.delayed.remove(&slot);
        }
        self.seq += 1;
        let slot = (at, self.seq);
        self.delayed.insert(slot, item.clone());
        self.due_at.insert(item, slot);
    }

    /// The next item due at `now`, if any.
    pub fn pop(&mut self, now: Timestamp) -> Option<W> {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let item = entry.remove();
            self.due_at.remove(&item);
            if self.queued.insert(item.clone()) {
                self.ready.push_back(item);
            }
        }
        let item = self.ready.pop_front()?;
        self.queued.remove(&item);
        Some(item)
    }

    /// When the earliest waiting item falls due (`None`: nothing waits; items ready now count as
    /// due at the start of time).
    pub fn next_due(&self) -> Option<Timestamp> {
        if self.ready.is_empty() {
            self.delayed.keys().next().map(|(at, _)| *at)
        } else {
            Some(Timestamp::MIN)
        }
    }

    /// Queues `item` again after a back-off that grows with each failure in a row.
    pub fn failed(&mut self, item: W, now: Timestamp, backoff: Backoff) -> Duration {
        let delay = self.count_failure(&item, backoff);
        self.push_at(item, clock::after(now, delay));
        delay
    }

    /// Counts a failure of `item` without queuing it; returns the back-off it has earned.
    pub fn count_failure(&mut self, item: &W, backoff: Backoff) -> Duration {
        let failures = self.failures.entry(item.clone()).or_default();
        *failures = failures.saturating_add(1);
        backoff.delay(*failures)
    }

    /// Ends `item`'s run of failures.
    pub fn succeeded(&mut self, item: &W) {
        self.failures.remove(item);
    }

    /// Items ready or waiting.
    pub fn len(&self) -> usize {
        self.ready.len() + self.delayed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_000_000 + s).expect("time")
    }

    #[test]
    fn items_wait_once_and_in_order() {
        let mut q = Queue::default();
        for k in ["a", "b", "a", "c", "b"] {
            q.push(k);
        }
        let order: Vec<_> = std::iter::from_fn(|| q.pop(at(0))).collect();
        assert_eq!(order, ["a", "b", "c"]);
        assert!(q.is_empty());
    }

    #[test]
    fn delayed_items_fall_due_at_their_time_and_the_earliest_time_wins() {
        let mut q = Queue::default();
        q.push_at("late", at(10));
        q.push_at("soon", at(5));
        q.push_at("late", at(20));
        assert_eq!(q.next_due(), Some(at(5)));
        assert_eq!(q.pop(at(4)), None);
        assert_eq!(q.pop(at(5)), Some("soon"));
        assert_eq!(q.pop(at(9)), None);
        q.push_at("late", at(7));
        assert_eq!(q.pop(at(7)), Some("late"));
        // Pushing now beats waiting.
        q.push_at("x", at(100));
        q.push("x");
        assert_eq!(q.pop(at(0)), Some("x"));
        assert!(q.is_empty());
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap_and_reset_on_success() {
        let mut q = Queue::default();
        let b = Backoff { base: Duration::from_millis(10), max: Duration::from_millis(50) };
        let delays: Vec<u128> = (0..5)
            .map(|_| {
                let d = q.failed("k", at(0), b);
                assert_eq!(q.pop(clock::after(at(0), d)), Some("k"));
                d.as_millis()
            })
            .collect();
        assert_eq!(delays, [10, 20, 40, 50, 50]);
        q.succeeded(&"k");
        assert_eq!(q.failed("k", at(0), b), Duration::from_millis(10));
    }
}
