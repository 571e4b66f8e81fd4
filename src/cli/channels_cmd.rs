//! `channels capabilities | status | setup` and `health`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use super::args::ChannelsCmd;
use super::{check_channel, load_config, load_config_without_secrets, print_json, runtime};
use crate::admin::{client, Request};
use crate::channels::{self, Check};

pub(super) fn run(path: &Option<PathBuf>, cmd: ChannelsCmd) -> Result<ExitCode> {
    match cmd {
        ChannelsCmd::Capabilities { channel, json } => {
            if let Some(c) = channel {
                check_channel(&c)?;
            }
            let caps = channels::capabilities();
            if json {
                print_json(&caps);
            } else {
                println!("sms:");
                if let Some(map) = caps["capabilities"].as_object() {
                    for (k, v) in map {
                        println!(
                            "  {k}: {}",
                            if let Some(s) = v.as_str() {
                                s.to_string()
                            } else {
                                v.to_string()
                            }
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ChannelsCmd::Status {
            channel,
            probe,
            json,
        } => {
            if let Some(c) = channel {
                check_channel(&c)?;
            }
            status(path, probe, json)
        }
        ChannelsCmd::Setup {
            account,
            dry_run,
            fallback_url,
            retries,
        } => {
            let opts = channels::SetupOptions {
                fallback_url,
                retries,
            };
            setup(path, account.as_deref(), dry_run, &opts)
        }
    }
}

/// One line per connected agent: kind, pid, what it holds and for how long.
fn agent_summary(a: &Value) -> String {
    let pid = a["pid"]
        .as_u64()
        .map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}"));
    let oldest = a["oldestUnackedMs"]
        .as_u64()
        .map_or_else(String::new, |ms| {
            format!(", oldest unacknowledged {}s", ms / 1000)
        });
    format!(
        "  agent: {} ({pid}), {} message(s) in flight{oldest}",
        a["kind"].as_str().unwrap_or("socket"),
        a["inFlight"].as_u64().unwrap_or(0)
    )
}

/// The daemon's view, or the store's when no daemon runs.
fn daemon_state(config: &crate::config::Config) -> Value {
    match client::call(config, &Request::Status) {
        Ok(r) if r.ok => r.data,
        Ok(r) => json!({"running": true, "error": r.error}),
        Err(client::AdminError::NotRunning(_)) => {
            match crate::store::Store::open(&config.gateway.state_dir) {
                Ok(store) => {
                    let (resp, _) = crate::admin::ops::execute(&store, config, &Request::Status);
                    resp.data
                }
                Err(e) => json!({"running": false, "store": e.to_string()}),
            }
        }
        Err(e) => json!({"running": "unknown", "error": e.to_string()}),
    }
}

fn status(path: &Option<PathBuf>, probe: bool, as_json: bool) -> Result<ExitCode> {
    // Without --probe nothing talks to Twilio, so the token need not be readable.
    let config = if probe {
        load_config(path)?
    } else {
        load_config_without_secrets(path)?
    };
    let mut accounts = channels::account_summary(&config);
    let daemon = daemon_state(&config);
    let mut all_ok = true;
    if probe {
        let http = crate::twilio::HttpTwilio::new().map_err(|e| anyhow!(e))?;
        let rt = runtime()?;
        for entry in &mut accounts {
            let id = entry["account"].as_str().unwrap_or_default().to_string();
            let (checks, hints): (Vec<Check>, Vec<String>) = match config.sms.account(&id) {
                Some(account) => {
                    let checks = rt.block_on(channels::probe(&http, account));
                    let hints = channels::hints(&config, account, &checks);
                    (checks, hints)
                }
                None => {
                    let missing = entry["missing"]
                        .as_str()
                        .unwrap_or("not configured")
                        .to_string();
                    (
                        vec![
                            Check { name: "credentials", status: channels::Status::Missing, detail: missing, extra: Default::default() },
                            Check { name: "webhook", status: channels::Status::Skipped, detail: "the account is not configured".into(), extra: Default::default() },
                            Check { name: "recentErrors", status: channels::Status::Skipped, detail: "the account is not configured".into(), extra: Default::default() },
                        ],
                        vec!["Set accountSid, authToken and fromNumber (or messagingServiceSid) for this account.".into()],
                    )
                }
            };
            let ok = checks.iter().all(|c| c.status.passes());
            all_ok &= ok;
            if let Value::Object(o) = entry {
                o.insert("ok".into(), json!(ok));
                o.insert("checks".into(), serde_json::to_value(&checks)?);
                o.insert("hints".into(), json!(hints));
            }
        }
        if accounts.is_empty() {
            all_ok = false;
        }
    }
    let tls = tls_status(&config);
    if as_json {
        print_json(&json!({"accounts": accounts, "daemon": daemon, "tls": tls}));
    } else {
        for a in &accounts {
            let id = a["account"].as_str().unwrap_or("?");
            if a["configured"] == true {
                let sender = a["fromNumber"]
                    .as_str()
                    .or(a["messagingServiceSid"].as_str())
                    .unwrap_or("?");
                println!(
                    "account {id}: configured, sender {sender}, webhook {} → {}",
                    a["webhookPath"].as_str().unwrap_or("?"),
                    a["publicWebhookUrl"]
                        .as_str()
                        .unwrap_or("(no publicWebhookUrl)")
                );
                println!(
                    "  dmPolicy {}, signature validation {}",
                    a["dmPolicy"].as_str().unwrap_or("?"),
                    if a["signatureValidation"] == true {
                        "on"
                    } else {
                        "OFF"
                    }
                );
            } else {
                println!(
                    "account {id}: not configured ({})",
                    a["missing"].as_str().unwrap_or("?")
                );
            }
            if let Some(checks) = a["checks"].as_array() {
                for c in checks {
                    println!(
                        "  {:<13} {:<11} {}",
                        c["name"].as_str().unwrap_or("?"),
                        c["status"].as_str().unwrap_or("?"),
                        c["detail"].as_str().unwrap_or("")
                    );
                }
            }
            for h in a["hints"].as_array().into_iter().flatten() {
                println!("  hint: {}", h.as_str().unwrap_or(""));
            }
        }
        if accounts.is_empty() {
            println!("No SMS account is configured.");
        }
        match daemon["running"].as_bool() {
            Some(true) => println!(
                "daemon: running (pid {}), {} agent(s) connected; queues: spool {}, agent {}, outbound {}, dead letters {}",
                daemon["pid"], daemon["agents"], daemon["spool"], daemon["agentQueue"], daemon["outbound"], daemon["deadLetters"]
            ),
            _ if daemon.get("spool").is_some() => println!(
                "daemon: not running; queues: spool {}, agent {}, outbound {}, dead letters {}",
                daemon["spool"], daemon["agentQueue"], daemon["outbound"], daemon["deadLetters"]
            ),
            // Not reachable (permission denied…): say why, not "not running".
            _ if daemon["error"].is_string() => println!(
                "daemon: unknown: {}",
                daemon["error"].as_str().unwrap_or_default()
            ),
            _ if daemon["store"].is_string() => println!(
                "daemon: not running; {}",
                daemon["store"].as_str().unwrap_or_default()
            ),
            _ => println!("daemon: not running"),
        }
        if daemon["running"].as_bool() == Some(true) {
            let waiting = daemon["waiting"].as_u64().unwrap_or(0);
            let agents = daemon["agents"].as_u64().unwrap_or(0);
            let oldest = daemon["oldestWaitingSecs"]
                .as_u64()
                .map(|s| format!(", the oldest for {}", crate::agent::human_age(s * 1000)))
                .unwrap_or_default();
            match (agents, waiting) {
                (0, 0) => println!("agent: none connected (texts will wait for one)"),
                (0, n) => println!("agent: NONE connected; {n} text(s) waiting{oldest}: start one (`smsgate agent exec -- CMD`, see docs/agents.md)"),
                (_, 0) => println!("agent: connected; no text waiting"),
                (_, n) => println!("agent: connected; {n} text(s) waiting{oldest}"),
            }
        }
        for a in daemon["connectedAgents"].as_array().into_iter().flatten() {
            println!("{}", agent_summary(a));
        }
        print_tls(&tls);
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The served (or to be served) certificate: from certFile, or the one ACME stored.
fn tls_status(config: &crate::config::Config) -> Value {
    let g = &config.gateway;
    let (source, path, domains) = match (&g.tls, &g.acme) {
        (Some(t), _) => ("files", t.cert_file.clone(), None),
        (None, Some(a)) => (
            "acme",
            crate::acme::Paths::new(&g.state_dir).cert(),
            Some(a.domains.clone()),
        ),
        (None, None) => return Value::Null,
    };
    let mut out = json!({
        "source": source,
        "certFile": path.display().to_string(),
    });
    if let (Some(domains), Some(a)) = (domains, &g.acme) {
        out["acme"] = json!({"domains": domains, "directoryUrl": a.directory_url.as_str()});
    }
    let now = crate::acme::now_unix();
    out["certificate"] = match std::fs::read(&path) {
        Ok(pem) => match crate::acme::cert_info(&pem, &path) {
            Ok(info) => info.json(now),
            Err(e) => json!({"error": e.to_string()}),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && source == "acme" => {
            json!({"error": "not obtained yet; the running gateway obtains it (see its log)"})
        }
        Err(e) => json!({"error": format!("cannot read {}: {e}", path.display())}),
    };
    out
}

fn print_tls(tls: &Value) {
    if tls.is_null() {
        println!("tls: off (plain HTTP)");
        return;
    }
    let c = &tls["certificate"];
    if let Some(e) = c["error"].as_str() {
        println!(
            "tls ({}): no certificate: {e}",
            tls["source"].as_str().unwrap_or("?")
        );
        return;
    }
    let names: Vec<&str> = c["domains"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let left = c["expiresInSeconds"].as_i64().unwrap_or(0);
    println!(
        "tls ({}): certificate for {}, issuer {}, expires {} ({} days left), renewal from {}",
        tls["source"].as_str().unwrap_or("?"),
        names.join(", "),
        c["issuer"].as_str().unwrap_or("?"),
        c["notAfter"].as_str().unwrap_or("?"),
        left.div_euclid(86_400),
        c["renewAt"].as_str().unwrap_or("?"),
    );
}

fn setup(
    path: &Option<PathBuf>,
    account: Option<&str>,
    dry_run: bool,
    opts: &channels::SetupOptions,
) -> Result<ExitCode> {
    opts.validate().map_err(|e| anyhow!(e))?;
    let config = load_config(path)?;
    let account = config
        .sms
        .resolve_account(account)
        .map_err(|e| anyhow!(e))?;
    let http = crate::twilio::HttpTwilio::new().map_err(|e| anyhow!(e))?;
    let rt = runtime()?;
    let plan = rt
        .block_on(channels::plan_setup(&http, account, opts))
        .map_err(|e| anyhow!("{e}"))?;
    let mut plans = vec![plan];
    // The WhatsApp sender (CONTRACT §12): its own number or service is set up too.
    match rt
        .block_on(channels::plan_whatsapp_setup(&http, account, opts))
        .map_err(|e| anyhow!("WhatsApp: {e}"))?
    {
        channels::WhatsappSetup::Off => {}
        channels::WhatsappSetup::Covered(note) | channels::WhatsappSetup::Manual(note) => {
            println!("{note}.")
        }
        channels::WhatsappSetup::Plan(p) => plans.push(p),
    }
    for plan in &plans {
        println!("{} (account {}):", plan.what, account.id);
        for (field, old, new) in &plan.fields {
            if old == new {
                println!("  {field}: {new} (unchanged)");
            } else {
                println!(
                    "  {field}: {} -> {new}",
                    if old.is_empty() { "(unset)" } else { old }
                );
            }
        }
    }
    if plans.iter().all(channels::setup::SetupPlan::is_noop) {
        println!("Already set; nothing to do.");
        return Ok(ExitCode::SUCCESS);
    }
    if dry_run {
        println!("(dry run: nothing changed)");
        return Ok(ExitCode::SUCCESS);
    }
    for plan in plans.iter().filter(|p| !p.is_noop()) {
        rt.block_on(channels::apply_setup(&http, account, plan))
            .map_err(|e| anyhow!("Twilio refused the change to {}: {e}", plan.what))?;
    }
    println!("Updated. Check it with `smsgate channels status --probe`.");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn health(path: &Option<PathBuf>) -> Result<ExitCode> {
    let config = load_config_without_secrets(path)?;
    let mut addr = config.gateway.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let scheme = if config.gateway.tls.is_some() || config.gateway.acme.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{addr}/readyz");
    let status = runtime()?.block_on(async {
        // The certificate names the public host, not the loopback address we dial.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .danger_accept_invalid_certs(true)
            .build()?;
        client.get(&url).send().await.map(|r| r.status().as_u16())
    });
    match status {
        Ok(200) => {
            println!("ok: {url}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(code) => bail!("{url} answered {code}"),
        Err(e) => bail!("{url}: {}", crate::cli::error_chain(&e)),
    }
}
