//! `STOCKPILE__SECTION__KEY` environment overrides, and where a problem comes from.
//!
//! An override is patched into the parsed document before deserialisation. Its value is
//! read as a TOML value when it is one (`true`, `42`, `["a", "b"]`, `"quoted"`) and as a
//! string otherwise (`mqtt://host:1883`, `4h`). Every patched value is spanned at an
//! offset past the end of the file text, one per variable, so [`Origins`] can tell a
//! problem with it apart from a problem with a line of the file.

use std::borrow::Cow;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{CONFIG_SECTIONS, ConfigError, Problem};

/// Environment variables with this prefix override config fields.
pub const ENV_PREFIX: &str = "STOCKPILE__";

/// The `STOCKPILE__*` variables of the environment, sorted by name so that problems
/// always come out in the same order.
#[derive(Debug)]
pub(super) struct Overrides {
    vars: Vec<(String, String)>,
}

impl Overrides {
    pub(super) fn from_env(env: &[(String, String)]) -> Self {
        let mut vars: Vec<(String, String)> = env
            .iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .cloned()
            .collect();
        vars.sort();
        Overrides { vars }
    }

    /// Patches every override into `root`. `text_len` is the file's length: override
    /// number `i` is spanned at `text_len + 1 + i`.
    pub(super) fn apply<'a>(
        &'a self,
        root: &mut DeTable<'a>,
        text_len: usize,
        problems: &mut Vec<Problem>,
    ) {
        for (i, (name, value)) in self.vars.iter().enumerate() {
            let at = text_len + 1 + i;
            let path: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_lowercase)
                .collect();
            if let Err(message) = check_path(&path) {
                problems.push((at, message));
                continue;
            }
            let value = match DeValue::parse(value) {
                Ok(parsed) => parsed.into_inner(),
                Err(_) => DeValue::String(Cow::Borrowed(value.as_str())),
            };
            if let Err(message) = patch(root, &path, respan(value, at..at + 1)) {
                problems.push((at, message));
            }
        }
    }
}

fn check_path(path: &[String]) -> Result<(), String> {
    let sections = CONFIG_SECTIONS.join(", ");
    match path {
        [key] if key == "registry" => Ok(()),
        [section, rest @ ..] if CONFIG_SECTIONS.contains(&section.as_str()) => {
            if rest.is_empty() || rest.iter().any(String::is_empty) {
                Err(format!(
                    "expected {ENV_PREFIX}{}__KEY",
                    section.to_uppercase()
                ))
            } else {
                Ok(())
            }
        }
        _ => Err(format!(
            "not a config field: the environment can set registry and the fields of {sections}"
        )),
    }
}

/// Sets `path` in `root` to `value`, creating the tables on the way.
fn patch<'a>(
    root: &mut DeTable<'a>,
    path: &[String],
    value: Spanned<DeValue<'a>>,
) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let span = value.span();
    let mut table = root;
    let mut walked = Vec::new();
    for key in parents {
        walked.push(key.as_str());
        let entry = table
            .entry(Spanned::new(span.clone(), Cow::Owned(key.clone())))
            .or_insert_with(|| Spanned::new(span.clone(), DeValue::Table(DeTable::new())));
        table = match entry.get_mut() {
            DeValue::Table(t) => t,
            _ => {
                return Err(format!(
                    "{} is not a table in the config file",
                    walked.join(".")
                ));
            }
        };
    }
    let key = Spanned::new(span, Cow::Owned(last.clone()));
    // Remove first: an insert would keep the old key, spanned in the file.
    table.remove(last.as_str());
    table.insert(key, value);
    Ok(())
}

/// Gives a parsed override, and everything inside it, the override's own span.
fn respan(value: DeValue<'_>, span: Range<usize>) -> Spanned<DeValue<'_>> {
    let value = match value {
        DeValue::Array(items) => DeValue::Array(
            items
                .into_iter()
                .map(|item| respan(item.into_inner(), span.clone()))
                .collect(),
        ),
        DeValue::Table(table) => DeValue::Table(
            table
                .into_iter()
                .map(|(k, v)| {
                    let key = Spanned::new(span.clone(), k.into_inner());
                    (key, respan(v.into_inner(), span.clone()))
                })
                .collect(),
        ),
        other => other,
    };
    Spanned::new(span, value)
}

/// Turns an offset into `file:line`, or into `env NAME` for an override.
#[derive(Debug)]
pub(super) struct Origins {
    file: String,
    line_starts: Vec<usize>,
    text_len: usize,
    env_names: Vec<String>,
}

impl Origins {
    pub(super) fn new(file: &str, text: &str, overrides: &Overrides) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Origins {
            file: file.to_owned(),
            line_starts,
            text_len: text.len(),
            env_names: overrides.vars.iter().map(|(n, _)| n.clone()).collect(),
        }
    }

    pub(super) fn error(&self, at: usize, message: String) -> ConfigError {
        if at > self.text_len {
            let name = self
                .env_names
                .get(at - self.text_len - 1)
                .map_or("", String::as_str);
            // A number where a string is wanted: the value parsed as TOML.
            let hint = if message.contains("invalid type") && message.contains("expected a string")
            {
                "; quote the value to pass it as a string, e.g. '\"123\"'"
            } else {
                ""
            };
            return ConfigError {
                origin: format!("env {name}"),
                message: format!("{message}{hint}"),
            };
        }
        let line = self
            .line_starts
            .partition_point(|&start| start <= at)
            .max(1);
        ConfigError {
            origin: format!("{}:{line}", self.file),
            message,
        }
    }
}
