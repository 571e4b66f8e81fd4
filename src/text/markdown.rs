//! Markdown → plain SMS text.
//!
//! Agents answer in markdown, but phones show it raw, so we parse it with
//! `pulldown-cmark` (a real CommonMark parser, not regexes) and re-emit only
//! the text a reader needs.

use std::ops::Range;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// Bullet used for unordered list items; "•" is not GSM-7, but it reads far
/// better than "-" and replies with lists are rarely pure GSM-7 anyway.
const BULLET: &str = "• ";

/// Flatten `markdown` into plain text suitable for an SMS body.
///
/// * Headings, emphasis, strong and strikethrough keep their text and lose
///   their markup. Blockquote markers and thematic breaks are dropped.
/// * Code blocks (fenced or indented) and inline code keep their content
///   verbatim, without fences or backticks.
/// * Unordered list items become `• text`; ordered list items keep their
///   number and delimiter (`1. text`, `2) text`), numbered from the list's
///   start, because the order often matters ("step 2"). Nested lists are
///   indented two spaces per level.
/// * A link becomes `label (url)`, or just `url` when the label is the url
///   (autolinks) or empty; images likewise use their alt text.
/// * Raw HTML passes through as text; hard and soft breaks become newlines;
///   blocks are separated by a blank line.
/// * Finally CRLF becomes LF, runs of three or more newlines collapse to two,
///   and the result is trimmed.
///
/// Plain text is left alone: `2 * 3 = 6` is not emphasis for CommonMark, and
/// `*` between two alphanumerics on both sides (`2*3*4`) is kept literally
/// even though CommonMark would read it as emphasis, since in a chat reply it
/// is far more likely to be arithmetic than intraword emphasis.
pub fn to_sms_text(markdown: &str) -> String {
    render(markdown, Style::Sms)
}

/// Convert `markdown` into WhatsApp's own formatting (CONTRACT §12): WhatsApp renders
/// `*bold*`, `_italic_`, `~strike~` and ` ```code``` `, so those are kept in its
/// syntax instead of flattened; headings become bold lines. Everything else (lists,
/// links, quotes, breaks, the arithmetic rule) is as in [`to_sms_text`].
pub fn to_whatsapp_text(markdown: &str) -> String {
    render(markdown, Style::Whatsapp)
}

/// Which rendering: plain SMS text, or WhatsApp's formatting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Sms,
    Whatsapp,
}

fn render(markdown: &str, style: Style) -> String {
    let source = markdown.replace("\r\n", "\n");
    let mut renderer = Renderer::new(&source, style);
    for (event, range) in Parser::new_ext(&source, Options::ENABLE_STRIKETHROUGH).into_offset_iter()
    {
        renderer.event(event, range);
    }
    normalise(&renderer.out)
}

/// Separator owed before the next piece of text, emitted lazily so that
/// nothing trails the last block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Pending {
    None,
    Newline,
    Blank,
}

/// One open list: its next item number (`None` for bullets).
struct List {
    next_number: Option<u64>,
}

/// Markup of an inline span that we decided to keep literally.
struct Span {
    close: Option<String>,
}

/// Streaming state while turning parser events into plain text.
struct Renderer<'s> {
    source: &'s str,
    style: Style,
    out: String,
    pending: Pending,
    /// True right after a newline in `out`, so list continuation lines can be
    /// indented lazily (avoids whitespace-only lines).
    at_line_start: bool,
    lists: Vec<List>,
    /// Item marker not yet written (written with the item's first text, after
    /// the pending break).
    marker: Option<String>,
    /// Open links/images: destination and where their label starts in `out`.
    links: Vec<(String, usize)>,
    /// Open emphasis-like spans, innermost last.
    spans: Vec<Span>,
    /// Content of the code or HTML block being read; flushed at its end so
    /// its trailing newline can be dropped.
    block: Option<String>,
}

impl<'s> Renderer<'s> {
    fn new(source: &'s str, style: Style) -> Self {
        Renderer {
            source,
            style,
            out: String::new(),
            pending: Pending::None,
            at_line_start: true,
            lists: Vec::new(),
            marker: None,
            links: Vec::new(),
            spans: Vec::new(),
            block: None,
        }
    }

