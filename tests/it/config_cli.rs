//! The configuration as an operator meets it: validate, show, patch, env fallbacks,
//! SecretRefs, and every example config in the repository.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    let more = [
        "SMSGATE_CONFIG",
        "TWILIO_MESSAGING_SERVICE_SID",
        "CREDENTIALS_DIRECTORY",
        "STATE_DIRECTORY",
    ];
    set_env(&mut cmd, &[CHANNEL_ENV, &more[..]].concat(), env);
    cmd.output().unwrap()
}

#[test]
fn every_example_config_is_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let creds = TestDir::new();
    std::fs::write(creds.path().join("twilio-auth-token"), "from-credentials\n").unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json5") {
            continue;
        }
        n += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        // TLS files must exist for validation; point them at real ones.
        let cert = creds.path().join("cert.pem");
        std::fs::write(&cert, "x").unwrap();
        let text = text
            .replace(
                "/etc/letsencrypt/live/sms.example.com/fullchain.pem",
                cert.to_str().unwrap(),
            )
            .replace(
                "/etc/letsencrypt/live/sms.example.com/privkey.pem",
                cert.to_str().unwrap(),
            );
        let tmp = creds.path().join(path.file_name().unwrap());
        std::fs::write(&tmp, text).unwrap();
        let out = run(
            &["config", "validate", "--config", tmp.to_str().unwrap()],
            &[
                ("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap()),
                ("TWILIO_AUTH_TOKEN", "env-token"),
                ("TWILIO_ACCOUNT_SID", SID),
                ("TWILIO_PHONE_NUMBER", FROM),
                ("SMS_PUBLIC_WEBHOOK_URL", PUBLIC),
            ],
        );
        assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
    }
    assert!(n >= 4, "example configs found: {n}");
}

