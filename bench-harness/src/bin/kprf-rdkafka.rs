//! kprf's HTTP server producing through librdkafka (rdkafka's
//! `FutureProducer`) instead of rskafka: the benchmark's reference.
//! `kprf-rdkafka --config=PATH` takes kprf's configuration; the `kafka.*`
//! settings become the equivalent librdkafka properties.
//!
//! `--backend=rskafka` runs kprf's own backend and `--backend=null` the
//! HTTP ceiling (answers without producing) in the same binary, so the
//! three variants of `scripts/bench-kprf` share one build.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use kprf::{config::RequiredAcks, Backend, Config, OutRecord, Shutdown};
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
    util::Timeout,
    ClientConfig,
};

struct RdBackend {
    producer: FutureProducer,
}

struct RdDelivery(rdkafka::producer::DeliveryFuture);

impl Future for RdDelivery {
    type Output = Result<(), String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(e.to_string()),
            Err(_) => Err("delivery canceled".to_string()),
        })
    }
}

impl Backend for RdBackend {
    type Delivery = RdDelivery;

    async fn partitions(&self, topic: &str) -> Result<Option<i32>, String> {
        let p = self.producer.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let md = p
                .client()
                .fetch_metadata(Some(&topic), Timeout::After(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            Ok(md
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
                .map(|t| t.partitions().len() as i32))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn send(&self, r: OutRecord<'_>) -> Result<RdDelivery, String> {
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(r.topic).payload(&r.value[..]);
        if let Some(k) = &r.key {
            rec = rec.key(&k[..]);
        }
        if let Some(p) = r.partition {
            rec = rec.partition(p);
        }
        if !r.headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(&v[..]),
                });
            }
            rec = rec.headers(h);
        }
        self.producer
            .send_result(rec)
            .map(RdDelivery)
            .map_err(|(e, _)| e.to_string())
    }

    async fn close(&self) {
        let p = self.producer.clone();
        let _ =
            tokio::task::spawn_blocking(move || p.flush(Timeout::After(Duration::from_secs(30))))
                .await;
    }
}

fn connect(cfg: &Config) -> Result<RdBackend, String> {
    let k = &cfg.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", k.brokers.join(","))
        .set("linger.ms", k.queue_buffering_max_ms.to_string())
        .set(
            "queue.buffering.max.messages",
            k.queue_buffering_max_messages.to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            k.queue_buffering_max_kbytes.min(2_147_483_647).to_string(),
        )
        .set(
            "message.max.bytes",
            (k.message_max_bytes + 16 * 1024).to_string(),
        )
        .set("batch.size", k.message_max_bytes.min(1_000_000).to_string())
        .set("retries", k.retries.to_string())
        .set("message.timeout.ms", k.message_timeout_ms.to_string())
        .set("request.timeout.ms", k.request_timeout_ms.to_string())
        .set(
            "acks",
            match k.request_required_acks {
                RequiredAcks::All => "all",
                RequiredAcks::Leader => "1",
                RequiredAcks::None => "0",
            },
        )
        // as rskafka's producer with acks=all
        .set(
            "enable.idempotence",
            (k.request_required_acks == RequiredAcks::All).to_string(),
        );
    if let (Some(u), Some(p)) = (&k.user, &k.password) {
        c.set("security.protocol", "SASL_PLAINTEXT")
            .set("sasl.mechanism", k.sasl_mechanism.to_ascii_uppercase())
            .set("sasl.username", u)
            .set("sasl.password", p);
    }
    let producer: FutureProducer = c.create().map_err(|e| e.to_string())?;
    // the brokers must answer, as kprf's readiness
    producer
        .client()
        .fetch_metadata(None, Timeout::After(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    Ok(RdBackend { producer })
}

fn main() {
    let mut path = None;
    let mut backend = "rdkafka".to_string();
    for a in std::env::args().skip(1) {
        if let Some(p) = a.strip_prefix("--config=") {
            path = Some(std::path::PathBuf::from(p));
        } else if let Some(b) = a.strip_prefix("--backend=") {
            backend = b.to_string();
        } else {
            eprintln!("usage: kprf-rdkafka --config=PATH [--backend=rdkafka|rskafka|null]");
            std::process::exit(2);
        }
    }
    let cfg = match Config::load(path.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kprf-rdkafka: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let res = rt.block_on(async move {
        let shutdown = Shutdown::on_signals();
        let c = cfg.clone();
        match backend.as_str() {
            "null" => kprf::run(cfg, || async { Ok(kprf::NullBackend) }, shutdown).await,
            "rskafka" => {
                kprf::run(
                    cfg,
                    move || {
                        let c = c.clone();
                        async move {
                            let client = kprf::kafka::connect(&c).await?;
                            kprf::kafka::KafkaBackend::new(client, &c)
                        }
                    },
                    shutdown,
                )
                .await
            }
            "rdkafka" => {
                kprf::run(
                    cfg,
                    move || {
                        let c = c.clone();
                        async move {
                            tokio::task::spawn_blocking(move || connect(&c))
                                .await
                                .map_err(|e| e.to_string())?
                        }
                    },
                    shutdown,
                )
                .await
            }
            other => Err(format!("unknown backend {other:?}")),
        }
    });
    if let Err(e) = res {
        eprintln!("kprf-rdkafka: {e}");
        std::process::exit(1);
    }
}
