//! The little of HTTP Structured Field Values (RFC 9651) the DBSC headers need: reading an
//! `sf-string` item (its parameters ignored, as the draft says) and writing strings.

/// The `sf-string` at the start of a header value; parameters after it are ignored. `None`
/// for anything else (a bare token, a bad escape, a missing closing quote, non-ASCII).
pub(crate) fn string_item(value: &[u8]) -> Option<String> {
    let value = trim(value);
    let rest = value.strip_prefix(b"\"")?;
    let mut out = String::with_capacity(rest.len());
    let mut bytes = rest.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(&e @ (b'"' | b'\\')) => out.push(e as char),
                _ => return None,
            },
            b'"' => {
                // What may follow: nothing, or parameters (`;name=value`), which are ignored.
                let tail = trim(bytes.as_slice());
                return (tail.is_empty() || tail.starts_with(b";")).then_some(out);
            }
            0x20..=0x7e => out.push(b as char),
            _ => return None,
        }
    }
    None
}

/// `s` as an `sf-string` (quotes, with `"` and `\` escaped). `s` must be printable ASCII,
/// which every value sessionkit writes is.
pub(crate) fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_read_back_what_is_written() {
        for s in ["", "abc", "a\"b\\c", "eyJ.x-y_z"] {
            assert_eq!(string_item(string(s).as_bytes()).as_deref(), Some(s));
        }
    }

    #[test]
    fn parameters_are_ignored_and_junk_is_refused() {
        assert_eq!(string_item(b" \"id\";x=1").as_deref(), Some("id"));
        for bad in [&b"id"[..], b"\"open", b"\"a\\n\"", b"\"a\" b", b"\"\xff\""] {
            assert_eq!(string_item(bad), None, "{bad:?}");
        }
    }
}
