//! Benchmark of the udp-to-kafka service (`scripts/bench-udp`): for each
//! variant, the highest rate of datagrams forwarded with under 0.1 % loss,
//! with CPU time per datagram and peak RSS.
//!
//! Variants: `ours` (udp-to-kafka, OPEN_DOORS), `ceiling` (udp-to-kafka,
//! CLOSED_DOORS: the receive ceiling), `rdkafka` (the same service on
//! librdkafka, `udp-forwarder-rdkafka`). Each trial starts the service
//! afresh, sends datagrams at a paced rate from several sockets for a fixed
//! time (the load generator runs in this process, on its own thread), waits
//! until the topic stops growing, stops the service with SIGTERM and takes
//! its CPU time and peak RSS from `wait4`. Loss is datagrams sent minus
//! records that arrived (the partitions' end offsets before and after); for
//! the ceiling, sent minus the service's own `received` count.
//!
//! Usage: udp-bench --ours PATH --rdkafka PATH [--brokers B] [--duration S]
//!   [--size BYTES] [--senders N] [--start-rate R] [--max-rate R]
//!   [--steps N] [--partitions N] [--variants ours,ceiling,rdkafka]
//!   [--compare-rate R]

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    process::{Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use rskafka::client::{partition::OffsetAt, Client, ClientBuilder};

/// Settings from the command line.
#[derive(Debug, Clone)]
struct Args {
    ours: String,
    rdkafka: String,
    brokers: String,
    duration: Duration,
    size: usize,
    senders: usize,
    start_rate: u64,
    max_rate: u64,
    steps: u32,
    partitions: i32,
    variants: Vec<String>,
    compare_rate: u64,
    max_loss: f64,
}

fn parse_args() -> Args {
    let mut a = Args {
        ours: String::new(),
        rdkafka: String::new(),
        brokers: std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        duration: Duration::from_secs(5),
        size: 512,
        senders: 8,
        start_rate: 25_000,
        max_rate: 2_000_000,
        steps: 4,
        partitions: 4,
        variants: vec!["ours".into(), "ceiling".into(), "rdkafka".into()],
        compare_rate: 50_000,
        max_loss: 0.001,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--ours" => a.ours = val(),
            "--rdkafka" => a.rdkafka = val(),
            "--brokers" => a.brokers = val(),
            "--duration" => a.duration = Duration::from_secs_f64(val().parse().unwrap()),
            "--size" => a.size = val().parse().unwrap(),
            "--senders" => a.senders = val().parse().unwrap(),
            "--start-rate" => a.start_rate = val().parse().unwrap(),
            "--max-rate" => a.max_rate = val().parse().unwrap(),
            "--steps" => a.steps = val().parse().unwrap(),
            "--partitions" => a.partitions = val().parse().unwrap(),
            "--variants" => a.variants = val().split(',').map(str::to_owned).collect(),
            "--compare-rate" => a.compare_rate = val().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        !a.ours.is_empty() && !a.rdkafka.is_empty(),
        "--ours and --rdkafka are required"
    );
    a
}

/// One trial's measurements.
#[derive(Debug, Clone, Default)]
struct Trial {
    target_rate: u64,
    sent: u64,
    send_secs: f64,
    /// Records that arrived (ceiling: datagrams the service received).
    arrived: u64,
    cpu_secs: f64,
    max_rss_kib: i64,
    p99_ms: String,
}

impl Trial {
    fn rate(&self) -> f64 {
        self.sent as f64 / self.send_secs.max(1e-9)
    }

    fn loss(&self) -> f64 {
        self.sent.saturating_sub(self.arrived) as f64 / self.sent.max(1) as f64
    }

    /// CPU seconds per million datagrams handled.
    fn cpu_per_million(&self) -> f64 {
        self.cpu_secs / self.arrived.max(1) as f64 * 1e6
    }

    /// Under the loss bound (at the rate actually sent).
    fn passed(&self, max_loss: f64) -> bool {
        self.loss() < max_loss
    }

    /// The load generator fell short of the target (below 95 %): the
    /// machine (2 cores shared by generator, service and broker) is out of
    /// CPU, and a higher target cannot send more.
    fn generator_bound(&self) -> bool {
        self.rate() < 0.95 * self.target_rate as f64
    }
}

/// Payloads that compress like text records (lz4 on random bytes would
/// measure compression of noise): a log-like line with random numbers.
fn payloads(size: usize) -> Vec<Vec<u8>> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..256)
        .map(|_| {
            let mut s = String::new();
            while s.len() < size {
                s.push_str(&format!(
                    "{{\"ts\":{},\"host\":\"h{}\",\"lvl\":\"{}\",\"id\":{:x},\"v\":{}}} ",
                    1_700_000_000_000u64 + next() % 1_000_000,
                    next() % 64,
                    ["info", "warn", "debug"][(next() % 3) as usize],
                    next(),
                    next() % 100_000
                ));
            }
            s.truncate(size);
            s.into_bytes()
        })
        .collect()
}

