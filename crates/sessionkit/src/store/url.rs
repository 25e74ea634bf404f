//! Small helpers for store URLs: options that sessionkit reads from the query string and strips
//! before the URL reaches a driver (which would reject parameters it does not know).

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
