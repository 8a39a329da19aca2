//! Reading the Grafana files as Grafana does: the dashboard JSON model (panels, rows,
//! targets, template variables), the fields a panel's options refer to, and the
//! InfluxQL macros Grafana substitutes before it sends a raw query.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The datasource every panel must use; `grafana/provisioning/datasources/stockpile.yaml`
/// provisions it with this uid.
pub const DATASOURCE_UID: &str = "stockpile-influx";
/// The dashboard JSON model version all three dashboards are written for (Grafana 11.0).
pub const SCHEMA_VERSION: u64 = 39;
/// The datasource's `timeInterval` (the `ops` cadence). Grafana never renders
/// `$__interval` below it, and over a short range it is exactly this.
pub const MIN_INTERVAL: &str = "10s";
pub const MIN_INTERVAL_MS: &str = "10000";

/// `grafana/` at the root of the workspace.
pub fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../grafana")
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// One dashboard file.
#[derive(Debug)]
pub struct Dashboard {
    /// `city-wall.json`
    pub file: String,
    pub model: Value,
}

impl Dashboard {
    /// Every `grafana/dashboards/*.json`, by file name.
    pub fn load_all() -> Vec<Dashboard> {
        let dir = grafana_dir().join("dashboards");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|path| {
                let file = path.file_name().unwrap().to_string_lossy().into_owned();
                let model = serde_json::from_str(&read(&path))
                    .unwrap_or_else(|e| panic!("{file} is not valid JSON: {e}"));
                Dashboard { file, model }
            })
            .collect()
    }

    pub fn title(&self) -> &str {
        self.model["title"].as_str().unwrap_or("")
    }

    /// How failures name it: `Stockpile · Town (town.json)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.title(), self.file)
    }

    /// Every panel, the children of rows included (a collapsed row holds its panels).
    pub fn panels(&self) -> Vec<&Value> {
        fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
            for panel in panels.as_array().into_iter().flatten() {
                out.push(panel);
                walk(&panel["panels"], out);
            }
        }
        let mut out = Vec::new();
        walk(&self.model["panels"], &mut out);
        out
    }

    /// The template variables: `(name, query)` of those backed by a query.
    pub fn query_variables(&self) -> Vec<(String, String)> {
        self.model["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["type"] == "query")
            .map(|v| {
                // Older models store the query as a string, newer ones as an object.
                let query = v["query"]
                    .as_str()
                    .or_else(|| v["query"]["query"].as_str())
                    .unwrap_or("");
                (
                    v["name"].as_str().unwrap_or("").to_owned(),
                    query.to_owned(),
                )
            })
            .collect()
    }
}

pub fn is_row(panel: &Value) -> bool {
    panel["type"] == "row"
}

pub fn panel_title(panel: &Value) -> &str {
    panel["title"].as_str().unwrap_or("(untitled)")
}

pub fn targets(panel: &Value) -> Vec<&Value> {
    panel["targets"].as_array().into_iter().flatten().collect()
}

/// Field names a panel's configuration refers to, which its queries must therefore
/// return: the geomap's coordinate and style fields, `byName` overrides, and the
/// columns an `organize` transformation orders. Grafana calls the time column `Time`.
pub fn referenced_fields(panel: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut add = |name: Option<&str>| {
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            names.insert(if name == "Time" { "time" } else { name }.to_owned());
        }
    };
    for layer in panel["options"]["layers"].as_array().into_iter().flatten() {
        add(layer["location"]["latitude"].as_str());
        add(layer["location"]["longitude"].as_str());
        let style = &layer["config"]["style"];
        for dimension in style.as_object().into_iter().flatten() {
            add(dimension.1["field"].as_str());
        }
    }
    for over in panel["fieldConfig"]["overrides"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if over["matcher"]["id"] == "byName" {
            add(over["matcher"]["options"].as_str());
        }
    }
    for transformation in panel["transformations"].as_array().into_iter().flatten() {
        if transformation["id"] == "organize" {
            for key in ["indexByName", "excludeByName", "renameByName"] {
                for name in transformation["options"][key]
                    .as_object()
                    .into_iter()
                    .flatten()
                {
                    add(Some(name.0));
                }
            }
        }
    }
    names
}

/// What Grafana substitutes into a raw InfluxQL query, for one dashboard view.
#[derive(Debug, Clone)]
pub struct Macros {
    pub from_ms: i64,
    pub to_ms: i64,
    /// Template variables by name, with the value the view has selected.
    pub variables: BTreeMap<String, String>,
}

impl Macros {
    /// The query as Grafana would send it, or why it cannot be rendered (a macro or
    /// variable this view does not know).
    pub fn render(&self, query: &str) -> Result<String, String> {
        let (from, to) = (self.from_ms.to_string(), self.to_ms.to_string());
        // Grafana's own rendering of the time range for InfluxQL.
        let time_filter = format!("time >= {from}ms and time <= {to}ms");
        // Longest names first: `$__interval_ms` before `$__interval`.
        let mut rendered = query
            .replace("$timeFilter", &time_filter)
            .replace("$__timeFilter", &time_filter)
            .replace("$__interval_ms", MIN_INTERVAL_MS)
            .replace("$__interval", MIN_INTERVAL)
            .replace("$interval", MIN_INTERVAL)
            .replace("${__from}", &from)
            .replace("$__from", &from)
            .replace("${__to}", &to)
            .replace("$__to", &to);
        let mut names: Vec<&String> = self.variables.keys().collect();
        names.sort_by_key(|name| std::cmp::Reverse(name.len()));
        for name in names {
            let value = &self.variables[name];
            rendered = rendered
                .replace(&format!("${{{name}}}"), value)
                .replace(&format!("[[{name}]]"), value)
                .replace(&format!("${name}"), value);
        }
        // A `$` left before a name is a macro or variable nobody substituted; `$/` and
        // `$'` are regex and string ends (`/^alpha$/`).
        let bytes = rendered.as_bytes();
        for (i, _) in rendered.match_indices('$') {
            if bytes
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_' || *c == b'{')
            {
                let rest: String = rendered[i..].chars().take(24).collect();
                return Err(format!("unknown macro or template variable at {rest:?}"));
            }
        }
        Ok(rendered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_render_as_grafana_renders_them() {
        let macros = Macros {
            from_ms: 1_700_000_000_000,
            to_ms: 1_700_000_600_000,
            variables: BTreeMap::from([("town".to_owned(), "alpha".to_owned())]),
        };
        let cases = [
            (
                r#"SELECT last("x") FROM "m" WHERE "town" =~ /^$town$/ AND $timeFilter GROUP BY time($__interval)"#,
                Ok(r#"SELECT last("x") FROM "m" WHERE "town" =~ /^alpha$/ AND time >= 1700000000000ms and time <= 1700000600000ms GROUP BY time(10s)"#.to_owned()),
            ),
            (
                "SELECT $__interval_ms, ${town}, [[town]], $__from",
                Ok("SELECT 10000, alpha, alpha, 1700000000000".to_owned()),
            ),
            (
                "SELECT x FROM m WHERE cluster = '$cluster'",
                Err(r#"unknown macro or template variable at "$cluster'""#.to_owned()),
            ),
        ];
        for (query, want) in cases {
            assert_eq!(macros.render(query), want, "{query}");
        }
    }
}
