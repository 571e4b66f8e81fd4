//! The few texts smsgate sends by itself (the pairing code, "approved", "new
//! conversation", the approval texts of CONTRACT §9), built in for the languages OpenClaw's SMS docs ship in and
//! overridable per account (`language`, `texts` in the config).
//!
//! Everything here is pure: the config validates templates with [`validate`], the
//! inbound path renders them with [`Texts::pairing_code`].

use crate::text::{count_segments, Encoding};

/// A language smsgate has built-in wording for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Language {
    #[default]
    En,
    Hi,
    Zh,
    Ja,
    Ko,
}

impl Language {
    pub const ALL: [Language; 5] = [
        Language::En,
        Language::Hi,
        Language::Zh,
        Language::Ja,
        Language::Ko,
    ];

    /// Parses the config value (`"en"`, `"hi"`, `"zh"`, `"ja"`, `"ko"`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.code() == s)
    }

    pub fn code(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Hi => "hi",
            Language::Zh => "zh",
            Language::Ja => "ja",
            Language::Ko => "ko",
        }
    }
}

/// Which of the texts a template is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    PairingCode,
    Approved,
    NewConversation,
    /// The ask, to each approver.
    ApprovalAsk,
    /// Confirmations of an approver's answer.
    ApprovalAllowOnce,
    ApprovalAllowAlways,
    ApprovalDenied,
    /// An answer to an ask another answer decided first.
    ApprovalAlreadyDecided,
    /// An answer to an ask that timed out or was cancelled.
    ApprovalClosed,
    /// An answer naming no ask.
    ApprovalUnknown,
    /// To the approvers, when the agent withdraws its ask.
    ApprovalCancelled,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::PairingCode,
        Kind::Approved,
        Kind::NewConversation,
        Kind::ApprovalAsk,
        Kind::ApprovalAllowOnce,
        Kind::ApprovalAllowAlways,
        Kind::ApprovalDenied,
        Kind::ApprovalAlreadyDecided,
        Kind::ApprovalClosed,
        Kind::ApprovalUnknown,
        Kind::ApprovalCancelled,
    ];

    /// The config key under `texts`.
    pub fn key(self) -> &'static str {
        match self {
            Kind::PairingCode => "pairingCode",
            Kind::Approved => "approved",
            Kind::NewConversation => "newConversation",
            Kind::ApprovalAsk => "approvalAsk",
            Kind::ApprovalAllowOnce => "approvalAllowOnce",
            Kind::ApprovalAllowAlways => "approvalAllowAlways",
            Kind::ApprovalDenied => "approvalDenied",
            Kind::ApprovalAlreadyDecided => "approvalAlreadyDecided",
            Kind::ApprovalClosed => "approvalClosed",
            Kind::ApprovalUnknown => "approvalUnknown",
            Kind::ApprovalCancelled => "approvalCancelled",
        }
    }

    /// The keys, for error messages.
    pub fn keys() -> String {
        let keys: Vec<&str> = Self::ALL.iter().map(|k| k.key()).collect();
        keys.join(", ")
    }

    /// Placeholders a template of this kind must contain.
    fn required(self) -> &'static [&'static str] {
        match self {
            Kind::PairingCode | Kind::ApprovalAsk => &["code"],
            _ => &[],
        }
    }

    /// Placeholders a template of this kind may contain.
    fn allowed(self) -> &'static [&'static str] {
        match self {
            Kind::Approved | Kind::NewConversation => &[],
            Kind::ApprovalAsk => &["title", "detail", "conversation", "code", "expires"],
            _ => &["code"],
        }
    }
}

/// The longest text smsgate will send of its own (Twilio's Body limit).
pub(crate) const MAX_CHARS: usize = 1600;

