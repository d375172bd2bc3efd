//! Pretty printing of change events for `spillway tail` and `spillway demo`.

use serde_json::Value;

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";

fn colour(op: &str) -> &'static str {
    match op {
        "insert" => "\x1b[32m",
        "update" => "\x1b[33m",
        "delete" => "\x1b[31m",
        "truncate" => "\x1b[35m",
        _ => "\x1b[36m",
    }
}

fn compact(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// One event as a human-readable line (two for updates), coloured when `colour` is set.
pub(crate) fn pretty(line: &str, use_colour: bool) -> String {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return line.to_string();
    };
    let (c, r, d) = if use_colour {
        ("", RESET, DIM)
    } else {
        ("", "", "")
    };
    let _ = c;
    let kind = v["type"].as_str().unwrap_or("?");
    let lsn = v["lsn"]
        .as_u64()
        .map(|l| l.to_string())
        .unwrap_or_else(|| "-".into());
    match kind {
        "change" => {
            let op = v["operation"].as_str().unwrap_or("?");
            let col = if use_colour { colour(op) } else { "" };
            let entity = v["entity"].as_str().unwrap_or("?");
            let mut s = format!(
                "{d}#{lsn:<6}{r} {col}{op:<8}{r} {entity} {d}{}{r}",
                compact(&v["entity_id"])
            );
            match op {
                "insert" => s.push_str(&format!("\n         new {}", compact(&v["new_data"]))),
                "update" => {
                    if !v["old_data"].is_null() {
                        s.push_str(&format!("\n         old {}", compact(&v["old_data"])));
                    }
                    s.push_str(&format!("\n         new {}", compact(&v["new_data"])));
                }
                "delete" => s.push_str(&format!("\n         old {}", compact(&v["old_data"]))),
                _ => {}
            }
            s
        }
        "schema_change" => {
            let col = if use_colour { colour("schema") } else { "" };
            let cols: Vec<String> = v["columns"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| {
                            format!(
                                "{}:{}{}",
                                c["name"].as_str().unwrap_or("?"),
                                c["type"].as_str().unwrap_or("?"),
                                if c["key"].as_bool() == Some(true) {
                                    "*"
                                } else {
                                    ""
                                }
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "{d}#{lsn:<6}{r} {col}schema  {r} {} ({})",
                v["entity"].as_str().unwrap_or("?"),
                cols.join(", ")
            )
        }
        "heartbeat" => format!(
            "{d}♥ heartbeat, current lsn {}{r}",
            compact(&v["current_lsn"])
        ),
        "requery_required" => format!(
            "requery required: lsn {} is no longer retained, oldest is {}",
            compact(&v["requested_lsn"]),
            compact(&v["oldest_lsn"])
        ),
        other => format!("{d}#{lsn:<6}{r} {other} {}", compact(&v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_an_update_without_colour() {
        let s = pretty(
            r#"{"type":"change","lsn":3,"operation":"update","entity":"bank.holding","entity_id":{"holding_id":1},"old_data":{"q":1},"new_data":{"q":2}}"#,
            false,
        );
        assert!(s.contains("#3"));
        assert!(s.contains("update"));
        assert!(s.contains("old {\"q\":1}"));
        assert!(s.contains("new {\"q\":2}"));
        assert!(!s.contains('\x1b'));
        assert_eq!(pretty("not json", true), "not json");
    }
}
