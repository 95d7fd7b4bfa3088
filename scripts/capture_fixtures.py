#!/usr/bin/env python3
"""Capture record-batch fixtures written by real Kafka clients.

For each client (the Java client, and librdkafka through confluent-kafka) and
each codec (none, gzip, snappy, lz4, zstd) this creates a fresh topic on the
local broker, produces the same known records to it, and copies the topic's
first log segment: a log segment is exactly the concatenated v2 record
batches the broker would return in a Fetch response. It also captures a
LogAppendTime topic and a transactional topic (commit and abort markers).

The expected records (RECORDS below) are mirrored in tests/record_fixtures.rs;
change both together.

Usage (broker from `scripts/kafka up`, run from anywhere):
    scripts/capture_fixtures.py [--bootstrap 127.0.0.1:9092] [--out DIR]
    scripts/capture_fixtures.py --check-encoder

--check-encoder goes the other way: it has rskafka's writer encode RECORDS
in every codec (the `our_batches_in_every_codec` test), sends each batch
as-is in a raw Produce request (the broker's validation decompresses it with
the Java client's codecs), and reads it back with librdkafka, comparing every
record. It writes no fixtures.

Needs: `pip install confluent-kafka`, a JDK (javac), and `scripts/kafka
classpath` (the Kafka jars the broker runs from).
"""

import argparse
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
BASE_TS = 1_700_000_000_000

# (key, value, headers, timestamp); None is null. Mirrored in the Rust test.
RECORDS = [
    (b"key-0", b"value-0", [("h1", b"v1"), ("h2", None)], BASE_TS),
    (None, b"null-key", [], BASE_TS + 1000),
    (b"tombstone", None, [], BASE_TS + 2000),
    (b"", b"", [], BASE_TS + 1500),
    (b"big", b"0123456789" * 1000, [], BASE_TS + 3000),
    ("utf8-ключ".encode(), "ünïcödé ✓".encode(), [("dup", b"a"), ("dup", b"b")], BASE_TS + 4000),
]

# A producer that sends RECORDS in one batch. The records are passed as hex
# arguments so this file stays the single source of them.
JAVA_PRODUCER = r"""
import java.util.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class FixtureProducer {
    static byte[] hex(String s) {
        if (s.equals("-")) return null;
        byte[] out = new byte[s.length() / 2];
        for (int i = 0; i < out.length; i++)
            out[i] = (byte) Integer.parseInt(s.substring(2 * i, 2 * i + 2), 16);
        return out;
    }

    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put("compression.type", args[2]);
        p.put("linger.ms", "2000");
        p.put("batch.size", "1048576");
        p.put("acks", "all");
        try (Producer<byte[], byte[]> producer =
                 new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer())) {
            // Each further argument: ts key value [hkey hvalue]...
            List<java.util.concurrent.Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 3; i < args.length; i++) {
                String[] f = args[i].split(",", -1);
                ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(
                    args[1], 0, Long.parseLong(f[0]), hex(f[1]), hex(f[2]));
                for (int h = 3; h + 1 < f.length; h += 2)
                    r.headers().add(new RecordHeader(new String(hex(f[h]), "UTF-8"), hex(f[h + 1])));
                sent.add(producer.send(r));
            }
            producer.flush();
            for (java.util.concurrent.Future<RecordMetadata> f : sent) f.get();
        }
    }
}
"""


def hexarg(b):
    return "-" if b is None else b.hex()


def kafka_script(*args):
    return subprocess.run(
        [os.path.join(ROOT, "scripts", "kafka"), *args],
        check=True, capture_output=True, text=True,
    ).stdout


def log_dir_from_status():
    out = subprocess.run(
        [os.path.join(ROOT, "scripts", "kafka"), "status"], capture_output=True, text=True
    )
    m = re.search(r"dir (\S+)\)", out.stdout + out.stderr)
    return os.path.join(m.group(1), "data") if m else os.path.join(ROOT, "target", "kafka", "data")


def create_topic(admin, name, config=None):
    from confluent_kafka.admin import NewTopic

    # The fixed 2023 timestamps would otherwise make the broker roll a new
    # segment at each append (segment.ms counts from record timestamps) and
    # let retention delete them.
    config = {"retention.ms": "-1", "segment.ms": str(1000 * 365 * 24 * 3600 * 1000), **(config or {})}
    fs = admin.create_topics([NewTopic(name, 1, 1, config=config)], operation_timeout=30)
    for f in fs.values():
        f.result(timeout=60)


