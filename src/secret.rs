//! The API token: kept out of `Debug`, `Display`, logs and errors by construction.

use std::fmt;

#[derive(Clone)]
pub struct ApiToken(String);

impl ApiToken {
    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// The only way to read the token: for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` whole, or `[redacted]` when it holds the token in any case (a URL's host has been
    /// lower-cased on its way here).
    pub fn redact_any_case(&self, text: &str) -> String {
        let folded = text.to_ascii_lowercase();
        if !self.0.is_empty() && folded.contains(&self.0.to_ascii_lowercase()) {
            return "[redacted]".to_owned();
        }
        text.to_owned()
    }

    /// `text` with every copy of the token replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_owned();
        }
        text.replace(&self.0, "[redacted]")
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_hides_the_token() {
        let token = super::ApiToken::new("s3cret".into());
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn redact_any_case_hides_a_lower_cased_copy() {
        let token = super::ApiToken::new("AbC9xYz".into());
        assert_eq!(
            token.redact_any_case("https://abc9xyz.evil.example:443"),
            "[redacted]"
        );
        assert_eq!(
            token.redact_any_case("https://evil:443"),
            "https://evil:443"
        );
    }

    #[test]
    fn redact_takes_out_every_copy() {
        let token = super::ApiToken::new("s3cret".into());
        assert_eq!(
            token.redact("Bearer s3cret is not s3cret's"),
            "Bearer [redacted] is not [redacted]'s"
        );
    }
}
