//! Turns the raw file and the environment into a [`Config`], collecting every problem.
//!
//! Pure except for reading secret and certificate files named by the config, which is
//! what an operator expects `config validate` to check.

mod account;
mod acme;
mod approvals;
mod env;
mod errors;
mod gateway;
mod layers;
mod secrets;
mod sms;
mod whatsapp;

use serde_json::Value;

use super::raw::RawConfig;
use super::{Config, ConfigErrors, Problem};
pub use env::Env;
use errors::Problems;

/// Where the SMS channel's keys live; every account key path starts here.
const SMS: &str = "channels.sms";

/// Validates an already parsed JSON value (the file's content).
pub fn validate_value(value: &Value, env: &Env) -> Result<Config, ConfigErrors> {
    let mut unknown = Vec::new();
    let raw: Result<RawConfig, _> = serde_ignored::deserialize(value, |path| {
        // serde_ignored marks each Option layer with a `?` segment; operators write keys.
        let clean: Vec<String> = path
            .to_string()
            .split('.')
            .filter(|seg| *seg != "?")
            .map(String::from)
            .collect();
        unknown.push(clean.join("."));
    });
    match raw {
        Ok(raw) => validate(&raw, &unknown, env),
        Err(e) => {
            let shape = shape_problems(value);
            if !shape.is_empty() {
                return Err(ConfigErrors(shape));
            }
            Err(ConfigErrors(vec![Problem {
                path: "(file)".into(),
                message: format!("{e}; the file must be an object like {{ gateway: {{…}}, channels: {{ sms: {{…}} }} }}"),
            }]))
        }
    }
}

/// The keys whose value must be an object (`{ … }`), where any other value makes the
/// whole file unreadable as a config: named with their path and what they hold, not as
/// serde's "invalid length 22, expected struct RawAccount".
fn shape_problems(value: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut check = |path: &str, v: Option<&Value>| {
        if let Some(v) = v.filter(|v| !v.is_object() && !v.is_null()) {
            out.push(Problem {
                path: path.to_string(),
                message: format!(
                    "expected an object {{ key: value, … }}, found {}",
                    errors::kind_of(v)
                ),
            });
        }
    };
    if !value.is_object() {
        check("(file)", Some(value));
        if let Some(p) = out.first_mut() {
            p.message.push_str(
                "; the file must be an object like { gateway: {…}, channels: { sms: {…} } }",
            );
        }
        return out;
    }
    let at = |path: &str| value.pointer(&format!("/{}", path.replace('.', "/")));
    for path in [
        "gateway",
        "gateway.tls",
        "gateway.tls.acme",
        "gateway.log",
        "channels",
        "channels.sms",
        "channels.sms.accounts",
    ] {
        check(path, at(path));
    }
    if let Some(accounts) = at("channels.sms.accounts").and_then(Value::as_object) {
        for (id, account) in accounts {
            check(&format!("{SMS}.accounts.{id}"), Some(account));
        }
    }
    out
}

/// Validates the raw config. `unknown` are the key paths serde did not recognise.
pub fn validate(raw: &RawConfig, unknown: &[String], env: &Env) -> Result<Config, ConfigErrors> {
    let mut p = Problems::default();
    for path in unknown {
        match super::checks::did_you_mean(path) {
            Some(key) => p.add(path.clone(), format!("unknown key; did you mean `{key}`? (keys are camelCase, see the configuration reference)")),
            None => p.add(path.clone(), "unknown key; remove it or check its spelling (keys are camelCase, see the configuration reference)"),
        }
    }
    let gateway = gateway::gateway(raw, env, &mut p);
    let sms = sms::sms_channel(raw, env, &mut p);
    if p.0.is_empty() {
        let mut warnings = Vec::new();
        if sms.enabled && sms.accounts.is_empty() {
            warnings.push("no SMS account is usable yet: set channels.sms.accountSid, authToken and fromNumber (or messagingServiceSid), or the TWILIO_* environment variables".to_string());
        }
        for a in &sms.inactive {
            warnings.push(format!("account {:?} is not usable: {}", a.id, a.reason));
        }
        for a in &sms.accounts {
            warnings.extend(super::checks::allow_to_warning(a));
            warnings.extend(approvals::target_warning(a));
            if let Some(url) = a.public_url() {
                warnings.extend(super::checks::public_url_warnings(
                    &a.id,
                    &url.parsed,
                    &a.webhook_path,
                ));
            }
        }
        if let Some(gw) = gateway {
            return Ok(Config {
                gateway: gw,
                sms,
                warnings,
            });
        }
    }
    Err(ConfigErrors(p.0.into_iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_object_where_an_object_goes_is_named_by_its_path() {
        let cases = [
            (serde_json::json!([1]), vec!["(file): expected an object { key: value, … }, found a list; the file must be an object like { gateway: {…}, channels: { sms: {…} } }"]),
            (serde_json::json!("x"), vec!["(file): expected an object { key: value, … }, found a string; the file must be an object like { gateway: {…}, channels: { sms: {…} } }"]),
            (serde_json::json!({"gateway": [], "channels": {"sms": {"accounts": {"a": "x", "b": {}}}}}), vec![
                "gateway: expected an object { key: value, … }, found a list",
                "channels.sms.accounts.a: expected an object { key: value, … }, found a string",
            ]),
            (serde_json::json!({"channels": {"sms": []}}), vec!["channels.sms: expected an object { key: value, … }, found a list"]),
            (serde_json::json!({"gateway": {"tls": 1, "log": null}}), vec!["gateway.tls: expected an object { key: value, … }, found a number"]),
            (serde_json::json!({"gateway": {}, "channels": null}), vec![]),
        ];
        for (value, want) in cases {
            let got: Vec<String> = shape_problems(&value)
                .iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect();
            assert_eq!(got, want, "{value}");
        }
    }
}
