use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Calls `check` until it returns `Some`, backing off from 1 ms to 50 ms between tries, and gives
/// up with [`Error::Timeout`] naming `what` once `timeout` has passed.
pub fn poll_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout { what: what.to_owned(), after_ms: timeout.as_millis() });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_some() {
        let mut calls = 0;
        let got = poll_until("third call", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(got.expect("succeeds"), 3);
    }

    #[test]
    fn times_out_naming_the_condition() {
        let err = poll_until::<()>("never", Duration::from_millis(20), || None).expect_err("times out");
        assert!(err.to_string().contains("never"), "{err}");
    }
}
