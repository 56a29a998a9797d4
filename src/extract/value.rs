//! Converting extracted text to numbers: `int`, `float`, `duration`, `bool`, times `scale`.
//!
//! **A value is the double nearest to the exact decimal the event wrote, times the exact
//! decimal `scale`**: `700ms`, `ms=700` with `scale: 0.001` and `0.7` are all the double the
//! bucket bound `0.7` is. Where units or a `scale` multiply, text is read into a `Decimal`
//! (digits and a power of ten, no rounding), multiplied exactly, and rounded to a double once;
//! a plain number is read by the standard parser, which rounds once too.
//!
//! Why not `700.0 * 0.001`: that rounds twice (0.001 is not a double) and gives
//! 0.7000000000000001, above the bound, so an event on a bucket boundary landed in the next
//! bucket. Rounding once is monotonic, so a value at or below a bound (both as written) always
//! lands at or below it; comparing against each bound's decimal at observe time would be exact
//! too, but would cost a decimal comparison per bucket on the hot path, where rounding once costs
//! one division. Values are exact up to 19 significant digits; longer ones are cut to 19 first
//! (beyond what a double holds anyway).
//!
//! **Every result is finite**: a value that overflows a double (a 400-digit `ms=`, a huge
//! `scale`) is `ValueError::NotFinite`, never an infinity that would stay in a counter for good.

use crate::rules::program::ValueType;

/// Why a value could not be used. Bounded: these become label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueError {
    NotANumber,
    NotAnInteger,
    NotADuration,
    NotABool,
    NegativeCounter,
    /// The number is too large for a double (after `scale`).
    NotFinite,
}

impl ValueError {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueError::NotANumber => "not_a_number",
            ValueError::NotAnInteger => "not_an_integer",
            ValueError::NotADuration => "not_a_duration",
            ValueError::NotABool => "not_a_bool",
            ValueError::NegativeCounter => "negative_counter",
            ValueError::NotFinite => "not_finite",
        }
    }
}

/// `mantissa × 10^exp`, exactly. The mantissa of a parsed number has at most 19 digits, so
/// two of them multiply without overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    mantissa: u128,
    exp: i32,
    neg: bool,
}

/// Powers of ten a double holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];
const MAX_DIGITS: u32 = 19;

impl Decimal {
    pub const ONE: Decimal = Decimal {
        mantissa: 1,
        exp: 0,
        neg: false,
    };

    fn int(v: u128) -> Decimal {
        Decimal {
            mantissa: v,
            exp: 0,
            neg: false,
        }
    }

