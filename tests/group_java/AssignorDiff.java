// Runs the Java client's own partition assignors on scenarios sent by
// tests/group_assignor_java.rs, so that rskafka's assignors can be compared
// with them. Line protocol on stdin/stdout:
//   ASSIGNOR <name>                   starts a scenario
//   TOPIC <name> <racks of p0> <racks of p1> ...   (racks comma-separated, "-" for none)
//   MEMBER <member id> <instance id or -> <hex of the encoded subscription>
//   RUN                               prints "RESULT", "<member> <t:p,t:p,...>" lines, "END"
import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

import org.apache.kafka.clients.consumer.ConsumerPartitionAssignor;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.consumer.RoundRobinAssignor;
import org.apache.kafka.clients.consumer.StickyAssignor;
import org.apache.kafka.clients.consumer.internals.ConsumerProtocol;
import org.apache.kafka.common.Cluster;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;

public class AssignorDiff {
    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), false, "UTF-8");
        String name = null;
        List<PartitionInfo> partitions = new ArrayList<>();
        Map<String, Node> rackNodes = new HashMap<>();
        // A HashMap filled in JoinGroup order, as ConsumerCoordinator does.
        Map<String, ConsumerPartitionAssignor.Subscription> subscriptions = new HashMap<>();
        String line;
        while ((line = in.readLine()) != null) {
            String[] f = line.split(" ", -1);
            switch (f[0]) {
                case "ASSIGNOR":
                    name = f[1];
                    partitions = new ArrayList<>();
                    rackNodes = new HashMap<>();
                    subscriptions = new HashMap<>();
                    break;
                case "TOPIC":
                    for (int p = 0; p + 2 < f.length; p++) {
                        List<Node> replicas = new ArrayList<>();
                        if (!f[p + 2].equals("-")) {
                            for (String rack : f[p + 2].split(",")) {
                                Node node = rackNodes.get(rack);
                                if (node == null) {
                                    node = new Node(rackNodes.size(), "localhost", 9092, rack);
                                    rackNodes.put(rack, node);
                                }
                                replicas.add(node);
                            }
                        }
                        Node[] r = replicas.toArray(new Node[0]);
                        partitions.add(new PartitionInfo(f[1], p, r.length > 0 ? r[0] : null, r, r));
                    }
                    break;
                case "MEMBER": {
                    ConsumerPartitionAssignor.Subscription s =
                        ConsumerProtocol.deserializeSubscription(ByteBuffer.wrap(unhex(f[3])));
                    s.setGroupInstanceId(f[2].equals("-") ? Optional.empty() : Optional.of(f[2]));
                    subscriptions.put(f[1], s);
                    break;
                }
                case "RUN": {
                    ConsumerPartitionAssignor assignor = assignor(name);
                    Cluster cluster = new Cluster("c", new ArrayList<>(rackNodes.values()), partitions,
                        Collections.emptySet(), Collections.emptySet());
                    out.println("RESULT");
                    try {
                        Map<String, ConsumerPartitionAssignor.Assignment> result = assignor.assign(cluster,
                            new ConsumerPartitionAssignor.GroupSubscription(subscriptions)).groupAssignment();
                        for (Map.Entry<String, ConsumerPartitionAssignor.Assignment> e : result.entrySet()) {
                            StringBuilder sb = new StringBuilder(e.getKey()).append(' ');
                            boolean first = true;
                            for (TopicPartition tp : e.getValue().partitions()) {
                                if (!first) sb.append(',');
                                first = false;
                                sb.append(tp.topic()).append(':').append(tp.partition());
                            }
                            out.println(sb);
                        }
                    } catch (RuntimeException e) {
                        out.println("ERROR " + e.toString().replace('\n', ' '));
                    }
                    out.println("END");
                    out.flush();
                    break;
                }
                default:
                    throw new IllegalArgumentException("unknown line: " + line);
            }
        }
    }

    static ConsumerPartitionAssignor assignor(String name) {
        switch (name) {
            case "range": return new RangeAssignor();
            case "roundrobin": return new RoundRobinAssignor();
            case "sticky": return new StickyAssignor();
            case "cooperative-sticky": return new CooperativeStickyAssignor();
            default: throw new IllegalArgumentException(name);
        }
    }

    static byte[] unhex(String s) {
        byte[] b = new byte[s.length() / 2];
        for (int i = 0; i < b.length; i++) {
            b[i] = (byte) Integer.parseInt(s.substring(2 * i, 2 * i + 2), 16);
        }
        return b;
    }
}
