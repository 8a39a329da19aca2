use serde_json::json;
use testkit::VictoriaMetrics;
use testkit::http;

use crate::port_is_open;

/// Write line protocol the way an InfluxDB v2 client does.
fn write_v2(vm: &VictoriaMetrics, lines: &str) {
    let response = http::post(
        &format!("{}/api/v2/write", vm.url()),
        &[
            ("org", "stockpile"),
            ("bucket", "stockpile"),
            ("precision", "ns"),
        ],
        "text/plain; charset=utf-8",
        lines.as_bytes(),
    );
    assert_eq!(response.status, 204, "{}", response.body);
}

#[test]
fn influx_v2_line_protocol_is_exported_as_series() {
    let vm = VictoriaMetrics::start();
    write_v2(
        &vm,
        "coverage,town=jingshan,category=water days=2.75,stock=12000 1763960400000000000\n\
         coverage,town=donghuamen,category=water days=4 1763960400000000000\n",
    );

    let series = vm.export_json(r#"{__name__="coverage_days",town="jingshan"}"#);
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[0]["metric"]["category"], json!("water"));
    assert_eq!(series[0]["values"], json!([2.75]));
    assert_eq!(series[0]["timestamps"], json!([1_763_960_400_000_i64]));

    let all_days = vm.export(r#"{__name__="coverage_days"}"#);
    assert_eq!(all_days.lines().count(), 2, "{all_days}");
}

#[test]
fn restart_on_the_same_port_keeps_stored_series() {
    let mut vm = VictoriaMetrics::start();
    let port = vm.port();
    write_v2(&vm, "ops,instance=a accepted=42i 1763960400000000000");
    vm.flush();

    vm.stop();
    assert!(!port_is_open(port), "port {port} still open after stop");
    vm.start_again();

    assert_eq!(vm.port(), port);
    let series = vm.export_json(r#"{__name__="ops_accepted"}"#);
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[0]["values"], json!([42]));
}
