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

pub mod access;
pub mod acme;
pub mod admin;
pub mod agent;
pub mod app;
pub(crate) mod backoff;
pub mod bridge;
pub mod channels;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod http;
pub mod inbound;
pub mod limits;
pub(crate) mod lines;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod mms;
pub mod outbound;
pub mod phone;
pub mod secret;
pub mod shutdown;
pub mod simulate;
pub mod store;
pub mod systemd;
pub mod text;
pub mod texts;
pub mod twilio;
pub mod unix_socket;