    fn event(&mut self, event: Event<'_>, range: Range<usize>) {
        match event {
            Event::Start(tag) => self.start(tag, range),
            Event::End(tag) => self.end(tag),
            Event::Code(text) if self.style == Style::Whatsapp => {
                self.text(&format!("```{text}```"))
            }
            Event::Text(text) | Event::Code(text) => self.text(&text),
            Event::Html(html) | Event::InlineHtml(html) => self.text(&html),
            Event::InlineMath(math) | Event::DisplayMath(math) => self.text(&math),
            // Not enabled in our options; rendered as their source would read.
            Event::FootnoteReference(name) => self.text(&format!("[^{name}]")),
            Event::TaskListMarker(done) => self.text(if done { "[x] " } else { "[ ] " }),
            Event::SoftBreak | Event::HardBreak => self.text("\n"),
            Event::Rule => self.pending_at_least(Pending::Blank),
        }
    }

    fn start(&mut self, tag: Tag<'_>, range: Range<usize>) {
        let wa = self.style == Style::Whatsapp;
        match tag {
            Tag::Heading { .. } if wa => {
                self.pending_at_least(Pending::Newline);
                self.open_mark("*");
            }
            Tag::Strikethrough if wa => self.open_mark("~"),
            Tag::Paragraph
            | Tag::Heading { .. }
            | Tag::BlockQuote(_)
            | Tag::Table(_)
            | Tag::TableHead
            | Tag::TableRow
            | Tag::FootnoteDefinition(_)
            | Tag::DefinitionList
            | Tag::DefinitionListTitle
            | Tag::DefinitionListDefinition
            | Tag::MetadataBlock(_) => self.pending_at_least(Pending::Newline),
            Tag::CodeBlock(kind) => {
                self.pending_at_least(Pending::Newline);
                // A one-word info string is a language tag (```rust) and goes; more
                // than one word is text someone wrote after the backticks ("```Here is
                // the plan"), which an unclosed fence would otherwise swallow.
                let info = match &kind {
                    pulldown_cmark::CodeBlockKind::Fenced(info) => info.trim(),
                    pulldown_cmark::CodeBlockKind::Indented => "",
                };
                self.block = Some(if info.contains(char::is_whitespace) {
                    format!("{info}\n")
                } else {
                    String::new()
                });
            }
            Tag::HtmlBlock => {
                self.pending_at_least(Pending::Newline);
                self.block = Some(String::new());
            }
            Tag::List(start) => {
                self.pending_at_least(Pending::Newline);
                self.lists.push(List { next_number: start });
            }
            Tag::Item => {
                // An item with no text of its own (e.g. it only holds a
                // nested list) still shows its marker.
                if self.marker.is_some() {
                    self.flush();
                    let end = self.out.trim_end_matches(' ').len();
                    self.out.truncate(end);
                }
                self.pending_at_least(Pending::Newline);
                self.marker = Some(self.item_marker(&range));
            }
            Tag::TableCell => self.text(" "),
            Tag::Emphasis => self.open_span(&range, 1, wa.then_some("_")),
            Tag::Strong => self.open_span(&range, 2, wa.then_some("*")),
            // Never kept literally: only `*` doubles as an arithmetic sign.
            Tag::Strikethrough | Tag::Superscript | Tag::Subscript => {
                self.spans.push(Span { close: None })
            }
            Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. } => {
                // Flush first so the label slice excludes any pending break.
                self.flush();
                self.links.push((dest_url.to_string(), self.out.len()));
            }
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Heading(_) if self.style == Style::Whatsapp => {
                if let Some(Span { close: Some(close) }) = self.spans.pop() {
                    self.text(&close);
                }
                self.pending_at_least(Pending::Blank);
            }
            TagEnd::CodeBlock if self.style == Style::Whatsapp => {
                if let Some(block) = self.block.take() {
                    let body = block.trim_end_matches('\n');
                    if !body.is_empty() {
                        self.text(&format!("```{body}```"));
                    }
                }
                self.pending_at_least(Pending::Blank);
            }
            TagEnd::Paragraph
            | TagEnd::Heading(_)
            | TagEnd::BlockQuote(_)
            | TagEnd::Table
            | TagEnd::FootnoteDefinition
            | TagEnd::DefinitionList
            | TagEnd::MetadataBlock(_) => self.pending_at_least(Pending::Blank),
            TagEnd::TableHead
            | TagEnd::TableRow
            | TagEnd::DefinitionListTitle
            | TagEnd::DefinitionListDefinition
            | TagEnd::Item => self.pending_at_least(Pending::Newline),
            TagEnd::CodeBlock | TagEnd::HtmlBlock => {
                if let Some(block) = self.block.take() {
                    self.text(block.trim_end_matches('\n'));
                }
                self.pending_at_least(Pending::Blank);
            }
            TagEnd::List(_) => {
                self.lists.pop();
                // A nested list ends inside its parent item: the next sibling
                // item follows on the next line, not after a blank one.
                let gap = if self.lists.is_empty() {
                    Pending::Blank
                } else {
                    Pending::Newline
                };
                self.pending_at_least(gap);
            }
            TagEnd::TableCell => {}
            TagEnd::Emphasis
            | TagEnd::Strong
            | TagEnd::Strikethrough
            | TagEnd::Superscript
            | TagEnd::Subscript => {
                if let Some(Span { close: Some(close) }) = self.spans.pop() {
                    self.text(&close);
                }
            }
            TagEnd::Link | TagEnd::Image => self.close_link(),
        }
    }

    /// A span WhatsApp renders: its mark now, and again when it closes. An empty span
    /// (`****`) would print its marks alone: WhatsApp shows those literally, harmless.
    fn open_mark(&mut self, mark: &str) {
        self.text(mark);
        self.spans.push(Span {
            close: Some(mark.to_string()),
        });
    }

    /// Emphasis delimited by `*` with alphanumerics right outside both ends
    /// (`2*3*4`, `a*b*c`) is almost always arithmetic in a chat reply, so we
    /// keep its delimiters instead of silently deleting them.
    /// Otherwise the span loses its markup, or under WhatsApp gets `mark`.
    fn open_span(&mut self, range: &Range<usize>, width: usize, mark: Option<&str>) {
        let src = self.source;
        let before = src.get(..range.start).and_then(|s| s.chars().next_back());
        let after = src.get(range.end..).and_then(|s| s.chars().next());
        let open = src.get(range.start..range.start + width);
        let close = src.get(range.end.saturating_sub(width)..range.end);
        let intraword =
            before.is_some_and(char::is_alphanumeric) && after.is_some_and(char::is_alphanumeric);
        match (open, close) {
            (Some(open), Some(close))
                if intraword
                    && open.chars().all(|c| c == '*')
                    && close.chars().all(|c| c == '*') =>
            {
                self.text(open);
                self.spans.push(Span {
                    close: Some(close.to_string()),
                });
            }
            _ => match mark {
                Some(mark) => self.open_mark(mark),
                None => self.spans.push(Span { close: None }),
            },
        }
    }

    fn close_link(&mut self) {
        let Some((url, start)) = self.links.pop() else {
            return;
        };
        let label = self.out.get(start..).unwrap_or_default().trim();
        if label.is_empty() {
            self.out.truncate(start);
            self.text(&url);
        } else if label != url && format!("mailto:{label}") != url {
            self.text(&format!(" ({url})"));
        }
    }

    /// `• ` for bullets; for ordered lists the item number plus the delimiter
    /// the author used (`.` or `)`), read back from the source.
    fn item_marker(&mut self, range: &Range<usize>) -> String {
        let Some(list) = self.lists.last_mut() else {
            return BULLET.to_string();
        };
        let Some(number) = list.next_number else {
            return BULLET.to_string();
        };
        list.next_number = Some(number.saturating_add(1));
        let delimiter = self
            .source
            .get(range.start..)
            .and_then(|s| s.trim_start().chars().find(|c| !c.is_ascii_digit()))
            .filter(|c| *c == ')')
            .unwrap_or('.');
        format!("{number}{delimiter} ")
    }

    fn pending_at_least(&mut self, pending: Pending) {
        self.pending = self.pending.max(pending);
    }

    /// Write the owed block separator and item marker, if any.
    fn flush(&mut self) {
        if self.pending != Pending::None && !self.out.is_empty() {
            self.out.push_str(match self.pending {
                Pending::Blank => "\n\n",
                _ => "\n",
            });
            self.at_line_start = true;
        }
        self.pending = Pending::None;
        if let Some(marker) = self.marker.take() {
            let depth = self.lists.len().saturating_sub(1);
            self.out.push_str(&"  ".repeat(depth));
            self.out.push_str(&marker);
            self.at_line_start = false;
        }
    }

    fn text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if let Some(block) = self.block.as_mut() {
            block.push_str(text);
            return;
        }
        self.flush();
        // Continuation lines inside a list item line up with the item text.
        let indent = "  ".repeat(self.lists.len());
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                self.out.push('\n');
                self.at_line_start = true;
            }
            if line.is_empty() {
                continue;
            }
            if self.at_line_start {
                self.out.push_str(&indent);
                self.at_line_start = false;
            }
            self.out.push_str(line);
        }
    }
}

