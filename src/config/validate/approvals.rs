//! `execApprovals` (CONTRACT §9): OpenClaw's keys (`enabled`, `approvers`, `target`,
//! `agentFilter`, `sessionFilter`) plus `timeoutSecs`, each checked with its key path.

use serde_json::Value;

use super::super::{
    Account, AllowFrom, ExecApprovals, DEFAULT_APPROVAL_TIMEOUT_SECS, MAX_APPROVAL_TIMEOUT_SECS,
};
use super::errors::{describe, take, Problems};
use super::layers::Layers;
use crate::phone::E164;

const KEYS: &str =
    "the keys are enabled, approvers, timeoutSecs, target, agentFilter and sessionFilter";

pub(super) fn exec_approvals(
    l: &Layers,
    allow_from: &AllowFrom,
    default_to: Option<&E164>,
    own: Option<&E164>,
    p: &mut Problems,
) -> ExecApprovals {
    let (f, base) = l.get("execApprovals", |r| &r.exec_approvals);
    let mut out = ExecApprovals::default();
    let mut listed: Option<Vec<E164>> = None;
    for (key, v) in take(f, &base, "an object", p).into_iter().flatten() {
        let path = format!("{base}.{key}");
        match key.as_str() {
            "enabled" => match v {
                Value::Null => {}
                Value::Bool(b) => out.enabled = Some(*b),
                Value::String(s) if s == "auto" => out.enabled = None,
                _ => p.add(
                    &path,
                    format!(
                        "expected \"auto\", true or false, found {}; \"auto\" (the default) asks when an approver resolves",
                        describe(v)
                    ),
                ),
            },
            "approvers" => listed = Some(approvers(v, &path, own, p)),
            "timeoutSecs" => match v.as_u64() {
                Some(n) if (1..=MAX_APPROVAL_TIMEOUT_SECS).contains(&n) => out.timeout_secs = n,
                _ => p.add(
                    &path,
                    format!(
                        "expected a whole number of seconds from 1 to {MAX_APPROVAL_TIMEOUT_SECS}, found {} (default {DEFAULT_APPROVAL_TIMEOUT_SECS})",
                        describe(v)
                    ),
                ),
            },
            "target" => match v {
                Value::Null => {}
                Value::String(s) => out.target = Some(s.clone()),
                _ => p.add(
                    &path,
                    format!("expected a string such as \"dm\", found {}", describe(v)),
                ),
            },
            // Accepted so OpenClaw configs validate; SMS has one agent and no sessions
            // to filter by, so they change nothing.
            "agentFilter" | "sessionFilter" => {
                let strings = v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
                if !(strings || v.is_null() || v.is_string()) {
                    p.add(
                        &path,
                        format!("expected a list of strings, found {}", describe(v)),
                    );
                }
            }
            _ => p.add(&path, format!("unknown key; {KEYS}")),
        }
    }
    out.listed = listed.clone().unwrap_or_default();
    out.approvers = match listed {
        Some(list) => list,
        None if allow_from.sms_numbers().next().is_some() => {
            allow_from.sms_numbers().cloned().collect()
        }
        None => default_to.cloned().into_iter().collect(),
    };
    out
}

fn approvers(v: &Value, path: &str, own: Option<&E164>, p: &mut Problems) -> Vec<E164> {
    let Some(list) = v.as_array() else {
        p.add(
            path,
            format!(
                "expected a list of E.164 phone numbers, found {}",
                describe(v)
            ),
        );
        return Vec::new();
    };
    let mut out: Vec<E164> = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let Some(s) = entry.as_str() else {
            p.add(
                &at,
                format!("expected an E.164 phone number, found {}", describe(entry)),
            );
            continue;
        };
        if s.trim() == "*" {
            p.add(
                &at,
                "\"*\" would let anyone who texts approve what the agent does; list the approvers' numbers",
            );
            continue;
        }
        match E164::parse(s) {
            Ok(n) if Some(&n) == own => p.add(
                &at,
                "this is the account's own fromNumber; an approver is a person's phone",
            ),
            Ok(n) => {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
            Err(e) => p.add(&at, e.to_string()),
        }
    }
    out
}

