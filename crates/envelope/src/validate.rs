//! Value rules shared by the gRPC APIs and the Kafka edge, with messages a
//! caller can act on: a value a request may not carry, an event may not
//! carry either (a consumer that stored it would fail, or store what no
//! caller could have sent).

/// Checks a text field and returns it trimmed.
///
/// PostgreSQL `TEXT` cannot hold NUL characters, and no field of the mall
/// is meant to hold control characters (line breaks, escape sequences), so
/// both are refused here rather than surfacing as a database error or on
/// an operator's screen.
pub fn text(
    field: &str,
    value: &str,
    max_chars: usize,
    allow_blank: bool,
) -> Result<String, String> {
    let trimmed = value.trim();
    if !allow_blank && trimmed.is_empty() {
        return Err(format!("{field} must not be blank"));
    }
    if trimmed.contains('\0') {
        return Err(format!("{field} must not contain NUL characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    if trimmed.chars().count() > max_chars {
        return Err(format!("{field} must be at most {max_chars} characters"));
    }
    Ok(trimmed.to_owned())
}

/// Checks that an integer lies in `min..=max`.
pub fn in_range(field: &str, value: i64, min: i64, max: i64) -> Result<i64, String> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else if min == 1 && value < 1 {
        Err(format!("{field} must be greater than zero, got {value}"))
    } else {
        Err(format!(
            "{field} must be between {min} and {max}, got {value}"
        ))
    }
}

/// At most `max` characters of something a stranger sent, for error
/// messages and dead-letter reasons: never echo input of unbounded size
/// (see [`crate::echo`], which also escapes control characters).
pub fn clip(text: &str, max: usize) -> String {
    crate::echo::echo(text, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rules() {
        assert_eq!(text("name", "  TV ", 10, false), Ok("TV".to_owned()));
        assert!(text("name", "   ", 10, false).is_err());
        assert_eq!(text("address", "", 10, true), Ok(String::new()));
        assert!(text("name", "a\0b", 10, false).is_err());
        assert!(text("name", "a\u{1b}[2Jb", 10, false).is_err());
        assert!(text("address", "line\nbreak", 20, true).is_err());
        assert!(text("name", "abcdefghijk", 10, false).is_err());
        assert_eq!(text("name", "서울", 2, false), Ok("서울".to_owned()));
    }

    #[test]
    fn range_rules() {
        assert_eq!(in_range("qty", 3, 1, 10), Ok(3));
        assert_eq!(
            in_range("qty", 0, 1, 10),
            Err("qty must be greater than zero, got 0".to_owned())
        );
        assert!(in_range("stock", -1, 0, 10).is_err());
        assert!(in_range("qty", i64::MAX, 1, 10).is_err());
    }

    #[test]
    fn clips_escape() {
        assert_eq!(clip("a\u{7}bcd", 3), "a\\u{7}b…");
    }
}
