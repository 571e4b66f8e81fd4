//! Twilio's errors, shared by the REST client and what reads its answers
//! ([`super::reconcile`], the channel probes): Twilio's own error document
//! ([`ApiError`], scrubbed of secrets and numbers), a failed send ([`SendError`]) and a
//! failed REST call ([`RestError`]).

use std::time::Duration;

use serde::Deserialize;

use crate::phone::redact_numbers_in;
use crate::secret::{scrub, Secret};

/// Twilio's error document, with secrets and phone numbers removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub http_status: u16,
    pub code: Option<u32>,
    pub message: String,
    pub more_info: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Twilio answered {}", self.http_status)?;
        if let Some(code) = self.code {
            write!(f, " with error {code}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(more) = &self.more_info {
            write!(f, " ({more})")?;
        }
        if let Some(hint) = self.hint() {
            write!(f, ". Hint: {hint}")?;
        }
        Ok(())
    }
}

impl ApiError {
    /// What the error code means and what to do (see [`super::hints`]).
    pub fn hint(&self) -> Option<&'static super::hints::Hint> {
        self.code.and_then(super::hints::hint)
    }
}

impl SendError {
    /// The Twilio error code, when Twilio gave one.
    pub fn code(&self) -> Option<u32> {
        match self {
            SendError::Rejected(a) => a.code,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Twilio refused the request; retrying would not help.
    #[error("{0}")]
    Rejected(ApiError),
    /// Safe to retry: 429, 5xx, or the connection was never made.
    #[error("{detail}")]
    Retryable {
        detail: String,
        retry_after: Option<Duration>,
    },
    /// The request may have reached Twilio but no answer came back.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// A failed REST call for probes and setup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestError {
    #[error("{0}")]
    Api(ApiError),
    #[error("cannot reach Twilio: {0}")]
    Unavailable(String),
}

#[derive(Deserialize)]
struct ErrorJson {
    code: Option<u32>,
    message: Option<String>,
    more_info: Option<String>,
}

/// Builds Twilio's error from a response body, scrubbed of secrets and numbers.
pub(crate) fn api_error(http_status: u16, body: &str, secrets: &[&Secret]) -> ApiError {
    let clean = |s: &str| redact_numbers_in(&scrub(s, secrets));
    match serde_json::from_str::<ErrorJson>(body) {
        Ok(e) => ApiError {
            http_status,
            code: e.code,
            message: clean(e.message.as_deref().unwrap_or("(no message)")),
            more_info: e.more_info,
        },
        Err(_) => {
            let snippet: String = body.chars().take(200).collect();
            ApiError {
                http_status,
                code: None,
                message: clean(&format!("unreadable error body: {snippet:?}")),
                more_info: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_scrubbed() {
        let token = Secret::new("tok123secret");
        let e = api_error(
            400,
            r#"{"code":21211,"message":"The 'To' number +15551234567 is not valid. tok123secret","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#,
            &[&token],
        );
        assert_eq!(e.code, Some(21211));
        assert!(!e.message.contains("+15551234567"));
        assert!(!e.message.contains("tok123secret"));
        assert!(e.to_string().contains("error 21211"));
        let e = api_error(502, "<html>bad gateway</html>", &[&token]);
        assert_eq!(e.code, None);
    }
}
