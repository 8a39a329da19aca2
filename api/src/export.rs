//! 一单, the resource list: every facility of a scope with where it is, what it holds
//! and how ready it is, and every town with its days of supply, as tables a bureau
//! hands on in a spreadsheet (CSV or XLSX).
//!
//! The tables are built from the ledger in one pass under its read lock (plain values
//! copied out), then written without it: a city's workbook takes tens of milliseconds
//! to compress, which no ingest batch should wait for.
//!
//! Columns are named in Chinese with English beneath (XLSX: two header rows, frozen;
//! CSV: one header row, `中文 English`, since a second row would read as data to
//! every CSV tool). Numbers are numbers; an empty cell is a figure we do not have.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use reserve::Ledger;
use reserve::ledger::{Latest, Readiness, ShelterLatest};
use reserve::registry::{FacilityIdx, FacilityKind, ShelterSpec, TownIdx};
use rust_xlsxwriter::{Format, Workbook, XlsxError};

/// One cell of a table.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Number(f64),
    Empty,
}

impl Cell {
    fn text(s: impl Into<String>) -> Cell {
        Cell::Text(s.into())
    }

    fn number(x: Option<f64>) -> Cell {
        x.filter(|x| x.is_finite())
            .map_or(Cell::Empty, Cell::Number)
    }
}

/// A column's name in both languages.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub zh: String,
    pub en: String,
}

fn col(zh: &str, en: &str) -> Column {
    Column {
        zh: zh.to_owned(),
        en: en.to_owned(),
    }
}

/// One sheet: a kind of facility, or the towns.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The sheet's name (≤ 31 characters, as Excel requires).
    pub name: &'static str,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

/// The open alerts the list shows, by town id: (rule id, subject) of each.
pub type OpenAlerts = BTreeMap<String, Vec<(String, String)>>;

/// The resource list of `towns`: towns first, then one table per facility kind.
pub fn resource_list(
    ledger: &Ledger,
    towns: &[TownIdx],
    alerts: &OpenAlerts,
    now: DateTime<Utc>,
) -> Vec<Table> {
    let mut sheets = Sheets::new(ledger);
    for &t in towns {
        sheets.town(ledger, t, alerts);
        for &f in &ledger.registry().town(t).facilities {
            sheets.facility(ledger, f, alerts, now);
        }
    }
    sheets.into_tables()
}

struct Sheets {
    towns: Table,
    warehouses: Table,
    water_points: Table,
    power_units: Table,
    shelters: Table,
}

impl Sheets {
    fn new(ledger: &Ledger) -> Sheets {
        let registry = ledger.registry();
        let mut towns = town_columns();
        let mut warehouses = facility_columns();
        for c in &registry.categories {
            towns.push(Column {
                zh: format!("{} 保障天数", c.name),
                en: format!("{} days", c.id),
            });
            warehouses.push(Column {
                zh: format!("{}({})", c.name, c.unit),
                en: format!("{} ({})", c.id, c.unit),
            });
        }
        let mut water_points = facility_columns();
        water_points.extend([
            col("容量(升)", "Capacity (L)"),
            col("水位(升)", "Level (L)"),
            col("水泵", "Pump"),
            col("可饮用", "Potable"),
        ]);
        let mut power_units = facility_columns();
        power_units.extend([
            col("油箱容量(升)", "Fuel capacity (L)"),
            col("燃油(升)", "Fuel (L)"),
            col("电池(%)", "Battery (%)"),
            col("运行状态", "State"),
            col("可运行(小时)", "Runtime (h)"),
        ]);
        for table in [&mut water_points, &mut power_units] {
            table.extend([col("就绪", "Ready"), col("问题", "Problems")]);
        }
        let mut shelters = facility_columns();
        shelters.extend([
            col("容量(人)", "Capacity (people)"),
            col("平时用途", "Everyday use"),
            col("转换时限(小时)", "Converts within (h)"),
            col("在场人数", "Occupancy"),
            col("入住率(%)", "Occupancy (%)"),
            col("状态", "Mode"),
            col("状态起始(UTC)", "Mode since (UTC)"),
        ]);
        for table in [
            &mut warehouses,
            &mut water_points,
            &mut power_units,
            &mut shelters,
        ] {
            table.extend(status_columns());
        }
        let table = |name, columns| Table {
            name,
            columns,
            rows: Vec::new(),
        };
        Sheets {
            towns: table("街镇 Towns", towns),
            warehouses: table("仓库 Warehouses", warehouses),
            water_points: table("供水点 Water points", water_points),
            power_units: table("应急电源 Power units", power_units),
            shelters: table("避难场所 Shelters", shelters),
        }
    }

