//! What kind of failure an error is, without naming any transport, and how client
//! text is quoted in messages.
//!
//! Owns: [`ErrorKind`], the classification every core error type reports through its
//! `kind()` method; each edge maps kinds to its own vocabulary in one place (gRPC codes
//! in `grpc::status`, HTTP statuses in the HTTP edge). Also [`clip`], which keeps
//! client-supplied strings in messages short.

use std::borrow::Cow;
use std::fmt;

/// A failure as a caller must treat it. Exhaustive on purpose: a new kind must be
/// mapped by every edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or names something in a wrong form; retrying the
    /// same request cannot succeed.
    BadRequest,
    /// The request names a view, version, feature or service that does not exist.
    NotFound,
    /// The request is well-formed but what it asks for cannot be served in the
    /// registry's or the store's current state (disabled view, missing table,
    /// versioning off).
    NotServable,
    /// Something Tern does not do.
    Unsupported,
    /// The request is larger than a configured limit.
    TooLarge,
    /// The server or its store is at capacity; retry later.
    Overloaded,
    /// A dependency (online store, registry database) cannot be reached.
    Unavailable,
    /// A deadline passed before the answer was ready.
    Timeout,
    /// Stored data cannot be read as Feast's layout; retrying will not help.
    CorruptData,
    /// A bug in Tern: an invariant did not hold.
    Internal,
    /// The caller did not prove who it is: no token, or one that does not verify.
    Unauthenticated,
    /// The caller is known but may not do this.
    PermissionDenied,
}

impl ErrorKind {
    /// Short label for logs and metrics (a closed set).
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::NotFound => "not_found",
            ErrorKind::NotServable => "not_servable",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::CorruptData => "corrupt_data",
            ErrorKind::Internal => "internal",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission_denied",
        }
    }

    /// Whether the server, not the client, is at fault: worth a warning in the log.
    pub fn is_server_side(self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable
                | ErrorKind::Timeout
                | ErrorKind::Overloaded
                | ErrorKind::CorruptData
                | ErrorKind::Internal
        )
    }
}

/// An error and its causes on one line (`a: b: c`): a refused connection or a
/// certificate problem hides in the causes.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Longest client string quoted whole in a message.
pub const CLIP_CHARS: usize = 100;
/// Longest message any edge sends.
pub const MAX_MESSAGE_CHARS: usize = 1000;

/// A client-supplied string as quoted in messages: whole when short, else its first
/// [`CLIP_CHARS`] characters followed by `… (N chars)`. A 10,000-character name must
/// not come back in a 10,000-character message.
pub fn clip(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(CLIP_CHARS) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!("{}… ({} chars)", &s[..end], s.chars().count())),
    }
}

/// [`clip`] into an owned string, for error fields.
pub fn clipped(s: &str) -> String {
    clip(s).into_owned()
}

/// Cuts a whole message to [`MAX_MESSAGE_CHARS`]: the edges' last guard, for
/// messages that list many client strings.
pub fn cap_message(message: String) -> String {
    if message.chars().nth(MAX_MESSAGE_CHARS).is_none() {
        return message;
    }
    let end = message
        .char_indices()
        .nth(MAX_MESSAGE_CHARS - 1)
        .map_or(message.len(), |(i, _)| i);
    let mut cut = String::with_capacity(end + 3);
    cut.push_str(&message[..end]);
    cut.push('…');
    cut
}

/// Joins client strings for a message (`a, b, c`), each clipped, stopping with
/// `… and N more` once the list is long.
pub fn clipped_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    const SHOWN: usize = 10;
    let mut out = String::new();
    let mut more = 0usize;
    for (i, item) in items.into_iter().enumerate() {
        if i >= SHOWN {
            more += 1;
            continue;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&clip(item));
    }
    if more > 0 {
        use fmt::Write as _;
        let _ = write!(out, " … and {more} more");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_strings_and_cuts_long_ones() {
        assert_eq!(clip("driver_stats"), "driver_stats");
        let exactly = "x".repeat(CLIP_CHARS);
        assert_eq!(clip(&exactly), exactly.as_str());
        let long = "é".repeat(10_000);
        let c = clip(&long);
        assert!(c.starts_with(&"é".repeat(CLIP_CHARS)));
        assert!(c.ends_with("… (10000 chars)"), "{c}");
        assert!(c.chars().count() < CLIP_CHARS + 20);
    }

    #[test]
    fn messages_are_capped() {
        let m = cap_message("y".repeat(5000));
        assert_eq!(m.chars().count(), MAX_MESSAGE_CHARS);
        assert!(m.ends_with('…'));
        assert_eq!(cap_message("short".into()), "short");
    }

    #[test]
    fn lists_stop_after_ten() {
        let names: Vec<String> = (0..25).map(|i| format!("c{i}")).collect();
        let l = clipped_list(names.iter().map(String::as_str));
        assert!(
            l.starts_with("c0, c1,") && l.ends_with("c9 … and 15 more"),
            "{l}"
        );
    }
}
