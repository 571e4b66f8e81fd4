//! The integration tests, one crate (one link of the whole program instead of one per
//! file): each module is one area, run as `cargo test --test it AREA::` (for example
//! `cargo test --test it crash::`). The helpers live outside this directory
//! (tests/common/, tests/support/) so that a standalone tests/*.rs file can still use
//! them with `mod common;`.

#[path = "../support/bridges.rs"]
mod bridges;
#[path = "../common/mod.rs"]
mod common;

mod abuse;
mod access;
mod acme;
mod agent;
mod agent_docs;
mod agent_fail;
mod allow_to;
mod approvals;
mod bridges_acp;
mod bridges_docs;
mod bridges_openai;
mod cli_unix;
mod config_cli;
mod contract;
mod crash;
mod deploy;
mod faults;
mod fuzz_regressions;
mod http_guard;
mod media;
mod memory;
mod operations;
mod outbound_limits;
mod outgoing_text;
mod own_texts;
mod redirects;
mod unknown_sends;
mod webhook;
mod whatsapp;
