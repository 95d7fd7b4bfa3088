"""Reads a whole topic with librdkafka under read_committed and prints
`RECORDS DISTINCT`: its records and their distinct `event_id`s. Exit 3
without confluent_kafka. Usage: read_committed.py BOOTSTRAP TOPIC"""

import json
import sys
import time

try:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
except ImportError:
    sys.exit(3)


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            # Assigned partitions only: the group is never joined.
            "group.id": "read-committed-check",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    at_end, records, ids = set(), 0, set()
    deadline = time.monotonic() + 120
    while len(at_end) < len(partitions):
        if time.monotonic() > deadline:
            sys.exit(f"not at the end of {len(partitions) - len(at_end)} partitions in time")
        for m in consumer.consume(num_messages=10000, timeout=1.0):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                    continue
                sys.exit(f"error: {m.error()}")
            records += 1
            ids.add(json.loads(m.value())["event_id"])
    consumer.close()
    print(records, len(ids))


main()
