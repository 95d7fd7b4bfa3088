//! The cluster administration commands against a real broker
//! (`KAFKA_BOOTSTRAP`): cluster, config, acl, reassign, elect-leaders,
//! quota, user-scram, log-dirs, producers, txn.

use std::{
    process::Output,
    time::{Duration, Instant},
};

mod common;

use common::{assert_ok, assert_one_line_error, bootstrap, kafka, stdout, unique};

fn ok(bootstrap: &str, args: &[&str]) -> String {
    let o = kafka(bootstrap, args, b"");
    assert_ok(&o);
    stdout(&o)
}

#[track_caller]
fn assert_usage_error(o: &Output) {
    assert_one_line_error(o);
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
}

#[track_caller]
fn assert_runtime_error(o: &Output, code_name: &str) {
    let err = assert_one_line_error(o);
    assert_eq!(o.status.code(), Some(1), "runtime errors exit 1");
    assert!(err.contains(code_name), "{err}");
}

/// Runs `args` until its output satisfies `done` (changes reach the
/// brokers' caches asynchronously), failing after 15 s.
fn eventually(bootstrap: &str, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = ok(bootstrap, args);
        if done(&out) {
            return out;
        }
        assert!(Instant::now() < deadline, "{args:?} still prints {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn create_topic(bootstrap: &str, partitions: &str) -> String {
    let topic = unique("cli-admin");
    ok(
        bootstrap,
        &["topic", "create", &topic, "--partitions", partitions],
    );
    topic
}

#[test]
fn cluster_describe_text_and_json() {
    let Some(b) = bootstrap() else { return };
    let text = ok(&b, &["cluster", "describe"]);
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("cluster id: "))
        .expect("cluster id line");
    assert!(!id.is_empty());
    assert!(
        text.lines().any(|l| l.starts_with("controller: ")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("broker ")), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&b, &["cluster", "describe", "--format", "json"])).unwrap();
    assert_eq!(json["cluster_id"], id);
    let controller = json["controller_id"].as_i64().expect("controller id");
    let brokers = json["brokers"].as_array().expect("brokers");
    assert!(brokers.iter().any(|x| x["id"].as_i64() == Some(controller)));
}

#[test]
fn config_alter_and_describe_a_topic_and_a_broker() {
    let Some(b) = bootstrap() else { return };
    let topic = create_topic(&b, "1");
    let alter = ["config", "alter", "--topic", &topic];
    ok(
        &b,
        &[&alter[..], &["--set", "retention.ms=1234567"]].concat(),
    );
    let out = ok(&b, &["config", "describe", "--topic", &topic]);
    assert!(
        out.lines()
            .any(|l| l == "retention.ms\t1234567\tDYNAMIC_TOPIC_CONFIG"),
        "{out}"
    );
    ok(&b, &[&alter[..], &["--delete", "retention.ms"]].concat());
    let out = ok(&b, &["config", "describe", "--topic", &topic]);
    let line = out
        .lines()
        .find(|l| l.starts_with("retention.ms\t"))
        .expect("retention.ms");
    assert!(!line.ends_with("DYNAMIC_TOPIC_CONFIG"), "{line}");

    let json: serde_json::Value = serde_json::from_str(&ok(
        &b,
        &["config", "describe", "--broker", "1", "--format", "json"],
    ))
    .unwrap();
    let sources: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["source"].as_str())
        .collect();
    assert!(sources.contains(&"STATIC_BROKER_CONFIG"), "{sources:?}");
    assert!(sources.contains(&"DEFAULT_CONFIG"), "{sources:?}");

    let bad = kafka(
        &b,
        &[
            "config",
            "alter",
            "--broker",
            "1",
            "--set",
            "log.cleaner.backoff.ms=x",
        ],
        b"",
    );
    let err = assert_one_line_error(&bad);
    assert!(err.contains("broker 1"), "names the broker: {err}");
    assert_usage_error(&kafka(&b, &["config", "describe"], b""));
    assert_usage_error(&kafka(&b, &["config", "alter", "--topic", &topic], b""));
    assert_usage_error(&kafka(
        &b,
        &["config", "describe", "--topic", &topic, "--broker", "1"],
        b"",
    ));
}