/// Sends `rate` datagrams a second to `to` from `senders` sockets for
/// `duration`, paced every ~200 µs, with `sendmmsg` batches; returns the
/// datagrams sent and the seconds it took.
fn blast(to: SocketAddr, rate: u64, duration: Duration, size: usize, senders: usize) -> (u64, f64) {
    const BATCH: usize = 32;
    let socks: Vec<UdpSocket> = (0..senders)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.connect(to).unwrap();
            s
        })
        .collect();
    let pool = payloads(size);
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    // SAFETY: all-zero is a valid mmsghdr.
    let mut hdrs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let start = Instant::now();
    let (mut sent, mut turn, mut k) = (0u64, 0usize, 0usize);
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        if due <= sent {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let n = ((due - sent) as usize).min(BATCH);
        iov.clear();
        for _ in 0..n {
            let p = &pool[k % pool.len()];
            k += 1;
            iov.push(libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            });
        }
        for (i, h) in hdrs.iter_mut().take(n).enumerate() {
            h.msg_hdr.msg_iov = &mut iov[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_len = 0;
        }
        let fd = socks[turn % socks.len()].as_raw_fd();
        turn += 1;
        // SAFETY: the headers point at iovecs and payloads alive for the call.
        let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as u32, 0) };
        if r > 0 {
            sent += r as u64;
        }
    }
    (sent, start.elapsed().as_secs_f64())
}

/// Sum of the topic's partition end offsets.
async fn end_offsets(client: &Client, topic: &str, partitions: i32) -> u64 {
    let mut sum = 0;
    for p in 0..partitions {
        let pc = client.partition_client(topic, p).await.expect("partition");
        sum += pc.get_offset(OffsetAt::Latest).await.expect("offset") as u64;
    }
    sum
}

/// `key=value` fields of a log line.
fn fields(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// Runs one trial of `variant` at `rate`.
async fn trial(a: &Args, client: &Client, topic: &str, variant: &str, rate: u64) -> Trial {
    let (bin, doors) = match variant {
        "ours" => (&a.ours, "OPEN_DOORS"),
        "ceiling" => (&a.ours, "CLOSED_DOORS"),
        "rdkafka" => (&a.rdkafka, "OPEN_DOORS"),
        v => panic!("unknown variant {v}"),
    };
    let before = end_offsets(client, topic, a.partitions).await;
    // Reaped with wait4 below, which gives its CPU time and peak RSS.
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new(bin)
        .env("KAFKA_BROKERS", &a.brokers)
        .env("KAFKA_TOPIC", topic)
        .env("LISTEN_PORT", "0")
        .env("CHECKPOINT_STRATEGY", doors)
        .env("STATS_INTERVAL", "3600")
        .env("BUFFER_SIZE", (a.size.max(1024)).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let pid = child.id() as i32;
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    let kept = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains(" listening ") {
                let _ = tx.send(fields(&line)["listen"].clone());
            }
            kept.lock().unwrap().push(line);
        }
    });
    let addr: SocketAddr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the service did not start")
        .parse()
        .unwrap();
    let (duration, size, senders) = (a.duration, a.size, a.senders);
    let (sent, send_secs) =
        tokio::task::spawn_blocking(move || blast(addr, rate, duration, size, senders))
            .await
            .unwrap();
    // Until everything arrived, or the topic stopped growing for 2 s.
    if variant != "ceiling" {
        let (mut last, mut still_since) = (0, Instant::now());
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let got = end_offsets(client, topic, a.partitions).await - before;
            if got >= sent {
                break;
            }
            if got != last {
                (last, still_since) = (got, Instant::now());
            } else if still_since.elapsed() > Duration::from_secs(2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    } else {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // SAFETY: signalling and reaping our own child.
    let (status, usage) = unsafe {
        libc::kill(pid, libc::SIGTERM);
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::wait4(pid, &mut status, 0, &mut usage);
        (status, usage)
    };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{variant} exited with {status}"
    );
    std::thread::sleep(Duration::from_millis(100));
    let fin = lines
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|l| l.contains(" final "))
        .map(|l| fields(l))
        .expect("final line");
    let arrived = if variant == "ceiling" {
        fin["received"].parse().unwrap()
    } else {
        end_offsets(client, topic, a.partitions).await - before
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let t = Trial {
        target_rate: rate,
        sent,
        send_secs,
        arrived,
        cpu_secs: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss,
        p99_ms: fin.get("latency_p99_ms").cloned().unwrap_or_default(),
    };
    eprintln!(
        "  {variant:8} target {rate:>8}/s sent {:>9} at {:>8.0}/s arrived {:>9} loss {:>7.3}% cpu {:.2}s ({:.2} s/M) rss {} MiB p99 {} ms -> {}",
        t.sent,
        t.rate(),
        t.arrived,
        t.loss() * 100.0,
        t.cpu_secs,
        t.cpu_per_million(),
        t.max_rss_kib / 1024,
        t.p99_ms,
        match (t.passed(a.max_loss), t.generator_bound()) {
            (true, false) => "pass",
            (true, true) => "pass (generator-bound)",
            (false, _) => "FAIL",
        }
    );
    t
}

