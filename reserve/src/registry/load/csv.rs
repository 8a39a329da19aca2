//! CSV tables (`towns.csv`, `facilities.csv`, `contacts.csv`) converted into the same raw
//! forms TOML entries deserialise into, so one checker serves both. Every value of a row
//! is spanned at the row's first byte, which the [`Locator`](super::Locator) turns into
//! the row's line (the header is line 1).
//!
//! Cells hold what a TOML value would: a list (`towns`, `channels`) is `a;b;c`, and a
//! table of numbers is `name=number` pairs separated by `;`: a town's `groups` is
//! `infants=420;elderly=5100`, a warehouse's `max` (the most it can hold per category,
//! in the category's unit) is `water=50000;food=20000`. An empty cell is an absent value.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::str::FromStr;

use toml::Spanned;

use super::Problems;
use super::community::RawCommunity;
use super::label;
use super::raw::{Field, RawContact, RawFacility, RawTown};

/// The rows of one table. Rows with a problem already reported (a cell that does not
/// parse, a wrong number of fields) are `broken`: they only tell which ids exist, so
/// references to them do not turn into a second error. When the header lacks a column
/// every row needs, all rows are broken.
#[derive(Debug)]
pub(super) struct Table<T> {
    pub rows: Vec<Spanned<T>>,
    pub broken: Vec<T>,
}

pub(super) const TOWN_COLUMNS: &[&str] = &[
    "id",
    "name",
    "district",
    "cluster",
    "population",
    "lat",
    "lon",
    "groups",
];
const TOWN_REQUIRED: &[&str] = &["id", "name", "district", "cluster", "population"];

pub(super) const FACILITY_COLUMNS: &[&str] = &[
    "id",
    "town",
    "kind",
    "name",
    "lat",
    "lon",
    "report_every",
    "report",
    "stale_after",
    "capacity_l",
    "fuel_capacity_l",
    "burn_l_per_h",
    "min_battery_pct",
    "max",
    "capacity",
    "dual_use",
    "convert_within",
];
const FACILITY_REQUIRED: &[&str] = &["id", "town", "kind"];

pub(super) const CONTACT_COLUMNS: &[&str] = &[
    "name",
    "email",
    "phone",
    "webhook",
    "lang",
    "towns",
    "clusters",
    "districts",
    "city",
    "channels",
];
const CONTACT_REQUIRED: &[&str] = &["name"];

pub(super) fn towns(text: &str, base: usize, problems: &mut Problems) -> Table<RawTown> {
    read_table(text, base, TOWN_COLUMNS, TOWN_REQUIRED, problems, |row| {
        let who = label(
            "town",
            row.text("id").as_ref().map(|s| s.get_ref().as_str()),
        );
        RawTown {
            id: row.text("id"),
            name: row.text("name"),
            district: row.text("district"),
            cluster: row.text("cluster"),
            population: row.parse(&who, "population", "an integer"),
            lat: row.parse(&who, "lat", "a number"),
            lon: row.parse(&who, "lon", "a number"),
            groups: row.groups(&who),
        }
    })
}

pub(super) fn facilities(text: &str, base: usize, problems: &mut Problems) -> Table<RawFacility> {
    read_table(
        text,
        base,
        FACILITY_COLUMNS,
        FACILITY_REQUIRED,
        problems,
        |row| {
            let who = label(
                "facility",
                row.text("id").as_ref().map(|s| s.get_ref().as_str()),
            );
            RawFacility {
                id: row.text("id"),
                town: row.text("town"),
                kind: row.text("kind"),
                name: row.text("name"),
                lat: row.parse(&who, "lat", "a number"),
                lon: row.parse(&who, "lon", "a number"),
                report_every: row.text("report_every"),
                report: row.text("report"),
                stale_after: row.text("stale_after"),
                capacity_l: row.parse(&who, "capacity_l", "a number"),
                fuel_capacity_l: row.parse(&who, "fuel_capacity_l", "a number"),
                burn_l_per_h: row.parse(&who, "burn_l_per_h", "a number"),
                min_battery_pct: row.parse(&who, "min_battery_pct", "a number"),
                max: row.pairs(&who, "max", "category=number, e.g. \"water=50000\""),
                capacity: row.parse(&who, "capacity", "an integer"),
                dual_use: row.text("dual_use"),
                convert_within: row.text("convert_within"),
            }
        },
    )
}

