//! `config validate | show | patch`.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};

use super::args::{ConfigCmd, InitArgs};
use super::{config_path, load_config};
use crate::config::{self, edit, init, patch, show, Env};

pub(super) fn run(path: &Option<PathBuf>, cmd: ConfigCmd) -> Result<ExitCode> {
    match cmd {
        ConfigCmd::Validate => {
            let config = load_config(path)?;
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            let ids: Vec<&str> = config.sms.accounts.iter().map(|a| a.id.as_str()).collect();
            println!(
                "Configuration is valid: {} usable account(s){}{}.",
                ids.len(),
                if ids.is_empty() { "" } else { ": " },
                ids.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        ConfigCmd::Show(flag) => {
            let config = load_config(path)?;
            let view = show::redacted(&config);
            if flag.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", show::text(&view));
            }
            Ok(ExitCode::SUCCESS)
        }
        ConfigCmd::Patch { file, dry_run } => patch_file(&config_path(path).0, &file, dry_run),
        ConfigCmd::Init(args) => init(path, args),
    }
}

/// `config init`. The path: `--path`, else `--config`/`$SMSGATE_CONFIG`, else
/// `./smsgate.json5` (not /etc/smsgate, which a newcomer's user cannot write; the next
/// steps then say `--config`).
fn init(global: &Option<PathBuf>, args: InitArgs) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let target = args
        .path
        .clone()
        .or_else(|| global.clone())
        .unwrap_or_else(|| PathBuf::from("smsgate.json5"));
    // Refused before any question is asked; the write itself refuses too (create_new).
    if std::fs::symlink_metadata(&target).is_ok() {
        bail!(
            "{} already exists; config init never overwrites a file: edit it (then `smsgate config validate`), or give another --path",
            target.display()
        );
    }
    let given = |v: &Option<String>, check: fn(&str) -> Result<String, String>, flag: &str| {
        v.as_deref()
            .map(|s| check(s).map_err(|e| anyhow!("--{flag} {s:?} {e}")))
            .transpose()
    };
    let mut answers = init::Answers {
        account_sid: given(&args.account_sid, init::check_account_sid, "account-sid")?,
        sender: match (&args.from, &args.messaging_service) {
            (Some(n), _) => Some(init::check_from(n).map_err(|e| anyhow!("--from {n:?}: {e}"))?),
            (None, Some(mg)) => Some(
                init::check_messaging_service(mg)
                    .map_err(|e| anyhow!("--messaging-service {mg:?} {e}"))?,
            ),
            (None, None) => None,
        },
        public_url: given(&args.public_url, init::check_public_url, "public-url")?,
        token_env: init::check_token_env(&args.token_env)
            .map_err(|e| anyhow!("--token-env {:?} {e}", args.token_env))?,
        state_dir: default_state_dir(&target),
    };
    // Questions only for a person at a terminal; a script gets placeholders, listed below.
    if std::io::stdin().is_terminal() {
        if answers.account_sid.is_none() {
            answers.account_sid = ask(
                "Twilio Account SID (AC…, from the Twilio Console)",
                init::check_account_sid,
            )?;
        }
        if answers.sender.is_none() {
            answers.sender = ask(
                "Your Twilio phone number (+1…), or a Messaging Service SID (MG…)",
                init::check_sender,
            )?;
        }
        if answers.public_url.is_none() {
            answers.public_url = ask(
                "The public https URL Twilio will call (e.g. https://sms.example.com/webhooks/sms)",
                init::check_public_url,
            )?;
        }
    }
    let text = init::render(&answers);
    write_new_private(&target, text.as_bytes())?;
    println!("Wrote {} (mode 0600).", target.display());
    let missing = init::missing(&answers);
    // Later commands find the file by themselves only at $SMSGATE_CONFIG or the default.
    let found = std::env::var_os("SMSGATE_CONFIG").map(PathBuf::from) == Some(target.clone())
        || target == Path::new(config::DEFAULT_CONFIG_PATH);
    let c = if found {
        String::new()
    } else {
        format!(" --config {}", shell_word(&target.display().to_string()))
    };
    println!("Next steps:");
    let mut n = 0;
    let mut step = |s: String| {
        n += 1;
        println!("  {n}. {s}");
    };
    if !missing.is_empty() {
        step(format!(
            "fill in {} in {} (see the comments there)",
            missing.join(", "),
            target.display()
        ));
    }
    step(format!(
        "export {}=…   # the Auth Token from the Twilio Console; the file only names the variable",
        answers.token_env
    ));
    step(format!("smsgate{c} config validate"));
    step(format!(
        "smsgate{c} channels setup   # points your number's webhook at publicWebhookUrl"
    ));
    step(format!("smsgate{c} gateway"));
    step(format!(
        "smsgate{c} agent exec -- your-cli   # in another terminal: your agent (text on stdin, reply on stdout; `agent echo` to try); then text your number"
    ));
    step(format!(
        "smsgate{c} pairing approve sms CODE   # the code your first text gets back; your next text reaches the agent"
    ));
    Ok(ExitCode::SUCCESS)
}

