//! Destination names from templates: the topic of a Kafka record, the
//! subject of a NATS message.
//!
//! A template may use `{prefix}` (the sink's `prefix`, default `spillway`),
//! `{db}` (the source database), `{schema}` and `{table}`. A mapping
//! (`topic_mapping` / `subject_mapping`, reference 001's `TOPIC_MAPPING`:
//! `{"trades": "transactions"}`) sends a table elsewhere: its key is a
//! table name or `schema.table` (the exact `schema.table` wins), its value
//! the destination name, itself a template. Records that belong to no table
//! (`message`, `requery_required`) go to the `control` template, which may
//! use `{prefix}` and `{db}`.

use std::collections::{BTreeMap, HashMap};

use crate::SinkError;

/// The placeholders a template may use.
const PLACEHOLDERS: [&str; 4] = ["{prefix}", "{db}", "{schema}", "{table}"];

/// Resolves destination names; caches one name per entity.
#[derive(Debug, Clone)]
pub struct Router {
    template: String,
    control: String,
    mapping: BTreeMap<String, String>,
    prefix: String,
    db: String,
    /// Replaces characters the destination does not allow in a name.
    sanitize: fn(char) -> char,
    cache: HashMap<String, String>,
}

impl Router {
    /// A router for `template` (table events) and `control` (others).
    /// `what` names the setting in error messages (`topic`, `subject`).
    pub fn new(
        what: &str,
        template: &str,
        control: &str,
        mapping: &BTreeMap<String, String>,
        prefix: &str,
        db: &str,
        sanitize: fn(char) -> char,
    ) -> Result<Router, SinkError> {
        check_template(what, template, sanitize)?;
        check_template(&format!("{what} (control)"), control, sanitize)?;
        if control.contains("{schema}") || control.contains("{table}") {
            return Err(SinkError::Fatal(format!(
                "the control {what} `{control}` cannot use {{schema}} or {{table}}: control records belong to no table"
            )));
        }
        for (k, v) in mapping {
            if k.is_empty() {
                return Err(SinkError::Fatal(format!(
                    "{what}_mapping has an empty key; use a table name or schema.table"
                )));
            }
            check_template(&format!("{what}_mapping.{k}"), v, sanitize)?;
        }
        Ok(Router {
            template: template.to_owned(),
            control: control.to_owned(),
            mapping: mapping.clone(),
            prefix: prefix.to_owned(),
            db: db.to_owned(),
            sanitize,
            cache: HashMap::new(),
        })
    }

    /// The destination name for a record about `entity` (`schema.table`),
    /// or the control destination for `None`.
    pub fn route(&mut self, entity: Option<&str>) -> &str {
        let key = entity.unwrap_or("");
        if !self.cache.contains_key(key) {
            let name = self.resolve(entity);
            self.cache.insert(key.to_owned(), name);
        }
        self.cache.get(key).map_or("", String::as_str)
    }

    fn resolve(&self, entity: Option<&str>) -> String {
        let Some(entity) = entity else {
            return self.expand(&self.control, "", "");
        };
        let (schema, table) = entity.split_once('.').unwrap_or(("", entity));
        let template = self
            .mapping
            .get(entity)
            .or_else(|| self.mapping.get(table))
            .unwrap_or(&self.template);
        self.expand(template, schema, table)
    }

    /// One pass over the template, so a value that looks like a
    /// placeholder (a table named `{table}`) is not expanded again.
    fn expand(&self, template: &str, schema: &str, table: &str) -> String {
        let mut out = String::with_capacity(template.len() + 32);
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let tail = &rest[start..];
            let value = [
                ("{prefix}", self.prefix.as_str()),
                ("{db}", self.db.as_str()),
                ("{schema}", schema),
                ("{table}", table),
            ]
            .into_iter()
            .find(|(p, _)| tail.starts_with(p));
            match value {
                Some((p, v)) => {
                    out.extend(v.chars().map(self.sanitize));
                    rest = &tail[p.len()..];
                }
                None => {
                    out.push('{');
                    rest = &tail[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// A template is non-empty, uses only the known placeholders, and its own
/// text is allowed in a destination name.
fn check_template(what: &str, template: &str, sanitize: fn(char) -> char) -> Result<(), SinkError> {
    if template.trim().is_empty() {
        return Err(SinkError::Fatal(format!("the {what} template is empty")));
    }
    let mut rest = template.to_owned();
    for p in PLACEHOLDERS {
        rest = rest.replace(p, "");
    }
    if let Some(c) = rest
        .chars()
        .find(|&c| c != '{' && c != '}' && sanitize(c) != c)
    {
        return Err(SinkError::Fatal(format!(
            "the {what} template `{template}` contains {c:?}, which a {what} name cannot contain"
        )));
    }
    if let Some(start) = rest.find('{') {
        let bad: String = rest[start..].chars().take_while(|&c| c != '}').collect();
        return Err(SinkError::Fatal(format!(
            "the {what} template `{template}` uses unknown placeholder `{bad}}}`; use {}",
            PLACEHOLDERS.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(c: char) -> char {
        c
    }

    #[test]
    fn templates_and_mapping() {
        let mapping = BTreeMap::from([
            ("trades".to_owned(), "transactions".to_owned()),
            ("audit.trades".to_owned(), "{prefix}.audit".to_owned()),
        ]);
        let mut r = Router::new(
            "subject",
            "{prefix}_{schema}_{table}",
            "{prefix}_control",
            &mapping,
            "app",
            "shop",
            keep,
        )
        .unwrap();
        assert_eq!(r.route(Some("public.users")), "app_public_users");
        assert_eq!(r.route(Some("public.trades")), "transactions");
        assert_eq!(r.route(Some("audit.trades")), "app.audit");
        assert_eq!(r.route(None), "app_control");
        let mut r = Router::new(
            "topic",
            "{db}.{schema}.{table}",
            "{prefix}.control",
            &BTreeMap::new(),
            "p",
            "shop",
            |c| if c == ' ' { '_' } else { c },
        )
        .unwrap();
        assert_eq!(r.route(Some("public.odd name")), "shop.public.odd_name");
    }

    #[test]
    fn bad_templates_are_one_line_errors() {
        let m = BTreeMap::new();
        for (t, c, want) in [
            ("{prefix}.{tabel}", "c", "{tabel}"),
            ("", "c", "empty"),
            ("{table}", "{table}", "control"),
        ] {
            let e = Router::new("topic", t, c, &m, "p", "d", keep).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
            assert!(!e.to_string().contains('\n'));
        }
        let no_space = |c: char| if c == ' ' { '_' } else { c };
        let e = Router::new("subject", "a b.{table}", "c", &m, "p", "d", no_space).unwrap_err();
        assert!(e.to_string().contains("' '"), "{e}");
        let mut r = Router::new("topic", "{schema}.{table}", "c", &m, "p", "d", keep).unwrap();
        assert_eq!(
            r.route(Some("{table}.x")),
            "{table}.x",
            "values are not expanded again"
        );
        let m = BTreeMap::from([("t".to_owned(), "{nope}".to_owned())]);
        let e = Router::new("subject", "{table}", "c", &m, "p", "d", keep).unwrap_err();
        assert!(e.to_string().contains("subject_mapping.t"), "{e}");
    }
}
