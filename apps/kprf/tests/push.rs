//! kprf against the real broker: response shapes, keys, headers,
//! partitions, rate limits, admission, metrics, readiness, SIGTERM.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

fn base(bootstrap: &str) -> String {
    format!("kafka:\n  brokers: [\"{bootstrap}\"]\n")
}

fn ok_body() -> serde_json::Value {
    json!({"status": "ok", "errors": []})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_and_sync_pushes_arrive_with_keys_headers_partitions() {
    let Some(bs) = bootstrap() else { return };
    let topic = unique("kprf-push");
    create_topic(&bs, &topic, 3).await;
    let dir = scratch("kprf-push");
    let k = Kprf::start(&dir, &base(&bs)).await;

    let r = k
        .push(
            &json!({"records": [
                {"topic": topic, "data": "async-1", "key": "k1", "partition": 2,
                 "headers": {"h1": "v1", "h2": "v2"}},
                {"topic": topic, "data": "async-2 \"quoted\" ü", "partition": 1}
            ]})
            .to_string(),
        )
        .await;
    assert_eq!((r.code, r.json()), (200, ok_body()), "{}", k.log_text());
    let r = k
        .push(
            &json!({"records": [{"topic": topic, "data": "sync-1", "partition": 2, "key": "k2"}],
                      "wait_for_send": true})
            .to_string(),
        )
        .await;
    assert_eq!((r.code, r.json()), (200, ok_body()));
    // a sync push comes after delivery; the async ones were sent before it
    // on the same partition, so they are there too.
    let p2 = read_partition(&bs, &topic, 2).await;
    assert_eq!(p2.len(), 2, "{p2:?}");
    assert_eq!(p2[0].value.as_deref(), Some(&b"async-1"[..]));
    assert_eq!(p2[0].key.as_deref(), Some(&b"k1"[..]));
    let mut headers: Vec<_> = p2[0]
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().unwrap()))
        .collect();
    headers.sort();
    assert_eq!(
        headers,
        vec![("h1".into(), "v1".into()), ("h2".into(), "v2".into())]
    );
    assert_eq!(p2[1].value.as_deref(), Some(&b"sync-1"[..]));
    assert_eq!(p2[1].key.as_deref(), Some(&b"k2"[..]));
    let r = k
        .push(&json!({"records": [{"topic": topic, "data": "x", "partition": 1}], "wait_for_send": true}).to_string())
        .await;
    assert_eq!(r.code, 200);
    let p1 = read_partition(&bs, &topic, 1).await;
    assert_eq!(
        p1[0].value.as_deref(),
        Some("async-2 \"quoted\" ü".as_bytes())
    );
    assert_eq!(p1[0].key, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_record_errors_in_request_order() {
    let Some(bs) = bootstrap() else { return };
    let topic = unique("kprf-err");
    create_topic(&bs, &topic, 1).await;
    let missing = unique("kprf-missing");
    let dir = scratch("kprf-err");
    let k = Kprf::start(&dir, &format!("{}  message_max_bytes: 100\n", base(&bs))).await;
    let big = "x".repeat(101);
    for sync in [true, false] {
        let r = k
            .push(
                &json!({"records": [
                {"topic": topic, "data": "fine"},
                {"topic": missing, "data": "nowhere"},
                {"topic": topic, "data": big},
                {"topic": topic, "data": "bad partition", "partition": 7},
                {"topic": topic, "data": "fine too"}
            ], "wait_for_send": sync})
                .to_string(),
            )
            .await;
        assert_eq!(r.code, 400, "{}", r.body);
        let v = r.json();
        assert_eq!(v["status"], "error");
        let e = v["errors"].as_array().unwrap();
        assert_eq!(e.len(), 5);
        let statuses: Vec<_> = e.iter().map(|x| x["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["ok", "error", "error", "error", "ok"], "{v}");
        assert_eq!(e[0]["error"], "");
        assert!(
            e[1]["error"].as_str().unwrap().contains("unknown topic"),
            "{v}"
        );
        assert!(
            e[2]["error"]
                .as_str()
                .unwrap()
                .contains("message_max_bytes"),
            "{v}"
        );
        assert!(
            e[3]["error"].as_str().unwrap().contains("partition 7"),
            "{v}"
        );
    }
    // the good records arrived, the others did not
    let r = k
        .push(
            &json!({"records": [{"topic": topic, "data": "last"}], "wait_for_send": true})
                .to_string(),
        )
        .await;
    assert_eq!(r.code, 200);
    let got: Vec<_> = read_partition(&bs, &topic, 0)
        .await
        .into_iter()
        .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(got, ["fine", "fine too", "fine", "fine too", "last"]);
    let m = k.metrics().await;
    assert_eq!(
        sample(
            &m,
            &format!("kafka_errors_count_total{{topic=\"{topic}\"}}")
        ),
        Some(4.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "kafka_errors_count_total{topic=\"_unknown_\"}"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "http_requests_duration_count{method=\"push/sync\",code=\"400\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "http_requests_duration_count{method=\"push/async\",code=\"400\"}"
        ),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_400_with_the_same_shape() {
    let Some(bs) = bootstrap() else { return };
    let dir = scratch("kprf-bad");
    let k = Kprf::start(&dir, &base(&bs)).await;
    for body in [
        "{not json",
        r#"{"records": [{"topic": "t"}]}"#,
        r#"{"records": [{"data": "d"}]}"#,
        r#"{"wait_for_send": true}"#,
        r#"{"records": [{"topic": "t", "data": 5}]}"#,
    ] {
        let r = k.push(body).await;
        assert_eq!(r.code, 400, "{body}: {}", r.body);
        let v = r.json();
        assert_eq!(v["status"], "error", "{v}");
        let e = v["errors"].as_array().unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0]["status"], "error");
        assert!(
            e[0]["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid request"),
            "{v}"
        );
    }
    let r = k.push(r#"{"records": []}"#).await;
    assert_eq!((r.code, r.json()), (200, ok_body()));
    let r = http(k.metrics_port, "GET", "/healthz", "").await.unwrap();
    assert_eq!(r.code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_refuses_with_429_and_counts() {
    let Some(bs) = bootstrap() else { return };
    let limited = unique("kprf-rl");
    let free = unique("kprf-free");
    create_topic(&bs, &limited, 1).await;
    create_topic(&bs, &free, 1).await;
    let dir = scratch("kprf-rl");
    let yaml = format!(
        "{}ratelimit:\n  enabled: true\n  rules:\n    - topic_name: {limited}\n      max_requests_per_minute: 3\n",
        base(&bs)
    );
    let k = Kprf::start(&dir, &yaml).await;
    let one = |t: &str| {
        json!({"records": [{"topic": t, "data": "r"}], "wait_for_send": true}).to_string()
    };
    let r = k
        .push(
            &json!({"records": [{"topic": limited, "data": "a"}, {"topic": limited, "data": "b"}]})
                .to_string(),
        )
        .await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(k.push(&one(&limited)).await.code, 200);
    // the bucket is empty: a request with a limited record is refused whole
    let r = k
        .push(
            &json!({"records": [{"topic": free, "data": "f"}, {"topic": limited, "data": "c"}]})
                .to_string(),
        )
        .await;
    assert_eq!(r.code, 429, "{}", r.body);
    let v = r.json();
    assert_eq!(v["status"], "error");
    assert_eq!(v["errors"][0]["status"], "error");
    assert!(
        v["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("not sent"),
        "{v}"
    );
    assert!(
        v["errors"][1]["error"]
            .as_str()
            .unwrap()
            .contains("rate limit"),
        "{v}"
    );
    assert_eq!(k.push(&one(&limited)).await.code, 429);
    // other topics are not limited
    for _ in 0..5 {
        assert_eq!(k.push(&one(&free)).await.code, 200);
    }
    let m = k.metrics().await;
    assert_eq!(
        sample(
            &m,
            &format!("ratelimit_messages_count_total{{topic=\"{limited}\"}}")
        ),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &format!("ratelimit_messages_count_total{{topic=\"{free}\"}}")
        ),
        None
    );
    assert_eq!(read_partition(&bs, &limited, 0).await.len(), 3);
    assert_eq!(read_partition(&bs, &free, 0).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_limit_answers_503() {
    let Some(bs) = bootstrap() else { return };
    let topic = unique("kprf-q");
    create_topic(&bs, &topic, 1).await;
    let dir = scratch("kprf-q");
    let k = Kprf::start(
        &dir,
        &format!("{}  queue_buffering_max_messages: 2\n", base(&bs)),
    )
    .await;
    let r = k
        .push(&json!({"records": [{"topic": topic, "data": "1"}, {"topic": topic, "data": "2"}, {"topic": topic, "data": "3"}]}).to_string())
        .await;
    assert_eq!(r.code, 503, "{}", r.body);
    let v = r.json();
    assert_eq!(v["errors"].as_array().unwrap().len(), 3);
    assert!(
        v["errors"][2]["error"]
            .as_str()
            .unwrap()
            .contains("queue full"),
        "{v}"
    );
    let r = k
        .push(&json!({"records": [{"topic": topic, "data": "1"}, {"topic": topic, "data": "2"}], "wait_for_send": true}).to_string())
        .await;
    assert_eq!(r.code, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_known_load() {
    let Some(bs) = bootstrap() else { return };
    let topic = unique("kprf-m");
    create_topic(&bs, &topic, 2).await;
    let dir = scratch("kprf-m");
    let k = Kprf::start(&dir, &base(&bs)).await;
    // 5 sync requests of 2 records, 4 async requests of 3 records
    for i in 0..5 {
        let r = k
            .push(&json!({"records": [{"topic": topic, "data": format!("s{i}a")}, {"topic": topic, "data": format!("s{i}b")}], "wait_for_send": true}).to_string())
            .await;
        assert_eq!(r.code, 200);
    }
    for i in 0..4 {
        let recs: Vec<_> = (0..3)
            .map(|j| json!({"topic": topic, "data": format!("a{i}{j}")}))
            .collect();
        assert_eq!(
            k.push(&json!({"records": recs}).to_string()).await.code,
            200
        );
    }
    // async deliveries finish shortly after
    let t = format!("{{topic=\"{topic}\"}}");
    let mut m = String::new();
    for _ in 0..100 {
        m = k.metrics().await;
        if sample(&m, &format!("kafka_sent_messages_total{t}")) == Some(22.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        sample(&m, &format!("kafka_sent_messages_total{t}")),
        Some(22.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, &format!("kafka_errors_count_total{t}")),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, &format!("kafka_internal_queue_size{t}")),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, &format!("kafka_message_send_duration_count{t}")),
        Some(22.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "http_requests_duration_count{method=\"push/sync\",code=\"200\"}"
        ),
        Some(5.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "http_requests_duration_count{method=\"push/async\",code=\"200\"}"
        ),
        Some(4.0),
        "{m}"
    );
    assert_eq!(sample(&m, "kprf_inflight_records"), Some(0.0), "{m}");
    assert!(
        sample(&m, "kafka_producer_requests_total").unwrap() >= 1.0,
        "{m}"
    );
    assert!(
        m.contains("# TYPE kafka_message_send_duration histogram"),
        "{m}"
    );
    assert!(m.ends_with("# EOF\n"));
    let total: usize = [0, 1].len();
    let mut n = 0;
    for p in 0..total as i32 {
        n += read_partition(&bs, &topic, p).await.len();
    }
    assert_eq!(n, 22);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_delivers_what_is_buffered_and_exits_0() {
    let Some(bs) = bootstrap() else { return };
    let topic = unique("kprf-term");
    create_topic(&bs, &topic, 1).await;
    let dir = scratch("kprf-term");
    // a long linger: the records are still buffered when SIGTERM comes
    let mut k = Kprf::start(
        &dir,
        &format!(
            "{}  queue_buffering_max_ms: 3000\n  message_timeout_ms: 20000\n",
            base(&bs)
        ),
    )
    .await;
    for i in 0..20 {
        let r = k
            .push(&json!({"records": [{"topic": topic, "data": format!("t{i}")}]}).to_string())
            .await;
        assert_eq!(r.code, 200);
    }
    k.signal("TERM");
    let st = k.wait_exit(30).await;
    assert_eq!(st.code(), Some(0), "{}", k.log_text());
    assert_eq!(read_partition(&bs, &topic, 0).await.len(), 20);
    assert!(
        http(k.port, "POST", "/push", "{}").await.is_err(),
        "still accepting"
    );
}

#[test]
fn config_errors_exit_2_with_one_line() {
    let dir = scratch("kprf-cfg");
    let cfg = dir.join("bad.yaml");
    std::fs::write(&cfg, "kafka:\n  brokers: [a:1]\n  no_such_key: 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kprf"))
        .arg(format!("--config={}", cfg.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no_such_key"), "{err}");

    std::fs::write(&cfg, "kafka:\n  brokers: [a:1]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kprf"))
        .arg(format!("--config={}", cfg.display()))
        .env("KPRF_HTTP__PORT", "not-a-port")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("KPRF_HTTP__PORT") && err.contains("http.port"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_brokers_and_env_overrides_file() {
    // a broker address where nothing listens: healthz yes, readyz no
    let dir = scratch("kprf-ready");
    let port = free_port();
    let mport = free_port();
    let dead = free_port();
    let log = dir.join("kprf.log");
    let cfg = dir.join("c.yaml");
    std::fs::write(&cfg, format!("kafka:\n  brokers: [\"127.0.0.1:{dead}\"]\nhttp:\n  host: 127.0.0.1\n  port: 1\n  metrics_port: {mport}\noutput_file: {}\n", log.display())).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kprf"))
        .arg(format!("--config={}", cfg.display()))
        .env("KPRF_HTTP__PORT", port.to_string())
        .spawn()
        .unwrap();
    let mut healthy = false;
    for _ in 0..100 {
        if let Ok(r) = http(mport, "GET", "/healthz", "").await {
            healthy = r.code == 200;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(healthy);
    assert_eq!(http(mport, "GET", "/readyz", "").await.unwrap().code, 503);
    assert!(http(port, "POST", "/push", "{}").await.is_err());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("connecting to Kafka"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_against_the_sasl_listener() {
    let Some(bs) = bootstrap() else { return };
    let Ok(sasl) = std::env::var("KAFKA_SASL_PLAINTEXT") else {
        testkit::skip("KAFKA_SASL_PLAINTEXT not set (broker without SASL listeners)");
        return;
    };
    let topic = unique("kprf-sasl");
    create_topic(&bs, &topic, 1).await;
    let dir = scratch("kprf-sasl");
    for mech in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let yaml = format!(
            "kafka:\n  brokers: [\"{sasl}\"]\n  user: admin\n  password: admin-secret\n  sasl_mechanism: {mech}\n"
        );
        let k = Kprf::start(&dir, &yaml).await;
        let r = k
            .push(
                &json!({"records": [{"topic": topic, "data": mech}], "wait_for_send": true})
                    .to_string(),
            )
            .await;
        assert_eq!(r.code, 200, "{mech}: {}", r.body);
    }
    assert_eq!(read_partition(&bs, &topic, 0).await.len(), 3);
}
