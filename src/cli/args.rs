//! The command line as clap sees it. Parsed values are checked again in `super` before
//! anything runs (e.g. the optional `sms` channel word).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "smsgate",
    version,
    about = "Text your AI agent: a Twilio SMS gateway",
    propagate_version = true
)]
pub struct Cli {
    /// Config file (JSON5). Default: $SMSGATE_CONFIG, else /etc/smsgate/smsgate.json5
    #[arg(long, global = true, value_name = "PATH", env = "SMSGATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground
    Gateway,
    /// Check, show or change the configuration
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Pending pairing requests from new senders
    #[command(subcommand)]
    Pairing(PairingCmd),
    /// Approved senders
    #[command(subcommand)]
    Senders(SendersCmd),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Load and validate; exit 1 listing every problem
    Validate,
    /// The resolved configuration, secrets redacted
    Show(JsonFlag),
    /// Deep-merge a JSON5 patch into the config file
    Patch {
        /// The patch (JSON5): objects merge, other values replace, null deletes
        #[arg(long, value_name = "PATCH.json5")]
        file: PathBuf,
        /// Print the change and write nothing
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print one JSON document
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PairingCmd {
    /// List pending requests
    List {
        /// Channel (only `sms`)
        channel: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Approve a request: `pairing approve [sms] CODE`
    Approve {
        #[arg(num_args = 1..=2, required = true, value_name = "[sms] CODE")]
        args: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Drop a request: `pairing reject [sms] CODE`
    Reject {
        #[arg(num_args = 1..=2, required = true, value_name = "[sms] CODE")]
        args: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SendersCmd {
    /// List approved senders
    List {
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Undo an approval
    Revoke {
        number: String,
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
}
