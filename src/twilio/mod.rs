//! Everything Twilio: the webhook signature, the form body, the REST client, and the
//! facts about message statuses.

pub(crate) mod client;
pub(crate) mod error;
pub mod fields;
pub mod form;
pub(crate) mod hints;
pub(crate) mod listing;
pub(crate) mod media;
pub(crate) mod reconcile;
pub mod signature;

pub use client::{create_form, Content, Creds, HttpTwilio, Lookup, MessagesApi, SendRequest, Sent};
pub use error::{ApiError, RestError, SendError};

/// Delivery statuses after which nothing changes.
pub fn is_terminal_status(status: &str) -> bool {
    matches!(
        status,
        "delivered" | "undelivered" | "failed" | "canceled" | "read"
    )
}

/// Whether a status callback may replace the recorded status: callbacks arrive out of
/// order, and a terminal status never moves backwards.
pub fn status_may_replace(current: Option<&str>, new: &str) -> bool {
    match current {
        None => true,
        Some(cur) if is_terminal_status(cur) => {
            // `read` follows `delivered` (WhatsApp/RCS); nothing else replaces a terminal one.
            cur == "delivered" && new == "read"
        }
        Some(cur) => is_terminal_status(new) || rank(new) >= rank(cur),
    }
}

fn rank(status: &str) -> u8 {
    match status {
        "scheduled" => 0,
        "accepted" => 1,
        "queued" => 2,
        "sending" => 3,
        "sent" => 4,
        "partially_delivered" => 5,
        _ => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_order() {
        let cases = [
            (None, "queued", true),
            (Some("sent"), "delivered", true),
            (Some("delivered"), "sent", false),
            (Some("failed"), "sent", false),
            (Some("sent"), "queued", false),
            (Some("queued"), "sent", true),
            (Some("sending"), "undelivered", true),
            (Some("delivered"), "read", true),
            (Some("undelivered"), "delivered", false),
            // WhatsApp's `read` (CONTRACT §12): after delivered, never back.
            (Some("sent"), "read", true),
            (Some("read"), "delivered", false),
            (Some("read"), "sent", false),
            (Some("read"), "read", false),
            (Some("failed"), "read", false),
        ];
        for (cur, new, want) in cases {
            assert_eq!(status_may_replace(cur, new), want, "{cur:?} -> {new}");
        }
    }
}
