//! The resource list (一单): CSV and XLSX read back and checked against the API.

use std::collections::BTreeMap;
use std::io::Cursor;

use calamine::{Data, Reader, Xlsx};
use reserve::reading::ShelterMode;
use serde_json::Value;

use crate::helpers::{AppOptions, OFFICER, TestApp, VIEWER, spawn_app, spawn_app_with};

const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// GETs an export as bytes; asserts 200 and the content type.
async fn download(app: &TestApp, query: &str, content_type: &str) -> Vec<u8> {
    let response = app
        .client
        .get(format!("{}/api/v1/export/resources?{query}", app.address))
        .bearer_auth(VIEWER)
        .send()
        .await
        .expect("request reaches the API");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    assert_eq!(status, 200, "{query}: {}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], content_type, "{query}");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"stockpile-resources-"),
        "{disposition}"
    );
    body
}

/// A sheet as rows of cells; the first two rows are the Chinese and English headers.
type Sheet = Vec<Vec<Data>>;

fn sheets(bytes: Vec<u8>) -> BTreeMap<String, Sheet> {
    let mut workbook: Xlsx<_> = Xlsx::new(Cursor::new(bytes)).expect("a workbook calamine reads");
    let names = workbook.sheet_names();
    names
        .into_iter()
        .map(|name| {
            let range = workbook.worksheet_range(&name).expect("sheet");
            let rows = range.rows().map(<[Data]>::to_vec).collect();
            (name, rows)
        })
        .collect()
}

/// The cell of `row` under the English header `en`.
fn cell<'a>(sheet: &'a Sheet, row: &'a [Data], en: &str) -> &'a Data {
    let c = sheet[1]
        .iter()
        .position(|h| *h == en)
        .unwrap_or_else(|| panic!("no column {en:?} in {:?}", sheet[1]));
    row.get(c).unwrap_or(&Data::Empty)
}

/// The data row whose column `en` is `value`.
fn row<'a>(sheet: &'a Sheet, en: &str, value: &str) -> &'a [Data] {
    sheet[2..]
        .iter()
        .find(|r| *cell(sheet, r, en) == value)
        .unwrap_or_else(|| panic!("no row with {en} = {value}"))
}

fn number(d: &Data) -> f64 {
    match d {
        Data::Float(x) => *x,
        Data::Int(x) => *x as f64,
        other => panic!("not a number cell: {other:?}"),
    }
}

fn close(got: f64, want: &Value) {
    let want = want
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {want}"));
    assert!((got - want).abs() < 1e-6, "{got} != {want}");
}

