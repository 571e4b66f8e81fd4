//! `message send` and `simulate`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use super::{load_config, print_json, runtime};
use crate::admin::{client, Request};
use crate::phone::E164;
use crate::twilio::{Creds, HttpTwilio, MessagesApi, SendError, SendRequest};

/// What `message send` sends: the text, files to attach, media URLs.
pub(super) struct Content {
    pub text: String,
    pub media: Vec<PathBuf>,
    pub media_urls: Vec<String>,
}

/// Reads `--media` files (this command's own: the daemon opens no path it is given),
/// each at most `max` bytes, into base64 for the admin socket.
fn read_media(files: &[PathBuf], max: u64) -> Result<Vec<crate::admin::MediaFile>> {
    use base64::Engine as _;
    use std::io::Read as _;
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let file = std::fs::File::open(f).map_err(|e| anyhow!("--media {}: {e}", f.display()))?;
        let mut data = Vec::new();
        file.take(max + 1)
            .read_to_end(&mut data)
            .map_err(|e| anyhow!("--media {}: {e}", f.display()))?;
        if data.len() as u64 > max {
            bail!(
                "--media {}: over the account's mediaMaxMb ({} bytes in all)",
                f.display(),
                max
            );
        }
        out.push(crate::admin::MediaFile {
            data: base64::engine::general_purpose::STANDARD.encode(&data),
            filename: f.file_name().map(|n| n.to_string_lossy().into_owned()),
        });
    }
    Ok(out)
}