def produce_librdkafka(bootstrap, topic, codec):
    from confluent_kafka import Producer

    p = Producer({
        "bootstrap.servers": bootstrap,
        "compression.type": codec,
        "linger.ms": 2000,
        "acks": "all",
    })
    errors = []
    for key, value, headers, ts in RECORDS:
        p.produce(topic, key=key, value=value, headers=headers, timestamp=ts, partition=0,
                  on_delivery=lambda err, _msg: err and errors.append(err))
    if p.flush(60) != 0 or errors:
        sys.exit(f"librdkafka produce to {topic} failed: {errors}")


def produce_transactional(bootstrap, topic):
    from confluent_kafka import Producer

    p = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": f"rskafka-fixture-{uuid.uuid4().hex[:8]}",
        "linger.ms": 100,
    })
    p.init_transactions(60)
    for commit, values in [(True, [b"committed-1", b"committed-2"]), (False, [b"aborted"])]:
        p.begin_transaction()
        for v in values:
            p.produce(topic, key=b"txn", value=v, partition=0, timestamp=BASE_TS)
        p.flush(60)
        (p.commit_transaction if commit else p.abort_transaction)(60)


def compile_java(workdir, classpath):
    src = os.path.join(workdir, "FixtureProducer.java")
    with open(src, "w") as f:
        f.write(JAVA_PRODUCER)
    subprocess.run(["javac", "-cp", classpath, "-d", workdir, src], check=True)


def produce_java(bootstrap, topic, codec, workdir, classpath):
    args = []
    for key, value, headers, ts in RECORDS:
        fields = [str(ts), hexarg(key), hexarg(value)]
        for hk, hv in headers:
            fields += [hk.encode().hex(), hexarg(hv)]
        args.append(",".join(fields))
    subprocess.run(
        ["java", "-cp", f"{classpath}:{workdir}", "FixtureProducer", bootstrap, topic, codec, *args],
        check=True, timeout=120,
    )


def batch_count(data):
    """Complete batches in a segment (each: 8-byte offset, 4-byte length, body)."""
    pos = n = 0
    while pos + 12 <= len(data):
        pos += 12 + int.from_bytes(data[pos + 8:pos + 12], "big", signed=True)
        n += pos <= len(data)
    return n


def read_segments(part_dir):
    """The partition's log segments, concatenated in offset order."""
    if not os.path.isdir(part_dir):
        return b""
    data = b""
    for name in sorted(n for n in os.listdir(part_dir) if n.endswith(".log")):
        with open(os.path.join(part_dir, name), "rb") as f:
            data += f.read()
    return data


def copy_segment(log_dir, topic, dest, batches=1):
    """Copies the topic's log once it holds `batches` batches (the broker
    appends before acknowledging, but transaction markers land
    asynchronously after commit/abort returns)."""
    seg = os.path.join(log_dir, f"{topic}-0")
    deadline = time.time() + 60
    while True:
        data = read_segments(seg)
        if batch_count(data) >= batches:
            break
        if time.time() > deadline:
            sys.exit(f"{seg}: {batch_count(data)} batches after 60 s, expected {batches}")
        time.sleep(0.2)
    with open(dest, "wb") as f:
        f.write(data)
    print(f"{dest}: {len(data)} bytes, {batch_count(data)} batches, from topic {topic}")


def kafka_string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return buf


def produce_raw(bootstrap, topic, batch):
    """Sends `batch` unchanged in a Produce v7 request (acks=all; v7 is the
    first that allows zstd, and v3-v8 share one layout); returns the
    partition's error code and base offset."""
    host, port = bootstrap.rsplit(":", 1)
    body = struct.pack(">hhi", -1, -1, 30000)  # no transactional id, acks, timeout
    body += struct.pack(">i", 1) + kafka_string(topic)
    body += struct.pack(">ii", 1, 0) + struct.pack(">i", len(batch)) + batch
    header = struct.pack(">hhi", 0, 7, 1) + kafka_string("rskafka-fixtures")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.settimeout(30)
        sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        size = struct.unpack(">i", recv_exact(sock, 4))[0]
        resp = recv_exact(sock, size)
    # correlation id, [topics: name, [partitions: index, error, base offset, append time]]
    pos = 4 + 4
    name_len = struct.unpack_from(">h", resp, pos)[0]
    pos += 2 + name_len + 4
    _index, error, base_offset = struct.unpack_from(">ihq", resp, pos)
    return error, base_offset


