//! Names the pool writes into SQL (table names, channel names), made so that no input
//! can end the identifier: each is quoted, a part given already quoted is checked
//! rather than trusted, and what PostgreSQL cannot take (a NUL, an empty name, more than
//! 63 bytes, which the server would cut down to some other name) is refused before
//! anything is sent.

/// The longest identifier PostgreSQL keeps as given (`NAMEDATALEN - 1` bytes); longer
/// ones are truncated by the server, to what may be another object's name.
const MAX_IDENT_BYTES: usize = 63;

/// A possibly schema-qualified table name (`table`, `schema.table`, `"My.Table"`), quoted
/// part by part. A part in double quotes is taken as a quoted identifier (`"a""b"` is
/// `a"b`) and must be one; any other part is the name exactly (case and every character
/// kept). `Err` says what is wrong with the name.
pub(crate) fn table_name(name: &str) -> Result<String, String> {
    let mut out = String::with_capacity(name.len() + 2);
    for (i, part) in split_dotted(name).into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        let ident = if part.starts_with('"') {
            unquote(part)?
        } else {
            part.to_owned()
        };
        out.push_str(&quote(&ident)?);
    }
    Ok(out)
}

/// A notification channel, exactly as `pg_notify` names it: the whole text is the name.
pub(crate) fn channel_name(name: &str) -> Result<String, String> {
    quote(name)
}

/// `"name"` with inner quotes doubled, or why the server cannot take `name`.
fn quote(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("the name is empty".to_owned());
    }
    if name.contains('\0') {
        return Err("the name contains a NUL character, which PostgreSQL cannot store".to_owned());
    }
    if name.len() > MAX_IDENT_BYTES {
        return Err(format!(
            "the name is {} bytes long; PostgreSQL keeps {MAX_IDENT_BYTES} and would cut it down to another name",
            name.len()
        ));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// The identifier a double-quoted part stands for, if it is one: it must end with the
/// closing quote, and quotes inside must be doubled.
fn unquote(part: &str) -> Result<String, String> {
    let invalid = || {
        format!(
            "{part:.40?} starts with a double quote but is not one quoted identifier (a closing quote, and inner quotes doubled)"
        )
    };
    let inner = part
        .strip_prefix('"')
        .and_then(|p| p.strip_suffix('"'))
        .ok_or_else(invalid)?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '"' && chars.next() != Some('"') {
            return Err(invalid());
        }
        out.push(c);
    }
    Ok(out)
}

/// Splits on the dots outside double quotes.
fn split_dotted(name: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    for (i, c) in name.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            '.' if !in_quotes => {
                parts.push(&name[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&name[start..]);
    parts
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{channel_name, table_name};

    #[test]
    fn quotes_table_names() {
        assert_eq!(table_name("account").unwrap(), "\"account\"");
        assert_eq!(table_name("app.account").unwrap(), "\"app\".\"account\"");
        assert_eq!(table_name("we\"ird").unwrap(), "\"we\"\"ird\"");
        assert_eq!(table_name("\"My.Table\"").unwrap(), "\"My.Table\"");
        assert_eq!(table_name("s.\"T\"").unwrap(), "\"s\".\"T\"");
        assert_eq!(table_name("\"a\"\"b\"").unwrap(), "\"a\"\"b\"");
    }

    #[test]
    fn refuses_what_could_end_the_identifier() {
        for bad in [
            "\"t\" IN ACCESS SHARE MODE; DROP TABLE victim; --\"",
            "\"t\"; DROP TABLE victim; --\"",
            "\"open",
            "\"a\" \"b\"",
            "",
            "a..b",
            "t\0x",
        ] {
            assert!(table_name(bad).is_err(), "{bad:?}");
        }
        assert!(table_name(&"x".repeat(64)).is_err());
        assert!(table_name(&"x".repeat(63)).is_ok());
        // Anything else is a name, quoted whole.
        assert_eq!(
            table_name("t; DROP TABLE victim").unwrap(),
            "\"t; DROP TABLE victim\""
        );
    }

    #[test]
    fn channels_are_names_verbatim() {
        assert_eq!(channel_name("Events.Mixed").unwrap(), "\"Events.Mixed\"");
        assert_eq!(channel_name("\"q\"").unwrap(), "\"\"\"q\"\"\"");
        assert!(channel_name("").is_err());
        assert!(channel_name("c\0").is_err());
    }
}