/// `/var/lib/smsgate` for root (the systemd layout), else the user's state directory.
fn default_state_dir(target: &Path) -> String {
    if rustix::process::geteuid().is_root() {
        return "/var/lib/smsgate".into();
    }
    let home_state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".local/state"))
        });
    let dir = match home_state {
        Some(d) => d.join("smsgate"),
        None => std::path::absolute(target)
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("smsgate-state")))
            .unwrap_or_else(|| PathBuf::from("/var/lib/smsgate")),
    };
    dir.display().to_string()
}

/// Asks until the answer passes `check`; an empty answer (or end of input) leaves a
/// placeholder.
fn ask<T>(question: &str, check: fn(&str) -> Result<T, String>) -> Result<Option<T>> {
    use std::io::BufRead;
    let stdin = std::io::stdin();
    loop {
        eprint!("{question}, or Enter to fill in later: ");
        std::io::stderr().flush().ok();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(None);
        }
        match check(line.trim()) {
            Ok(v) => return Ok(Some(v)),
            Err(e) => eprintln!("  {:?} {e}", line.trim()),
        }
    }
}

/// A path as a shell word, quoted when it needs to be.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Creates `path` (never replacing anything: `O_EXCL`, which also refuses a symlink),
/// mode 0600 from the start, and syncs it.
fn write_new_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow!(
                "{} already exists; config init never overwrites a file",
                path.display()
            ),
            _ => anyhow!("cannot create {}: {e}", path.display()),
        })?;
    // The umask cannot widen 0600, but a umask could narrow it; set it exactly.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        bail!("cannot write {}: {e}", path.display());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

fn capped_error(
    path: &Path,
    what: &str,
    read: Result<String, config::CappedReadError>,
) -> Result<String> {
    read.map_err(|e| match e {
        config::CappedReadError::Io(e) => anyhow!("cannot read {what} {}: {e}", path.display()),
        config::CappedReadError::TooLarge => anyhow!(
            "{what} {} is larger than {} bytes (1 MiB), the most a config may be; check the path",
            path.display(),
            config::MAX_CONFIG_BYTES
        ),
    })
}

