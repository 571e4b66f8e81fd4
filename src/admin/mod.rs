//! The admin interface: operations on pairing requests and approved senders, reached
//! by the CLI through the running daemon's Unix socket, or on the store directly when
//! no daemon runs.

pub(crate) mod client;
pub(crate) mod ops;
pub(crate) mod server;

use serde::{Deserialize, Serialize};

/// One request line on the admin socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub(crate) enum Request {
    Ping,
    PairingList,
    PairingApprove {
        code: String,
    },
    PairingReject {
        code: String,
    },
    SendersList {
        account: Option<String>,
    },
    SendersRevoke {
        account: Option<String>,
        number: String,
    },
    QueueList,
    /// Pending asks and the decided ones kept (CONTRACT §9 audit).
    ApprovalsList,
    /// Queue depths and agent connections.
    Status,
    /// Reload the config file (what SIGHUP does).
    Reload,
    QueueRequeue {
        id: String,
    },
    QueuePurge {
        id: String,
    },
    /// Send held sends (over a spending limit): one, or every one.
    QueueRelease {
        id: Option<String>,
    },
    MessageSend {
        account: Option<String>,
        to: String,
        text: String,
        /// `--media FILE`s, read by the CLI (the daemon opens no path it is given).
        #[serde(default)]
        media: Vec<MediaFile>,
        #[serde(default)]
        media_urls: Vec<String>,
    },
}

/// A file `message send --media` read, its bytes in base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MediaFile {
    pub data: String,
    pub filename: Option<String>,
}

/// One response line: `data` on success, `error` (a sentence for the operator) on failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Response {
    pub ok: bool,
    #[serde(default)]
    pub data: serde_json::Value,
    #[serde(default)]
    pub error: Option<String>,
}

impl Response {
    pub(crate) fn ok(data: serde_json::Value) -> Self {
        Self {
            ok: true,
            data,
            error: None,
        }
    }

    pub(crate) fn err(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            data: serde_json::Value::Null,
            error: Some(message.into()),
        }
    }
}
