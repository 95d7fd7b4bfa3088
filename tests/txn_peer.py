#!/usr/bin/env python3
"""A librdkafka (PyPI confluent-kafka) transactional peer for
tests/transactions.rs; tests/txn_java/TxnPeer.java is its Java twin.

  produce BOOTSTRAP TOPIC TXN_ID PLAN [--transaction-timeout-ms MS]
      One transaction per PLAN element, e.g. "c5,a3,c2": a committed
      transaction of 5 records, an aborted one of 3, a committed one of 2.
      Record j of transaction i (from 0) has the value "TXN_ID:i:k:j" (k the
      element's letter) and goes to partition j % partitions, so a reader can
      tell which transaction every record belongs to. An aborted
      transaction's records are flushed (written) before the abort, so that
      read_uncommitted readers see them. The letter "o" opens a transaction,
      writes and flushes its records, prints "open i" and sleeps until killed
      (the test SIGKILLs it in the middle of the transaction).
      Prints "committed i" / "aborted i" per transaction, then "done".

  consume BOOTSTRAP TOPIC
      Reads every partition from the beginning under read_committed, without
      joining a group, up to its end (the last stable offset), and prints
      "rec PARTITION OFFSET VALUE" per record, then "end COUNT".

Errors go to stderr with a non-zero exit status.
"""

import argparse
import sys
import time

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException,
                             Producer, TopicPartition)


def emit(*fields):
    print(" ".join(str(f) for f in fields), flush=True)


def parse_plan(plan):
    steps = []
    for element in plan.split(","):
        kind, count = element[:1], element[1:]
        if kind not in ("c", "a", "o") or not count.isdigit():
            raise SystemExit(f"bad plan element {element!r} (want c<n>, a<n> or o<n>)")
        steps.append((kind, int(count)))
    return steps


def partition_count(client, topic):
    md = client.list_topics(topic, timeout=30)
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise SystemExit(f"topic {topic} is not there: {t.error if t else 'no metadata'}")
    return len(t.partitions)


def produce(args):
    conf = {
        "bootstrap.servers": args.bootstrap,
        "transactional.id": args.txn_id,
        "linger.ms": 5,
    }
    if args.transaction_timeout_ms:
        conf["transaction.timeout.ms"] = args.transaction_timeout_ms
        # librdkafka wants its socket timeout within the transaction
        # timeout (+100 ms).
        conf["socket.timeout.ms"] = min(60000, args.transaction_timeout_ms)
    producer = Producer(conf)
    partitions = partition_count(producer, args.topic)
    producer.init_transactions(60)
    failures = []

    def on_delivery(err, msg):
        if err is not None:
            failures.append(str(err))

    for i, (kind, count) in enumerate(parse_plan(args.plan)):
        producer.begin_transaction()
        for j in range(count):
            producer.produce(
                args.topic,
                value=f"{args.txn_id}:{i}:{kind}:{j}".encode(),
                partition=j % partitions,
                on_delivery=on_delivery,
            )
        if kind == "c":
            producer.commit_transaction(60)
            emit("committed", i)
        else:
            remaining = producer.flush(60)
            if remaining or failures:
                raise SystemExit(f"transaction {i}: {remaining} unflushed, failures {failures}")
            if kind == "a":
                producer.abort_transaction(60)
                emit("aborted", i)
            else:
                emit("open", i)
                while True:
                    time.sleep(3600)
        if failures:
            raise SystemExit(f"transaction {i}: deliveries failed: {failures}")
    emit("done")


def consume(args):
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        # Required by the client, never used: partitions are assigned, not
        # subscribed, and nothing is committed.
        "group.id": "txn-peer-unused",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        # End of partition is reported at the last stable offset under
        # read_committed: that is where reading stops.
        "enable.partition.eof": True,
    })
    partitions = partition_count(consumer, args.topic)
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    at_end = set()
    count = 0
    deadline = time.monotonic() + args.timeout
    while len(at_end) < partitions:
        if time.monotonic() > deadline:
            raise SystemExit(f"partitions {sorted(set(range(partitions)) - at_end)} "
                             f"did not reach their end in {args.timeout} s")
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
                continue
            raise KafkaException(msg.error())
        emit("rec", msg.partition(), msg.offset(), msg.value().decode())
        count += 1
    consumer.close()
    emit("end", count)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("produce")
    p.add_argument("bootstrap")
    p.add_argument("topic")
    p.add_argument("txn_id")
    p.add_argument("plan")
    p.add_argument("--transaction-timeout-ms", type=int, default=0)
    c = sub.add_parser("consume")
    c.add_argument("bootstrap")
    c.add_argument("topic")
    c.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()
    try:
        if args.mode == "produce":
            produce(args)
        else:
            consume(args)
    except KafkaException as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
