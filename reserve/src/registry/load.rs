//! Loading the registry from TOML, with CSV files for the big tables
//! (docs/design.md#registry).
//!
//! The loader never opens a file (this crate does no I/O): the caller passes the main
//! text and a closure that fetches the CSV files it names. Loading works in three steps:
//! 1. the TOML document is parsed into a spanned tree, and each entry (`[[town]]`, …) is
//!    deserialised on its own into a raw form ([`raw`]) whose fields are all optional and
//!    spanned, so one bad entry does not hide the others;
//! 2. CSV rows are converted into the same raw forms ([`csv`]), spanned at their row;
//! 3. the checker resolves references, checks ranges and builds the [`Registry`].
//!
//! Every problem is collected with a byte offset. Sources are laid end to end in one
//! offset space (the [`Locator`]), so an offset alone names both file and line.
//!
//! Beyond the bureau's brief, a warehouse may declare the most it can hold of each
//! category (docs/design.md#capacity-checks), in the category's unit:
//! `max = { water = 50000, food = 20000 }` in TOML, a `max` cell `water=50000;food=20000`
//! in `facilities.csv`. Each key must be a category, each value finite and > 0, and only
//! warehouses have it (a water point's is `capacity_l`, a power unit's
//! `fuel_capacity_l`). Readings above any of these are rejected as `over_capacity` (see
//! [`crate::wire`]). `report_every` and `stale_after` are at most 365 days.

mod activation;
mod check;
mod community;
mod csv;
mod raw;
mod warning_levels;

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use self::check::Checker;
use self::raw::{
    Field, RawArea, RawCategory, RawContact, RawCsv, RawFacility, RawOverride, RawTarget, RawTown,
};
use super::Registry;

/// A named text: the loader never opens files itself (this crate does no I/O).
#[derive(Debug, Clone)]
pub struct Source {
    /// How errors name the file, e.g. `registry.toml` or a path.
    pub name: String,
    pub text: String,
}

/// One problem, located: `registry.toml:41: facility "wh-9": town: unknown town "jingshn"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct LoadError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// Every problem found, not just the first, so an operator fixes a spreadsheet in one go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct LoadErrors(pub Vec<LoadError>);

/// The top-level keys a registry may have; a config file carrying the registry inline
/// adds its own sections, which the caller names in `ignore_keys`.
pub const REGISTRY_KEYS: &[&str] = &[
    "water_category",
    "target",
    "csv",
    "district",
    "cluster",
    "category",
    "town",
    "facility",
    "contact",
    "community",
    "activation_plan",
    "warning_levels",
];

/// Loads a registry from `main`.
///
/// `ignore_keys` are top-level keys that belong to someone else (a config file's
/// `mqtt`, `store`, … sections when the registry is inline); any other key that is not a
/// registry key is an error. `read` fetches the CSV files that `[csv]` names, with the
/// path exactly as written there (relative to `main`); the [`Source::name`] it returns
/// is how errors will name that file.
pub fn load_registry(
    main: &Source,
    ignore_keys: &[&str],
    read: &mut dyn FnMut(&str) -> Result<Source, String>,
) -> Result<Registry, LoadErrors> {
    let mut locator = Locator::default();
    locator.add(&main.name, &main.text);
    let mut problems = Problems::default();

    let root = match DeTable::parse(&main.text) {
        Ok(root) => root,
        Err(e) => {
            let at = e.span().map_or(0, |s| s.start);
            problems.add(at, syntax_message(&e, &main.text));
            return Err(problems.into_errors(&locator));
        }
    };
    let mut doc = read_document(root, ignore_keys, &mut problems);
    read_csv_tables(&mut doc, &mut locator, read, &mut problems);
    doc.community_groups = community::group_names(&doc);
    let communities = community::check(&doc, &locator, &mut problems);
    let plans = activation::check(&doc, &locator, &mut problems);
    let warning_plans = warning_levels::check(&doc, &mut problems);

    let checked = Checker::new(&locator, &mut problems).check(doc);
    // Only a registry without problems is built: `Registry::build` trusts every index.
    let Some(checked) = checked.filter(|_| problems.0.is_empty()) else {
        return Err(problems.into_errors(&locator));
    };
    let registry = Registry::build(checked.parts)
        .with_warehouse_max(checked.warehouse_max)
        .with_communities(communities.unwrap_or_default())
        .with_activation_plans(plans.unwrap_or_default())
        .with_warning_plans(warning_plans);
    check::check_combined_targets(&registry, &checked.override_at, &mut problems);
    if problems.0.is_empty() {
        Ok(registry)
    } else {
        Err(problems.into_errors(&locator))
    }
}

