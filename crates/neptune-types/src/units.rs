//! Units as types. Sizes are whole MiB, bandwidth whole Mbit/s, clocks whole
//! MHz, so arithmetic is exact and `Eq` means what it says.
//!
//! Text forms follow the paper's XML: RAM in MiB (`<ram dimension="256"/>`),
//! disk in GiB with a decimal comma or point (`<hd dimension="2,0"/>`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// Longest fraction accepted in a decimal, in digits.
const MAX_FRACTION_DIGITS: u32 = 12;

/// A non-negative decimal as `numerator / 10^scale`.
///
/// Accepts `2`, `2.5` and the paper's `2,0`, with surrounding whitespace.
pub fn parse_decimal(text: &str) -> Result<(u128, u32), DomainError> {
    let value = text.trim();
    let nan = || DomainError::NotANumber {
        value: text.to_owned(),
    };
    let too_large = || DomainError::TooLarge {
        value: text.to_owned(),
    };
    if let Some(rest) = value.strip_prefix('-') {
        return match parse_decimal(rest) {
            Ok(_) => Err(DomainError::Negative {
                value: text.to_owned(),
            }),
            Err(_) => Err(nan()),
        };
    }
    let (int, frac) = match value.find(['.', ',']) {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return Err(nan());
    }
    if value.contains('.') && value.contains(',') {
        return Err(nan());
    }
    let frac = frac.trim_end_matches('0');
    let scale = u32::try_from(frac.len()).map_err(|_| too_large())?;
    if scale > MAX_FRACTION_DIGITS || int.len() > 20 {
        return Err(too_large());
    }
    let mut n: u128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u128::from(b - b'0')))
            .ok_or_else(too_large)?;
    }
    Ok((n, scale))
}

fn parse_whole(text: &str) -> Result<u64, DomainError> {
    let (n, scale) = parse_decimal(text)?;
    if scale != 0 {
        return Err(DomainError::NotAnInteger {
            value: text.to_owned(),
        });
    }
    u64::try_from(n).map_err(|_| DomainError::TooLarge {
        value: text.to_owned(),
    })
}

/// A size in mebibytes (2^20 bytes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Mib(pub u64);

impl Mib {
    pub const ZERO: Mib = Mib(0);

    /// Whole MiB from text such as `256` (or `256,0`).
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        parse_whole(text).map(Mib)
    }

    pub fn from_gib(gib: u64) -> Self {
        Mib(gib.saturating_mul(1024))
    }

    /// GiB from text such as `2,0` or `1.5`, rounded up to a whole MiB.
    pub fn parse_gib(text: &str) -> Result<Self, DomainError> {
        let too_large = || DomainError::TooLarge {
            value: text.to_owned(),
        };
        let (n, scale) = parse_decimal(text)?;
        let denom = 10u128.pow(scale);
        let mib = n.checked_mul(1024).ok_or_else(too_large)?.div_ceil(denom);
        u64::try_from(mib).map(Mib).map_err(|_| too_large())
    }

    /// The shortest GiB decimal that [`Mib::parse_gib`] reads back as `self`.
    pub fn to_gib_text(self) -> String {
        let whole = self.0 / 1024;
        let rem = self.0 % 1024;
        if rem == 0 {
            return whole.to_string();
        }
        // 1024 = 2^10, so ten fraction digits always represent rem/1024 exactly;
        // fewer digits suffice when rounding up lands on the same MiB.
        for digits in 1..=10u32 {
            let scale = 10u128.pow(digits);
            let frac = (u128::from(rem) * scale) / 1024;
            for candidate in [frac, frac + 1] {
                if candidate >= scale {
                    continue;
                }
                if (candidate * 1024).div_ceil(scale) == u128::from(rem) {
                    return format!("{whole}.{candidate:0width$}", width = digits as usize);
                }
            }
        }
        unreachable_exact(whole, rem)
    }

    pub fn gib_f64(self) -> f64 {
        self.0 as f64 / 1024.0
    }

    pub fn saturating_add(self, other: Mib) -> Mib {
        Mib(self.0.saturating_add(other.0))
    }
}

