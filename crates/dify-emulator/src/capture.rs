//! Parsing the RESPONSE section of a `dify-captures/*.http` file: the exact bytes Dify wrote on
//! the socket, chunked framing included.

use bytes::Bytes;

const RESPONSE_MARKER: &[u8] = b"#### RESPONSE";

/// Headers that belong to the connection, not to the reply; the emulator's server sets its own.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "transfer-encoding",
    "content-length",
    "date",
    "server",
    "keep-alive",
];

#[derive(Debug, PartialEq)]
pub(crate) struct CapturedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// One entry per HTTP chunk, or the whole body when it was not chunked.
    pub chunks: Vec<Bytes>,
    pub chunked: bool,
}

pub(crate) fn parse_response(capture: &[u8]) -> Result<CapturedResponse, String> {
    let marker = find(capture, RESPONSE_MARKER).ok_or("no '#### RESPONSE' section")?;
    let after_marker = &capture[marker..];
    let line_end = find(after_marker, b"\n").ok_or("nothing after the RESPONSE marker")?;
    let mut rest = &after_marker[line_end + 1..];

    let status_line = take_line(&mut rest).ok_or("no status line")?;
    let status = parse_status_line(&status_line)?;

    let mut headers = Vec::new();
    let mut content_length = None;
    let mut chunked = false;
    loop {
        let line = take_line(&mut rest).ok_or("headers do not end with an empty line")?;
        if line.is_empty() {
            break;
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
        let lower = name.to_ascii_lowercase();
        if lower == "content-length" {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        }
        if lower == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
        if !HOP_BY_HOP.contains(&lower.as_str()) {
            headers.push((name, value));
        }
    }

    let chunks = if chunked {
        dechunk(rest)?
    } else if let Some(len) = content_length {
        let body = rest
            .get(..len)
            .ok_or_else(|| format!("body shorter than Content-Length {len}"))?;
        non_empty(body)
    } else {
        non_empty(rest)
    };
    Ok(CapturedResponse {
        status,
        headers,
        chunks,
        chunked,
    })
}

fn non_empty(body: &[u8]) -> Vec<Bytes> {
    if body.is_empty() {
        Vec::new()
    } else {
        vec![Bytes::copy_from_slice(body)]
    }
}

fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(version), Some(Ok(code))) if version.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("bad status line {line:?}")),
    }
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<Bytes>, String> {
    let mut chunks = Vec::new();
    loop {
        let size_line = take_line(&mut rest).ok_or("chunked body ends without the last chunk")?;
        let size_line = String::from_utf8_lossy(&size_line).into_owned();
        let hex = size_line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(hex, 16).map_err(|_| format!("bad chunk size {size_line:?}"))?;
        if size == 0 {
            return Ok(chunks);
        }
        let data = rest
            .get(..size)
            .ok_or_else(|| format!("chunk of {size} bytes is cut short"))?;
        chunks.push(Bytes::copy_from_slice(data));
        rest = &rest[size..];
        let crlf = take_line(&mut rest).ok_or("chunk not followed by CRLF")?;
        if !crlf.is_empty() {
            return Err("chunk longer than its size".to_owned());
        }
    }
}

/// Takes one line (ended by LF, a preceding CR removed) off the front of `rest`.
fn take_line(rest: &mut &[u8]) -> Option<Vec<u8>> {
    let end = find(rest, b"\n")?;
    let line = rest[..end]
        .strip_suffix(b"\r")
        .unwrap_or(&rest[..end])
        .to_vec();
    *rest = &rest[end + 1..];
    Some(line)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Capture 55 (upstream 500, streaming), with the request part shortened.
    const CAPTURE_55: &[u8] = b"#### REQUEST (exact bytes sent; CRLF line ends)\nPOST /v1/chat-messages HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}\n#### RESPONSE (exact bytes received on the socket, incl. any chunked framing)\nHTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: Thu, 26 Nov 2026 03:08:42 GMT\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream; charset=utf-8\r\nAccess-Control-Allow-Origin: *\r\nX-Version: 0.15.3\r\nX-Env: PRODUCTION\r\n\r\n181\r\ndata: {\"event\": \"error\", \"conversation_id\": \"a8bc4e20-48af-4121-a428-aa69c218cbb8\", \"message_id\": \"584041d9-afc1-4be4-a220-542c090a7d7a\", \"created_at\": 1795662522, \"code\": \"completion_request_error\", \"status\": 400, \"message\": \"[openai_api_compatible] Error: API request failed with status code 500: {\\\"error\\\": {\\\"message\\\": \\\"fake upstream exploded\\\", \\\"type\\\": \\\"server_error\\\"}}\"}\n\n\r\n0\r\n\r\n";

    /// Capture 09 (404 JSON with a Content-Length).
    const CAPTURE_09: &[u8] = b"#### REQUEST (exact bytes sent; CRLF line ends)\nGET /v1/conversations?user=user-alice&last_id=946c98c9-4c54-45f4-ac4e-f35be5715cff HTTP/1.1\r\n\r\n\n#### RESPONSE (exact bytes received on the socket, incl. any chunked framing)\nHTTP/1.1 404 NOT FOUND\r\nServer: gunicorn\r\nDate: Thu, 26 Nov 2026 03:08:28 GMT\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 81\r\nAccess-Control-Allow-Origin: *\r\nX-Version: 0.15.3\r\nX-Env: PRODUCTION\r\n\r\n{\"code\": \"not_found\", \"message\": \"Last Conversation Not Exists.\", \"status\": 404}\n";

    #[test]
    fn chunked_capture_keeps_each_chunk_and_drops_hop_by_hop_headers() {
        let parsed = parse_response(CAPTURE_55).unwrap();
        assert_eq!(parsed.status, 200);
        assert!(parsed.chunked);
        assert_eq!(parsed.chunks.len(), 1);
        assert_eq!(parsed.chunks[0].len(), 0x181);
        assert!(parsed.chunks[0].starts_with(b"data: {\"event\": \"error\""));
        assert!(parsed.chunks[0].ends_with(b"}\n\n"));
        let names: Vec<&str> = parsed.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Content-Type",
                "Access-Control-Allow-Origin",
                "X-Version",
                "X-Env"
            ]
        );
        assert_eq!(parsed.headers[0].1, "text/event-stream; charset=utf-8");
    }

    #[test]
    fn content_length_capture_gives_the_exact_body() {
        let parsed = parse_response(CAPTURE_09).unwrap();
        assert_eq!(parsed.status, 404);
        assert!(!parsed.chunked);
        assert_eq!(
            parsed.chunks,
            vec![Bytes::from_static(
                b"{\"code\": \"not_found\", \"message\": \"Last Conversation Not Exists.\", \"status\": 404}\n"
            )]
        );
    }

    #[test]
    fn several_chunks_are_split_where_the_server_split_them() {
        let text = b"#### RESPONSE\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nD\r\nevent: ping\n\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let parsed = parse_response(text).unwrap();
        assert_eq!(
            parsed.chunks,
            vec![
                Bytes::from_static(b"event: ping\n\n"),
                Bytes::from_static(b"abc")
            ]
        );
    }

    #[test]
    fn broken_captures_are_errors() {
        assert!(parse_response(b"no marker here").is_err());
        assert!(
            parse_response(b"#### RESPONSE\nHTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
                .is_err()
        );
        assert!(
            parse_response(
                b"#### RESPONSE\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"
            )
            .is_err()
        );
    }
}
