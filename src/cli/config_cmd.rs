//! `config validate | show | patch`.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};

use super::args::ConfigCmd;
use super::{config_path, load_config};
use crate::config::{self, patch, show, Env};

pub fn run(path: &Option<PathBuf>, cmd: ConfigCmd) -> Result<ExitCode> {
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
    }
}

fn patch_file(target: &Path, patch_path: &Path, dry_run: bool) -> Result<ExitCode> {
    let original_text = std::fs::read_to_string(target)
        .with_context(|| format!("cannot read config file {}", target.display()))?;
    let original = config::parse_json5(&original_text)
        .map_err(|e| anyhow!("config file {} is not valid JSON5: {e}", target.display()))?;
    let patch_text = std::fs::read_to_string(patch_path)
        .with_context(|| format!("cannot read patch file {}", patch_path.display()))?;
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
    let new_config = match config::validate::validate_value(&merged, &Env::from_process()) {
        Ok(c) => c,
        Err(errors) => bail!(
            "patch refused, the configuration would be invalid; nothing was written.\n{errors}"
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
    if dry_run {
        println!("(dry run: {} not changed)", target.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = serde_json::to_string_pretty(&merged)?;
    text.push('\n');
    write_atomically(target, text.as_bytes())?;
    println!("Wrote {}.", target.display());
    if original_text.contains("//") || original_text.contains("/*") {
        // The json5 crate parses comments away; there is nothing to write them back from.
        eprintln!("note: the file was rewritten as plain JSON; its comments were not kept");
    }
    // A running daemon applies the change now.
    match crate::admin::client::call(&new_config, &crate::admin::Request::Reload) {
        Ok(r) if r.ok => println!("The running gateway reloaded it."),
        Ok(r) => bail!("written, but the running gateway refused to reload it: {}", r.error.unwrap_or_default()),
        Err(crate::admin::client::AdminError::NotRunning(_)) => println!("No gateway is running; it takes effect at the next start."),
        Err(e) => eprintln!("note: written, but the running gateway could not be asked to reload ({e}); send it SIGHUP"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Temp file beside the target, same mode and owner, fsync, rename, fsync the directory:
/// a crash leaves the old file or the new one, never half of one.
fn write_atomically(target: &Path, bytes: &[u8]) -> Result<()> {
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
        std::fs::metadata(target).with_context(|| format!("cannot stat {}", target.display()))?;
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