/// Problems found so far, each at an offset of the [`Locator`]'s space.
#[derive(Debug, Default)]
struct Problems(Vec<(usize, String)>);

impl Problems {
    fn add(&mut self, at: usize, message: String) {
        self.0.push((at, message));
    }

    /// In file order, then line order; problems on one line keep the order found.
    fn into_errors(mut self, locator: &Locator) -> LoadErrors {
        self.0.sort_by_key(|(at, _)| *at);
        let errors = self.0.into_iter().map(|(at, message)| {
            let (file, line) = locator.locate(at);
            LoadError {
                file: file.to_owned(),
                line,
                message,
            }
        });
        LoadErrors(errors.collect())
    }
}

/// Maps an offset to a file and line. Sources are laid end to end: each occupies
/// `base..=base + len` (one past the end, where an end-of-file error points).
#[derive(Debug, Default)]
struct Locator {
    files: Vec<LocatedFile>,
}

#[derive(Debug)]
struct LocatedFile {
    name: String,
    base: usize,
    len: usize,
    /// Offsets (within the file) at which each line starts.
    line_starts: Vec<usize>,
}

impl Locator {
    /// Adds a source and returns its base offset.
    fn add(&mut self, name: &str, text: &str) -> usize {
        let base = self.files.last().map_or(0, |f| f.base + f.len + 1);
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        self.files.push(LocatedFile {
            name: name.to_owned(),
            base,
            len: text.len(),
            line_starts,
        });
        base
    }

    fn locate(&self, at: usize) -> (&str, usize) {
        let index = self.files.partition_point(|f| f.base <= at);
        let Some(file) = index.checked_sub(1).and_then(|i| self.files.get(i)) else {
            return ("", 1);
        };
        let within = at - file.base;
        let line = file.line_starts.partition_point(|&start| start <= within);
        (&file.name, line.max(1))
    }

    /// `registry.toml:12`, for messages that point at another place.
    fn describe(&self, at: usize) -> String {
        let (file, line) = self.locate(at);
        format!("{file}:{line}")
    }
}

/// `town "jingshan"`, or just `town` when the entry has no id to name it by.
fn label(kind: &str, id: Option<&str>) -> String {
    match id {
        Some(id) => format!("{kind} {id:?}"),
        None => kind.to_owned(),
    }
}

fn syntax_message(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim_end();
    // The parser says "duplicate key" without the key; the span holds it.
    match e.span().and_then(|s| text.get(s)) {
        Some(key) if message == "duplicate key" && !key.is_empty() => {
            format!("duplicate key {:?}", key.trim_matches(['"', '\'']))
        }
        _ => format!("syntax: {message}"),
    }
}

/// Entries of one kind as found, before checking.
#[derive(Debug)]
struct Entries<T> {
    ok: Vec<Spanned<T>>,
    /// Ids of entries that could not be read (already reported): references to them are
    /// not reported again as unknown.
    broken_ids: Vec<String>,
    /// Whether any entry of this kind exists, even a broken one.
    declared: bool,
}

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Entries {
            ok: Vec::new(),
            broken_ids: Vec::new(),
            declared: false,
        }
    }
}

impl<T> Entries<T> {
    fn extend_from_table(&mut self, table: csv::Table<T>, id_of: impl Fn(&T) -> Option<&str>) {
        self.declared |= !(table.rows.is_empty() && table.broken.is_empty());
        self.ok.extend(table.rows);
        let ids = table.broken.iter().filter_map(id_of);
        self.broken_ids.extend(ids.map(str::to_owned));
    }
}

