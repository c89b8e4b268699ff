//! Where a key is in the configuration text, so that every problem `check` reports carries its
//! line (SPEC §5). toml_edit keeps the spans of a parsed document; this walks a dotted key
//! (`server.threads`, `auth.providers[1].issuer`) down to the key's own span.

use toml_edit::{ImDocument, Item, Table};

/// The 1-based line of byte `offset` in `text`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line of `key` in `text`, or of the nearest enclosing table present in the file (a
/// defaulted key has no line of its own); `None` when not even its section is written.
pub(super) fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let doc = ImDocument::parse(text).ok()?;
    let mut table: &Table = doc.as_table();
    let mut best: Option<usize> = None;
    for segment in key.split('.') {
        let (name, index) = split_index(segment);
        let Some((found_key, item)) = table.get_key_value(name) else {
            break;
        };
        let item = match (index, item) {
            (Some(i), Item::ArrayOfTables(array)) => match array.get(i) {
                Some(t) => {
                    best = t.span().map(|s| s.start).or(best);
                    table = t;
                    continue;
                }
                None => break,
            },
            (_, item) => item,
        };
        best = found_key
            .span()
            .or_else(|| item.span())
            .map(|s| s.start)
            .or(best);
        match item {
            Item::Table(t) => {
                best = t.span().map(|s| s.start).or(best);
                table = t;
            }
            // A value (inline tables included): its keys are on its line.
            _ => break,
        }
    }
    best.map(|offset| line_of(text, offset))
}

/// `providers[1]` -> (`providers`, Some(1)); `threads` -> (`threads`, None).
fn split_index(segment: &str) -> (&str, Option<usize>) {
    match segment.strip_suffix(']').and_then(|s| s.split_once('[')) {
        Some((name, index)) => (name, index.parse().ok()),
        None => (segment, None),
    }
}

/// The dotted key for a syntax error at `line`, read from the text itself: the last table
/// header above it and the key written on that line (the document did not parse, so there are
/// no spans to walk).
pub(super) fn key_at_line(text: &str, line: usize) -> Option<String> {
    let mut section = String::new();
    for (n, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if n + 1 == line {
            if l.starts_with('[') {
                // A broken table header: name the table it tried to open.
                let header = l
                    .trim_start_matches('[')
                    .split(']')
                    .next()
                    .unwrap_or_default();
                let header = header.trim();
                return (!header.is_empty()).then(|| header.to_owned());
            }
            let key = l.split_once('=').map(|(k, _)| k.trim().trim_matches('"'));
            return match key {
                Some(k) if !k.is_empty() && !k.starts_with('[') => Some(if section.is_empty() {
                    k.to_owned()
                } else {
                    format!("{section}.{k}")
                }),
                _ if !section.is_empty() => Some(section),
                _ => None,
            };
        }
        if l.starts_with('[') {
            section = l
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# comment\n[server]\nthreads = 2\n\n[api]\npath_prefix = \"/v1\"\n\n[[auth.providers]]\nname = \"a\"\n[[auth.providers]]\nname = \"b\"\nissuer = \"x\"\n";

    #[test]
    fn keys_are_found_on_their_own_line() {
        assert_eq!(line_of_key(TEXT, "server.threads"), Some(3));
        assert_eq!(line_of_key(TEXT, "api.path_prefix"), Some(6));
        assert_eq!(line_of_key(TEXT, "auth.providers[1].issuer"), Some(12));
        assert_eq!(line_of_key(TEXT, "auth.providers[0].name"), Some(9));
    }

    #[test]
    fn an_absent_key_points_at_its_section() {
        assert_eq!(line_of_key(TEXT, "server.listen"), Some(2));
        assert_eq!(line_of_key(TEXT, "observability.log_format"), None);
    }

    #[test]
    fn syntax_errors_are_named_from_the_text() {
        assert_eq!(key_at_line(TEXT, 3).as_deref(), Some("server.threads"));
        assert_eq!(key_at_line("a = 1\n", 1).as_deref(), Some("a"));
        assert_eq!(key_at_line("[server]\n!!\n", 2).as_deref(), Some("server"));
    }
}
