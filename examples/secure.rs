//! Connects over TLS with SASL/SCRAM-SHA-512 and lists the topics.
//!
//! `KAFKA_CA_FILE=ca.pem KAFKA_USER=alice KAFKA_PASSWORD=... cargo run
//! --example secure --features transport-tls -- HOST:PORT`
//! (`KAFKA_SECURITY=1 scripts/kafka up` starts such a broker: SASL_SSL on
//! its port 9096, user alice, password alice-secret).

use rskafka::client::{
    security::{Credentials, SaslConfig, TlsConfig, Transport},
    ClientBuilder,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = std::env::args().nth(1).ok_or("usage: secure HOST:PORT")?;
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let tls = TlsConfig::builder()
        .ca_file(var("KAFKA_CA_FILE")?)
        .build()?;
    let sasl =
        SaslConfig::ScramSha512(Credentials::new(var("KAFKA_USER")?, var("KAFKA_PASSWORD")?));
    let client = ClientBuilder::new(vec![broker])
        .transport(Transport::Tls(tls))
        .sasl(sasl)
        .build()
        .await?;
    for topic in client.list_topics().await? {
        println!("{}", topic.name);
    }
    Ok(())
}