/// Everything the TOML file and its CSV tables declare, before checking.
#[derive(Debug, Default)]
struct Document {
    water_category: Field<String>,
    target: Option<Spanned<RawTarget>>,
    overrides: Entries<RawOverride>,
    csv: Option<Spanned<RawCsv>>,
    districts: Entries<RawArea>,
    clusters: Entries<RawArea>,
    categories: Entries<RawCategory>,
    towns: Entries<RawTown>,
    facilities: Entries<RawFacility>,
    contacts: Entries<RawContact>,
    communities: Entries<community::RawCommunity>,
    activation_plans: Entries<activation::RawPlan>,
    /// `[warning_levels.<level>]`, in the order written.
    warning_levels: Vec<(
        crate::registry::WarningLevel,
        Spanned<warning_levels::RawWarningPlan>,
    )>,
    /// Every group a community names (see [`community::group_names`]).
    community_groups: Vec<String>,
}

fn read_document(
    root: Spanned<DeTable<'_>>,
    ignore_keys: &[&str],
    problems: &mut Problems,
) -> Document {
    let mut doc = Document::default();
    for (key, value) in root.into_inner() {
        let key_at = key.span().start;
        match key.get_ref().as_ref() {
            "water_category" => doc.water_category = read_one(value, "", problems),
            "target" => {
                let (target, overrides) = split_overrides(value);
                doc.target = read_one(target, "target", problems);
                if let Some(overrides) = overrides {
                    read_entries(
                        overrides,
                        "target.override",
                        None,
                        &mut doc.overrides,
                        problems,
                    );
                }
            }
            "csv" => doc.csv = read_one(value, "csv", problems),
            "district" => read_entries(value, "district", Some("id"), &mut doc.districts, problems),
            "cluster" => read_entries(value, "cluster", Some("id"), &mut doc.clusters, problems),
            "category" => {
                read_entries(value, "category", Some("id"), &mut doc.categories, problems)
            }
            "town" => read_entries(value, "town", Some("id"), &mut doc.towns, problems),
            "facility" => {
                read_entries(value, "facility", Some("id"), &mut doc.facilities, problems)
            }
            "contact" => read_entries(value, "contact", Some("name"), &mut doc.contacts, problems),
            "community" => read_entries(
                value,
                "community",
                Some("id"),
                &mut doc.communities,
                problems,
            ),
            "activation_plan" => read_entries(
                value,
                "activation_plan",
                Some("dual_use"),
                &mut doc.activation_plans,
                problems,
            ),
            "warning_levels" => doc.warning_levels = warning_levels::read(value, problems),
            other if ignore_keys.contains(&other) => {}
            other => {
                let expected = REGISTRY_KEYS.join(", ");
                problems.add(
                    key_at,
                    format!("unknown key {other:?} (expected one of {expected})"),
                );
            }
        }
    }
    doc
}

/// Takes `override` out of `[target]` so each `[[target.override]]` is read on its own.
fn split_overrides(
    value: Spanned<DeValue<'_>>,
) -> (Spanned<DeValue<'_>>, Option<Spanned<DeValue<'_>>>) {
    let span = value.span();
    match value.into_inner() {
        DeValue::Table(mut table) => {
            let overrides = table.remove("override");
            (Spanned::new(span, DeValue::Table(table)), overrides)
        }
        other => (Spanned::new(span, other), None),
    }
}

/// Deserialises one value, reporting why it does not fit.
fn read_one<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    who: &str,
    problems: &mut Problems,
) -> Option<Spanned<T>> {
    let span = value.span();
    let fields = field_spans(value.get_ref());
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(v) => Some(Spanned::new(span, v)),
        Err(e) => {
            report_de_error(&e, span, who, &fields, problems);
            None
        }
    }
}

