//! Echoing what a stranger sent, into a reason, a log line, an error or a
//! terminal: never more than a bounded number of characters, and never a
//! control character as itself (an escape sequence in a record's key must
//! not rewrite an operator's screen, nor a NUL byte cut a log line).

/// Characters that reorder text on screen (bidirectional overrides and
/// isolates): escaped like control characters, so a printed key cannot be
/// made to read backwards.
fn reorders(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// At most `max_chars` characters of `text`, then `…` if there was more;
/// control and reordering characters written as `\u{…}` escapes.
pub fn echo(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 2));
    for (index, c) in text.chars().enumerate() {
        if index == max_chars {
            out.push('…');
            break;
        }
        if c.is_control() || reorders(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`echo`] of bytes that may not be UTF-8 (invalid sequences become
/// U+FFFD); reads no more of `bytes` than `max_chars` characters can take.
pub fn echo_bytes(bytes: &[u8], max_chars: usize) -> String {
    let head = &bytes[..bytes
        .len()
        .min(max_chars.saturating_add(1).saturating_mul(4))];
    echo(&String::from_utf8_lossy(head), max_chars)
}

/// `text` cut to at most `max_bytes` bytes on a character boundary, with
/// `…` in place of what was cut (so the result is at most `max_bytes + 3`).
pub fn clip_bytes(text: String, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut clipped = text;
    clipped.truncate(end);
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_clipped_and_escaped() {
        assert_eq!(echo("Seoul", 10), "Seoul");
        assert_eq!(echo("abcdef", 3), "abc…");
        assert_eq!(echo("a\0b", 10), "a\\u{0}b");
        assert_eq!(echo("\u{1b}[2J", 10), "\\u{1b}[2J");
        assert_eq!(echo("\u{202e}txt", 10), "\\u{202e}txt");
        // Escaping cannot make an echo unbounded: a key of a million
        // control bytes becomes at most max_chars escapes.
        let flood = "\u{1}".repeat(1_000_000);
        assert!(echo(&flood, 64).len() < 64 * 8 + 4);
    }

    #[test]
    fn bytes_are_read_only_as_far_as_needed() {
        assert_eq!(echo_bytes(b"42", 10), "42");
        assert_eq!(echo_bytes(b"\xff\xfe", 10), "\u{fffd}\u{fffd}");
        let huge = vec![b'x'; 10_000_000];
        assert_eq!(echo_bytes(&huge, 4), "xxxx…");
    }

    #[test]
    fn clipping_keeps_characters_whole() {
        assert_eq!(clip_bytes("short".into(), 10), "short");
        assert_eq!(clip_bytes("ééé".into(), 3), "é…");
        assert!(clip_bytes("x".repeat(5000), 1024).len() <= 1027);
    }
}