pub(super) fn contacts(text: &str, base: usize, problems: &mut Problems) -> Table<RawContact> {
    read_table(
        text,
        base,
        CONTACT_COLUMNS,
        CONTACT_REQUIRED,
        problems,
        |row| {
            let who = label(
                "contact",
                row.text("name").as_ref().map(|s| s.get_ref().as_str()),
            );
            RawContact {
                name: row.text("name"),
                email: row.text("email"),
                phone: row.text("phone"),
                webhook: row.text("webhook"),
                lang: row.text("lang"),
                towns: row.list("towns"),
                clusters: row.list("clusters"),
                districts: row.list("districts"),
                city: row.city(&who),
                channels: row.list("channels"),
            }
        },
    )
}

pub(super) const COMMUNITY_COLUMNS: &[&str] = &[
    "id",
    "town",
    "name",
    "groups",
    "water_point",
    "power_unit",
    "shelter",
];
const COMMUNITY_REQUIRED: &[&str] = &["id", "town", "name"];

/// `communities.csv`: a community's `groups` cell is `elderly_alone=40;infants=12`.
pub(super) fn communities(text: &str, base: usize, problems: &mut Problems) -> Table<RawCommunity> {
    read_table(
        text,
        base,
        COMMUNITY_COLUMNS,
        COMMUNITY_REQUIRED,
        problems,
        |row| {
            let who = label(
                "community",
                row.text("id").as_ref().map(|s| s.get_ref().as_str()),
            );
            RawCommunity {
                id: row.text("id"),
                town: row.text("town"),
                name: row.text("name"),
                groups: row.groups(&who),
                water_point: row.text("water_point"),
                power_unit: row.text("power_unit"),
                shelter: row.text("shelter"),
            }
        },
    )
}

/// One data row while it is converted: cells by column name, all spanned at the row.
struct Row<'a> {
    record: &'a ::csv::StringRecord,
    columns: &'a HashMap<&'static str, usize>,
    span: Range<usize>,
    problems: &'a mut Problems,
    /// Set when a cell did not parse (and was reported).
    broken: bool,
}

impl Row<'_> {
    /// The trimmed cell of `column`; an empty cell or a missing column is absent.
    fn cell(&self, column: &str) -> Option<&str> {
        let i = *self.columns.get(column)?;
        self.record.get(i).filter(|cell| !cell.is_empty())
    }

    fn spanned<T>(&self, value: T) -> Spanned<T> {
        Spanned::new(self.span.clone(), value)
    }

    fn text(&self, column: &str) -> Field<String> {
        self.cell(column).map(|cell| self.spanned(cell.to_owned()))
    }

    fn parse<T: FromStr>(&mut self, who: &str, column: &str, what: &str) -> Field<T> {
        let cell = self.cell(column)?;
        match cell.parse() {
            Ok(value) => Some(self.spanned(value)),
            Err(_) => {
                let message = format!("{who}: {column}: expected {what}, got {cell:?}");
                self.problems.add(self.span.start, message);
                self.broken = true;
                None
            }
        }
    }

    /// `a;b;c`, the CSV spelling of a TOML array of strings.
    fn list(&self, column: &str) -> Field<Vec<Spanned<String>>> {
        let cell = self.cell(column)?;
        let items = cell
            .split(';')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| self.spanned(item.to_owned()))
            .collect();
        Some(self.spanned(items))
    }

    /// `infants=420;elderly=5100`, the CSV spelling of `groups = { infants = 420, … }`.
    fn groups(&mut self, who: &str) -> Field<BTreeMap<String, Spanned<i64>>> {
        self.pairs(who, "groups", "name=count, e.g. \"infants=420\"")
    }

    /// `name=value;name=value`, the CSV spelling of an inline table of numbers
    /// (`shape` says what one pair looks like). A name given twice is an error, as in TOML.
    fn pairs<T: FromStr>(
        &mut self,
        who: &str,
        column: &str,
        shape: &str,
    ) -> Field<BTreeMap<String, Spanned<T>>> {
        let cell = self.cell(column)?.to_owned();
        let mut pairs = BTreeMap::new();
        for item in cell.split(';').map(str::trim).filter(|i| !i.is_empty()) {
            let parsed = item
                .split_once('=')
                .map(|(name, value)| (name.trim(), value.trim()))
                .filter(|(name, _)| !name.is_empty())
                .and_then(|(name, value)| Some((name, value.parse::<T>().ok()?)));
            let problem = match parsed {
                Some((name, _)) if pairs.contains_key(name) => {
                    format!("{who}: {column}: {name:?} appears twice")
                }
                Some((name, value)) => {
                    pairs.insert(name.to_owned(), self.spanned(value));
                    continue;
                }
                None => format!("{who}: {column}: expected {shape}, got {item:?}"),
            };
            self.problems.add(self.span.start, problem);
            self.broken = true;
        }
        Some(self.spanned(pairs))
    }

    /// `true`, `false` or empty; a spreadsheet's idea of an optional boolean.
    fn city(&mut self, who: &str) -> Field<bool> {
        match self.cell("city")? {
            "true" => Some(self.spanned(true)),
            "false" => Some(self.spanned(false)),
            other => {
                let message = format!("{who}: city: expected true, false or empty, got {other:?}");
                self.problems.add(self.span.start, message);
                self.broken = true;
                None
            }
        }
    }
}