fn built_in(lang: Language, kind: Kind) -> &'static str {
    use Kind::*;
    use Language::*;
    match (lang, kind) {
        (En, PairingCode) => "Your pairing code is {code}. To let you talk to the agent, its owner runs: smsgate pairing approve sms {code} (valid for 1 hour).",
        (En, Approved) => "You're approved: your messages now reach the agent.",
        (En, NewConversation) => "New conversation: the agent starts afresh.",
        (Hi, PairingCode) => "आपका पेयरिंग कोड {code} है। एजेंट से बात करने की अनुमति देने के लिए उसका मालिक चलाए: smsgate pairing approve sms {code} (1 घंटे तक मान्य)।",
        (Hi, Approved) => "आपको अनुमति मिल गई है: अब आपके संदेश एजेंट तक पहुँचेंगे।",
        (Hi, NewConversation) => "नई बातचीत शुरू हुई: एजेंट पिछली बातें भूल गया है।",
        (Zh, PairingCode) => "您的配对码是 {code}。要让您与智能体对话，其所有者需运行：smsgate pairing approve sms {code}（1 小时内有效）。",
        (Zh, Approved) => "您已获批准：您的消息现在会发送给智能体。",
        (Zh, NewConversation) => "已开始新对话：智能体不再记得之前的内容。",
        (Ja, PairingCode) => "ペアリングコードは {code} です。エージェントと話せるようにするには、所有者が次を実行します: smsgate pairing approve sms {code}（有効期限 1 時間）。",
        (Ja, Approved) => "承認されました。メッセージがエージェントに届くようになりました。",
        (Ja, NewConversation) => "新しい会話を始めました。エージェントは以前の内容を覚えていません。",
        (Ko, PairingCode) => "페어링 코드는 {code}입니다. 에이전트와 대화하려면 소유자가 다음을 실행합니다: smsgate pairing approve sms {code} (1시간 동안 유효).",
        (Ko, Approved) => "승인되었습니다. 이제 메시지가 에이전트에게 전달됩니다.",
        (Ko, NewConversation) => "새 대화를 시작했습니다. 에이전트는 이전 내용을 기억하지 않습니다.",
        (En, ApprovalAsk) => "Agent asks (chat {conversation}): {title} {detail}. Reply YES {code} to allow once, ALWAYS {code} to allow always, NO {code} to deny. Expires {expires}.",
        (En, ApprovalAllowOnce) => "{code}: allowed once.",
        (En, ApprovalAllowAlways) => "{code}: allowed always.",
        (En, ApprovalDenied) => "{code}: denied.",
        (En, ApprovalAlreadyDecided) => "{code} was already decided; nothing changed.",
        (En, ApprovalClosed) => "{code} is closed: the agent stopped waiting (timed out or cancelled); nothing was done.",
        (En, ApprovalUnknown) => "No pending approval has the code {code}.",
        (En, ApprovalCancelled) => "{code}: the agent withdrew its ask; nothing to answer.",
        (Hi, ApprovalAsk) => "एजेंट पूछ रहा है (चैट {conversation}): {title} {detail}। एक बार: YES {code}, हमेशा: ALWAYS {code}, मना: NO {code}। समाप्ति {expires}।",
        (Hi, ApprovalAllowOnce) => "{code}: एक बार अनुमति दी गई।",
        (Hi, ApprovalAllowAlways) => "{code}: हमेशा के लिए अनुमति दी गई।",
        (Hi, ApprovalDenied) => "{code}: मना कर दिया गया।",
        (Hi, ApprovalAlreadyDecided) => "{code} पर पहले ही निर्णय हो चुका है; कुछ नहीं बदला।",
        (Hi, ApprovalClosed) => "{code} बंद है: एजेंट ने इंतज़ार बंद कर दिया; कुछ नहीं किया गया।",
        (Hi, ApprovalUnknown) => "कोड {code} का कोई लंबित अनुरोध नहीं है।",
        (Hi, ApprovalCancelled) => "{code}: एजेंट ने अनुरोध वापस ले लिया।",
        (Zh, ApprovalAsk) => "智能体请求（对话 {conversation}）：{title} {detail}。回复 YES {code} 允许一次，ALWAYS {code} 始终允许，NO {code} 拒绝。{expires} 过期。",
        (Zh, ApprovalAllowOnce) => "{code}：已允许一次。",
        (Zh, ApprovalAllowAlways) => "{code}：已始终允许。",
        (Zh, ApprovalDenied) => "{code}：已拒绝。",
        (Zh, ApprovalAlreadyDecided) => "{code} 已有决定，未作更改。",
        (Zh, ApprovalClosed) => "{code} 已关闭：智能体不再等待，未执行任何操作。",
        (Zh, ApprovalUnknown) => "没有代码为 {code} 的待批准请求。",
        (Zh, ApprovalCancelled) => "{code}：智能体已撤回请求。",
        (Ja, ApprovalAsk) => "エージェントの確認（会話 {conversation}）: {title} {detail}。1回許可は YES {code}、常に許可は ALWAYS {code}、拒否は NO {code} と返信。期限 {expires}。",
        (Ja, ApprovalAllowOnce) => "{code}: 1回許可しました。",
        (Ja, ApprovalAllowAlways) => "{code}: 常に許可しました。",
        (Ja, ApprovalDenied) => "{code}: 拒否しました。",
        (Ja, ApprovalAlreadyDecided) => "{code} は既に決定済みです。変更はありません。",
        (Ja, ApprovalClosed) => "{code} は終了しています。エージェントは待つのをやめました。何も実行されていません。",
        (Ja, ApprovalUnknown) => "コード {code} の保留中の確認はありません。",
        (Ja, ApprovalCancelled) => "{code}: エージェントが確認を取り下げました。",
        (Ko, ApprovalAsk) => "에이전트 요청(대화 {conversation}): {title} {detail}. 한 번 허용 YES {code}, 항상 허용 ALWAYS {code}, 거부 NO {code}로 답장하세요. 만료 {expires}.",
        (Ko, ApprovalAllowOnce) => "{code}: 한 번 허용했습니다.",
        (Ko, ApprovalAllowAlways) => "{code}: 항상 허용했습니다.",
        (Ko, ApprovalDenied) => "{code}: 거부했습니다.",
        (Ko, ApprovalAlreadyDecided) => "{code}는 이미 결정되었습니다. 변경 사항이 없습니다.",
        (Ko, ApprovalClosed) => "{code}는 종료되었습니다. 에이전트가 기다리지 않으며 아무것도 실행되지 않았습니다.",
        (Ko, ApprovalUnknown) => "코드 {code}의 대기 중인 요청이 없습니다.",
        (Ko, ApprovalCancelled) => "{code}: 에이전트가 요청을 철회했습니다.",
    }
}

