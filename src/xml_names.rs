//! XML 1.0 (fifth edition) character classes, shared by the request body's XML reader and the
//! XML renderer so that both agree on what a name is. Pure; `:` is never part of a name here
//! (namespace prefixes are neither read nor produced).

/// XML 1.0 `Char`: what a document may carry at all.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `NameStartChar`, minus `:`.
pub fn is_name_start_char(c: char) -> bool {
    matches!(c,
        'a'..='z' | 'A'..='Z' | '_'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

/// `NameChar`, minus `:`.
pub fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c,
            '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// A `Name` without `:` (a namespace `NCName`).
pub fn is_unprefixed_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(is_name_start_char) && chars.all(is_name_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_xml_1_0() {
        assert!(is_unprefixed_name("upload"));
        assert!(is_unprefixed_name("_a-b.c9"));
        assert!(is_unprefixed_name("émission"));
        assert!(!is_unprefixed_name(""));
        assert!(!is_unprefixed_name("9a"));
        assert!(!is_unprefixed_name("a:b"));
        assert!(!is_unprefixed_name("-a"));
        assert!(!is_xml_char('\u{0}'));
        assert!(is_xml_char('\t'));
    }
}
