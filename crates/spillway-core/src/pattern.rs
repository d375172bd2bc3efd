//! Table patterns, the one matcher behind every table filter: `[source] tables` (what
//! capture publishes and emits), a sink's `tables`, and the API's `entities` /
//! `exclude_entities`.
//!
//! A pattern with a dot matches `schema.table`, one without matches the table name in
//! any schema; `*` matches any run of characters in either part (`commerce.*`,
//! `*_log`, `*`). Matching is on the schema and table names themselves, so a name that
//! holds a dot is matched correctly.

use std::fmt;
use std::str::FromStr;

/// One table pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TablePattern {
    text: String,
    /// Byte offset of the dot, if the pattern names a schema.
    dot: Option<usize>,
}

/// Text that is not a table pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPattern(pub String);

impl fmt::Display for BadPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a table pattern; write schema.table, table or schema.*",
            self.0
        )
    }
}

impl std::error::Error for BadPattern {}

impl TablePattern {
    /// Parses `schema.table`, `table` or a `*` pattern of either.
    ///
    /// # Errors
    /// [`BadPattern`] for an empty pattern, an empty part, more than one dot, or a comma.
    pub fn parse(text: &str) -> Result<TablePattern, BadPattern> {
        let bad = || BadPattern(text.to_owned());
        let dot = text.find('.');
        let (schema, table) = match dot {
            Some(i) => (text.get(..i), text.get(i + 1..)),
            None => (Some("x"), Some(text)),
        };
        match (schema, table) {
            // A comma separates patterns in every list that holds them.
            (Some(s), Some(t))
                if !s.is_empty() && !t.is_empty() && !t.contains('.') && !text.contains(',') =>
            {
                Ok(TablePattern {
                    text: text.to_owned(),
                    dot,
                })
            }
            _ => Err(bad()),
        }
    }

    /// Parses every pattern of a list.
    ///
    /// # Errors
    /// The first [`BadPattern`].
    pub fn parse_list<S: AsRef<str>>(texts: &[S]) -> Result<Vec<TablePattern>, BadPattern> {
        texts
            .iter()
            .map(|t| TablePattern::parse(t.as_ref()))
            .collect()
    }

    /// The pattern as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern names a schema (has a dot).
    #[must_use]
    pub fn has_schema(&self) -> bool {
        self.dot.is_some()
    }

    /// Whether `schema.table` matches.
    #[must_use]
    pub fn matches(&self, schema: &str, table: &str) -> bool {
        pattern_matches(&self.text, schema, table)
    }
}

impl FromStr for TablePattern {
    type Err = BadPattern;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TablePattern::parse(s)
    }
}

impl fmt::Display for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether the pattern text `pattern` matches `schema.table` (the text is taken as it is;
/// [`TablePattern::parse`] is where it is checked).
#[must_use]
pub fn pattern_matches(pattern: &str, schema: &str, table: &str) -> bool {
    match pattern.split_once('.') {
        Some((s, t)) => glob(s, schema) && glob(t, table),
        None => glob(pattern, table),
    }
}

/// Whether `schema.table` matches one of the pattern texts; an empty list matches every
/// table (the catalog's form: `[source] tables` unset means all).
#[must_use]
pub fn table_matches<S: AsRef<str>>(patterns: &[S], schema: &str, table: &str) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .any(|p| pattern_matches(p.as_ref(), schema, table))
}

/// Whether any of `patterns` matches `schema.table`.
#[must_use]
pub fn any_matches(patterns: &[TablePattern], schema: &str, table: &str) -> bool {
    patterns.iter().any(|p| p.matches(schema, table))
}

/// `*` matches any run of characters (also none); everything else matches itself.
/// Iterative, backtracking only to the last star: linear in practice, never recursive.
#[must_use]
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if t.get(ti) == Some(c) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(list: &[&str]) -> Vec<TablePattern> {
        TablePattern::parse_list(list).unwrap()
    }

    #[test]
    fn patterns_match_schema_and_table() {
        let p = pats(&["bank.holding", "commerce.*", "orders"]);
        assert!(any_matches(&p, "bank", "holding"));
        assert!(!any_matches(&p, "bank", "other"));
        assert!(any_matches(&p, "commerce", "users"));
        assert!(any_matches(&p, "public", "orders"));
        assert!(!any_matches(&p, "public", "orders_archive"));
        assert!(any_matches(&pats(&["*"]), "x", "y"));
        assert!(any_matches(&pats(&["*.*_log"]), "app", "audit_log"));
        // A dot inside a (quoted) table name is matched as part of the name.
        assert!(any_matches(&pats(&["odd"]), "my.schema", "odd"));
        assert!(!any_matches(&[], "x", "y"));
        assert!(table_matches::<&str>(&[], "x", "y"));
        assert!(table_matches(&["commerce.*"], "commerce", "y"));
        assert!(!table_matches(&["commerce.*"], "bank", "y"));
    }

    #[test]
    fn bad_patterns_are_named() {
        for bad in ["", ".", "a.", ".b", "a.b.c", "a,b"] {
            let err = TablePattern::parse(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("`{bad}` is not a table pattern; write schema.table, table or schema.*")
            );
        }
    }

    #[test]
    fn glob_matches() {
        assert!(glob("trades", "trades"));
        assert!(!glob("trades", "trade"));
        assert!(glob("public*", "public.orders"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("*_log", "audit_log"));
        assert!(glob("a*c*", "abcd"));
        assert!(!glob("a*c", "abcd"));
        // No exponential backtracking.
        let long = "a".repeat(10_000);
        assert!(!glob("*a*a*a*a*a*b", &long));
    }
}
