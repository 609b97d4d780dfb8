//! Checking settings at start-up: a value out of its range is refused with
//! a message that names the variable, instead of misbehaving silently
//! (a batch size of 0 that publishes nothing, a poll interval of 0 that
//! spins).

/// A connection string kept out of logs, errors and `Debug` output (it may
/// hold a password); read it with `ExposeSecret::expose_secret` only where
/// a connection is made.
pub type SecretUrl = secrecy::SecretString;

/// Parses a flag or variable into a [`SecretUrl`], for clap's `value_parser`.
pub fn secret_url(value: &str) -> Result<SecretUrl, std::convert::Infallible> {
    Ok(SecretUrl::from(value))
}

/// A setting outside its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable} must be between {min} and {max}, got {value}")]
pub struct OutOfRange {
    /// The environment variable (its flag is the same in kebab case).
    pub variable: &'static str,
    /// What was given.
    pub value: u64,
    /// Smallest accepted.
    pub min: u64,
    /// Largest accepted.
    pub max: u64,
}

/// `Ok` if `min <= value <= max`.
pub fn in_range(variable: &'static str, value: u64, min: u64, max: u64) -> Result<(), OutOfRange> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(OutOfRange {
            variable,
            value,
            min,
            max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_variable_and_the_range() {
        assert!(in_range("RELAY_BATCH_SIZE", 500, 1, 10_000).is_ok());
        let refused = in_range("RELAY_BATCH_SIZE", 0, 1, 10_000).expect_err("refused");
        assert_eq!(
            refused.to_string(),
            "RELAY_BATCH_SIZE must be between 1 and 10000, got 0"
        );
    }
}
