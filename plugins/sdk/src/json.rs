//! Canonical JSON, RFC 8785 (JCS): no whitespace, object members sorted by their UTF-16 code units, numbers in
//! ECMAScript `Number.prototype.toString` form, strings with the minimal escapes.
//!
//! Independent of `serde_json`'s map order (a `preserve_order` feature anywhere in the graph changes it): members
//! are always re-sorted here.

use std::fmt;

use serde_json::{Number, Value};

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanonicalError {
    /// NaN or ±infinity.
    NonFinite,
    /// An integer beyond ±2^53 cannot round-trip through an IEEE-754 double (RFC 8785 §3.2.2.3).
    IntegerOutOfRange(String),
}

impl fmt::Display for CanonicalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CanonicalError::NonFinite => write!(f, "NaN and infinities have no JSON form"),
            CanonicalError::IntegerOutOfRange(n) => {
                write!(
                    f,
                    "integer {n} is outside ±2^53 and cannot be represented exactly (use a string)"
                )
            }
        }
    }
}

impl std::error::Error for CanonicalError {}

const MAX_SAFE: u64 = 1 << 53;

/// The canonical serialization of `value`.
pub fn to_canonical_string(value: &Value) -> Result<String, CanonicalError> {
    let mut out = String::new();
    write_value(value, &mut out)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut String) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number(n)?),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(v, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_value(v, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn number(n: &Number) -> Result<String, CanonicalError> {
    if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > MAX_SAFE {
            return Err(CanonicalError::IntegerOutOfRange(i.to_string()));
        }
        return Ok(i.to_string());
    }
    if let Some(u) = n.as_u64() {
        if u > MAX_SAFE {
            return Err(CanonicalError::IntegerOutOfRange(u.to_string()));
        }
        return Ok(u.to_string());
    }
    es_number(n.as_f64().ok_or(CanonicalError::NonFinite)?)
}

/// ECMAScript `Number::toString(x)` for a finite double (ECMA-262 §6.1.6.1.20), from Rust's shortest
/// round-trip digits.
pub fn es_number(x: f64) -> Result<String, CanonicalError> {
    if !x.is_finite() {
        return Err(CanonicalError::NonFinite);
    }
    if x == 0.0 {
        return Ok("0".to_owned()); // also -0
    }
    let sci = format!("{:e}", x.abs()); // shortest digits: "d[.ddd]e[-]x"
    let (mantissa, exp) = sci.split_once('e').expect("LowerExp always has an exponent");
    let exp: i32 = exp.parse().expect("LowerExp exponent is an integer");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let digits = digits.trim_end_matches('0');
    let k = digits.len() as i32;
    let n = exp + 1; // the decimal point sits after the n-th digit
    let mut s = String::new();
    if x < 0.0 {
        s.push('-');
    }
    if k <= n && n <= 21 {
        s.push_str(digits);
        s.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        s.push_str(&digits[..n as usize]);
        s.push('.');
        s.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        s.push_str("0.");
        s.extend(std::iter::repeat_n('0', (-n) as usize));
        s.push_str(digits);
    } else {
        s.push_str(&digits[..1]);
        if k > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        s.push('e');
        s.push(if n > 0 { '+' } else { '-' });
        s.push_str(&(n - 1).abs().to_string());
    }
    Ok(s)
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(json: &str) -> String {
        to_canonical_string(&serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn rfc8785_example() {
        // RFC 8785 §3.2.2 example input.
        let input = r#"{
            "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
            "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
            "literals": [null, true, false]
        }"#;
        assert_eq!(
            canon(input),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    #[test]
    fn utf16_key_order() {
        // RFC 8785 §3.2.3: sorted by UTF-16 code units, so U+1F600 (D83D DE00) sorts before U+FB33.
        let input =
            "{\"\u{20ac}\":1,\"\\r\":2,\"\u{fb33}\":3,\"1\":4,\"\u{1f600}\":5,\"\u{80}\":6,\"\u{f6}\":7}";
        assert_eq!(
            canon(input),
            "{\"\\r\":2,\"1\":4,\"\u{80}\":6,\"\u{f6}\":7,\"\u{20ac}\":1,\"\u{1f600}\":5,\"\u{fb33}\":3}"
        );
    }

    #[test]
    fn numbers() {
        let cases: [(f64, &str); 14] = [
            (1.0, "1"),
            (-0.0, "0"),
            (1.5, "1.5"),
            (100.0, "100"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123456789012345680000.0, "123456789012345680000"),
            (0.000001, "0.000001"),
            (0.0000001, "1e-7"),
            (-1.25e-10, "-1.25e-10"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (9007199254740992.0, "9007199254740992"),
            (295147905179352830000.0, "295147905179352830000"),
        ];
        for (x, want) in cases {
            assert_eq!(es_number(x).unwrap(), want, "{x:e}");
        }
        assert_eq!(es_number(f64::NAN), Err(CanonicalError::NonFinite));
        assert_eq!(
            canon("[1, 1.0, -7, 9007199254740992]"),
            "[1,1,-7,9007199254740992]"
        );
        let big: Value = serde_json::from_str("9007199254740993").unwrap();
        assert!(matches!(
            to_canonical_string(&big),
            Err(CanonicalError::IntegerOutOfRange(_))
        ));
    }

    #[test]
    fn strings() {
        assert_eq!(
            canon(r#""\u0000\u001f\u007f\u2028""#),
            "\"\\u0000\\u001f\u{7f}\u{2028}\""
        );
        assert_eq!(
            canon(r#"{"b":{"d":1,"c":[]},"a":""}"#),
            r#"{"a":"","b":{"c":[],"d":1}}"#
        );
    }
}
