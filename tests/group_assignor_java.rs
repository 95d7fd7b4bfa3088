//! Differential test: rskafka's assignors against the Java client's own
//! (`kafka-clients` from `scripts/kafka classpath`, run by
//! `tests/group_java/AssignorDiff.java`), over simulated rebalance
//! sequences: members join, leave, change subscriptions, miss a generation,
//! partitions are added, racks are known or not. Every assignment must be
//! the same as Java's, member by member.
//!
//! Needs `java`, `javac` and the Kafka jars; without them it prints why it
//! skips and passes.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use rskafka::client::group::{
    assignor::{
        Assignor, CooperativeStickyAssignor, GroupMember, GroupTopics, MemberAssignmentState,
        PartitionMetadata, RangeAssignor, RoundRobinAssignor, StickyAssignor,
    },
    protocol::Subscription,
    TopicPartition,
};

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

struct Java {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Java {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn start_java() -> Option<Java> {
    let Some(classpath) = testkit::kafka_jars() else {
        testkit::skip("`scripts/kafka classpath` gave no kafka-clients jar");
        return None;
    };
    let out = repo().join("target/group-java-harness");
    let _ = std::fs::create_dir_all(&out);
    let compiled = Command::new("javac")
        .arg("-cp")
        .arg(&classpath)
        .arg("-d")
        .arg(&out)
        .arg(repo().join("tests/group_java/AssignorDiff.java"))
        .status();
    match compiled {
        Ok(s) if s.success() => {}
        other => {
            testkit::skip(format!("javac unavailable or failed: {other:?}"));
            return None;
        }
    }
    let mut child = Command::new("java")
        .arg("-cp")
        .arg(format!("{classpath}:{}", out.display()))
        .arg("AssignorDiff")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // The assignors log their tie-breaking at WARN; keep it out of the
        // test output but at hand.
        .stderr(
            std::fs::File::create(out.join("java-stderr.log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn()
        .ok()?;
    let stdin = child.stdin.take()?;
    let stdout = BufReader::new(child.stdout.take()?);
    Some(Java {
        child,
        stdin,
        stdout,
    })
}

type Result = std::result::Result<BTreeMap<String, BTreeSet<TopicPartition>>, String>;

impl Java {
    fn run(
        &mut self,
        assignor: &str,
        topics: &GroupTopics,
        members: &[(String, Option<String>, Vec<u8>)],
    ) -> Result {
        let mut msg = format!("ASSIGNOR {assignor}\n");
        for (t, parts) in topics {
            msg.push_str(&format!("TOPIC {t}"));
            for p in parts {
                if p.replica_racks.is_empty() {
                    msg.push_str(" -");
                } else {
                    msg.push_str(&format!(" {}", p.replica_racks.join(",")));
                }
            }
            msg.push('\n');
        }
        for (id, instance, bytes) in members {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            msg.push_str(&format!(
                "MEMBER {id} {} {hex}\n",
                instance.as_deref().unwrap_or("-")
            ));
        }
        msg.push_str("RUN\n");
        self.stdin.write_all(msg.as_bytes()).expect("write to java");
        self.stdin.flush().expect("flush to java");
        let mut out = BTreeMap::new();
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("read from java");
            assert!(n > 0, "the Java harness exited");
            let l = line.trim_end();
            if l == "RESULT" {
                continue;
            }
            if l == "END" {
                return Ok(out);
            }
            if let Some(e) = l.strip_prefix("ERROR ") {
                // Drain to END.
                let e = e.to_owned();
                loop {
                    line.clear();
                    if self.stdout.read_line(&mut line).unwrap_or(0) == 0
                        || line.trim_end() == "END"
                    {
                        return Err(e);
                    }
                }
            }
            let (member, parts) = l.split_once(' ').unwrap_or((l, ""));
            let set = parts
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    let (t, p) = s.rsplit_once(':').expect("t:p");
                    TopicPartition::new(t, p.parse().expect("partition"))
                })
                .collect();
            out.insert(member.to_owned(), set);
        }
    }
}

#[derive(Clone)]
struct SimMember {
    id: String,
    instance: Option<String>,
    rack: Option<String>,
    topics: Vec<String>,
    owned: Vec<TopicPartition>,
    generation: i32,
    last: Option<Vec<TopicPartition>>,
}

const RACKS: [&str; 3] = ["r0", "r1", "r2"];

fn random_topics(rng: &mut Rng, all: &[String]) -> Vec<String> {
    let mut t: Vec<String> = all.iter().filter(|_| rng.chance(60)).cloned().collect();
    if t.is_empty() {
        t.push(all[rng.below(all.len())].clone());
    }
    t
}

fn new_member(
    rng: &mut Rng,
    n: usize,
    topics: &[String],
    racks: bool,
    same_topics: bool,
) -> SimMember {
    SimMember {
        id: format!("rskafka-{n}-{:016x}", rng.next()),
        instance: rng
            .chance(20)
            .then(|| format!("instance-{:x}", rng.next() % 1000)),
        rack: (racks && rng.chance(80)).then(|| RACKS[rng.below(3)].to_owned()),
        topics: if same_topics {
            topics.to_vec()
        } else {
            random_topics(rng, topics)
        },
        owned: Vec::new(),
        generation: -1,
        last: None,
    }
}

fn check_valid(result: &BTreeMap<String, BTreeSet<TopicPartition>>, topics: &GroupTopics) {
    let mut seen = BTreeSet::new();
    for parts in result.values() {
        for tp in parts {
            assert!(seen.insert(tp.clone()), "{tp} assigned twice");
            let n = topics.get(&*tp.topic).map_or(0, Vec::len);
            assert!((tp.partition as usize) < n, "{tp} does not exist");
        }
    }
}

fn simulate(java: &mut Java, assignor: &dyn Assignor, seed: u64) -> usize {
    let name = assignor.name().to_owned();
    let cooperative = name == "cooperative-sticky";
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let racks = rng.chance(30);
    let same_topics = rng.chance(50);
    let topic_names: Vec<String> = (0..1 + rng.below(4))
        .map(|i| ["t", "topic", "orders", "a-b.c_d"][i % 4].to_owned() + &i.to_string())
        .collect();
    let mut topics: GroupTopics = BTreeMap::new();
    let new_partition = |rng: &mut Rng, p: usize| PartitionMetadata {
        partition: p as i32,
        replica_racks: if racks && rng.chance(90) {
            let mut r: Vec<String> = RACKS
                .iter()
                .filter(|_| rng.chance(50))
                .map(|s| (*s).to_owned())
                .collect();
            if r.is_empty() {
                r.push(RACKS[rng.below(3)].to_owned());
            }
            r
        } else {
            Vec::new()
        },
    };
    for t in &topic_names {
        let n = 1 + rng.below(12);
        let parts = (0..n).map(|p| new_partition(&mut rng, p)).collect();
        topics.insert(t.clone(), parts);
    }
    let mut counter = 0;
    let mut members: Vec<SimMember> = (0..1 + rng.below(6))
        .map(|_| {
            counter += 1;
            new_member(&mut rng, counter, &topic_names, racks, same_topics)
        })
        .collect();
    let mut generation = 0;
    let mut runs = 0;
    for round in 0..7 {
        if round > 0 {
            if rng.chance(40) {
                for _ in 0..1 + rng.below(3) {
                    counter += 1;
                    members.push(new_member(
                        &mut rng,
                        counter,
                        &topic_names,
                        racks,
                        same_topics,
                    ));
                }
            }
            if members.len() > 1 && rng.chance(40) {
                let i = rng.below(members.len());
                members.remove(i);
            }
            if !same_topics && rng.chance(30) {
                let i = rng.below(members.len());
                members[i].topics = random_topics(&mut rng, &topic_names);
            }
            if rng.chance(20) {
                let t = &topic_names[rng.below(topic_names.len())];
                let parts = topics.get_mut(t).expect("topic");
                let extra = 1 + rng.below(4);
                for _ in 0..extra {
                    let p = parts.len();
                    parts.push(new_partition(&mut rng, p));
                }
            }
        }
        rng_shuffle(&mut rng, &mut members);
        let mut encoded = Vec::new();
        let mut group = Vec::new();
        for m in &members {
            let state = MemberAssignmentState {
                generation: m.generation,
                last_assignment: m.last.as_deref(),
            };
            let sub = Subscription {
                topics: m.topics.clone(),
                user_data: assignor.subscription_user_data(&state),
                owned_partitions: if cooperative {
                    m.owned.clone()
                } else {
                    Vec::new()
                },
                generation_id: (m.generation >= 0).then_some(m.generation),
                rack_id: m.rack.clone(),
                group_instance_id: None,
            };
            let bytes = sub.encode(3).expect("encode");
            let mut decoded = Subscription::decode(bytes.clone()).expect("decode");
            decoded.group_instance_id = m.instance.clone();
            group.push(GroupMember {
                member_id: m.id.clone(),
                subscription: decoded,
            });
            encoded.push((m.id.clone(), m.instance.clone(), bytes.to_vec()));
        }
        let ours = assignor.assign(&topics, &group).map(|a| {
            a.into_iter()
                .map(|(k, v)| (k, v.into_iter().collect::<BTreeSet<_>>()))
                .collect::<BTreeMap<_, _>>()
        });
        let theirs = java.run(&name, &topics, &encoded);
        runs += 1;
        match (&ours, &theirs) {
            (Ok(o), Ok(t)) => {
                assert_eq!(
                    o, t,
                    "{name} seed {seed} round {round}: rskafka (left) and Java (right) differ\ntopics: {topics:?}\nmembers: {group:?}"
                );
                check_valid(o, &topics);
            }
            (Err(o), Err(t)) => eprintln!("{name} seed {seed}: both failed: {o} / {t}"),
            _ => panic!("{name} seed {seed} round {round}: {ours:?} vs Java {theirs:?}"),
        }
        let Ok(result) = ours else { break };
        generation += 1;
        for m in &mut members {
            // Now and then a member misses the new generation and keeps
            // claiming what it had (a stale claim the assignors must resolve).
            if round > 0 && rng.chance(8) {
                continue;
            }
            let assigned: Vec<TopicPartition> = result
                .get(&m.id)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            m.owned = assigned.clone();
            m.last = Some(assigned);
            m.generation = generation;
        }
    }
    runs
}

fn rng_shuffle<T>(rng: &mut Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
}

#[test]
fn assignors_match_the_java_client() {
    if !Path::new("/usr/bin/java").exists()
        && Command::new("java").arg("-version").output().is_err()
    {
        testkit::skip("no java");
        return;
    }
    let Some(mut java) = start_java() else { return };
    let assignors: [&dyn Assignor; 4] = [
        &RangeAssignor,
        &RoundRobinAssignor,
        &StickyAssignor,
        &CooperativeStickyAssignor,
    ];
    let seeds: u64 = std::env::var("ASSIGNOR_DIFF_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    for a in assignors {
        let mut runs = 0;
        for seed in 0..seeds {
            runs += simulate(&mut java, a, seed);
        }
        eprintln!(
            "{}: {runs} assignments identical to the Java client's",
            a.name()
        );
    }
}