    fn town(&mut self, ledger: &Ledger, t: TownIdx, alerts: &OpenAlerts) {
        let registry = ledger.registry();
        let town = registry.town(t);
        let figures = ledger.figures(t);
        let mut row = place(ledger, t);
        row.extend([
            Cell::number(town.lat),
            Cell::number(town.lon),
            Cell::Number(town.population as f64),
            Cell::Number(figures.sheltered as f64),
            Cell::text(crate::model::Status::from(figures.status).as_str()),
            Cell::number(figures.worst_days),
            Cell::text(if figures.verified { "yes" } else { "no" }),
            Cell::Number(figures.never_reported.len() as f64),
            Cell::Number(figures.silent.len() as f64),
            Cell::text(alert_list(alerts, town.id.as_str(), None)),
        ]);
        for c in registry.category_indices() {
            let days = figures
                .categories
                .iter()
                .find(|cov| cov.category == c)
                .and_then(|cov| cov.days);
            row.push(Cell::number(days));
        }
        self.towns.rows.push(row);
    }

    fn facility(
        &mut self,
        ledger: &Ledger,
        f: FacilityIdx,
        alerts: &OpenAlerts,
        now: DateTime<Utc>,
    ) {
        let registry = ledger.registry();
        let facility = registry.facility(f);
        let figures = ledger.figures(facility.town);
        let latest = ledger.facility(f).latest.as_ref();
        let mut row = place(ledger, facility.town);
        row.extend([
            Cell::text(facility.id.as_str()),
            Cell::text(&facility.name),
            Cell::text(facility.report.as_str()),
            Cell::number(facility.lat),
            Cell::number(facility.lon),
        ]);
        let table = match (&facility.kind, latest) {
            (FacilityKind::Warehouse, latest) => {
                row.extend(registry.category_indices().map(|c| match latest {
                    Some(Latest::Stock(lines)) => {
                        Cell::number(lines.iter().find(|l| l.category == c).map(|l| l.quantity))
                    }
                    _ => Cell::Empty,
                }));
                &mut self.warehouses
            }
            (FacilityKind::WaterPoint { capacity_l }, latest) => {
                let obs = match latest {
                    Some(Latest::Water { obs, .. }) => Some(obs),
                    _ => None,
                };
                row.extend([
                    Cell::number(*capacity_l),
                    Cell::number(obs.map(|o| o.level_l)),
                    obs.map_or(Cell::Empty, |o| Cell::Text(api_id(o.pump))),
                    obs.map_or(Cell::Empty, |o| Cell::text(yes_no(o.potable))),
                ]);
                row.extend(readiness(&figures.water_points, f));
                &mut self.water_points
            }
            (
                FacilityKind::PowerUnit {
                    fuel_capacity_l,
                    burn_l_per_h,
                    ..
                },
                latest,
            ) => {
                let obs = match latest {
                    Some(Latest::Power(obs)) => Some(obs),
                    _ => None,
                };
                row.extend([
                    Cell::Number(*fuel_capacity_l),
                    Cell::number(obs.map(|o| o.fuel_l)),
                    Cell::number(obs.and_then(|o| o.battery_pct)),
                    obs.map_or(Cell::Empty, |o| Cell::Text(api_id(o.state))),
                    Cell::number(obs.map(|o| {
                        reserve::coverage::runtime_h(
                            o.fuel_l,
                            o.burn_l_per_h.unwrap_or(*burn_l_per_h),
                        )
                    })),
                ]);
                row.extend(readiness(&figures.power_units, f));
                &mut self.power_units
            }
            (FacilityKind::Shelter(spec), latest) => {
                let latest = match latest {
                    Some(Latest::Shelter(latest)) => Some(latest),
                    _ => None,
                };
                row.extend(shelter_cells(spec, latest));
                &mut self.shelters
            }
        };
        row.extend(status_cells(ledger, f, alerts, now));
        table.rows.push(row);
    }

