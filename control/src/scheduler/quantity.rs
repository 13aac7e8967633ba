//! Kubernetes `Quantity` strings (`500m`, `1.5Gi`, `1e3`) turned into exact integers.
//!
//! The scheduler compares integers only: cpu in millicores, everything else in whole units
//! (bytes, pods, devices). Kubernetes keeps quantities as fixed-point decimals and rounds up
//! when it asks for an integer (`0.1m` cpu is `1m`, `0.5` bytes is `1`), and so does this
//! module: a quantity is kept as an exact `mantissa × 10^exp10` and only rounded at the end.

use std::fmt;

/// Why a quantity string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityError {
    /// Not of the form `<sign><number><suffix>`.
    Malformed,
    /// A negative amount: requests and allocatable are never negative in a valid object.
    Negative,
    /// Needs more than 128 bits of exact intermediate precision (more than 38 significant digits,
    /// or a long fraction with a large binary suffix); no real manifest writes such a value.
    TooPrecise,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed quantity",
            Self::Negative => "negative quantity",
            Self::TooPrecise => "quantity too precise to represent exactly",
        })
    }
}

impl std::error::Error for QuantityError {}

/// An exact, non-negative quantity: `significand × 10^exp10` (a binary suffix is already folded
/// into the significand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    significand: u128,
    exp10: i32,
}

/// Largest number of decimal digits a `u128` always holds.
const MAX_DIGITS: usize = 38;

impl Quantity {
    /// Parses `s` with Kubernetes' grammar: an optional sign, digits with an optional decimal
    /// point, then one suffix: binary (`Ki` … `Ei`), decimal (`n`, `u`, `m`, none, `k`, `M`, `G`,
    /// `T`, `P`, `E`) or an exponent (`e3`, `E-2`).
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let number_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        let (number, suffix) = rest.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return Err(QuantityError::Malformed);
        }
        let (exp10, exp2) = suffix_exponents(suffix)?;

        // Significant digits only: leading zeros say nothing, trailing zeros move the exponent.
        // Zeros are held back until a later non-zero digit shows they are not trailing.
        let mut mantissa = 0u128;
        let (mut significant, mut held_zeros) = (0usize, 0usize);
        for digit in whole.bytes().chain(fraction.bytes()).map(|b| u128::from(b - b'0')) {
            if digit == 0 {
                held_zeros += usize::from(significant > 0);
                continue;
            }
            significant += held_zeros + 1;
            if significant > MAX_DIGITS {
                return Err(QuantityError::TooPrecise);
            }
            for _ in 0..held_zeros {
                mantissa *= 10;
            }
            mantissa = mantissa * 10 + digit;
            held_zeros = 0;
        }
        if significant == 0 {
            return Ok(Self { significand: 0, exp10: 0 });
        }
        if negative {
            return Err(QuantityError::Negative);
        }
        let significand = mantissa.checked_mul(1u128 << exp2).ok_or(QuantityError::TooPrecise)?;
        let fraction_digits = i32::try_from(fraction.len()).map_err(|_| QuantityError::TooPrecise)?;
        let trailing = i32::try_from(held_zeros).map_err(|_| QuantityError::TooPrecise)?;
        let exp10 = exp10
            .checked_sub(fraction_digits)
            .and_then(|e| e.checked_add(trailing))
            .ok_or(QuantityError::TooPrecise)?;
        Ok(Self { significand, exp10 })
    }

    /// The amount in whole units, rounded up, capped at `i64::MAX` (Kubernetes' `Value()`).
    pub fn value(&self) -> i64 {
        self.scaled(0)
    }

    /// The amount in thousandths, rounded up, capped at `i64::MAX` (Kubernetes' `MilliValue()`,
    /// used for cpu).
    pub fn milli_value(&self) -> i64 {
        self.scaled(3)
    }

    /// `ceil(self × 10^extra)`, saturating.
    fn scaled(&self, extra: i32) -> i64 {
        if self.significand == 0 {
            return 0;
        }
        let exp = self.exp10.saturating_add(extra);
        let exact = if exp >= 0 {
            u32::try_from(exp)
                .ok()
                .and_then(|e| 10u128.checked_pow(e))
                .and_then(|scale| self.significand.checked_mul(scale))
        } else {
            match 10u128.checked_pow(exp.unsigned_abs()) {
                Some(divisor) => {
                    let rounded_up = !self.significand.is_multiple_of(divisor);
                    Some(self.significand / divisor + u128::from(rounded_up))
                }
                // The divisor exceeds any u128, so 0 < amount < 1: it rounds up to one.
                None => Some(1),
            }
        };
        exact.and_then(|v| i64::try_from(v).ok()).unwrap_or(i64::MAX)
    }
}