// Ten digits are exact (see above); kept as a function so the loop has no panic path.
fn unreachable_exact(whole: u64, rem: u64) -> String {
    format!("{whole}.{:010}", u128::from(rem) * 10_000_000_000 / 1024)
}

impl fmt::Display for Mib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 1024 {
            write!(f, "{} GiB", self.to_gib_text())
        } else {
            write!(f, "{} MiB", self.0)
        }
    }
}

/// A bandwidth in megabits per second.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Mbps(pub u64);

impl Mbps {
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        parse_whole(text).map(Mbps)
    }

    pub fn saturating_add(self, other: Mbps) -> Mbps {
        Mbps(self.0.saturating_add(other.0))
    }
}

impl fmt::Display for Mbps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 1000 && self.0 % 1000 == 0 {
            write!(f, "{} Gbit/s", self.0 / 1000)
        } else {
            write!(f, "{} Mbit/s", self.0)
        }
    }
}

/// A clock frequency in megahertz.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Mhz(pub u32);

impl Mhz {
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let n = parse_whole(text)?;
        u32::try_from(n)
            .map(Mhz)
            .map_err(|_| DomainError::TooLarge {
                value: text.to_owned(),
            })
    }
}

impl fmt::Display for Mhz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} MHz", self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn decimal_comma_and_point() {
        assert_eq!(parse_decimal("2,0").unwrap(), (2, 0));
        assert_eq!(parse_decimal("2.50").unwrap(), (25, 1));
        assert_eq!(parse_decimal(" 7 ").unwrap(), (7, 0));
        assert_eq!(parse_decimal(".5").unwrap(), (5, 1));
    }

    #[test]
    fn decimal_errors_name_the_problem() {
        assert!(matches!(
            parse_decimal("two"),
            Err(DomainError::NotANumber { .. })
        ));
        assert!(matches!(
            parse_decimal(""),
            Err(DomainError::NotANumber { .. })
        ));
        assert!(matches!(
            parse_decimal("1.2.3"),
            Err(DomainError::NotANumber { .. })
        ));
        assert!(matches!(
            parse_decimal("1.2,3"),
            Err(DomainError::NotANumber { .. })
        ));
        assert!(matches!(
            parse_decimal("-3"),
            Err(DomainError::Negative { .. })
        ));
        assert!(matches!(
            parse_decimal("1e3"),
            Err(DomainError::NotANumber { .. })
        ));
        assert!(matches!(
            parse_decimal("999999999999999999999999999"),
            Err(DomainError::TooLarge { .. })
        ));
        assert!(matches!(
            Mib::parse("1.5"),
            Err(DomainError::NotAnInteger { .. })
        ));
    }

    #[test]
    fn paper_disk_is_two_gib() {
        assert_eq!(Mib::parse_gib("2,0").unwrap(), Mib(2048));
        assert_eq!(Mib::parse_gib("1.1").unwrap(), Mib(1127));
        assert_eq!(Mib(1127).to_gib_text(), "1.1");
        assert_eq!(Mib(2048).to_gib_text(), "2");
        assert_eq!(Mib(1536).to_gib_text(), "1.5");
        assert_eq!(Mib(1).to_gib_text(), "0.0009");
    }

    #[test]
    fn display() {
        assert_eq!(Mib(256).to_string(), "256 MiB");
        assert_eq!(Mib(2048).to_string(), "2 GiB");
        assert_eq!(Mbps(100).to_string(), "100 Mbit/s");
        assert_eq!(Mbps(10_000).to_string(), "10 Gbit/s");
    }

    proptest! {
        #[test]
        fn gib_text_round_trips(mib in 0u64..(1u64 << 40)) {
            let text = Mib(mib).to_gib_text();
            prop_assert_eq!(Mib::parse_gib(&text).unwrap(), Mib(mib), "{}", text);
            prop_assert!(text.len() <= 25);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,30}") {
            let _ = parse_decimal(&s);
            let _ = Mib::parse_gib(&s);
        }
    }
}
