//! Approvals answered by SMS (CONTRACT §9), as pure functions: reading an approver's
//! answer, codes, who may decide, the first answer winning, and the approval text that
//! shows a hostile `detail` quoted and cut. `crate::agent::approvals` carries them out.

use rand::Rng;

use super::pairing::CODE_ALPHABET;
use crate::phone::E164;

/// Approval codes: 6 characters of the pairing alphabet.
pub(crate) const CODE_LEN: usize = 6;
/// Asks pending per account at most; more are answered `deny` at once.
pub(crate) const MAX_PENDING: usize = 5;
/// The whole approval SMS fits this many segments.
pub(crate) const MAX_SEGMENTS: u32 = 2;
/// The longest title or detail kept in the store and the audit, in characters.
pub(crate) const MAX_STORED: usize = 1000;

/// How an ask ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    AllowOnce,
    AllowAlways,
    Deny,
    Timeout,
    Cancelled,
}

impl Decision {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Decision::AllowOnce => "allow_once",
            Decision::AllowAlways => "allow_always",
            Decision::Deny => "deny",
            Decision::Timeout => "timeout",
            Decision::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [
            Decision::AllowOnce,
            Decision::AllowAlways,
            Decision::Deny,
            Decision::Timeout,
            Decision::Cancelled,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// An approver's text read as an answer: the decision and the code it names
/// (normalised: upper case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub decision: Decision,
    pub code: String,
}

/// Reads `YES <code>`, `ALWAYS <code>`, `NO <code>` (case-insensitive, after the
/// opt-out keywords' normalisation) or OpenClaw's `/approve <code>
/// allow-once|allow-always|deny`. Anything else is not an answer (`None`): an ordinary
/// text. A bare `YES` is never an answer: it is also Twilio's opt-in keyword.
pub(crate) fn parse_answer(body: &str) -> Option<Answer> {
    let norm = super::normalize_keyword(body);
    let words: Vec<&str> = norm.split_whitespace().collect();
    let (decision, code) = match words.as_slice() {
        ["YES", code] => (Decision::AllowOnce, *code),
        ["ALWAYS", code] => (Decision::AllowAlways, *code),
        ["NO", code] => (Decision::Deny, *code),
        // `normalize_keyword` trims punctuation at the ends: the slash goes with it.
        ["/APPROVE" | "APPROVE", code, how] => (
            match *how {
                "ALLOW-ONCE" => Decision::AllowOnce,
                "ALLOW-ALWAYS" => Decision::AllowAlways,
                "DENY" => Decision::Deny,
                _ => return None,
            },
            *code,
        ),
        _ => return None,
    };
    is_code_shaped(code).then(|| Answer {
        decision,
        code: code.to_string(),
    })
}

/// Whether `s` could be a code: the length, the alphabet, and a digit in it (every
/// code has one, so "YES PLEASE" or "NO WAY" stay ordinary texts).
fn is_code_shaped(s: &str) -> bool {
    s.len() == CODE_LEN
        && s.bytes().all(|b| CODE_ALPHABET.contains(&b))
        && s.bytes().any(|b| b.is_ascii_digit())
}

/// A fresh code from the operating system's CSPRNG, not in `taken`, with at least one
/// digit (see [`is_code_shaped`]).
pub(crate) fn new_code(taken: &[String]) -> String {
    let mut rng = rand::rngs::OsRng;
    loop {
        let code: String = (0..CODE_LEN)
            .map(|_| CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())] as char)
            .collect();
        if is_code_shaped(&code) && !taken.contains(&code) {
            return code;
        }
    }
}

/// What becomes of an answer, given who sent it and what the store holds for its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Not an approver: the text decides nothing and is an ordinary text.
    NotApprover,
    /// The pending ask is decided now (first answer wins).
    Decide(Decision),
    /// The ask was decided before (by another answer, a timeout, or a closed
    /// connection): the approver is told how it ended.
    AlreadyDecided(Decision),
    /// No ask has this code (a guess, or one long gone).
    Unknown,
}

/// Judges one answer. `pending`: the code names a pending ask of this account;
/// `decided`: how the audit says it ended, if it did.
pub(crate) fn judge(
    approvers: &[E164],
    from: &E164,
    answer: &Answer,
    pending: bool,
    decided: Option<Decision>,
) -> Outcome {
    if !approvers.contains(from) {
        return Outcome::NotApprover;
    }
    match (pending, decided) {
        (true, _) => Outcome::Decide(answer.decision),
        (false, Some(d)) => Outcome::AlreadyDecided(d),
        (false, None) => Outcome::Unknown,
    }
}

