//! smsgate: text your AI agent. A Twilio number receives an SMS, Twilio POSTs a signed
//! webhook, smsgate stores it durably, decides whether the sender may talk to the
//! agent, and hands it over; replies go back through Twilio's Messages API.
//!
//! Layout: `config` (file → validated types), `twilio` (signature, form, REST client),
//! `store` (sled), `access` (who may talk: pure decisions), `http` (the webhook
//! listener), `inbound` (processing admitted messages), `outbound` (the send queue),
//! `admin` (the CLI's way into the daemon), `text` (SMS-ready text), `app` (the
//! running gateway's handles), `shutdown` and `clock` (the bottom of the graph), `daemon`
//! (wiring; imported only by `cli`). The pipeline: docs/architecture.md.

// Items the tests and tools do not need are pub(crate): the compiler keeps it so.
#![warn(unreachable_pub)]
pub mod access;
pub mod acme;
pub(crate) mod admin;
pub mod agent;
pub(crate) mod app;
pub(crate) mod backoff;
pub(crate) mod bridge;
pub(crate) mod channels;
pub mod cli;
pub(crate) mod clock;
pub mod config;
pub(crate) mod daemon;
pub(crate) mod demo;
pub(crate) mod http;
pub(crate) mod inbound;
pub(crate) mod limits;
pub(crate) mod lines;
pub(crate) mod live;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod mms;
pub(crate) mod outbound;
pub mod phone;
pub mod secret;
pub(crate) mod shutdown;
pub(crate) mod simulate;
pub mod store;
pub(crate) mod systemd;
pub mod text;
pub(crate) mod texts;
pub mod twilio;
pub(crate) mod unix_socket;
