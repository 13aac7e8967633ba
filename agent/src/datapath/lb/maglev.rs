//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): each frontend gets a lookup row of `M`
//! slots (M prime) filled with backend ids so that every backend owns ⌊M/N⌋ or ⌈M/N⌉ slots, and
//! adding or removing one backend moves little more than that backend's own share of slots.
//!
//! The row depends only on the set of backends (sorted by their address and port) and `M`, so every
//! node computes the same row and picks the same backend for a flow.

/// A backend as Maglev sees it: its id in the maps and the stable key its permutation derives from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MaglevBackend {
    /// `addr:port/proto`, the same on every node.
    pub key: String,
    pub id: u32,
}

/// FNV-1a, 64-bit, from a caller-chosen offset basis: two bases give Maglev's two hash functions.
fn fnv1a(bytes: &[u8], basis: u64) -> u64 {
    bytes.iter().fold(basis, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const SKIP_BASIS: u64 = 0x8422_2325_cbf2_9ce4;

/// Builds the lookup row. Empty when there are no backends.
pub fn row(backends: &[MaglevBackend], m: u32) -> Vec<u32> {
    if backends.is_empty() || m < 2 {
        return Vec::new();
    }
    let mut sorted: Vec<&MaglevBackend> = backends.iter().collect();
    sorted.sort();
    let m64 = u64::from(m);
    let perms: Vec<(u64, u64)> = sorted
        .iter()
        .map(|b| {
            let offset = fnv1a(b.key.as_bytes(), OFFSET_BASIS) % m64;
            let skip = fnv1a(b.key.as_bytes(), SKIP_BASIS) % (m64 - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; sorted.len()];
    let mut slots: Vec<Option<u32>> = vec![None; m as usize];
    let mut filled = 0usize;
    'fill: loop {
        for (i, b) in sorted.iter().enumerate() {
            let (offset, skip) = perms[i];
            // Walk this backend's permutation to its next free slot; M prime keeps it a permutation.
            let mut c = ((offset + next[i] * skip) % m64) as usize;
            while slots[c].is_some() {
                next[i] += 1;
                c = ((offset + next[i] * skip) % m64) as usize;
            }
            slots[c] = Some(b.id);
            next[i] += 1;
            filled += 1;
            if filled == slots.len() {
                break 'fill;
            }
        }
    }
    slots.into_iter().flatten().collect()
}

/// Whether `m` is prime (Maglev needs a prime table size).
pub fn is_prime(m: u32) -> bool {
    m >= 2 && (2..).take_while(|d| d * d <= m).all(|d| !m.is_multiple_of(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: u32) -> Vec<MaglevBackend> {
        (0..n)
            .map(|i| MaglevBackend { key: format!("10.244.{}.{}:8080/tcp", i / 250, i % 250 + 1), id: i + 1 })
            .collect()
    }

    fn shares(row: &[u32]) -> std::collections::BTreeMap<u32, usize> {
        let mut map = std::collections::BTreeMap::new();
        for id in row {
            *map.entry(*id).or_default() += 1;
        }
        map
    }

    #[test]
    fn every_backend_gets_an_almost_equal_share() {
        for n in [1, 2, 3, 7, 10, 100] {
            let row = row(&backends(n), 1021);
            assert_eq!(row.len(), 1021);
            let s = shares(&row);
            assert_eq!(s.len(), n as usize, "n={n}: some backend got no slot");
            let (min, max) = (s.values().min().copied().unwrap_or(0), s.values().max().copied().unwrap_or(0));
            assert!(max - min <= 1, "n={n}: shares {min}..{max}");
        }
    }

    #[test]
    fn the_row_ignores_input_order() {
        let mut b = backends(10);
        let a = row(&b, 251);
        b.reverse();
        assert_eq!(a, row(&b, 251));
    }

    #[test]
    fn removing_one_backend_moves_little_more_than_its_share() {
        let m = 1021;
        let all = backends(10);
        let before = row(&all, m);
        let removed = all[3].id;
        let after = row(&all.iter().filter(|b| b.id != removed).cloned().collect::<Vec<_>>(), m);
        let moved_others = before.iter().zip(&after).filter(|(b, a)| **b != removed && b != a).count();
        // Its own ~102 slots must move; Maglev's paper bounds the rest to a small fraction.
        assert!(
            moved_others * 100 <= m as usize * 5,
            "{moved_others} of {m} slots of surviving backends moved"
        );
    }

    #[test]
    fn adding_a_backend_takes_mostly_slots_for_itself() {
        let m = 1021;
        let before = row(&backends(9), m);
        let after = row(&backends(10), m);
        let changed = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let to_new = after.iter().zip(&before).filter(|(a, b)| a != b && **a == 10).count();
        assert!(changed - to_new <= m as usize / 20, "{changed} changed, {to_new} to the new backend");
    }

    #[test]
    fn primes() {
        assert!(is_prime(1021) && is_prime(251) && is_prime(2) && is_prime(16381));
        assert!(!is_prime(1) && !is_prime(1024) && !is_prime(0));
    }
}