/// The placeholders (`{name}`) in a template, in order. `{{` and `}}` are literal braces.
fn placeholders(template: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        let (c, after) = (&rest[i..i + 1], &rest[i + 1..]);
        if after.starts_with(c) {
            rest = &after[1..];
            continue;
        }
        if c == "}" {
            return Err("has a '}' with no '{' before it (write '}}' for a literal brace)".into());
        }
        let end = after
            .find('}')
            .ok_or("has a '{' that is never closed (write '{{' for a literal brace)")?;
        out.push(&after[..end]);
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// Checks one `texts.<key>` template; the error says what to change (the caller adds
/// the key path).
pub(crate) fn validate(kind: Kind, template: &str) -> Result<(), String> {
    if template.trim().is_empty() {
        return Err("is empty; remove the key to use the built-in text".into());
    }
    let found = placeholders(template)?;
    let allowed = kind.allowed();
    if let Some(bad) = found.iter().find(|p| !allowed.contains(p)) {
        let known = match allowed {
            [] => "this text takes no placeholders".to_string(),
            [one] => format!("the only placeholder here is {{{one}}}"),
            many => format!("the placeholders here are {{{}}}", many.join("}, {")),
        };
        return Err(format!("has an unknown placeholder {{{bad}}}; {known}"));
    }
    if let Some(missing) = kind.required().iter().find(|p| !found.contains(p)) {
        return Err(format!(
            "must contain {{{missing}}} (where the text shows it), e.g. \"Your code is {{{missing}}}\""
        ));
    }
    let chars = template.chars().count();
    if chars > MAX_CHARS {
        return Err(format!(
            "is {chars} characters; an SMS body takes at most {MAX_CHARS}"
        ));
    }
    Ok(())
}

fn render(template: &str, code: &str) -> String {
    render_with(template, &[("code", code)])
}

/// `template` with each `{name}` of `vars` filled in (others left out).
fn render_with(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let (c, after) = (&rest[i..i + 1], &rest[i + 1..]);
        if after.starts_with(c) {
            out.push_str(c);
            rest = &after[1..];
        } else if let (Some(end), "{") = (after.find('}'), c) {
            if let Some((_, v)) = vars.iter().find(|(k, _)| *k == &after[..end]) {
                out.push_str(v);
            }
            rest = &after[end + 1..];
        } else {
            // Unreachable for a validated template; keep the text as written.
            out.push_str(c);
            rest = after;
        }
    }
    out.push_str(rest);
    // An override from the config goes to Twilio like an agent's text: without
    // controls, bidi or zero-width characters (they would force UCS-2 unseen).
    crate::text::strip_invisible(&out)
}

/// One account's texts: the built-in wording of its language, with its overrides.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Texts {
    pub language: Language,
    pub pairing_code: Option<String>,
    pub approved: Option<String>,
    pub new_conversation: Option<String>,
    /// Overrides of the approval texts, by kind (the other kinds have fields).
    pub approval: Vec<(Kind, String)>,
}

