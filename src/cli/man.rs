//! `smsgate man`: manual pages generated from the command line's definition, so they
//! never drift from `--help`. smsgate(1) adds what clap does not know: EXAMPLES,
//! ENVIRONMENT, FILES, EXIT STATUS and SEE ALSO; every subcommand gets its own page
//! (smsgate-queue-list(1)…) with its examples.

use std::io::Write;
use std::path::{Path, PathBuf};

const EXAMPLES: &str = r#".SH EXAMPLES
.TP
\fBsmsgate demo\fR
The whole flow on this machine, no Twilio account needed.
.TP
\fBsmsgate config validate\fR
Check the configuration; exit 1 listing every problem.
.TP
\fBsmsgate channels setup\fR
Point the Twilio number at \fBpublicWebhookUrl\fR.
.TP
\fBsmsgate gateway\fR
Run the daemon in the foreground.
.TP
\fBsmsgate agent exec \-\- my\-agent\fR
Answer each text with a command's output.
.TP
\fBsmsgate pairing approve sms ABCD1234\fR
Let a new sender talk to the agent.
.TP
\fBsmsgate completions bash > /etc/bash_completion.d/smsgate\fR
Install shell completions.
"#;

const ENVIRONMENT: &str = r#".SH ENVIRONMENT
.TP
\fBSMSGATE_CONFIG\fR
The config file when \fB\-\-config\fR is not given.
.TP
\fBSMSGATE_LOG\fR, \fBRUST_LOG\fR
The log level (smsgate's own; dependencies stay at warn) or a full tracing directive; overrides \fBgateway.log.level\fR.
.TP
\fBNO_COLOR\fR
When set and not empty, log lines carry no colour (they never do when stderr is not a terminal).
.TP
\fBTWILIO_ACCOUNT_SID\fR, \fBTWILIO_AUTH_TOKEN\fR, \fBTWILIO_PHONE_NUMBER\fR, \fBTWILIO_SMS_FROM\fR, \fBTWILIO_MESSAGING_SERVICE_SID\fR, \fBSMS_PUBLIC_WEBHOOK_URL\fR, \fBSMS_WEBHOOK_PATH\fR, \fBSMS_ALLOWED_USERS\fR
Configure the default account when the config file does not (an environment-only setup, e.g. in a container).
.TP
\fBSMSGATE_AGENT_SOCKET\fR
The agent socket for the bridges (\fBagent acp\fR, \fBagent openai\fR).
.TP
\fBCREDENTIALS_DIRECTORY\fR, \fBSTATE_DIRECTORY\fR, \fBJOURNAL_STREAM\fR, \fBNOTIFY_SOCKET\fR
Set by systemd: secrets read from files, the bridges' state, no timestamps under journald, readiness notification.
"#;

const FILES: &str = r#".SH FILES
.TP
\fI/etc/smsgate/smsgate.json5\fR
The default config file (JSON5; keep it mode 0600 or 0640 when it holds a token).
.TP
\fI/var/lib/smsgate/\fR
The default \fBgateway.stateDir\fR: the store (messages, senders, queues).
.TP
\fI<stateDir>/agent.sock\fR, \fI<stateDir>/admin.sock\fR
The agent and admin sockets (\fBgateway.agentSocket\fR, \fBgateway.adminSocket\fR); smsgate replaces only a stale socket and refuses to start over any other file.
"#;

const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Success (also when output went to a closed pipe, as in \fBsmsgate queue list | head \-1\fR).
.TP
\fB1\fR
Any failure, invalid values included; the reason is on stderr.
.TP
\fB2\fR
The command line does not parse (unknown verb or flag, missing required option).
.TP
\fB128+N\fR
\fBsmsgate demo\fR stopped by signal N (130 for Ctrl\-C), after removing its temporary directory.
"#;

/// Every visible subcommand, depth first, as `smsgate-queue-list` style names.
fn page_names(cmd: &clap::Command, out: &mut Vec<String>) {
    for sc in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out.push(sc.get_display_name().unwrap_or(sc.get_name()).to_string());
        page_names(sc, out);
    }
}

/// smsgate(1): clap's sections, then the ones it does not know.
pub(super) fn main_page(w: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = super::command().disable_help_subcommand(true);
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;
    w.write_all(EXAMPLES.as_bytes())?;
    w.write_all(ENVIRONMENT.as_bytes())?;
    w.write_all(FILES.as_bytes())?;
    w.write_all(EXIT_STATUS.as_bytes())?;
    let mut names = Vec::new();
    page_names(&cmd, &mut names);
    let see_also: Vec<String> = names.iter().map(|n| format!("\\fB{n}\\fR(1)")).collect();
    writeln!(w, ".SH \"SEE ALSO\"\n{}", see_also.join(", "))?;
    man.render_version_section(w)
}

/// Writes smsgate.1 and one page per subcommand into `dir`; returns the files.
pub(super) fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let main = dir.join("smsgate.1");
    let mut f = std::fs::File::create(&main)?;
    main_page(&mut f)?;
    f.flush()?;
    written.push(main);
    let mut cmd = super::command().disable_help_subcommand(true);
    cmd.build();
    fn each(cmd: &clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for sc in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            out.push(clap_mangen::Man::new(sc.clone()).generate_to(dir)?);
            each(sc, dir, out)?;
        }
        Ok(())
    }
    each(&cmd, dir, &mut written)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_page_has_the_sections_clap_does_not_make() {
        let mut page = Vec::new();
        main_page(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        for section in [
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH OPTIONS",
            ".SH SUBCOMMANDS",
            ".SH EXAMPLES",
            ".SH ENVIRONMENT",
            ".SH FILES",
            ".SH \"EXIT STATUS\"",
            ".SH \"SEE ALSO\"",
        ] {
            assert!(page.contains(section), "no {section}");
        }
        assert!(page.contains("NO_COLOR") && page.contains("SMSGATE_CONFIG"));
    }

    #[test]
    fn every_subcommand_has_its_own_page_with_its_examples() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(dir.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "smsgate.1",
            "smsgate-gateway.1",
            "smsgate-queue.1",
            "smsgate-queue-list.1",
            "smsgate-config-validate.1",
            "smsgate-agent-exec.1",
            "smsgate-channels-status.1",
        ] {
            assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
        }
        let gateway = std::fs::read_to_string(dir.path().join("smsgate-gateway.1")).unwrap();
        assert!(gateway.contains("Examples"), "{gateway}");
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
    }
}
