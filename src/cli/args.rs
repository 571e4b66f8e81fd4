//! The command line as clap sees it. Parsed values are checked again in `super` before
//! anything runs (e.g. the optional `sms` channel word).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// `smsgate --version`: the version and the commit it was built from (build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SMSGATE_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "smsgate",
    version = VERSION,
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
    #[command(after_help = "Examples:\n  smsgate gateway --config /etc/smsgate/smsgate.json5")]
    Gateway,
    /// Check, show or change the configuration
    #[command(
        subcommand,
        after_help = "Examples:\n  smsgate config validate\n  smsgate config show --json\n  smsgate config patch --file change.json5 --dry-run"
    )]
    Config(ConfigCmd),
    /// Pending pairing requests from new senders
    #[command(
        subcommand,
        after_help = "Examples:\n  smsgate pairing list\n  smsgate pairing approve sms ABCD1234"
    )]
    Pairing(PairingCmd),
    /// Approved senders
    #[command(
        subcommand,
        after_help = "Examples:\n  smsgate senders list --json\n  smsgate senders revoke +15550100001"
    )]
    Senders(SendersCmd),
    /// The agent's asks: pending, and the last 100 decided per account
    #[command(
        subcommand,
        after_help = "Examples:\n  smsgate approvals list\n  smsgate approvals list --json"
    )]
    Approvals(ApprovalsCmd),
    /// Texts waiting for an agent, dead letters, and sends whose outcome is unknown or that failed for good
    #[command(
        subcommand,
        after_help = "Examples:\n  smsgate queue list\n  smsgate queue requeue SM0123456789abcdef0123456789abcdef"
    )]
    Queue(QueueCmd),
    /// Send an SMS now
    #[command(
        subcommand,
        after_help = "Examples:\n  smsgate message send --target sms:+15550100001 --message 'Hello from smsgate'\n  smsgate message send --target sms:+15550100001 --message 'The chart' --media chart.png"
    )]
    Message(MessageCmd),
    /// Built-in agents that connect to the agent socket
    #[command(
        subcommand,
        after_help = "Examples:\n  smsgate agent echo\n  smsgate agent exec -- my-agent --reply\n  smsgate agent openai --base-url http://127.0.0.1:11434/v1 --model llama3.2\n  smsgate agent acp -- gemini --experimental-acp"
    )]
    Agent(AgentCmd),
    /// See the whole flow on this machine, no Twilio account needed
    #[command(after_help = "Examples:\n  smsgate demo")]
    Demo,
    /// Channel capabilities, status and Twilio-side setup
    #[command(
        subcommand,
        after_help = "Examples:\n  smsgate channels status --probe\n  smsgate channels setup --dry-run\n  smsgate channels capabilities --json"
    )]
    Channels(ChannelsCmd),
    /// Exit 0 when the local gateway answers /readyz (for container health checks)
    #[command(after_help = "Examples:\n  smsgate health && echo up")]
    Health,
    /// Make the running gateway reread its config and certificate; exit 1 with the
    /// reason when it refuses (the running configuration is then kept)
    #[command(after_help = "Examples:\n  smsgate reload\n  systemctl reload smsgate")]
    Reload {
        /// Print one JSON document instead of text
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions
    #[command(
        after_help = "Examples:\n  smsgate completions bash > /etc/bash_completion.d/smsgate"
    )]
    Completions {
        /// The shell to write completions for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page smsgate(1) (roff), or write every page with --dir
    #[command(
        after_help = "Examples:\n  smsgate man | man -l -\n  smsgate man --dir /usr/local/share/man/man1"
    )]
    Man {
        /// Write smsgate.1 and one page per subcommand (smsgate-queue-list.1…) here
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Post a correctly signed inbound SMS to the local gateway
    #[command(after_help = "Examples:\n  smsgate simulate --from +15550100001 --body 'hello'")]
    Simulate {
        /// The sender's number (E.164)
        #[arg(long)]
        from: String,
        /// The message text
        #[arg(long)]
        body: String,
        /// Account ID from channels.sms.accounts to simulate (default: the default account)
        #[arg(long)]
        account: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ChannelsCmd {
    /// What the channel can do
    Capabilities {
        /// Channel (only `sms`)
        #[arg(long)]
        channel: Option<String>,
        /// Print one JSON document instead of text
        #[arg(long)]
        json: bool,
    },
    /// Per account: configuration, daemon state; with --probe, checks against Twilio
    Status {
        /// Channel (only `sms`)
        #[arg(long)]
        channel: Option<String>,
        /// Ask Twilio: credentials, the number's webhook, recent 11200 errors
        #[arg(long)]
        probe: bool,
        /// Print one JSON document instead of text
        #[arg(long)]
        json: bool,
    },
    /// Point the Twilio number (or Messaging Service) at publicWebhookUrl
    Setup {
        /// Account ID from channels.sms.accounts (default: the default account)
        #[arg(long)]
        account: Option<String>,
        /// Show the change, make none
        #[arg(long)]
        dry_run: bool,
        /// Also set the fallback URL Twilio calls when the webhook fails
        #[arg(long, value_name = "URL")]
        fallback_url: Option<String>,
        /// Add Twilio's connection override #rc=N&rp=all to the webhook URL (0-5)
        #[arg(long, value_name = "N")]
        retries: Option<u8>,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// List texts waiting for an agent (age, failed deliveries), dead letters, unknown-outcome, failed and held sends
    List {
        /// Print one JSON document instead of text
        #[arg(long)]
        json: bool,
    },
    /// Put an entry back: a dead letter to the agent, a send to Twilio
    Requeue {
        /// The entry's ID, as `queue list` shows it
        id: String,
        /// Print one JSON document instead of text
        #[arg(long)]
        json: bool,
    },
    /// Delete an entry
    Purge {
        /// The entry's ID, as `queue list` shows it
        id: String,
        /// Print one JSON document instead of text
        #[arg(long)]
        json: bool,
    },
    /// Send a send held over a spending limit (outboundLimits), or every held one
    Release {
        /// The held send's ID, as `queue list` shows it
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Release every held send
        #[arg(long)]
        all: bool,
        /// Print one JSON document instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MessageCmd {
    /// Send an SMS or WhatsApp message: `message send --target sms:+1… --message TEXT`
    /// (`--target whatsapp:+1…` for WhatsApp)
    Send {
        /// Channel: `sms` (default) or `whatsapp`
        #[arg(long)]
        channel: Option<String>,
        /// Recipient: +E.164, sms:+E.164, twilio-sms:+E.164 or whatsapp:+E.164
        #[arg(long)]
        target: String,
        /// The text (markdown is flattened; long texts are split); may be left out
        /// when --media or --media-url is given
        #[arg(long, required_unless_present_any = ["media", "media_url"])]
        message: Option<String>,
        /// A file to attach as MMS (repeatable): read by this command, checked by its
        /// bytes against the types Twilio takes, served to Twilio by the running gateway
        #[arg(long, value_name = "FILE")]
        media: Vec<PathBuf>,
        /// An https URL of media to attach (repeatable; Twilio fetches it)
        #[arg(long, value_name = "URL")]
        media_url: Vec<String>,
        /// Account ID from channels.sms.accounts (default: the default account)
        #[arg(long)]
        account: Option<String>,
        /// Print one JSON document instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Reply to every message with its own text
    Echo {
        /// Agent socket (default: gateway.agentSocket from the config)
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Run a command per message: text on stdin, reply on stdout
    Exec {
        /// Seconds a command may run before it is killed
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Commands running at once (one sender's messages always run one at a time)
        #[arg(long, default_value_t = 4)]
        max_concurrent: usize,
        /// Agent socket (default: gateway.agentSocket from the config)
        #[arg(long)]
        socket: Option<PathBuf>,
        /// The command and its arguments, after `--`
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Bridge to an Agent Client Protocol agent (gemini --acp, claude-code-acp, codex-acp,
    /// opencode acp, openclaw acp): one session per conversation
    Acp {
        /// Working directory for the agent's sessions (default: the bridge's own)
        #[arg(long, value_name = "DIR")]
        cwd: Option<PathBuf>,
        #[command(flatten)]
        common: BridgeArgs,
        /// Answer the agent's permission requests: deny (reject), allow (allow once), or
        /// ask (text the account's execApprovals approvers and do what they answer)
        #[arg(long, value_enum, default_value = "deny")]
        permissions: Permissions,
        /// Seconds a prompt may run before it is cancelled with session/cancel
        #[arg(long, default_value_t = 600, value_name = "SECS")]
        timeout: u64,
        /// The ACP agent's command and its arguments, after `--`
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Bridge to an OpenAI-compatible chat-completions server (ollama, llama.cpp, vLLM,
    /// LM Studio, OpenClaw's or Hermes' gateway, OpenAI)
    Openai {
        /// The API base, e.g. http://127.0.0.1:11434/v1 (POST {URL}/chat/completions)
        #[arg(long, value_name = "URL")]
        base_url: String,
        /// The model name
        #[arg(long, value_name = "NAME")]
        model: String,
        /// Environment variable holding the API key (sent as a Bearer token)
        #[arg(long, value_name = "VAR")]
        api_key_env: Option<String>,
        /// System prompt
        #[arg(long, value_name = "TEXT", conflicts_with = "system_file")]
        system: Option<String>,
        /// System prompt from a file
        #[arg(long, value_name = "FILE")]
        system_file: Option<PathBuf>,
        /// Earlier turns (a text and its reply) sent with each new text
        #[arg(long, default_value_t = 20, value_name = "N")]
        history: usize,
        #[command(flatten)]
        common: BridgeArgs,
        /// Seconds one model call may take before it is retried
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        timeout: u64,
    },
}

/// Options both bridges take.
#[derive(Debug, Args)]
pub struct BridgeArgs {
    /// Where the bridge keeps its state (default: $STATE_DIRECTORY, else
    /// <gateway stateDir>/bridges/<kind>)
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Texts of one conversation within this many ms of the previous one become one
    /// prompt (0 = off)
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub coalesce: u64,
    /// Longest reply in characters; a longer one is cut and ends with "…"
    #[arg(long, default_value_t = 4000, value_name = "N")]
    pub max_chars: usize,
    /// Agent socket (default: gateway.agentSocket from the config)
    #[arg(long, env = "SMSGATE_AGENT_SOCKET")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Permissions {
    Deny,
    Allow,
    Ask,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Write a commented starter config (mode 0600; never overwrites), asking for what
    /// is missing when stdin is a terminal
    Init(InitArgs),
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

/// `config init`: each value may be given here; the rest is asked for on a terminal,
/// else left as a placeholder to fill in.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write it (default: --config / $SMSGATE_CONFIG, else ./smsgate.json5)
    #[arg(long, value_name = "P")]
    pub path: Option<PathBuf>,
    /// The Twilio Account SID (AC…)
    #[arg(long, value_name = "AC…")]
    pub account_sid: Option<String>,
    /// The Twilio number that sends and receives (E.164, +1…)
    #[arg(long, value_name = "+1…", conflicts_with = "messaging_service")]
    pub from: Option<String>,
    /// Send through this Messaging Service instead of a number (MG…)
    #[arg(long, value_name = "MG…")]
    pub messaging_service: Option<String>,
    /// The public URL Twilio calls (https://…/webhooks/sms)
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// The environment variable the auth token is read from (never written to the file)
    #[arg(long, value_name = "VAR", default_value = "TWILIO_AUTH_TOKEN")]
    pub token_env: String,
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
        /// Print one JSON document instead of text
        #[arg(long)]
        json: bool,
    },
    /// Approve a request: `pairing approve [sms] CODE`
    Approve {
        /// The pairing code from the request, optionally after the channel `sms`
        #[arg(num_args = 1..=2, required = true, value_name = "[sms] CODE")]
        args: Vec<String>,
        /// Print one JSON document instead of text
        #[arg(long)]
        json: bool,
    },
    /// Drop a request: `pairing reject [sms] CODE`
    Reject {
        /// The pairing code from the request, optionally after the channel `sms`
        #[arg(num_args = 1..=2, required = true, value_name = "[sms] CODE")]
        args: Vec<String>,
        /// Print one JSON document instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCmd {
    /// List pending asks and the decided ones kept (30 days, the last 100 per account)
    #[command(after_help = "Examples:\n  smsgate approvals list\n  smsgate approvals list --json")]
    List {
        /// Print one JSON document instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SendersCmd {
    /// List approved senders
    List {
        /// Account ID from channels.sms.accounts (default: the default account)
        #[arg(long)]
        account: Option<String>,
        /// Print one JSON document instead of text
        #[arg(long)]
        json: bool,
    },
    /// Undo an approval
    Revoke {
        /// The sender's number (E.164)
        number: String,
        /// Account ID from channels.sms.accounts (default: the default account)
        #[arg(long)]
        account: Option<String>,
        /// Print one JSON document instead of text
        #[arg(long)]
        json: bool,
    },
}