/// The ask's own `timeoutSecs` wins over the account's, within 1 s … a day.
pub(crate) fn timeout_secs(asked: Option<u64>, account: u64) -> u64 {
    asked
        .unwrap_or(account)
        .clamp(1, crate::config::MAX_APPROVAL_TIMEOUT_SECS)
}

/// A title or detail as stored: no control or invisible characters, every run of
/// whitespace (newlines included) one space, at most [`MAX_STORED`] characters.
pub(crate) fn clean(raw: &str) -> String {
    let visible = crate::text::strip_invisible(raw);
    let mut out = String::with_capacity(visible.len().min(MAX_STORED * 4));
    for word in visible.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() > MAX_STORED {
            break;
        }
    }
    cut(&out, MAX_STORED)
}

/// `s` cut to `max` characters, ending in "..." when cut (GSM-7: "…" would make the
/// whole SMS UCS-2).
pub(crate) fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some(_) if max == 0 => String::new(),
        Some(_) => {
            let end = s.char_indices().nth(max - 1).map_or(0, |(i, _)| i);
            format!("{}...", &s[..end])
        }
    }
}

/// How untrusted text stands in an approval SMS: in double quotes, with the quotes it
/// contains made single, so it cannot end the quote and pose as our own words.
pub(crate) fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace(['"', '“', '”'], "'"))
}

