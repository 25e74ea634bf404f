//! Small helpers for store URLs: hiding the password for messages, and options that sessionkit
//! reads from the query string and strips before the URL reaches a driver (which would reject
//! parameters it does not know).

/// `url` with the password of its userinfo (`scheme://user:password@host...`) replaced by `***`,
/// for error messages and logs. URLs without a password come back unchanged.
///
/// A password may contain `/` and `@` (percent-encoding them is optional in practice), so the
/// userinfo runs up to the *last* `@` before the query, not up to the first `/`. A URL without
/// a host (`sqlite:///a@b.db`, `file:///dir`) has no userinfo. When in doubt it hides too much
/// rather than too little.
///
/// ```
/// use sessionkit::store::redact_url;
/// assert_eq!(redact_url("redis://:s3cret@h:6379/0"), "redis://:***@h:6379/0");
/// assert_eq!(redact_url("postgres://u:a/b@c@h/db"), "postgres://u:***@h/db");
/// assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    if rest.starts_with('/') {
        return url.to_owned();
    }
    let before_query = rest.split(['?', '#']).next().unwrap_or("");
    let Some(at) = before_query.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host_and_rest) = (&rest[..at], &rest[at + 1..]);
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host_and_rest}"),
        None => url.to_owned(),
    }
}

#[cfg(any(feature = "redis", feature = "postgres", feature = "mysql"))]
/// Removes the query parameters named in `names` from `url`; returns the rest of the URL and the
/// decoded values in the order of `names` (the last occurrence wins).
pub(crate) fn take_params(url: &str, names: &[&str]) -> (String, Vec<Option<String>>) {
    let mut values = vec![None; names.len()];
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), values);
    };
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match names.iter().position(|n| *n == k) {
            Some(i) => values[i] = Some(percent_decode(v)),
            None => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, values)
}

#[cfg(any(feature = "redis", feature = "postgres", feature = "mysql"))]
/// Decodes `%XX` escapes and `+` (space) of a query value; malformed escapes stay as written.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(v) = hex {
                    out.push(v);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://:secret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("postgres://u:pw@h/db?x=1"),
            "postgres://u:***@h/db?x=1"
        );
        // A password with `/` and `@` in it: everything up to the last `@` is userinfo.
        assert_eq!(
            redact_url("postgres://u:p/w@rd@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("redis://:a/b/c@h/0"), "redis://:***@h/0");
        assert_eq!(
            redact_url("redis+cluster://:pw@a:1,b:2/?prefix=x"),
            "redis+cluster://:***@a:1,b:2/?prefix=x"
        );
        // An `@` in the query is not userinfo.
        assert_eq!(
            redact_url("postgres://h/db?application_name=a@b"),
            "postgres://h/db?application_name=a@b"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite:///tmp/a@b.db"), "sqlite:///tmp/a@b.db");
        assert_eq!(redact_url("file:///srv/x:y@z"), "file:///srv/x:y@z");
        assert_eq!(redact_url("nonsense"), "nonsense");
        // (Moved from the CLI, whose `redact` is this function.)
        assert_eq!(
            redact_url("redis://:secret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("postgres://u:pw@h/db?x=1"),
            "postgres://u:***@h/db?x=1"
        );
    }

    #[cfg(any(feature = "redis", feature = "postgres", feature = "mysql"))]
    #[test]
    fn params_are_taken_and_decoded() {
        let (url, v) = take_params("redis://h:1/2?prefix=a%3Ab&x=1", &["prefix"]);
        assert_eq!(url, "redis://h:1/2?x=1");
        assert_eq!(v, vec![Some("a:b".to_owned())]);
        let (url, v) = take_params("postgres://u@h/db?schema=s&table=t", &["schema", "table"]);
        assert_eq!(url, "postgres://u@h/db");
        assert_eq!(v, vec![Some("s".to_owned()), Some("t".to_owned())]);
        assert_eq!(take_params("redis://h", &["prefix"]).1, vec![None]);
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
