//! The `/get-online-features` answer body, written straight from the domain answer.
//!
//! Owns: the layout `feast serve` writes (`{"results":[...],"metadata":{...}}`, compact,
//! keys in Feast's order) and its error bodies. Values go from the stored protobuf
//! bytes to JSON text in one pass (`json::value`); nothing else is built per request.

use bytes::Bytes;

use super::json::{self, BadValue};
use crate::proto::feast::serving::FieldStatus;
use crate::serving::OnlineFeatures;
use crate::store::Span;

/// Bytes a cell takes in the output, on average, for the first allocation.
const CELL_ESTIMATE: usize = 48;

/// Feast's JSON answer for `answer`.
pub(crate) fn online_features(answer: &OnlineFeatures) -> Result<Bytes, BadValue> {
    let rows = answer.rows;
    let columns = answer.entities.len() + answer.features.len();
    let mut out = Vec::with_capacity(128 + columns * (64 + rows * CELL_ESTIMATE));
    out.extend_from_slice(b"{\"results\":[");
    let mut first = true;
    for column in &answer.entities {
        if !first {
            out.push(b',');
        }
        first = false;
        values(&mut out, &column.values, &column.buffer)?;
        // Echoed entity values: PRESENT, at time zero (as Feast answers them).
        out.extend_from_slice(b"],\"statuses\":[");
        repeat(&mut out, rows, b"\"PRESENT\"");
        out.extend_from_slice(b"]");
        if rows > 0 {
            out.extend_from_slice(b",\"event_timestamps\":[");
            repeat(&mut out, rows, b"\"1970-01-01T00:00:00Z\"");
            out.push(b']');
        }
        out.push(b'}');
    }
    for column in answer.features.iter() {
        if !first {
            out.push(b',');
        }
        first = false;
        values(&mut out, column.values, column.buffer)?;
        out.extend_from_slice(b"],\"statuses\":[");
        for (r, status) in column.statuses.iter().enumerate() {
            if r > 0 {
                out.push(b',');
            }
            out.extend_from_slice(status_name(*status));
        }
        out.push(b']');
        if !column.event_timestamps.is_empty() {
            out.extend_from_slice(b",\"event_timestamps\":[");
            for (r, ts) in column.event_timestamps.iter().enumerate() {
                if r > 0 {
                    out.push(b',');
                }
                json::timestamp(&mut out, ts.seconds, ts.nanos);
            }
            out.push(b']');
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"metadata\":{\"feature_names\":[");
    let mut first = true;
    let names = answer
        .entities
        .iter()
        .map(|c| &*c.name)
        .chain(answer.plan.feature_names.iter().map(String::as_str));
    for name in names {
        if !first {
            out.push(b',');
        }
        first = false;
        json::string(&mut out, name);
    }
    out.push(b']');
    if answer.include_metadata && !answer.plan.metadata.is_empty() {
        out.extend_from_slice(b",\"feature_view_metadata\":[");
        for (i, view) in answer.plan.metadata.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Feast leaves out an empty name and a zero version.
            out.push(b'{');
            if !view.name.is_empty() {
                out.extend_from_slice(b"\"name\":");
                json::string(&mut out, &view.name);
            }
            if view.version != 0 {
                if !view.name.is_empty() {
                    out.push(b',');
                }
                out.extend_from_slice(b"\"version\":");
                json::int(&mut out, i64::from(view.version));
            }
            out.push(b'}');
        }
        out.push(b']');
    }
    out.extend_from_slice(b"}}");
    Ok(Bytes::from(out))
}

/// `{"values":[...` of one column, each value from its stored bytes.
fn values(out: &mut Vec<u8>, spans: &[Span], buffer: &[u8]) -> Result<(), BadValue> {
    out.extend_from_slice(b"{\"values\":[");
    for (r, span) in spans.iter().enumerate() {
        if r > 0 {
            out.push(b',');
        }
        json::value(out, span.of(buffer))?;
    }
    Ok(())
}

fn repeat(out: &mut Vec<u8>, n: usize, item: &[u8]) {
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
}

fn status_name(status: FieldStatus) -> &'static [u8] {
    match status {
        FieldStatus::Invalid => b"\"INVALID\"",
        FieldStatus::Present => b"\"PRESENT\"",
        FieldStatus::NullValue => b"\"NULL_VALUE\"",
        FieldStatus::NotFound => b"\"NOT_FOUND\"",
        FieldStatus::OutsideMaxAge => b"\"OUTSIDE_MAX_AGE\"",
    }
}

/// Feast's error body for an exception of its own (`FeastError.to_error_detail()`,
/// then encoded once more as a JSON string by the server): what Feast's client
/// parses back into the exception.
pub(crate) fn feast_error(class: &str, message: &str) -> Bytes {
    let mut detail = Vec::with_capacity(message.len() + 80);
    detail.extend_from_slice(b"{\"module\": \"feast.errors\", \"class\": ");
    json::ascii_string(&mut detail, class);
    detail.extend_from_slice(b", \"message\": ");
    json::ascii_string(&mut detail, message);
    detail.push(b'}');
    // `detail` is ASCII JSON text; the body is that text as one JSON string.
    let mut out = Vec::with_capacity(detail.len() + detail.len() / 4 + 2);
    json::string(&mut out, std::str::from_utf8(&detail).unwrap_or_default());
    Bytes::from(out)
}
