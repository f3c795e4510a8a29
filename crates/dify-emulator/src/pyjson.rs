//! The byte format of Python's `json.dumps` with default arguments, which Dify 0.15.3 uses for
//! every JSON body and every SSE event.

use std::io;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use serde_json::ser::Formatter;

/// The keep-alive event, exactly as Dify writes it (no data line).
pub const PING: &[u8] = b"event: ping\n\n";

/// `json.dumps(v)`: `", "` and `": "` separators, ASCII only (`\uXXXX` in lower-case hex,
/// astral characters as surrogate pairs), keys in insertion order, floats as Python's `repr`.
pub fn python_json(v: &Value) -> String {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    if v.serialize(&mut ser).is_err() {
        // A `Value` written into a `Vec` has no way to fail; keep the output valid anyway.
        return "null".to_owned();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// One SSE data event as Dify writes it: `data: <json>\n\n`.
pub fn sse_data(v: &Value) -> Bytes {
    Bytes::from(format!("data: {}\n\n", python_json(v)))
}

struct PyFormatter;

impl Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        w.write_all(float_repr(f64::from(value)).as_bytes())
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(float_repr(value).as_bytes())
    }

    // serde_json already escapes `"`, `\` and C0 controls the way Python does (short forms for
    // \b \f \n \r \t, `\u00xx` otherwise); the fragments between them still need DEL and
    // everything non-ASCII escaped.
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if (' '..='~').contains(&c) {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

/// Python's `float.__repr__`: the shortest round-tripping digits, positional notation when the
/// exponent is in [-4, 16), otherwise `d.ddde±XX`.
pub(crate) fn float_repr(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let decpt = exp + 1;
    let body = if (-3..=16).contains(&decpt) {
        let len = digits.len() as i32;
        if decpt <= 0 {
            format!("0.{}{digits}", "0".repeat(decpt.unsigned_abs() as usize))
        } else if decpt >= len {
            format!("{digits}{}.0", "0".repeat((decpt - len) as usize))
        } else {
            let (int, frac) = digits.split_at(decpt as usize);
            format!("{int}.{frac}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        format!("{first}{dot}e{exp:+03}")
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn blocking_body_of_capture_01_is_reproduced_byte_for_byte() {
        let captured = r#"{"event": "message", "task_id": "bb06473a-2e57-4a5c-9100-63589d57570f", "id": "e16b7004-abfc-43a1-ac13-0596c7318107", "message_id": "e16b7004-abfc-43a1-ac13-0596c7318107", "conversation_id": "f0a31be8-eefe-4b03-989e-05987e3b0353", "mode": "chat", "answer": "Hello! Dify \u662f\u4e00\u4e2a\u5e73\u53f0 \ud83d\ude80 \u2014 answer #2.", "metadata": {"usage": {"prompt_tokens": 11, "prompt_unit_price": "0", "prompt_price_unit": "0", "prompt_price": "0E-7", "completion_tokens": 7, "completion_unit_price": "0", "completion_price_unit": "0", "completion_price": "0E-7", "total_tokens": 18, "total_price": "0E-7", "currency": "USD", "latency": 0.002450038000006316}}, "created_at": 1795662500}"#;
        let v = json!({
            "event": "message",
            "task_id": "bb06473a-2e57-4a5c-9100-63589d57570f",
            "id": "e16b7004-abfc-43a1-ac13-0596c7318107",
            "message_id": "e16b7004-abfc-43a1-ac13-0596c7318107",
            "conversation_id": "f0a31be8-eefe-4b03-989e-05987e3b0353",
            "mode": "chat",
            "answer": "Hello! Dify 是一个平台 🚀 — answer #2.",
            "metadata": {"usage": {
                "prompt_tokens": 11, "prompt_unit_price": "0", "prompt_price_unit": "0",
                "prompt_price": "0E-7", "completion_tokens": 7, "completion_unit_price": "0",
                "completion_price_unit": "0", "completion_price": "0E-7", "total_tokens": 18,
                "total_price": "0E-7", "currency": "USD", "latency": 0.002450038000006316
            }},
            "created_at": 1795662500
        });
        assert_eq!(python_json(&v), captured);
        // Parsing the captured bytes and writing them again gives the same bytes.
        let parsed: Value = serde_json::from_str(captured).unwrap();
        assert_eq!(python_json(&parsed), captured);
    }

    #[test]
    fn streaming_events_of_capture_02_are_reproduced_byte_for_byte() {
        let captured: &[&str] = &[
            "data: {\"event\": \"message\", \"conversation_id\": \"aa0483db-e114-40ab-b70f-c2128bd443fa\", \"message_id\": \"f3e2cd8a-f1d4-4370-b648-12d5e59a88e3\", \"created_at\": 1795662501, \"task_id\": \"f02dec3c-358c-4b01-9451-860821071dba\", \"id\": \"f3e2cd8a-f1d4-4370-b648-12d5e59a88e3\", \"answer\": \"\\u662f\\u4e00\\u4e2a\\u5e73\\u53f0 \", \"from_variable_selector\": null}\n\n",
            "data: {\"event\": \"message\", \"conversation_id\": \"aa0483db-e114-40ab-b70f-c2128bd443fa\", \"message_id\": \"f3e2cd8a-f1d4-4370-b648-12d5e59a88e3\", \"created_at\": 1795662501, \"task_id\": \"f02dec3c-358c-4b01-9451-860821071dba\", \"id\": \"f3e2cd8a-f1d4-4370-b648-12d5e59a88e3\", \"answer\": \"\\ud83d\\ude80 \\u2014 an\", \"from_variable_selector\": null}\n\n",
            "data: {\"event\": \"message_end\", \"conversation_id\": \"aa0483db-e114-40ab-b70f-c2128bd443fa\", \"message_id\": \"f3e2cd8a-f1d4-4370-b648-12d5e59a88e3\", \"created_at\": 1795662501, \"task_id\": \"f02dec3c-358c-4b01-9451-860821071dba\", \"id\": \"f3e2cd8a-f1d4-4370-b648-12d5e59a88e3\", \"metadata\": {\"usage\": {\"prompt_tokens\": 11, \"prompt_unit_price\": \"0\", \"prompt_price_unit\": \"0\", \"prompt_price\": \"0E-7\", \"completion_tokens\": 7, \"completion_unit_price\": \"0\", \"completion_price_unit\": \"0\", \"completion_price\": \"0E-7\", \"total_tokens\": 18, \"total_price\": \"0E-7\", \"currency\": \"USD\", \"latency\": 0.12126096899999084}}, \"files\": null}\n\n",
        ];
        for event in captured {
            let json = event.strip_prefix("data: ").unwrap().trim_end_matches('\n');
            let parsed: Value = serde_json::from_str(json).unwrap();
            assert_eq!(sse_data(&parsed), Bytes::from(*event));
        }
        let piece = json!({"answer": "是一个平台 "});
        assert_eq!(
            python_json(&piece),
            r#"{"answer": "\u662f\u4e00\u4e2a\u5e73\u53f0 "}"#
        );
    }

    #[test]
    fn error_bodies_with_nested_quotes_match_captures_56_and_57() {
        let c56 = r#"{"code": "completion_request_error", "message": "[openai_api_compatible] Error: API request failed with status code 500: {\"error\": {\"message\": \"fake upstream exploded\", \"type\": \"server_error\"}}", "status": 400}"#;
        let parsed: Value = serde_json::from_str(c56).unwrap();
        assert_eq!(python_json(&parsed), c56);
        let c23 = r#"{"id": "aa0483db-e114-40ab-b70f-c2128bd443fa", "name": "Renamed \u4f1a\u8bdd \u2728", "inputs": {}, "status": "normal", "introduction": "", "created_at": 1795662501, "updated_at": 1795662508}"#;
        let parsed: Value = serde_json::from_str(c23).unwrap();
        assert_eq!(python_json(&parsed), c23);
    }

    #[test]
    fn control_characters_and_del_are_escaped_like_python() {
        let v = json!("a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}/é");
        assert_eq!(
            python_json(&v),
            r#""a\"b\\c\n\r\t\b\f\u0001\u001f\u007f/\u00e9""#
        );
    }

    #[test]
    fn empty_containers_and_scalars_use_python_spacing() {
        let v = json!({"a": [], "b": {}, "c": [1, true, null], "d": -3});
        assert_eq!(
            python_json(&v),
            r#"{"a": [], "b": {}, "c": [1, true, null], "d": -3}"#
        );
    }

    #[test]
    fn floats_follow_python_repr() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (13.006223372000022, "13.006223372000022"),
            (0.0026153040000735928, "0.0026153040000735928"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (1e100, "1e+100"),
            (123.0, "123.0"),
            (-2.5, "-2.5"),
        ];
        for (v, want) in cases {
            assert_eq!(float_repr(*v), *want, "{v}");
        }
    }
}