    /// Reads what `f64::from_str` reads, except `inf` and `nan`: an optional sign, digits with
    /// at most one `.` (at least one digit), an optional exponent. Surrounding whitespace is
    /// ignored.
    pub fn parse(text: &str) -> Option<Decimal> {
        let b = text.trim().as_bytes();
        let mut i = 0;
        let neg = match b.first() {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let (mut mantissa, mut digits, mut exp) = (0u64, 0u32, 0i64);
        let (mut seen_digit, mut seen_point) = (false, false);
        while i < b.len() {
            match b[i] {
                c @ b'0'..=b'9' => {
                    seen_digit = true;
                    if digits < MAX_DIGITS {
                        if mantissa != 0 || c != b'0' {
                            mantissa = mantissa * 10 + u64::from(c - b'0');
                            digits += 1;
                        }
                        if seen_point {
                            exp -= 1;
                        }
                    } else if !seen_point {
                        // Cut beyond 19 significant digits: the digit's place still counts.
                        exp += 1;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                _ => break,
            }
            i += 1;
        }
        if !seen_digit {
            return None;
        }
        if i < b.len() {
            if !matches!(b[i], b'e' | b'E') {
                return None;
            }
            i += 1;
            let eneg = match b.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let start = i;
            let mut e: i64 = 0;
            while let Some(c @ b'0'..=b'9') = b.get(i) {
                // Saturates far beyond any double; the result is then 0 or not finite.
                e = (e * 10 + i64::from(c - b'0')).min(1 << 20);
                i += 1;
            }
            if i == start || i < b.len() {
                return None;
            }
            exp += if eneg { -e } else { e };
        }
        Some(Decimal {
            mantissa: u128::from(mantissa),
            exp: exp.clamp(-(1 << 21), 1 << 21) as i32,
            neg,
        })
    }

    /// The exact product, its mantissa cut to 19 digits first where it would overflow.
    pub fn times(self, other: Decimal) -> Decimal {
        let (a, b) = (self.narrow(), other.narrow());
        Decimal {
            mantissa: a.mantissa * b.mantissa,
            exp: a.exp.saturating_add(b.exp),
            neg: a.neg != b.neg,
        }
    }

    /// The exact sum, or `None` when aligning the two overflows (absurdly different magnitudes).
    fn checked_add(self, other: Decimal) -> Option<Decimal> {
        let (hi, lo) = if self.exp >= other.exp {
            (self, other)
        } else {
            (other, self)
        };
        let shift = u32::try_from(hi.exp - lo.exp).ok()?;
        let hi_m = hi.mantissa.checked_mul(10u128.checked_pow(shift)?)?;
        let (mantissa, neg) = match (hi.neg, lo.neg) {
            (a, b) if a == b => (hi_m.checked_add(lo.mantissa)?, a),
            (a, _) if hi_m >= lo.mantissa => (hi_m - lo.mantissa, a),
            (_, b) => (lo.mantissa - hi_m, b),
        };
        Some(Decimal {
            mantissa,
            exp: lo.exp,
            neg,
        })
    }

    /// At most 19 digits, cutting the last ones (so a product fits in 128 bits).
    fn narrow(mut self) -> Decimal {
        while self.mantissa >= 10u128.pow(MAX_DIGITS) {
            self.mantissa /= 10;
            self.exp = self.exp.saturating_add(1);
        }
        self
    }

    pub fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    /// The nearest double (ties to even), rounding exactly once.
    pub fn to_f64(self) -> f64 {
        let v = self.magnitude();
        if self.neg { -v } else { v }
    }

    fn magnitude(self) -> f64 {
        let (m, e) = (self.mantissa, self.exp);
        if m == 0 {
            return 0.0;
        }
        // Clinger's fast path: mantissa and power of ten are both exact doubles, so one IEEE
        // multiplication or division rounds the exact quotient once.
        if m <= 1 << 53 {
            // Through u64: converting a u128 to a double is a library call.
            let m = m as u64 as f64;
            if (0..=22).contains(&e) {
                return m * POW10[e as usize];
            }
            if (-22..0).contains(&e) {
                return m / POW10[(-e) as usize];
            }
        }
        // Otherwise the standard library's correctly rounded parser, on the exact digits.
        let mut buf = [0u8; 64];
        let len = {
            use std::io::Write;
            let mut cur = std::io::Cursor::new(&mut buf[..]);
            write!(cur, "{m}e{e}").expect("64 bytes hold 39 digits and an exponent");
            cur.position() as usize
        };
        std::str::from_utf8(&buf[..len])
            .expect("ascii")
            .parse()
            .expect("digits and an exponent always parse")
    }
}

/// Converts `text` as `ty`, times `scale` (`None`: 1). The result is finite.
pub fn convert(text: &str, ty: ValueType, scale: Option<Decimal>) -> Result<f64, ValueError> {
    let d = match (ty, scale) {
        // Without units or a scale there is nothing to multiply: the standard parser rounds
        // once too (and is the faster), and a whole number converts exactly or to the nearest.
        (ValueType::Float, None) => {
            let t = text.trim();
            return match t.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                // `1e400` is a number too large; `inf` and `NaN` are not numbers here.
                Ok(_) if looks_numeric(t) => Err(ValueError::NotFinite),
                _ => Err(ValueError::NotANumber),
            };
        }
        (ValueType::Int, None) => return int(text).map(|v| v as f64),
        (ValueType::Float, Some(_)) => Decimal::parse(text).ok_or(ValueError::NotANumber)?,
        (ValueType::Int, Some(_)) => {
            let v = int(text)?;
            Decimal {
                mantissa: u128::from(v.unsigned_abs()),
                exp: 0,
                neg: v < 0,
            }
        }
        (ValueType::Duration, _) => duration(text).ok_or(ValueError::NotADuration)?,
        (ValueType::Bool, _) => match text.trim() {
            "true" | "True" | "TRUE" | "yes" | "on" | "1" => Decimal::ONE,
            "false" | "False" | "FALSE" | "no" | "off" | "0" => Decimal::int(0),
            _ => return Err(ValueError::NotABool),
        },
    };
    let v = match scale {
        Some(s) => d.times(s).to_f64(),
        None => d.to_f64(),
    };
    if v.is_finite() {
        Ok(v)
    } else {
        Err(ValueError::NotFinite)
    }
}

#[inline]
fn int(text: &str) -> Result<i64, ValueError> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| ValueError::NotAnInteger)
}

/// Starts like a decimal number (after an optional sign), unlike `inf` or `NaN`.
fn looks_numeric(t: &str) -> bool {
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    t.starts_with(|c: char| c.is_ascii_digit() || c == '.')
}