/// Reads an array of tables entry by entry. `id_key` names the field that identifies an
/// entry in messages and, for a broken entry, in [`Entries::broken_ids`].
fn read_entries<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    kind: &str,
    id_key: Option<&str>,
    out: &mut Entries<T>,
    problems: &mut Problems,
) {
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        problems.add(
            span.start,
            format!("{kind}: expected an array of tables ([[{kind}]])"),
        );
        return;
    };
    out.declared |= !items.is_empty();
    for item in items {
        let span = item.span();
        let Some(table) = item.get_ref().as_table() else {
            problems.add(span.start, format!("{kind}: expected a table"));
            continue;
        };
        let id = id_key
            .and_then(|k| table.get(k))
            .and_then(|v| v.get_ref().as_str())
            .map(str::to_owned);
        let fields = field_spans(item.get_ref());
        match T::deserialize(ValueDeserializer::from(item)) {
            Ok(entry) => out.ok.push(Spanned::new(span, entry)),
            Err(e) => {
                report_de_error(&e, span, &label(kind, id.as_deref()), &fields, problems);
                out.broken_ids.extend(id);
            }
        }
    }
}

/// Each key of a table with the span from its key to the end of its value, so an error
/// inside a value can be traced back to the field it belongs to.
fn field_spans(value: &DeValue<'_>) -> Vec<(String, Range<usize>)> {
    value.as_table().map_or_else(Vec::new, |table| {
        table
            .iter()
            .map(|(k, v)| (k.get_ref().to_string(), k.span().start..v.span().end))
            .collect()
    })
}

fn report_de_error(
    e: &toml::de::Error,
    entry: Range<usize>,
    who: &str,
    fields: &[(String, Range<usize>)],
    problems: &mut Problems,
) {
    let at = e.span().map_or(entry.start, |s| s.start);
    let message = plain_de_message(e.message());
    let field = fields
        .iter()
        .find(|(_, span)| span.contains(&at))
        .map(|(name, _)| name);
    let text = match field {
        // An unknown field's message already names it.
        Some(field) if !message.starts_with("unknown field") => format!("{field}: {message}"),
        _ => message,
    };
    problems.add(
        at,
        if who.is_empty() {
            text
        } else {
            format!("{who}: {text}")
        },
    );
}

/// serde speaks Rust (`expected i64`); operators read TOML.
fn plain_de_message(message: &str) -> String {
    message
        .trim_end()
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number")
}

fn read_csv_tables(
    doc: &mut Document,
    locator: &mut Locator,
    read: &mut dyn FnMut(&str) -> Result<Source, String>,
    problems: &mut Problems,
) {
    let Some(csv) = doc.csv.take() else {
        return;
    };
    let csv = csv.into_inner();
    let mut fetch = |field: &str, path: &Field<String>, problems: &mut Problems| {
        let path = path.as_ref()?;
        match read(path.get_ref()) {
            Ok(source) => {
                let base = locator.add(&source.name, &source.text);
                Some((source, base))
            }
            Err(e) => {
                let message = format!("csv: {field}: cannot read {:?}: {e}", path.get_ref());
                problems.add(path.span().start, message);
                None
            }
        }
    };
    if let Some((source, base)) = fetch("towns", &csv.towns, problems) {
        let table = csv::towns(&source.text, base, problems);
        doc.towns.extend_from_table(table, |t| field_str(&t.id));
    }
    if let Some((source, base)) = fetch("facilities", &csv.facilities, problems) {
        let table = csv::facilities(&source.text, base, problems);
        doc.facilities
            .extend_from_table(table, |f| field_str(&f.id));
    }
    if let Some((source, base)) = fetch("contacts", &csv.contacts, problems) {
        let table = csv::contacts(&source.text, base, problems);
        doc.contacts.extend_from_table(table, |_| None);
    }
    if let Some((source, base)) = fetch("communities", &csv.communities, problems) {
        let table = csv::communities(&source.text, base, problems);
        doc.communities
            .extend_from_table(table, |c| field_str(&c.id));
    }
}

fn field_str(field: &Field<String>) -> Option<&str> {
    field.as_ref().map(|f| f.get_ref().as_str())
}
