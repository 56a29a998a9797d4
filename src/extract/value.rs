//! Converting extracted text to numbers: `int`, `float`, `duration`, `bool`.

use crate::rules::program::ValueType;

/// Why a value could not be used. Bounded: these become label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueError {
    NotANumber,
    NotAnInteger,
    NotADuration,
    NotABool,
    NegativeCounter,
}

impl ValueError {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueError::NotANumber => "not_a_number",
            ValueError::NotAnInteger => "not_an_integer",
            ValueError::NotADuration => "not_a_duration",
            ValueError::NotABool => "not_a_bool",
            ValueError::NegativeCounter => "negative_counter",
        }
    }
}

pub fn convert(text: &str, ty: ValueType) -> Result<f64, ValueError> {
    match ty {
        ValueType::Float => parse_float(text).ok_or(ValueError::NotANumber),
        ValueType::Int => text
            .trim()
            .parse::<i64>()
            .map(|v| v as f64)
            .map_err(|_| ValueError::NotAnInteger),
        ValueType::Duration => parse_duration_secs(text).ok_or(ValueError::NotADuration),
        ValueType::Bool => match text.trim() {
            "true" | "True" | "TRUE" | "yes" | "on" | "1" => Ok(1.0),
            "false" | "False" | "FALSE" | "no" | "off" | "0" => Ok(0.0),
            _ => Err(ValueError::NotABool),
        },
    }
}

fn parse_float(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// `1h30m`, `250ms`, `1.5s`, `90` (seconds). Go's `time.ParseDuration` units plus days.
pub fn parse_duration_secs(text: &str) -> Option<f64> {
    let t = text.trim();
    if let Some(v) = parse_float(t) {
        return Some(v);
    }
    let mut total = 0.0;
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
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(convert("12", ValueType::Int), Ok(12.0));
        assert_eq!(
            convert("1.5", ValueType::Int),
            Err(ValueError::NotAnInteger)
        );
        assert_eq!(convert("0.029", ValueType::Float), Ok(0.029));
        assert_eq!(convert("x", ValueType::Float), Err(ValueError::NotANumber));
        assert_eq!(
            convert("NaN", ValueType::Float),
            Err(ValueError::NotANumber)
        );
        assert_eq!(convert("250ms", ValueType::Duration), Ok(0.25));
        assert_eq!(convert("1m30s", ValueType::Duration), Ok(90.0));
        assert_eq!(convert("1.2s", ValueType::Duration), Ok(1.2));
        assert_eq!(convert("12", ValueType::Duration), Ok(12.0));
        assert_eq!(
            convert("5 parsecs", ValueType::Duration),
            Err(ValueError::NotADuration)
        );
        assert_eq!(convert("yes", ValueType::Bool), Ok(1.0));
    }
}
