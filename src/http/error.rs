//! The one place webhook failures become HTTP statuses.

use hyper::StatusCode;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum WebhookError {
    #[error("no webhook at this path")]
    NotFound,
    #[error("only POST is accepted here")]
    MethodNotAllowed,
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body was not received in time")]
    BodyTimeout,
    #[error("could not read the body: {0}")]
    BadBody(String),
    #[error("missing X-Twilio-Signature header")]
    MissingSignature,
    /// The response body is this text only; `diagnosis` (which URL was signed
    /// against, what Twilio called) goes to the log, never to the caller.
    #[error("X-Twilio-Signature does not match (check publicWebhookUrl: it must be byte for byte the URL configured in Twilio)")]
    BadSignature { diagnosis: String },
    #[error("X-Twilio-Webhooks-Signature-Settings: {0}")]
    BadSignatureSettings(String),
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// A field that is not of the shape Twilio sends (see `twilio::fields`).
    #[error("{0}")]
    BadField(#[from] crate::twilio::fields::FieldError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl WebhookError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            WebhookError::NotFound => StatusCode::NOT_FOUND,
            WebhookError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            WebhookError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            WebhookError::BadBody(_)
            | WebhookError::MissingField(_)
            | WebhookError::BadField(_) => StatusCode::BAD_REQUEST,
            WebhookError::MissingSignature
            | WebhookError::BadSignature { .. }
            | WebhookError::BadSignatureSettings(_) => StatusCode::FORBIDDEN,
            // Twilio logs 11200 and tries the fallback URL; the message is not ours yet.
            WebhookError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}
