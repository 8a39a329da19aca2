use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use testkit::HttpReceiver;
use testkit::http;

use crate::port_is_open;

#[test]
fn records_each_request_and_answers_queued_then_default_statuses() {
    let receiver = HttpReceiver::start();
    receiver.push_response(500, "gateway busy");
    receiver.push_response(503, "");

    let url = format!("{}/send?channel=sms", receiver.url());
    let body = "To=%2B8613800000000&Body=%E6%99%AF%E5%B1%B1+below+target";
    let statuses: Vec<u16> = (0..3)
        .map(|_| {
            http::post(
                &url,
                &[],
                "application/x-www-form-urlencoded",
                body.as_bytes(),
            )
            .status
        })
        .collect();
    assert_eq!(statuses, [500, 503, 200]);

    receiver.set_response(202, r#"{"sid":"SM1"}"#);
    let accepted = http::post(
        &format!("{}/hook", receiver.url()),
        &[],
        "application/json",
        br#"{"town":"jingshan"}"#,
    );
    assert_eq!(
        (accepted.status, accepted.json()),
        (202, serde_json::json!({"sid": "SM1"}))
    );

    let requests = receiver.wait_for(4, Duration::from_secs(5));
    assert_eq!(requests.len(), 4);
    let sms = &requests[0];
    assert_eq!(sms.method, "POST");
    assert_eq!(sms.path(), "/send");
    assert_eq!(sms.query(), [("channel".to_owned(), "sms".to_owned())]);
    assert_eq!(
        sms.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        sms.form(),
        [
            ("To".to_owned(), "+8613800000000".to_owned()),
            ("Body".to_owned(), "景山 below target".to_owned()),
        ]
    );
    assert_eq!(requests[3].json(), serde_json::json!({"town": "jingshan"}));
}

#[test]
fn chunked_bodies_are_recorded_whole() {
    let receiver = HttpReceiver::start();
    let mut stream = TcpStream::connect(("127.0.0.1", receiver.port())).expect("connect");
    stream
        .write_all(
            b"POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
        )
        .expect("send");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("answer, then close");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");

    let requests = receiver.wait_for(1, Duration::from_secs(5));
    assert_eq!(requests[0].body_text(), "hello, world");
}

#[test]
fn stopped_receiver_refuses_connections_and_start_again_keeps_port() {
    let mut receiver = HttpReceiver::start();
    let port = receiver.port();
    receiver.stop();
    assert!(!port_is_open(port), "port {port} still open after stop");
    assert!(http::try_get(&receiver.url(), &[]).is_err());

    receiver.start_again();
    assert_eq!(receiver.port(), port);
    assert_eq!(http::get(&receiver.url(), &[]).status, 200);
    assert_eq!(receiver.requests().len(), 1);
}

#[test]
fn delay_makes_a_client_with_a_short_timeout_give_up() {
    let receiver = HttpReceiver::start();
    receiver.set_delay(Duration::from_secs(2));
    let mut stream = TcpStream::connect(("127.0.0.1", receiver.port())).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut buffer = [0_u8; 64];
    assert!(
        stream.read(&mut buffer).is_err(),
        "answered before the delay"
    );
}