fn read_table<T>(
    text: &str,
    base: usize,
    known: &[&'static str],
    required: &[&'static str],
    problems: &mut Problems,
    mut convert: impl FnMut(&mut Row<'_>) -> T,
) -> Table<T> {
    // Flexible: a row with the wrong number of fields is reported below but still read,
    // so its id counts and references to it are not reported too.
    let mut reader = ::csv::ReaderBuilder::new()
        .trim(::csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut table = Table {
        rows: Vec::new(),
        broken: Vec::new(),
    };
    let header = match reader.headers() {
        Ok(header) => header.clone(),
        Err(e) => {
            problems.add(base, format!("header: {}", csv_error_text(&e)));
            return table;
        }
    };
    if header.iter().all(str::is_empty) {
        let expected = known.join(",");
        problems.add(base, format!("no header row; expected columns {expected}"));
        return table;
    }
    let mut columns = HashMap::new();
    for (i, name) in header.iter().enumerate() {
        match known.iter().find(|k| **k == name) {
            Some(column) => {
                if columns.insert(*column, i).is_some() {
                    problems.add(base, format!("column {name:?} appears twice"));
                }
            }
            None => {
                let expected = known.join(", ");
                problems.add(
                    base,
                    format!("unknown column {name:?} (expected one of {expected})"),
                );
            }
        }
    }
    let mut complete = true;
    for column in required {
        if !columns.contains_key(column) {
            problems.add(base, format!("missing column {column:?}"));
            complete = false;
        }
    }
    // Rows are located by byte offset, not by csv's line count, which is off by one per
    // line in CRLF files; with CRLF the offset points at the previous line's `\n`.
    let bytes = text.as_bytes();
    let offset_of = |position: Option<&::csv::Position>| {
        let mut at = position.map_or(0, |p| p.byte() as usize);
        while matches!(bytes.get(at), Some(b'\r' | b'\n')) {
            at += 1;
        }
        base + at
    };
    for result in reader.records() {
        let record = match result {
            Ok(record) => record,
            Err(e) => {
                problems.add(offset_of(e.position()), csv_error_text(&e));
                continue;
            }
        };
        let start = offset_of(record.position());
        let mut broken = !complete;
        if record.len() != header.len() {
            let message = format!(
                "row has {} fields, the header has {}",
                record.len(),
                header.len()
            );
            problems.add(start, message);
            broken = true;
        }
        let mut row = Row {
            record: &record,
            columns: &columns,
            span: start..start + 1,
            problems,
            broken,
        };
        let value = convert(&mut row);
        if row.broken {
            table.broken.push(value);
        } else {
            table.rows.push(Spanned::new(start..start + 1, value));
        }
    }
    table
}

/// The csv crate's messages repeat the position; ours already lead with `file:line`.
fn csv_error_text(e: &::csv::Error) -> String {
    match e.kind() {
        ::csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_owned(),
        _ => e.to_string(),
    }
}
