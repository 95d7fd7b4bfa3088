//! Other clients against the fake cluster: librdkafka (Python's
//! confluent-kafka) and the Java client each produce idempotently with
//! each codec, consume, and read watermarks and offsets by time;
//! librdkafka consumes in a KIP-848 group (`group.protocol=consumer`).

use std::{path::PathBuf, process::Command};

use rskafka_fake::FakeCluster;

const SCRIPT: &str = r#"
import sys, confluent_kafka as ck
bs, topic = sys.argv[1], sys.argv[2]
codecs = ["none", "gzip", "snappy", "lz4", "zstd"]
for i, codec in enumerate(codecs):
    p = ck.Producer({"bootstrap.servers": bs, "enable.idempotence": True, "compression.type": codec, "linger.ms": 5})
    for j in range(20):
        p.produce(topic, value=f"{codec}-{j}".encode(), partition=0)
    assert p.flush(10) == 0, "unflushed"
c = ck.Consumer({"bootstrap.servers": bs, "group.id": "unused", "enable.auto.commit": False})
c.assign([ck.TopicPartition(topic, 0, ck.OFFSET_BEGINNING)])
got = []
while len(got) < 100:
    m = c.poll(10)
    assert m is not None, f"only {len(got)} records"
    assert not m.error(), m.error()
    got.append((m.offset(), m.value().decode()))
want = [(k, f"{codecs[k // 20]}-{k % 20}") for k in range(100)]
assert got == want, got
lo, hi = c.get_watermark_offsets(ck.TopicPartition(topic, 0), timeout=5)
assert (lo, hi) == (0, 100), (lo, hi)
[t] = c.offsets_for_times([ck.TopicPartition(topic, 0, 0)], timeout=5)
assert t.offset == 0 and t.error is None, t
c.close()
print("ok")
"#;

/// Runs a librdkafka `script` with the bootstrap and topic as arguments;
/// it must succeed.
fn run_python(script: &str, bootstrap: &str, topic: &str) {
    let out = Command::new("python3")
        .args(["-c", script, bootstrap, topic])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "librdkafka: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn librdkafka_produces_consumes_and_reads_offsets() {
    if !testkit::python_available() {
        return;
    }
    let cluster = FakeCluster::builder()
        .brokers(2)
        .start_background()
        .expect("fake cluster starts");
    cluster.create_topic("interop", 1).expect("create");
    run_python(SCRIPT, &cluster.bootstrap(), "interop");
    assert_eq!(cluster.offsets("interop", 0), Some((0, 100)));
}

const GROUP_SCRIPT: &str = r#"
import sys, confluent_kafka as ck
bs, topic = sys.argv[1], sys.argv[2]
p = ck.Producer({"bootstrap.servers": bs})
for part in range(4):
    for j in range(10):
        p.produce(topic, value=b"v", partition=part)
assert p.flush(10) == 0, "unflushed"
c = ck.Consumer({"bootstrap.servers": bs, "group.id": "rdkafka-848", "group.protocol": "consumer",
                 "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([topic])
seen = set()
while len(seen) < 40:
    m = c.poll(20)
    assert m is not None, f"only {len(seen)} records"
    assert not m.error(), m.error()
    seen.add((m.partition(), m.offset()))
assert sorted(t.partition for t in c.assignment()) == [0, 1, 2, 3], c.assignment()
c.commit(asynchronous=False)
committed = c.committed([ck.TopicPartition(topic, q) for q in range(4)], timeout=10)
assert [t.offset for t in committed] == [10] * 4, committed
c.close()
print("ok")
"#;

#[test]
fn librdkafka_consumes_and_commits_in_a_kip848_group() {
    if !testkit::python_available() {
        return;
    }
    let cluster = FakeCluster::builder()
        .consumer_heartbeat_interval(std::time::Duration::from_millis(300))
        .start_background()
        .expect("fake cluster starts");
    cluster.create_topic("interop-848", 4).expect("create");
    run_python(GROUP_SCRIPT, &cluster.bootstrap(), "interop-848");
    assert!(cluster.request_count(rskafka::protocol::ApiKey::CONSUMER_GROUP_HEARTBEAT) > 0);
}

/// The Kafka jars of the broker `scripts/kafka` runs, for the Java client;
/// `None` after reporting the skip without java or the jars.
fn kafka_classpath() -> Option<String> {
    let jars = testkit::kafka_jars();
    let java = Command::new("java").arg("-version").output().is_ok();
    match jars {
        Some(jars) if java => Some(jars),
        _ => {
            testkit::skip("no java or Kafka jars (scripts/kafka classpath) for the Java client");
            None
        }
    }
}

#[test]
fn java_client_produces_consumes_and_reads_offsets() {
    let Some(classpath) = kafka_classpath() else {
        return;
    };
    let cluster = FakeCluster::builder()
        .brokers(2)
        .start_background()
        .expect("fake cluster starts");
    cluster.create_topic("interop-java", 1).expect("create");
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/java/FakeCheck.java");
    let out = Command::new("java")
        .arg("-cp")
        .arg(&classpath)
        .arg(&source)
        .args([&cluster.bootstrap(), "interop-java"])
        .output()
        .expect("java runs");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "Java client: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cluster.offsets("interop-java", 0), Some((0, 100)));
}