    fn into_tables(self) -> Vec<Table> {
        vec![
            self.towns,
            self.warehouses,
            self.water_points,
            self.power_units,
            self.shelters,
        ]
    }
}

/// A shelter's own columns: what it is, and how full it is in which mode.
fn shelter_cells(spec: &ShelterSpec, latest: Option<&ShelterLatest>) -> [Cell; 7] {
    let capacity = spec.capacity as f64;
    [
        Cell::Number(capacity),
        Cell::text(spec.dual_use.as_str()),
        Cell::Number(spec.convert_within.as_secs_f64() / 3600.0),
        Cell::number(latest.map(|l| l.obs.occupancy as f64)),
        Cell::number(latest.map(|l| 100.0 * l.obs.occupancy as f64 / capacity)),
        latest.map_or(Cell::Empty, |l| Cell::text(l.obs.mode.as_str())),
        latest.map_or(Cell::Empty, |l| {
            Cell::Text(l.mode_since.to_rfc3339_opts(SecondsFormat::Secs, true))
        }),
    ]
}

/// District, cluster and town: the first columns of every table.
fn place_columns() -> Vec<Column> {
    vec![
        col("区", "District"),
        col("组团", "Cluster"),
        col("街镇编号", "Town id"),
        col("街镇", "Town"),
    ]
}

fn place(ledger: &Ledger, t: TownIdx) -> Vec<Cell> {
    let registry = ledger.registry();
    let town = registry.town(t);
    vec![
        Cell::text(&registry.districts[town.district.index()].name),
        Cell::text(&registry.clusters[town.cluster.index()].name),
        Cell::text(town.id.as_str()),
        Cell::text(&town.name),
    ]
}

fn town_columns() -> Vec<Column> {
    let mut columns = place_columns();
    columns.extend([
        col("纬度", "Latitude"),
        col("经度", "Longitude"),
        col("常住人口", "Population"),
        col("安置人数", "Sheltered"),
        col("状态", "Status"),
        col("最少保障天数", "Fewest days"),
        col("数据已核实", "Verified"),
        col("从未上报设施", "Never reported"),
        col("失联设施", "Silent"),
        col("未解除告警", "Open alerts"),
    ]);
    columns
}

fn facility_columns() -> Vec<Column> {
    let mut columns = place_columns();
    columns.extend([
        col("设施编号", "Facility id"),
        col("设施名称", "Facility"),
        // `gateway`, or `manual` for a facility counted by hand.
        col("上报方式", "Report"),
        col("纬度", "Latitude"),
        col("经度", "Longitude"),
    ]);
    columns
}

/// The last columns of every facility table.
fn status_columns() -> [Column; 5] {
    [
        col("最新读数时间(UTC)", "Last reading (UTC)"),
        col("数据龄(小时)", "Age (h)"),
        col("上报状态", "Reporting"),
        col("街镇最少保障天数", "Town fewest days"),
        col("未解除告警", "Open alerts"),
    ]
}

fn status_cells(
    ledger: &Ledger,
    f: FacilityIdx,
    alerts: &OpenAlerts,
    now: DateTime<Utc>,
) -> [Cell; 5] {
    let registry = ledger.registry();
    let facility = registry.facility(f);
    let state = ledger.facility(f);
    let town = registry.town(facility.town);
    let reporting = if state.latest.is_none() {
        "never_reported"
    } else if state.is_silent(facility.stale_after, now) {
        "silent"
    } else {
        "reporting"
    };
    [
        state.last_ts.map_or(Cell::Empty, |ts| {
            Cell::Text(ts.to_rfc3339_opts(SecondsFormat::Secs, true))
        }),
        Cell::number(
            state
                .last_ts
                .map(|ts| (now - ts).num_seconds() as f64 / 3600.0),
        ),
        Cell::text(reporting),
        Cell::number(ledger.figures(facility.town).worst_days),
        Cell::text(alert_list(
            alerts,
            town.id.as_str(),
            Some(facility.id.as_str()),
        )),
    ]
}