/// `1h30m`, `250ms`, `1.5s`, `90` (seconds), in seconds, exactly. Go's `time.ParseDuration`
/// units plus days.
fn duration(text: &str) -> Option<Decimal> {
    let t = text.trim();
    if let Some(d) = Decimal::parse(t) {
        return Some(d);
    }
    let mut total = Decimal::int(0);
    let mut approx = None::<f64>;
    let mut rest = t;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n = Decimal::parse(&rest[..num_len])?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (mult, exp) = match &rest[..unit_len] {
            "ns" => (1, -9),
            "us" | "µs" => (1, -6),
            "ms" => (1, -3),
            "s" => (1, 0),
            "m" => (60, 0),
            "h" => (3600, 0),
            "d" => (86400, 0),
            _ => return None,
        };
        rest = &rest[unit_len..];
        let part = n.times(Decimal {
            mantissa: mult,
            exp,
            neg: false,
        });
        // Components whose sum does not align in 128 bits (`1d` plus a fraction of a
        // nanosecond 30 digits long) are summed as doubles: no boundary is that fine.
        match approx.as_mut() {
            Some(a) => *a += part.to_f64(),
            None => match total.checked_add(part) {
                Some(t) => total = t,
                None => approx = Some(total.to_f64() + part.to_f64()),
            },
        }
    }
    Some(match approx {
        Some(a) => {
            // Back to a decimal through the shortest text that reads as the same double.
            Decimal::parse(&format!("{a:e}")).unwrap_or(Decimal {
                mantissa: 1,
                exp: i32::MAX / 2,
                neg: false,
            })
        }
        None => total,
    })
}