/// CRLF → LF, at most one blank line in a row, no surrounding whitespace.
fn normalise(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let mut out = String::with_capacity(text.len());
    let mut newlines = 0;
    for c in text.chars() {
        if c == '\n' {
            newlines += 1;
            if newlines > 2 {
                continue;
            }
        } else {
            newlines = 0;
        }
        out.push(c);
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    #[test]
    fn to_whatsapp_text_table() {
        let cases: &[(&str, &str, &str)] = &[
            ("plain", "Call me at 5pm, ok?", "Call me at 5pm, ok?"),
            ("bold", "**bold** and __also__", "*bold* and *also*"),
            ("italic", "*it* and _it_", "_it_ and _it_"),
            ("strike", "~~old~~ new", "~old~ new"),
            ("inline code", "run `ls -l` now", "run ```ls -l``` now"),
            (
                "code block",
                "```rust\nfn main() {}\n```",
                "```fn main() {}```",
            ),
            ("heading", "# Plan\nbody", "*Plan*\n\nbody"),
            ("nested", "**bold _it_**", "*bold _it_*"),
            ("arithmetic stays", "2*3*4 = 24", "2*3*4 = 24"),
            ("spaced star", "2 * 3 = 6", "2 * 3 = 6"),
            ("list", "- one\n- **two**", "• one\n• *two*"),
            (
                "link",
                "See [docs](https://example.com) now",
                "See docs (https://example.com) now",
            ),
            ("empty", "", ""),
        ];
        for (name, input, want) in cases {
            assert_eq!(to_whatsapp_text(input), *want, "{name}: {input:?}");
        }
    }

    #[test]
    fn to_sms_text_table() {
        let cases: &[(&str, &str, &str)] = &[
            // (name, input, expected)
            ("empty", "", ""),
            ("whitespace", "  \n\n\t ", ""),
            ("plain", "Call me at 5pm, ok?", "Call me at 5pm, ok?"),
            ("multiplication spaced", "2 * 3 = 6", "2 * 3 = 6"),
            ("multiplication tight", "2*3*4 = 24", "2*3*4 = 24"),
            ("multiplication across words", "2*3 and 4*5", "2*3 and 4*5"),
            ("variables", "a*b*c", "a*b*c"),
            ("price", "price: $5 * 2", "price: $5 * 2"),
            ("tilde approx", "approx ~5 to ~10", "approx ~5 to ~10"),
            ("snake case", "use snake_case_name", "use snake_case_name"),
            ("windows path", "C:\\Users\\me", "C:\\Users\\me"),
            ("ampersand", "AT&T rocks", "AT&T rocks"),
            ("entity", "Tom &amp; Jerry", "Tom & Jerry"),
            ("emoji", "Done 🎉👨‍👩‍👧 ok", "Done 🎉👨‍👩‍👧 ok"),
            ("cjk", "你好，世界。こんにちは", "你好，世界。こんにちは"),
            ("cyrillic", "Привет, мир", "Привет, мир"),
            ("arabic", "مرحبا بالعالم", "مرحبا بالعالم"),
            ("soft break", "line one\nline two", "line one\nline two"),
            ("hard break", "line one  \nline two", "line one\nline two"),
            (
                "backslash break",
                "line one\\\nline two",
                "line one\nline two",
            ),
            ("paragraphs", "one\n\ntwo", "one\n\ntwo"),
            ("many blank lines", "one\n\n\n\n\ntwo", "one\n\ntwo"),
            ("crlf", "one\r\ntwo\r\n\r\nthree", "one\ntwo\n\nthree"),
            ("trim", "\n\n  hello  \n\n", "hello"),
            ("atx heading", "# Title\nbody", "Title\n\nbody"),
            ("setext heading", "Title\n=====\n\nbody", "Title\n\nbody"),
            ("emphasis", "*a* _b_ **c** __d__", "a b c d"),
            (
                "nested emphasis",
                "***both*** and **bold _it_**",
                "both and bold it",
            ),
            ("strikethrough", "~~old~~ new", "old new"),
            (
                "blockquote",
                "> quoted\n> more\n\nafter",
                "quoted\nmore\n\nafter",
            ),
            ("nested blockquote", "> > deep", "deep"),
            ("rule", "above\n\n---\n\nbelow", "above\n\nbelow"),
            ("rule stars", "above\n\n* * *\n\nbelow", "above\n\nbelow"),
            ("inline code", "run `ls -la` now", "run ls -la now"),
            (
                "inline code with stars",
                "`a*b*c` and `**x**`",
                "a*b*c and **x**",
            ),
            (
                "fenced code",
                "Try:\n\n```rust\nfn main() {\n    println!(\"*hi*\");\n}\n```\n\nDone.",
                "Try:\n\nfn main() {\n    println!(\"*hi*\");\n}\n\nDone.",
            ),
            (
                "indented code",
                "Try:\n\n    let x = 1;\n      indented\n\nDone.",
                "Try:\n\nlet x = 1;\n  indented\n\nDone.",
            ),
            (
                "bullets",
                "- one\n- two\n* three",
                "• one\n• two\n\n• three",
            ),
            ("bullets plus", "+ a\n+ b", "• a\n• b"),
            (
                "ordered",
                "1. one\n2. two\n3. three",
                "1. one\n2. two\n3. three",
            ),
            ("ordered lazy numbers", "1. one\n1. two", "1. one\n2. two"),
            ("ordered start", "3. three\n4. four", "3. three\n4. four"),
            ("ordered paren", "1) one\n2) two", "1) one\n2) two"),
            (
                "nested list",
                "- a\n  - b\n    - c\n- d",
                "• a\n  • b\n    • c\n• d",
            ),
            (
                "nested ordered in bullets",
                "- a\n  1. x\n  2. y\n- b",
                "• a\n  1. x\n  2. y\n• b",
            ),
            (
                "list item continuation",
                "- first line\n  second line\n- next",
                "• first line\n  second line\n• next",
            ),
            ("loose list", "- one\n\n- two", "• one\n\n• two"),
            (
                "list between paragraphs",
                "Intro:\n- a\n- b\n\nOutro.",
                "Intro:\n\n• a\n• b\n\nOutro.",
            ),
            ("empty item with nested list", "- \n  - bar", "•\n  • bar"),
            (
                "list item with formatting",
                "- **Bold** item with [link](https://x.io)",
                "• Bold item with link (https://x.io)",
            ),
            (
                "link",
                "[docs](https://example.com/docs)",
                "docs (https://example.com/docs)",
            ),
            (
                "link titled",
                "[docs](https://e.com \"Title\")",
                "docs (https://e.com)",
            ),
            (
                "link formatted label",
                "[**the** docs](https://e.com)",
                "the docs (https://e.com)",
            ),
            ("autolink", "<https://example.com>", "https://example.com"),
            ("email autolink", "<me@example.com>", "me@example.com"),
            (
                "label equals url",
                "[https://a.io](https://a.io)",
                "https://a.io",
            ),
            ("empty label", "[](https://a.io)", "https://a.io"),
            (
                "reference link",
                "[docs][1]\n\n[1]: https://e.com",
                "docs (https://e.com)",
            ),
            (
                "bare url",
                "see https://x.com/a_b_c ok",
                "see https://x.com/a_b_c ok",
            ),
            (
                "image",
                "![a cat](https://e.com/cat.png)",
                "a cat (https://e.com/cat.png)",
            ),
            (
                "image no alt",
                "![](https://e.com/cat.png)",
                "https://e.com/cat.png",
            ),
            ("inline html", "a <b>bold</b> move", "a <b>bold</b> move"),
            (
                "html block",
                "<div>\nhi\n</div>\n\nafter",
                "<div>\nhi\n</div>\n\nafter",
            ),
            ("escapes", "\\*not emphasis\\*", "*not emphasis*"),
            (
                "pipes stay text",
                "| a | b |\n|---|---|\n| 1 | 2 |",
                "| a | b |\n|---|---|\n| 1 | 2 |",
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(to_sms_text(input), *want, "case {name}: {input:?}");
        }
    }

    #[test]
    fn realistic_reply() {
        let md = "## Summary\r\n\r\nI checked **three** things:\r\n\r\n1. The `config.toml` file\r\n2. The [logs](https://logs.example.com)\r\n3. ~~Nothing else~~ The *cache*\r\n\r\n---\r\n\r\n> All good.\r\n";
        let want = "Summary\n\nI checked three things:\n\n1. The config.toml file\n2. The logs (https://logs.example.com)\n3. Nothing else The cache\n\nAll good.";
        assert_eq!(to_sms_text(md), want);
    }

    proptest! {
        #[test]
        fn arbitrary_input_is_normalised(input in any::<String>()) {
            let out = to_sms_text(&input);
            prop_assert!(!out.contains("\n\n\n"));
            prop_assert!(!out.contains("\r\n"));
            prop_assert_eq!(out.trim(), out.as_str());
        }

        #[test]
        fn plain_sentences_survive(
            first in "[A-Za-z][a-z]{0,8}",
            words in prop::collection::vec("[A-Za-z][A-Za-z0-9',?!]{0,8}|[0-9]{1,3}|[-+*=/%]", 0..20)
        ) {
            // A line starting with "+ " or "1. " is a list item in any
            // markdown reading, so sentences here start with a word.
            let text = std::iter::once(first).chain(words).collect::<Vec<_>>().join(" ");
            prop_assert_eq!(to_sms_text(&text), text);
        }
    }

    /// The alphanumeric words of `s`, in order.
    fn words(s: &str) -> Vec<&str> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect()
    }

    /// Whether every word of `input` is in `out`, in the same order, but a fence's
    /// language tag (a one-word info string: ```rust), which is not text.
    fn keeps_every_word(input: &str, out: &str) -> bool {
        let without_tags: String = input
            .lines()
            .map(|line| {
                let t = line.trim_start_matches([' ', '>', '-']).trim_start();
                let fence = t.trim_start_matches('`');
                let fence = if fence.len() == t.len() {
                    t.trim_start_matches('~')
                } else {
                    fence
                };
                let is_fence = t.len() - fence.len() >= 3;
                if is_fence && !fence.trim().contains(char::is_whitespace) {
                    String::new()
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut have = words(out).into_iter();
        words(&without_tags)
            .into_iter()
            .all(|w| have.any(|h| h == w))
    }

    #[test]
    fn an_unclosed_fence_swallows_nothing() {
        // Issue 20: an unclosed ``` once seemed to eat the rest of a reply. CommonMark
        // runs an unclosed fence to the end of its container; its content is kept.
        let inputs = [
            "Here is the fix:\n\n```\nlet x = 1;\nand the rest of the answer\n\nMore prose after",
            "Here is the fix:\n```rust\nfn main() {}\nthen text that was meant as prose",
            "Start ```inline unclosed and more words here",
            "Intro\n\n~~~\ntilde fence never closed\n\nparagraph two",
            "Intro\n\n````\nfour backticks\n```\nstill inside\n\nend words",
            "- item one\n- item two\n  ```\n  fenced in a list\n- item three\n\nafter list",
            "> quoted start\n> ```\n> quoted code\n\noutside quote words",
            "Closed\n```\nfirst block\n```\nmiddle words\n```\nsecond block never closed\nlast words",
            "   ```\nindented fence open\n\nfinal words",
            "text\n```\n",
            "```",
            "```\n\n\n\nwords after blank lines\n\n\n\nand more",
            "**bold** start\n```python\nprint('hi')\n# not a heading\n* not a list\nafter",
            // Text written after the backticks is kept, not taken for a language.
            "Answer:\n```Here is the plan for tomorrow\nstep one\nstep two",
        ];
        for input in inputs {
            let out = to_sms_text(input);
            assert!(keeps_every_word(input, &out), "{input:?} -> {out:?}");
        }
    }

    proptest! {
        #[test]
        fn an_unclosed_fence_anywhere_keeps_every_word(
            before in prop::collection::vec("[A-Za-z][a-z0-9]{0,8}", 0..12),
            after in prop::collection::vec("[A-Za-z][a-z0-9]{0,8}", 1..12),
            fence in "(```|~~~|````)([a-z]{0,4}|[A-Z][a-z]{1,6} [a-z]{1,6})",
            sep in "(\n|\n\n| )",
        ) {
            let input = format!("{}{sep}{fence}\n{}", before.join(" "), after.join(" "));
            let out = to_sms_text(&input);
            prop_assert!(keeps_every_word(&input, &out), "{:?} -> {:?}", input, out);
        }
    }

    #[test]
    fn output_never_has_three_newlines_or_outer_whitespace() {
        let inputs = [
            "a\n\n\n\n```\n\n\n\ncode\n\n\n\n```\n\n\n\nb",
            "<div>\n\n</div>\n\n\n\n- \n\n\n- x",
            "> a\n>\n>\n>\n> b",
        ];
        for input in inputs {
            let out = to_sms_text(input);
            assert!(!out.contains("\n\n\n"), "{input:?} -> {out:?}");
            assert_eq!(out.trim(), out, "{input:?} -> {out:?}");
        }
    }
}