/// The passing trial with the highest rate sent: doubling from the start
/// rate until a trial fails or the generator cannot send faster, then
/// bisecting between the last pass and the first failure.
async fn search(a: &Args, client: &Client, topic: &str, variant: &str) -> Option<Trial> {
    let mut best: Option<Trial> = None;
    let keep = |t: Trial, best: &mut Option<Trial>| {
        if best.as_ref().is_none_or(|b| t.rate() > b.rate()) {
            *best = Some(t);
        }
    };
    let mut rate = a.start_rate;
    let mut fail = None;
    while rate <= a.max_rate {
        let t = trial(a, client, topic, variant, rate).await;
        let (passed, saturated) = (t.passed(a.max_loss), t.generator_bound());
        if passed {
            keep(t, &mut best);
        }
        if !passed {
            fail = Some(rate);
            break;
        }
        if saturated {
            return best;
        }
        rate *= 2;
    }
    let (mut lo, mut hi) = (best.as_ref().map_or(0, |t| t.target_rate), fail?);
    for _ in 0..a.steps {
        let mid = (lo + hi) / 2;
        if mid <= lo || hi - lo < hi / 50 {
            break;
        }
        let t = trial(a, client, topic, variant, mid).await;
        if t.passed(a.max_loss) {
            lo = mid;
            keep(t, &mut best);
        } else {
            hi = mid;
        }
    }
    best
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = parse_args();
    let client = ClientBuilder::new(vec![a.brokers.clone()])
        .build()
        .await
        .expect("cannot reach the broker");
    let mut results = Vec::new();
    for v in &a.variants {
        let topic = format!(
            "udp-bench-{v}-{}-{}",
            std::process::id(),
            time::OffsetDateTime::now_utc().unix_timestamp()
        );
        client
            .controller_client()
            .unwrap()
            .create_topic(&topic, a.partitions, 1, 30_000)
            .await
            .expect("create topic");
        eprintln!(
            "{v}: searching the highest rate with < {}% loss",
            a.max_loss * 100.0
        );
        let best = search(&a, &client, &topic, v).await;
        eprintln!("{v}: at the common rate {}/s", a.compare_rate);
        let common = trial(&a, &client, &topic, v, a.compare_rate).await;
        results.push((v.clone(), best, common));
        let _ = client
            .controller_client()
            .unwrap()
            .delete_topic(&topic, 30_000)
            .await;
    }
    println!();
    println!(
        "{} B datagrams, {} senders, {} s per trial, topic of {} partitions, loss bound {}%",
        a.size,
        a.senders,
        a.duration.as_secs_f64(),
        a.partitions,
        a.max_loss * 100.0
    );
    println!();
    println!("| variant | max rate < 0.1 % loss (datagrams/s) | generator-bound | loss there | CPU s / 1M datagrams there | peak RSS (MiB) | p99 latency (ms) | CPU s / 1M at {}/s |", a.compare_rate);
    println!("|---|---:|---|---:|---:|---:|---:|---:|");
    for (v, best, common) in &results {
        match best {
            Some(t) => println!(
                "| {v} | {:.0} | {} | {:.3} % | {:.2} | {} | {} | {:.2} |",
                t.rate(),
                if t.generator_bound() { "yes" } else { "no" },
                t.loss() * 100.0,
                t.cpu_per_million(),
                t.max_rss_kib / 1024,
                if v == "ceiling" { "-" } else { &t.p99_ms },
                common.cpu_per_million()
            ),
            None => println!(
                "| {v} | none passed | | | | | | {:.2} |",
                common.cpu_per_million()
            ),
        }
    }
    let rate = |name: &str| {
        results
            .iter()
            .find(|(v, _, _)| v == name)
            .and_then(|(_, b, _)| b.as_ref())
            .map(Trial::rate)
    };
    if let (Some(o), Some(c)) = (rate("ours"), rate("ceiling")) {
        println!("\nours / ceiling: {:.0} %", o / c * 100.0);
    }
    if let (Some(o), Some(r)) = (rate("ours"), rate("rdkafka")) {
        println!("ours / rdkafka: {:.2}x", o / r);
    }
}