/// `target` other than `"dm"` is accepted (OpenClaw configs carry it) but means
/// nothing on SMS: the approval texts always go to each approver directly.
pub(super) fn target_warning(a: &Account) -> Option<String> {
    let t = a.exec_approvals.target.as_deref()?;
    (t != "dm").then(|| {
        format!(
            "account {:?}: execApprovals.target {t:?} does not apply to SMS; approval texts go to each approver directly (\"dm\"), so remove it or set \"dm\"",
            a.id
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::{validate_value, Env};
    use serde_json::{json, Value};

    fn sms(extra: Value) -> Result<crate::config::Config, Vec<crate::config::Problem>> {
        let mut sms = json!({
            "accountSid": "AC0123456789abcdef0123456789abcdef", "authToken": "tok",
            "fromNumber": "+15550001111",
            "publicWebhookUrl": "https://sms.example.com/webhooks/sms",
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            sms[k] = v;
        }
        let config =
            json!({ "gateway": { "stateDir": "/var/lib/smsgate" }, "channels": { "sms": sms } });
        validate_value(&config, &Env::default()).map_err(|e| e.0)
    }

    #[test]
    fn exec_approvals_table() {
        // (config, active, approvers, errors as (path, needle))
        type Case = (
            Value,
            bool,
            Vec<&'static str>,
            Vec<(&'static str, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            (json!({}), false, vec![], vec![]),
            (
                json!({"allowFrom": ["+15557654321", "*"]}),
                true,
                vec!["+15557654321"],
                vec![],
            ),
            (json!({"allowFrom": ["*"]}), false, vec![], vec![]),
            (
                json!({"defaultTo": "+15557650000"}),
                true,
                vec!["+15557650000"],
                vec![],
            ),
            (
                json!({"allowFrom": ["+15557654321"], "execApprovals": {"enabled": false}}),
                false,
                vec!["+15557654321"],
                vec![],
            ),
            (
                json!({"allowFrom": ["+15557654321"], "execApprovals": {"approvers": ["+15557659999"], "timeoutSecs": 60, "enabled": "auto", "target": "dm", "agentFilter": ["main"], "sessionFilter": ["x"]}}),
                true,
                vec!["+15557659999"],
                vec![],
            ),
            (
                json!({"execApprovals": {"approvers": []}, "allowFrom": ["+15557654321"]}),
                false,
                vec![],
                vec![],
            ),
            (
                json!({"execApprovals": {"enabled": "yes", "approvers": ["*", "+1555", "+15550001111", 5], "timeoutSecs": 0, "target": 3, "agentFilter": 2, "bogus": 1}}),
                false,
                vec![],
                vec![
                    (
                        "channels.sms.execApprovals.enabled",
                        "\"auto\", true or false",
                    ),
                    ("channels.sms.execApprovals.approvers[0]", "anyone"),
                    ("channels.sms.execApprovals.approvers[1]", "digits"),
                    ("channels.sms.execApprovals.approvers[2]", "own fromNumber"),
                    ("channels.sms.execApprovals.approvers[3]", "E.164"),
                    ("channels.sms.execApprovals.timeoutSecs", "1 to 86400"),
                    ("channels.sms.execApprovals.target", "\"dm\""),
                    ("channels.sms.execApprovals.agentFilter", "list of strings"),
                    ("channels.sms.execApprovals.bogus", "unknown key"),
                ],
            ),
            (
                json!({"execApprovals": "on"}),
                false,
                vec![],
                vec![("channels.sms.execApprovals", "an object")],
            ),
        ];
        for (extra, active, approvers, errors) in cases {
            match sms(extra.clone()) {
                Ok(c) => {
                    assert!(errors.is_empty(), "{extra}: wanted {errors:?}");
                    let a = &c.sms.account("default").unwrap().exec_approvals;
                    assert_eq!(a.active(), active, "{extra}");
                    let got: Vec<&str> = a.approvers.iter().map(|n| n.as_str()).collect();
                    assert_eq!(got, approvers, "{extra}");
                }
                Err(e) => {
                    assert_eq!(e.len(), errors.len(), "{extra}: {e:?}");
                    for (path, needle) in errors {
                        assert!(
                            e.iter()
                                .any(|p| p.path == path && p.message.contains(needle)),
                            "{extra}: {path} {needle}: {e:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_target_other_than_dm_is_a_warning() {
        let c = sms(json!({"allowFrom": ["+15557654321"], "execApprovals": {"target": "channel"}}))
            .unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("execApprovals.target") && w.contains("\"dm\"")),
            "{:?}",
            c.warnings
        );
        let c = sms(json!({"execApprovals": {"target": "dm"}})).unwrap();
        assert!(!c.warnings.iter().any(|w| w.contains("execApprovals")));
    }
}
