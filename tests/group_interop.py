#!/usr/bin/env python3
"""A librdkafka group member (PyPI confluent-kafka) for tests/group.rs.

It joins a group, and for every record prints a JSON line and commits the
record synchronously before polling for the next one, so that the group
processes each record exactly once. Assignment changes are printed with a
wall-clock timestamp (nanoseconds), so the Rust test can merge them with its
own members' and check that no partition is ever owned twice. It stops when
stdin closes or says "stop", leaving the group.

Output lines (space-separated, partitions as topic:partition joined by
commas, "-" for none):
  ready
  assigned|revoked|lost <unix time in ns> <partitions>
  rec <partition> <offset>
  error <message>
  closed
"""

import argparse
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaException


def emit(*fields):
    print(" ".join(str(f) for f in fields), flush=True)


def parts(partitions):
    return ",".join(f"{tp.topic}:{tp.partition}" for tp in partitions) or "-"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--protocol", default="classic", choices=["classic", "consumer"])
    ap.add_argument("--strategy", default="range")
    ap.add_argument("--instance-id")
    ap.add_argument("--no-commit", action="store_true",
                    help="consume without committing")
    ap.add_argument("--max-records", type=int, default=0,
                    help="stop after this many records (0: no limit)")
    args = ap.parse_args()

    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "group.protocol": args.protocol,
    }
    if args.protocol == "classic":
        conf.update({
            "partition.assignment.strategy": args.strategy,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500,
            "max.poll.interval.ms": 20000,
        })
    if args.instance_id:
        conf["group.instance.id"] = args.instance_id

    stop = threading.Event()

    def watch_stdin():
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()

    def on_assign(consumer, partitions):
        emit("assigned", time.time_ns(), parts(partitions))

    def on_revoke(consumer, partitions):
        emit("revoked", time.time_ns(), parts(partitions))

    def on_lost(consumer, partitions):
        emit("lost", time.time_ns(), parts(partitions))

    consumer = Consumer(conf)
    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    emit("ready")
    count = 0
    try:
        while not stop.is_set():
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            if msg.error():
                emit("error", str(msg.error()).replace("\n", " "))
                continue
            emit("rec", msg.partition(), msg.offset())
            if not args.no_commit:
                while True:
                    try:
                        consumer.commit(message=msg, asynchronous=False)
                        break
                    except KafkaException as e:
                        emit("error", "commit:", str(e).replace("\n", " "))
                        if not e.args[0].retriable():
                            # Refused (e.g. a generation that a rebalance
                            # ended): the record may be delivered again.
                            emit("uncommitted", msg.partition(), msg.offset())
                            break
                        time.sleep(0.1)
            count += 1
            if args.max_records and count >= args.max_records:
                break
    finally:
        consumer.close()
        emit("closed")


if __name__ == "__main__":
    main()
