//! The `tables` and `operations` filters of a sink (SPEC §6, reference 001:
//! `{"trades": ["insert","update"]}`).
//!
//! A `tables` key is a pattern: with a dot it matches `schema.table`,
//! without one it matches the table name in any schema; `*` matches any run
//! of characters. The value lists the operations kept for matching tables
//! (empty: all). `operations` restricts change events of every table.

use std::collections::BTreeMap;

use crate::event::EventHead;
use crate::runtime::SinkError;

const OPERATIONS: [&str; 5] = ["insert", "update", "delete", "truncate", "read"];

/// Validated filters.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    tables: Option<Vec<(String, Vec<String>)>>,
    operations: Option<Vec<String>>,
}

fn check_ops(ops: &[String], what: &str) -> Result<(), SinkError> {
    for op in ops {
        if !OPERATIONS.contains(&op.as_str()) {
            return Err(SinkError::Fatal(format!(
                "unknown operation {op:?} in {what}; use insert, update, delete, truncate or read"
            )));
        }
    }
    Ok(())
}

impl Filter {
    pub(crate) fn new(
        tables: Option<&BTreeMap<String, Vec<String>>>,
        operations: Option<&Vec<String>>,
    ) -> Result<Filter, SinkError> {
        if let Some(ops) = operations {
            check_ops(ops, "operations")?;
        }
        let tables = match tables {
            None => None,
            Some(map) => {
                let mut out = Vec::with_capacity(map.len());
                for (pattern, ops) in map {
                    if pattern.is_empty() {
                        return Err(SinkError::Fatal(
                            "empty table pattern in tables; use a table name, schema.table or a * pattern".into(),
                        ));
                    }
                    check_ops(ops, &format!("tables.{pattern}"))?;
                    out.push((pattern.clone(), ops.clone()));
                }
                Some(out)
            }
        };
        Ok(Filter {
            tables,
            operations: operations.cloned(),
        })
    }

    /// Whether the event is delivered (see the crate docs for the rules).
    pub(crate) fn accepts(&self, head: &EventHead) -> bool {
        match head.kind.as_str() {
            "change" => {
                let op = head.operation.as_deref().unwrap_or("");
                if let Some(ops) = &self.operations {
                    if !ops.iter().any(|o| o == op) {
                        return false;
                    }
                }
                match &self.tables {
                    None => true,
                    Some(tables) => tables.iter().any(|(pattern, ops)| {
                        matches_table(pattern, head)
                            && (ops.is_empty() || ops.iter().any(|o| o == op))
                    }),
                }
            }
            "schema_change" => match &self.tables {
                None => true,
                Some(tables) => tables.iter().any(|(p, _)| matches_table(p, head)),
            },
            "message" => self.tables.is_none(),
            "requery_required" => true,
            // Heartbeats never reach the log; unknown kinds are not ours.
            _ => false,
        }
    }
}

fn matches_table(pattern: &str, head: &EventHead) -> bool {
    let subject = if pattern.contains('.') {
        head.entity.as_deref()
    } else {
        head.table.as_deref().or_else(|| {
            head.entity
                .as_deref()
                .and_then(|e| e.split_once('.').map(|(_, t)| t))
        })
    };
    subject.is_some_and(|s| glob(pattern.as_bytes(), s.as_bytes()))
}

/// `*`-only glob match, iterative with backtracking to the last star.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(c) if text.get(t) == Some(c) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches() {
        assert!(glob(b"trades", b"trades"));
        assert!(!glob(b"trades", b"trade"));
        assert!(glob(b"public.*", b"public.orders"));
        assert!(glob(b"*", b""));
        assert!(glob(b"a*b*c", b"aXXbYYc"));
        assert!(!glob(b"a*b*c", b"aXXbYY"));
        assert!(glob(b"*_log", b"audit_log"));
    }
}