impl Texts {
    /// The template in force for `kind`.
    pub fn template(&self, kind: Kind) -> &str {
        let custom = match kind {
            Kind::PairingCode => self.pairing_code.as_deref(),
            Kind::Approved => self.approved.as_deref(),
            Kind::NewConversation => self.new_conversation.as_deref(),
            _ => self
                .approval
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, t)| t.as_str()),
        };
        custom.unwrap_or_else(|| built_in(self.language, kind))
    }

    /// Sets the operator's template for `kind`.
    pub fn set(&mut self, kind: Kind, template: String) {
        match kind {
            Kind::PairingCode => self.pairing_code = Some(template),
            Kind::Approved => self.approved = Some(template),
            Kind::NewConversation => self.new_conversation = Some(template),
            _ => {
                self.approval.retain(|(k, _)| *k != kind);
                self.approval.push((kind, template));
            }
        }
    }

    /// The ask to an approver, its title and detail already quoted and cut by the
    /// caller (`access::approval::fit`).
    pub fn approval_ask(
        &self,
        title: &str,
        detail: &str,
        conversation: &str,
        code: &str,
        expires: &str,
    ) -> String {
        render_with(
            self.template(Kind::ApprovalAsk),
            &[
                ("title", title),
                ("detail", detail),
                ("conversation", conversation),
                ("code", code),
                ("expires", expires),
            ],
        )
    }

    /// One of the short approval texts that take only `{code}`.
    pub fn approval_note(&self, kind: Kind, code: &str) -> String {
        render(self.template(kind), code)
    }

    pub fn pairing_code(&self, code: &str) -> String {
        render(self.template(Kind::PairingCode), code)
    }

    pub fn approved(&self) -> String {
        render(self.template(Kind::Approved), "")
    }

    pub fn new_conversation(&self) -> String {
        render(self.template(Kind::NewConversation), "")
    }

    /// What each text costs, for `config show`: (key, encoding, characters, segments),
    /// the pairing code measured with a code in it.
    pub fn costs(&self) -> Vec<(&'static str, &'static str, usize, u32)> {
        Kind::ALL
            .iter()
            .map(|&kind| {
                let text = match kind {
                    Kind::PairingCode => self.pairing_code("ABCD2345"),
                    Kind::Approved => self.approved(),
                    Kind::NewConversation => self.new_conversation(),
                    Kind::ApprovalAsk => self.approval_ask(
                        "\"Run a shell command\"",
                        "\"ls\"",
                        "***4321",
                        "ABC234",
                        "12:05 UTC",
                    ),
                    other => self.approval_note(other, "ABC234"),
                };
                let c = count_segments(&text);
                let enc = match c.encoding {
                    Encoding::Gsm7 => "GSM-7",
                    Encoding::Ucs2 => "UCS-2",
                };
                (kind.key(), enc, text.chars().count(), c.segments)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_texts_are_valid_in_every_language() {
        for lang in Language::ALL {
            assert_eq!(Language::parse(lang.code()), Some(lang));
            let t = Texts {
                language: lang,
                ..Texts::default()
            };
            for kind in Kind::ALL {
                assert_eq!(
                    validate(kind, built_in(lang, kind)),
                    Ok(()),
                    "{lang:?} {kind:?}"
                );
            }
            let text = t.pairing_code("ABCD2345");
            assert_eq!(text.matches("ABCD2345").count(), 2, "{text}");
            assert!(!text.contains('{'), "{text}");
            assert!(
                text.contains("smsgate pairing approve sms ABCD2345"),
                "{text}"
            );
        }
        assert_eq!(Language::parse("fr"), None);
    }

    /// Issue 22 item 5: the approval texts in every language carry the code where the
    /// approver needs it and, with a short ask, fit the two segments of CONTRACT §9.
    #[test]
    fn approval_texts_in_every_language() {
        for lang in Language::ALL {
            let t = Texts {
                language: lang,
                ..Texts::default()
            };
            let ask = t.approval_ask("\"Run\"", "\"ls\"", "***4321", "ABC234", "12:05 UTC");
            assert_eq!(ask.matches("ABC234").count(), 3, "{lang:?}: {ask}");
            for word in [
                "YES ABC234",
                "ALWAYS ABC234",
                "NO ABC234",
                "***4321",
                "12:05 UTC",
            ] {
                assert!(ask.contains(word), "{lang:?}: {word} in {ask}");
            }
            assert!(count_segments(&ask).segments <= 2, "{lang:?}: {ask}");
            for kind in &Kind::ALL[4..] {
                let note = t.approval_note(*kind, "ABC234");
                assert!(note.contains("ABC234"), "{lang:?} {kind:?}: {note}");
                assert_eq!(
                    count_segments(&note).segments,
                    1,
                    "{lang:?} {kind:?}: {note}"
                );
            }
        }
        assert!(
            count_segments(&Texts::default().approval_note(Kind::ApprovalDenied, "X")).encoding
                == Encoding::Gsm7
        );
    }

    #[test]
    fn approval_texts_are_overridable() {
        let mut t = Texts::default();
        assert_eq!(validate(Kind::ApprovalAsk, "Allow {title}? {code}"), Ok(()));
        assert!(validate(Kind::ApprovalAsk, "Allow {title}?")
            .unwrap_err()
            .contains("must contain {code}"));
        assert!(validate(Kind::ApprovalDenied, "{title} denied")
            .unwrap_err()
            .contains("the only placeholder here is {code}"));
        assert!(validate(Kind::ApprovalAsk, "{code} {who}")
            .unwrap_err()
            .contains("{title}, {detail}, {conversation}, {code}, {expires}"));
        t.set(Kind::ApprovalAsk, "Allow {title} {detail}? Y {code}".into());
        t.set(Kind::ApprovalDenied, "Nope ({code})".into());
        assert_eq!(
            t.approval_ask("\"a\"", "\"b\"", "-", "C2", "x"),
            "Allow \"a\" \"b\"? Y C2"
        );
        assert_eq!(t.approval_note(Kind::ApprovalDenied, "C2"), "Nope (C2)");
        assert_eq!(
            t.approval_note(Kind::ApprovalAllowOnce, "C2"),
            "C2: allowed once."
        );
    }

    #[test]
    fn english_wording_is_unchanged() {
        let t = Texts::default();
        assert_eq!(t.pairing_code("X"), "Your pairing code is X. To let you talk to the agent, its owner runs: smsgate pairing approve sms X (valid for 1 hour).");
        assert_eq!(
            t.approved(),
            "You're approved: your messages now reach the agent."
        );
    }

    #[test]
    fn template_validation_table() {
        use Kind::*;
        let cases: &[(Kind, &str, Option<&str>)] = &[
            (PairingCode, "Code: {code}", None),
            (PairingCode, "{code} {{literal}} {code}", None),
            (PairingCode, "Your code", Some("must contain {code}")),
            (PairingCode, "Code {cod}", Some("unknown placeholder {cod}")),
            (PairingCode, "Code {code", Some("never closed")),
            (PairingCode, "Code code}", Some("no '{' before it")),
            (PairingCode, "  ", Some("is empty")),
            (Approved, "Welcome!", None),
            (Approved, "Welcome {code}", Some("takes no placeholders")),
            (NewConversation, "Fresh start.", None),
        ];
        for (kind, t, want) in cases {
            let got = validate(*kind, t);
            match want {
                None => assert_eq!(got, Ok(()), "{t}"),
                Some(w) => {
                    let e = got.unwrap_err();
                    assert!(e.contains(w), "{t}: {e}");
                }
            }
        }
        let long = format!("{{code}}{}", "x".repeat(1600));
        assert!(validate(PairingCode, &long)
            .unwrap_err()
            .contains("at most 1600"));
    }

    #[test]
    fn overrides_and_rendering() {
        let t = Texts {
            language: Language::Ja,
            pairing_code: Some("Code {{not a placeholder}}: {code}".into()),
            ..Texts::default()
        };
        assert_eq!(t.pairing_code("ZZ"), "Code {not a placeholder}: ZZ");
        assert_eq!(t.approved(), built_in(Language::Ja, Kind::Approved));
        let hidden = Texts {
            new_conversation: Some("New\u{200B} chat\u{202E} started\u{7}.".into()),
            ..Texts::default()
        };
        assert_eq!(hidden.new_conversation(), "New chat started.");
        assert_eq!(hidden.costs()[2].1, "GSM-7");
    }

    #[test]
    fn costs_show_ucs2_for_hindi() {
        let en = Texts::default().costs();
        assert!(en.iter().all(|c| c.1 == "GSM-7"), "{en:?}");
        let hi = Texts {
            language: Language::Hi,
            ..Texts::default()
        }
        .costs();
        let pairing = hi.iter().find(|c| c.0 == "pairingCode").unwrap();
        assert_eq!(pairing.1, "UCS-2");
        assert!(
            pairing.3 >= 2,
            "a Hindi pairing text is more than 70 characters: {pairing:?}"
        );
    }
}