/// The approval SMS: `render(title, detail)` (both already quoted) with the title and
/// detail cut until the whole text fits [`MAX_SEGMENTS`]. The detail is cut first,
/// down to nothing, then the title.
pub(crate) fn fit(title: &str, detail: &str, render: impl Fn(&str, &str) -> String) -> String {
    let fits = |t: &str| crate::text::count_segments(t).segments <= MAX_SEGMENTS;
    let q = |s: &str, n: usize| {
        if s.is_empty() {
            String::new()
        } else {
            quoted(&cut(s, n))
        }
    };
    let (tn, dn) = (title.chars().count(), detail.chars().count());
    let text = render(&q(title, tn), &q(detail, dn));
    if fits(&text) {
        return text;
    }
    // The longest detail that fits, by halving (a text's segments grow with its length).
    let longest = |n_max: usize, make: &dyn Fn(usize) -> String| -> Option<usize> {
        let (mut lo, mut hi) = (0usize, n_max);
        if !fits(&make(0)) {
            return None;
        }
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if fits(&make(mid)) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Some(lo)
    };
    let with_detail = |n: usize| render(&q(title, tn), &q(detail, n.max(1)));
    if let Some(n) = longest(dn, &with_detail) {
        if n > 0 {
            return with_detail(n);
        }
    }
    let no_detail = |n: usize| render(&q(title, n.max(1)), "");
    match longest(tn, &no_detail) {
        Some(n) => no_detail(n),
        // The template alone is longer than two segments (an operator's override): it
        // goes as written, the title cut to one character.
        None => no_detail(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> E164 {
        E164::parse(s).unwrap()
    }

    #[test]
    fn answers_table() {
        use Decision::*;
        let cases: &[(&str, Option<(Decision, &str)>)] = &[
            ("YES ABC234", Some((AllowOnce, "ABC234"))),
            ("yes abc234", Some((AllowOnce, "ABC234"))),
            ("  Yes   abc234. ", Some((AllowOnce, "ABC234"))),
            ("ＹＥＳ ＡＢＣ２３４", Some((AllowOnce, "ABC234"))),
            ("YES\u{200B} ABC234", Some((AllowOnce, "ABC234"))),
            ("ALWAYS ABC234", Some((AllowAlways, "ABC234"))),
            ("no ABC234", Some((Deny, "ABC234"))),
            ("/approve ABC234 allow-once", Some((AllowOnce, "ABC234"))),
            (
                "/approve abc234 allow-always",
                Some((AllowAlways, "ABC234")),
            ),
            ("/APPROVE ABC234 DENY", Some((Deny, "ABC234"))),
            ("/approve ABC234 maybe", None),
            ("/approve ABC234", None),
            ("YES", None),
            ("NO", None),
            ("YES PLEASE", None),
            ("no ABCDEF", None),
            ("NO WAY!", None),
            ("YES ABC23", None),
            ("YES ABC2345", None),
            ("YES ABC230", None),
            ("YES ABC234 and more", None),
            ("OK ABC234", None),
            ("", None),
        ];
        for (body, want) in cases {
            let got = parse_answer(body).map(|a| (a.decision, a.code));
            let want = want.map(|(d, c)| (d, c.to_string()));
            assert_eq!(got, want, "{body:?}");
        }
        let huge = format!("YES {}", "A".repeat(10_000));
        assert_eq!(parse_answer(&huge), None);
    }

    #[test]
    fn judge_table() {
        use Decision::*;
        let approvers = [n("+15557654321")];
        let yes = Answer {
            decision: AllowOnce,
            code: "ABC234".into(),
        };
        let no = Answer {
            decision: Deny,
            code: "ABC234".into(),
        };
        let me = n("+15557654321");
        let stranger = n("+15550009999");
        type Case<'a> = (
            &'a str,
            &'a E164,
            &'a Answer,
            bool,
            Option<Decision>,
            Outcome,
        );
        let cases: Vec<Case> = vec![
            (
                "first answer",
                &me,
                &yes,
                true,
                None,
                Outcome::Decide(AllowOnce),
            ),
            ("deny", &me, &no, true, None, Outcome::Decide(Deny)),
            (
                "answered twice",
                &me,
                &no,
                false,
                Some(AllowOnce),
                Outcome::AlreadyDecided(AllowOnce),
            ),
            (
                "after close",
                &me,
                &yes,
                false,
                Some(Cancelled),
                Outcome::AlreadyDecided(Cancelled),
            ),
            (
                "after timeout",
                &me,
                &yes,
                false,
                Some(Timeout),
                Outcome::AlreadyDecided(Timeout),
            ),
            ("a guess", &me, &yes, false, None, Outcome::Unknown),
            (
                "non-approver, pending code",
                &stranger,
                &yes,
                true,
                None,
                Outcome::NotApprover,
            ),
            (
                "non-approver, unknown code",
                &stranger,
                &yes,
                false,
                None,
                Outcome::NotApprover,
            ),
        ];
        for (name, from, answer, pending, decided, want) in cases {
            assert_eq!(
                judge(&approvers, from, answer, pending, decided),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn codes_are_six_characters_and_unique() {
        let taken: Vec<String> = (0..50).map(|_| new_code(&[])).collect();
        for c in &taken {
            assert_eq!(c.len(), CODE_LEN);
            assert!(c.bytes().all(|b| CODE_ALPHABET.contains(&b)));
        }
        let c = new_code(&taken);
        assert!(!taken.contains(&c));
        assert!(parse_answer(&format!("yes {}", c.to_lowercase())).is_some());
    }

    #[test]
    fn timeouts() {
        assert_eq!(timeout_secs(None, 300), 300);
        assert_eq!(timeout_secs(Some(5), 300), 5);
        assert_eq!(timeout_secs(Some(0), 300), 1);
        assert_eq!(timeout_secs(Some(u64::MAX), 300), 86_400);
    }

    #[test]
    fn hostile_detail_is_cleaned_quoted_and_cut() {
        let render = |t: &str, d: &str| {
            format!("Agent asks: {t} {d} (chat ***4321). Reply YES ABC234, ALWAYS ABC234 or NO ABC234. Expires 12:05 UTC.")
        };
        let hostile = format!(
            "rm -rf /\u{202E}gnp.exe\u{7}\n\nReply YES to approve\"{}",
            "x".repeat(10_000)
        );
        let detail = clean(&hostile);
        assert!(detail.chars().count() <= MAX_STORED + 3);
        assert!(
            !detail.contains('\n') && !detail.contains('\u{202E}') && !detail.contains('\u{7}')
        );
        let text = fit("Run a shell command", &detail, render);
        assert!(
            crate::text::count_segments(&text).segments <= MAX_SEGMENTS,
            "{text}"
        );
        assert!(
            text.contains("\"rm -rf /gnp.exe Reply YES to approve'x"),
            "{text}"
        );
        assert!(
            text.contains("...\" (chat"),
            "cut inside the quotes: {text}"
        );
        assert!(text.ends_with("Expires 12:05 UTC."), "{text}");
        // A short ask goes whole.
        let text = fit("Run", "ls", render);
        assert!(text.contains("asks: \"Run\" \"ls\" (chat"), "{text}");
        // A huge title: the detail goes, the title is cut.
        let text = fit(&"T".repeat(5000), "ls", render);
        assert!(crate::text::count_segments(&text).segments <= MAX_SEGMENTS);
        assert!(text.contains("T...\""), "{text}");
        // UCS-2 (two segments are 134 characters) still fits.
        let text = fit("実行", &"あ".repeat(500), render);
        assert!(
            crate::text::count_segments(&text).segments <= MAX_SEGMENTS,
            "{text}"
        );
        assert!(text.contains("あ...\""));
    }
}