def consume_librdkafka(bootstrap, topic, count):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"rskafka-check-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    out, deadline = [], time.time() + 60
    while len(out) < count and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            sys.exit(f"librdkafka consume of {topic}: {m.error()}")
        out.append(m)
    c.close()
    return out


def check_encoder(bootstrap):
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as dump:
        subprocess.run(
            ["cargo", "test", "--quiet", "--test", "record_fixtures", "our_batches_in_every_codec"],
            cwd=ROOT, check=True, env={**os.environ, "RSKAFKA_DUMP_BATCHES": dump},
        )
        failures = 0
        for codec in CODECS:
            path = os.path.join(dump, f"rskafka-{codec}.bin")
            if not os.path.exists(path):
                print(f"{codec}: not built (codec feature off)")
                continue
            topic = f"rskafka-check-encoder-{codec}-{run}"
            create_topic(admin, topic)
            batch = open(path, "rb").read()
            deadline = time.time() + 30
            # UNKNOWN_TOPIC_OR_PARTITION / NOT_LEADER_OR_FOLLOWER until the
            # new topic's leader is known
            while (error_base := produce_raw(bootstrap, topic, batch))[0] in (3, 6) and time.time() < deadline:
                time.sleep(0.5)
            error, base = error_base
            if error != 0:
                print(f"{codec}: broker rejected our batch with error code {error}")
                failures += 1
                continue
            got = [(m.key(), m.value(), m.headers() or [], m.timestamp()[1])
                   for m in consume_librdkafka(bootstrap, topic, len(RECORDS))]
            want = [(k, v, h, ts) for k, v, h, ts in RECORDS]
            if got != want:
                print(f"{codec}: librdkafka read back {got!r}")
                failures += 1
            else:
                print(f"{codec}: broker accepted (base offset {base}), librdkafka read all {len(got)} records back")
        if failures:
            sys.exit(f"{failures} codec(s) failed")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "records"))
    ap.add_argument("--log-dir", default=None, help="broker data dir (default: from scripts/kafka status)")
    ap.add_argument("--check-encoder", action="store_true",
                    help="check rskafka's encoded batches against the broker and librdkafka instead")
    args = ap.parse_args()
    if args.check_encoder:
        check_encoder(args.bootstrap)
        return

    from confluent_kafka.admin import AdminClient

    log_dir = args.log_dir or log_dir_from_status()
    os.makedirs(args.out, exist_ok=True)
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    run = uuid.uuid4().hex[:8]
    classpath = kafka_script("classpath").strip()

    with tempfile.TemporaryDirectory() as work:
        compile_java(work, classpath)
        for codec in CODECS:
            for client in ["java", "librdkafka"]:
                topic = f"rskafka-fixture-{client}-{codec}-{run}"
                create_topic(admin, topic)
                if client == "java":
                    produce_java(args.bootstrap, topic, codec, work, classpath)
                else:
                    produce_librdkafka(args.bootstrap, topic, codec)
                copy_segment(log_dir, topic, os.path.join(args.out, f"{client}-{codec}.bin"))

    topic = f"rskafka-fixture-logappendtime-{run}"
    create_topic(admin, topic, {"message.timestamp.type": "LogAppendTime"})
    produce_librdkafka(args.bootstrap, topic, "gzip")
    copy_segment(log_dir, topic, os.path.join(args.out, "librdkafka-gzip-logappendtime.bin"))

    topic = f"rskafka-fixture-transactional-{run}"
    create_topic(admin, topic)
    produce_transactional(args.bootstrap, topic)
    # committed data, COMMIT marker, aborted data, ABORT marker
    copy_segment(log_dir, topic, os.path.join(args.out, "librdkafka-transactional.bin"), batches=4)


if __name__ == "__main__":
    main()
