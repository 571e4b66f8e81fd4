//! `agent acp` and `agent openai`: options checked and resolved here, then the bridge
//! runs until SIGTERM/SIGINT (exit 0).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::args::{AgentCmd, BridgeArgs, Permissions};
use crate::bridge::{acp, openai, state, Backend, Settings};

/// The socket and the gateway's state directory: from the flags, else the config. The
/// config is only read when needed, and without its secrets (a bridge never needs the
/// Twilio token, and under its own systemd user it cannot read it).
fn locate(path: &Option<PathBuf>, common: &BridgeArgs, kind: &str) -> Result<(PathBuf, PathBuf)> {
    let env_dir = std::env::var_os("STATE_DIRECTORY").map(PathBuf::from);
    let need_config = common.socket.is_none()
        || (common.state_dir.is_none()
            && env_dir.as_deref().is_none_or(|d| d.as_os_str().is_empty()));
    let config = if need_config {
        Some(super::load_config_without_secrets(path).context(
            "the bridge needs the gateway's config for gateway.agentSocket and stateDir; or give --socket and --state-dir",
        )?)
    } else {
        None
    };
    let socket = match (&common.socket, &config) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => c.gateway.agent_socket.clone(),
        (None, None) => bail!("--socket is required"),
    };
    let dir = state::resolve_dir(
        common.state_dir.clone(),
        env_dir,
        config.as_ref().map(|c| c.gateway.state_dir.as_path()),
        kind,
    )
    .ok_or_else(|| anyhow!("--state-dir is required"))?;
    Ok((socket, dir))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("cannot read the working directory")?
        .join(p))
}

pub(super) fn run(path: &Option<PathBuf>, cmd: AgentCmd) -> Result<ExitCode> {
    let (socket, settings, make): (PathBuf, Settings, Box<dyn FnOnce() -> Result<Backend>>) =
        match cmd {
            AgentCmd::Acp {
                cwd,
                common,
                permissions,
                timeout,
                command,
            } => {
                let (socket, dir) = locate(path, &common, "acp")?;
                let cwd = match cwd {
                    Some(c) => absolute(&c)?,
                    None => std::env::current_dir().context("cannot read the working directory")?,
                };
                if !cwd.is_dir() {
                    bail!("--cwd {}: not a directory", cwd.display());
                }
                if timeout == 0 {
                    bail!("--timeout must be at least 1 second");
                }
                let opts = acp::AcpOptions {
                    argv: command,
                    cwd,
                    state_dir: absolute(&dir)?,
                    allow_permissions: permissions == Permissions::Allow,
                    ask_permissions: permissions == Permissions::Ask,
                    timeout: Duration::from_secs(timeout),
                    max_chars: common.max_chars,
                };
                (
                    socket,
                    settings(&common)?,
                    Box::new(move || {
                        Ok(Backend::Acp(
                            acp::AcpBridge::start(opts).map_err(|e| anyhow!(e))?,
                        ))
                    }),
                )
            }
            AgentCmd::Openai {
                base_url,
                model,
                api_key_env,
                system,
                system_file,
                history,
                common,
                timeout,
            } => {
                let (socket, dir) = locate(path, &common, "openai")?;
                let parsed = url::Url::parse(&base_url)
                    .map_err(|e| anyhow!("--base-url {base_url:?} is not a URL ({e}); e.g. http://127.0.0.1:11434/v1"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    bail!("--base-url must be http or https, e.g. http://127.0.0.1:11434/v1");
                }
                if model.trim().is_empty() {
                    bail!("--model must not be empty");
                }
                let api_key = match api_key_env {
                    Some(var) => match std::env::var(&var) {
                        Ok(v) if !v.trim().is_empty() => Some(crate::secret::Secret::new(v.trim())),
                        _ => bail!("--api-key-env {var}: the environment variable {var} is not set (put the key in the bridge's environment, e.g. its systemd EnvironmentFile)"),
                    },
                    None => None,
                };
                let system = match system_file {
                    Some(f) => Some(std::fs::read_to_string(&f).with_context(|| {
                        format!("--system-file {}: cannot read it", f.display())
                    })?),
                    None => system,
                };
                if timeout == 0 {
                    bail!("--timeout must be at least 1 second");
                }
                let opts = openai::OpenAiOptions {
                    base_url,
                    model,
                    api_key,
                    system,
                    history,
                    state_dir: absolute(&dir)?,
                    timeout: Duration::from_secs(timeout),
                    max_chars: common.max_chars,
                };
                (
                    socket,
                    settings(&common)?,
                    Box::new(move || {
                        Ok(Backend::OpenAi(Arc::new(
                            openai::OpenAiBridge::new(opts).map_err(|e| anyhow!(e))?,
                        )))
                    }),
                )
            }
            _ => bail!("not a bridge"),
        };
    crate::logging::init(&crate::config::LogSettings {
        level: "info".into(),
        format: crate::config::LogFormat::Text,
    });
    super::runtime()?.block_on(async move {
        let backend = make()?;
        let (tx, stop) = crate::daemon::Shutdown::new();
        tokio::spawn(async move {
            crate::daemon::signal().await;
            let _ = tx.send(true);
        });
        crate::bridge::run(socket, backend, settings, stop).await;
        tracing::info!("bridge stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn settings(common: &BridgeArgs) -> Result<Settings> {
    if common.max_chars < 2 {
        bail!("--max-chars must be at least 2 (one character and the \"…\")");
    }
    Ok(Settings {
        coalesce_ms: common.coalesce,
        max_chars: common.max_chars,
    })
}
