//! Input checks shared by the gRPC APIs, with messages a caller can act on.

/// Checks a text field and returns it trimmed.
///
/// PostgreSQL `TEXT` cannot hold NUL characters, so they are refused here
/// rather than surfacing as an internal database error.
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
/// messages and dead-letter reasons: never echo input of unbounded size.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
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
        assert!(text("name", "abcdefghijk", 10, false).is_err());
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
}