#[test]
fn acl_commands_report_a_broker_without_authorizer_in_one_line() {
    let Some(b) = testkit::real_bootstrap("ACLs") else {
        return;
    };
    let topic = unique("cli-acl");
    let create = [
        "acl",
        "create",
        "--topic",
        &topic,
        "--principal",
        "User:cli-test",
        "--operation",
        "read",
        "--permission",
        "allow",
    ];
    let list = kafka(&b, &["acl", "list", "--topic", &topic], b"");
    if list.status.success() {
        ok(&b, &create);
        eventually(&b, &["acl", "list", "--topic", &topic], |o| {
            o.contains("User:cli-test")
        });
        let delete = [
            "acl",
            "delete",
            "--topic",
            &topic,
            "--principal",
            "User:cli-test",
        ];
        let deleted = ok(&b, &delete);
        assert!(deleted.contains("READ\tALLOW"), "{deleted}");
    } else {
        testkit::skip("the ACL round trip: the broker has no authorizer (KAFKA_SECURITY=1 scripts/kafka up has one)");
        assert_runtime_error(&list, "SECURITY_DISABLED");
        assert_runtime_error(&kafka(&b, &create, b""), "SECURITY_DISABLED");
    }
    // Usage errors are told before any request.
    assert_usage_error(&kafka(&b, &["acl", "create", "--topic", &topic], b""));
    assert_usage_error(&kafka(&b, &["acl", "delete"], b""));
    assert_usage_error(&kafka(&b, &["acl", "list", "--operation", "juggle"], b""));
    assert_usage_error(&kafka(
        &b,
        &["acl", "list", "--topic", "a", "--group", "b"],
        b"",
    ));
}

#[test]
fn reassign_and_elect_leaders_on_one_broker() {
    let Some(b) = testkit::real_bootstrap("reassignments and leader elections") else {
        return;
    };
    let topic = create_topic(&b, "1");
    let alter = ["reassign", "alter", "--topic", &topic, "--partition", "0"];
    let out = ok(&b, &[&alter[..], &["--replicas", "1"]].concat());
    assert!(out.contains("Reassigning"), "{out}");
    eventually(&b, &["reassign", "list", "--topic", &topic], str::is_empty);
    let cancel = kafka(&b, &[&alter[..], &["--cancel"]].concat(), b"");
    assert_runtime_error(&cancel, "NO_REASSIGNMENT_IN_PROGRESS");
    let out = ok(
        &b,
        &[
            "elect-leaders",
            "--type",
            "preferred",
            "--topic",
            &topic,
            "--partition",
            "0",
        ],
    );
    assert_eq!(out, format!("{topic}\t0\tnot needed\n"));
    assert_usage_error(&kafka(&b, &["elect-leaders", "--type", "sideways"], b""));
    assert_usage_error(&kafka(
        &b,
        &["elect-leaders", "--type", "preferred", "--topic", &topic],
        b"",
    ));
}

