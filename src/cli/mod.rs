//! The command-line edge: turns parsed arguments into actions, prints results, and maps
//! failures to exit codes (1; clap itself exits 2 on a command line that does not parse).

pub mod args;
mod bridge;
mod channels_cmd;
mod config_cmd;
mod man;
mod pipe;
mod send;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

pub use args::Cli;
use args::{ApprovalsCmd, Command, PairingCmd, SendersCmd};

use crate::admin::{client, Request};
use crate::config::{self, Config, DEFAULT_CONFIG_PATH};

/// Runs a parsed command line. Output to a closed pipe ends it quietly with exit 0
/// ([`pipe`]), whether the write that found it returned the error or panicked.
pub fn run(cli: Cli) -> ExitCode {
    pipe::install_hook();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatch(cli)));
    match result {
        Ok(Ok(code)) => code,
        Ok(Err(e)) if pipe::is_broken_pipe(&e) || pipe::was_closed_pipe() => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            // Not eprintln!: a closed stderr must not turn an error into a panic.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
        Err(_) if pipe::was_closed_pipe() => ExitCode::SUCCESS,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Verbs that never read the config: `--config` (a global option, so that it may stand
/// before or after any verb, CONTRACT §2) is still accepted there, but not shown.
const WITHOUT_CONFIG: &[&str] = &["demo", "completions", "man"];

/// The command line's definition as `--help`, completions and man pages show it.
pub fn command() -> clap::Command {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    // A subcommand that has its own `config` arg does not get the global's copy; the
    // value still reaches `Cli::config`.
    for name in WITHOUT_CONFIG {
        cmd = cmd.mut_subcommand(name, |sc| {
            sc.arg(
                clap::Arg::new("config")
                    .long("config")
                    .value_name("PATH")
                    .value_parser(clap::value_parser!(PathBuf))
                    .hide(true),
            )
        });
    }
    cmd
}

/// Parses the process's arguments with [`command`] (exit 2 on a bad command line).
pub fn parse() -> Cli {
    let matches = command().get_matches();
    <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// An error with its causes, `outer: cause: root cause` ([`crate::logging::error_chain`]).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    crate::logging::error_chain(e)
}

/// The config path and whether the operator named it.
fn config_path(cli_path: &Option<PathBuf>) -> (PathBuf, bool) {
    match cli_path {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    }
}

/// Loads the config; without --config and without the default file, the environment
/// alone configures the gateway (handy in containers).
pub fn load_config(cli_path: &Option<PathBuf>) -> Result<Config> {
    load(cli_path, false)
}

/// For commands that never call Twilio (pairing, senders, queue, status without
/// probe, health): an operator runs them outside the service, where a token kept in
/// `$CREDENTIALS_DIRECTORY` cannot be read, and they do not need it.
pub fn load_config_without_secrets(cli_path: &Option<PathBuf>) -> Result<Config> {
    load(cli_path, true)
}

fn load(cli_path: &Option<PathBuf>, without_secrets: bool) -> Result<Config> {
    let (path, named) = config_path(cli_path);
    if !named && !path.exists() {
        let mut env = config::Env::from_process();
        env.tolerate_unresolved_secrets = without_secrets;
        return config::validate::validate_value(&Value::Object(Default::default()), &env)
            .map_err(|e| anyhow!("{DEFAULT_CONFIG_PATH} does not exist and the environment alone is not a valid configuration: {e}"));
    }
    let loaded = if without_secrets {
        config::load_without_secrets(&path)
    } else {
        config::load(&path)
    };
    loaded.map_err(|e| anyhow!("{e}"))
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Gateway => gateway(&cli.config),
        Command::Config(cmd) => config_cmd::run(&cli.config, cmd),
        Command::Pairing(cmd) => pairing(&cli.config, cmd),
        Command::Senders(cmd) => senders(&cli.config, cmd),
        Command::Approvals(cmd) => approvals(&cli.config, cmd),
        Command::Queue(cmd) => queue(&cli.config, cmd),
        Command::Message(args::MessageCmd::Send {
            channel,
            target,
            message,
            media,
            media_url,
            account,
            json,
        }) => {
            if let Some(c) = &channel {
                check_channel(c)?;
            }
            // `--channel whatsapp --target +1…` is `--target whatsapp:+1…`.
            let target = match channel.as_deref().and_then(crate::phone::Channel::parse) {
                Some(crate::phone::Channel::Whatsapp)
                    if crate::phone::strip_whatsapp_prefix(&target).is_none() =>
                {
                    format!(
                        "{}{}",
                        crate::phone::WHATSAPP_PREFIX,
                        crate::phone::strip_channel_prefix(&target)
                    )
                }
                _ => target,
            };
            send::message_send(
                &cli.config,
                &target,
                &send::Content {
                    text: message.unwrap_or_default(),
                    media,
                    media_urls: media_url,
                },
                account.as_deref(),
                json,
            )
        }
        Command::Agent(cmd) => agent(&cli.config, cmd),
        Command::Demo => demo(),
        Command::Channels(cmd) => channels_cmd::run(&cli.config, cmd),
        Command::Health => channels_cmd::health(&cli.config),
        Command::Reload { json } => reload(&cli.config, json),
        Command::Completions { shell } => {
            let mut cmd = command();
            clap_complete::generate(shell, &mut cmd, "smsgate", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: None } => {
            man::main_page(&mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: Some(dir) } => {
            let written = man::write_all(&dir)
                .with_context(|| format!("cannot write the man pages to {}", dir.display()))?;
            println!("Wrote {} man pages to {}.", written.len(), dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate {
            from,
            body,
            account,
        } => send::simulate(&cli.config, &from, &body, account.as_deref()),
    }
}

fn gateway(path: &Option<PathBuf>) -> Result<ExitCode> {
    let config = load_config(path)?;
    crate::logging::init(&config.gateway.log);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let twilio = Arc::new(crate::twilio::HttpTwilio::new().map_err(|e| anyhow!(e))?);
        let listen = config.gateway.listen;
        // Reloads read the same file again; an environment-only config has none.
        let source = Some(config_path(path).0).filter(|p| p.exists());
        let mut store = crate::daemon::Daemon::open_store(&config)?;
        if store.compacted_at_open() && std::env::var_os(RESTARTED).is_none() {
            // Nothing else exists yet (no socket, no task): the store is closed and the
            // same command starts again in this process, with a heap the migration never
            // touched. Only if that cannot happen does this process go on, bigger.
            drop(store);
            let error = restart_afresh();
            tracing::warn!("could not start afresh after the store migration ({error}); going on, with the migration's memory still held until the next restart");
            store = crate::daemon::Daemon::open_store(&config)?;
        }
        let daemon = crate::daemon::Daemon::with_store(config, source, twilio, store).await?;
        let listener = crate::http::serve::bind(listen).with_context(|| {
            format!(
                "cannot listen on {listen} (gateway.listen); is another process using that port?"
            )
        })?;
        daemon.serve(listener, crate::daemon::signal()).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Set in the environment of a gateway that restarted itself after a store migration,
/// so it never does so twice (a second migration at the next open is not expected, but
/// a loop must be impossible).
const RESTARTED: &str = "SMSGATE_RESTARTED_AFTER_MIGRATION";

/// Replaces this process with the same command (same pid, arguments, environment,
/// standard streams; every descriptor of ours is close-on-exec). Returns only on failure.
fn restart_afresh() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    tracing::info!("the store migration is done; starting afresh once to give its memory back");
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "smsgate".into());
    // /proc/self/exe is this very binary even if a package upgrade has replaced the file.
    std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env(RESTARTED, "1")
        .exec()
}

/// `[sms] CODE` → CODE, refusing other channels.
fn channel_and_code(args: &[String]) -> Result<&str> {
    match args {
        [code] => Ok(code),
        [channel, code] => {
            check_channel(channel)?;
            Ok(code)
        }
        _ => bail!("expected `[sms] CODE`"),
    }
}

fn check_channel(channel: &str) -> Result<()> {
    // WhatsApp rides on the same account, codes and queue (CONTRACT §12).
    if crate::phone::Channel::parse(channel).is_some() {
        Ok(())
    } else {
        bail!("unknown channel {channel:?}; smsgate's channels are sms and whatsapp")
    }
}

/// `smsgate reload`: the admin socket's `reload`, which answers only once the new
/// config is in force or refused, so the exit status tells which (the unit's
/// `ExecReload=` runs this, and `systemctl reload` then fails on a refused config).
fn reload(path: &Option<PathBuf>, json: bool) -> Result<ExitCode> {
    // Read without secrets, only to find the admin socket: the daemon validates the
    // file itself, with its credentials. A file this lenient load rejects, the daemon
    // would reject too, so it is not asked.
    let config = load_config_without_secrets(path).map_err(|e| {
        anyhow!(
            "reload refused, the running configuration is kept (the gateway was not asked): {e:#}"
        )
    })?;
    let data = client::call_daemon(&config, &Request::Reload).map_err(|e| anyhow!("{e}"))?;
    if json {
        print_json(&data);
    } else {
        println!("{}", s(&data, "summary"));
    }
    Ok(ExitCode::SUCCESS)
}

fn admin(path: &Option<PathBuf>, req: Request) -> Result<Value> {
    let config = load_config_without_secrets(path)?;
    client::call_or_direct(&config, &req).map_err(|e| anyhow!("{e}"))
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn pairing(path: &Option<PathBuf>, cmd: PairingCmd) -> Result<ExitCode> {
    match cmd {
        PairingCmd::List { channel, json } => {
            if let Some(c) = channel {
                check_channel(&c)?;
            }
            let data = admin(path, Request::PairingList)?;
            if json {
                print_json(&data);
            } else {
                let list = data.as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("No pending pairing requests.");
                }
                for r in list {
                    println!(
                        "{}  {}  account {}  expires {}",
                        s(&r, "code"),
                        s(&r, "sender"),
                        s(&r, "account"),
                        s(&r, "expiresAt")
                    );
                }
            }
        }
        PairingCmd::Approve { args, json } => {
            let code = channel_and_code(&args)?.to_string();
            let data = admin(path, Request::PairingApprove { code })?;
            if json {
                print_json(&data);
            } else {
                let texted = if data["texted"].as_bool() == Some(true) {
                    "; they will be texted that access was approved"
                } else {
                    "; not texted (they opted out)"
                };
                println!(
                    "Approved {} for account {}{texted}.",
                    s(&data, "sender"),
                    s(&data, "account")
                );
            }
        }
        PairingCmd::Reject { args, json } => {
            let code = channel_and_code(&args)?.to_string();
            let data = admin(path, Request::PairingReject { code })?;
            if json {
                print_json(&data);
            } else {
                println!(
                    "Rejected the request from {} (account {}).",
                    s(&data, "sender"),
                    s(&data, "account")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn approvals(path: &Option<PathBuf>, cmd: ApprovalsCmd) -> Result<ExitCode> {
    let ApprovalsCmd::List { json } = cmd;
    let data = admin(path, Request::ApprovalsList)?;
    if json {
        print_json(&data);
        return Ok(ExitCode::SUCCESS);
    }
    let list = |k: &str| data[k].as_array().cloned().unwrap_or_default();
    let (pending, decided) = (list("pending"), list("decided"));
    if pending.is_empty() {
        println!("No pending asks.");
    } else {
        println!("Pending:");
    }
    for r in &pending {
        println!(
            "  {}  account {}  asked {}  expires {}  {}  {}",
            s(r, "code"),
            s(r, "account"),
            s(r, "createdAt"),
            s(r, "expiresAt"),
            s(r, "title"),
            s(r, "detail")
        );
    }
    if decided.is_empty() {
        println!("No decided asks.");
    } else {
        println!("Decided (newest first):");
    }
    for r in &decided {
        let by = r["by"]
            .as_str()
            .map(|b| format!(" by {b}"))
            .unwrap_or_default();
        println!(
            "  {}  {}  account {}  {}{by}  conversation {}  {}  {}",
            s(r, "decidedAt"),
            s(r, "code"),
            s(r, "account"),
            s(r, "decision"),
            r["conversation"].as_str().unwrap_or("-"),
            s(r, "title"),
            s(r, "detail")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn senders(path: &Option<PathBuf>, cmd: SendersCmd) -> Result<ExitCode> {
    match cmd {
        SendersCmd::List { account, json } => {
            let data = admin(path, Request::SendersList { account })?;
            if json {
                print_json(&data);
            } else {
                let list = data.as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("No approved senders.");
                }
                for r in list {
                    println!(
                        "{}  account {}  approved {}",
                        s(&r, "sender"),
                        s(&r, "account"),
                        s(&r, "approvedAt")
                    );
                }
            }
        }
        SendersCmd::Revoke {
            number,
            account,
            json,
        } => {
            let data = admin(path, Request::SendersRevoke { account, number })?;
            if json {
                print_json(&data);
            } else {
                println!(
                    "Revoked {} (account {}); their messages no longer reach the agent.",
                    s(&data, "sender"),
                    s(&data, "account")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn demo() -> Result<ExitCode> {
    let level = std::env::var("SMSGATE_LOG").unwrap_or_else(|_| "warn".into());
    crate::logging::init(&crate::config::LogSettings {
        level,
        format: crate::config::LogFormat::Text,
    });
    // Declared before the runtime, so dropped after it: on every way out (an error, a
    // signal, a panic unwinding from a closed stdout) the gateway's tasks and store
    // stop before their directory is removed.
    let dir = crate::demo::TempDir::create()?;
    let rt = runtime()?;
    let outcome = rt.block_on(crate::demo::run(dir.path()));
    drop(rt);
    drop(dir);
    match outcome? {
        crate::demo::Outcome::Done => Ok(ExitCode::SUCCESS),
        // 128 + the signal's number, as a shell reports a command it killed.
        crate::demo::Outcome::Interrupted(signal) => Ok(ExitCode::from(128 + signal)),
    }
}

fn agent(path: &Option<PathBuf>, cmd: args::AgentCmd) -> Result<ExitCode> {
    use crate::agent::exec::Responder;
    let (socket, responder, max) = match cmd {
        args::AgentCmd::Echo { socket } => (socket, Responder::Echo, 4),
        args::AgentCmd::Exec {
            timeout,
            max_concurrent,
            socket,
            command,
        } => {
            if max_concurrent == 0 {
                bail!("--max-concurrent must be at least 1");
            }
            // Refused at start: a command that cannot run would fail every message.
            crate::agent::exec::check_runnable(&command).map_err(anyhow::Error::msg)?;
            (
                socket,
                Responder::Command {
                    argv: command,
                    timeout: std::time::Duration::from_secs(timeout.max(1)),
                },
                max_concurrent,
            )
        }
        cmd @ (args::AgentCmd::Acp { .. } | args::AgentCmd::Openai { .. }) => {
            return bridge::run(path, cmd);
        }
    };
    let socket = match socket {
        Some(s) => s,
        None => load_config_without_secrets(path)?.gateway.agent_socket,
    };
    crate::logging::init(&crate::config::LogSettings {
        level: "info".into(),
        format: crate::config::LogFormat::Text,
    });
    runtime()?.block_on(async move {
        let (tx, stop) = crate::shutdown::Shutdown::new();
        tokio::spawn(async move {
            crate::daemon::signal().await;
            let _ = tx.send(true);
        });
        crate::agent::exec::run(socket, responder, max, stop).await;
    });
    Ok(ExitCode::SUCCESS)
}

fn queue(path: &Option<PathBuf>, cmd: args::QueueCmd) -> Result<ExitCode> {
    let (req, json) = match cmd {
        args::QueueCmd::List { json } => (Request::QueueList, json),
        args::QueueCmd::Requeue { id, json } => (Request::QueueRequeue { id }, json),
        args::QueueCmd::Purge { id, json } => (Request::QueuePurge { id }, json),
        args::QueueCmd::Release { id, all, json } => (
            Request::QueueRelease {
                id: if all { None } else { id },
            },
            json,
        ),
    };
    let listing = matches!(req, Request::QueueList);
    let data = admin(path, req)?;
    if json {
        print_json(&data);
    } else if listing {
        let list = data.as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            println!("The queue is empty: no text waiting for an agent, no dead letters, no unknown, failed or held sends.");
        }
        for r in list {
            println!("{}", queue_line(&r));
        }
    } else {
        if let Some(ids) = data.get("released").and_then(Value::as_array) {
            let ids: Vec<&str> = ids.iter().filter_map(Value::as_str).collect();
            println!("Released {} held send(s): {}.", ids.len(), ids.join(", "));
            return Ok(ExitCode::SUCCESS);
        }
        let what = if data.get("requeued").is_some() {
            "Requeued"
        } else {
            "Purged"
        };
        println!("{what} {} ({}).", s(&data, "id"), s(&data, "kind"));
    }
    Ok(ExitCode::SUCCESS)
}

/// One `queue list` entry for people: id, state (a waiting text with its age and the
/// deliveries the agent failed), who, account, the text, then the error and what
/// happens next.
fn queue_line(r: &Value) -> String {
    let who = if s(r, "kind") == "send" {
        format!("to {}", s(r, "to"))
    } else {
        format!("from {}", s(r, "from"))
    };
    let mut state = s(r, "state").to_string();
    if state == "waiting" {
        let age = r.get("ageSecs").and_then(Value::as_u64).unwrap_or(0);
        let attempts = r.get("attempts").and_then(Value::as_u64).unwrap_or(0);
        state = format!(
            "waiting {} for an agent, {attempts} failed deliver{}",
            crate::agent::human_age(age.saturating_mul(1000)),
            if attempts == 1 { "y" } else { "ies" }
        );
    }
    let mut tail = r
        .get("error")
        .and_then(Value::as_str)
        .map(|e| format!("  ({e})"))
        .unwrap_or_default();
    if let Some(at) = r.get("nextAttempt").and_then(Value::as_str) {
        tail.push_str(&format!("  next delivery at {at}"));
    }
    if let Some(at) = r.get("nextCheck").and_then(Value::as_str) {
        tail.push_str(&format!("  next check with Twilio at {at}"));
    }
    format!(
        "{}  {state}  {who}  account {}  \"{}\"{tail}",
        s(r, "id"),
        s(r, "account"),
        s(r, "text").escape_debug()
    )
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible option and argument of every verb, with the path to it, that has
    /// no help text.
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let help = help.trim();
            if help.is_empty() {
                out.push(format!("{path} {id}"));
            }
            // Two doc lines for one flag are joined: a help that says the same thing
            // twice ("Channel (only `sms`) Channel (only `sms`)") or two versions of it.
            let sentences: Vec<&str> = help.split(") ").collect();
            if sentences.len() > 1 && sentences[1..].iter().any(|s| s.starts_with(sentences[0]))
                || help.matches("(default:").count() > 1
            {
                out.push(format!("{path} {id} (help says it twice: {help})"));
            }
        }
        for sc in cmd.get_subcommands() {
            if sc.get_name() == "help" {
                continue;
            }
            if sc.get_about().is_none() {
                out.push(format!("{path} {} (no about)", sc.get_name()));
            }
            undocumented(sc, &format!("{path} {}", sc.get_name()), out);
        }
    }

    #[test]
    fn queue_lines_show_a_waiting_texts_age_and_attempts() {
        let cases = [
            (
                serde_json::json!({"id": "SM1", "kind": "message", "state": "waiting",
                    "account": "default", "from": "+15557654321", "text": "hi \"there\"",
                    "ageSecs": 125, "attempts": 0, "error": null, "nextAttempt": null}),
                "SM1  waiting 2 min for an agent, 0 failed deliveries  from +15557654321  account default  \"hi \\\"there\\\"\"",
            ),
            (
                serde_json::json!({"id": "SM2", "kind": "message", "state": "waiting",
                    "account": "a", "from": "+15557654321", "text": "x", "ageSecs": 4,
                    "attempts": 1, "error": "model down",
                    "nextAttempt": "2026-12-07T16:00:30Z"}),
                "SM2  waiting 4 s for an agent, 1 failed delivery  from +15557654321  account a  \"x\"  (model down)  next delivery at 2026-12-07T16:00:30Z",
            ),
            (
                serde_json::json!({"id": "7", "kind": "send", "state": "unknown",
                    "account": "default", "to": "+15557654321", "text": "yo",
                    "error": "timeout", "nextCheck": "2026-12-07T16:01:00Z"}),
                "7  unknown  to +15557654321  account default  \"yo\"  (timeout)  next check with Twilio at 2026-12-07T16:01:00Z",
            ),
        ];
        for (entry, line) in cases {
            assert_eq!(queue_line(&entry), line);
        }
    }

    /// The README's first screen (above "### Installing") is commands to copy: each
    /// `smsgate …` (and `cargo run -- …`) line in its shell blocks must parse.
    #[test]
    fn the_readmes_first_screen_commands_parse() {
        let readme = include_str!("../../README.md");
        let first = &readme[..readme.find("### Installing").expect("the install section")];
        let mut seen = 0;
        let mut in_block = false;
        for line in first.lines() {
            let line = line.trim();
            if line.starts_with("```") {
                in_block = line == "```sh";
                continue;
            }
            if !in_block {
                continue;
            }
            let line = line.split(" #").next().unwrap_or_default();
            for part in line.split(';').map(str::trim) {
                let words: Vec<&str> = match part.strip_prefix("cargo run -- ") {
                    Some(rest) => std::iter::once("smsgate")
                        .chain(rest.split_whitespace())
                        .collect(),
                    None if part.starts_with("smsgate ") => part.split_whitespace().collect(),
                    None => continue,
                };
                seen += 1;
                if let Err(e) = command().try_get_matches_from(&words) {
                    panic!("README: `{part}` does not parse: {e}");
                }
            }
        }
        assert!(
            seen >= 6,
            "only {seen} commands found on the README's first screen"
        );
    }

    #[test]
    fn every_flag_and_argument_has_a_description() {
        let mut cmd = command();
        cmd.build();
        let mut missing = Vec::new();
        undocumented(&cmd, "smsgate", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn every_verb_shows_an_example() {
        let cmd = command();
        for sc in cmd.get_subcommands() {
            let help = sc
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("Example") && help.contains("smsgate "),
                "`smsgate {}` has no example",
                sc.get_name()
            );
        }
    }

    #[test]
    fn config_is_shown_only_where_it_is_used_and_accepted_everywhere() {
        let mut cmd = command();
        cmd.build();
        for sc in cmd.get_subcommands() {
            let Some(config) = sc.get_arguments().find(|a| a.get_id() == "config") else {
                continue;
            };
            let hidden = WITHOUT_CONFIG.contains(&sc.get_name());
            assert_eq!(config.is_hide_set(), hidden, "{}", sc.get_name());
        }
        for args in [
            &["smsgate", "demo", "--config", "/x"][..],
            &["smsgate", "--config", "/x", "demo"],
            &["smsgate", "pairing", "list", "--config", "/x"],
        ] {
            let m = command().try_get_matches_from(args).unwrap();
            let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&m).unwrap();
            assert_eq!(cli.config, Some(PathBuf::from("/x")), "{args:?}");
        }
    }
}