/// A duration in seconds, for configuration (`expire_after: 10m`); `None` if it is not one or
/// does not fit a double.
pub fn parse_duration_secs(text: &str) -> Option<f64> {
    duration(text)
        .map(Decimal::to_f64)
        .filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Rng;

    #[test]
    fn conversions() {
        assert_eq!(convert("12", ValueType::Int, None), Ok(12.0));
        assert_eq!(
            convert("1.5", ValueType::Int, None),
            Err(ValueError::NotAnInteger)
        );
        assert_eq!(convert("0.029", ValueType::Float, None), Ok(0.029));
        assert_eq!(
            convert("x", ValueType::Float, None),
            Err(ValueError::NotANumber)
        );
        assert_eq!(
            convert("NaN", ValueType::Float, None),
            Err(ValueError::NotANumber)
        );
        assert_eq!(convert("250ms", ValueType::Duration, None), Ok(0.25));
        assert_eq!(convert("1m30s", ValueType::Duration, None), Ok(90.0));
        assert_eq!(convert("1.2s", ValueType::Duration, None), Ok(1.2));
        assert_eq!(convert("12", ValueType::Duration, None), Ok(12.0));
        assert_eq!(
            convert("5 parsecs", ValueType::Duration, None),
            Err(ValueError::NotADuration)
        );
        assert_eq!(convert("yes", ValueType::Bool, None), Ok(1.0));
        assert_eq!(convert(" -3.5e2 ", ValueType::Float, None), Ok(-350.0));
        for bad in [
            "", ".", "-", "1e", "1e+", "1..2", "1.2.3", "inf", "1_000", "0x10",
        ] {
            assert_eq!(
                convert(bad, ValueType::Float, None),
                Err(ValueError::NotANumber),
                "{bad:?}"
            );
        }
    }

    fn scale(s: &str) -> Option<Decimal> {
        Decimal::parse(s)
    }

    /// Issue 9: `took 700ms` and `ms=700` with `scale: 0.001` are exactly the bound 0.7, and
    /// 350 ms exactly 0.35; multiplying by 0.001 gave 0.7000000000000001, the next bucket.
    #[test]
    fn issue9_durations_and_scale_land_on_the_bound() {
        assert_eq!(convert("700ms", ValueType::Duration, None), Ok(0.7));
        assert_eq!(convert("350ms", ValueType::Duration, None), Ok(0.35));
        assert_eq!(convert("700", ValueType::Float, scale("0.001")), Ok(0.7));
        assert_eq!(convert("700", ValueType::Int, scale("0.001")), Ok(0.7));
        assert_eq!(convert("350", ValueType::Float, scale("1e-3")), Ok(0.35));
        assert_eq!(convert("0.7s", ValueType::Duration, None), Ok(0.7));
        assert_eq!(convert("700000us", ValueType::Duration, None), Ok(0.7));
        assert_eq!(convert("1m0.7s", ValueType::Duration, None), Ok(60.7));
        assert_ne!(700.0 * 0.001, 0.7, "the old way rounds twice");
    }

    /// A decimal as text, with `digits` significant digits and the point anywhere.
    fn random_decimal(rng: &mut Rng, digits: u64) -> String {
        let mut s: String = (0..digits)
            .map(|i| {
                let d = rng.below(10);
                char::from(b'0' + if i == 0 { 1 + d % 9 } else { d } as u8)
            })
            .collect();
        let point = rng.below(digits + 4) as usize;
        if point < s.len() {
            s.insert(point, '.');
        } else {
            s.push_str(&"0".repeat(point - s.len()));
        }
        s
    }

    /// Exact decimal product of `a` and 10^-k as text: moving the point, no arithmetic.
    fn shift_point(a: &str, k: usize) -> String {
        let (int, frac) = a.split_once('.').unwrap_or((a, ""));
        let digits = format!("{int}{frac}");
        let point = int.len() as isize - k as isize;
        if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        }
    }

    /// Property-style over decimals (issue 9): a value times a power-of-ten scale, and a
    /// duration in any unit, is the double the bound written as the exact product reads as; so
    /// a value on a bound is in that bucket, for every such decimal.
    #[test]
    fn issue9_scaled_values_equal_their_decimal_bound() {
        let mut rng = Rng::new(9);
        for _ in 0..20_000 {
            let digits = 1 + rng.below(15);
            let v = random_decimal(&mut rng, digits);
            let k = rng.below(10) as usize;
            let bound: f64 = shift_point(&v, k).parse().unwrap();
            let s = format!("1e-{k}");
            assert_eq!(
                convert(&v, ValueType::Float, scale(&s)),
                Ok(bound),
                "{v} × {s}"
            );
            let (unit, k) = [("s", 0), ("ms", 3), ("us", 6), ("ns", 9)][rng.below(4) as usize];
            let bound: f64 = shift_point(&v, k).parse().unwrap();
            assert_eq!(
                convert(&format!("{v}{unit}"), ValueType::Duration, None),
                Ok(bound),
                "{v}{unit}"
            );
        }
    }

    /// Any decimal reads as the double `f64::from_str` gives (both round once, correctly).
    #[test]
    fn decimals_read_like_the_standard_parser() {
        let mut rng = Rng::new(10);
        for _ in 0..20_000 {
            let digits = 1 + rng.below(19);
            let mut v = random_decimal(&mut rng, digits);
            if rng.below(3) == 0 {
                v.push_str(&format!("e{}", rng.below(80) as i64 - 40));
            }
            let want: f64 = v.parse().unwrap();
            assert_eq!(Decimal::parse(&v).unwrap().to_f64(), want, "{v}");
        }
    }

    /// The plain float path (the standard parser) and the decimal path (`scale: 1` written
    /// as `1.0`) agree, as they must for values to be the same with and without a scale.
    #[test]
    fn float_path_and_decimal_path_agree() {
        let mut rng = Rng::new(13);
        let one = scale("1.0");
        for _ in 0..20_000 {
            let digits = 1 + rng.below(19);
            let mut v = random_decimal(&mut rng, digits);
            if rng.below(3) == 0 {
                v.push_str(&format!("e{}", rng.below(80) as i64 - 40));
            }
            assert_eq!(
                convert(&v, ValueType::Float, None),
                convert(&v, ValueType::Float, one),
                "{v}"
            );
        }
        for bad in ["inf", "-inf", "NaN", "infinity"] {
            assert_eq!(
                convert(bad, ValueType::Float, one),
                convert(bad, ValueType::Float, None),
                "{bad}"
            );
        }
    }

    /// Rounding once is monotonic: whenever the exact decimals compare a <= b, the doubles do.
    #[test]
    fn scaled_values_keep_their_order() {
        let mut rng = Rng::new(11);
        for _ in 0..20_000 {
            let a = rng.below(100_000);
            let b = a + rng.below(3);
            let s = scale(["0.001", "0.1", "0.3", "60", "0.000001", "2.5"][rng.below(6) as usize]);
            let (x, y) = (
                convert(&a.to_string(), ValueType::Int, s).unwrap(),
                convert(&b.to_string(), ValueType::Int, s).unwrap(),
            );
            assert!(x <= y, "{a} -> {x}, {b} -> {y}");
        }
    }

    /// Issue 10 item 10: a 400-digit `ms` value (or a scale that overflows) was +Inf, which a
    /// counter then kept for good; it is a value error.
    #[test]
    fn issue10_item10_non_finite_values_are_errors() {
        let huge = "9".repeat(400);
        assert_eq!(
            convert(&format!("{huge}ms"), ValueType::Duration, None),
            Err(ValueError::NotFinite)
        );
        assert_eq!(
            convert(&huge, ValueType::Float, scale("0.001")),
            Err(ValueError::NotFinite)
        );
        assert_eq!(
            convert("1e308", ValueType::Float, scale("1000")),
            Err(ValueError::NotFinite)
        );
        assert_eq!(
            convert("1e400", ValueType::Float, None),
            Err(ValueError::NotFinite)
        );
        assert_eq!(
            convert(&format!("{huge}h"), ValueType::Duration, None),
            Err(ValueError::NotFinite)
        );
        assert_eq!(parse_duration_secs(&format!("{huge}d")), None);
        // Long but finite: fine, to 19 significant digits.
        let long = format!("1{}", "0".repeat(300));
        assert_eq!(convert(&long, ValueType::Float, None), Ok(1e300));
    }
}