/// The decimal and binary exponents a suffix stands for.
fn suffix_exponents(suffix: &str) -> Result<(i32, u32), QuantityError> {
    let decimal = |e: i32| Ok((e, 0));
    let binary = |e: u32| Ok((0, e));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E']).ok_or(QuantityError::Malformed)?;
            let unsigned = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QuantityError::Malformed);
            }
            exponent.parse::<i32>().map(|e| (e, 0)).map_err(|_| QuantityError::TooPrecise)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> i64 {
        Quantity::parse(s).expect("valid quantity").value()
    }

    fn milli(s: &str) -> i64 {
        Quantity::parse(s).expect("valid quantity").milli_value()
    }

    #[test]
    fn decimal_suffixes() {
        assert_eq!(value("0"), 0);
        assert_eq!(value("7"), 7);
        assert_eq!(value("1k"), 1_000);
        assert_eq!(value("2M"), 2_000_000);
        assert_eq!(value("3G"), 3_000_000_000);
        assert_eq!(value("1T"), 1_000_000_000_000);
        assert_eq!(value("1P"), 1_000_000_000_000_000);
        assert_eq!(value("2E"), 2_000_000_000_000_000_000);
        assert_eq!(milli("250m"), 250);
        assert_eq!(milli("1500u"), 2, "1.5m rounds up");
        assert_eq!(milli("1n"), 1, "any positive cpu is at least 1m");
        assert_eq!(value("1000n"), 1, "1µ rounds up to one unit");
    }

    #[test]
    fn binary_suffixes() {
        assert_eq!(value("1Ki"), 1024);
        assert_eq!(value("128Mi"), 128 << 20);
        assert_eq!(value("1.5Gi"), 3 << 29);
        assert_eq!(value("2Ti"), 2 << 40);
        assert_eq!(value("1Pi"), 1 << 50);
        assert_eq!(value("3Ei"), 3 << 60);
        assert_eq!(value("8Ei"), i64::MAX, "2^63 does not fit and is capped");
        assert_eq!(value("0.1Ki"), 103, "102.4 rounds up");
    }

    #[test]
    fn decimal_points_and_signs() {
        assert_eq!(milli("0.5"), 500);
        assert_eq!(milli(".5"), 500);
        assert_eq!(milli("2."), 2000);
        assert_eq!(milli("+1"), 1000);
        assert_eq!(milli("0.0001"), 1, "0.1m rounds up to 1m");
        assert_eq!(value("0.5"), 1);
        assert_eq!(value("1.000"), 1);
        assert_eq!(value("000120"), 120);
        assert_eq!(milli("-0"), 0);
    }

    #[test]
    fn exponents() {
        assert_eq!(value("1e3"), 1_000);
        assert_eq!(value("1E3"), 1_000);
        assert_eq!(value("1e+3"), 1_000);
        assert_eq!(milli("1e-3"), 1);
        assert_eq!(milli("5e-4"), 1);
        assert_eq!(value("12e-1"), 2);
        assert_eq!(value("1e40"), i64::MAX);
        assert_eq!(value("1e-60"), 1);
        assert_eq!(value("1E"), 1_000_000_000_000_000_000, "a bare E is exa, not an exponent");
    }

    #[test]
    fn caps_at_i64_max() {
        assert_eq!(value("9223372036854775807"), i64::MAX);
        assert_eq!(value("9223372036854775808"), i64::MAX);
        assert_eq!(milli("9223372036854775807"), i64::MAX);
        assert_eq!(value("9223372036854775806"), i64::MAX - 1);
    }

    #[test]
    fn refuses_malformed() {
        for bad in ["", "m", ".", "1..0", "1.0.0", "1 Gi", "1gi", "1KiB", "1e", "1e+", "abc", "1x", "--1"] {
            assert_eq!(Quantity::parse(bad), Err(QuantityError::Malformed), "{bad:?}");
        }
        assert_eq!(Quantity::parse("-1"), Err(QuantityError::Negative));
        assert_eq!(Quantity::parse("-100m"), Err(QuantityError::Negative));
        let long = format!("1.{}1", "0".repeat(40));
        assert_eq!(Quantity::parse(&long), Err(QuantityError::TooPrecise));
        assert_eq!(Quantity::parse("1e99999999999"), Err(QuantityError::TooPrecise));
    }
}
