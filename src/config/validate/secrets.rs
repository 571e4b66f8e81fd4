//! Secrets: literals, or `env`/`file` SecretRefs; every resolved one is remembered so
//! later messages never show it.

use std::path::Path;

use super::super::raw::{SecretInput, SecretRef};
use super::errors::Problems;
use super::Env;
use crate::secret::Secret;

/// Resolves `authToken` (and other secrets): a literal, or an `env`/`file` reference.
pub(super) fn resolve_secret(
    input: &SecretInput,
    path: &str,
    env: &Env,
    p: &mut Problems,
) -> Option<Secret> {
    if env.tolerate_unresolved_secrets {
        let mut quiet = Problems::default();
        return Some(
            resolve_secret_strict(input, path, env, &mut quiet).unwrap_or_else(|| Secret::new("")),
        );
    }
    resolve_secret_strict(input, path, env, p)
}

/// Every resolved secret is remembered, so later messages never show it.
fn remembered(secret: Secret) -> Secret {
    crate::config::redact::remember(&secret);
    secret
}

fn resolve_secret_strict(
    input: &SecretInput,
    path: &str,
    env: &Env,
    p: &mut Problems,
) -> Option<Secret> {
    let r: &SecretRef = match input {
        SecretInput::Plain(s) if s.is_empty() => {
            p.add(path, "is empty; set the auth token from the Twilio Console");
            return None;
        }
        SecretInput::Plain(s) => return Some(remembered(Secret::new(s.clone()))),
        SecretInput::Ref(r) => r,
    };
    if let Some(provider) = &r.provider {
        if provider != "default" {
            p.add(
                format!("{path}.provider"),
                format!("{provider:?} is not a secret provider; use \"default\""),
            );
            return None;
        }
    }
    match r.source.as_str() {
        "env" => match env.get(&r.id) {
            Some(v) => Some(remembered(Secret::new(v))),
            None => {
                p.add(path, format!("the env SecretRef (id \"{0}\") is unresolved: the environment variable {0} is not set; export it (`export {0}=…`) or change the ref", r.id));
                None
            }
        },
        "file" => {
            let file = Path::new(&r.id);
            let full = if file.is_absolute() {
                file.to_path_buf()
            } else {
                match env.get("CREDENTIALS_DIRECTORY") {
                    Some(dir) => Path::new(dir).join(file),
                    None => {
                        p.add(path, format!("SecretRef {{ source: \"file\", id: {:?} }} is relative but $CREDENTIALS_DIRECTORY is not set; use an absolute path, or LoadCredential= in the systemd unit", r.id));
                        return None;
                    }
                }
            };
            // A token is 32 characters; a cap keeps `id: "/dev/zero"` from eating memory.
            let read = crate::config::read_capped(&full, 64 * 1024).map_err(|e| match e {
                crate::config::CappedReadError::Io(e) => e,
                crate::config::CappedReadError::TooLarge => std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "it is larger than 64 KiB, too large for a secret",
                ),
            });
            match read {
                Ok(s) => {
                    let s = s.strip_suffix('\n').unwrap_or(&s);
                    let s = s.strip_suffix('\r').unwrap_or(s);
                    if s.is_empty() {
                        p.add(
                            path,
                            format!(
                                "SecretRef file {} is empty; put the auth token in it",
                                full.display()
                            ),
                        );
                        None
                    } else {
                        Some(remembered(Secret::new(s)))
                    }
                }
                Err(e) => {
                    p.add(
                        path,
                        format!(
                            "the file SecretRef (id \"{}\") is unresolved: cannot read {}: {e}",
                            r.id,
                            full.display()
                        ),
                    );
                    None
                }
            }
        }
        other => {
            p.add(
                format!("{path}.source"),
                format!("{other:?} is not a secret source; use \"env\" or \"file\""),
            );
            None
        }
    }
}