#[test]
fn validate_reports_every_problem_with_its_path() {
    let t = TestDir::new();
    let config = t.write_config(
        r#"{
  gateway: { listen: "nonsense", lisen: 1 },
  channels: { sms: {
    accountSid: "AC123", authToken: "t", fromNumber: "555-1234",
    publicWebhookUrl: "ftp://x", dmPolicy: "friends", textChunkLimit: 5000,
    allowFrom: ["+15551234567", "bad"], unknownKey: true,
    accounts: { b: { webhookPath: "/webhooks/sms", fromNumber: "+15550009999", dmPolicy: "allowlist", allowFrom: [] } },
  } },
}"#,
    );
    let out = run(
        &["config", "validate", "--config", config.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for needle in [
        "gateway.listen",
        "gateway.lisen: unknown key",
        "channels.sms.unknownKey: unknown key",
        "channels.sms.accountSid",
        "channels.sms.fromNumber",
        "channels.sms.publicWebhookUrl",
        "channels.sms.dmPolicy",
        "channels.sms.textChunkLimit",
        "channels.sms.allowFrom[1]",
        "channels.sms.accounts.b.webhookPath",
        "channels.sms.accounts.b.allowFrom",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!err.contains("\"t\""), "the token is not echoed");
    // Not JSON5 at all; a missing file.
    let bad = t.write_config("{ gateway: ");
    let out = run(
        &["config", "validate", "--config", bad.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not valid JSON5"));
    let out = run(
        &[
            "config",
            "validate",
            "--config",
            "/nonexistent/smsgate.json5",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    // A command line that does not parse is exit 2.
    assert_eq!(run(&["config", "frobnicate"], &[]).status.code(), Some(2));
    assert_eq!(run(&["pairing", "approve"], &[]).status.code(), Some(2));
}

#[test]
fn show_redacts_secrets_and_config_may_follow_the_verb() {
    let (_t, _twilio, config) = configured("");
    for args in [vec!["config", "show"], vec!["config", "show", "--json"]] {
        let mut a = args.clone();
        a.extend(["--config", config.to_str().unwrap()]);
        let out = run(&a, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(!text.contains(TOKEN), "secret in config show");
        assert!(text.contains("***"));
        if args.contains(&"--json") {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                v["channels"]["sms"]["accounts"]["default"]["fromNumber"],
                FROM
            );
        }
    }
    // SMSGATE_CONFIG works too.
    let out = run(
        &["config", "show", "--json"],
        &[("SMSGATE_CONFIG", config.to_str().unwrap())],
    );
    assert!(out.status.success());
}

#[test]
fn patch_merges_validates_and_writes_atomically() {
    use std::os::unix::fs::PermissionsExt;
    let (t, _twilio, config) = configured(r#"allowFrom: ["+15557654321"]"#);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();
    let c = config.to_str().unwrap();
    let patch = t.path().join("patch.json5");
    std::fs::write(&patch, r#"{ channels: { sms: { dmPolicy: "allowlist", allowFrom: ["+15557654321", "+15557654322"], authToken: "new-token" } } }"#).unwrap();
    let before = std::fs::read_to_string(&config).unwrap();
    let out = run(
        &[
            "config",
            "patch",
            "--file",
            patch.to_str().unwrap(),
            "--dry-run",
            "--config",
            c,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("channels.sms.dmPolicy"), "{text}");
    assert!(
        !text.contains("new-token") && !text.contains(TOKEN),
        "secrets in the diff: {text}"
    );
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        before,
        "dry run writes nothing"
    );

    let out = run(
        &[
            "config",
            "patch",
            "--file",
            patch.to_str().unwrap(),
            "--config",
            c,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let show = run(&["config", "show", "--json", "--config", c], &[]);
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(
        v["channels"]["sms"]["accounts"]["default"]["dmPolicy"],
        "allowlist"
    );
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o640,
        "mode kept"
    );
    let leftovers: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty());

    // null deletes; a patch that leaves the config invalid is refused.
    std::fs::write(&patch, r#"{ channels: { sms: { allowFrom: null } } }"#).unwrap();
    let after_first = std::fs::read_to_string(&config).unwrap();
    let out = run(
        &[
            "config",
            "patch",
            "--file",
            patch.to_str().unwrap(),
            "--config",
            c,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("channels.sms.allowFrom"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), after_first);
    std::fs::write(
        &patch,
        r#"{ channels: { sms: { dmPolicy: null, allowFrom: null } } }"#,
    )
    .unwrap();
    assert!(run(
        &[
            "config",
            "patch",
            "--file",
            patch.to_str().unwrap(),
            "--config",
            c
        ],
        &[]
    )
    .status
    .success());
    assert!(!std::fs::read_to_string(&config)
        .unwrap()
        .contains("allowFrom"));
}

#[tokio::test(flavor = "multi_thread")]
async fn env_only_and_secret_ref_credentials() {
    let twilio = FakeTwilio::start();
    // Env only: the file names no account at all.
    let t = TestDir::new();
    let config = t.write_config(&format!(r#"{{ gateway: {{ listen: "127.0.0.1:0", stateDir: "{}" }}, channels: {{ sms: {{ apiBaseUrl: "{}" }} }} }}"#, t.state().display(), twilio.base_url()));
    let gw = Gateway::start_with(
        &config,
        &[
            ("TWILIO_ACCOUNT_SID", SID),
            ("TWILIO_AUTH_TOKEN", TOKEN),
            ("TWILIO_PHONE_NUMBER", FROM),
            ("SMS_PUBLIC_WEBHOOK_URL", PUBLIC),
            ("SMS_ALLOWED_USERS", "+15557654321, +15557654322"),
        ],
    );
    assert_eq!(
        gw.admit("SM70000000000000000000000000000001", "+15557654322", "hi")
            .await,
        200
    );
    assert!(gw.wait_log("queued for the agent", Duration::from_secs(5)));
    assert_eq!(gw.stop().code(), Some(0));

    // SecretRefs: env, absolute file, file relative to $CREDENTIALS_DIRECTORY.
    for (kind, token_ref) in [
        (
            "env",
            r#"{ source: "env", provider: "default", id: "MY_TOKEN" }"#.to_string(),
        ),
        (
            "file",
            format!(
                r#"{{ source: "file", provider: "default", id: "{}" }}"#,
                t.path().join("tok").display()
            ),
        ),
        (
            "credentials",
            r#"{ source: "file", id: "tok" }"#.to_string(),
        ),
    ] {
        std::fs::write(t.path().join("tok"), format!("{TOKEN}\n")).unwrap();
        let t2 = TestDir::new();
        let config = t2.write_config(&format!(
            r#"{{ gateway: {{ listen: "127.0.0.1:0", stateDir: "{}" }}, channels: {{ sms: {{ accountSid: "{SID}", authToken: {token_ref}, fromNumber: "{FROM}", publicWebhookUrl: "{PUBLIC}", apiBaseUrl: "{}", dmPolicy: "open", allowFrom: ["*"] }} }} }}"#,
            t2.state().display(),
            twilio.base_url()
        ));
        let gw = Gateway::start_with(
            &config,
            &[
                ("MY_TOKEN", TOKEN),
                ("CREDENTIALS_DIRECTORY", t.path().to_str().unwrap()),
            ],
        );
        assert_eq!(
            gw.admit("SM70000000000000000000000000000002", "+15557654322", "hi")
                .await,
            200,
            "{kind}"
        );
        assert_eq!(gw.stop().code(), Some(0));
        let show = run(
            &["config", "show", "--config", config.to_str().unwrap()],
            &[
                ("MY_TOKEN", TOKEN),
                ("CREDENTIALS_DIRECTORY", t.path().to_str().unwrap()),
            ],
        );
        assert!(show.status.success() && !stdout(&show).contains(TOKEN));
    }
    // An unresolved ref names the key path and the ref.
    let config = t.write_config(&format!(r#"{{ gateway: {{ stateDir: "{}" }}, channels: {{ sms: {{ accountSid: "{SID}", authToken: {{ source: "env", provider: "default", id: "NOT_SET_ANYWHERE" }}, fromNumber: "{FROM}", publicWebhookUrl: "{PUBLIC}" }} }} }}"#, t.state().display()));
    let out = run(
        &["config", "validate", "--config", config.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("channels.sms.authToken")
            && stderr(&out).contains("NOT_SET_ANYWHERE"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn store_owned_by_someone_else_or_locked_is_explained() {
    let (t, _twilio, config) = configured("");
    // Locked: another process holds the store, and no daemon answers on the socket.
    let _held = t.store();
    let out = cli(&config, &["pairing", "list"]);
    // sled's lock is per process (fcntl): a second process sees it.
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
}

#[test]
fn admin_commands_work_without_the_services_credentials() {
    // The systemd layout: the token lives in $CREDENTIALS_DIRECTORY, which only the
    // service has. Pairing and status commands must work for the operator anyway.
    let t = TestDir::new();
    let config = t.write_config(&format!(
        r#"{{ gateway: {{ stateDir: "{}" }}, channels: {{ sms: {{ accountSid: "{SID}", authToken: {{ source: "file", provider: "default", id: "twilio-auth-token" }}, fromNumber: "{FROM}", publicWebhookUrl: "{PUBLIC}" }} }} }}"#,
        t.state().display()
    ));
    let c = config.to_str().unwrap();
    for args in [
        vec!["pairing", "list", "--json"],
        vec!["senders", "list"],
        vec!["queue", "list"],
        vec!["channels", "status"],
    ] {
        let mut a = args.clone();
        a.extend(["--config", c]);
        let out = run(&a, &[]);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    // Commands that use the token still say what is missing.
    let out = run(&["config", "validate", "--config", c], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("CREDENTIALS_DIRECTORY"));
}

/// Issue 9, finding 4: a config whose token is unquoted, unterminated, of the wrong type
/// or next to a syntax error never shows the token: not in `config validate`, `config
/// show`, `channels status` (text and JSON), nor in the daemon's log after a SIGHUP
/// reload of it. Every output is searched for it.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_config_never_shows_a_token() {
    const NEW: &str = "n3w-s3cret-t0ken-value";
    const NUMERIC: &str = "987654321098765";
    let (_t, _twilio, config) = configured("");
    let good = std::fs::read_to_string(&config).unwrap();
    let quoted_token = format!(r#"authToken: "{TOKEN}""#);
    assert!(good.contains(&quoted_token));
    let variants = [
        good.replace(&quoted_token, &format!("authToken: {NEW}")),
        good.replace(&quoted_token, &format!("authToken: \"{NEW}")),
        good.replace(&quoted_token, &format!("authToken: '{NEW}\"")),
        good.replace(&quoted_token, &format!("authToken:\n      {NEW}")),
        good.replace(&quoted_token, &format!("authToken: {NUMERIC}")),
        good.replace(
            &quoted_token,
            &format!("{quoted_token}, previousAuthTokens: [{NEW}]"),
        ),
        good.replace(
            &quoted_token,
            &format!("{quoted_token}, webhookSigningKeys: {{ k1: {NEW} }}"),
        ),
        // A syntax error elsewhere on the token's line.
        good.replace(&format!(r#"fromNumber: "{FROM}""#), "fromNumber: +1 555"),
    ];
    let gw = Gateway::start(&config);
    let pid = gw.child.id().to_string();
    let c = config.to_str().unwrap();
    for (i, text) in variants.iter().enumerate() {
        std::fs::write(&config, text).unwrap();
        for args in [
            vec!["config", "validate"],
            vec!["config", "show"],
            vec!["config", "show", "--json"],
            vec!["channels", "status"],
            vec!["channels", "status", "--json"],
        ] {
            let mut a = vec!["--config", c];
            a.extend(&args);
            let out = run(&a, &[]);
            let all = format!("{}{}", stdout(&out), stderr(&out));
            assert_eq!(out.status.code(), Some(1), "variant {i} {args:?}: {all}");
            for secret in [NEW, NUMERIC, TOKEN] {
                assert!(
                    !all.contains(secret),
                    "variant {i}: `{}` shows a token:\n{all}",
                    args.join(" ")
                );
            }
        }
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || gw
                .log()
                .matches("reload refused")
                .count()
                > i),
            "variant {i}: {}",
            gw.log()
        );
    }
    // The running daemon also scrubs its own token wherever it would be quoted.
    std::fs::write(
        &config,
        good.replace(
            r#"apiBaseUrl:"#,
            &format!("dmPolicy: {TOKEN} @, apiBaseUrl:"),
        ),
    )
    .unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || gw
        .log()
        .matches("reload refused")
        .count()
        > variants.len()));
    let log = gw.log();
    assert!(log.contains("line "), "the error still says where: {log}");
    for secret in [NEW, NUMERIC, TOKEN] {
        assert!(!log.contains(secret), "token in the daemon log:\n{log}");
    }
    assert_eq!(gw.stop().code(), Some(0));
}

/// Issue 9, finding 9: a config over 1 MiB is refused, naming the file and the cap.
#[test]
fn a_config_over_one_mib_is_refused_before_it_is_read() {
    let t = TestDir::new();
    let mut text = String::from("{ gateway: { stateDir: \"/var/lib/smsgate\" },\n");
    text.push_str(&format!("// {}\n}}\n", "x".repeat(2 * 1024 * 1024)));
    let config = t.write_config(&text);
    let c = config.to_str().unwrap();
    for args in [
        vec!["config", "validate"],
        vec!["config", "show"],
        vec!["channels", "status"],
    ] {
        let mut a = vec!["--config", c];
        a.extend(&args);
        let out = run(&a, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(c) && err.contains("1 MiB"), "{args:?}: {err}");
    }
    // config patch reads both files capped too.
    let small = t.path().join("small.json5");
    std::fs::write(&small, "{}").unwrap();
    let out = run(
        &[
            "config",
            "patch",
            "--file",
            c,
            "--config",
            small.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("1 MiB"), "{}", stderr(&out));
}

/// Issue 9, finding 9: `fromNumber: null` in a named account means unset: the account
/// uses its Messaging Service instead of inheriting the top level's number.
#[test]
fn null_in_a_named_account_does_not_inherit() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let mg = "MG0123456789abcdef0123456789abcdef";
    let config = t.config(
        &twilio,
        &format!(
            r#"accounts: {{ svc: {{ fromNumber: null, messagingServiceSid: "{mg}", webhookPath: "/webhooks/svc",
                publicWebhookUrl: "https://sms.example.test/webhooks/svc" }} }},"#
        ),
    );
    let out = run(
        &[
            "config",
            "show",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let svc = &v["channels"]["sms"]["accounts"]["svc"];
    assert_eq!(svc["messagingServiceSid"], mg, "{v}");
    assert_ne!(svc["fromNumber"], FROM, "{v}");
}

/// Issue 9, finding 9: two accounts sharing a sender number or a public URL are
/// refused, and the error names both key paths.
#[test]
fn accounts_sharing_a_number_or_url_are_refused() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let c1 = t.config(
        &twilio,
        r#"accounts: { b: { fromNumber: "+15550001111", webhookPath: "/webhooks/b", publicWebhookUrl: "https://sms.example.test/webhooks/b" } },"#,
    );
    let out = run(
        &["config", "validate", "--config", c1.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("channels.sms.accounts.b.fromNumber")
            && err.contains("(channels.sms.fromNumber)"),
        "{err}"
    );
    let c2 = t.config(
        &twilio,
        r#"accounts: { b: { fromNumber: "+15550002222", webhookPath: "/webhooks/b" } },"#,
    );
    let out = run(
        &["config", "validate", "--config", c2.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("channels.sms.accounts.b.publicWebhookUrl")
            && err.contains("(channels.sms.publicWebhookUrl)"),
        "{err}"
    );
}

/// Issue 9, finding 9: `config patch` on a symlinked config writes the file the link
/// points to (the link stays), and says the running gateway reloaded it only when that
/// gateway runs from that file.
#[test]
fn patch_through_a_symlink_keeps_the_link_and_tells_the_truth() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let real = t.config(&twilio, r#"allowFrom: ["+15557654321"]"#);
    let deploy = t.path().join("deploy");
    std::fs::create_dir(&deploy).unwrap();
    let link = deploy.join("smsgate.json5");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let patch = t.path().join("patch.json5");
    std::fs::write(&patch, r#"{ channels: { sms: { textChunkLimit: 900 } } }"#).unwrap();
    let patch_via_link = || {
        run(
            &[
                "config",
                "patch",
                "--file",
                patch.to_str().unwrap(),
                "--config",
                link.to_str().unwrap(),
            ],
            &[],
        )
    };

    // A gateway running from another file (same sockets): not reloaded, and it says so.
    let other = t.path().join("other.json5");
    std::fs::copy(&real, &other).unwrap();
    let gw = Gateway::start(&other);
    let out = patch_via_link();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("reloaded it"), "{text}");
    assert!(text.contains("not this file"), "{text}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(&real).unwrap().contains("900"));
    assert!(!std::fs::read_to_string(&other).unwrap().contains("900"));
    assert_eq!(gw.stop().code(), Some(0));

    // A gateway running from the link: reloaded.
    let gw = Gateway::start(&link);
    std::fs::write(&patch, r#"{ channels: { sms: { textChunkLimit: 800 } } }"#).unwrap();
    let out = patch_via_link();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("The running gateway reloaded it."),
        "{}",
        stdout(&out)
    );
    assert!(gw.wait_log("configuration reloaded", Duration::from_secs(5)));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(&real).unwrap().contains("800"));
    assert_eq!(gw.stop().code(), Some(0));
}

/// Issue 9, finding 4: `config patch` (dry run and real) never prints signing keys,
/// previous tokens or a token inside an added account, nor a broken patch's token.
#[test]
fn patch_output_never_shows_a_secret() {
    let (t, _twilio, config) = configured("");
    let c = config.to_str().unwrap();
    let patch = t.path().join("patch.json5");
    std::fs::write(
        &patch,
        r#"{ channels: { sms: {
            webhookSigningKeys: { k1: "signing-key-s3cret" },
            previousAuthTokens: ["previous-t0ken-s3cret"],
            accounts: { b: { authToken: "account-b-s3cret", fromNumber: "+15550002222",
                             webhookPath: "/webhooks/b", publicWebhookUrl: "https://sms.example.test/webhooks/b" } },
        } } }"#,
    )
    .unwrap();
    for dry in [true, false] {
        let mut args = vec![
            "config",
            "patch",
            "--file",
            patch.to_str().unwrap(),
            "--config",
            c,
        ];
        if dry {
            args.push("--dry-run");
        }
        let out = run(&args, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(all.contains("webhookSigningKeys"), "{all}");
        assert!(
            !all.contains("s3cret") && !all.contains(TOKEN),
            "dry run {dry}: {all}"
        );
    }
    // A patch that does not parse, its token unquoted.
    std::fs::write(
        &patch,
        "{ channels: { sms: { authToken: new-t0ken-s3cret } } }",
    )
    .unwrap();
    let out = run(
        &[
            "config",
            "patch",
            "--file",
            patch.to_str().unwrap(),
            "--config",
            c,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("not valid JSON5") && !err.contains("s3cret"),
        "{err}"
    );
}

#[test]
fn texts_and_language_are_checked_and_their_cost_shown() {
    let (t, twilio, config) = configured(
        r#"language: "tlh", texts: { pairingCode: "Your code", welcome: "hi", approved: "Hi {name}" }"#,
    );
    let out = cli(&config, &["config", "validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for want in [
        "channels.sms.language",
        "\"tlh\" has no built-in texts",
        "channels.sms.texts.pairingCode",
        "must contain {code}",
        "channels.sms.texts.welcome",
        "channels.sms.texts.approved",
        "unknown placeholder {name}",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
    let config = t.config(&twilio, r#"language: "hi""#);
    let out = cli(&config, &["config", "show", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v.to_string();
    let pairing = v
        .pointer("/channels/sms/accounts/default/texts/pairingCode")
        .unwrap_or_else(|| panic!("no texts in {text}"));
    assert_eq!(pairing["encoding"], "UCS-2", "{pairing}");
    assert!(pairing["segments"].as_u64().unwrap() >= 2, "{pairing}");
}

/// Issue 24 item 3, issue 20 item 11: a config no account can send with fails `config
/// validate` and `gateway` (exit 1, naming the missing keys); commands that never send
/// still load it.
#[test]
fn a_config_that_cannot_send_fails_validate_and_gateway() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let good = t.config(&twilio, "");
    let text = std::fs::read_to_string(&good).unwrap();
    let cases = [
        (
            text.replace(&format!(r#"authToken: "{TOKEN}""#), "authToken: null"),
            "channels.sms: no account can send: missing authToken",
        ),
        (
            text.replace(&format!(r#"fromNumber: "{FROM}""#), "fromNumber: null"),
            "missing fromNumber or messagingServiceSid",
        ),
        (
            text.replace(
                "apiBaseUrl:",
                r#"accounts: { b: { authToken: null, fromNumber: "+15550002222", webhookPath: "/webhooks/b", publicWebhookUrl: "https://sms.example.test/webhooks/b" } }, apiBaseUrl:"#,
            ),
            "channels.sms.accounts.b: this account cannot send: missing authToken",
        ),
    ];
    for (config_text, want) in cases {
        let config = t.write_config(&config_text);
        let c = config.to_str().unwrap();
        let out = run(&["config", "validate", "--config", c], &[]);
        assert_eq!(out.status.code(), Some(1), "{config_text}");
        assert!(
            stderr(&out).contains(want),
            "{want:?} not in {}",
            stderr(&out)
        );
        let out = run(&["gateway", "--config", c], &[]);
        assert_eq!(out.status.code(), Some(1), "gateway: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "gateway: {}", stderr(&out));
        // `channels status` (no sending) still loads it, and says why.
        let out = run(&["channels", "status", "--config", c], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

/// A half-filled config (no sender yet) lists its wrong values with what is missing,
/// not only once the sender is filled in: every problem in one run.
#[test]
fn a_config_with_no_sender_yet_still_lists_its_wrong_values() {
    let t = TestDir::new();
    let config = t.write_config(
        r#"{ channels: { sms: { accountSid: "AC0123456789abcdef0123456789abcdef",
            dmPolicy: "pair", allowFrom: ["5551234"],
            publicWebhookUrl: "ftp://sms.example.com/webhooks/sms" } } }"#,
    );
    let c = config.to_str().unwrap();
    for verb in [&["config", "validate"][..], &["gateway"][..]] {
        let mut args = verb.to_vec();
        args.extend(["--config", c]);
        let out = run(&args, &[]);
        assert_eq!(out.status.code(), Some(1), "{verb:?}: {}", stderr(&out));
        let err = stderr(&out);
        for want in [
            "4 problems in the configuration",
            "channels.sms: no account can send: missing authToken, fromNumber or messagingServiceSid;",
            r#"channels.sms.dmPolicy: "pair" is not a policy"#,
            r#"channels.sms.allowFrom[0]: "5551234" is not an E.164 phone number"#,
            r#"channels.sms.publicWebhookUrl: "ftp://sms.example.com/webhooks/sms" is not an absolute http(s) URL"#,
        ] {
            assert!(err.contains(want), "{verb:?}: {want:?} not in {err}");
        }
    }
}

/// A list or a string where an object goes names the key, not serde's struct names.
#[test]
fn a_list_where_an_object_goes_names_the_key() {
    let t = TestDir::new();
    for (text, want) in [
        (
            r#"{ channels: { sms: [] } }"#,
            "channels.sms: expected an object { key: value, … }, found a list",
        ),
        (
            r#"{ gateway: "127.0.0.1:8789" }"#,
            "gateway: expected an object { key: value, … }, found a string",
        ),
        (
            r#"[{ gateway: {} }]"#,
            "(file): expected an object { key: value, … }, found a list",
        ),
    ] {
        let config = t.write_config(text);
        let out = run(
            &["config", "validate", "--config", config.to_str().unwrap()],
            &[],
        );
        assert_eq!(out.status.code(), Some(1), "{text}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(want), "{want:?} not in {err}");
        assert!(!err.contains("struct Raw"), "{err}");
    }
}

/// A patch whose result `config validate` would warn about says so when it is applied
/// (and in a dry run), and still writes: a warning does not fail.
#[test]
fn a_patch_warns_like_validate() {
    let (t, _twilio, config) = configured("");
    let c = config.to_str().unwrap();
    let patch = t.path().join("url.json5");
    std::fs::write(
        &patch,
        r#"{ channels: { sms: { publicWebhookUrl: "http://127.0.0.1:8789/webhooks/sms/" } } }"#,
    )
    .unwrap();
    let p = patch.to_str().unwrap();
    for dry in [true, false] {
        let mut args = vec!["config", "patch", "--config", c, "--file", p];
        if dry {
            args.push("--dry-run");
        }
        let out = run(&args, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let err = stderr(&out);
        for want in ["is http", "loopback address", "ends in `/`"] {
            assert!(
                err.contains("warning: ") && err.contains(want),
                "dry {dry}: {want:?} not in {err}"
            );
        }
    }
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains("http://127.0.0.1:8789/webhooks/sms/"));
}

/// Issue 20 item 11: a patch that leaves no account able to send is refused and the
/// file stays byte for byte as it was.
#[test]
fn a_patch_that_leaves_no_sender_is_refused() {
    let (t, _twilio, config) = configured("// a comment\n");
    let before = std::fs::read(&config).unwrap();
    let patch = t.path().join("patch.json5");
    for p in [
        "{ channels: { sms: { authToken: null } } }",
        "{ channels: { sms: { fromNumber: null } } }",
        "{ channels: { sms: { accountSid: null, authToken: null } } }",
    ] {
        std::fs::write(&patch, p).unwrap();
        for dry in [false, true] {
            let mut args = vec![
                "config",
                "patch",
                "--file",
                patch.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ];
            if dry {
                args.push("--dry-run");
            }
            let out = run(&args, &[]);
            assert_eq!(out.status.code(), Some(1), "{p}: {}", stdout(&out));
            let err = stderr(&out);
            assert!(
                err.contains("patch refused") && err.contains("no account can send"),
                "{p}: {err}"
            );
            assert_eq!(std::fs::read(&config).unwrap(), before, "{p}");
        }
    }
    let names: Vec<String> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains(".tmp") || n.ends_with(".bak")),
        "{names:?}"
    );
}

/// Issue 24 item 3: a misspelt key names the nearest known key; a syntax error names
/// line, column and what was expected.
#[test]
fn misspelt_keys_and_syntax_errors_say_what_to_fix() {
    let (t, _twilio, config) = configured(r#"alowFrom: ["+15557654321"], dmpolicy: "open","#);
    let out = run(
        &["config", "validate", "--config", config.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("channels.sms.alowFrom: unknown key; did you mean `allowFrom`?"),
        "{err}"
    );
    assert!(
        err.contains("channels.sms.dmpolicy: unknown key; did you mean `dmPolicy`?"),
        "{err}"
    );
    let cases = [
        (
            "{\n  gateway: { listen: \"127.0.0.1:0\" }\n  channels: {},\n}\n",
            "line 3, column 3: expected `,`",
            "end of line 2",
        ),
        (
            "{\n  channels: { sms: { dmPolicy: open } },\n}\n",
            "line 2, column 32: expected a value",
            "quotes",
        ),
        (
            "{\n  gateway: { listen: \"127.0.0.1:0 },\n}\n",
            "line 2",
            "closing quote",
        ),
        (
            "{\n  gateway: {\n",
            "the file ends inside an object",
            "line 2, column 12",
        ),
        (
            "{ gateway: {} } }",
            "line 1, column 17",
            "the end of the file",
        ),
    ];
    for (text, want, also) in cases {
        let bad = t.write_config(text);
        let out = run(
            &["config", "validate", "--config", bad.to_str().unwrap()],
            &[],
        );
        assert_eq!(out.status.code(), Some(1), "{text}");
        let err = stderr(&out);
        assert!(
            err.contains("not valid JSON5") && err.contains(want) && err.contains(also),
            "{text:?}: {err}"
        );
    }
}

/// Issue 24 item 3: a stateDir that cannot be created or written is an error.
#[test]
fn a_state_dir_that_cannot_be_used_is_an_error() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let file = t.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let good = std::fs::read_to_string(t.config(&twilio, "")).unwrap();
    let state = t.state().display().to_string();
    for (dir, want) in [
        (
            file.join("state").display().to_string(),
            "cannot be created",
        ),
        (file.display().to_string(), "is not a directory"),
        ("/proc/smsgate-state".to_string(), "cannot be created"),
    ] {
        let config = t.write_config(&good.replace(&state, &dir));
        let out = run(
            &["config", "validate", "--config", config.to_str().unwrap()],
            &[],
        );
        assert_eq!(out.status.code(), Some(1), "{dir}");
        let err = stderr(&out);
        assert!(
            err.contains("gateway.stateDir") && err.contains(want),
            "{dir}: {err}"
        );
        let out = run(&["gateway", "--config", config.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(1), "{dir}");
        assert!(
            stderr(&out).contains("gateway.stateDir"),
            "{}",
            stderr(&out)
        );
    }
    // Nothing was created by checking.
    assert!(!t.state().exists());
    let config = t.write_config(&good);
    assert!(run(
        &["config", "validate", "--config", config.to_str().unwrap()],
        &[]
    )
    .status
    .success());
    assert!(!t.state().exists(), "validate does not create stateDir");
}

/// Issue 24 item 3: warnings, not failures: an inline token in a file others can read,
/// and a publicWebhookUrl Twilio cannot use as written.
#[test]
fn readable_tokens_and_odd_public_urls_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let (_t, _twilio, config) = configured("");
    let c = config.to_str().unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&["config", "validate", "--config", c], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: ")
            && err.contains("(mode 0644)")
            && err.contains(&format!("chmod 600 {c}")),
        "{err}"
    );
    assert!(err.contains("SecretRef") && !err.contains(TOKEN), "{err}");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(&["config", "validate", "--config", c], &[]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    // A SecretRef in a readable file is fine.
    let text = std::fs::read_to_string(&config).unwrap();
    let with_ref = text.replace(
        &format!(r#"authToken: "{TOKEN}""#),
        r#"authToken: { source: "env", id: "MY_TOKEN" }"#,
    );
    std::fs::write(&config, &with_ref).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(
        &["config", "validate", "--config", c],
        &[("MY_TOKEN", TOKEN)],
    );
    assert!(
        out.status.success() && !stderr(&out).contains("warning"),
        "{}",
        stderr(&out)
    );
    // URLs.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    for (url, want) in [
        ("http://sms.example.test/webhooks/sms", "is http"),
        ("https://127.0.0.1:8789/webhooks/sms", "loopback"),
        ("https://192.168.1.9/webhooks/sms", "private address"),
        ("https://sms.example.test/webhooks/sms/", "ends in `/`"),
        (
            "https://sms.example.test/hooks",
            "differs from webhookPath \"/webhooks/sms\"",
        ),
    ] {
        std::fs::write(&config, text.replace(PUBLIC, url)).unwrap();
        let out = run(&["config", "validate", "--config", c], &[]);
        assert!(out.status.success(), "{url}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{url}: {}", stderr(&out));
        // The gateway starts, and says it too.
        let gw = Gateway::start(&config);
        assert!(
            gw.wait_log(want, Duration::from_secs(5)),
            "{url}: {}",
            gw.log()
        );
        assert_eq!(gw.stop().code(), Some(0));
    }
}

/// Issue 24 item 4: `config patch` keeps the file's comments and formatting outside the
/// keys it changes; when it cannot, it warns before writing and keeps a `.bak`.
#[test]
fn patch_keeps_comments_or_keeps_a_backup() {
    let (t, _twilio, config) = configured("// who may text the agent\n    dmPolicy: 'pairing', /* for now */\n    textChunkLimit: 0x5dc,");
    let c = config.to_str().unwrap();
    let before = std::fs::read_to_string(&config).unwrap();
    let patch = t.path().join("patch.json5");
    std::fs::write(
        &patch,
        r#"{ channels: { sms: { dmPolicy: "allowlist", allowFrom: ["+15557654321"] } } }"#,
    )
    .unwrap();
    let out = run(
        &[
            "config",
            "patch",
            "--file",
            patch.to_str().unwrap(),
            "--config",
            c,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    let after = std::fs::read_to_string(&config).unwrap();
    // Every line as it was but the changed one, plus one added line for the new key.
    let kept: Vec<&str> = after.lines().filter(|l| !l.contains("allowFrom")).collect();
    let want = before.replace("dmPolicy: 'pairing'", "dmPolicy: \"allowlist\"");
    assert_eq!(kept, want.lines().collect::<Vec<_>>(), "{after}");
    assert_eq!(after.lines().count(), before.lines().count() + 1, "{after}");
    assert!(
        after.contains("\"allowFrom\": [\"+15557654321\"],"),
        "{after}"
    );
    assert!(!t.path().join("smsgate.json5.bak").exists());

    // A key written twice: an in-place edit could change the wrong one, so the file is
    // rewritten, the original kept as .bak, and the warning comes before the write.
    let twice = before.replace(
        "dmPolicy: 'pairing',",
        "dmPolicy: 'pairing', dmPolicy: 'pairing',",
    );
    std::fs::write(&config, &twice).unwrap();
    let out = run(
        &[
            "config",
            "patch",
            "--file",
            patch.to_str().unwrap(),
            "--config",
            c,
            "--dry-run",
        ],
        &[],
    );
    assert!(
        out.status.success() && stdout(&out).contains(".bak"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        twice,
        "dry run writes nothing"
    );
    let out = run(
        &[
            "config",
            "patch",
            "--file",
            patch.to_str().unwrap(),
            "--config",
            c,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning:")
            && err.contains("loses its comments")
            && err.contains("smsgate.json5.bak"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(t.path().join("smsgate.json5.bak")).unwrap(),
        twice
    );
    let show = run(&["config", "show", "--json", "--config", c], &[]);
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(
        v["channels"]["sms"]["accounts"]["default"]["dmPolicy"],
        "allowlist"
    );
}

/// Issue 20, Low: a patch file that is a FIFO, a device or a directory is refused at
/// once (a FIFO with no writer used to block the command forever).
#[test]
fn patch_refuses_a_file_that_is_not_regular() {
    let (t, _twilio, config) = configured("");
    let before = std::fs::read(&config).unwrap();
    let fifo = t.path().join("patch.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    for (path, kind) in [
        (fifo.to_str().unwrap(), "FIFO"),
        ("/dev/zero", "device"),
        (t.path().to_str().unwrap(), "directory"),
    ] {
        let mut child = Command::new(bin())
            .args([
                "config",
                "patch",
                "--file",
                path,
                "--config",
                config.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let exited = wait_until(Duration::from_secs(10), || {
            child.try_wait().unwrap().is_some()
        });
        if !exited {
            child.kill().unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(exited, "{path}: config patch blocked");
        assert_eq!(out.status.code(), Some(1), "{path}");
        let err = stderr(&out);
        assert!(
            err.contains(kind) && err.contains("not a regular file"),
            "{path}: {err}"
        );
        assert_eq!(std::fs::read(&config).unwrap(), before);
    }
    // The config file itself as a FIFO: refused too, not waited on.
    let patch = t.path().join("patch.json5");
    std::fs::write(&patch, "{ channels: { sms: { textChunkLimit: 900 } } }").unwrap();
    let mut child = Command::new(bin())
        .args([
            "config",
            "patch",
            "--file",
            patch.to_str().unwrap(),
            "--config",
            fifo.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_until(Duration::from_secs(10), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        child.kill().unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited, "config patch blocked on a FIFO config");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("FIFO"), "{}", stderr(&out));
}

/// Issue 24 item 1: `config init` from flags (stdin not a terminal: no questions).
#[test]
fn config_init_writes_a_private_starter_that_validates() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new();
    let path = t.path().join("new.json5");
    let p = path.to_str().unwrap();
    let out = run(
        &[
            "config",
            "init",
            "--path",
            p,
            "--account-sid",
            SID,
            "--from",
            FROM,
            "--public-url",
            PUBLIC,
            "--token-env",
            "MY_TWILIO_TOKEN",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for step in [
        "channels setup",
        "gateway",
        "config validate",
        "export MY_TWILIO_TOKEN=",
    ] {
        assert!(text.contains(step), "{step:?} not in {text}");
    }
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains("//"), "commented: {written}");
    assert!(
        written.contains(
            r#"authToken: { source: "env", provider: "default", id: "MY_TWILIO_TOKEN" }"#
        ),
        "{written}"
    );
    // Valid once the token's variable is set (the state dir is this machine's default).
    let out = run(
        &["config", "validate", "--config", p],
        &[("MY_TWILIO_TOKEN", "a-real-token")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    // Without it, the error names the variable.
    let out = run(&["config", "validate", "--config", p], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("MY_TWILIO_TOKEN"), "{}", stderr(&out));

    // Never overwrites: exit 1, the file untouched; also not through a symlink.
    std::fs::write(&path, "mine").unwrap();
    let out = run(&["config", "init", "--path", p], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine");
    let link = t.path().join("link.json5");
    std::os::unix::fs::symlink(t.path().join("nowhere.json5"), &link).unwrap();
    let out = run(&["config", "init", "--path", link.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!t.path().join("nowhere.json5").exists());

    // A bad value: exit 1, nothing written.
    let bad = t.path().join("bad.json5");
    for args in [
        vec!["--account-sid", "AC123"],
        vec!["--from", "555-1234"],
        vec!["--messaging-service", "MG1"],
        vec!["--public-url", "sms.example.com/x"],
        vec!["--token-env", "NOT-A-NAME"],
    ] {
        let mut a = vec!["config", "init", "--path", bad.to_str().unwrap()];
        a.extend(&args);
        let out = run(&a, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(args[0]), "{args:?}: {}", stderr(&out));
        assert!(!bad.exists(), "{args:?}");
    }
    // --from and --messaging-service together do not parse.
    let out = run(
        &[
            "config",
            "init",
            "--path",
            bad.to_str().unwrap(),
            "--from",
            FROM,
            "--messaging-service",
            "MG0123456789abcdef0123456789abcdef",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
}

/// Issue 24 item 1: without values and without a terminal, `config init` asks nothing,
/// writes placeholders, lists them, and `config validate` names each; the default path
/// is --config / $SMSGATE_CONFIG.
#[test]
fn config_init_without_values_leaves_placeholders() {
    let t = TestDir::new();
    let path = t.path().join("from-env.json5");
    let p = path.to_str().unwrap();
    let out = Command::new(bin())
        .args(["config", "init"])
        .env("SMSGATE_CONFIG", p)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("fill in accountSid, fromNumber (or messagingServiceSid), publicWebhookUrl"),
        "{text}"
    );
    // Found through $SMSGATE_CONFIG, so no --config in the steps.
    assert!(
        text.contains("  smsgate config validate") || text.contains(". smsgate config validate"),
        "{text}"
    );
    let out = run(&["config", "validate"], &[("SMSGATE_CONFIG", p)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("missing accountSid") && err.contains("publicWebhookUrl"),
        "{err}"
    );
    // --config names the path too.
    let other = t.path().join("other.json5");
    let out = run(
        &["config", "init", "--config", other.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success() && other.exists(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("--config {}", other.display())),
        "{}",
        stdout(&out)
    );
}

/// On a terminal, `config init` asks for what no flag gave (`script` gives it one; the
/// answers are typed into it) and writes them; the result validates.
#[test]
fn config_init_asks_on_a_terminal_for_what_is_missing() {
    use std::io::Write;
    use std::process::Stdio;
    let t = TestDir::new();
    let path = t.path().join("asked.json5");
    let mut cmd = Command::new("script");
    cmd.args(["-qec"])
        .arg(format!(
            "{} config init --path {} --token-env MY_TWILIO_TOKEN",
            bin(),
            path.display()
        ))
        .arg("/dev/null")
        .env_remove("SMSGATE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("`script` (util-linux) runs the command on a pty");
    let mut stdin = child.stdin.take().unwrap();
    // One answer a line, in the order asked: Account SID, sender, public URL.
    writeln!(stdin, "{SID}\n{FROM}\n{PUBLIC}").unwrap();
    let out = {
        // The command ends after the third answer; then script sees its end.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("config init on a terminal did not finish");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    drop(stdin);
    let mut shown = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut shown).unwrap();
    assert!(out.success(), "{shown}");
    assert!(shown.contains("Account SID"), "asked: {shown}");
    let written = std::fs::read_to_string(&path).unwrap();
    for v in [SID, FROM, PUBLIC] {
        assert!(written.contains(v), "{v} not in {written}");
    }
    let p = path.to_str().unwrap();
    let out = run(
        &["config", "validate", "--config", p],
        &[("MY_TWILIO_TOKEN", "a-real-token")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}