pub(super) fn message_send(
    path: &Option<PathBuf>,
    target: &str,
    content: &Content,
    account: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let message = content.text.as_str();
    let config = load_config(path)?;
    let to = E164::parse_address(target).map_err(|e| {
        anyhow!("invalid --target: {e} (sms:, twilio-sms: and whatsapp: prefixes are accepted)")
    })?;
    // Not limited by allowTo (the operator's own word, CONTRACT §9), but never to one of
    // the gateway's own numbers, with or without the daemon.
    if let Some(own) = crate::access::allow_to::own_number(&config, &to) {
        bail!(
            "invalid --target: {}",
            crate::access::allow_to::own_number_refusal(own)
        );
    }
    let acct = config
        .sms
        .resolve_account(account)
        .map_err(|e| anyhow!(e))?
        .clone();
    for u in &content.media_urls {
        match url::Url::parse(u) {
            Ok(p) if p.scheme() == "https" && p.has_host() => {}
            _ => bail!("invalid --media-url {u:?}: Twilio fetches media from https URLs only"),
        }
    }
    if content.media.len() + content.media_urls.len() > crate::mms::MAX_ITEMS {
        bail!(
            "at most {} --media and --media-url in all",
            crate::mms::MAX_ITEMS
        );
    }
    let req = Request::MessageSend {
        account: Some(acct.id.clone()),
        to: to.to_string(),
        text: message.to_string(),
        media: read_media(&content.media, acct.media_max_bytes)?,
        media_urls: content.media_urls.clone(),
    };
    let data = match client::call(&config, &req) {
        Ok(resp) if resp.ok => resp.data,
        Ok(resp) => bail!(
            "{}",
            resp.error
                .unwrap_or_else(|| "the daemon refused the send".into())
        ),
        Err(client::AdminError::NotRunning(_)) if !content.media.is_empty() => {
            bail!("--media needs the running gateway: it serves the file to Twilio (start `smsgate gateway`, or host the file yourself and use --media-url)")
        }
        Err(client::AdminError::NotRunning(_)) => {
            runtime()?.block_on(direct(&config, &acct, &to, message, &content.media_urls))?
        }
        Err(e) => bail!("{e}"),
    };
    if json {
        let mut out = data.clone();
        if let Value::Object(o) = &mut out {
            o.insert("to".into(), json!(to.as_str()));
            o.insert("account".into(), json!(acct.id));
        }
        print_json(&out);
    } else if data["queued"].as_bool() == Some(true) {
        println!("Queued for {to}: Twilio has not answered yet; the gateway keeps retrying (see `smsgate queue list` if it fails).");
    } else {
        let sids: Vec<&str> = data["sids"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "Sent to {to} in {} message(s), {} segment(s): {}",
            sids.len(),
            data["segments"],
            sids.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// No daemon: straight to Twilio, a few retries on 429/5xx, never after an unknown outcome.
async fn direct(
    config: &crate::config::Config,
    account: &crate::config::Account,
    to: &E164,
    message: &str,
    media_urls: &[String],
) -> Result<Value> {
    if let Ok(store) = crate::store::Store::open(&config.gateway.state_dir) {
        if store.is_opted_out(&account.id, to).unwrap_or(false) {
            bail!("{to} has opted out (replied STOP); nothing was sent");
        }
    }
    let parts = crate::outbound::plan_parts(message, account, to, media_urls)
        .map_err(|r| anyhow!(r.message))?;
    let sender = account.sender_for(to).cloned().ok_or_else(|| {
        anyhow!(
            "account {:?} has no WhatsApp (set whatsapp.enabled and whatsapp.from)",
            account.id
        )
    })?;
    let twilio = Arc::new(HttpTwilio::new().map_err(|e| anyhow!(e))?);
    let mut sids = Vec::new();
    let mut segments = 0;
    for (i, body) in parts.iter().enumerate() {
        let req = SendRequest {
            creds: Creds::of(account),
            to: to.clone(),
            sender: sender.clone(),
            body: body.clone(),
            media_urls: if i == 0 {
                media_urls.to_vec()
            } else {
                Vec::new()
            },
            status_callback: account.public_url().map(|u| u.raw.clone()),
            content: None,
        };
        let mut attempt = 0;
        let sent = loop {
            attempt += 1;
            match twilio.send(&req).await {
                Ok(s) => break s,
                Err(SendError::Retryable {
                    detail,
                    retry_after,
                }) if attempt < 4 => {
                    let wait = crate::outbound::backoff(attempt, retry_after, 0.5);
                    eprintln!("Twilio: {detail}; retrying in {:.1}s", wait.as_secs_f64());
                    tokio::time::sleep(wait).await;
                }
                Err(e) => bail!("part {} of {}: {e}", i + 1, parts.len()),
            }
        };
        segments += sent
            .segments
            .unwrap_or_else(|| crate::text::count_segments(body).segments);
        sids.extend(sent.sid);
    }
    // The SIDs become ours in the store (no daemon holds it now), so the daemon applies
    // their delivery callbacks later instead of taking them for strangers'.
    if let Ok(store) = crate::store::Store::open(&config.gateway.state_dir) {
        let now = crate::clock::now_ms();
        let noted = sids
            .iter()
            .try_for_each(|sid| store.note_sent(sid, "queued", now))
            .and_then(|()| store.flush());
        if let Err(e) = noted {
            eprintln!("sent, but the SIDs could not be recorded (their delivery statuses will be ignored): {e}");
        }
    }
    Ok(json!({"sids": sids, "segments": segments, "queued": false}))
}

pub(super) fn simulate(
    path: &Option<PathBuf>,
    from: &str,
    body: &str,
    account: Option<&str>,
) -> Result<ExitCode> {
    let config = load_config(path)?;
    let from = E164::parse(from).map_err(|e| anyhow!("invalid --from: {e}"))?;
    let acct = config
        .sms
        .resolve_account(account)
        .map_err(|e| anyhow!(e))?;
    let url = crate::simulate::local_url(&config, acct);
    let sid = crate::simulate::message_sid();
    let form = crate::simulate::inbound_form(acct, &sid, from.as_str(), body);
    let status = runtime()?
        .block_on(crate::simulate::post(&url, acct, &form))
        .map_err(|e| anyhow!(e))?;
    if status == 200 {
        println!("Posted {sid} from {from} to {url}: 200 (stored).");
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("posted {sid} to {url}: the gateway answered {status} (see its log)")
    }
}
