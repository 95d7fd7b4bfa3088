// A Java-client group member for tests/group.rs, the counterpart of
// tests/group_interop.py: for every record it prints "rec <partition>
// <offset>" and commits it synchronously before polling again; assignment
// changes are printed as "assigned|revoked|lost <unix ns> <topic:p,...|->".
// It stops when stdin closes or says "stop", leaving the group. A commit
// refused because a rebalance is under way is retried before the next poll
// and, at the latest, in the revocation callback, as the Java client's
// documentation advises.
//
// Arguments: <bootstrap> <group> <topic> <classic|consumer> <assignor class or ->
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.RebalanceInProgressException;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class GroupMember {
    static long nowNs() {
        Instant t = Instant.now();
        return t.getEpochSecond() * 1_000_000_000L + t.getNano();
    }

    static String parts(Collection<TopicPartition> ps) {
        if (ps.isEmpty()) return "-";
        StringBuilder sb = new StringBuilder();
        for (TopicPartition tp : ps) {
            if (sb.length() > 0) sb.append(',');
            sb.append(tp.topic()).append(':').append(tp.partition());
        }
        return sb.toString();
    }

    static synchronized void emit(String line) {
        System.out.println(line);
        System.out.flush();
    }

    static void commit(KafkaConsumer<byte[], byte[]> consumer, Map<TopicPartition, OffsetAndMetadata> pending) {
        if (pending.isEmpty()) return;
        try {
            consumer.commitSync(pending);
            pending.clear();
        } catch (RebalanceInProgressException e) {
            // Retried before the next poll or in onPartitionsRevoked.
        }
    }

    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put("group.id", args[1]);
        p.put("enable.auto.commit", "false");
        p.put("auto.offset.reset", "earliest");
        p.put("group.protocol", args[3]);
        if (args[3].equals("classic")) {
            p.put("session.timeout.ms", "10000");
            p.put("heartbeat.interval.ms", "500");
            p.put("max.poll.interval.ms", "20000");
            p.put("partition.assignment.strategy", args[4]);
        }
        KafkaConsumer<byte[], byte[]> consumer =
            new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer());
        AtomicBoolean stop = new AtomicBoolean(false);
        Thread watcher = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = r.readLine()) != null && !line.trim().equals("stop")) { }
            } catch (Exception e) {
                // stdin gone: stop as well
            }
            stop.set(true);
            consumer.wakeup();
        });
        watcher.setDaemon(true);
        watcher.start();
        Map<TopicPartition, OffsetAndMetadata> pending = new HashMap<>();
        consumer.subscribe(Collections.singletonList(args[2]), new ConsumerRebalanceListener() {
            public void onPartitionsAssigned(Collection<TopicPartition> ps) {
                emit("assigned " + nowNs() + " " + parts(ps));
            }
            public void onPartitionsRevoked(Collection<TopicPartition> ps) {
                if (!pending.isEmpty()) {
                    consumer.commitSync(pending);
                    pending.clear();
                }
                emit("revoked " + nowNs() + " " + parts(ps));
            }
            public void onPartitionsLost(Collection<TopicPartition> ps) {
                emit("lost " + nowNs() + " " + parts(ps));
            }
        });
        emit("ready");
        try {
            while (!stop.get()) {
                commit(consumer, pending);
                ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(100));
                for (ConsumerRecord<byte[], byte[]> r : records) {
                    emit("rec " + r.partition() + " " + r.offset());
                    pending.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                    commit(consumer, pending);
                }
            }
            commit(consumer, pending);
        } catch (WakeupException e) {
            // asked to stop
        } catch (Exception e) {
            emit("error " + e.toString().replace('\n', ' '));
        } finally {
            consumer.close();
            emit("closed");
        }
    }
}