#[tokio::test]
async fn the_city_workbook_has_a_sheet_per_kind_with_the_figures_the_api_shows() {
    let app = spawn_app().await;
    app.seed();
    let book = sheets(download(&app, "format=xlsx", XLSX).await);
    let names: Vec<&str> = book.keys().map(String::as_str).collect();
    for want in [
        "街镇 Towns",
        "仓库 Warehouses",
        "供水点 Water points",
        "应急电源 Power units",
        "避难场所 Shelters",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }

    // Towns: every town of the API, with its figures.
    let towns = &book["街镇 Towns"];
    assert_eq!(towns[0][0].to_string(), "区");
    assert_eq!(towns[1][0].to_string(), "District");
    let list = app.get_ok("/api/v1/towns").await;
    let api_towns = list["towns"].as_array().unwrap();
    assert_eq!(towns.len() - 2, api_towns.len());
    for t in api_towns {
        let id = t["id"].as_str().unwrap();
        let r = row(towns, "Town id", id);
        assert_eq!(
            cell(towns, r, "Town").to_string(),
            t["name"].as_str().unwrap()
        );
        assert_eq!(
            cell(towns, r, "Status").to_string(),
            t["status"].as_str().unwrap()
        );
        match &t["worst_days"] {
            Value::Null => assert_eq!(cell(towns, r, "Fewest days"), &Data::Empty, "{id}"),
            days => close(number(cell(towns, r, "Fewest days")), days),
        }
    }
    let jingshan = row(towns, "Town id", "jingshan");
    assert_eq!(number(cell(towns, jingshan, "Population")), 1000.0);
    assert_eq!(cell(towns, jingshan, "District").to_string(), "东城区");
    assert_eq!(cell(towns, jingshan, "Cluster").to_string(), "东城北组团");
    close(
        number(cell(towns, jingshan, "water days")),
        &Value::from(2.0),
    );

    // Warehouses: the latest stock of each, as GET /facilities/{id} has it.
    let warehouses = &book["仓库 Warehouses"];
    for id in ["js-wh1", "dh-wh1", "jg-wh1", "tt-wh1"] {
        let api = app.get_ok(&format!("/api/v1/facilities/{id}")).await;
        let r = row(warehouses, "Facility id", id);
        for line in api["latest"]["stock"].as_array().unwrap() {
            let header = format!(
                "{} ({})",
                line["category"].as_str().unwrap(),
                line["unit"].as_str().unwrap()
            );
            close(number(cell(warehouses, r, &header)), &line["quantity"]);
        }
        assert_eq!(cell(warehouses, r, "Reporting").to_string(), "reporting");
        assert_eq!(cell(warehouses, r, "Report").to_string(), "gateway");
    }
    // longtan never reported: its warehouse is listed, with no figures.
    let lt = row(warehouses, "Facility id", "lt-wh1");
    assert_eq!(cell(warehouses, lt, "water (L)"), &Data::Empty);
    assert_eq!(
        cell(warehouses, lt, "Reporting").to_string(),
        "never_reported"
    );

    let water = &book["供水点 Water points"];
    let wp = row(water, "Facility id", "js-wp1");
    assert_eq!(number(cell(water, wp, "Level (L)")), 1500.0);
    assert_eq!(cell(water, wp, "Ready").to_string(), "yes");
    let power = &book["应急电源 Power units"];
    let pu = row(power, "Facility id", "js-pu1");
    assert_eq!(number(cell(power, pu, "Fuel (L)")), 400.0);
    assert_eq!(number(cell(power, pu, "Battery (%)")), 90.0);
}

/// A school in jingshan that takes 1000 people.
const JINGSHAN_SCHOOL: &str = r#"
[[facility]]
id = "js-sh1"
town = "jingshan"
kind = "shelter"
name = "景山学校"
capacity = 1000
dual_use = "school"
convert_within = "3h"
"#;

#[tokio::test]
async fn shelters_have_their_own_sheet_with_capacity_and_occupancy() {
    let app = spawn_app_with(AppOptions {
        extra_registry: JINGSHAN_SCHOOL,
        ..AppOptions::default()
    })
    .await;
    app.seed();
    app.shelter("js-sh1", 412, ShelterMode::Open);
    let book = sheets(download(&app, "format=xlsx&scope=town:jingshan", XLSX).await);
    let shelters = &book["避难场所 Shelters"];
    let r = row(shelters, "Facility id", "js-sh1");
    assert_eq!(cell(shelters, r, "Facility").to_string(), "景山学校");
    assert_eq!(number(cell(shelters, r, "Capacity (people)")), 1000.0);
    assert_eq!(cell(shelters, r, "Everyday use").to_string(), "school");
    assert_eq!(number(cell(shelters, r, "Converts within (h)")), 3.0);
    // As the API shows it.
    let api = app.get_ok("/api/v1/facilities/js-sh1").await;
    let occupancy = &api["latest"]["shelter"]["occupancy"];
    assert_eq!(*occupancy, 412, "{api}");
    close(number(cell(shelters, r, "Occupancy")), occupancy);
    assert!((number(cell(shelters, r, "Occupancy (%)")) - 41.2).abs() < 1e-9);
    assert_eq!(cell(shelters, r, "Mode").to_string(), "open");
    assert_eq!(cell(shelters, r, "Reporting").to_string(), "reporting");
    // Only on its own sheet.
    let elsewhere = book
        .iter()
        .filter(|(name, _)| name.as_str() != "避难场所 Shelters")
        .flat_map(|(_, sheet)| sheet[2..].iter().flatten())
        .any(|c| *c == Data::String("js-sh1".into()));
    assert!(!elsewhere, "a shelter is listed in another sheet");
}

