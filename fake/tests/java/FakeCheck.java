// The Java client against the fake cluster (fake/tests/interop.rs): an
// idempotent producer writes 20 records with each codec to partition 0 of
// TOPIC; a consumer without a group reads them back in order; the
// beginning and end offsets and an offset by time are looked up. Prints
// "ok"; any mismatch or error ends with a non-zero status.
//
//   java -cp KAFKA_JARS FakeCheck.java BOOTSTRAP TOPIC
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class FakeCheck {
    static final String[] CODECS = {"none", "gzip", "snappy", "lz4", "zstd"};
    static final int PER_CODEC = 20;

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        TopicPartition tp = new TopicPartition(topic, 0);
        for (String codec : CODECS) {
            Properties p = new Properties();
            p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
            p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
            p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
            try (KafkaProducer<byte[], byte[]> producer =
                    new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer())) {
                for (int j = 0; j < PER_CODEC; j++) {
                    producer.send(new ProducerRecord<>(topic, 0, null,
                            (codec + "-" + j).getBytes(StandardCharsets.UTF_8)));
                }
                producer.flush();
            }
        }
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        try (KafkaConsumer<byte[], byte[]> consumer =
                new KafkaConsumer<>(c, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<String> got = new ArrayList<>();
            long deadline = System.currentTimeMillis() + 20_000;
            while (got.size() < CODECS.length * PER_CODEC && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
                    got.add(r.offset() + ":" + new String(r.value(), StandardCharsets.UTF_8));
                }
            }
            List<String> want = new ArrayList<>();
            for (int k = 0; k < CODECS.length * PER_CODEC; k++) {
                want.add(k + ":" + CODECS[k / PER_CODEC] + "-" + (k % PER_CODEC));
            }
            check(got.equals(want), "records: " + got);
            Map<TopicPartition, Long> begin = consumer.beginningOffsets(List.of(tp));
            Map<TopicPartition, Long> end = consumer.endOffsets(List.of(tp));
            check(begin.get(tp) == 0 && end.get(tp) == want.size(), "offsets: " + begin + " " + end);
            Map<TopicPartition, OffsetAndTimestamp> byTime = consumer.offsetsForTimes(Map.of(tp, 0L));
            check(byTime.get(tp) != null && byTime.get(tp).offset() == 0, "offsets by time: " + byTime);
        }
        System.out.println("ok");
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("mismatch: " + what);
            System.exit(1);
        }
    }
}