fn patch_file(target: &Path, patch_path: &Path, dry_run: bool) -> Result<ExitCode> {
    // The file is replaced by a rename, so it must be a regular file; a FIFO there is
    // refused without waiting for a writer.
    let original_text = capped_error(
        target,
        "config file",
        config::read_regular_capped(target, config::MAX_CONFIG_BYTES),
    )?;
    // A symlinked config (e.g. into a deploy checkout) is written where it points, so
    // the link stays a link.
    let real = std::fs::canonicalize(target)
        .with_context(|| format!("cannot resolve config file {}", target.display()))?;
    // It is replaced by a rename: a FIFO or device there would not be what was read.
    if !std::fs::metadata(&real).is_ok_and(|m| m.is_file()) {
        bail!(
            "config file {} is not a regular file; config patch edits a JSON5 file",
            real.display()
        );
    }
    let original = config::parse_json5(&original_text)
        .map_err(|e| anyhow!("config file {} is not valid JSON5: {e}", target.display()))?;
    // A FIFO or device as the patch is refused at once, never waited on.
    let patch_text = capped_error(
        patch_path,
        "patch file",
        config::read_regular_capped(patch_path, config::MAX_CONFIG_BYTES),
    )?;
    let patch_value = config::parse_json5(&patch_text).map_err(|e| {
        anyhow!(
            "patch file {} is not valid JSON5: {e}",
            patch_path.display()
        )
    })?;
    if !patch_value.is_object() {
        bail!("patch file {} must hold an object, e.g. {{ channels: {{ sms: {{ dmPolicy: \"allowlist\" }} }} }}", patch_path.display());
    }
    let mut merged = original.clone();
    patch::merge(&mut merged, &patch_value);
    let env = Env::from_process();
    let env_token: Vec<&str> = env.get("TWILIO_AUTH_TOKEN").into_iter().collect();
    let new_config = match config::validate::validate_value(&merged, &env) {
        Ok(c) => c,
        Err(errors) => bail!(
            "patch refused, the configuration would be invalid; nothing was written.\n{}",
            config::redact::scrub_known(&errors.to_string(), &env_token)
        ),
    };
    let changes = patch::diff(&original, &merged);
    if changes.is_empty() {
        println!("No changes.");
        return Ok(ExitCode::SUCCESS);
    }
    for c in &changes {
        println!("{c}");
    }
    // What `config validate` would warn about in the result (an http or loopback
    // publicWebhookUrl, a path that differs from webhookPath…), said now, not at the
    // gateway's next start.
    for w in &new_config.warnings {
        eprintln!("warning: {w}");
    }
    // Edit the file's text in place (its comments stay); when that cannot be done
    // safely, rewrite it whole, keeping the original beside it.
    let (text, lost) = match edit::apply(&original_text, &patch_value, &merged) {
        Ok(text) => (text, None),
        Err(why) => {
            let mut text = serde_json::to_string_pretty(&merged)?;
            text.push('\n');
            (text, Some(why))
        }
    };
    let bak = backup_path(&real);
    if dry_run {
        if let Some(why) = &lost {
            println!("(would be rewritten as plain JSON without its comments, {why}; the original would be kept as {})", bak.display());
        }
        println!("(dry run: {} not changed)", target.display());
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(why) = &lost {
        // Said before anything is written, so an operator who stops here loses nothing.
        eprintln!(
            "warning: {} is rewritten as plain JSON and loses its comments ({why}); the original is kept as {}",
            real.display(),
            bak.display()
        );
        write_atomically(&bak, original_text.as_bytes(), &real)?;
    }
    write_atomically(&real, text.as_bytes(), &real)?;
    // A relative --config is not a link: say "links to" only for a symlink.
    let linked = std::fs::symlink_metadata(target).is_ok_and(|m| m.file_type().is_symlink());
    if !linked {
        println!("Wrote {}.", target.display());
    } else {
        println!(
            "Wrote {} (the file {} links to).",
            real.display(),
            target.display()
        );
    }
    tell_running_gateway(&new_config, &real)
}

/// Asks a running daemon to reload, but only when it runs from the file just written:
/// one running from another file would reload that one and the claim would be false.
fn tell_running_gateway(new_config: &config::Config, written: &Path) -> Result<ExitCode> {
    use crate::admin::client::{call, AdminError};
    use crate::admin::Request;
    let daemon_file = match call(new_config, &Request::Status) {
        // Absent (a daemon from before it said): ask it to reload and claim no more.
        Ok(r) if r.ok => match r.data.get("configPath") {
            Some(serde_json::Value::String(p)) => Some(PathBuf::from(p)),
            Some(_) => None,
            None => {
                return match call(new_config, &Request::Reload) {
                    Ok(r) if r.ok => {
                        println!("Asked the running gateway to reload its config file; check with `smsgate channels status` that it runs from this one.");
                        Ok(ExitCode::SUCCESS)
                    }
                    Ok(r) => bail!(
                        "written, but the running gateway refused to reload: {}",
                        r.error.unwrap_or_default()
                    ),
                    Err(e) => {
                        eprintln!("note: written, but the running gateway could not be asked to reload ({e}); send it SIGHUP");
                        Ok(ExitCode::SUCCESS)
                    }
                };
            }
        },
        Ok(r) => {
            eprintln!("note: written, but the running gateway did not answer a status request ({}); send it SIGHUP to reload", r.error.unwrap_or_default());
            return Ok(ExitCode::SUCCESS);
        }
        Err(AdminError::NotRunning(_)) => {
            println!("No gateway is running; it takes effect at the next start.");
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => {
            eprintln!("note: written, but the running gateway could not be asked to reload ({e}); send it SIGHUP");
            return Ok(ExitCode::SUCCESS);
        }
    };
    match daemon_file {
        Some(f) if f == written => {}
        Some(f) => {
            println!(
                "The running gateway (on {}) runs from {}, not this file, so it was not reloaded; the change takes effect when a gateway runs from {}.",
                new_config.gateway.admin_socket.display(),
                f.display(),
                written.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        None => {
            println!(
                "The running gateway (on {}) was started without a config file, so it was not reloaded; restart it with --config {}.",
                new_config.gateway.admin_socket.display(),
                written.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
    }
    match call(new_config, &Request::Reload) {
        Ok(r) if r.ok => println!("The running gateway reloaded it."),
        Ok(r) => bail!("written, but the running gateway refused to reload it: {}", r.error.unwrap_or_default()),
        Err(AdminError::NotRunning(_)) => println!("No gateway is running; it takes effect at the next start."),
        Err(e) => eprintln!("note: written, but the running gateway could not be asked to reload ({e}); send it SIGHUP"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the original is kept when the file must be rewritten whole.
fn backup_path(real: &Path) -> PathBuf {
    let mut name = real.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    real.with_file_name(name)
}

/// Temp file beside the target, with the mode and owner of `like`, fsync, rename, fsync
/// the directory: a crash leaves the old file or the new one, never half of one.
fn write_atomically(target: &Path, bytes: &[u8], like: &Path) -> Result<()> {
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let meta =
        std::fs::metadata(like).with_context(|| format!("cannot stat {}", like.display()))?;
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        if rustix::process::geteuid().is_root() {
            let _ = std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()));
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow!("cannot write {}: {e}", target.display()));
    }
    Ok(())
}