fn readiness(units: &[Readiness], f: FacilityIdx) -> [Cell; 2] {
    match units.iter().find(|r| r.facility == f) {
        None => [Cell::Empty, Cell::Empty],
        Some(r) => [
            Cell::text(yes_no(r.ready)),
            Cell::Text(
                r.problems
                    .iter()
                    .map(|&p| api_id(p))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ],
    }
}

/// A town's open alerts (`facility`: only those about it), as `rule:subject` words.
fn alert_list(alerts: &OpenAlerts, town: &str, facility: Option<&str>) -> String {
    alerts
        .get(town)
        .into_iter()
        .flatten()
        .filter(|(_, subject)| facility.is_none_or(|f| f == subject))
        .map(|(rule, subject)| format!("{rule}:{subject}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// A value's id as the API and the MQTT contract spell it (`pump_fault`, `standby`,
/// …): its serde name, so the list cannot drift from them.
fn api_id(value: impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The tables as one CSV: UTF-8 with a byte order mark (without one, Excel reads
/// Chinese as mojibake), each table after a line naming it and a blank line between.
/// A text cell that a spreadsheet would take for a formula is written with a leading
/// apostrophe: names come from a registry, but a list handed around must not run
/// anything when opened.
pub fn to_csv(tables: &[Table]) -> Result<Vec<u8>, csv::Error> {
    let mut out = Vec::from(*b"\xEF\xBB\xBF");
    for (i, table) in tables.iter().enumerate() {
        let mut writer = csv::WriterBuilder::new()
            .flexible(true)
            .from_writer(Vec::new());
        if i > 0 {
            writer.write_record([""])?;
        }
        writer.write_record([table.name])?;
        writer.write_record(table.columns.iter().map(|c| format!("{} {}", c.zh, c.en)))?;
        for row in &table.rows {
            writer.write_record(row.iter().map(csv_field))?;
        }
        out.extend(writer.into_inner().map_err(|e| e.into_error())?);
    }
    Ok(out)
}

fn csv_field(cell: &Cell) -> String {
    match cell {
        Cell::Empty => String::new(),
        Cell::Number(x) => x.to_string(),
        Cell::Text(s) if s.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{s}"),
        Cell::Text(s) => s.clone(),
    }
}

/// The tables as an XLSX workbook, one sheet each, header rows in bold and frozen.
pub fn to_xlsx(tables: &[Table]) -> Result<Vec<u8>, XlsxError> {
    let mut workbook = Workbook::new();
    let bold = Format::new().set_bold();
    for table in tables {
        let sheet = workbook.add_worksheet();
        sheet.set_name(table.name)?;
        for (c, column) in table.columns.iter().enumerate() {
            let c = column_index(c)?;
            sheet.write_string_with_format(0, c, &column.zh, &bold)?;
            sheet.write_string_with_format(1, c, &column.en, &bold)?;
            sheet.set_column_width(c, 14)?;
        }
        sheet.set_freeze_panes(2, 0)?;
        for (r, row) in table.rows.iter().enumerate() {
            let r = u32::try_from(r + 2).map_err(|_| XlsxError::RowColumnLimitError)?;
            for (c, cell) in row.iter().enumerate() {
                let c = column_index(c)?;
                match cell {
                    Cell::Text(s) => {
                        sheet.write_string(r, c, s)?;
                    }
                    Cell::Number(x) => {
                        sheet.write_number(r, c, *x)?;
                    }
                    Cell::Empty => {}
                }
            }
        }
    }
    workbook.save_to_buffer()
}

fn column_index(c: usize) -> Result<u16, XlsxError> {
    u16::try_from(c).map_err(|_| XlsxError::RowColumnLimitError)
}