#[test]
fn quota_alter_describe_remove() {
    let Some(b) = testkit::real_bootstrap("client quotas") else {
        return;
    };
    let user = unique("cli-quota-user");
    let client = unique("cli-quota-client");
    let entity = ["--user", user.as_str(), "--client", client.as_str()];
    let mut alter = vec!["quota", "alter"];
    alter.extend(entity);
    alter.extend(["--set", "producer_byte_rate=2048"]);
    ok(&b, &alter);
    let mut describe = vec!["quota", "describe"];
    describe.extend(entity);
    let out = ok(&b, &describe);
    assert_eq!(
        out,
        format!("user={user},client-id={client}\tproducer_byte_rate\t2048\n")
    );
    let mut remove = vec!["quota", "alter"];
    remove.extend(entity);
    remove.extend(["--delete", "producer_byte_rate"]);
    ok(&b, &remove);
    assert_eq!(ok(&b, &describe), "");
    assert_usage_error(&kafka(
        &b,
        &["quota", "alter", "--set", "producer_byte_rate=1"],
        b"",
    ));
    assert_usage_error(&kafka(
        &b,
        &[
            "quota",
            "alter",
            "--user",
            "u",
            "--set",
            "producer_byte_rate=lots",
        ],
        b"",
    ));
}

#[test]
fn user_scram_upsert_describe_delete() {
    let Some(b) = testkit::real_bootstrap("SCRAM users") else {
        return;
    };
    let user = unique("cli-scram");
    ok(
        &b,
        &[
            "user-scram",
            "upsert",
            &user,
            "--mechanism",
            "SCRAM-SHA-512",
            "--iterations",
            "4096",
            "--password",
            "pw",
        ],
    );
    let out = ok(&b, &["user-scram", "describe", &user]);
    assert_eq!(out, format!("{user}\tSCRAM-SHA-512\t4096\n"));
    ok(
        &b,
        &[
            "user-scram",
            "delete",
            &user,
            "--mechanism",
            "SCRAM-SHA-512",
        ],
    );
    let gone = kafka(&b, &["user-scram", "describe", &user], b"");
    assert_runtime_error(&gone, "RESOURCE_NOT_FOUND");
    assert!(common::stderr(&gone).contains(&user), "names the user");
    assert_usage_error(&kafka(
        &b,
        &[
            "user-scram",
            "upsert",
            &user,
            "--mechanism",
            "MD5",
            "--password",
            "pw",
        ],
        b"",
    ));
}

#[test]
fn log_dirs_producers_and_transactions_after_producing() {
    let Some(b) = testkit::real_bootstrap("log dirs, producer state and transactions") else {
        return;
    };
    let topic = create_topic(&b, "1");
    let o = kafka(&b, &["produce", &topic], b"one\ntwo\nthree\n");
    assert_ok(&o);

    let dirs = ok(&b, &["log-dirs", "--broker", "1", "--topic", &topic]);
    let replica = dirs
        .lines()
        .find(|l| l.starts_with(&format!("  {topic}\t0\t")))
        .unwrap_or_else(|| panic!("no replica line: {dirs}"));
    let size: i64 = replica.split('\t').nth(2).unwrap().parse().unwrap();
    assert!(size > 0, "{replica}");

    // `produce` is idempotent by default: its producer has state.
    let producers = ok(&b, &["producers", "--topic", &topic]);
    let fields: Vec<&str> = producers
        .lines()
        .next()
        .expect("a producer")
        .split('\t')
        .collect();
    assert_eq!(fields[..2], [topic.as_str(), "0"], "{producers}");
    assert_eq!(
        fields[4], "2",
        "last sequence of three records: {producers}"
    );
    assert_eq!(fields[6], "-", "no open transaction: {producers}");

    let id = unique("cli-admin-txn");
    let o = kafka(
        &b,
        &["produce", &topic, "--transactional-id", &id],
        b"four\n",
    );
    assert_ok(&o);
    let out = eventually(&b, &["txn", "describe", &id], |o| {
        o.contains("state: CompleteCommit")
    });
    assert!(out.contains(&format!("transactional id: {id}\n")), "{out}");
    let listed = ok(&b, &["txn", "list", "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let mine = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["transactional_id"] == id.as_str())
        .expect("listed");
    assert_eq!(mine["state"], "CompleteCommit");
    let missing = kafka(&b, &["txn", "describe", &unique("cli-no-txn")], b"");
    assert_runtime_error(&missing, "TRANSACTIONAL_ID_NOT_FOUND");
}