#[tokio::test]
async fn every_scope_lists_exactly_its_towns_and_their_facilities() {
    let app = spawn_app().await;
    app.seed();
    // (scope, towns in it)
    let cases: &[(&str, &[&str])] = &[
        (
            "city",
            &["jingshan", "donghua", "jianguo", "tiantan", "longtan"],
        ),
        (
            "district:dongcheng",
            &["jingshan", "donghua", "jianguo", "tiantan", "longtan"],
        ),
        ("cluster:c01", &["jingshan", "donghua", "jianguo"]),
        ("cluster:c02", &["tiantan", "longtan"]),
        ("town:jingshan", &["jingshan"]),
    ];
    for (scope, want) in cases {
        let book = sheets(download(&app, &format!("format=xlsx&scope={scope}"), XLSX).await);
        let towns: Vec<String> = book["街镇 Towns"][2..]
            .iter()
            .map(|r| cell(&book["街镇 Towns"], r, "Town id").to_string())
            .collect();
        assert_eq!(&towns, want, "{scope}");
        for (name, sheet) in &book {
            for r in &sheet[2..] {
                let town = cell(sheet, r, "Town id").to_string();
                assert!(
                    want.contains(&town.as_str()),
                    "{scope}: {name} lists {town}"
                );
            }
        }
    }
}

#[tokio::test]
async fn csv_opens_in_excel_with_chinese_headers_and_numbers_as_numbers() {
    let app = spawn_app().await;
    app.seed();
    let bytes = download(&app, "scope=cluster:c01", "text/csv; charset=utf-8").await;
    assert!(
        bytes.starts_with(b"\xEF\xBB\xBF"),
        "a byte order mark for Excel"
    );
    let text = String::from_utf8(bytes[3..].to_vec()).expect("UTF-8");
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    // Each table: its name, its header, its rows; a blank line between tables.
    let start = records
        .iter()
        .position(|r| &r[0] == "仓库 Warehouses")
        .expect("the warehouses table");
    let header = &records[start + 1];
    assert_eq!(&header[0], "区 District");
    let id_col = header
        .iter()
        .position(|h| h == "设施编号 Facility id")
        .unwrap();
    let water_col = header
        .iter()
        .position(|h| h == "饮用水(L) water (L)")
        .unwrap();
    let js = records[start + 2..]
        .iter()
        .find(|r| r.get(id_col) == Some("js-wh1"))
        .expect("js-wh1 listed");
    assert_eq!(&js[water_col], "4500");
    assert!(
        !records.iter().any(|r| r.iter().any(|c| c == "tt-wh1")),
        "tiantan is in c02, not in this list"
    );
}

#[tokio::test]
async fn bad_requests_get_a_json_error_naming_the_parameter() {
    let app = spawn_app().await;
    let cases: &[(&str, u16, &str)] = &[
        ("format=pdf", 400, "invalid_query"),
        ("scope=everywhere", 400, "invalid_query"),
        ("scope=province:x", 400, "invalid_query"),
        ("scope=district:nowhere", 404, "unknown_scope"),
        ("scope=town:", 404, "unknown_scope"),
        ("colour=red", 400, "invalid_query"),
    ];
    for (query, status, code) in cases {
        let answer = app
            .get(&format!("/api/v1/export/resources?{query}"), Some(OFFICER))
            .await;
        assert_eq!(answer.status, *status, "{query}: {}", answer.text);
        assert_eq!(answer.error(), (*status, (*code).to_owned()), "{query}");
    }
    let answer = app
        .get("/api/v1/export/resources", Some("not-a-token"))
        .await;
    assert_eq!(answer.error(), (401, "invalid_token".to_owned()));
}
