// A Java-client transactional peer for tests/transactions.rs, the twin of
// tests/txn_peer.py (same modes, arguments and output):
//
//   produce BOOTSTRAP TOPIC TXN_ID PLAN [TRANSACTION_TIMEOUT_MS]
//       One transaction per PLAN element ("c5,a3,c2": committed of 5,
//       aborted of 3, committed of 2; "o4": left open, the process sleeps
//       until killed). Record j of transaction i has the value
//       "TXN_ID:i:k:j" and goes to partition j % partitions. Aborted and open
//       transactions' records are flushed (written) first. Prints
//       "committed i" / "aborted i" / "open i", then "done".
//   consume BOOTSTRAP TOPIC
//       Reads every partition from the beginning under read_committed,
//       without a group, up to the last stable offset; prints
//       "rec PARTITION OFFSET VALUE" per record, then "end COUNT".
//
// Errors end the process with a stack trace and a non-zero status.
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class TxnPeer {
    static void emit(String line) {
        System.out.println(line);
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        if (args.length >= 5 && args[0].equals("produce")) {
            produce(args[1], args[2], args[3], args[4], args.length > 5 ? Integer.parseInt(args[5]) : 0);
        } else if (args.length == 3 && args[0].equals("consume")) {
            consume(args[1], args[2]);
        } else {
            System.err.println("usage: produce BOOTSTRAP TOPIC TXN_ID PLAN [TIMEOUT_MS] | consume BOOTSTRAP TOPIC");
            System.exit(2);
        }
    }

    static void produce(String bootstrap, String topic, String txnId, String plan, int timeoutMs)
            throws Exception {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        props.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        if (timeoutMs > 0) {
            props.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, timeoutMs);
        }
        try (KafkaProducer<byte[], byte[]> producer =
                new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer())) {
            int partitions = producer.partitionsFor(topic).size();
            producer.initTransactions();
            String[] steps = plan.split(",");
            for (int i = 0; i < steps.length; i++) {
                char kind = steps[i].charAt(0);
                int count = Integer.parseInt(steps[i].substring(1));
                if (kind != 'c' && kind != 'a' && kind != 'o') {
                    throw new IllegalArgumentException("bad plan element " + steps[i]);
                }
                producer.beginTransaction();
                List<Future<RecordMetadata>> sent = new ArrayList<>();
                for (int j = 0; j < count; j++) {
                    byte[] value = (txnId + ":" + i + ":" + kind + ":" + j).getBytes(StandardCharsets.UTF_8);
                    sent.add(producer.send(new ProducerRecord<>(topic, j % partitions, null, value)));
                }
                if (kind == 'c') {
                    producer.commitTransaction();
                    emit("committed " + i);
                    continue;
                }
                producer.flush();
                // Throws if a record was not written.
                for (Future<RecordMetadata> f : sent) {
                    f.get();
                }
                if (kind == 'a') {
                    producer.abortTransaction();
                    emit("aborted " + i);
                } else {
                    emit("open " + i);
                    Thread.sleep(Long.MAX_VALUE);
                }
            }
        }
        emit("done");
    }

    static void consume(String bootstrap, String topic) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        try (KafkaConsumer<byte[], byte[]> consumer =
                new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            List<TopicPartition> parts = new ArrayList<>();
            consumer.partitionsFor(topic).forEach(p -> parts.add(new TopicPartition(topic, p.partition())));
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            // Under read_committed these are the last stable offsets.
            Map<TopicPartition, Long> ends = consumer.endOffsets(parts);
            long count = 0;
            long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (!atEnd(consumer, ends)) {
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("did not reach the end offsets " + ends);
                }
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                    emit("rec " + r.partition() + " " + r.offset() + " "
                            + new String(r.value(), StandardCharsets.UTF_8));
                    count++;
                }
            }
            emit("end " + count);
        }
    }

    static boolean atEnd(KafkaConsumer<byte[], byte[]> consumer, Map<TopicPartition, Long> ends) {
        for (Map.Entry<TopicPartition, Long> e : ends.entrySet()) {
            if (consumer.position(e.getKey()) < e.getValue()) {
                return false;
            }
        }
        return true;
    }
}
