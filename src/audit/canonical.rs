//! Canonical JSON for the audit chain: one byte string per JSON value, so a hash over it means
//! the same thing on every instance and after every library upgrade.
//!
//! The encoding follows the shape of RFC 8785 (JSON Canonicalization Scheme) where Segel needs it:
//! no insignificant whitespace (RFC 8785 §3.2.1), object members sorted by key (§3.2.3), strings
//! escaped minimally with lowercase `\u00xx` for the remaining control characters (§3.2.2.2).
//! Two deliberate differences, both irrelevant to the audit log's own fields: keys are ordered by
//! Unicode code point (Rust's `str` order) rather than by UTF-16 code unit, and non-integer numbers
//! are written in serde_json's shortest round-trip form rather than ECMAScript's. The hash always
//! covers the stored text, so a change in either would not invalidate rows already written.

use serde_json::Value;

/// The canonical text of `value`.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        // Integers print in decimal; floats in serde_json's shortest round-trip form.
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Sort explicitly: serde_json's map keeps insertion order when any crate in the
            // build enables its `preserve_order` feature.
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// RFC 8785 §3.2.2.2: `"` and `\` escaped, the control characters with a short form (`\b \t \n
/// \f \r`) use it, the others `\u00xx` in lowercase hex; everything else is written as is (UTF-8).
pub(crate) fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{0C}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_at_every_depth_without_whitespace() {
        let v =
            json!({ "z": 1, "a": { "y": [true, null, { "b": 2, "a": 1 }], "x": "s" }, "m": -3 });
        assert_eq!(
            to_string(&v),
            r#"{"a":{"x":"s","y":[true,null,{"a":1,"b":2}]},"m":-3,"z":1}"#
        );
    }

    #[test]
    fn escapes_like_rfc_8785() {
        let v = json!("q\"b\\\u{1}\u{1f}\n\t\r\u{8}\u{c}/é€😀");
        assert_eq!(
            to_string(&v),
            "\"q\\\"b\\\\\\u0001\\u001f\\n\\t\\r\\b\\f/é€😀\""
        );
        // The output is valid JSON that reads back to the same value.
        let back: Value = serde_json::from_str(&to_string(&v)).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn numbers_and_round_trip() {
        let v = json!({ "big": u64::MAX, "neg": i64::MIN, "f": 1.5, "zero": 0 });
        let text = to_string(&v);
        assert_eq!(
            text,
            r#"{"big":18446744073709551615,"f":1.5,"neg":-9223372036854775808,"zero":0}"#
        );
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(to_string(&back), text);
    }
}
