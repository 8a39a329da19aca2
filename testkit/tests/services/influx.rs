use serde_json::json;
use testkit::Influx1;
use testkit::http;

use crate::port_is_open;

#[test]
fn line_written_over_http_is_read_back_with_influxql() {
    let influx = Influx1::start();
    influx.create_database("stockpile");

    // A raw /write, as store's v1 sink sends it (timestamps in ns).
    let lines = "stock,town=jingshan,facility=jingshan-wh1,category=water quantity=12000 1763960400000000000\n\
                 stock,town=jingshan,facility=jingshan-wh1,category=food quantity=5400 1763960400000000000\n";
    let response = http::post(
        &format!("{}/write", influx.url()),
        &[("db", "stockpile")],
        "text/plain",
        lines.as_bytes(),
    );
    assert_eq!(response.status, 204, "{}", response.body);

    let rows = influx.query_rows(
        "stockpile",
        "SELECT quantity FROM stock WHERE town = 'jingshan' AND category = 'water'",
    );
    assert_eq!(rows, vec![vec![json!(1_763_960_400_000_i64), json!(12000)]]);

    let answer = influx.query(
        "stockpile",
        "SHOW TAG VALUES FROM stock WITH KEY = category",
    );
    assert_eq!(
        answer["results"][0]["series"][0]["values"],
        json!([["category", "food"], ["category", "water"]])
    );
}

#[test]
fn restart_on_the_same_port_keeps_written_points() {
    let mut influx = Influx1::start();
    let port = influx.port();
    influx.create_database("stockpile");
    influx.write(
        "stockpile",
        "town_status,town=jingshan worst_days=2.5 1763960400000000000",
    );

    influx.stop();
    assert!(!port_is_open(port), "port {port} still open after stop");
    influx.start_again();

    assert_eq!(influx.port(), port);
    assert_eq!(
        influx.query_rows("stockpile", "SELECT worst_days FROM town_status"),
        vec![vec![json!(1_763_960_400_000_i64), json!(2.5)]]
    );
}

#[test]
fn auth_refuses_requests_without_credentials() {
    let influx = Influx1::builder().auth("admin", "s3cret'pw").start();
    assert_eq!(influx.credentials(), Some(("admin", "s3cret'pw")));
    influx.create_database("stockpile");

    let anonymous = http::get(
        &format!("{}/query", influx.url()),
        &[("q", "SHOW DATABASES")],
    );
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);

    let wrong = http::get(
        &format!("{}/query", influx.url()),
        &[("q", "SHOW DATABASES"), ("u", "admin"), ("p", "wrong")],
    );
    assert_eq!(wrong.status, 401, "{}", wrong.body);

    let databases = influx.query("", "SHOW DATABASES");
    assert_eq!(
        databases["results"][0]["series"][0]["values"],
        json!([["stockpile"]])
    );
}

#[test]
#[should_panic(expected = "InfluxDB refused")]
fn query_helper_panics_on_an_influxql_error() {
    let influx = Influx1::start();
    influx.query("nowhere", "SELEKT nothing");
}
