//! Quoting identifiers the pool writes into SQL (channel names, table names).

/// Quotes an identifier for SQL: `"name"` with inner quotes doubled. A dotted name is
/// quoted part by part (`schema.table` → `"schema"."table"`); parts already in double
/// quotes are kept as they are.
pub(crate) fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    for (i, part) in split_dotted(name).into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if part.len() >= 2 && part.starts_with('"') && part.ends_with('"') {
            out.push_str(part);
        } else {
            out.push('"');
            out.push_str(&part.replace('"', "\"\""));
            out.push('"');
        }
    }
    out
}

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
mod tests {
    use super::quote_ident;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("account"), "\"account\"");
        assert_eq!(quote_ident("app.account"), "\"app\".\"account\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_ident("\"My.Table\""), "\"My.Table\"");
        assert_eq!(quote_ident("s.\"T\""), "\"s\".\"T\"");
    }
}
